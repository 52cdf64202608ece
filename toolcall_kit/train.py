"""LoRA, QLoRA or full fine-tuning with TRL's SFTTrainer, on an Unsloth or a plain Hugging Face backend.

    toolcall-kit train --config configs/smoke.yaml [--set train.max_steps=20] [--backend auto|unsloth|hf]

Unsloth patches transformers, TRL and PEFT when imported: `setup_run` imports it first, and nothing here
imports transformers at module level.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import io
from .config import EIGHT_BIT_OPTIMS, RunConfig, load_config, sft_kwargs
from .errors import KitError
from .run_files import ADAPTER_CONFIG, CONFIG, MODEL_CONFIG, TRAINER_STATE, RunFiles

log = logging.getLogger("toolcall_kit.train")


def train(cfg: RunConfig | None = None, resume: str | Path | None = None, *, extra_callbacks=None) -> dict:
    """Train as `cfg` says; returns result.json's content. `resume="runs/NAME"` continues that run from its
    last checkpoint with its saved config (or `cfg`). A NaN/inf loss raises KitError after writing result.json
    (status "stopped"). `extra_callbacks`: more TrainerCallbacks. The run folder is locked until it ends."""
    with ExitStack() as hold:
        run = setup_run(cfg, resume, hold)
        model = load_model(run)
        data = build_datasets(run, model)
        start_run_folder(run, data)
        parts = build_trainer(run, model, data, extra_callbacks)
        train_seconds = fit(run, parts)
        return finish_run(run, model, data, parts, train_seconds)


# ------------------------------------------------------------------ backend choice
def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def choose_backend(requested: str) -> tuple[str, str]:
    """("unsloth" | "hf", why). Imports torch (not transformers) to look for a GPU."""
    unsloth_installed = importlib.util.find_spec("unsloth") is not None
    if requested == "hf":
        return "hf", "backend: hf was asked for"
    if requested == "unsloth":
        if not unsloth_installed:
            raise KitError("backend: unsloth is not installed (pip install 'toolcall-kit[unsloth]'), or use hf")
        return "unsloth", "backend: unsloth was asked for"
    if not unsloth_installed:
        return "hf", "unsloth is not installed"
    import torch

    if not torch.cuda.is_available():
        return "hf", "no CUDA GPU: Unsloth's speed-ups are GPU kernels (backend: unsloth forces its CPU backend)"
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
    first = "unsloth" in sys.modules or not any(m in sys.modules for m in ("transformers", "trl", "peft"))
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
    """Import Unsloth now if this config trains with it (pipeline imports transformers before training)."""
    backend, _ = choose_backend(cfg.backend)
    if backend == "unsloth":
        _import_unsloth()
    return backend


def _device() -> tuple[bool, bool]:
    """(on_gpu, bf16 supported)."""
    import torch

    if torch.cuda.is_available():
        # Not torch.cuda.is_bf16_supported(): it emulates bf16 on a T4/V100, where Unsloth
        # (SUPPORTS_BFLOAT16 = major >= 8 in unsloth/models/_utils.py) loads fp16; its trainer refuses bf16.
        return True, torch.cuda.get_device_capability()[0] >= 8
    # CPU autocast to bf16 works on any x86 but is fast only with native instructions (avx512_bf16 / AMX).
    native = [getattr(torch.cpu, f, None) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return False, any(f() for f in native if f is not None)


# ------------------------------------------------------------------ step 1: set up the run
@dataclass
class InitFrom:
    """`init_from`: an adapter to continue, or a merged model to start a new adapter on."""

    adapter: Path | None = None
    model: Path | None = None


def resolve_init_from(path: str | None) -> InitFrom:
    if path is None:
        return InitFrom()
    p = Path(path)
    for cand in (RunFiles(p).adapter, p):
        if (cand / ADAPTER_CONFIG).is_file():
            return InitFrom(adapter=cand)
    for cand in (RunFiles(p).trained_model, p):
        if (cand / MODEL_CONFIG).is_file():
            return InitFrom(model=cand)
    raise KitError(
        f"init_from: {path} is neither a run folder, an adapter folder ({ADAPTER_CONFIG}) nor a merged "
        f"model folder ({MODEL_CONFIG})"
    )


@dataclass
class Run:
    cfg: RunConfig
    files: RunFiles
    backend: str
    backend_why: str
    unsloth_first: bool | None  # unsloth backend: imported before transformers/TRL/PEFT (its patches need it)
    checkpoint: Path | None  # the checkpoint a resumed run continues from
    init: InitFrom
    on_gpu: bool
    bf16_ok: bool
    cpu_threads: int | None
    main: bool  # rank 0: the process that writes the run folder
    old_files: list[Path]  # an overwritten run's files, deleted once loading worked
    started: float


def setup_run(cfg: RunConfig | None, resume: str | Path | None = None, hold: ExitStack | None = None) -> Run:
    """Validate, choose the backend, check the inputs, claim and lock the run folder (`hold` keeps it)."""
    started = time.time()
    if resume is not None:
        run_dir = Path(resume)
        if cfg is None:
            cfg = load_run_config(run_dir)
        # The folder is where it is now, whatever the config said when the run started.
        cfg.output.dir, cfg.output.name = str(run_dir.parent), run_dir.name
    elif cfg is None:
        raise KitError("train: give a config or --resume RUN_DIR")
    cfg.validate()
    files = RunFiles(cfg.run_dir)
    # Unsloth must patch transformers, TRL and PEFT before anything imports them.
    backend, why = choose_backend(cfg.backend)
    unsloth_first = _import_unsloth() if backend == "unsloth" else None
    log.info("backend: %s (%s)", backend, why)

    checkpoint = _resume_point(files, cfg) if resume is not None else None
    for key in ("train", "eval"):
        path = getattr(cfg.data, key)
        if path and not Path(path).is_file():
            raise KitError(f"data.{key}: file not found: {path}")
    init = resolve_init_from(cfg.init_from)
    if init.adapter is not None and cfg.method == "full":
        raise KitError(
            f"init_from: {init.adapter} is a LoRA adapter; method: full trains a whole model: point init_from "
            "at a merged model folder (stage 04's merged/) instead"
        )
    on_gpu, bf16_ok = _device()
    if cfg.train.optim in EIGHT_BIT_OPTIMS and not on_gpu:
        raise KitError(f"train.optim: {cfg.train.optim} needs a CUDA GPU (bitsandbytes); use adamw_torch on CPU")
    if cfg.model.load_in_4bit and backend == "hf" and importlib.util.find_spec("bitsandbytes") is None:
        raise KitError("model.load_in_4bit: needs bitsandbytes (pip install 'toolcall-kit[quant]')")
    main = int(os.environ.get("RANK", "0")) == 0
    old_files: list[Path] = []
    if main:
        if hold is not None:  # before anything in the folder is looked at: a second writer stops here
            hold.enter_context(io.folder_lock(files.root, "output.dir/output.name"))
        if resume is None:
            old_files = _new_run_dir(cfg, files)
        else:
            _check_same_data(files, cfg)
    threads = None
    if not on_gpu:
        import torch

        threads, threads_why = cpu_threads()
        torch.set_num_threads(threads)
        (log.warning if "busy" in threads_why else log.info)("CPU training on %s", threads_why)
    return Run(cfg, files, backend, why, unsloth_first, checkpoint, init, on_gpu, bf16_ok, threads, main,
               old_files, started)  # fmt: skip


def load_run_config(run_dir: str | Path, overrides: list[str] | dict | None = None) -> RunConfig:
    """The resolved config a run folder was started with, plus overrides (e.g. a larger train.max_steps)."""
    run_dir = Path(run_dir)
    f = RunFiles(run_dir).config
    if not f.is_file():
        raise KitError(f"--resume: {f} not found (is {run_dir} a run folder?)")
    cfg = load_config(f, overrides)
    cfg.output.dir, cfg.output.name = str(run_dir.parent), run_dir.name
    return cfg


def _last_checkpoint(files: RunFiles) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(files.checkpoints)) if files.checkpoints.is_dir() else None
    return Path(last) if last else None


def _resume_point(files: RunFiles, cfg: RunConfig) -> Path:
    """The checkpoint `--resume run_dir` continues from; a run that already reached its length is refused."""
    if not files.root.is_dir():
        raise KitError(f"--resume: {files.root} is not a run folder")
    checkpoint = _last_checkpoint(files)
    if checkpoint is None:
        raise KitError(
            f"--resume: no complete checkpoint in {files.checkpoints} (set train.save_steps); "
            "start again with --set output.overwrite=true"
        )
    # get_last_checkpoint takes the highest step, complete or not; Trainer writes trainer_state.json last,
    # so a checkpoint a kill cut short lacks it.
    if not (checkpoint / TRAINER_STATE).is_file():
        raise KitError(
            f"--resume: {checkpoint} is incomplete (no {TRAINER_STATE}; the run was stopped while saving it): "
            "delete it to resume from the checkpoint before it"
        )
    _refuse_finished(files, checkpoint, cfg)
    return checkpoint


def _refuse_finished(files: RunFiles, checkpoint: Path, cfg: RunConfig) -> None:
    """Resuming a finished run would train past its length and rewrite its adapter."""
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
        done = json.loads(files.result.read_text()) if files.result.is_file() else {}
    except (OSError, ValueError) as e:
        raise KitError(f"--resume: {checkpoint} is unreadable ({type(e).__name__}: {e})") from None
    step = int(state.get("global_step") or 0)
    if done.get("status") == "completed":
        step = max(step, int(done.get("steps") or 0))
    if cfg.train.max_steps:
        finished = step >= cfg.train.max_steps
        what = f"train.max_steps {cfg.train.max_steps}"
    else:
        ran_all = step >= int(state.get("max_steps") or 0) > 0
        finished = ran_all and (cfg.train.epochs or 1) <= float(state.get("epoch") or 0) + 1e-6
        what = f"train.epochs {cfg.train.epochs}"
    if finished:
        raise KitError(
            f"--resume: {files.root} already finished ({step} steps, {what}); to train longer raise it, "
            f"e.g. --set train.max_steps={step * 2}"
        )


def _new_run_dir(cfg: RunConfig, files: RunFiles) -> list[Path]:
    """Claim the run folder; an earlier run there is an error unless output.overwrite. Returns that run's
    training files (not other stages' data/, stages/, eval/), which `start_run_folder` deletes."""
    io.claim_dir(files.root, "run", "output.dir/output.name", known=(CONFIG, files.stages.name, files.data.name))
    mine = {files.config, files.data_fingerprints, files.result, files.loss_plot, files.metrics,
            files.checkpoints, files.adapter, files.trained_model}  # fmt: skip
    old = sorted(p for p in files.root.iterdir() if p in mine)
    if old and not cfg.output.overwrite:
        raise KitError(
            f"output.name: {files.root} already holds a run: resume it (--resume {files.root}), pick another "
            "output.name, or --set output.overwrite=true"
        )
    return old


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_same_data(files: RunFiles, cfg: RunConfig) -> None:
    if not files.data_fingerprints.is_file():
        return
    old = json.loads(files.data_fingerprints.read_text())
    for split in ("train", "eval"):
        path = getattr(cfg.data, split)
        if split in old and path and file_sha256(path) != old[split]["sha256"]:
            raise KitError(
                f"data.{split}: {path} changed since {files.root} started (sha256 differs): resuming would not "
                "see the same data; start a new run"
            )


def _idle_cores() -> float | None:
    """Cores left idle by other processes over half a second (Linux /proc/stat), None elsewhere."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)  # idle + iowait jiffies, all jiffies

    try:
        i0, t0 = sample()
        time.sleep(0.5)
        i1, t1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    n = os.cpu_count() or 1
    return n * (i1 - i0) / max(t1 - t0, 1)


def cpu_threads() -> tuple[int, str]:
    """(torch threads, why) for CPU training: the cores idle at the start (TOOLCALL_KIT_THREADS overrides).
    torch's OpenMP threads wait for each other at every op: with one of two cores busy elsewhere, a demo step
    went from ~25 s to 60-100 s."""
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


# ------------------------------------------------------------------ step 2: load the model
@dataclass
class Loaded:
    """The model (LoRA-wrapped unless method: full) and its tokenizer, with the training chat template."""

    model: Any
    tokenizer: Any
    targets: list[str]  # leaf names of the wrapped linear layers (q_proj, ...)
    family: str
    template: str
    path: str  # the folder or hub id the base weights came from
    seconds: float


def load_model(run: Run) -> Loaded:
    """The base model (or init_from's merged model) ready to train, and the tokenizer with the template."""
    from peft.tuners.lora import LoraLayer

    from .models import resolve_model

    cfg = run.cfg
    path = str(run.init.model) if run.init.model is not None else str(resolve_model(cfg.model.name))
    loader = load_unsloth if run.backend == "unsloth" else load_hf
    t0 = time.time()
    model, tokenizer = loader(cfg, path, run.on_gpu, run.bf16_ok)
    # What result.json reports and an init_from adapter must match.
    targets = _leaf_names(model, LoraLayer) if cfg.method == "lora" else []
    if run.init.adapter is not None:
        _continue_adapter(cfg, model, run.init.adapter, targets)
    seconds = time.time() - t0
    family, template = _apply_chat_template(cfg, tokenizer)
    return Loaded(model, tokenizer, targets, family, template, path, seconds)


def _load_dtype(cfg: RunConfig, on_gpu: bool, bf16_ok: bool):
    """CPU: fp32 (bf16 is autocast, see config.mixed_precision)."""
    import torch

    d = cfg.model.dtype
    if not on_gpu or d == "float32":
        return torch.float32
    return torch.bfloat16 if d == "bfloat16" or (d == "auto" and bf16_ok) else torch.float16


def _target_modules(cfg: RunConfig, model) -> str | list[str]:
    """lora.target_modules for PEFT; a name the model lacks is an error (PEFT only minds if none match)."""
    import torch

    # The output layer is never wrapped: TRL's chunked loss reads its weight directly.
    linear = _leaf_names(model, torch.nn.Linear, skip=model.get_output_embeddings())
    if cfg.lora.target_modules == "all-linear":
        # PEFT resolves "all-linear" itself, but refuses it beside layers_to_transform (lora.top_layers).
        return "all-linear" if cfg.lora.top_layers is None else linear
    missing = [m for m in cfg.lora.target_modules if m not in linear]
    if missing:
        raise KitError(
            f"lora.target_modules: {', '.join(missing)} not found in {cfg.model.name} "
            f"(its linear layers: {', '.join(linear)})"
        )
    return list(cfg.lora.target_modules)


def _leaf_names(model, kind: type, skip=None) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, kind) and m is not skip}
    return sorted(names)


