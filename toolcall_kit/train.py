"""LoRA / QLoRA supervised fine-tuning behind one function, with an Unsloth and a plain Hugging Face backend.

    toolcall-kit train --config configs/smoke.yaml [--set train.max_steps=20] [--backend auto|unsloth|hf]
    toolcall-kit train --resume runs/smoke

    from toolcall_kit.config import load_config
    from toolcall_kit.train import train
    result = train(load_config("configs/demo_cpu.yaml", {"train.max_steps": 20}))

Backends:
- unsloth: `FastLanguageModel.from_pretrained` (4-bit or 16-bit) + `get_peft_model` + TRL `SFTTrainer`.
  Unsloth patches transformers, TRL and PEFT when imported, so it is imported before them, in `train()`,
  and nothing in this module imports transformers at module level.
- hf: transformers (+ bitsandbytes NF4 when `model.load_in_4bit`) + PEFT `LoraConfig` + TRL `SFTTrainer`.
- auto: unsloth when it is installed, imports, and a CUDA GPU is present; otherwise hf. The choice and the
  reason go to the log and to result.json.

Data: canonical JSONL records -> `templates.adapt_record` (the family's quirks) -> `tokens.encode_many`
(the family's training template, assistant-only mask, per-message `weight`) -> `input_ids` + `labels` (-100 where the mask is 0). TRL 1.14 receives the data
already tokenized: it keeps a given `labels` column as it is, pads, and its default `chunked_nll` loss runs
the output layer only at trained positions. Examples whose trained tokens are all cut off by
`model.max_seq_length` are an error listing them (TRL would drop them silently).

Run folder (`runs/NAME/`): config.yaml (resolved), data_fingerprints.json, metrics.jsonl, loss.png,
checkpoints/checkpoint-N (Trainer; resume point), adapter/ (safetensors + tokenizer), rows.rank{R}.jsonl
(example ids per optimizer step and process), result.json.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import io
from .config import EIGHT_BIT_OPTIMS, RunConfig, load_config, sft_kwargs
from .errors import KitError

log = logging.getLogger("toolcall_kit.train")

# Names of files in a run folder (one place: merge, evaluate and notebooks read these).
CONFIG_FILE = "config.yaml"
FINGERPRINTS_FILE = "data_fingerprints.json"
RESULT_FILE = "result.json"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
PLOT_FILE = "loss.png"
# Linear layers PEFT must never wrap: the output head (TRL's chunked loss reads its weight directly).
_NEVER_TARGET = ("lm_head", "embed_out", "output")


# ------------------------------------------------------------------ backend choice


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def choose_backend(requested: str) -> tuple[str, str]:
    """("unsloth" | "hf", why). Imports torch (not transformers) to look for a GPU."""
    unsloth_installed = importlib.util.find_spec("unsloth") is not None
    if requested == "hf":
        return "hf", "backend: hf was asked for"
    if requested == "unsloth":
        if not unsloth_installed:
            raise KitError(
                "backend: unsloth is not installed (pip install 'toolcall-kit[unsloth]'), or use hf"
            )
        return "unsloth", "backend: unsloth was asked for"
    if not unsloth_installed:
        return "hf", "unsloth is not installed"
    import torch

    if not torch.cuda.is_available():
        return (
            "hf",
            "no CUDA GPU: Unsloth's speed-ups are GPU kernels (backend: unsloth forces its CPU backend)",
        )
    if _world() > 1:
        return "hf", "data-parallel launch (WORLD_SIZE > 1): the hf backend is the one tested with torchrun"
    if "transformers" in sys.modules and "unsloth" not in sys.modules:
        return "hf", "transformers was imported before unsloth in this process (restart it to use unsloth)"
    try:
        import unsloth  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "cannot run here"
        return "hf", f"unsloth failed to import: {type(e).__name__}: {str(e)[:200]}"
    return "unsloth", "unsloth imports and a CUDA GPU is present"


def _import_unsloth() -> bool:
    """Import unsloth; returns whether it came before transformers, TRL and PEFT (so it could patch them)."""
    os.environ.setdefault("UNSLOTH_SKIP_TORCHVISION_CHECK", "1")
    early = [m for m in ("transformers", "trl", "peft") if m in sys.modules]
    first = "unsloth" in sys.modules or not early
    if not first:
        log.warning(
            "transformers was imported before unsloth in this process: Unsloth cannot patch it fully "
            "(run training in a fresh process or kernel for its speed-ups)"
        )
    try:
        import unsloth  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise KitError(f"backend: unsloth failed to import: {type(e).__name__}: {e}") from None
    return first


def import_backend_first(cfg: RunConfig) -> str:
    """Import Unsloth now if this config will train with it: for callers (`toolcall-kit pipeline`) that run
    stages importing transformers before training in the same process. Returns the backend."""
    backend, _ = choose_backend(cfg.backend)
    if backend == "unsloth":
        _import_unsloth()
    return backend


# ------------------------------------------------------------------ data


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Encoded:
    """A tokenized split: the columns TRL gets, plus the counts the run reports."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    rows: list[int]  # index of each example's source record in the data file (0-based)
    stats: dict[str, Any] = field(default_factory=dict)


