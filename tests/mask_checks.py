"""A loss mask checked token by token against the rendered text: the oracle the mask tests use."""

from __future__ import annotations

import json
from typing import Any

from toolcall_kit.records import calls_of, text_of
from toolcall_kit.templates import detect_family
from toolcall_kit.tokens import trained_spans


def _other_texts(record: dict) -> list[tuple[str, str]]:
    """(where, text) of every message whose text may never be trained on. Text that also occurs in an
    assistant turn (a city the user named and the answer repeats) cannot be told apart and is skipped."""
    assistant = []
    for m in record.get("messages") or []:
        if m.get("role") == "assistant":
            assistant.append(text_of(m.get("content")) or "")
            assistant += [json.dumps(args, ensure_ascii=False) for _, args in calls_of(m)]
    joined = "\n".join(assistant)
    out = []
    for i, m in enumerate(record.get("messages") or []):
        t = (text_of(m.get("content")) or "").strip()
        if m.get("role") in ("user", "tool", "system", "developer") and t and t not in joined:
            out.append((f"messages[{i}] ({m['role']})", t))
        elif m.get("role") == "assistant" and m.get("weight", 1) == 0 and t:
            out.append((f"messages[{i}] (assistant, weight 0)", t))
    return out


def verify_mask(
    tokenizer: Any,
    record: dict,
    ids: list[int],
    mask: list[int],
    family=None,
    chat_template=None,
    limit: int = 20,
) -> list[str]:
    """Problems of a mask (empty = correct), checked token by token against the rendered text.

    The trained tokens must cover exactly the trained assistant turns' rendered text (calls, content and
    the end token), cut where `ids` end, and nothing else: no token that straddles into a prompt, no
    user, system or tool-result text, no weight-0 turn. `ids` must be the tokens of the render.
    """
    fam = detect_family(tokenizer, family)
    text, want_spans = trained_spans(tokenizer, record, fam, chat_template)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    full, offsets = enc["input_ids"], enc["offset_mapping"]
    if len(mask) != len(ids):
        return [f"mask has {len(mask)} entries for {len(ids)} tokens"]
    if list(ids) != full[: len(ids)]:
        first = next(
            (k for k, (a, b) in enumerate(zip(ids, full, strict=False)) if a != b), min(len(ids), len(full))
        )
        return [f"input_ids differ from the tokens of the render at token {first}"]
    problems = ["mask holds values other than 0 and 1"] if any(v not in (0, 1) for v in mask) else []
    kept_end = offsets[len(ids) - 1][1] if ids else 0
    trained_text = []
    for k in range(len(ids)):
        a, b = offsets[k]
        if b <= a:
            if mask[k]:
                problems.append(
                    f"token {k} ({tokenizer.convert_ids_to_tokens(ids[k])!r}) has no text but is trained"
                )
            continue
        inside = sum(max(0, min(b, e) - max(a, s)) for s, e in want_spans)
        if mask[k] and inside < b - a:
            where = "lies" if inside == 0 else "reaches"
            problems.append(
                f"token {k} {text[a:b]!r} is trained but {where} outside the trained assistant turns (chars {a}-{b})"
            )
        elif not mask[k] and inside:
            problems.append(
                f"token {k} {text[a:b]!r} is trained assistant text but not trained (chars {a}-{b})"
            )
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
    problems += [
        f"{where} text {t[:40]!r} is inside the trained tokens"
        for where, t in _other_texts(record)
        if t in got
    ]
    for s, e in want_spans:
        if e <= kept_end and fam.end_token not in text[s:e]:
            problems.append(
                f"a trained turn (chars {s}-{e}) does not end with {fam.end_token!r}: the model would not learn to stop"
            )
    return problems[:limit]
