"""Run config: small typed dataclasses loaded from one YAML file per run, with dotted overrides (CLI `--set`
strings or a notebook's dict) landing in the same `RunConfig`; an error names the key ("lora.r: must be > 0,
got 0")."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic import StrictBool as Bool
from pydantic import StrictFloat as Float
from pydantic import StrictInt as Int
from pydantic import StrictStr as Str
from pydantic.dataclasses import dataclass

from .errors import KitError
from .run_files import RunFiles

BACKENDS = ("auto", "unsloth", "hf")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# The optimizers the kit documents; the 8-bit ones come from bitsandbytes and need a GPU.
OPTIMS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd")
EIGHT_BIT_OPTIMS = ("adamw_8bit", "paged_adamw_8bit")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")  # fmt: skip
# Every linear layer of the decoder except the output head (PEFT resolves the names per architecture).
ALL_LINEAR = "all-linear"
# Above 1 every update overshoots (LoRA learning rates are ~1e-5 to 1e-2); 1e12 "trained" to NaN-free noise.
MAX_LEARNING_RATE = 1.0
# Unknown keys are errors; values are checked as written (no "yes" -> True, no "5" -> 5; ints pass as floats).
SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(config=SECTION)
class ModelConfig:
    # Hub id, local folder, "packaged:smollm2-135m-instruct" or "tiny:llama" / "tiny:qwen2" (see models.py).
    name: Str = Field("tiny:llama", min_length=1)
    # Tokens per example after the chat template; longer ones are truncated (all assistant tokens cut: error).
    max_seq_length: Int = Field(1024, ge=16)
    # QLoRA: NF4 4-bit base weights (bitsandbytes on hf, Unsloth's own loader on unsloth).
    load_in_4bit: Bool = False
    # GPU: weights and autocast in this dtype ("auto": bf16 from Ampere on, else fp16). CPU: weights stay fp32
    # and "auto" autocasts to bf16 only where it is native (avx512_bf16 / AMX: steps about 2x faster).
    dtype: Literal[DTYPES] = "auto"
    # Chat-template family (templates.py) or an alias; None: inferred from the tokenizer.
    family: Str | None = None
    # A Jinja chat template file replacing the tokenizer's (it must render tools).
    chat_template: Str | None = None


@dataclass(config=SECTION)
class LoraConfig:
    r: Int = Field(16, gt=0)
    alpha: Int = Field(32, gt=0)
    dropout: Float = Field(0.0, ge=0, lt=1)
    # "all-linear" or a list of module names such as [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj].
    target_modules: Str | list[Str] = ALL_LINEAR
    # rsLoRA scales by alpha/sqrt(r) instead of alpha/r: steadier at large r.
    use_rslora: Bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    # Adapt only the top N decoder layers (None: all): the backward pass stops at the lowest adapted one, so
    # on SmolLM2-135M (30 layers) on CPU the top 15 made a step 1.7x faster (benchmarks/bench_smollm2_step.py).
    top_layers: Int | None = Field(None, ge=1)

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules(cls, v: Any) -> Any:
        if v == ALL_LINEAR or (isinstance(v, list) and v and all(isinstance(m, str) and m for m in v)):
            return v
        raise ValueError(f"must be {ALL_LINEAR!r} or a non-empty list of module names, got {v!r}")


@dataclass(config=SECTION)
class FullConfig:
    # method: full trains the top N decoder layers and the final norm (None: every layer; embeddings frozen).
    # On the CPU demo the top 15 of 30 ran as fast as LoRA (benchmarks/demo_experiments.md, runs I-M).
    top_layers: Int | None = Field(None, ge=1)


@dataclass(config=SECTION)
class TrainConfig:
    # Examples per device per forward pass; the effective batch is batch_size x grad_accum x processes.
    batch_size: Int = Field(4, ge=1)
    grad_accum: Int = Field(1, ge=1)
    learning_rate: Float = Field(2e-4, gt=0, le=MAX_LEARNING_RATE)
    lr_scheduler: Literal[SCHEDULERS] = "cosine"
    # Fraction of the optimizer steps spent warming the learning rate up from 0.
    warmup_ratio: Float = Field(0.05, ge=0, lt=1)
    # Exactly one of epochs / max_steps drives the length; max_steps wins if both are set.
    epochs: Float | None = Field(None, gt=0)
    max_steps: Int | None = Field(None, ge=1)
    optim: Literal[OPTIMS] = "adamw_torch"
    weight_decay: Float = Field(0.0, ge=0)
    # Recompute activations in the backward pass: ~30% slower, much less memory (offloaded on unsloth).
    gradient_checkpointing: Bool = False
    # Pack examples into max_seq_length rows, padding-free (TRL's best-fit packing; they cannot see each other).
    packing: Bool = False
    # Batch examples of similar length together: on the CPU demo a third of a random batch was padding.
    group_by_length: Bool = False
    seed: Int = Field(0, ge=0)
    # Optimizer steps between evaluations / checkpoints / log lines (None: no evaluation / save at the end only).
    eval_steps: Int | None = Field(None, ge=1)
    # The eval loss on the first N examples of data.eval (None: all): a health signal, a few dozen suffice.
    eval_limit: Int | None = Field(None, ge=1)
    save_steps: Int | None = Field(None, ge=1)
    logging_steps: Int = Field(1, ge=1)
    max_grad_norm: Float = Field(1.0, gt=0)
    # Checkpoints kept on disk (oldest deleted first); the final adapter is always kept.
    save_total_limit: Int | None = Field(2, ge=1)

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set train.epochs or train.max_steps (both are unset)")
        return self


@dataclass(config=SECTION)
class DataConfig:
    # Canonical JSONL written by `toolcall-kit prepare` / `synth` (paths relative to the working folder).
    train: Str = Field("data/demo/train.jsonl", min_length=1)
    eval: Str | None = None
    # Llama 3.1 writes one call per assistant turn and no text beside a call: "error" refuses such examples,
    # naming them; "split" / "drop" rewrites them (templates.adapt_record).
    parallel: Literal["error", "split"] = "error"
    content_with_calls: Literal["error", "drop"] = "error"


@dataclass(config=SECTION)
class OutputConfig:
    # The run folder is dir/name; name defaults to the config file's stem.
    dir: Str = "runs"
    name: Str | None = None
    # Replace an existing run folder (otherwise an existing run is an error: resume it or rename).
    overwrite: Bool = False

    @field_validator("name")
    @classmethod
    def _plain(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or v in (".", "..")):
            raise ValueError(f"must be a plain folder name, got {v!r}")
        return v


@dataclass(config=SECTION)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    # "lora": a LoRA adapter (QLoRA with model.load_in_4bit); "full": the weights themselves (`full` section).
    method: Literal["lora", "full"] = "lora"
    full: FullConfig = field(default_factory=FullConfig)
    # "auto" picks unsloth where it imports and a GPU can run it, else hf (train() records which and why).
    backend: Literal[BACKENDS] = "auto"
    # Two-stage training: an earlier run or adapter folder (training continues on that adapter) or a merged
    # model folder (a new adapter is trained on top of it).
    init_from: Str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _method(self) -> RunConfig:
        if self.method == "full" and self.model.load_in_4bit:
            raise ValueError(
                "method: full trains the weights themselves, which 4-bit weights cannot be "
                "(model.load_in_4bit: true is QLoRA: use method: lora)"
            )
        return self

    def validate(self) -> RunConfig:
        """Check the values again (after code changed them); raises KitError naming the key."""
        config_from_dict(dataclasses.asdict(self))
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / (self.output.name or "run")

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.run_dir)

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False, default_flow_style=False)


SECTIONS = {
    "model": ModelConfig,
    "lora": LoraConfig,
    "full": FullConfig,
    "train": TrainConfig,
    "data": DataConfig,
    "output": OutputConfig,
}


class _Loader(yaml.SafeLoader):
    """YAML 1.2's numbers: `2e-4` is a float (YAML 1.1, PyYAML's default, reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)

