"""Assistant-only loss masks, the token budget and the mask views.

`encode_many` gives TRL's SFTTrainer a pre-tokenized dataset (its field names: `input_ids`, `assistant_masks`,
1 = trained): the family template's {% generation %} blocks, as `apply_chat_template(...,
return_assistant_tokens_mask=True)` marks them, without the turns of `weight: 0`.
"""

from __future__ import annotations

import html
import math
import os
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from pathlib import Path
from typing import Any

from .errors import KitError, loading
from .records import Record
from .templates import (
    Family,
    adapt_records,
    detect_family,
    record_id,
    template_losses,
    turn_texts,
    verify_roundtrip,
)


def trained_spans(tokenizer: Any, record: Record, fam: Family, chat_template: str | None):
    """(render, [(start, end)]): the character spans of the assistant turns that are trained (weight != 0)."""
    text, turns = turn_texts(tokenizer, record, fam, chat_template)
    msgs = record["messages"]
    return text, [(s, e) for i, s, e in turns if msgs[i].get("weight", 1) != 0 and e > s]


def _mask_from_spans(encoding: Any, n: int, spans: list[tuple[int, int]]) -> list[int]:
    """Token mask from character spans, as apply_chat_template computes it: the tokens from the one holding
    a span's first character to the one holding its last (a character no token covers moves the edge in)."""
    mask = [0] * n
    for s, e in spans:
        first = next((t for c in range(s, e) if (t := encoding.char_to_token(c)) is not None), None)
        if first is not None:
            last = next(t for c in range(e - 1, s - 1, -1) if (t := encoding.char_to_token(c)) is not None)
            mask[first : last + 1] = [1] * (last + 1 - first)
    return mask


def iter_encoded(
    tokenizer: Any,
    records: list[Record],
    family: str | Family | None = None,
    chat_template: str | None = None,
    chunk: int = 1024,
):
    """Yield (index, text, input_ids, mask) for each record, in order.

    Chunk k+1 is rendered (Python) while a thread batch-encodes chunk k (Rust, without the GIL): on 2 cores
    this hides most of the rendering time."""
    if not getattr(tokenizer, "is_fast", False):
        raise KitError("token masks need a fast (Rust) tokenizer; this model only has a slow one")
    fam = detect_family(tokenizer, family)

    def finish(start, rendered, encoding):
        enc = encoding.result()
        for k, ((text, spans), ids) in enumerate(zip(rendered, enc["input_ids"], strict=True)):
            yield start + k, text, ids, _mask_from_spans(enc.encodings[k], len(ids), spans)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for start in range(0, len(records), chunk):
            rendered = [
                trained_spans(tokenizer, r, fam, chat_template) for r in records[start : start + chunk]
            ]
            encoding = pool.submit(tokenizer, [text for text, _ in rendered], add_special_tokens=False)
            if pending is not None:
                yield from finish(*pending)
            pending = (start, rendered, encoding)
        if pending is not None:
            yield from finish(*pending)


def encode_many(
    tokenizer: Any,
    records: list[Record],
    family: str | Family | None = None,
    max_seq_length: int | None = None,
    chat_template: str | None = None,
) -> list[dict]:
    """`encode` for many records at batch-encoding speed; records must be adapted to the family."""
    return [
        {"input_ids": ids[:max_seq_length], "assistant_masks": mask[:max_seq_length]}
        for _, _, ids, mask in iter_encoded(tokenizer, records, family, chat_template)
    ]


def encode(
    tokenizer: Any,
    record: Record,
    family: str | Family | None = None,
    max_seq_length: int | None = None,
    chat_template: str | None = None,
) -> dict:
    """{"input_ids": [...], "assistant_masks": [...]} for one record (1 = the loss is computed there)."""
    return encode_many(tokenizer, [record], family, max_seq_length, chat_template)[0]


