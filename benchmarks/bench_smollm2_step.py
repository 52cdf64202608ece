"""Benchmark: the kit's CPU training step on SmolLM2-135M vs the same step with full-vocabulary logits.

    .venv/bin/python benchmarks/bench_smollm2_step.py [--steps 10] [--config configs/demo_cpu.yaml]

Both sides run `toolcall_kit.train.train` on the demo config (the packaged SmolLM2-135M-Instruct, full
fine-tuning of its top 15 layers since late November, before that LoRA r 16 on them; the shipped demo data, the same seed, so the same batches in the same order). The
only difference: the kit's side keeps TRL's `chunked_nll` loss, which runs the output layer (49,152 x 576)
only at the trained (assistant) positions, about a tenth of the demo's tokens; the other side sets
`loss_type="nll"`, which computes logits for every position as a plain transformers loss does. Tokens per
second are real (non-padding) tokens over the timed steps (the first WARMUP steps are left out: the
longest batches come first with length grouping). Target: the kit's step at least 1.2x faster.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TOOLCALL_KIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 2  # optimizer steps not timed


def run(config: str, steps: int, out: str, full_logits: bool) -> dict:
    from transformers import TrainerCallback

    import toolcall_kit.train as train_mod
    from toolcall_kit.config import load_config, sft_kwargs

    class Timer(TrainerCallback):
        def __init__(self):
            self.t: list[float] = []

        def on_step_end(self, args, state, control, **kw):
            self.t.append(time.perf_counter())

    def kwargs(*a, **kw):
        out = sft_kwargs(*a, **kw)
        if full_logits:
            out["loss_type"] = "nll"
        return out

    cfg = load_config(
        ROOT / config,
        {
            "output.dir": out,
            "output.name": "full" if full_logits else "kit",
            "output.overwrite": True,
            "data.eval": None,
            "train.max_steps": steps,
            "train.save_steps": None,
            "train.eval_steps": None,
        },
    )
    timer = Timer()
    train_mod.sft_kwargs = kwargs
    try:
        result = train_mod.train(cfg, extra_callbacks=[timer])
    finally:
        train_mod.sft_kwargs = sft_kwargs
    import json

    # TRL logs `num_tokens`: real (attention-mask) tokens seen so far, per logged step.
    rows = [json.loads(x) for x in (Path(out) / cfg.output.name / "metrics.jsonl").read_text().splitlines()]
    seen = {r["step"]: r["num_tokens"] for r in rows if "num_tokens" in r}
    tokens = seen[max(seen)] - seen[WARMUP]
    seconds = timer.t[-1] - timer.t[WARMUP - 1]
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "peak_rss_gib": result["peak_rss_gib"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--config", default="configs/demo_cpu.yaml")
    a = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="bench_smollm2_")
    kit = run(a.config, a.steps, tmp, full_logits=False)
    full = run(a.config, a.steps, tmp, full_logits=True)
    ratio = kit["tokens_per_s"] / full["tokens_per_s"]
    print(f"\nSmolLM2-135M training step on CPU, {a.config}, {a.steps} steps ({WARMUP} warm-up steps not timed)")
    print(f"  kit (logits at trained positions)  {kit['tokens_per_s']:7.1f} real tokens/s, peak RSS {kit['peak_rss_gib']} GiB")
    print(f"  full-vocabulary logits             {full['tokens_per_s']:7.1f} real tokens/s, peak RSS {full['peak_rss_gib']} GiB")
    print(f"  ratio kit/full = {ratio:.2f}x (target >= 1.2x)")
    ok = ratio >= 1.2
    print(f"\n{'PASS' if ok else 'FAIL'}: kit step {ratio:.2f}x the full-logits step")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
