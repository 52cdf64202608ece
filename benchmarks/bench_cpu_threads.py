"""Benchmark: CPU training while another process keeps one core busy, on 1 thread vs on every core.

    .venv/bin/python benchmarks/bench_cpu_threads.py [--steps 8] [--config configs/demo_cpu.yaml]

Three short runs of `toolcall-kit train` on the demo config (the same seed, so the same batches): alone on
every core, then with a busy-looping process on one core, once with `TOOLCALL_KIT_THREADS` set to every
core and once with 1 thread (what the kit picks itself when it sees a busy core at the start). torch's
OpenMP threads wait for each other at every op, so a thread that shares its core with another process
holds back the other thread. Figures: real tokens/s over the whole run, from result.json. Target: under
load, the 1-thread run at least 1.2x the all-cores run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def busy() -> None:
    while True:
        pass


def train(config: str, steps: int, out: str, name: str, threads: int | None) -> float:
    env = dict(os.environ, TOOLCALL_KIT_NO_PROGRESS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("TOOLCALL_KIT_THREADS", None)
    if threads is not None:
        env["TOOLCALL_KIT_THREADS"] = str(threads)
    sets = {
        "output.dir": out,
        "output.name": name,
        "output.overwrite": "true",
        "data.eval": "null",
        "train.max_steps": str(steps),
        "train.save_steps": "null",
        "train.eval_steps": "null",
    }
    cmd = [sys.executable, "-m", "toolcall_kit.cli", "train", "--config", config]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads((Path(out) / name / "result.json").read_text())["tokens_per_s"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--config", default="configs/demo_cpu.yaml")
    a = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    if cores < 2:
        print("SKIP: one core; nothing to share")
        return 0
    tmp = tempfile.mkdtemp(prefix="bench_threads_")
    alone = train(a.config, a.steps, tmp, "alone", cores)
    hog = multiprocessing.Process(target=busy, daemon=True)
    hog.start()
    try:
        shared = train(a.config, a.steps, tmp, "shared", cores)
        one = train(a.config, a.steps, tmp, "one", 1)
    finally:
        hog.kill()
    ratio = one / shared
    print(f"\nSmolLM2-135M LoRA training on CPU, {a.config}, {a.steps} steps, {cores} cores")
    for label, rate in (
        (f"alone, {cores} threads", alone),
        (f"one core busy elsewhere, {cores} threads", shared),
        ("one core busy elsewhere, 1 thread", one),
    ):
        print(f"  {label:<40} {rate:7.1f} real tokens/s")
    print(f"  ratio 1 thread / {cores} threads under load = {ratio:.2f}x (target >= 1.2x)")
    ok = ratio >= 1.2
    print(f"\n{'PASS' if ok else 'FAIL'}: under load, 1 thread trains {ratio:.2f}x as fast as {cores}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