def adapted_layers(cfg: RunConfig, model) -> list[int] | None:
    """Indices of the top `lora.top_layers` / `full.top_layers` decoder layers; None: all of them."""
    top = cfg.lora.top_layers if cfg.method == "lora" else cfg.full.top_layers
    if top is None:
        return None
    n = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    if n is None:
        raise KitError(f"{cfg.method}.top_layers: {cfg.model.name} does not say how many layers it has")
    if top > n:
        raise KitError(f"{cfg.method}.top_layers: {top} > the {n} layers of {cfg.model.name}")
    return list(range(n - top, n))


def _unfreeze_for_full(cfg: RunConfig, model) -> None:
    """method: full: the trained decoder layers and the final norm train, not the embeddings."""
    # Tied to the output layer, they hold 28M of SmolLM2-135M's 135M parameters: 0.3 GB of optimizer state
    # for a vocabulary-wide update that a few hundred examples do not need.
    layers = adapted_layers(cfg, model)
    frozen = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
              for p in m.parameters()}  # fmt: skip
    for name, p in model.named_parameters():
        m = re.search(r"\.layers\.(\d+)\.", name)
        p.requires_grad = id(p) not in frozen and (m is None or layers is None or int(m.group(1)) in layers)


def _prepare_base(cfg: RunConfig, model) -> None:
    """Refuse a model.max_seq_length past the model's context; method: full unfreezes the trained layers."""
    ctx = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if ctx is not None and cfg.model.max_seq_length > ctx:
        raise KitError(
            f"model.max_seq_length: {cfg.model.max_seq_length} tokens do not fit {cfg.model.name}'s "
            f"context of {ctx} tokens"
        )
    if cfg.method == "full":
        _unfreeze_for_full(cfg, model)