def encode_records(
    records: list[dict],
    tokenizer,
    family: str | None,
    max_seq_length: int,
    key: str,
    path: str,
    chat_template: str | None = None,
    parallel: str = "error",
    content_with_calls: str = "error",
) -> Encoded:
    """Adapt to the family, tokenize with the assistant-only mask, truncate, refuse fully cut examples."""
    from .templates import adapt_record, detect_family
    from .tokens import encode_many

    family = detect_family(tokenizer, family).name
    adapted, source = [], []
    for i, rec in enumerate(records):
        for a in adapt_record(rec, family, parallel=parallel, content_with_calls=content_with_calls):
            adapted.append(a)
            source.append(i)
    encoded = encode_many(tokenizer, adapted, family, chat_template=chat_template)

    ids_out, labels_out, rows = [], [], []
    cut_off: list[str] = []  # examples with no trained token left within max_seq_length
    truncated = total = trained = longest = 0
    for rec, i, enc in zip(adapted, source, encoded, strict=True):
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        full = len(ids)
        longest = max(longest, full)
        if full > max_seq_length:
            truncated += 1
            ids, mask = ids[:max_seq_length], mask[:max_seq_length]
        n_trained = sum(1 for m in mask if m)
        if n_trained == 0:
            name = rec.get("id") or f"line {i + 1}"
            why = (
                f"{full} tokens" if full > max_seq_length else "no trained turn: all assistant weights are 0"
            )
            cut_off.append(f"{name} ({why})")
            continue
        ids_out.append(ids)
        labels_out.append([t if m else -100 for t, m in zip(ids, mask, strict=True)])
        rows.append(i)
        total += len(ids)
        trained += n_trained
    if cut_off:
        shown = ", ".join(cut_off[:20]) + (f", ... ({len(cut_off) - 20} more)" if len(cut_off) > 20 else "")
        raise KitError(
            f"{key}: {len(cut_off)} of {len(adapted)} examples in {path} have no trained tokens within "
            f"model.max_seq_length={max_seq_length}: {shown}. Raise model.max_seq_length, offer fewer tools "
            "per example, or remove them (they are never dropped silently)"
        )
    stats = {
        "rows": len(records),
        "examples": len(adapted),
        "tokens": total,
        "trained_tokens": trained,
        "truncated_examples": truncated,
        "longest_tokens": longest,
        "max_seq_length": max_seq_length,
    }
    if truncated:
        log.warning(
            "%s: %d of %d examples are longer than model.max_seq_length=%d and were truncated (longest %d tokens)",
            key,
            truncated,
            len(adapted),
            max_seq_length,
            longest,
        )
    return Encoded(ids_out, labels_out, rows, stats)


def _dataset(enc: Encoded):
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()  # TRL's per-split map/filter bars: noise next to the kit's own bar
    # Only integer lists: no dict columns for Arrow to unify (see ENVIRONMENT.md).
    return Dataset.from_dict({"input_ids": enc.input_ids, "labels": enc.labels, "row": enc.rows})


# ------------------------------------------------------------------ model