def count_tokens(mask: list[int], max_seq_length: int) -> dict[str, int]:
    """One example's tokens and trained tokens, before and after truncation to `max_seq_length`."""
    return {
        "tokens": len(mask),
        "trained": sum(mask),
        "kept_tokens": min(len(mask), max_seq_length),
        "kept_trained": sum(mask[:max_seq_length]),
    }


def token_stats(counts: list[dict[str, int]], max_seq_length: int) -> dict[str, Any]:
    """A split's statistics from each example's `count_tokens` (token report, data_fingerprints.json)."""
    import numpy as np

    lengths = [c["tokens"] for c in counts]
    return {
        "examples": len(counts),
        "max_seq_length": max_seq_length,
        "tokens": sum(lengths),
        "trained_tokens": sum(c["trained"] for c in counts),
        "kept_tokens": sum(c["kept_tokens"] for c in counts),
        "kept_trained_tokens": sum(c["kept_trained"] for c in counts),
        "truncated_examples": sum(1 for n in lengths if n > max_seq_length),
        "longest_tokens": max(lengths, default=0),
        "distribution": {
            "min": min(lengths, default=0),
            "median": float(np.percentile(lengths, 50)) if lengths else 0.0,
            "p95": float(np.percentile(lengths, 95)) if lengths else 0.0,
            "max": max(lengths, default=0),
            "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
        },
    }


def token_report(
    tokenizer: Any,
    records: list[Record],
    max_seq_length: int = 4096,
    batch_size: int = 4,
    grad_accum: int = 1,
    epochs: float = 1,
    family: str | Family | None = None,
    chat_template: str | None = None,
    parallel: str = "error",
    content_with_calls: str = "error",
    plot: str | os.PathLike | None = None,
) -> dict:
    """Exact token counts with the model's tokenizer and the family's training template, tools included:
    per example and in total, tokens, trained tokens, the naive len(text)/4 estimate; the examples over
    `max_seq_length` and those whose trained tokens would ALL be cut off (TRL drops them silently); steps
    and training tokens for `batch_size` x `grad_accum` x `epochs`. Raises KitError when a render drops data
    or one of 50 sampled examples fails the render->parse round trip."""
    if min(max_seq_length, batch_size, grad_accum, epochs) <= 0:
        raise KitError("max_seq_length, batch_size, grad_accum and epochs must be positive")
    fam = detect_family(tokenizer, family)
    adapted = adapt_records(records, fam, parallel=parallel, content_with_calls=content_with_calls)
    examples = _count_examples(tokenizer, adapted, fam, chat_template, max_seq_length)
    stats = token_stats(examples, max_seq_length)
    naive = sum(e["naive"] for e in examples)
    naive_error_pct = (
        round(100.0 * (naive - stats["tokens"]) / stats["tokens"], 1) if stats["tokens"] else 0.0
    )
    usable = [e for e in examples if e["kept_trained"] > 0]
    steps_per_epoch = math.ceil(len(usable) / (batch_size * grad_accum))

    def brief(e: dict, *keys: str) -> dict:
        return {k: e[k] for k in ("index", "id", *keys)}

    report = {
        "family": fam.name,
        "vllm_tool_call_parser": fam.vllm_parser,
        "model": str(getattr(tokenizer, "name_or_path", "")),
        "source_records": len(records),
        **stats,
        "naive_tokens": naive,
        "naive_error_pct": naive_error_pct,
        "over_max_seq_length": [brief(e, "tokens") for e in examples if e["tokens"] > max_seq_length],
        "all_assistant_tokens_cut": [
            brief(e, "tokens", "first_trained_token") for e in examples if "first_trained_token" in e
        ],
        "no_trained_tokens": [brief(e) for e in examples if e["trained"] == 0],
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "epochs": epochs,
        "examples_trained": len(usable),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": math.ceil(steps_per_epoch * epochs),
        "training_tokens": round(sum(e["kept_tokens"] for e in usable) * epochs),
        "training_trained_tokens": round(sum(e["kept_trained"] for e in usable) * epochs),
        "per_example": [brief(e, "tokens", "trained", "naive") for e in examples],
    }
    if plot is not None:
        title = f"{fam.name}: tokens per example"
        report["plot"] = str(plot_histogram([e["tokens"] for e in examples], max_seq_length, plot, title))
    return report