def _continue_adapter(cfg: RunConfig, model, adapter: Path, targets: list[str]) -> None:
    """Load init_from's adapter weights into the adapter just built (the same r and layers, trainable)."""
    # Not PeftModel.from_pretrained: it takes the old run's LoRA settings and skips Unsloth's get_peft_model.
    theirs = json.loads((adapter / ADAPTER_CONFIG).read_text())
    if theirs.get("r") != cfg.lora.r:
        raise KitError(
            f"lora.r: {cfg.lora.r} differs from the init_from adapter's r={theirs.get('r')}: "
            f"set lora.r={theirs.get('r')}"
        )
    modules = theirs.get("target_modules")
    # PEFT saves "all-linear" resolved, as full module paths: compare leaf names.
    modules = {modules} if isinstance(modules, str) else {m.rsplit(".", 1)[-1] for m in modules or []}
    if modules and modules != {"all-linear"} and modules != set(targets):
        raise KitError(f"lora.target_modules: {targets} differ from the init_from adapter's {sorted(modules)}")
    loaded = model.load_adapter(str(adapter), adapter_name="default", is_trainable=True)
    unexpected = getattr(loaded, "unexpected_keys", None) or []
    if unexpected:
        raise KitError(f"init_from: {len(unexpected)} adapter weights do not fit this model, e.g. {unexpected[0]}")