# pydantic's error types in the kit's words ("lora.r: must be > 0, got 0").
_PHRASES = {
    "greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}", "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}", "literal_error": "must be one of {expected}",
    "int_type": "expected an integer", "float_type": "expected a number", "bool_type": "expected true or false",
    "string_type": "expected a string", "string_too_short": "must not be empty", "list_type": "expected a list",
    "dataclass_type": "must be a mapping of keys", "finite_number": "must be a finite number",
}  # fmt: skip


def _kit_error(e: ValidationError) -> KitError:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "unexpected_keyword_argument":
        cls = SECTIONS.get(str(err["loc"][0])) if len(err["loc"]) > 1 else RunConfig
        known = [f.name for f in dataclasses.fields(cls)]
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
        return KitError(f"{key}: unknown key ({hint})")
    if err["type"] == "value_error":  # the validators above: the message says it all
        return KitError(f"{key or 'config'}: {err['ctx']['error']}")
    phrase = _PHRASES[err["type"]].format(**err.get("ctx", {})) if err["type"] in _PHRASES else err["msg"]
    return KitError(f"{key}: {phrase}, got {err['input']!r}")


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    if not isinstance(data, dict):
        raise KitError(f"config must be a mapping of sections, got {type(data).__name__}")
    # An empty section (`lora:` with every key commented out) reads as null: the defaults.
    data = {str(k): v for k, v in data.items() if not (k in SECTIONS and v is None)}
    try:
        return RunConfig(**data)
    except ValidationError as e:
        raise _kit_error(e) from None