def _device() -> tuple[bool, bool]:
    """(on_gpu, bf16 supported)."""
    import torch

    if torch.cuda.is_available():
        # Compute capability >= 8 (Ampere): torch.cuda.is_bf16_supported() is also True on a T4/V100 (sm_75/70)
        # through emulation, where Unsloth (SUPPORTS_BFLOAT16 = major >= 8 in unsloth/models/_utils.py) loads
        # fp16 and its trainer then refuses the bf16 the kit asked for.
        return True, torch.cuda.get_device_capability()[0] >= 8
    # CPU autocast to bf16 works on any x86 but is fast only with native instructions (avx512_bf16 / AMX).
    native = [getattr(torch.cpu, f, None) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return False, any(f() for f in native if f is not None)


def _load_dtype(cfg: RunConfig, on_gpu: bool, bf16_ok: bool):
    """The dtype the base weights are loaded in. CPU: fp32 (bf16 is autocast, see config.mixed_precision)."""
    import torch

    if not on_gpu:
        return torch.float32
    d = cfg.model.dtype
    if d == "float32":
        return torch.float32
    if d == "float16" or (d == "auto" and not bf16_ok):
        return torch.float16
    return torch.bfloat16


def linear_module_names(model) -> list[str]:
    """Leaf names of the decoder's linear layers (q_proj, ..., down_proj), output head excluded."""
    import torch

    names = set()
    for full, mod in model.named_modules():
        leaf = full.rsplit(".", 1)[-1]
        if leaf in _NEVER_TARGET:
            continue
        # bitsandbytes Linear4bit subclasses torch.nn.Linear; PEFT's LoRA layers are skipped by name.
        if isinstance(mod, torch.nn.Linear) and "lora_" not in full:
            names.add(leaf)
    return sorted(names)


def resolve_targets(cfg: RunConfig, model) -> list[str]:
    """lora.target_modules as a list; a name the model lacks is an error naming it."""
    have = linear_module_names(model)
    if cfg.lora.target_modules == "all-linear":
        return have
    missing = [m for m in cfg.lora.target_modules if m not in have]
    if missing:
        raise KitError(
            f"lora.target_modules: {', '.join(missing)} not found in {cfg.model.name} "
            f"(its linear layers: {', '.join(have)})"
        )
    return list(cfg.lora.target_modules)


def adapted_layers(cfg: RunConfig, model) -> list[int] | None:
    """Indices of the decoder layers LoRA adapts (`lora.top_layers`: the top N), None for all of them."""
    if cfg.lora.top_layers is None:
        return None
    c = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = getattr(c, "num_hidden_layers", None)
    if n is None:
        raise KitError(f"lora.top_layers: {cfg.model.name} does not say how many layers it has")
    if cfg.lora.top_layers > n:
        raise KitError(f"lora.top_layers: {cfg.lora.top_layers} > the {n} layers of {cfg.model.name}")
    return list(range(n - cfg.lora.top_layers, n))


def _context_length(model) -> int | None:
    c = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(c, "max_position_embeddings", None)


def _check_context(cfg: RunConfig, model) -> None:
    ctx = _context_length(model)
    if ctx is not None and cfg.model.max_seq_length > ctx:
        raise KitError(
            f"model.max_seq_length: {cfg.model.max_seq_length} tokens do not fit {cfg.model.name}'s "
            f"context of {ctx} tokens"
        )


@dataclass
class InitFrom:
    """What `init_from` points at: an adapter to continue, or a merged model to start a new adapter on."""

    adapter: Path | None = None
    model: Path | None = None


def resolve_init_from(path: str | None) -> InitFrom:
    if path is None:
        return InitFrom()
    p = Path(path)
    for cand in (p / ADAPTER, p):
        if (cand / "adapter_config.json").is_file():
            return InitFrom(adapter=cand)
    if (p / "config.json").is_file():
        return InitFrom(model=p)
    raise KitError(
        f"init_from: {path} is neither a run folder, an adapter folder (adapter_config.json) nor a merged "
        "model folder (config.json)"
    )


def _check_adapter_matches(cfg: RunConfig, adapter: Path, targets: list[str]) -> None:
    a = json.loads((adapter / "adapter_config.json").read_text())
    if a.get("r") != cfg.lora.r:
        raise KitError(
            f"lora.r: {cfg.lora.r} differs from the init_from adapter's r={a.get('r')}: set lora.r={a.get('r')}"
        )
    theirs = set(a.get("target_modules") or [])
    if theirs and theirs != set(targets):
        raise KitError(
            f"lora.target_modules: {sorted(targets)} differ from the init_from adapter's {sorted(theirs)}"
        )


def _load_adapter_weights(model, adapter: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise KitError(f"init_from: {weights} not found")
    result = set_peft_model_state_dict(model, load_file(str(weights)))
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise KitError(
            f"init_from: {len(unexpected)} adapter weights do not fit this model, e.g. {unexpected[0]}"
        )


def _apply_chat_template(cfg: RunConfig, tokenizer) -> tuple[str, str]:
    """Put the training template on the tokenizer; returns (family name, template text).

    The template trained with is the one saved beside the adapter (and so the one merge exports and vLLM
    serves): the family's training template (templates.py), or model.chat_template's file.
    """
    from .templates import detect_family

    if cfg.model.chat_template:
        p = Path(cfg.model.chat_template)
        if not p.is_file():
            raise KitError(f"model.chat_template: file not found: {p}")
        tokenizer.chat_template = p.read_text(encoding="utf-8")
    fam = detect_family(tokenizer, cfg.model.family)
    template = tokenizer.chat_template if cfg.model.chat_template else fam.template()
    tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        # TRL pads with pad_token or eos; padding positions get label -100 and no attention either way.
        tokenizer.pad_token = tokenizer.eos_token
    return fam.name, template


def load_hf(cfg: RunConfig, model_path: str, init: InitFrom, on_gpu: bool, bf16_ok: bool):
    """transformers (+ bitsandbytes NF4) + PEFT LoRA. Returns (peft model, tokenizer, target modules)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = _load_dtype(cfg, on_gpu, bf16_ok)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.model.load_in_4bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise KitError("model.load_in_4bit: needs bitsandbytes (pip install 'toolcall-kit[quant]')")
        from transformers import BitsAndBytesConfig

        compute = (torch.bfloat16 if bf16_ok else torch.float16) if on_gpu else torch.float32
        if not on_gpu and cfg.model.dtype == "bfloat16":
            compute = torch.bfloat16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    if _world() > 1 and on_gpu:
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    model.config.use_cache = False
    _check_context(cfg, model)
    if cfg.model.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.train.gradient_checkpointing
        )
    targets = resolve_targets(cfg, model)
    if init.adapter is not None:
        _check_adapter_matches(cfg, init.adapter, targets)
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        bias=cfg.lora.bias,
        use_rslora=cfg.lora.use_rslora,
        layers_to_transform=adapted_layers(cfg, model),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(cfg.train.seed)  # LoRA A init: the same seed gives the same starting adapter
    model = get_peft_model(model, lora)
    if init.adapter is not None:
        _load_adapter_weights(model, init.adapter)
    return model, tokenizer, targets


def load_unsloth(cfg: RunConfig, model_path: str, init: InitFrom, on_gpu: bool, bf16_ok: bool):
    """Unsloth's FastLanguageModel (its CPU backend without a GPU). unsloth is already imported."""
    from unsloth import FastLanguageModel

    dtype = _load_dtype(cfg, on_gpu, bf16_ok)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_path,
        max_seq_length=cfg.model.max_seq_length,
        load_in_4bit=cfg.model.load_in_4bit,
        dtype=dtype,
    )
    _check_context(cfg, model)
    targets = resolve_targets(cfg, model)
    if init.adapter is not None:
        _check_adapter_matches(cfg, init.adapter, targets)
    gc: bool | str = False
    if cfg.train.gradient_checkpointing:
        # "unsloth" offloads activations to CPU RAM between forward and backward: a GPU-only saving.
        gc = "unsloth" if on_gpu else True
    model = FastLanguageModel.get_peft_model(
        model,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        bias=cfg.lora.bias,
        use_gradient_checkpointing=gc,
        random_state=cfg.train.seed,
        use_rslora=cfg.lora.use_rslora,
        layers_to_transform=adapted_layers(cfg, model),
        max_seq_length=cfg.model.max_seq_length,
    )
    if init.adapter is not None:
        _load_adapter_weights(model, init.adapter)
    return model, tokenizer, targets


# ------------------------------------------------------------------ run folder


def _last_checkpoint(run_dir: Path) -> Path | None:
    ck = run_dir / CHECKPOINTS
    if not ck.is_dir():
        return None
    found = []
    for p in ck.iterdir():
        if p.name.startswith("checkpoint-") and p.name.split("-", 1)[1].isdigit():
            # A checkpoint is complete once Trainer wrote trainer_state.json (it is written last).
            if (p / "trainer_state.json").is_file():
                found.append((int(p.name.split("-", 1)[1]), p))
    return max(found)[1] if found else None


def _resume_point(run_dir: Path) -> Path:
    """The checkpoint `--resume run_dir` continues from."""
    if not run_dir.is_dir():
        raise KitError(f"--resume: {run_dir} is not a run folder")
    ckpt = _last_checkpoint(run_dir)
    if ckpt is None:
        raise KitError(
            f"--resume: no complete checkpoint in {run_dir / CHECKPOINTS} (set train.save_steps); "
            "start again with --set output.overwrite=true"
        )
    return ckpt


def _training_files(run_dir: Path) -> list[Path]:
    """What a training run writes in its folder; other stages' subfolders (data/, stages/, eval/) are not."""
    if not run_dir.is_dir():
        return []
    names = {CONFIG_FILE, FINGERPRINTS_FILE, RESULT_FILE, PLOT_FILE, "metrics.jsonl", CHECKPOINTS, ADAPTER}
    return sorted(p for p in run_dir.iterdir() if p.name in names or p.name.startswith("rows.rank"))


def _new_run_dir(cfg: RunConfig, run_dir: Path) -> list[Path]:
    """Create the run folder (a folder of the user's that the kit did not make is refused); an earlier training
    run there is an error unless output.overwrite. Returns the earlier run's training files, which
    `_replace_old_run` deletes only once the new run has loaded its model and data (the pipeline's prepared
    data in the same folder is kept)."""
    io.claim_dir(run_dir, "run", "output.dir/output.name", known=(CONFIG_FILE, "stages", "data"))
    old = _training_files(run_dir)
    if old and not cfg.output.overwrite:
        raise KitError(
            f"output.name: {run_dir} already holds a run: resume it (--resume {run_dir}), pick another "
            "output.name, or --set output.overwrite=true"
        )
    return old


def _replace_old_run(old: list[Path]) -> None:
    for p in old:
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def _refuse_finished(run_dir: Path, ckpt: Path, cfg: RunConfig) -> None:
    """`--resume` of a run that already reached its length would train past it and rewrite its adapter."""
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        done = json.loads((run_dir / RESULT_FILE).read_text()) if (run_dir / RESULT_FILE).is_file() else {}
    except (OSError, ValueError) as e:
        raise KitError(f"--resume: {ckpt} is unreadable ({type(e).__name__}: {e})") from None
    step = int(state.get("global_step") or 0)
    if done.get("status") == "completed":
        step = max(step, int(done.get("steps") or 0))
    if cfg.train.max_steps:
        finished = step >= cfg.train.max_steps
        what = f"train.max_steps {cfg.train.max_steps}"
    else:
        finished = step >= int(state.get("max_steps") or 0) > 0 and (cfg.train.epochs or 1) <= float(
            state.get("epoch") or 0
        ) + 1e-6
        what = f"train.epochs {cfg.train.epochs}"
    if finished:
        raise KitError(
            f"--resume: {run_dir} already finished ({step} steps, {what}); to train longer raise it, "
            f"e.g. --set train.max_steps={step * 2}"
        )


def _fingerprints(cfg: RunConfig, enc_train: Encoded, enc_eval: Encoded | None) -> dict[str, Any]:
    fp = {"train": {"path": cfg.data.train, "sha256": file_sha256(cfg.data.train), **enc_train.stats}}
    if enc_eval is not None:
        fp["eval"] = {"path": cfg.data.eval, "sha256": file_sha256(cfg.data.eval), **enc_eval.stats}
    return fp


def _check_same_data(run_dir: Path, cfg: RunConfig) -> None:
    f = run_dir / FINGERPRINTS_FILE
    if not f.is_file():
        return
    old = json.loads(f.read_text())
    for split, key in (("train", "data.train"), ("eval", "data.eval")):
        path = getattr(cfg.data, split)
        if split in old and path and file_sha256(path) != old[split]["sha256"]:
            raise KitError(
                f"{key}: {path} changed since {run_dir} started (sha256 differs): resuming would not see the "
                "same data; start a new run"
            )


def load_run_config(run_dir: str | Path, overrides: list[str] | dict | None = None) -> RunConfig:
    """The resolved config a run folder was started with, plus overrides (e.g. a larger train.max_steps)."""
    run_dir = Path(run_dir)
    f = run_dir / CONFIG_FILE
    if not f.is_file():
        raise KitError(f"--resume: {f} not found (is {run_dir} a run folder?)")
    cfg = load_config(f, overrides)
    # The folder is where it is now, whatever the config said when the run started.
    cfg.output.dir, cfg.output.name = str(run_dir.parent), run_dir.name
    return cfg


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "unsloth"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _idle_cores(interval: float = 0.5) -> float | None:
    """Cores left idle by other processes over `interval` seconds (Linux /proc/stat), None elsewhere."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)  # idle + iowait jiffies, all jiffies

    try:
        i0, t0 = sample()
        time.sleep(interval)
        i1, t1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    n = os.cpu_count() or 1
    return n * (i1 - i0) / max(t1 - t0, 1)


def cpu_threads() -> tuple[int, str]:
    """(torch threads, why) for CPU training. torch's OpenMP threads wait for each other at every op: with one
    of two cores taken by another process, a demo step went from ~25 s to 60-100 s. Training on the cores that
    are idle at the start degrades far less (TOOLCALL_KIT_THREADS overrides)."""
    import torch

    forced = os.environ.get("TOOLCALL_KIT_THREADS")
    if forced:
        return max(1, int(forced)), "TOOLCALL_KIT_THREADS"
    have = torch.get_num_threads()
    idle = _idle_cores()
    if idle is None or idle >= have - 0.5:
        return have, f"{have} threads (cores idle)"
    use = max(1, min(have, int(idle + 0.5)))
    return use, f"{use} of {have} threads: other processes keep {have - idle:.1f} cores busy"


def _tune_malloc() -> bool:
    """glibc: keep freed memory instead of returning it to the OS after every step (about 2x on CPU here).

    The same as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1e11 in the environment (the Makefile sets those);
    done in-process for notebook and CLI runs that did not. Returns whether it was applied.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_MAX_" in os.environ:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # from malloc.h
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 100_000_000_000))
    except OSError:
        return False


