"""Merge a trained LoRA adapter into its base model, prove the export matches, and say how to serve it.

    toolcall-kit merge runs/demo --out runs/demo/merged

Proof: a probe conversation's logits through the adapter model and through the reloaded merged folder differ
by at most TOLERANCE, else nothing is left at `--out`. A QLoRA run merges into the 16-bit base: merging into
NF4 would re-quantise the sum and lose most of the adapter's small update.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from . import io
from .errors import KitError, loading
from .models import BNB_4BIT_SUFFIX, resolve_model, unquantized_name
from .run_files import ADAPTER_CONFIG, MERGE_REPORT, MODEL_CONFIG, REPORT, RunFiles

# Largest |logit| difference accepted between adapter and merged export, per dtype. Merging adds the
# low-rank product into the weight once instead of at every forward; in fp32 that reorders a few sums
# (observed ~1e-5), in 16-bit the rounding of the merged weight dominates.
TOLERANCE = {"float32": 1e-3, "bfloat16": 0.25, "float16": 0.1}

MODEL_CARD = Path(__file__).parent / "model_card.md"
PROBE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What's the weather like in Lisbon today?"},
]

# What vLLM must be told beside --tool-call-parser so that it prompts the merged model the way it was trained.
SERVE_NOTES = {
    "mistral": "`--tokenizer-mode hf`: vLLM's `mistral` tokenizer mode (what `auto` picks for Mistral models) "
    "builds prompts with mistral_common and ignores the chat template this model was trained with.",
    "llama3_1": "`--chat-template` pins the template this model was trained with. Do not pass vLLM's example "
    "`tool_chat_template_llama3.1_json.jinja`: it renders tool results and the date differently.",
}


def find_adapter(path: str | Path) -> tuple[Path, Path | None]:
    """(adapter folder, run folder or None) from a run folder or an adapter folder; for a `method: full` run,
    its trained model folder (model/) stands where the adapter would."""
    path = Path(path)
    files = RunFiles(path)
    candidates = ((path, ADAPTER_CONFIG), (files.adapter, ADAPTER_CONFIG), (files.trained_model, MODEL_CONFIG))
    for cand, marker in candidates:
        if (cand / marker).is_file():
            run = cand.parent if cand != path else (path if files.config.is_file() else None)
            return cand, run
    raise KitError(
        f"{path}: no {ADAPTER_CONFIG} here or in {files.adapter}, and no trained model in {files.trained_model} "
        "(is this a finished run?)"
    )


def _read_json(path: Path) -> Any:
    """Truncated or not JSON: a KitError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise KitError(f"{path}: unreadable ({type(e).__name__}: {e}); is the run complete?") from None


def _refuse_out_over_inputs(out: Path, inputs: dict[str, Path]) -> None:
    """`--out` must not be, or contain, the adapter, the run or the base model it reads: replacing it would
    delete them (`--out runs` would delete every run)."""
    o = out.resolve()
    for what, p in inputs.items():
        p = p.resolve()
        if o == p or o in p.parents:
            where = "the" if o == p else "a folder above the"
            raise KitError(f"--out {out} is {where} {what} {p}; pick a new folder (e.g. RUN/merged)")


