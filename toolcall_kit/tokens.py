"""Tokenisation with assistant-only loss masks, mask checks and the token budget.

    toolcall-kit tokens runs/demo/data/train.jsonl --model tiny:llama --max-seq-length 1024 --plot tokens.png
    toolcall-kit show-mask runs/demo/data/train.jsonl --model tiny:llama --index 3

`encode` / `encode_many` give what the trainer feeds TRL's SFTTrainer as a pre-tokenized dataset:
`{"input_ids": [...], "assistant_masks": [...]}` (TRL's `assistant_only_loss` field name), 1 = trained.
The mask comes from the family template's {% generation %} blocks, as `apply_chat_template(...,
return_assistant_tokens_mask=True)` computes it, with per-message `weight: 0` turns left out; system,
tools, user turns and tool results are never trained. `encode_many` renders each record once with the
compiled template, batch-encodes the texts with the fast tokenizer and maps the generation blocks'
character offsets to tokens: the same mask as apply_chat_template, at batch-encoding speed.

`verify_mask` checks a mask token by token; `token_report` is the budget (exact counts, naive estimate,
truncation, steps), with the statistics (`token_stats`) that training also records for its data.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import KitError
from .records import Record, calls_of, read_records, text_of  # noqa: F401 - read_records: re-exported
from .templates import (
    Family,
    _rid,
    adapt_records,
    detect_family,
    render_with_spans,
    template_losses,
    verify_roundtrip,
)

# ---------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------


def trained_spans(record: Record, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The {% generation %} character spans of the assistant turns that are trained (weight != 0).

    Spans come in the order of the assistant messages; a template that marks a different number of
    blocks than the record has assistant turns cannot be matched to weights and is refused.
    """
    turns = [m for m in record.get("messages") or [] if m.get("role") == "assistant"]
    if len(spans) != len(turns):
        raise KitError(
            f"record {_rid(record)}: the chat template marks {len(spans)} {{% generation %}} blocks for "
            f"{len(turns)} assistant turns; use a training template that wraps each assistant turn"
        )
    return [s for s, m in zip(spans, turns, strict=True) if m.get("weight", 1) != 0 and s[1] > s[0]]


def _mask_from_spans(encoding: Any, n: int, spans: list[tuple[int, int]]) -> list[int]:
    """Token mask from character spans, as transformers' apply_chat_template computes it: a token is
    trained when it holds the span's first character, its last character, or anything between."""
    mask = [0] * n
    for s, e in spans:
        first = last = None
        for c in range(s, e):  # a character no token covers (rare) moves the edge inwards
            first = encoding.char_to_token(c)
            if first is not None:
                break
        if first is None:
            continue
        for c in range(e - 1, s - 1, -1):
            last = encoding.char_to_token(c)
            if last is not None:
                break
        mask[first : last + 1] = [1] * (last + 1 - first)
    return mask


def _render_all(tokenizer: Any, records: list[Record], fam: Family, chat_template: str | None):
    texts, spans = [], []
    for rec in records:
        text, sp = render_with_spans(tokenizer, rec, fam, chat_template=chat_template)
        texts.append(text)
        spans.append(trained_spans(rec, sp))
    return texts, spans


def _need_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise KitError("token masks need a fast (Rust) tokenizer; this model only has a slow one")


