"""Hardware planner: will this run fit on that GPU, how long will it take, what will it cost? Estimates, not
measurements (checked against published figures in tests/test_plan.py): memory by part, time as FLOPs /
(peak TFLOP/s x utilisation); a run's result.json records the real peak memory and tokens/s."""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import KitError

if TYPE_CHECKING:
    from .config import RunConfig

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

    def layer_params(self) -> int:  # its linear layers and two norms
        return sum(i * o for i, o in self.linear_shapes().values()) + 2 * self.hidden

    def embedding_params(self) -> int:  # the output head too, unless it is tied to the input embeddings
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def params(self) -> int:
        return self.layers * self.layer_params() + self.embedding_params() + self.hidden


# The models, GPUs and defaults planned for offline; plan_hardware.yaml says what each number is.
_HARDWARE = yaml.safe_load((Path(__file__).parent / "plan_hardware.yaml").read_text(encoding="utf-8"))
KNOWN = {name: Arch(*dims) for name, dims in _HARDWARE["models"].items()}
GPUS: dict[str, tuple[float, float, float]] = {name: tuple(spec) for name, spec in _HARDWARE["gpus"].items()}
UTILISATION: dict[bool, float] = _HARDWARE["utilisation"]  # keyed by load_in_4bit
NO_CONFIG: dict[str, Any] = _HARDWARE["no_config"]  # `toolcall-kit plan` without a run config
CUDA_CONTEXT_GIB = 0.8
BACKENDS = ("unsloth", "hf")
# unsloth_zoo's fused cross-entropy (fused_losses/cross_entropy_loss.py) builds the logits in chunks of at
# most min(half the free GPU memory, 4 GiB), 16 bytes a logit (bf16 logits, fp32 upcast, log-softmax, grad).
UNSLOTH_CE_BYTES_PER_LOGIT = 16
UNSLOTH_CE_CHUNK_CAP_GIB = 4.0


def arch_for(model: str) -> Arch:
    """Architecture from a known name, else from the config.json of a local folder or (online) the hub."""
    key = model.lower().split("/")[-1].replace("packaged:", "")
    key = key.replace("-instruct", "").replace("meta-", "").replace("-bnb-4bit", "")
    arch = next((known for name, known in KNOWN.items() if key.startswith(name)), None)
    if arch is not None:
        return arch
    if model.startswith(("tiny:", "packaged:")):
        from .models import resolve_model

        model = resolve_model(model)
    from transformers import PretrainedConfig

    try:
        cfg, _ = PretrainedConfig.get_config_dict(model)
    except Exception as e:  # noqa: BLE001 - offline, private, unreadable, or not a model
        known = ", ".join(KNOWN)
        raise KitError(f"cannot find the architecture of {model!r} ({e}); known: {known}") from None
    keys = ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "num_attention_heads")
    if any(not isinstance(cfg.get(k), int) for k in keys):
        raise KitError(f"{model}: its config lacks {', '.join(keys)}: not a decoder model the planner knows")
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    return Arch(*(cfg[k] for k in keys[:4]), heads, kv_heads, bool(cfg.get("tie_word_embeddings", False)))


def lora_params(
    arch: Arch, r: int, targets: str | list[str] | None = None, top_layers: int | None = None
) -> int:
    """LoRA parameters on `targets` ("all-linear", None or module names) of the top `top_layers` layers."""
    shapes = arch.linear_shapes()
    names = list(shapes) if not targets or targets == "all-linear" else targets
    unknown = [n for n in names if n not in shapes]
    if unknown:
        raise KitError(
            f"lora.target_modules: the planner knows {', '.join(shapes)}, not {', '.join(unknown)}"
        )
    return min(top_layers or arch.layers, arch.layers) * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)


def full_params(arch: Arch, top_layers: int | None = None) -> int:
    """Weights that method: full trains: those of the (top `top_layers`) decoder layers."""
    return arch.layer_params() * min(top_layers or arch.layers, arch.layers)


