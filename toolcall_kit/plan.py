"""Hardware planner: will this run fit on that GPU, how long will it take, what will it cost?

    toolcall-kit plan --config configs/qwen2_5_7b_qlora.yaml --gpu a10g-24gb --tokens 3000000

Estimates, not measurements: the memory model counts weights, LoRA parameters with their gradients and
AdamW states, activations (with or without gradient checkpointing) and the logits, then adds the CUDA
context. The time model is FLOPs / (peak TFLOP/s x utilisation). Each figure says what it assumes, and a
run's `result.json` records the real peak memory and tokens/s to calibrate against.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import KitError

GiB = 1024**3


@dataclass(frozen=True)
class Arch:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each decoder linear layer LoRA targets."""
        kv = self.kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden, self.hidden),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (self.hidden, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }

    def params(self) -> int:
        per_layer = sum(i * o for i, o in self.linear_shapes().values()) + 2 * self.hidden
        emb = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * per_layer + emb + self.hidden


# Architectures of the models users train most (from their config.json files), so planning works offline.
KNOWN: dict[str, Arch] = {
    "llama-3.1-8b": Arch(4096, 32, 14336, 128256, 32, 8),
    "qwen2.5-7b": Arch(3584, 28, 18944, 152064, 28, 4),
    "qwen2.5-3b": Arch(2048, 36, 11008, 151936, 16, 2, tied_embeddings=True),
    "qwen2.5-0.5b": Arch(896, 24, 4864, 151936, 14, 2, tied_embeddings=True),
    "mistral-7b": Arch(4096, 32, 14336, 32768, 32, 8),
    "smollm2-135m": Arch(576, 30, 1536, 49152, 9, 3, tied_embeddings=True),
    "smollm2-1.7b": Arch(2048, 24, 8192, 49152, 32, 32, tied_embeddings=True),
}

# GPUs: memory (GiB), dense bf16 peak (TFLOP/s), an indicative on-demand price ($/h, late 2026, varies by
# provider: pass --price to use yours).
GPUS: dict[str, tuple[float, float, float]] = {
    "t4-16gb": (15.0, 65.0, 0.40),
    "a10g-24gb": (22.0, 125.0, 1.00),
    "rtx4090-24gb": (23.5, 165.0, 0.70),
    "l4-24gb": (22.0, 121.0, 0.80),
    "a100-40gb": (39.5, 312.0, 1.60),
    "a100-80gb": (79.0, 312.0, 1.90),
    "l40s-48gb": (44.5, 362.0, 1.00),
    "h100-80gb": (79.0, 989.0, 2.80),
    "h200-141gb": (139.0, 989.0, 3.80),
}
# Share of peak FLOP/s a LoRA fine-tune reaches (small batches, LoRA matmuls, dequantisation for 4-bit).
UTILISATION = {True: 0.25, False: 0.35}  # keyed by load_in_4bit
CUDA_CONTEXT_GIB = 0.8


def arch_for(model: str) -> Arch:
    """Architecture from a known name, a local folder's config.json, or (online) the hub's config."""
    key = model.lower().split("/")[-1].replace("-instruct", "").replace("meta-", "").replace("-bnb-4bit", "")
    key = key.replace("packaged:", "")
    for name, arch in KNOWN.items():
        if key.startswith(name):
            return arch
    cfg_file = Path(model) / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
    else:
        try:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(model).to_dict()
        except Exception as e:  # noqa: BLE001 - offline, private, or not a causal LM
            raise KitError(f"cannot find the architecture of {model!r} ({e}); known: {', '.join(KNOWN)}") from e
    heads = cfg["num_attention_heads"]
    return Arch(
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["intermediate_size"],
        cfg["vocab_size"],
        heads,
        cfg.get("num_key_value_heads", heads),
        bool(cfg.get("tie_word_embeddings", False)),
    )


def lora_params(arch: Arch, r: int, targets: list[str] | None = None) -> int:
    shapes = arch.linear_shapes()
    names = list(shapes) if not targets or targets == "all-linear" else [t for t in targets if t in shapes]
    return arch.layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)