def iter_encoded(
    tokenizer: Any,
    records: list[Record],
    family: str | Family | None = None,
    chat_template: str | None = None,
    chunk: int = 1024,
):
    """Yield (index, text, trained spans, input_ids, mask) for each record, in order.

    Rendering is Python and batch encoding is Rust that releases the GIL, so chunk k+1 is rendered while
    a worker thread encodes chunk k: on 2 cores this hides most of the rendering time.
    """
    from concurrent.futures import ThreadPoolExecutor

    _need_fast(tokenizer)
    fam = detect_family(tokenizer, family)

    def finish(start, texts, spans, fut):
        enc = fut.result()
        for k, ids in enumerate(enc["input_ids"]):
            yield start + k, texts[k], spans[k], ids, _mask_from_spans(enc.encodings[k], len(ids), spans[k])

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for start in range(0, len(records), chunk):
            texts, spans = _render_all(tokenizer, records[start : start + chunk], fam, chat_template)
            fut = pool.submit(tokenizer, texts, add_special_tokens=False)
            if pending is not None:
                yield from finish(*pending)
            pending = (start, texts, spans, fut)
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
    out = []
    for _, _, _, ids, mask in iter_encoded(tokenizer, records, family, chat_template):
        if max_seq_length is not None:
            ids, mask = ids[:max_seq_length], mask[:max_seq_length]
        out.append({"input_ids": ids, "assistant_masks": mask})
    return out


def encode(
    tokenizer: Any,
    record: Record,
    family: str | Family | None = None,
    max_seq_length: int | None = None,
    chat_template: str | None = None,
) -> dict:
    """{"input_ids": [...], "assistant_masks": [...]} for one record (1 = the loss is computed there)."""
    return encode_many(tokenizer, [record], family, max_seq_length, chat_template)[0]


# ---------------------------------------------------------------------------------------------------------
# Checking a mask token by token
# ---------------------------------------------------------------------------------------------------------


def _other_texts(record: Record) -> list[tuple[str, str]]:
    """(where, text) of every non-assistant message whose text may never be trained on.

    Text that also occurs in an assistant turn of the source (a city the user named and the answer
    repeats) cannot be told apart by content and is skipped."""
    assistant = []
    for m in record.get("messages") or []:
        if m.get("role") == "assistant":
            assistant.append(text_of(m.get("content")) or "")
            for _, args in calls_of(m):
                assistant.append(json.dumps(args, ensure_ascii=False))
    joined = "\n".join(assistant)
    out = []
    for i, m in enumerate(record.get("messages") or []):
        if m.get("role") in ("user", "tool", "system", "developer"):
            t = (text_of(m.get("content")) or "").strip()
            if t and t not in joined:
                out.append((f"messages[{i}] ({m['role']})", t))
        elif m.get("role") == "assistant" and m.get("weight", 1) == 0:
            t = (text_of(m.get("content")) or "").strip()
            if t:
                out.append((f"messages[{i}] (assistant, weight 0)", t))
    return out