def parse_override(item: str) -> tuple[str, Any]:
    """`train.max_steps=20` -> ("train.max_steps", 20); the value is read as YAML, as in the config file."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise KitError(f"--set {item!r}: expected KEY=VALUE, e.g. train.max_steps=20")
    try:
        return key.strip(), yaml.load(raw, Loader=_Loader) if raw.strip() else None
    except yaml.YAMLError as e:
        raise KitError(f"--set {item!r}: cannot read the value as YAML ({e.__class__.__name__})") from None


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the nested config dict with overrides applied: "k=v" strings, or a dict whose keys are
    dotted ("lora.r") or sections ({"lora": {"r": 4}} sets lora.r and keeps the section's other keys)."""
    data = copy.deepcopy(data)
    pairs = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or ())
    for key, value in pairs:
        *sections, name = key.split(".")
        node = data
        for part in sections:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise KitError(f"{key}: {part} is not a section")
        if isinstance(value, dict) and isinstance(node.get(name), dict):
            value = {**node[name], **value}
        node[name] = copy.deepcopy(value)
    return data


def load_config(path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config, apply overrides, validate. `path=None` starts from the defaults."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
        except OSError as e:
            raise KitError(f"{path}: cannot read config ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise KitError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except (yaml.YAMLError, RecursionError) as e:
            raise KitError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
        if not isinstance(data, dict):
            raise KitError(f"{path}: a config is a mapping of sections (model, lora, train, data, output)")
    data = apply_overrides(data, overrides)
    try:
        cfg = config_from_dict(data)
    except KitError as e:
        raise KitError(f"{path}: {e}" if path is not None else str(e)) from None
    if cfg.output.name is None:
        cfg.output.name = Path(path).stem if path is not None else "run"
    return cfg


# ---------------------------------------------------------------- mapping onto TRL


def sft_kwargs(
    cfg: RunConfig, output_dir: str | Path, *, on_gpu: bool, bf16_ok: bool, backend: str = "hf"
) -> dict[str, Any]:
    """The `trl.SFTConfig(**kwargs)` for this run; a field not named keeps TRL's default. Set on purpose:
    `bf16` and `gradient_checkpointing` (TRL turns both on), `max_length` (TRL's 1024 would re-truncate)."""
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
        report_to="none",  # metrics.jsonl and loss.png replace TensorBoard/W&B: nothing leaves the machine
        remove_unused_columns=False,  # the kit's dataset holds only input_ids and labels, both needed
        dataloader_num_workers=0,
        disable_tqdm=True,
        save_only_model=False,
        ddp_find_unused_parameters=False,
    )
    if checkpointing:
        kw["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return kw


def mixed_precision(dtype: str, *, on_gpu: bool, bf16_ok: bool) -> tuple[bool, bool]:
    """(bf16, fp16) autocast flags for `model.dtype` on this device. `bf16_ok`: the GPU supports bf16, or the
    CPU has native bf16 instructions (elsewhere CPU bf16 is emulated, slowly, so "auto" stays fp32 there)."""
    if dtype == "auto":
        dtype = "bfloat16" if bf16_ok else "float16" if on_gpu else "float32"
    if dtype == "bfloat16" and on_gpu and not bf16_ok:
        raise KitError("model.dtype: bfloat16 is not supported on this GPU: use float16 or float32")
    if dtype == "float16" and not on_gpu:
        raise KitError("model.dtype: float16 training needs a GPU: use float32 or bfloat16 on CPU")
    return dtype == "bfloat16", dtype == "float16"