def _run_info(run: Path | None) -> dict[str, Any]:
    """What the run folder says about the adapter: its config.yaml, result.json and evaluation report."""
    if run is None:
        return {}
    import yaml

    info: dict[str, Any] = {}
    files = RunFiles(run)
    if files.config.is_file():
        try:
            info["config"] = yaml.safe_load(files.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise KitError(f"{files.config}: unreadable ({type(e).__name__})") from None
        if not isinstance(info["config"], dict):
            raise KitError(f"{files.config}: not a run config (a YAML mapping)")
    for key, path in (("result", files.result), ("eval", files.eval / REPORT)):
        if path.is_file():
            info[key] = _read_json(path)
    return info


def base_for(adapter_cfg: dict[str, Any], info: dict[str, Any], base: str | None = None) -> str:
    """The 16-bit base model to merge into: `base` if given, else the run config's model.name (what the user
    asked for; not for an init_from run, whose base is the model folder it started from), else the adapter's
    base_model_name_or_path -- each mapped from an Unsloth bnb-4bit repo back to its 16-bit model."""
    if base:
        return base
    cfg = info.get("config") or {}
    name = (cfg.get("model") or {}).get("name") if not cfg.get("init_from") else None
    name = name or adapter_cfg.get("base_model_name_or_path")
    if not name:
        raise KitError("adapter_config.json names no base model and the run has no config.yaml; pass --base")
    return unquantized_name(name)


def _refuse_quantized(base_name: str, base_path: str) -> None:
    """A pre-quantized base would be merged into (and saved as) 4-bit weights: refuse it, naming the fix."""
    cfg_file = Path(base_path) / MODEL_CONFIG
    with loading("base", base_name):
        if cfg_file.is_file():
            quant = json.loads(cfg_file.read_text()).get("quantization_config")
        else:
            from transformers import AutoConfig

            quant = getattr(AutoConfig.from_pretrained(base_path), "quantization_config", None)
    if quant:
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else type(quant).__name__
        fix = unquantized_name(base_name)
        hint = f" (e.g. --base {fix})" if fix != base_name else ""
        raise KitError(
            f"base {base_name}: its config carries a quantization_config ({method}); merging into it would save "
            f"a quantized model. Pass the 16-bit base with --base{hint}"
        )


def default_dtype(info: dict[str, Any], adapter_cfg: dict[str, Any]) -> str:
    """bfloat16 for a run trained in 4-bit or on a GPU (fp32 copies of an 8B model are ~30 GB each); else
    float32, whose export check is the tightest (TOLERANCE)."""
    result = info.get("result") or {}
    cfg_model = (info.get("config") or {}).get("model") or {}
    four_bit = result.get("load_in_4bit", cfg_model.get("load_in_4bit")) or bool(
        BNB_4BIT_SUFFIX.search(str(adapter_cfg.get("base_model_name_or_path") or ""))
    )
    return "bfloat16" if four_bit or result.get("device") == "cuda" else "float32"


def _probe_logits(model, tokenizer, tools: list[dict] | None):
    import torch

    ids = tokenizer.apply_chat_template(
        PROBE, tools=tools, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    # On the model's device: a base loaded onto a GPU (device_map, bitsandbytes) would otherwise get CPU inputs.
    ids = {k: ids[k].to(model.device) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        return model(**ids).logits.float().cpu()


def _probe_tools(info: dict[str, Any]) -> list[dict] | None:
    """The tools of the run's first training record, for the probe; None when there are none to read."""
    train_file = ((info.get("config") or {}).get("data") or {}).get("train")
    if not train_file or not Path(train_file).is_file():
        return None
    try:
        _, first = next(io.iter_json_lines(train_file))
        return first.get("tools") or None
    except (KitError, StopIteration, AttributeError):
        return None


def serve_command(out: Path, family: str, parser: str) -> str:
    """The vLLM command for the merged folder `out` (its chat template file is `out/chat_template.jinja`)."""
    cmd = f"vllm serve {out} --enable-auto-tool-choice --tool-call-parser {parser}"
    if family == "mistral":
        cmd += " --tokenizer-mode hf"
    elif family == "llama3_1":
        cmd += f" --chat-template {out / 'chat_template.jinja'}"
    return cmd


def model_card(out: Path, base: str, adapter: Path, family: str, report: dict, info: dict) -> str:
    """README.md of the merged folder (model_card.md filled in): how to serve it, the export check, the metrics."""
    ev = info.get("eval", {})
    metrics = ev.get("metrics", ev) if isinstance(ev, dict) else {}
    note = f"\n\n{SERVE_NOTES[family]}" if family in SERVE_NOTES else ""
    evaluation = f"\n\n## Evaluation\n```json\n{json.dumps(metrics, indent=2)[:4000]}\n```" if metrics else ""
    made = f"LoRA adapter `{adapter}` merged into the base"
    if report.get("trained") == "full":
        made = f"the fully fine-tuned weights of `{adapter}`"
    fields = dict(report, base=base, name=out.name, adapter=adapter, family=family, out=out, made=made)
    return MODEL_CARD.read_text(encoding="utf-8").format(**fields, serve_note=note, evaluation=evaluation)


def merge(
    adapter: str | Path,
    out: str | Path,
    base: str | None = None,
    dtype: str | None = None,
    method: str = "peft",
) -> dict[str, Any]:
    """Merge `adapter` (a run folder or adapter folder) into its 16-bit base and save it atomically at `out`;
    returns merge_report.json's content. `dtype` None: `default_dtype`. `out` may not be, or lie above, the
    adapter, the run or the base folder; an existing `out` is replaced only if the kit made it."""
    if dtype is not None and dtype not in TOLERANCE:
        raise KitError(f"dtype: must be one of {', '.join(TOLERANCE)}, got {dtype!r}")
    if method not in ("peft", "unsloth"):
        raise KitError(f"method: must be 'peft' or 'unsloth', got {method!r}")
    if method == "unsloth":
        import unsloth  # noqa: F401  (must patch transformers/peft before they are imported)
    adapter_dir, run = find_adapter(adapter)
    out = Path(out)
    _refuse_out_over_inputs(out, {"adapter": adapter_dir, **({"run folder": run} if run else {})})
    with io.folder_lock(run) if run is not None else contextlib.nullcontext():
        return _merge(adapter_dir, run, out, base, dtype, method)


def _merge(adapter_dir: Path, run: Path | None, out: Path, base: str | None, dtype: str | None, method: str):
    import torch

    from .templates import detect_family

    t0 = time.time()
    info = _run_info(run)
    # method: full: nothing to merge; the trained model is exported the same way, with the same check.
    full = not (adapter_dir / ADAPTER_CONFIG).is_file()
    adapter_cfg = {} if full else _read_json(adapter_dir / ADAPTER_CONFIG)
    if not isinstance(adapter_cfg, dict):
        raise KitError(f"{adapter_dir / ADAPTER_CONFIG}: not an adapter config (a JSON object)")
    if full and method == "unsloth":
        raise KitError("method: unsloth merges a LoRA adapter; a method: full run has none (use peft)")
    # For a full run, the model card names the model the run started from.
    run_model = ((info.get("config") or {}).get("model") or {}).get("name")
    base_name = (run_model or str(adapter_dir)) if full else base_for(adapter_cfg, info, base)
    # Unsloth's writer is its merged_16bit: a 16-bit export whatever the run trained in.
    dtype = dtype or ("bfloat16" if method == "unsloth" else default_dtype(info, adapter_cfg))
    torch_dtype = getattr(torch, dtype)
    base_path = str(adapter_dir) if full else resolve_model(base_name)
    if Path(base_path).is_dir():
        _refuse_out_over_inputs(out, {"base model": Path(base_path)})
    _refuse_quantized(base_name, base_path)
    model, tokenizer = _adapter_model(adapter_dir, base_path, torch_dtype, full)
    tools = _probe_tools(info)
    ref = _probe_logits(model, tokenizer, tools)
    with io.atomic_dir(out, kind="merged") as tmp:
        if method == "unsloth":
            del model  # Unsloth loads the adapter again for its own writer
            _save_with_unsloth(adapter_dir, tokenizer, tmp, torch_dtype)
            config = _read_json(tmp / MODEL_CONFIG)
            written = config.get("dtype") or config.get("torch_dtype")
            if written != dtype:  # on CPU it writes bfloat16 whatever it is asked; vLLM serves what it wrote
                raise KitError(
                    f"dtype: Unsloth wrote {written} weights where {dtype} was asked for: pass --dtype {written}, "
                    f"or use --method peft; nothing was written to {out}"
                )
        else:
            (model if full else model.merge_and_unload()).save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            del model
        diff = _max_logit_diff(tmp, tokenizer, tools, ref, torch_dtype)
        if not diff <= TOLERANCE[dtype]:
            raise KitError(
                f"merged export differs from the adapter model: max |logit diff| {diff:.3g} > {TOLERANCE[dtype]} "
                f"({dtype}); nothing was written to {out}"
            )
        family = detect_family(tokenizer)
        report: dict[str, Any] = {
            "adapter": str(adapter_dir),
            "base": base_name,
            "base_path": str(base_path),
            "out": str(out),
            "dtype": dtype,
            "method": method,
            "trained": "full" if full else "lora",
            "max_abs_logit_diff": diff,
            "tolerance": TOLERANCE[dtype],
            "seconds": round(time.time() - t0, 2),
            "warnings": [] if full else _base_warnings(base, adapter_cfg, info),
            "family": family.name,
            "vllm_tool_call_parser": family.vllm_parser,
            "serve_command": serve_command(out, family.name, family.vllm_parser),
        }
        io.write_text(tmp / "README.md", model_card(out, base_name, adapter_dir, family.name, report, info))
        io.write_json(tmp / MERGE_REPORT, report)
    return report


def _adapter_model(adapter_dir: Path, base_path: str, torch_dtype, full: bool):
    """(the base with the adapter applied, in eval mode; the tokenizer: the adapter's own if it has one)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A missing, truncated or foreign file is one line naming the folder (errors.loading).
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_path
    with loading("tokenizer", tok_src):
        tokenizer = AutoTokenizer.from_pretrained(tok_src)
    with loading("trained model" if full else "base model", base_path):
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype)
    if not full:  # the adapter's base_model_name_or_path may be the 4-bit repo: PEFT only reads the weights
        with loading("adapter", adapter_dir):
            model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval(), tokenizer


def _save_with_unsloth(adapter_dir: Path, tokenizer, folder: Path, torch_dtype) -> None:
    """Unsloth's own writer (what its notebooks use); on CPU it only merges into a 16-bit load."""
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(str(adapter_dir), load_in_4bit=False, dtype=torch_dtype)
    # safe_serialization=None: unsloth_save_model (unsloth/save.py) writes a pickle on hosts with <= 2 CPUs.
    model.save_pretrained_merged(str(folder), tokenizer, save_method="merged_16bit", safe_serialization=None)


def _max_logit_diff(folder: Path, tokenizer, tools: list[dict] | None, ref, torch_dtype) -> float:
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).eval()
    return float((_probe_logits(reloaded, tokenizer, tools) - ref).abs().max())


def _base_warnings(base: str | None, adapter_cfg: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """A --base other than the adapter's own merges without an error when the shapes agree: say so."""
    if not base:
        return []
    trained = base_for(adapter_cfg, info)
    named = {trained, unquantized_name(str(adapter_cfg.get("base_model_name_or_path") or trained))}
    if base in named or unquantized_name(base) in named:
        return []
    with contextlib.suppress(KitError):  # a name that does not resolve is simply not the same model
        if any(Path(resolve_model(n)).resolve() == Path(resolve_model(base)).resolve() for n in named):
            return []
    return [
        f"--base {base} is not the model this adapter was trained on ({trained}): the export check only proves "
        "that the merge matches the adapter applied to --base"
    ]


def summary(report: dict[str, Any]) -> str:
    return (
        f"merged {report['adapter']} into {report['base']} -> {report['out']} ({report['dtype']}, "
        f"{report['seconds']} s)\n"
        f"export check: max |logit diff| {report['max_abs_logit_diff']:.3g} <= {report['tolerance']}\n"
        f"serve: {report['serve_command']}" + "".join(f"\nwarning: {w}" for w in report.get("warnings") or [])
    )