def _apply_chat_template(cfg: RunConfig, tokenizer) -> tuple[str, str]:
    """Put the training template (the family's, or model.chat_template's file) on the tokenizer, which saves
    it beside the adapter for merge and vLLM; returns (family name, template text)."""
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


def load_hf(cfg: RunConfig, model_path: str, on_gpu: bool, bf16_ok: bool):
    """transformers (+ bitsandbytes NF4) + PEFT LoRA: (model, tokenizer)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": _load_dtype(cfg, on_gpu, bf16_ok)}
    if cfg.model.load_in_4bit:  # setup_run checked that bitsandbytes is installed
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
    _prepare_base(cfg, model)
    if cfg.method == "full":
        return model, tokenizer
    if cfg.model.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing)
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=_target_modules(cfg, model),
        bias=cfg.lora.bias,
        use_rslora=cfg.lora.use_rslora,
        layers_to_transform=adapted_layers(cfg, model),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(cfg.train.seed)  # LoRA A init: the same seed gives the same starting adapter
    return get_peft_model(model, lora), tokenizer


def load_unsloth(cfg: RunConfig, model_path: str, on_gpu: bool, bf16_ok: bool):
    """Unsloth's FastLanguageModel (its CPU backend without a GPU). unsloth is already imported."""
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_path,
        max_seq_length=cfg.model.max_seq_length,
        load_in_4bit=cfg.model.load_in_4bit,
        dtype=_load_dtype(cfg, on_gpu, bf16_ok),
        full_finetuning=cfg.method == "full",
    )
    _prepare_base(cfg, model)
    if cfg.method == "full":
        return model, tokenizer
    # "unsloth" offloads activations to CPU RAM between forward and backward: a GPU-only saving.
    checkpointing = ("unsloth" if on_gpu else True) if cfg.train.gradient_checkpointing else False
    model = FastLanguageModel.get_peft_model(
        model,  # unsloth's LoRA: its fast kernels and checkpointing
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=_target_modules(cfg, model),
        bias=cfg.lora.bias,
        use_gradient_checkpointing=checkpointing,
        random_state=cfg.train.seed,
        use_rslora=cfg.lora.use_rslora,
        layers_to_transform=adapted_layers(cfg, model),
        max_seq_length=cfg.model.max_seq_length,
    )
    return model, tokenizer


