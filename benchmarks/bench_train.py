"""Benchmark: the kit's hf training vs a bare TRL script with the same settings, on the tiny model.

    .venv/bin/python benchmarks/bench_train.py [--steps 80] [--repeats 3]

Both sides train LoRA r 8 on every linear layer of tiny:llama, batch 4, the same pre-tokenized examples
(input_ids + assistant-only labels), lr 1e-3 cosine, fp32 on CPU, no evaluation and no checkpoints. The
bare side is SFTTrainer + SFTConfig + peft.get_peft_model written out by hand; the kit's side is
`toolcall_kit.train.train` with everything it adds (metrics.jsonl, health checks, loss.png, tqdm bar,
example-id log). Steps per second are timed inside the training loop (a callback on both sides), after
WARMUP steps; the two sides alternate, best of --repeats each. Target: kit overhead < 10%.

Then the fraction of processed tokens that are real (not padding) in the kit's batches: padded batches
vs packing (TRL's best-fit packing, padding-free), on examples of varied length.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TOOLCALL_KIT_NO_PROGRESS", "1")  # the bare side shows no bar either
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 5  # optimizer steps left out of the timing (first-step allocations and kernel selection)
LR, BATCH, R, ALPHA, SEQ = 1e-3, 4, 8, 16, 1024

CITIES = ["Paris", "Lisbon", "Tokyo", "Oslo", "Lima", "Cairo", "Quito", "Rome", "Accra", "Hanoi"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def make_records(n: int, seed: int = 0) -> list[dict]:
    """Examples of varied length (short chats to call + result + answer), so padding shows."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        city = rnd.choice(CITIES)
        chatter = " ".join(
            rnd.choice(["please", "quickly", "thanks", "today", "now"]) for _ in range(rnd.randint(0, 40))
        )
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": city}},
        }
        msgs = [{"role": "user", "content": f"What is the weather in {city}? {chatter}"}]
        msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        if i % 2:
            msgs.append(
                {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp_c": 18}'}
            )
            msgs.append({"role": "assistant", "content": f"It is 18 C in {city}. {chatter}"})
        out.append({"id": f"b-{i:04d}", "tools": [WEATHER], "messages": msgs})
    return out


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.t: list[float] = []

        def on_step_end(self, args, state, control, **kw):
            self.t.append(time.perf_counter())

        def steps_per_s(self) -> float:
            t = self.t[WARMUP:]
            return (len(t) - 1) / (t[-1] - t[0])

    return StepTimer()


def bare_trl(train_path: str, steps: int, out: str) -> float:
    """The same training written against TRL/PEFT directly. Returns steady-state steps/s."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from toolcall_kit.models import resolve_model
    from toolcall_kit.records import read_records
    from toolcall_kit.tokens import encode_many

    path = resolve_model("tiny:llama")
    tok = AutoTokenizer.from_pretrained(path)
    enc = encode_many(tok, read_records(train_path))
    ds = Dataset.from_dict(
        {
            "input_ids": [e["input_ids"] for e in enc],
            "labels": [
                [t if m else -100 for t, m in zip(e["input_ids"], e["assistant_masks"], strict=True)]
                for e in enc
            ],
        }
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(
        model, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=targets, task_type="CAUSAL_LM")
    )
    args = SFTConfig(
        output_dir=out,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        max_length=SEQ,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    timer = step_timer()
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # printing every log line would slow the bare side down
    trainer.train()
    return timer.steps_per_s()


def kit(train_path: str, steps: int, out: str, packing: bool = False) -> tuple[float, dict]:
    from toolcall_kit.config import load_config
    from toolcall_kit.train import train

    cfg = load_config(
        ROOT / "configs" / "smoke.yaml",
        {
            "data.train": train_path,
            "data.eval": None,
            "output.dir": out,
            "output.name": "bench",
            "output.overwrite": True,
            "backend": "hf",
            "lora.r": R,
            "lora.alpha": ALPHA,
            "model.max_seq_length": SEQ,
            "train.batch_size": BATCH,
            "train.learning_rate": LR,
            "train.lr_scheduler": "cosine",
            "train.warmup_ratio": 0.0,
            "train.max_steps": steps,
            "train.logging_steps": 1,
            "train.save_steps": None,
            "train.eval_steps": None,
            "train.packing": packing,
        },
    )
    timer = step_timer()
    result = train(cfg, extra_callbacks=[timer])
    return timer.steps_per_s(), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=400)
    a = ap.parse_args(argv)

    import logging

    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    train_path = tmp / "train.jsonl"
    train_path.write_text("".join(json.dumps(r) + "\n" for r in make_records(a.rows)))

    bare_sps, kit_sps = [], []
    result = {}
    for i in range(a.repeats):  # alternate, so load on the machine hits both sides alike
        bare_sps.append(bare_trl(str(train_path), a.steps, str(tmp / f"bare{i}")))
        sps, result = kit(str(train_path), a.steps, str(tmp / "kit"))
        kit_sps.append(sps)
    b, k = max(bare_sps), max(kit_sps)
    ratio = k / b
    print(
        f"\ntraining loop, tiny:llama, batch {BATCH}, {a.steps} steps ({WARMUP} warm-up steps not timed), best of {a.repeats}"
    )
    print(f"  bare TRL   {b:7.2f} steps/s   (runs: {', '.join(f'{x:.2f}' for x in bare_sps)})")
    print(f"  kit (hf)   {k:7.2f} steps/s   (runs: {', '.join(f'{x:.2f}' for x in kit_sps)})")
    print(f"  ratio kit/bare = {ratio:.3f}  -> kit overhead {100 * (1 - ratio):.1f}% (target < 10%)")

    fp = json.loads((tmp / "kit" / "bench" / "data_fingerprints.json").read_text())["train"]
    _, packed = kit(str(train_path), max(10, a.steps // 4), str(tmp / "kit"), packing=True)
    mean = fp["tokens"] / fp["examples"]
    print(
        f"\nreal (non-pad) tokens / processed tokens, {a.rows} examples of {mean:.0f} tokens on average "
        f"(longest {fp['longest_tokens']}):"
    )
    print(f"  padded batches of {BATCH}:          {result['real_token_fraction']:.3f}")
    print(f"  packing (padding-free, best fit):  {packed['real_token_fraction']:.3f}")
    print(
        f"  trained (assistant) tokens / processed, padded: {result['trained_token_fraction']:.3f}, "
        f"packed: {packed['trained_token_fraction']:.3f}"
    )
    ok = ratio > 0.9
    print(f"\n{'PASS' if ok else 'FAIL'}: kit overhead {'<' if ok else '>='} 10%")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
