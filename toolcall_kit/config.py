"""Run config: small typed dataclasses loaded from one YAML file per run, with dotted overrides.

    cfg = load_config("configs/smoke.yaml", ["train.max_steps=20", "lora.r=8"])   # CLI `--set` strings
    cfg = load_config("configs/demo_cpu.yaml", {"train.max_steps": 20})           # a notebook's parameters cell

Both routes land in the same `RunConfig`. Every section validates itself: unknown keys and impossible values
raise `KitError` naming the key ("lora.r: must be > 0, got 0"). What can only be checked against the model
(a LoRA target module it lacks, a context shorter than `max_seq_length`) is checked when `train` loads it.

This module imports only the standard library and PyYAML, so `toolcall-kit train --help` stays fast;
`sft_kwargs` maps the config onto TRL's `SFTConfig` fields explicitly (the kit does not re-export TRL's 100+
fields: a field the kit does not name keeps TRL's default unless `sft_kwargs` sets it on purpose).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import KitError

BACKENDS = ("auto", "unsloth", "hf")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# The optimizers the kit documents; the 8-bit ones come from bitsandbytes and need a GPU.
OPTIMS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd")
EIGHT_BIT_OPTIMS = ("adamw_8bit", "paged_adamw_8bit")
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)
LORA_BIAS = ("none", "all", "lora_only")
# The usual names of a decoder's linear layers (Llama, Qwen2, Mistral, SmolLM2 all use these).
ALL_LINEAR = "all-linear"


def _fail(key: str, problem: str) -> KitError:
    return KitError(f"{key}: {problem}")


@dataclass
class ModelConfig:
    # Hub id, local folder, "packaged:smollm2-135m-instruct" or "tiny:llama" / "tiny:qwen2" (see models.py).
    name: str = "tiny:llama"
    # Tokens per example after the chat template; longer examples are truncated, and an example whose
    # assistant tokens are all cut off is an error (never dropped silently).
    max_seq_length: int = 1024
    # QLoRA: NF4 4-bit base weights (bitsandbytes on hf, Unsloth's own loader on unsloth).
    load_in_4bit: bool = False
    # Compute precision. GPU: weights and autocast in this dtype ("auto" = bf16 on compute capability >= 8,
    # i.e. Ampere or newer, else fp16).
    # CPU: weights stay fp32; "bfloat16" turns on bf16 autocast, and "auto" does so only on CPUs with native
    # bf16 (avx512_bf16 / AMX: about 2x faster steps and less RSS here), else fp32.
    dtype: str = "auto"
    # Chat-template family (see templates.py): "chatml", "qwen2_5", "llama3_1", "mistral" (or an alias);
    # None = the family templates.py infers from the tokenizer.
    family: str | None = None
    # Optional path to a Jinja chat template that replaces the tokenizer's (it must render tools and carry
    # {% generation %} markers if the family needs them).
    chat_template: str | None = None

    def validate(self, key: str = "model") -> None:
        if not self.name.strip():
            raise _fail(f"{key}.name", "must not be empty")
        if self.max_seq_length < 16:
            raise _fail(f"{key}.max_seq_length", f"must be >= 16 tokens, got {self.max_seq_length}")
        if self.dtype not in DTYPES:
            raise _fail(f"{key}.dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # "all-linear" (every linear layer of the decoder except the output head) or a list of module names
    # such as [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj].
    target_modules: Union[str, list[str]] = ALL_LINEAR  # noqa: UP007 (typing.get_type_hints on py3.10)
    # rsLoRA scales by alpha/sqrt(r) instead of alpha/r: steadier at large r.
    use_rslora: bool = False
    bias: str = "none"
    # Adapt only the top N decoder layers (PEFT `layers_to_transform`); None: all of them. The backward pass
    # then stops at the lowest adapted layer: on SmolLM2-135M (30 layers) on CPU, adapting the top 15 made a
    # step 1.7x faster (benchmarks/bench_smollm2_step.py). Tool calling is mostly reading the prompt's
    # tool list and copying values, which the upper layers' attention can learn.
    top_layers: int | None = None

    def validate(self, key: str = "lora") -> None:
        if self.r <= 0:
            raise _fail(f"{key}.r", f"must be > 0, got {self.r}")
        if self.alpha <= 0:
            raise _fail(f"{key}.alpha", f"must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise _fail(f"{key}.dropout", f"must be in [0, 1), got {self.dropout}")
        if isinstance(self.target_modules, str):
            if self.target_modules != ALL_LINEAR:
                raise _fail(f"{key}.target_modules", f"must be {ALL_LINEAR!r} or a list of module names")
        elif not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise _fail(f"{key}.target_modules", "must be a non-empty list of module names")
        if self.bias not in LORA_BIAS:
            raise _fail(f"{key}.bias", f"must be one of {', '.join(LORA_BIAS)}, got {self.bias!r}")
        if self.top_layers is not None and self.top_layers < 1:
            raise _fail(f"{key}.top_layers", f"must be >= 1 or null (all layers), got {self.top_layers}")


MAX_LEARNING_RATE = 1.0


@dataclass
class TrainConfig:
    # Examples per device per forward pass; the effective batch is batch_size x grad_accum x processes.
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    # Fraction of the optimizer steps spent warming the learning rate up from 0.
    warmup_ratio: float = 0.05
    # Exactly one of epochs / max_steps drives the length; max_steps wins if both are set.
    epochs: float | None = None
    max_steps: int | None = None
    optim: str = "adamw_torch"
    weight_decay: float = 0.0
    # Recompute activations in the backward pass: ~30% slower, much less memory. On the unsloth backend this
    # becomes Unsloth's offloaded checkpointing ("unsloth") on a GPU.
    gradient_checkpointing: bool = False
    # Pack several examples into each max_seq_length row, padding-free (TRL's best-fit packing). Packed
    # examples cannot see each other: transformers 5 builds a block-diagonal mask from the position ids
    # (sdpa/eager) and flash attention uses the sequence lengths. More examples per step, so fewer steps.
    packing: bool = False
    # Batch examples of similar length together (transformers' LengthGroupedSampler: shuffled megabatches of
    # 50 batches, each sorted by length), so a batch carries little padding: on the CPU demo about a third
    # of every randomly drawn batch was padding (real_token_fraction 0.64-0.72).
    group_by_length: bool = False
    seed: int = 0
    # Optimizer steps between evaluations / checkpoints / log lines (None: no evaluation / save at the end only).
    eval_steps: int | None = None
    # Examples of data.eval the eval loss is computed on (the first N; None: all). The eval loss is a health
    # signal, not the evaluation (that is `toolcall-kit eval`): on a CPU a few dozen examples are enough.
    eval_limit: int | None = None
    save_steps: int | None = None
    logging_steps: int = 1
    max_grad_norm: float = 1.0
    # Checkpoints kept on disk (oldest deleted first); the final adapter is always kept.
    save_total_limit: int | None = 2

    def validate(self, key: str = "train") -> None:
        positive_ints = ("batch_size", "grad_accum", "logging_steps")
        for name in positive_ints:
            v = getattr(self, name)
            if v < 1:
                raise _fail(f"{key}.{name}", f"must be >= 1, got {v}")
        for name in ("max_steps", "eval_steps", "save_steps", "save_total_limit"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise _fail(f"{key}.{name}", f"must be >= 1 or null, got {v}")
        # Above 1 every update overshoots (LoRA learning rates are ~1e-5 to 1e-2); 1e12 "trained" to NaN-free noise.
        if not (0 < self.learning_rate <= MAX_LEARNING_RATE and math.isfinite(self.learning_rate)):
            raise _fail(f"{key}.learning_rate", f"must be > 0 and <= {MAX_LEARNING_RATE}, got {self.learning_rate}")
        if self.epochs is None and self.max_steps is None:
            raise _fail(f"{key}.epochs", "set train.epochs or train.max_steps (both are unset)")
        if self.epochs is not None and not self.epochs > 0:
            raise _fail(f"{key}.epochs", f"must be > 0, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise _fail(f"{key}.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise _fail(f"{key}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not self.max_grad_norm > 0:
            raise _fail(f"{key}.max_grad_norm", f"must be > 0, got {self.max_grad_norm}")
        if self.lr_scheduler not in SCHEDULERS:
            raise _fail(
                f"{key}.lr_scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {self.lr_scheduler!r}"
            )
        if self.optim not in OPTIMS:
            raise _fail(f"{key}.optim", f"must be one of {', '.join(OPTIMS)}, got {self.optim!r}")
        if self.seed < 0:
            raise _fail(f"{key}.seed", f"must be >= 0, got {self.seed}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise _fail(f"{key}.eval_limit", f"must be >= 1 or null (all), got {self.eval_limit}")


@dataclass
class DataConfig:
    # Canonical JSONL written by `toolcall-kit prepare` / `synth` (paths relative to the working folder).
    train: str = "data/demo/train.jsonl"
    eval: str | None = None
    # Family quirks (templates.adapt_record): Llama 3.1 writes one call per assistant turn and no text
    # beside a call. "error" refuses such examples naming them; "split" / "drop" rewrites them.
    parallel: str = "error"
    content_with_calls: str = "error"

    def validate(self, key: str = "data") -> None:
        if not self.train:
            raise _fail(f"{key}.train", "must name a JSONL file")
        if self.parallel not in ("error", "split"):
            raise _fail(f"{key}.parallel", f"must be 'error' or 'split', got {self.parallel!r}")
        if self.content_with_calls not in ("error", "drop"):
            raise _fail(
                f"{key}.content_with_calls", f"must be 'error' or 'drop', got {self.content_with_calls!r}"
            )


@dataclass
class OutputConfig:
    # The run folder is dir/name; name defaults to the config file's stem.
    dir: str = "runs"
    name: str | None = None
    # Replace an existing run folder (otherwise an existing run is an error: resume it or rename).
    overwrite: bool = False

    def validate(self, key: str = "output") -> None:
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise _fail(f"{key}.name", f"must be a plain folder name, got {self.name!r}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    # "auto" picks unsloth where it imports and a GPU can run it, else hf (train() records which and why).
    backend: str = "auto"
    # Two-stage training: an earlier run folder, its adapter folder (training continues on that adapter) or a
    # merged model folder (a new adapter is trained on top of it).
    init_from: str | None = None

    def validate(self) -> RunConfig:
        for name in ("model", "lora", "train", "data", "output"):
            getattr(self, name).validate(name)
        if self.backend not in BACKENDS:
            raise _fail("backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.init_from is not None and not self.init_from:
            raise _fail("init_from", "must be a folder or null")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / (self.output.name or "run")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


SECTIONS = {
    "model": ModelConfig,
    "lora": LoraConfig,
    "train": TrainConfig,
    "data": DataConfig,
    "output": OutputConfig,
}
TOP_LEVEL = ("backend", "init_from")


# ---------------------------------------------------------------- typed construction


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return "a list"
    return _TYPE_NAMES.get(tp) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted for floats, nothing else is converted."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _fail(key, f"must not be null (expected {' or '.join(_type_name(a) for a in args)})")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except KitError as e:
                errors.append(str(e))
        wanted = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise _fail(key, f"expected {wanted}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _fail(key, f"expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads "2e-4" (no dot) as a string: accept what Python reads as a number.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _fail(key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(key, f"expected a string, got {value!r}")
    raise AssertionError(f"config type {tp} of {key} is not handled")


def _unknown(key: str, known: list[str]) -> KitError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return _fail(key, f"unknown key{hint}")


def _build_section(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _fail(prefix, f"must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            raise _unknown(f"{prefix}.{k}", names)
        kwargs[k] = _coerce(f"{prefix}.{k}", v, hints[k])
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from a nested dict (the YAML file's content)."""
    if not isinstance(data, dict):
        raise KitError(f"config must be a mapping of sections, got {type(data).__name__}")
    known = list(SECTIONS) + list(TOP_LEVEL)
    for k in data:
        if k not in known:
            raise _unknown(str(k), known)
    sections = {name: _build_section(cls, data.get(name), name) for name, cls in SECTIONS.items()}
    top = {}
    hints = typing.get_type_hints(RunConfig)
    for k in TOP_LEVEL:
        if k in data:
            top[k] = _coerce(k, data[k], hints[k])
    return RunConfig(**sections, **top).validate()