def verify_mask(
    tokenizer: Any,
    record: Record,
    ids: list[int],
    mask: list[int],
    family: str | Family | None = None,
    chat_template: str | None = None,
    limit: int = 20,
) -> list[str]:
    """Problems of a mask (empty = correct), checked token by token against the rendered text.

    The trained tokens must cover exactly the trained assistant turns' rendered text (calls, content and
    the end token), cut where `ids` end, and nothing else: no token that straddles into a prompt, no
    user, system or tool-result text, no weight-0 turn. `ids` must be the tokens of the render.
    """
    fam = detect_family(tokenizer, family)
    text, spans = render_with_spans(tokenizer, record, fam, chat_template=chat_template)
    want_spans = trained_spans(record, spans)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    full, offsets = enc["input_ids"], enc["offset_mapping"]
    problems: list[str] = []
    if len(mask) != len(ids):
        return [f"mask has {len(mask)} entries for {len(ids)} tokens"]
    if list(ids) != full[: len(ids)]:
        first = next(
            (k for k, (a, b) in enumerate(zip(ids, full, strict=False)) if a != b), min(len(ids), len(full))
        )
        return [f"input_ids differ from the tokens of the render at token {first}"]
    if any(v not in (0, 1) for v in mask):
        problems.append("mask holds values other than 0 and 1")
    kept_end = offsets[len(ids) - 1][1] if ids else 0

    def overlap(a: int, b: int) -> int:
        return sum(max(0, min(b, e) - max(a, s)) for s, e in want_spans)

    trained_text = []
    for k in range(len(ids)):
        a, b = offsets[k]
        if b <= a:
            if mask[k]:
                problems.append(
                    f"token {k} ({tokenizer.convert_ids_to_tokens(ids[k])!r}) has no text but is trained"
                )
            continue
        inside = overlap(a, b)
        piece = text[a:b]
        if mask[k] and inside < b - a:
            problems.append(
                f"token {k} {piece!r} is trained but {'lies' if inside == 0 else 'reaches'} outside "
                f"the trained assistant turns (chars {a}-{b})"
            )
        elif not mask[k] and inside:
            problems.append(f"token {k} {piece!r} is trained assistant text but not trained (chars {a}-{b})")
        if mask[k]:
            trained_text.append((a, b))
        if len(problems) >= limit:
            return problems
    # Byte-level BPE splits a multi-byte character (e.g. an em dash) over several tokens that report the
    # same character offsets: join the covered character ranges, not the tokens' pieces.
    got, end = [], 0
    for a, b in trained_text:
        if b > end:
            got.append(text[max(a, end) : b])
            end = b
    got = "".join(got)
    want = "".join(text[s : min(e, kept_end)] for s, e in want_spans if s < kept_end)
    if got != want and not problems:
        problems.append(f"trained text {got[:80]!r} differs from the assistant turns' text {want[:80]!r}")
    for where, t in _other_texts(record):
        if t in got:
            problems.append(f"{where} text {t[:40]!r} is inside the trained tokens")
    for s, e in want_spans:
        if e <= kept_end and fam.end_token not in text[s:e] and fam.end_token != "":
            problems.append(
                f"a trained turn (chars {s}-{e}) does not end with {fam.end_token!r}: the model "
                "would not learn to stop"
            )
    return problems[:limit]


# ---------------------------------------------------------------------------------------------------------
# Token budget
# ---------------------------------------------------------------------------------------------------------


def count_tokens(mask: list[int], max_seq_length: int) -> dict[str, int]:
    """One example's tokens and trained tokens, before and after truncation to `max_seq_length`."""
    return {
        "tokens": len(mask),
        "trained": sum(mask),
        "kept_tokens": min(len(mask), max_seq_length),
        "kept_trained": sum(mask[:max_seq_length]),
    }