def _count_examples(tokenizer, records, fam, chat_template, max_seq_length) -> list[dict]:
    """Per example: index, id, `count_tokens`, the naive len(text)/4 estimate and, when truncation cuts all
    its trained tokens, where the first one sits (how far max_seq_length would have to grow, in tokens)."""
    n = len(records)  # the round trip runs on 50 examples spread evenly (on all of them when fewer)
    sample = set(range(n)) if n <= 50 else {round(i * (n - 1) / 49) for i in range(50)}
    lost: list[str] = []
    examples = []
    for k, text, _ids, mask in iter_encoded(tokenizer, records, fam, chat_template):
        example = {"index": k, "id": records[k].get("id"), **count_tokens(mask, max_seq_length)}
        example["naive"] = round(len(text) / 4)
        if example["trained"] and not example["kept_trained"]:
            example["first_trained_token"] = mask.index(1)
        examples.append(example)
        lost += template_losses(text, records[k])
        if k in sample and not lost:
            verify_roundtrip(tokenizer, records[k], fam, chat_template)
    if lost:
        more = f" (and {len(lost) - 5} more)" if len(lost) > 5 else ""
        raise KitError(f"the {fam.name} template silently drops data: " + "; ".join(lost[:5]) + more)
    return examples


def plot_histogram(lengths: list[int], max_seq_length: int, out: str | os.PathLike, title: str = "") -> Path:
    """A histogram PNG of tokens per example with the max_seq_length line; written atomically. Drawn on its
    own Figure (no pyplot): a notebook's backend and its other plots are left alone."""
    from matplotlib.figure import Figure

    from .io import atomic_open

    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.subplots()
    ax.hist(lengths, bins=min(60, max(5, len(set(lengths)))), color="#4c78a8")
    ax.axvline(max_seq_length, color="#e45756", linestyle="--", label=f"max_seq_length {max_seq_length}")
    ax.set_xlabel("tokens per example (template and tools included)")
    ax.set_ylabel("examples")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png")
    return Path(out)


def summary(report: dict) -> str:
    d, cut = report["distribution"], report["all_assistant_tokens_cut"]
    lines = [
        f"family {report['family']} (vLLM --tool-call-parser {report['vllm_tool_call_parser']}), "
        f"{report['examples']} examples, max_seq_length {report['max_seq_length']}",
        f"tokens: {report['tokens']} total, {report['trained_tokens']} trained "
        f"({100.0 * report['trained_tokens'] / max(1, report['tokens']):.1f}%)",
        f"naive len(text)/4 estimate: {report['naive_tokens']} ({report['naive_error_pct']:+.1f}% vs exact)",
        f"per example: min {d['min']}, median {d['median']:.0f}, p95 {d['p95']:.0f}, max {d['max']}",
        f"over max_seq_length: {len(report['over_max_seq_length'])} (truncated)",
    ]
    if cut:
        shown = ", ".join(f"#{e['index']} {e['id'] or ''}".strip() for e in cut[:10])
        lines.append(
            f"WARNING: {len(cut)} examples lose ALL their trained tokens to truncation (TRL would drop "
            f"them silently): {shown}{' ...' if len(cut) > 10 else ''}; their first trained token "
            f"sits at {min(e['first_trained_token'] for e in cut)}+ tokens: raise --max-seq-length or offer "
            "fewer tools"
        )
    if report["no_trained_tokens"]:
        lines.append(f"note: {len(report['no_trained_tokens'])} examples have no trained turn (all weight 0)")
    lines.append(
        f"batch {report['batch_size']} x accumulation {report['grad_accum']} x {report['epochs']} epochs: "
        f"{report['steps_per_epoch']} steps/epoch, {report['total_steps']} steps, "
        f"{report['training_tokens']} tokens processed ({report['training_trained_tokens']} trained)"
    )
    if report.get("plot"):
        lines.append(f"histogram: {report['plot']}")
    return "\n".join(lines)