def estimate(
    model: str,
    max_seq_length: int = 2048,
    batch_size: int = 2,
    r: int = 16,
    load_in_4bit: bool = True,
    gradient_checkpointing: bool = True,
    gpu: str = "a10g-24gb",
    tokens: int | None = None,
    epochs: float = 1.0,
    price_per_hour: float | None = None,
    target_modules: list[str] | None = None,
) -> dict[str, Any]:
    if gpu not in GPUS:
        raise KitError(f"gpu: unknown {gpu!r}; known: {', '.join(GPUS)}")
    arch = arch_for(model)
    n = arch.params()
    n_lora = lora_params(arch, r, target_modules)
    # NF4 with double quantisation stores ~4.127 bits a weight; embeddings and the head stay 16-bit.
    emb = arch.vocab * arch.hidden * (1 if arch.tied_embeddings else 2)
    weights = ((n - emb) * 4.127 / 8 + emb * 2) if load_in_4bit else n * 2
    # LoRA weights in 16-bit + fp32 grads + two fp32 AdamW moments.
    lora = n_lora * (2 + 4 + 8)
    tok = batch_size * max_seq_length
    # Per layer and token, bf16: with checkpointing only the layer input is kept (2 B x hidden), plus one
    # layer's full activations recomputed at a time (~34 x hidden + 5 x heads x seq for eager attention;
    # SDPA/flash keep it linear, so the seq term is left out).
    if gradient_checkpointing:
        acts = tok * arch.hidden * 2 * arch.layers + tok * arch.hidden * 34
    else:
        acts = tok * arch.hidden * 34 * arch.layers
    logits = tok * arch.vocab * 4 * 2  # fp32 logits and their gradient
    total = weights + lora + acts + logits + CUDA_CONTEXT_GIB * GiB
    mem, tflops, price = GPUS[gpu]
    out: dict[str, Any] = {
        "model": model,
        "arch": asdict(arch),
        "params_billion": round(n / 1e9, 3),
        "lora_params_million": round(n_lora / 1e6, 2),
        "memory_gib": {
            "weights": round(weights / GiB, 2),
            "lora_and_optimizer": round(lora / GiB, 2),
            "activations": round(acts / GiB, 2),
            "logits": round(logits / GiB, 2),
            "cuda_context": CUDA_CONTEXT_GIB,
            "total": round(total / GiB, 2),
        },
        "gpu": gpu,
        "gpu_memory_gib": mem,
        "fits": total / GiB <= mem,
    }
    if not out["fits"]:
        out["advice"] = "lower batch_size (raise grad_accum to keep the effective batch), shorten max_seq_length, " + (
            "use load_in_4bit" if not load_in_4bit else "turn on gradient_checkpointing"
        )
    if tokens:
        # Forward 2N FLOPs/token; backward through frozen weights needs only activation grads (another 2N),
        # plus 2N more for the recomputed forward under checkpointing.
        flops = tokens * epochs * n * (6 if gradient_checkpointing else 4)
        hours = flops / (tflops * 1e12 * UTILISATION[load_in_4bit]) / 3600
        p = price if price_per_hour is None else price_per_hour
        out.update(training_tokens=int(tokens * epochs), hours=round(hours, 2), cost_usd=round(hours * p, 2),
                   price_per_hour=p, utilisation_assumed=UTILISATION[load_in_4bit])
    return out


def summary(est: dict[str, Any]) -> str:
    m = est["memory_gib"]
    lines = [
        f"{est['model']}: {est['params_billion']} B params, LoRA {est['lora_params_million']} M",
        f"memory on {est['gpu']} ({est['gpu_memory_gib']} GiB): weights {m['weights']} + LoRA/optimizer "
        f"{m['lora_and_optimizer']} + activations {m['activations']} + logits {m['logits']} + context "
        f"{m['cuda_context']} = {m['total']} GiB -> {'fits' if est['fits'] else 'DOES NOT FIT'}",
    ]
    if "advice" in est:
        lines.append(f"advice: {est['advice']}")
    if "hours" in est:
        lines.append(
            f"time for {est['training_tokens']:,} tokens: ~{est['hours']} h at {est['utilisation_assumed']:.0%} "
            f"utilisation, ~${est['cost_usd']} at ${est['price_per_hour']}/h"
        )
    return "\n".join(lines)
