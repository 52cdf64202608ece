"""`python benchmarks/bench_eval.py [--prompts 32] [--new-tokens 64] [--no-endpoint]`: evaluation throughput.

1. In process: the same prompts (the eval fixture's cases, rendered with the tiny model's template)
   generated greedily at batch 8 (left padding) and one at a time, with the tiny random model; each
   timed as the best of `--repeats` runs because the CPU is shared. The tiny model never emits its end
   token here, so both sides generate exactly `--new-tokens` tokens per prompt: equal work.
   Target: batch 8 at least 3x faster on CPU.
2. Endpoint: a real `transformers serve --continuous-batching` of the same model on 127.0.0.1, the same
   cases sent with concurrency 8 and sequentially (after one warm-up request: the first request of a
   continuous-batching server takes 15 s or more on CPU). Skipped when `transformers[serving]` is missing.
Exits 1 when the in-process ratio is under 3x.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from toolcall_kit import evaluate as E
from toolcall_kit.errors import KitError
from toolcall_kit.models import load_model_and_tokenizer, resolve_model
from toolcall_kit.templates import detect_family

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from served import local_server  # noqa: E402  (a test helper: transformers serve on 127.0.0.1)

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "eval_small.jsonl"
TARGET_RATIO = 3.0


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cases(n: int) -> list[E.Case]:
    base = E.cases_from_records(E.load_records(DATA))
    return [base[i % len(base)] for i in range(n)]


def bench_in_process(n: int, new_tokens: int, repeats: int) -> float:
    model, tok = load_model_and_tokenizer("tiny:qwen2")
    prompts = E.render_prompts(tok, cases(n), detect_family(tok))
    E.generate_batched(model, tok, prompts[:2], batch_size=2, max_new_tokens=2)  # warm-up
    t8 = best_of(
        repeats, lambda: E.generate_batched(model, tok, prompts, batch_size=8, max_new_tokens=new_tokens)
    )
    t1 = best_of(
        repeats, lambda: E.generate_batched(model, tok, prompts, batch_size=1, max_new_tokens=new_tokens)
    )
    ratio = t1 / t8
    print(f"in-process, tiny model, {n} prompts x {new_tokens} new tokens (best of {repeats}):")
    print(f"  batch 8      {t8:7.2f} s  ({n * new_tokens / t8:8.0f} tokens/s)")
    print(f"  one at a time{t1:7.2f} s  ({n * new_tokens / t1:8.0f} tokens/s)")
    print(
        f"  batch 8 is {ratio:.1f}x faster (target >= {TARGET_RATIO:.0f}x): {'ok' if ratio >= TARGET_RATIO else 'BELOW'}"
    )
    return ratio


def bench_endpoint(n: int, new_tokens: int) -> float | None:
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        print("endpoint: skipped (pip install 'toolcall-kit[serve]' for transformers serve)")
        return None
    folder = resolve_model("tiny:qwen2")
    # Without continuous batching transformers serve answers one request at a time: concurrency gains nothing.
    try:
        with local_server(folder, continuous_batching=True) as url:
            work = cases(n)
            t0 = time.perf_counter()
            E.predict_endpoint(work[:1], url, folder, concurrency=1, max_tokens=new_tokens)
            warm = time.perf_counter() - t0
            t8 = best_of(
                1, lambda: E.predict_endpoint(work, url, folder, concurrency=8, max_tokens=new_tokens)
            )
            t1 = best_of(
                1, lambda: E.predict_endpoint(work, url, folder, concurrency=1, max_tokens=new_tokens)
            )
    except KitError as e:
        print(f"endpoint: {e}")
        return None
    ratio = t1 / t8
    print(
        f"endpoint, transformers serve --continuous-batching, {n} requests x {new_tokens} tokens "
        f"(warm-up request {warm:.1f} s):"
    )
    print(f"  concurrency 8 {t8:7.2f} s")
    print(f"  sequential    {t1:7.2f} s")
    print(f"  concurrency 8 is {ratio:.1f}x faster")
    return ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-endpoint", action="store_true")
    args = ap.parse_args()
    ratio = bench_in_process(args.prompts, args.new_tokens, args.repeats)
    if not args.no_endpoint:
        bench_endpoint(16, args.new_tokens)
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