def _mask_runs(tokenizer, record, family, chat_template, max_seq_length):
    """(family, tokens, trained tokens, [(text, trained, cut)]): the render in runs of alike tokens, a token's
    text running to the next token's start (characters between tokens are kept; byte-level BPE has none)."""
    fam = detect_family(tokenizer, family)
    text, spans = trained_spans(tokenizer, record, fam, chat_template)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    mask = _mask_from_spans(enc.encodings[0], len(ids), spans)
    ends = [start for start, _ in offsets[1:]] + [len(text)]
    pieces = [
        (text[a : max(b, end)], mask[k], max_seq_length is not None and k >= max_seq_length)
        for k, ((a, b), end) in enumerate(zip(offsets, ends, strict=False))
    ]
    runs = [("".join(p for p, _, _ in run), *key) for key, run in groupby(pieces, key=lambda p: p[1:])]
    return fam, ids, mask, runs


def show_mask(
    tokenizer: Any,
    record: Record,
    family: str | Family | None = None,
    color: bool | None = None,
    chat_template: str | None = None,
    max_seq_length: int | None = None,
) -> str:
    """The rendered conversation with the trained tokens marked: ANSI colour (color=True) or [[...]]; tokens
    past `max_seq_length` come after a `<<cut at N tokens>>` line."""
    fam, ids, mask, runs = _mask_runs(tokenizer, record, family, chat_template, max_seq_length)
    out = [
        f"# record {record_id(record)}  family {fam.name}  tokens {len(ids)}  trained {sum(mask)}"
        f"  (trained text in {'green' if color else '[[...]]'})\n"
    ]
    for k, (piece, trained, cut) in enumerate(runs):
        if cut and not (k and runs[k - 1][2]):
            out.append(f"\n<<cut at {max_seq_length} tokens: everything below is lost>>\n")
        if color:
            out.append(f"\x1b[{'1;32' if trained else '2'}m{piece}\x1b[0m")
        else:
            out.append(f"[[{piece}]]" if trained else piece)
    return "".join(out)


def mask_html(
    tokenizer: Any,
    record: Record,
    family: str | Family | None = None,
    chat_template: str | None = None,
    max_seq_length: int | None = None,
) -> str:
    """The same view as coloured HTML for a notebook: trained text on green, the rest grey."""
    fam, ids, mask, runs = _mask_runs(tokenizer, record, family, chat_template, max_seq_length)
    parts = [
        f"<div class='toolcall-kit-mask'><div><b>record {html.escape(record_id(record))}</b> · family {fam.name} · "
        f"{len(ids)} tokens · <span style='background:#c8f7c5'>{sum(mask)} trained</span></div>"
        "<pre style='white-space:pre-wrap;font-size:12px;line-height:1.4'>"
    ]
    for k, (piece, trained, cut) in enumerate(runs):
        if cut and not (k and runs[k - 1][2]):
            parts.append(f"<span style='color:#c00;font-weight:bold'>✂ cut at {max_seq_length} tokens</span>")
        style = ("background:#c8f7c5;color:#111" if trained else "color:#777") + (
            ";text-decoration:line-through" if cut else ""
        )
        parts.append(f"<span style='{style}'>{html.escape(piece)}</span>")
    return "".join(parts) + "</pre></div>"


def load_tokenizer(model: str):
    """The tokenizer of a model name (`tiny:llama`, `packaged:...`, a folder, a hub id)."""
    from transformers import AutoTokenizer

    from .models import resolve_model

    folder = resolve_model(model)
    with loading(f"the tokenizer of {model!r}", folder):
        return AutoTokenizer.from_pretrained(folder)