# ------------------------------------------------------------------ step 3: build the datasets
@dataclass
class Encoded:
    """A tokenized split: the columns TRL gets (it keeps a given `labels`), plus tokens.token_stats."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    stats: dict[str, Any]


@dataclass
class Datasets:
    train: Encoded
    eval: Encoded | None


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
    from .tokens import count_tokens, encode_many, token_stats

    family = detect_family(tokenizer, family).name
    adapted, source = [], []
    for i, rec in enumerate(records):
        for a in adapt_record(rec, family, parallel=parallel, content_with_calls=content_with_calls):
            adapted.append(a)
            source.append(i)
    encoded = encode_many(tokenizer, adapted, family, chat_template=chat_template)

    ids_out, labels_out, counts = [], [], []
    cut_off: list[str] = []  # examples with no trained token left within max_seq_length
    for rec, i, enc in zip(adapted, source, encoded, strict=True):
        count = count_tokens(enc["assistant_masks"], max_seq_length)
        counts.append(count)
        if count["kept_trained"] == 0:
            why = f"{count['tokens']} tokens" if count["trained"] else "no trained turn: all assistant weights are 0"
            cut_off.append(f"{rec.get('id') or f'line {i + 1}'} ({why})")
            continue
        ids, mask = enc["input_ids"][:max_seq_length], enc["assistant_masks"][:max_seq_length]
        ids_out.append(list(ids))
        labels_out.append([t if m else -100 for t, m in zip(ids, mask, strict=True)])
    if cut_off:
        shown = ", ".join(cut_off[:20]) + (f", ... ({len(cut_off) - 20} more)" if len(cut_off) > 20 else "")
        raise KitError(
            f"{key}: {len(cut_off)} of {len(adapted)} examples in {path} have no trained tokens within "
            f"model.max_seq_length={max_seq_length}: {shown}. Raise model.max_seq_length, offer fewer tools "
            "per example, or remove them (they are never dropped silently)"
        )
    stats = {"rows": len(records), **token_stats(counts, max_seq_length)}
    if stats["truncated_examples"]:
        log.warning(
            "%s: %d of %d examples are longer than model.max_seq_length=%d and were truncated (longest %d tokens)",
            key,
            stats["truncated_examples"],
            len(adapted),
            max_seq_length,
            stats["longest_tokens"],
        )
    return Encoded(ids_out, labels_out, stats)


def build_datasets(run: Run, loaded: Loaded) -> Datasets:
    """data.train and data.eval (the first train.eval_limit records), tokenized with the training template."""
    from .bfcl import assert_not_bfcl
    from .records import read_records

    cfg = run.cfg

    def encode_split(key: str) -> Encoded:
        path = getattr(cfg.data, key)
        records = read_records(path)
        if key == "eval" and cfg.train.eval_limit is not None:
            records = records[: cfg.train.eval_limit]
        if key == "train":
            assert_not_bfcl(records, f"data.train ({path})")  # an evaluation set is never training data
        return encode_records(
            records,
            loaded.tokenizer,
            loaded.family,
            cfg.model.max_seq_length,
            f"data.{key}",
            path,
            chat_template=loaded.template,
            parallel=cfg.data.parallel,
            content_with_calls=cfg.data.content_with_calls,
        )

    return Datasets(encode_split("train"), encode_split("eval") if cfg.data.eval else None)


def start_run_folder(run: Run, data: Datasets) -> None:
    """Empty an overwritten run's folder (only now that model and data loaded); write config.yaml (on resume
    too: e.g. a larger max_steps) and data_fingerprints.json."""
    if not run.main:
        return
    for p in run.old_files:
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    cfg = run.cfg
    fingerprints = {"train": {"path": cfg.data.train, "sha256": file_sha256(cfg.data.train), **data.train.stats}}
    if data.eval is not None:
        fingerprints["eval"] = {"path": cfg.data.eval, "sha256": file_sha256(cfg.data.eval), **data.eval.stats}
    io.write_text(run.files.config, cfg.to_yaml())
    io.write_json(run.files.data_fingerprints, fingerprints)


def _dataset(enc: Encoded):
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()  # TRL's per-split map/filter bars: noise next to the kit's own bar
    # Only integer lists: no dict columns for Arrow to unify (see ENVIRONMENT.md).
    return Dataset.from_dict({"input_ids": enc.input_ids, "labels": enc.labels})


# ------------------------------------------------------------------ step 4: build the trainer
@dataclass
class TrainerParts:
    trainer: Any
    runlog: Any  # callbacks.RunLog: metrics.jsonl
    health: Any  # callbacks.HealthCallback: .fatal says why the run stopped
    metrics: Any  # callbacks.MetricsCallback: .totals counts tokens
    plot: Any  # callbacks.LivePlotCallback: loss.png and the notebook figure


def build_trainer(run: Run, loaded: Loaded, data: Datasets, extra_callbacks=None) -> TrainerParts:
    """TRL's SFTTrainer with the kit's SFTConfig, token counting, metrics.jsonl, health checks and plot."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    from .callbacks import BatchTracker, HealthCallback, LivePlotCallback, MetricsCallback, RunLog

    cfg = run.cfg
    args = SFTConfig(
        **sft_kwargs(cfg, run.files.checkpoints, on_gpu=run.on_gpu, bf16_ok=run.bf16_ok, backend=run.backend)
    )
    trainer = SFTTrainer(
        model=loaded.model,
        args=args,
        train_dataset=_dataset(data.train),
        eval_dataset=_dataset(data.eval) if data.eval is not None else None,
        processing_class=loaded.tokenizer,
    )
    # The kit's tqdm bar and metrics.jsonl replace Trainer's printed log dicts and its own bar.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    tracker = BatchTracker(trainer.data_collator, trainer.model)
    trainer.data_collator = tracker
    runlog = RunLog(run.files.root, main=run.main)
    parts = TrainerParts(
        trainer,
        runlog,
        HealthCallback(runlog, loaded.model),
        MetricsCallback(runlog, tracker),
        LivePlotCallback(runlog, run.files.loss_plot, title=f"{run.files.root.name}: {cfg.model.name} ({run.backend})"),
    )
    for cb in [parts.metrics, parts.health, parts.plot, *(extra_callbacks or [])]:
        trainer.add_callback(cb)
    return parts