def token_stats(counts: list[dict[str, int]], max_seq_length: int) -> dict[str, Any]:
    """The statistics of a split, from `count_tokens` of each example: stage 02's token report and training's
    data_fingerprints.json both hold these."""
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
    check: bool = True,
    sample_checks: int = 50,
) -> dict:
    """Exact token counts with the model's tokenizer and the family's training template, tools included.

    Per example: tokens, trained tokens, the naive len(text)/4 estimate; totals, distribution (min,
    median, p95, max), examples over `max_seq_length`, and every example whose assistant tokens would ALL
    be cut off (TRL drops those silently) by index and id; steps per epoch and total training tokens for
    `batch_size` x `grad_accum` x `epochs` (examples with nothing left to train are not counted as steps).
    With `check`, every render is checked for dropped tools/calls/arguments/results (KitError), and a
    sample of `sample_checks` examples gets the render->parse round trip and a token-by-token mask check.
    """
    if max_seq_length <= 0 or batch_size <= 0 or grad_accum <= 0 or epochs <= 0:
        raise KitError("max_seq_length, batch_size, grad_accum and epochs must be positive")
    fam = detect_family(tokenizer, family)
    adapted = adapt_records(records, fam, parallel=parallel, content_with_calls=content_with_calls)
    sample = _sample_positions(len(adapted), sample_checks) if check else set()
    lost: list[str] = []
    examples, first_trained = [], {}
    for k, text, _spans, ids, mask in iter_encoded(tokenizer, adapted, fam, chat_template):
        if check:
            lost.extend(template_losses(text, adapted[k]))
        count = count_tokens(mask, max_seq_length)
        examples.append({"index": k, "id": adapted[k].get("id"), **count, "naive": round(len(text) / 4)})
        if count["trained"] and not count["kept_trained"]:  # how far max_seq_length would have to grow (tokens)
            first_trained[k] = mask.index(1)
        if k in sample and not lost:
            verify_roundtrip(tokenizer, adapted[k], fam, chat_template)
            problems = verify_mask(tokenizer, adapted[k], ids, mask, fam, chat_template)
            if problems:
                raise KitError(f"record {_rid(adapted[k])}: mask check failed: {'; '.join(problems[:3])}")
    if lost:
        more = f" (and {len(lost) - 5} more)" if len(lost) > 5 else ""
        raise KitError(f"the {fam.name} template silently drops data: " + "; ".join(lost[:5]) + more)

    stats = token_stats(examples, max_seq_length)
    total = stats["tokens"]
    naive_total = sum(e["naive"] for e in examples)
    over = [e for e in examples if e["tokens"] > max_seq_length]
    all_cut = [e for e in examples if e["trained"] > 0 and e["kept_trained"] == 0]
    nothing = [e for e in examples if e["trained"] == 0]
    usable = [e for e in examples if e["kept_trained"] > 0]
    per_step = batch_size * grad_accum
    steps_per_epoch = math.ceil(len(usable) / per_step) if usable else 0
    report = {
        "family": fam.name,
        "vllm_tool_call_parser": fam.vllm_parser,
        "model": str(getattr(tokenizer, "name_or_path", "")),
        "source_records": len(records),
        **stats,
        "naive_tokens": naive_total,
        "naive_error_pct": round(100.0 * (naive_total - total) / total, 1) if total else 0.0,
        "over_max_seq_length": [{"index": e["index"], "id": e["id"], "tokens": e["tokens"]} for e in over],
        "all_assistant_tokens_cut": [
            {
                "index": e["index"],
                "id": e["id"],
                "tokens": e["tokens"],
                "first_trained_token": first_trained[e["index"]],
            }
            for e in all_cut
        ],
        "no_trained_tokens": [{"index": e["index"], "id": e["id"]} for e in nothing],
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "epochs": epochs,
        "examples_trained": len(usable),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": math.ceil(steps_per_epoch * epochs),
        "training_tokens": round(sum(e["kept_tokens"] for e in usable) * epochs),
        "training_trained_tokens": round(sum(e["kept_trained"] for e in usable) * epochs),
        "per_example": [{k: e[k] for k in ("index", "id", "tokens", "trained", "naive")} for e in examples],
    }
    if plot is not None:
        lengths = [e["tokens"] for e in examples]
        report["plot"] = str(
            plot_histogram(lengths, max_seq_length, plot, title=f"{fam.name}: tokens per example")
        )
    return report


def _sample_positions(n: int, k: int) -> set[int]:
    if n <= k:
        return set(range(n))
    return {round(i * (n - 1) / (k - 1)) for i in range(k)} if k > 1 else {0}


def plot_histogram(lengths: list[int], max_seq_length: int, out: str | os.PathLike, title: str = "") -> Path:
    """A histogram PNG of tokens per example with the max_seq_length line; written atomically.

    Drawn on its own Figure (no pyplot): a notebook's backend and its other plots are left alone."""
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
    out = Path(out)
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png")
    return out


def summary(report: dict) -> str:
    """The token report as a few lines for a terminal."""
    d = report["distribution"]
    lines = [
        f"family {report['family']} (vLLM --tool-call-parser {report['vllm_tool_call_parser']}), "
        f"{report['examples']} examples, max_seq_length {report['max_seq_length']}",
        f"tokens: {report['tokens']} total, {report['trained_tokens']} trained "
        f"({100.0 * report['trained_tokens'] / max(1, report['tokens']):.1f}%)",
        f"naive len(text)/4 estimate: {report['naive_tokens']} ({report['naive_error_pct']:+.1f}% vs exact)",
        f"per example: min {d['min']}, median {d['median']:.0f}, p95 {d['p95']:.0f}, max {d['max']}",
        f"over max_seq_length: {len(report['over_max_seq_length'])} (truncated)",
    ]
    cut = report["all_assistant_tokens_cut"]
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