# ------------------------------------------------------------------ training


def train(cfg: RunConfig | None = None, resume: str | Path | None = None, *, extra_callbacks=None) -> dict:
    """Train a LoRA adapter as `cfg` says; returns result.json's content (see `_train`). The run folder is
    locked from its creation to the end of the run, so a second process writing the same run gets a KitError."""
    with ExitStack() as hold:
        return _train(cfg, resume, extra_callbacks=extra_callbacks, _hold=hold)


def _train(cfg: RunConfig | None = None, resume: str | Path | None = None, *, extra_callbacks=None, _hold=None):
    """Train a LoRA adapter as `cfg` says; returns result.json's content.

    `resume="runs/NAME"` continues that run from its last checkpoint with its saved config (pass `cfg` to
    change something, e.g. a larger max_steps: `load_run_config(run_dir, overrides)`). A NaN/inf loss stops
    the run and raises KitError after writing result.json (status "stopped"); the last good checkpoint
    stays. `extra_callbacks`: more TrainerCallbacks (tests inject faults this way).
    """
    t_start = time.time()
    if resume is not None:
        run_dir = Path(resume)
        if cfg is None:
            cfg = load_run_config(run_dir)
        else:
            cfg.output.dir, cfg.output.name = str(run_dir.parent), run_dir.name
    elif cfg is None:
        raise KitError("train: give a config or --resume RUN_DIR")
    else:
        run_dir = cfg.run_dir
    cfg.validate()
    main = _rank() == 0
    # Unsloth must patch transformers, TRL and PEFT before anything imports them.
    backend, why = choose_backend(cfg.backend)
    unsloth_first = _import_unsloth() if backend == "unsloth" else None
    log.info("backend: %s (%s)", backend, why)

    ckpt = _resume_point(run_dir) if resume is not None else None
    if ckpt is not None:
        _refuse_finished(run_dir, ckpt, cfg)
    for key in ("train", "eval"):
        path = getattr(cfg.data, key)
        if path and not Path(path).is_file():
            raise KitError(f"data.{key}: file not found: {path}")
    init = resolve_init_from(cfg.init_from)
    if cfg.train.optim in EIGHT_BIT_OPTIMS and not _device()[0]:
        raise KitError(
            f"train.optim: {cfg.train.optim} needs a CUDA GPU (bitsandbytes); use adamw_torch on CPU"
        )
    if cfg.model.load_in_4bit and backend == "hf" and importlib.util.find_spec("bitsandbytes") is None:
        raise KitError("model.load_in_4bit: needs bitsandbytes (pip install 'toolcall-kit[quant]')")
    old_run: list[Path] = []
    if main:
        if _hold is not None:  # before anything in the folder is looked at: a second writer stops here
            _hold.enter_context(io.folder_lock(run_dir, "output.dir/output.name"))
        if resume is None:
            old_run = _new_run_dir(cfg, run_dir)
        else:
            _check_same_data(run_dir, cfg)

    from .models import resolve_model

    on_gpu, bf16_ok = _device()
    malloc_tuned = _tune_malloc() if not on_gpu else False
    threads = None
    if not on_gpu:
        import torch

        threads, threads_why = cpu_threads()
        torch.set_num_threads(threads)
        (log.warning if "busy" in threads_why else log.info)("CPU training on %s", threads_why)
    model_path = str(init.model) if init.model is not None else str(resolve_model(cfg.model.name))
    loader = load_unsloth if backend == "unsloth" else load_hf
    t_load = time.time()
    model, tokenizer, targets = loader(cfg, model_path, init, on_gpu, bf16_ok)
    load_s = time.time() - t_load
    family, template = _apply_chat_template(cfg, tokenizer)

    from .tokens import read_records

    def encode_split(key: str) -> Encoded:
        path = getattr(cfg.data, key)
        records = read_records(path)
        if key == "eval" and cfg.train.eval_limit is not None:
            records = records[: cfg.train.eval_limit]
        if key == "train":
            from .bfcl import assert_not_bfcl

            assert_not_bfcl(records, f"data.train ({path})")  # an evaluation set is never training data
        return encode_records(
            records,
            tokenizer,
            family,
            cfg.model.max_seq_length,
            f"data.{key}",
            path,
            chat_template=template,
            parallel=cfg.data.parallel,
            content_with_calls=cfg.data.content_with_calls,
        )

    enc_train = encode_split("train")
    enc_eval = encode_split("eval") if cfg.data.eval else None
    fingerprints = _fingerprints(cfg, enc_train, enc_eval)
    if main:
        _replace_old_run(old_run)  # the new run loaded its model and data: only now is the old one replaced
        # On resume too: the stored config is the one that trained (overrides such as a larger max_steps).
        io.write_text(run_dir / CONFIG_FILE, cfg.to_yaml())
        io.write_json(run_dir / FINGERPRINTS_FILE, fingerprints)

    from trl import SFTConfig, SFTTrainer

    from .callbacks import BatchTracker, HealthCallback, LivePlotCallback, MetricsCallback, RunLog

    kwargs = sft_kwargs(cfg, run_dir / CHECKPOINTS, on_gpu=on_gpu, bf16_ok=bf16_ok)
    # Show NaN/inf in the logged loss instead of Trainer's silent "average of previous losses" stand-in.
    kwargs["logging_nan_inf_filter"] = False
    if backend == "unsloth":
        # Unsloth wires its own checkpointing through get_peft_model; TRL's would wrap the model twice.
        kwargs["gradient_checkpointing"] = False
        kwargs.pop("gradient_checkpointing_kwargs", None)
    args = SFTConfig(**kwargs)

    runlog = RunLog(run_dir, main=main)
    if resume is not None and ckpt is not None:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        runlog.load_until(int(state["global_step"]))
    health = HealthCallback(runlog, model)
    title = f"{run_dir.name}: {cfg.model.name} ({backend})"
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=_dataset(enc_train),
        eval_dataset=_dataset(enc_eval) if enc_eval is not None else None,
        processing_class=tokenizer,
    )
    # The kit's tqdm bar and metrics.jsonl replace Trainer's printed log dicts and its own bar.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    tracker = BatchTracker(trainer.data_collator, trainer.model)
    trainer.data_collator = tracker
    rows_path = run_dir / f"rows.rank{_rank()}.jsonl"
    metrics = MetricsCallback(runlog, tracker, rows_path)
    if resume is not None and ckpt is not None:
        metrics.load_rows_until(runlog.resumed_step)
    plot = LivePlotCallback(runlog, run_dir / PLOT_FILE, title=title)
    for cb in [metrics, health, plot, *(extra_callbacks or [])]:
        trainer.add_callback(cb)

    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    log.info(
        "training %s on %d examples (%d tokens, %d trained) with %s; LoRA r=%d on %s: %d trainable parameters",
        cfg.model.name,
        len(enc_train.rows),
        enc_train.stats["tokens"],
        enc_train.stats["trained_tokens"],
        backend,
        cfg.lora.r,
        ",".join(targets),
        n_trainable,
    )
    t_train = time.time()
    import torch

    try:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    except torch.OutOfMemoryError:
        runlog.flush(force=True)
        last = _last_checkpoint(run_dir)
        raise KitError(
            f"train.batch_size: a batch of {cfg.train.batch_size} x up to {cfg.model.max_seq_length} tokens "
            f"(model.max_seq_length) does not fit in {'GPU ' if on_gpu else ''}memory at step "
            f"{trainer.state.global_step + 1}: lower train.batch_size (raise train.grad_accum to keep the "
            "effective batch) or model.max_seq_length, or turn on train.gradient_checkpointing / "
            f"model.load_in_4bit (`toolcall-kit plan` estimates the fit)"
            + (f"; resume from {last} with --resume {run_dir}" if last else "")
        ) from None
    train_s = time.time() - t_train

    final_eval = None
    if health.fatal is None and enc_eval is not None:
        step = trainer.state.global_step
        done = [r for r in runlog.rows if "eval_loss" in r and r["step"] == step]
        if done:  # the last scheduled evaluation was at this very step
            final_eval = done[-1]
        else:
            final_eval = trainer.evaluate()
            runlog.add(
                {"step": step, **{k: float(v) for k, v in final_eval.items() if isinstance(v, (int, float))}}
            )
            if main:
                plot.draw(force=True)

    losses = [r["loss"] for r in runlog.rows if r.get("loss") is not None]
    totals = metrics.totals
    result: dict[str, Any] = {
        "status": "stopped" if health.fatal else "completed",
        "error": health.fatal,
        "run_dir": str(run_dir),
        "backend": backend,
        "backend_why": why,
        # unsloth backend: whether unsloth was imported before transformers/TRL/PEFT (its patches need it).
        "unsloth_imported_first": unsloth_first,
        "model": cfg.model.name,
        "model_path": model_path,
        "family": family,
        "init_from": cfg.init_from,
        "resumed_from": str(ckpt) if ckpt is not None else None,
        "device": "cuda" if on_gpu else "cpu",
        "world_size": args.world_size,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "load_in_4bit": cfg.model.load_in_4bit,
        "target_modules": targets,
        "trainable_params": n_trainable,
        "total_params": n_total,
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "epochs": round(float(trainer.state.epoch or 0.0), 4),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "final_eval_loss": (final_eval or {}).get("eval_loss"),
        "train_rows": len(enc_train.rows),
        "eval_rows": len(enc_eval.rows) if enc_eval is not None else 0,
        "load_seconds": round(load_s, 2),
        "train_seconds": round(train_s, 2),
        "wall_seconds": round(time.time() - t_start, 2),
        # Tokens of this process this session x processes (resumed runs count from the resume point).
        "tokens_per_s": round(totals["real_tokens"] * args.world_size / train_s, 1) if train_s > 0 else None,
        "steps_per_s": round(totals["steps"] / train_s, 3) if train_s > 0 else None,
        "real_token_fraction": (
            round(totals["real_tokens"] / totals["processed_tokens"], 4)
            if totals["processed_tokens"]
            else None
        ),
        "trained_token_fraction": (
            round(totals["trained_tokens"] / totals["processed_tokens"], 4)
            if totals["processed_tokens"]
            else None
        ),
        "malloc_tuned": malloc_tuned,
        "cpu_threads": threads,
        "warnings": [{k: w[k] for k in ("step", "warning", "message")} for w in runlog.warnings],
        "adapter": None,
        "versions": _versions(),
        **{k: v for k, v in _memory().items()},
    }
    if health.fatal is None and main:
        with io.atomic_dir(run_dir / ADAPTER, kind="adapter", replace_unmarked=True) as tmp:  # in the locked run
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        result["adapter"] = str(run_dir / ADAPTER)
    if main:
        runlog.flush(force=True)
        io.write_json(run_dir / RESULT_FILE, result)
    if health.fatal is not None:
        ck = _last_checkpoint(run_dir)
        keep = f"; the last good checkpoint is {ck}" if ck else "; no checkpoint was saved before it"
        raise KitError(f"{health.fatal}{keep}")
    return result


def _memory() -> dict[str, float]:
    from .callbacks import memory_now

    return memory_now()


def summary(result: dict) -> str:
    """The few lines the CLI prints after a run."""
    lines = [
        f"trained {result['model']} with {result['backend']} ({result['backend_why']})",
        f"steps {result['steps']}/{result['max_steps']}, loss {result['first_loss']:.4g} -> {result['final_loss']:.4g}"
        + (
            f", eval loss {result['final_eval_loss']:.4g}"
            if result.get("final_eval_loss") is not None
            else ""
        ),
        f"{result['train_seconds']} s training, {result['tokens_per_s']} tokens/s, "
        f"peak RSS {result['peak_rss_gib']} GiB"
        + (
            f", GPU peak {result['gpu_peak_reserved_gib']} GiB reserved"
            if "gpu_peak_reserved_gib" in result
            else ""
        ),
        f"adapter: {result['adapter']}",
    ]
    for w in result.get("warnings") or []:
        lines.append(f"warning at step {w['step']}: {w['message']}")
    return "\n".join(lines)