# ------------------------------------------------------------------ step 5: fit
def fit(run: Run, parts: TrainerParts) -> float:
    """trainer.train; returns its seconds. Out of memory is a KitError naming the settings that fix it."""
    import torch

    cfg, model = run.cfg, parts.trainer.model
    log.info(
        "training %s on %d examples with %s; %s: %d trainable parameters",
        cfg.model.name,
        len(parts.trainer.train_dataset),
        run.backend,
        f"LoRA r={cfg.lora.r}" if cfg.method == "lora" else "full fine-tuning",
        sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
    t0 = time.time()
    try:
        parts.trainer.train(resume_from_checkpoint=str(run.checkpoint) if run.checkpoint else None)
    except torch.OutOfMemoryError:
        parts.runlog.flush(force=True)
        last = _last_checkpoint(run.files)
        raise KitError(
            f"train.batch_size: a batch of {cfg.train.batch_size} x up to {cfg.model.max_seq_length} tokens "
            f"(model.max_seq_length) does not fit in {'GPU ' if run.on_gpu else ''}memory at step "
            f"{parts.trainer.state.global_step + 1}: lower train.batch_size (raise train.grad_accum to keep the "
            "effective batch) or model.max_seq_length, or turn on train.gradient_checkpointing / "
            f"model.load_in_4bit (`toolcall-kit plan` estimates the fit)"
            + (f"; resume from {last} with --resume {run.files.root}" if last else "")
        ) from None
    return time.time() - t0


# ------------------------------------------------------------------ step 6: finish the run
def finish_run(run: Run, loaded: Loaded, data: Datasets, parts: TrainerParts, train_seconds: float) -> dict:
    """The final eval loss, the adapter, result.json; a run the health checks stopped raises KitError."""
    trainer, runlog, health = parts.trainer, parts.runlog, parts.health
    final_eval = None
    if health.fatal is None and data.eval is not None:
        step = trainer.state.global_step
        done = [r for r in runlog.rows if "eval_loss" in r and r["step"] == step]
        # The last scheduled evaluation may have been at this very step; trainer.evaluate() logs its row.
        final_eval = done[-1] if done else trainer.evaluate()
        if not done and run.main:
            parts.plot.draw(force=True)
    result = _result(run, loaded, data, parts, train_seconds, final_eval)
    if health.fatal is None and run.main:
        # LoRA: the adapter; full fine-tuning: the whole model (stage 04 exports either as merged/).
        lora = run.cfg.method == "lora"
        out = run.files.adapter if lora else run.files.trained_model
        with io.atomic_dir(out, kind="adapter" if lora else "model", replace_unmarked=True) as tmp:  # locked run
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            loaded.tokenizer.save_pretrained(tmp)
        result["adapter" if lora else "trained_model"] = str(out)
    if run.main:
        runlog.flush(force=True)
        io.write_json(run.files.result, result)
    if health.fatal is not None:
        last = _last_checkpoint(run.files)
        keep = f"; the last good checkpoint is {last}" if last else "; no checkpoint was saved before it"
        raise KitError(f"{health.fatal}{keep}")
    return result


def _result(run, loaded, data, parts, train_seconds, final_eval) -> dict[str, Any]:
    from .callbacks import memory_now

    cfg, state, args = run.cfg, parts.trainer.state, parts.trainer.args
    losses = [r["loss"] for r in parts.runlog.rows if r.get("loss") is not None]
    totals = parts.metrics.totals
    processed = totals["processed_tokens"]
    return {
        "status": "stopped" if parts.health.fatal else "completed",
        "error": parts.health.fatal,
        "run_dir": str(run.files.root),
        "backend": run.backend,
        "backend_why": run.backend_why,
        "unsloth_imported_first": run.unsloth_first,
        "model": cfg.model.name,
        "model_path": loaded.path,
        "method": cfg.method,
        "family": loaded.family,
        "init_from": cfg.init_from,
        "resumed_from": str(run.checkpoint) if run.checkpoint is not None else None,
        "device": "cuda" if run.on_gpu else "cpu",
        "world_size": args.world_size,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "load_in_4bit": cfg.model.load_in_4bit,
        "target_modules": loaded.targets,
        "trainable_params": sum(p.numel() for p in loaded.model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in loaded.model.parameters()),
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "epochs": round(float(state.epoch or 0.0), 4),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "final_eval_loss": (final_eval or {}).get("eval_loss"),
        "train_rows": len(data.train.input_ids),
        "eval_rows": len(data.eval.input_ids) if data.eval is not None else 0,
        "load_seconds": round(loaded.seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "wall_seconds": round(time.time() - run.started, 2),
        # Tokens of this process this session x processes (resumed runs count from the resume point).
        "tokens_per_s": round(totals["real_tokens"] * args.world_size / train_seconds, 1) if train_seconds > 0 else None,
        "steps_per_s": round(totals["steps"] / train_seconds, 3) if train_seconds > 0 else None,
        "real_token_fraction": round(totals["real_tokens"] / processed, 4) if processed else None,
        "trained_token_fraction": round(totals["trained_tokens"] / processed, 4) if processed else None,
        # glibc malloc settings (the Makefile exports them; about 2x faster CPU training here).
        "malloc_tuned": "MALLOC_MMAP_MAX_" in os.environ,
        "cpu_threads": run.cpu_threads,
        "warnings": [{k: w[k] for k in ("step", "warning", "message")} for w in parts.runlog.warnings],
        "adapter": None,
        "trained_model": None,
        "versions": _versions(),
        **memory_now(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "unsloth"):
        with suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def summary(result: dict) -> str:
    """The few lines the CLI prints after a run."""
    eval_loss = result.get("final_eval_loss")
    gpu = result.get("gpu_peak_reserved_gib")
    lines = [
        f"trained {result['model']} with {result['backend']} ({result['backend_why']})",
        f"steps {result['steps']}/{result['max_steps']}, loss {result['first_loss']:.4g} -> {result['final_loss']:.4g}"
        + (f", eval loss {eval_loss:.4g}" if eval_loss is not None else ""),
        f"{result['train_seconds']} s training, {result['tokens_per_s']} tokens/s, "
        f"peak RSS {result['peak_rss_gib']} GiB" + (f", GPU peak {gpu} GiB reserved" if gpu is not None else ""),
        f"adapter: {result['adapter']}" if result.get("adapter") else f"model: {result.get('trained_model')}",
    ]
    lines += [f"warning at step {w['step']}: {w['message']}" for w in result.get("warnings") or []]
    return "\n".join(lines)