# ---------------------------------------------------------------- overrides


def parse_override(item: str) -> tuple[str, Any]:
    """`train.max_steps=20` -> ("train.max_steps", 20); the value is read with YAML's scalar rules."""
    if "=" not in item:
        raise KitError(f"--set {item!r}: expected KEY=VALUE, e.g. train.max_steps=20")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise KitError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise KitError(f"--set {item!r}: cannot read the value as YAML ({e.__class__.__name__})") from None
    return key, value


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"max_steps": 20}} -> {"train.max_steps": 20}; dotted keys pass through."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k in SECTIONS and not prefix:
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the nested config dict with overrides applied (list of "k=v" strings or a dict)."""
    data = copy.deepcopy(data)
    if not overrides:
        return data
    if isinstance(overrides, dict):
        pairs = list(_flatten(overrides).items())
    else:
        pairs = [parse_override(o) for o in overrides]
    for key, value in pairs:
        parts = key.split(".")
        if len(parts) == 1:
            if key not in TOP_LEVEL:
                if key in SECTIONS:
                    raise _fail(key, "is a section: set one of its keys, e.g. train.max_steps=20")
                raise _unknown(key, list(SECTIONS) + list(TOP_LEVEL))
            data[key] = value
        elif len(parts) == 2:
            section, name = parts
            if section not in SECTIONS:
                raise _unknown(section, list(SECTIONS) + list(TOP_LEVEL))
            if data.get(section) is None:
                data[section] = {}
            if not isinstance(data[section], dict):
                raise _fail(section, f"must be a mapping of keys, got {type(data[section]).__name__}")
            data[section][name] = value
        else:
            raise _fail(key, "too many dots: keys look like section.key")
    return data


def load_config(path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config, apply overrides, validate. `path=None` starts from the defaults."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise KitError(f"{path}: cannot read config ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise KitError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        try:
            data = yaml.safe_load(text) or {}
        except (yaml.YAMLError, RecursionError) as e:
            raise KitError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
        if not isinstance(data, dict):
            raise KitError(f"{path}: a config is a mapping of sections (model, lora, train, data, output)")
    data = apply_overrides(data, overrides)
    try:
        cfg = config_from_dict(data)
    except KitError as e:
        where = f"{path}: " if path is not None else ""
        raise KitError(f"{where}{e}") from None
    if cfg.output.name is None:
        cfg.output.name = Path(path).stem if path is not None else "run"
    return cfg


# ---------------------------------------------------------------- mapping onto TRL


def sft_kwargs(
    cfg: RunConfig, output_dir: str | Path, *, on_gpu: bool, bf16_ok: bool, backend: str = "hf"
) -> dict[str, Any]:
    """The `trl.SFTConfig(**kwargs)` for this run, field by field (training sets no field after it).

    TRL's defaults that would surprise on CPU are set on purpose: `bf16` (TRL defaults it on),
    `gradient_checkpointing` (TRL defaults it on), `use_cpu`, and `max_length` (TRL's 1024 would re-truncate).
    The kit tokenizes and masks the data itself (`tokens.encode`), so TRL receives `input_ids` + `labels` and
    only pads, packs and computes the loss; `assistant_only_loss` stays off because TRL would then demand
    conversational rows (the mask is already in `labels`).
    """
    t = cfg.train
    bf16, fp16 = mixed_precision(cfg.model.dtype, on_gpu=on_gpu, bf16_ok=bf16_ok)
    # Unsloth wires its own checkpointing through get_peft_model; TRL's would wrap the model twice.
    checkpointing = t.gradient_checkpointing and backend != "unsloth"
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        # transformers 5 folded warmup_ratio into warmup_steps: a float in [0, 1) is a fraction of the steps.
        warmup_steps=t.warmup_ratio,
        num_train_epochs=t.epochs if t.epochs is not None else 1.0,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        optim=t.optim,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        # Show NaN/inf in the logged loss instead of Trainer's silent "average of previous losses" stand-in.
        logging_nan_inf_filter=False,
        eval_strategy="steps" if (t.eval_steps and cfg.data.eval) else "no",
        eval_steps=t.eval_steps if cfg.data.eval else None,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit,
        gradient_checkpointing=checkpointing,
        bf16=bf16,
        fp16=fp16,
        use_cpu=not on_gpu,
        max_length=cfg.model.max_seq_length,
        packing=t.packing,
        padding_free=t.packing,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        # The kit's metrics.jsonl and loss.png replace TensorBoard/W&B; nothing leaves the machine.
        report_to="none",
        # The dataset holds only input_ids and labels, both needed: nothing for Trainer to sort out.
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        save_only_model=False,
        ddp_find_unused_parameters=False,
    )
    if checkpointing:
        kw["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return kw


def mixed_precision(dtype: str, *, on_gpu: bool, bf16_ok: bool) -> tuple[bool, bool]:
    """(bf16, fp16) autocast flags for `model.dtype` on this device.

    `bf16_ok`: the GPU supports bf16, or the CPU has native bf16 instructions (elsewhere CPU bf16 is emulated:
    it works but is slow, so "auto" stays fp32 there).
    """
    if dtype == "float32":
        return False, False
    if dtype == "bfloat16":
        if on_gpu and not bf16_ok:
            raise _fail("model.dtype", "bfloat16 is not supported on this GPU: use float16 or float32")
        return True, False
    if dtype == "float16":
        if not on_gpu:
            raise _fail("model.dtype", "float16 training needs a GPU: use float32 or bfloat16 on CPU")
        return False, True
    # auto: bf16 on a GPU that has it, fp16 on an older GPU; on CPU bf16 only where it is native.
    if on_gpu:
        return (True, False) if bf16_ok else (False, True)
    return bf16_ok, False
