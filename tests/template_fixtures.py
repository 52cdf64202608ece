"""Test fixtures for templates and tokens: tiny fast tokenizers with each family's control tokens, sample records.

Real Llama 3.1 / Mistral / Qwen tokenizers cannot be downloaded here, and their templates need their
control tokens to be single tokens (`<|eot_id|>`, `[TOOL_CALLS]`, ...), as in the real vocabularies.
Llama / ChatML get a byte-level BPE like the real ones; Mistral gets a SentencePiece-style Metaspace BPE,
so the leading-space handling of `[/INST] Hello` is exercised as well.
"""

from __future__ import annotations

import string
from functools import cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from toolcall_kit.records import make_call, make_tool
from toolcall_kit.templates import get_family

SPECIALS = {
    "chatml": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    ),
    "qwen2_5": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    ),
    "llama3_1": (
        [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|python_tag|>",
            "<|finetune_right_pad_id|>",
        ],
        {
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "pad_token": "<|finetune_right_pad_id|>",
        },
    ),
    "mistral": (
        [
            "<unk>",
            "<s>",
            "</s>",
            "[INST]",
            "[/INST]",
            "[TOOL_CALLS]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
        ],
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"},
    ),
}

CORPUS = [
    "What is the weather in Paris today? It is 18 C and sunny in Paris.",
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}',
    "You are a helpful assistant. You may call one or more functions to assist with the user query.",
    "<tool_call>\n</tool_call> <tool_response>\n</tool_response> <tools></tools> parameters arguments",
    "Book a table for two at 7 pm. Convert 100 USD to EUR. The exchange rate is 0.92.",
    "Environment: ipython Cutting Knowledge Date: December 2023 Today Date: 26 Jul 2024",
    "Given the following functions, please respond with a JSON for a function call with its proper arguments.",
]


@cache
def _trained(family: str) -> str:
    specials, _ = SPECIALS[family]
    tok = Tokenizer(models.BPE(unk_token="<unk>" if family == "mistral" else None))
    if family == "mistral":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
        alphabet = list(string.printable)
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    return tok.to_str()


def family_tokenizer(family: str, eos_token: str | None = None) -> PreTrainedTokenizerFast:
    """A new tiny tokenizer (trained once per family) whose chat template is the family's training template."""
    _, roles = SPECIALS[family]
    roles = {**roles, **({"eos_token": eos_token} if eos_token else {})}
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_trained(family)), **roles)
    fast.chat_template = get_family(family).template()
    return fast


# --- sample records, one per kind of conversation ---------------------------------------------------------

WEATHER = make_tool(
    "get_weather",
    "Current weather for a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
)
TIME = make_tool(
    "get_time",
    "Local time in a time zone.",
    {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
)
FX = make_tool(
    "convert_currency",
    "Convert money.",
    {
        "type": "object",
        "properties": {"amount": {"type": "number"}, "to": {"type": "string"}, "opts": {"type": "object"}},
        "required": ["amount", "to"],
    },
)


def sample_records() -> dict[str, dict]:
    """Fresh copies of: single call, parallel calls, several steps, no call, a weight-0 turn."""
    return {
        "single": {
            "id": "single-1",
            "tools": [WEATHER, TIME],
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "How warm is it in Lisbon?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        make_call("get_weather", {"city": "Lisbon", "unit": "celsius"}, "call_w1")
                    ],
                },
                {
                    "role": "tool",
                    "tool_call_id": "call_w1",
                    "name": "get_weather",
                    "content": '{"temp_c": 21, "sky": "sunny"}',
                },
                {"role": "assistant", "content": "It is 21 C and sunny in Lisbon."},
            ],
        },
        "parallel": {
            "id": "parallel-1",
            "tools": [WEATHER, TIME],
            "messages": [
                {"role": "user", "content": "Weather in Oslo and the time in Tokyo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        make_call("get_weather", {"city": "Oslo"}, "call_p1"),
                        make_call("get_time", {"tz": "Asia/Tokyo"}, "call_p2"),
                    ],
                },
                {
                    "role": "tool",
                    "tool_call_id": "call_p1",
                    "name": "get_weather",
                    "content": '{"temp_c": -3}',
                },
                {"role": "tool", "tool_call_id": "call_p2", "name": "get_time", "content": "23:15 JST"},
                {"role": "assistant", "content": "Oslo is at -3 C; in Tokyo it is 23:15."},
            ],
        },
        "multi_step": {
            "id": "multi-1",
            "tools": [WEATHER, FX],
            "messages": [
                {"role": "system", "content": "Use tools when needed."},
                {"role": "user", "content": "Convert 100 USD to EUR, then tell me the weather in Rome."},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        make_call(
                            "convert_currency",
                            {"amount": 100, "to": "EUR", "opts": {"round": 2, "fee": False}},
                            "call_m1",
                        )
                    ],
                },
                {
                    "role": "tool",
                    "tool_call_id": "call_m1",
                    "name": "convert_currency",
                    "content": '{"result": 92.13}',
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [make_call("get_weather", {"city": "Rome"}, "call_m2")],
                },
                {
                    "role": "tool",
                    "tool_call_id": "call_m2",
                    "name": "get_weather",
                    "content": "Rome: 25 C, clear",
                },
                {
                    "role": "assistant",
                    "content": "100 USD is 92.13 EUR, and Rome has 25 C under a clear sky.",
                },
            ],
        },
        "no_call": {
            "id": "nocall-1",
            "tools": [WEATHER],
            "messages": [
                {"role": "user", "content": "Tell me a joke about clouds."},
                {
                    "role": "assistant",
                    "content": "Why did the cloud stay home? It was feeling under the weather.",
                },
            ],
        },
        "weighted": {
            "id": "weighted-1",
            "tools": [WEATHER],
            "messages": [
                {"role": "user", "content": "Weather in Quito please."},
                {"role": "assistant", "content": "Sure, one moment while I think about it.", "weight": 0},
                {"role": "user", "content": "Go ahead."},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [make_call("get_weather", {"city": "Quito"}, "call_q1")],
                },
                {
                    "role": "tool",
                    "tool_call_id": "call_q1",
                    "name": "get_weather",
                    "content": '{"temp_c": 14}',
                },
                {"role": "assistant", "content": "Quito is at 14 C."},
            ],
        },
    }


FAMILY_NAMES = ("chatml", "qwen2_5", "llama3_1", "mistral")
KINDS = ("single", "parallel", "multi_step", "no_call", "weighted")