# ---------------------------------------------------------------------------------------------------------
# Showing the mask
# ---------------------------------------------------------------------------------------------------------


def _mask_runs(tokenizer, record, family, chat_template, max_seq_length):
    fam = detect_family(tokenizer, family)
    text, spans = render_with_spans(tokenizer, record, fam, chat_template=chat_template)
    sp = trained_spans(record, spans)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    mask = _mask_from_spans(enc.encodings[0], len(ids), sp)
    runs = []  # (text, trained, cut)
    for k in range(len(ids)):
        a, b = offsets[k]
        if k + 1 < len(ids):
            b = max(b, offsets[k + 1][0])  # keep characters between tokens (none for byte-level BPE)
        else:
            b = len(text)
        cut = max_seq_length is not None and k >= max_seq_length
        piece = text[a:b]
        if runs and runs[-1][1] == mask[k] and runs[-1][2] == cut:
            runs[-1][0] += piece
        else:
            runs.append([piece, mask[k], cut])
    return fam, ids, mask, runs


def show_mask(
    tokenizer: Any,
    record: Record,
    family: str | Family | None = None,
    color: bool | None = None,
    chat_template: str | None = None,
    max_seq_length: int | None = None,
) -> str:
    """The rendered conversation with the trained tokens marked: ANSI colour (color=True) or [[...]].

    Tokens past `max_seq_length` are shown after a `<<cut at N tokens>>` line.
    """
    fam, ids, mask, runs = _mask_runs(tokenizer, record, family, chat_template, max_seq_length)
    out = [
        f"# record {_rid(record)}  family {fam.name}  tokens {len(ids)}  trained {sum(mask)}"
        f"{'  (trained text in green)' if color else '  (trained text in [[...]])'}\n"
    ]
    cut_shown = False
    for piece, trained, cut in runs:
        if cut and not cut_shown:
            out.append(f"\n<<cut at {max_seq_length} tokens: everything below is lost>>\n")
            cut_shown = True
        if trained and color:
            out.append(f"\x1b[1;32m{piece}\x1b[0m")
        elif trained:
            out.append(f"[[{piece}]]")
        elif color:
            out.append(f"\x1b[2m{piece}\x1b[0m")
        else:
            out.append(piece)
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
        f"<div class='toolcall-kit-mask'><div><b>record {html.escape(_rid(record))}</b> · family {fam.name} · "
        f"{len(ids)} tokens · <span style='background:#c8f7c5'>{sum(mask)} trained</span></div>"
        "<pre style='white-space:pre-wrap;font-size:12px;line-height:1.4'>"
    ]
    cut_shown = False
    for piece, trained, cut in runs:
        if cut and not cut_shown:
            parts.append(f"<span style='color:#c00;font-weight:bold'>✂ cut at {max_seq_length} tokens</span>")
            cut_shown = True
        style = "background:#c8f7c5;color:#111" if trained else "color:#777"
        if cut:
            style += ";text-decoration:line-through"
        parts.append(f"<span style='{style}'>{html.escape(piece)}</span>")
    parts.append("</pre></div>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------------
# CLI entry points (cli.py calls these)
# ---------------------------------------------------------------------------------------------------------


def load_tokenizer(model: str):
    """The tokenizer of a model name (`tiny:llama`, `packaged:...`, a folder, a hub id)."""
    from .models import resolve_model

    folder = resolve_model(model)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001 - a folder without (or with a broken) tokenizer raises many types
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise KitError(f"cannot load the tokenizer of {model!r} ({folder}): {first}") from None