def memory(
    arch: Arch,
    tokens_per_batch: int,
    gpu_gib: float,
    r: int = 16,
    target_modules: str | list[str] | None = None,
    load_in_4bit: bool = True,
    gradient_checkpointing: bool = True,
    backend: str = "unsloth",
    top_layers: int | None = None,
    full: bool = False,
) -> dict[str, float]:
    """Peak GPU memory (bytes) by part for one device batch of `tokens_per_batch` tokens (batch x length).
    `full`: method: full (the weights of the top `top_layers` layers train; `r`, `target_modules` unused)."""
    if backend not in BACKENDS:
        raise KitError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    n = arch.params()
    # NF4 with double quantisation stores ~4.127 bits a weight; embeddings and the head stay 16-bit.
    emb = arch.embedding_params()
    weights = ((n - emb) * 4.127 / 8 + emb * 2) if load_in_4bit else n * 2
    if full:
        # The trained layers' 16-bit grads + two fp32 AdamW moments (the weights are counted above).
        lora = full_params(arch, top_layers) * (2 + 8)
    else:
        # LoRA weights in 16-bit + fp32 grads + two fp32 AdamW moments.
        lora = lora_params(arch, r, target_modules, top_layers) * (2 + 4 + 8)
    tok = tokens_per_batch
    offloaded = 0.0
    if not gradient_checkpointing:
        # Every layer keeps its activations for the backward pass (~34 B x hidden a token, 16-bit).
        acts = tok * arch.hidden * 34 * arch.layers
    elif backend == "unsloth":
        # Unsloth's "unsloth" checkpointing copies each layer input to CPU RAM and back: the GPU holds one
        # layer's working set; the checkpoints themselves (2 B x hidden x layers a token) sit in CPU RAM.
        # The working set, in 16-bit values a token: q, k, v, attention output (flash/SDPA: no seq x seq
        # term) with their gradients; gate, up, act(gate) x up and two gradients; the layer input, the normed
        # input, the gradient in and out. Llama 3.1 8B: 217 KB a token (Unsloth's published table: ~212 KB).
        attention = 2 * (2 * arch.hidden + 2 * arch.kv_heads * arch.head_dim)
        acts = tok * (attention + 5 * arch.intermediate + 4 * arch.hidden) * 2
        offloaded = tok * arch.hidden * 2 * arch.layers
    else:
        # Layer inputs kept on the GPU (2 B x hidden per layer and token) plus one layer's activations
        # recomputed at a time (~34 B x hidden a token).
        acts = tok * arch.hidden * 2 * arch.layers + tok * arch.hidden * 34
    fixed = weights + lora + acts + CUDA_CONTEXT_GIB * GiB
    if backend == "unsloth":
        free = max(gpu_gib * GiB - fixed, 0.0)
        chunk_cap = min(UNSLOTH_CE_CHUNK_CAP_GIB * GiB, free / 2)
        logits = min(tok * arch.vocab * UNSLOTH_CE_BYTES_PER_LOGIT, chunk_cap)
    else:
        # transformers' loss upcasts the whole batch's logits: bf16 logits, fp32 copy, saved log-softmax, fp32
        # and bf16 gradients, 16 B a logit: this matches Unsloth's published HF+FA2 column (2.45 MB a token
        # for Llama 3.1 8B). TRL's chunked loss at trained positions needs less: an upper bound.
        logits = tok * arch.vocab * 16
    return {
        "weights": weights,
        "lora_and_optimizer": lora,
        "activations": acts,
        "logits": logits,
        "cuda_context": CUDA_CONTEXT_GIB * GiB,
        "total": fixed + logits,
        "cpu_offload": offloaded,
    }


def max_tokens_per_batch(arch: Arch, gpu_gib: float, **kw: Any) -> int:
    """The most tokens (batch x length) one device batch can hold on `gpu_gib` GiB; 0 if not even one."""

    def too_big(tok: int) -> bool:
        return memory(arch, tok, gpu_gib, **kw)["total"] > gpu_gib * GiB

    # Memory grows with tokens: bisect for the first size (up to 2**26) that does not fit.
    return bisect.bisect_left(range(1, 1 << 26), True, key=too_big)


