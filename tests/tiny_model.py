"""The tiny test model behind `tiny:llama` and `tiny:qwen2`: a random-weight 2-layer model (< 1 MB) with a
BPE tokenizer trained here in a second, for unit tests, benchmarks and the smoke config. Test code, not part
of the kit: `toolcall_kit.models.resolve_model("tiny:ARCH")` loads this file from a source checkout and
builds the model into its cache once.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
from pathlib import Path

from toolcall_kit.errors import KitError
from toolcall_kit.models import SPECIAL_TOKENS, chat_template, tidy_tokenizer_config

ARCHS = ("llama", "qwen2")
SEED = 0  # the seed `tiny:ARCH` is built with

# The Hermes tool tags are added but NOT special, as in Qwen 2.5, because vLLM decodes with
# skip_special_tokens=True and its hermes parser must still see <tool_call> in the text.
TOOL_TAGS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

# Qwen 2's pre-tokenizer split. With `model_type: qwen2`, AutoTokenizer rebuilds a Qwen2Tokenizer from
# the vocab and merges with this regex + NFC whatever tokenizer.json says, so the tiny tokenizer is
# trained with exactly this pipeline (for both archs) and encodes identically after a reload.
QWEN2_SPLIT_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def build_tiny_model(
    path: str | os.PathLike, arch: str = "llama", seed: int = SEED, vocab_size: int = 1024
) -> Path:
    """A random-weight 2-layer `arch` model (hidden 64) + a BPE tokenizer trained here, saved to `path`.

    Under 1 MB on disk; loads with AutoModelForCausalLM / AutoTokenizer, carries the chatml_tools
    template, and has every projection LoRA targets (q/k/v/o, gate/up/down).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if arch not in ARCHS:
        raise KitError(f"unknown tiny model arch {arch!r}; known: {', '.join(ARCHS)}")
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
    tidy_tokenizer_config(
        path,
        "Qwen2Tokenizer" if arch == "qwen2" else "PreTrainedTokenizerFast",
        config.max_position_embeddings,
    )
    return path


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