def estimate(
    cfg: RunConfig, gpu: str = "a10g-24gb", tokens: int | None = None, price_per_hour: float | None = None
) -> dict[str, Any]:
    """Memory of one device batch (batch_size x max_seq_length tokens) of the run `cfg` on `gpu`, and with
    `tokens` (per epoch) the time and cost. Backend "auto" is planned as unsloth, what a CUDA host picks."""
    if gpu not in GPUS:
        raise KitError(f"gpu: unknown {gpu!r}; known: {', '.join(GPUS)}")
    model, lora, train = cfg.model, cfg.lora, cfg.train
    arch = arch_for(model.name)
    gpu_gib, tflops, price = GPUS[gpu]
    full = cfg.method == "full"
    kw = dict(
        r=lora.r,
        target_modules=lora.target_modules,
        top_layers=cfg.full.top_layers if full else lora.top_layers,
        full=full,
        load_in_4bit=model.load_in_4bit,
        gradient_checkpointing=train.gradient_checkpointing,
        backend="hf" if cfg.backend == "hf" else "unsloth",
    )
    parts = memory(arch, train.batch_size * model.max_seq_length, gpu_gib, **kw)
    gib = {k: round(v / GiB, 2) for k, v in parts.items()}
    trained = full_params(arch, kw["top_layers"]) if full else 0
    lora_count = 0 if full else lora_params(arch, lora.r, lora.target_modules, lora.top_layers)
    out: dict[str, Any] = {
        "model": model.name,
        "backend": kw["backend"],
        "arch": asdict(arch),
        "params_billion": round(arch.params() / 1e9, 3),
        "method": cfg.method,
        "lora_params_million": None if full else round(lora_count / 1e6, 2),
        "trained_params_million": round(trained / 1e6, 2) if full else None,
        "memory_gib": {k: gib[k] for k in ("weights", "lora_and_optimizer", "activations", "logits")}
        | {"cuda_context": CUDA_CONTEXT_GIB, "total": gib["total"]},
        "cpu_offload_gib": gib["cpu_offload"],
        "gpu": gpu,
        "gpu_memory_gib": gpu_gib,
        "fits": parts["total"] <= gpu_gib * GiB,
        "max_tokens_per_batch": max_tokens_per_batch(arch, gpu_gib, **kw),
        "effective_batch": train.batch_size * train.grad_accum,  # examples per optimizer step (one process)
    }
    if not out["fits"]:
        out["advice"] = _advice(cfg, out["max_tokens_per_batch"], out["effective_batch"])
    if tokens:
        # Forward 2N FLOPs/token, backward through frozen weights 2N (activation grads only), 2N more for the
        # recomputed forward under checkpointing; method: full adds 2N of the trained layers' share.
        epochs = train.epochs or 1.0
        flops = tokens * epochs * (arch.params() * (6 if train.gradient_checkpointing else 4) + 2 * trained)
        utilisation = UTILISATION[model.load_in_4bit]
        hours = flops / (tflops * 1e12 * utilisation) / 3600
        price = price if price_per_hour is None else price_per_hour
        out |= {
            "training_tokens": int(tokens * epochs),
            "hours": round(hours, 2),
            "cost_usd": round(hours * price, 2),
            "price_per_hour": price,
            "utilisation_assumed": utilisation,
        }
    return out


def _advice(cfg: RunConfig, max_tokens: int, effective_batch: int) -> str:
    fitting = max_tokens // cfg.model.max_seq_length  # the largest batch_size that fits
    if fitting:
        accum = math.ceil(effective_batch / fitting)
        return f"batch_size {fitting} x grad_accum {accum} keeps the effective batch and fits"
    return "shorten max_seq_length, " + (
        "turn on gradient_checkpointing" if cfg.model.load_in_4bit else "use load_in_4bit"
    )


def summary(est: dict[str, Any]) -> str:
    m = est["memory_gib"]
    upper_bound = " (the hf backend's estimate is the upper bound)" if est["backend"] == "unsloth" else ""
    offload = est["cpu_offload_gib"]
    full = est.get("method") == "full"
    trained = est["trained_params_million"] if full else est["lora_params_million"]
    lines = [
        f"{est['model']}: {est['params_billion']} B params, "
        f"{'full fine-tuning of' if full else 'LoRA'} {trained} M, {est['backend']} backend{upper_bound}",
        f"memory on {est['gpu']} ({est['gpu_memory_gib']} GiB): weights {m['weights']} + "
        f"{'grads/optimizer' if full else 'LoRA/optimizer'} {m['lora_and_optimizer']} + activations "
        f"{m['activations']} + logits {m['logits']} + context {m['cuda_context']} = {m['total']} GiB -> "
        f"{'fits' if est['fits'] else 'DOES NOT FIT'}",
        f"most tokens per device batch (batch_size x max_seq_length) on this GPU: {est['max_tokens_per_batch']:,}; "
        f"effective batch {est['effective_batch']}"
        + (f"; offloaded checkpoints need {offload} GiB of CPU RAM" if offload else ""),
    ]
    if "advice" in est:
        lines.append(f"advice: {est['advice']}")
    if "hours" in est:
        lines.append(
            f"time for {est['training_tokens']:,} tokens: ~{est['hours']} h at {est['utilisation_assumed']:.0%} "
            f"utilisation, ~${est['cost_usd']} at ${est['price_per_hour']}/h"
        )
    return "\n".join(lines)
