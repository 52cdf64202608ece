"""Unsloth's marker-based `train_on_responses_only` masking, compared with the kit's {% generation %} masks.

The tests use it to show why the kit masks from the template's generation blocks: on Llama 3.1 Unsloth's
markers train tool results, on Mistral they miss the answer after [TOOL_RESULTS].
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from toolcall_kit.errors import KitError
from toolcall_kit.records import text_of
from toolcall_kit.templates import detect_family, turn_texts
from toolcall_kit.tokens import iter_encoded

# Unsloth's documented train_on_responses_only markers (instruction part, response part) per family.
MARKERS = {
    "chatml": ("<|im_start|>user\n", "<|im_start|>assistant\n"),
    "qwen2_5": ("<|im_start|>user\n", "<|im_start|>assistant\n"),
    "llama3_1": (
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "mistral": ("[INST]", "[/INST]"),
}

_UNSLOTH_CHILD = r"""
import json, sys
import unsloth  # noqa: F401  (must come before transformers: it patches them)
from unsloth_zoo.dataset_utils import train_on_responses_only
from transformers import AutoTokenizer
job = json.load(open(sys.argv[1]))
tok = AutoTokenizer.from_pretrained(job["tokenizer"])
fn = train_on_responses_only(None, instruction_part=job["instruction_part"], response_part=job["response_part"],
                             tokenizer=tok, return_function=True)
labels = fn({"input_ids": job["input_ids"]})["labels"]
json.dump([[0 if x == -100 else 1 for x in row] for row in labels], open(sys.argv[2], "w"))
"""


def unsloth_masks(
    tokenizer: Any, input_ids: list[list[int]], instruction_part: str, response_part: str
) -> list[list[int]]:
    """Unsloth's own `train_on_responses_only` masks (1 = trained) for these token ids, computed in a child
    Python that imports Unsloth first (as Unsloth requires), so this process's transformers stay unpatched."""
    if importlib.util.find_spec("unsloth") is None or importlib.util.find_spec("unsloth_zoo") is None:
        raise KitError("Unsloth is not installed: the marker-masking check needs it (make install)")
    with tempfile.TemporaryDirectory(prefix="toolcall-kit-unsloth-") as tmp:
        tokenizer.save_pretrained(Path(tmp) / "tok")
        job, result = Path(tmp) / "job.json", Path(tmp) / "labels.json"
        job.write_text(
            json.dumps(
                {
                    "tokenizer": str(Path(tmp) / "tok"),
                    "instruction_part": instruction_part,
                    "response_part": response_part,
                    "input_ids": [list(x) for x in input_ids],
                }
            )
        )
        env = {**os.environ, "UNSLOTH_SKIP_TORCHVISION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(
            [sys.executable, "-c", _UNSLOTH_CHILD, str(job), str(result)],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise KitError(f"Unsloth's train_on_responses_only failed: {tail[0]}")
        return json.loads(result.read_text())


def unsloth_mask_leaks(
    tokenizer: Any,
    records: list[dict],
    instruction_part: str | None = None,
    response_part: str | None = None,
    family: str | None = None,
    chat_template: str | None = None,
) -> dict:
    """Where Unsloth's marker-based masking differs from the kit's masks.

    Markers default to the family's (Unsloth's documented ones). A leak is a token Unsloth trains that ours
    does not (tool results, user text, weight-0 turns), classified by the message it comes from; a miss is
    assistant text ours trains and Unsloth does not.
    """
    fam = detect_family(tokenizer, family)
    q = instruction_part if instruction_part is not None else MARKERS[fam.name][0]
    a = response_part if response_part is not None else MARKERS[fam.name][1]
    texts, ids_all, ours = [], [], []
    for _, text, ids, mask in iter_encoded(tokenizer, records, fam, chat_template):
        texts.append(text)
        ids_all.append(ids)
        ours.append(mask)
    theirs = unsloth_masks(tokenizer, ids_all, q, a)
    found: dict[str, list[dict]] = {"leak": [], "miss": []}
    for r, rec in enumerate(records):
        offsets = tokenizer(texts[r], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        owner = _char_owner(tokenizer, rec, fam, chat_template, texts[r])
        for kind, (t_want, o_want) in (("leak", (1, 0)), ("miss", (0, 1))):
            flags = [int(t == t_want and o == o_want) for t, o in zip(theirs[r], ours[r], strict=True)]
            for s, e in _runs(flags):
                a0, b0 = offsets[s][0], offsets[e - 1][1]
                found[kind].append(
                    {
                        "index": r,
                        "id": rec.get("id"),
                        "tokens": e - s,
                        "message": owner(a0, b0),
                        "text": texts[r][a0:b0][:200],
                    }  # fmt: skip
                )
    return {
        "family": fam.name,
        "instruction_part": q,
        "response_part": a,
        "records": len(records),
        "leaked_tokens": sum(x["tokens"] for x in found["leak"]),
        "missed_tokens": sum(x["tokens"] for x in found["miss"]),
        "leaks": found["leak"],
        "misses": found["miss"],
    }


def _runs(flags: list[int]) -> list[tuple[int, int]]:
    out, start = [], None
    for k, f in enumerate(flags + [0]):
        if f and start is None:
            start = k
        elif not f and start is not None:
            out.append((start, k))
            start = None
    return out


def _char_owner(tokenizer, record, fam, chat_template, text):
    """A function: character range -> the messages whose text it overlaps (best effort, by content)."""
    places = []
    pos = 0
    for i, m in enumerate(record.get("messages") or []):
        if m.get("role") == "assistant":
            continue
        t = (text_of(m.get("content")) or "").strip()
        if not t:
            continue
        for cand in (t, json.dumps(t, ensure_ascii=False)[1:-1]):
            k = text.find(cand, pos)
            if k >= 0:
                places.append((k, k + len(cand), f"messages[{i}] ({m['role']})"))
                pos = k
                break
    try:
        _, turns = turn_texts(tokenizer, record, fam, chat_template)
        for i, s, e in turns:
            w = record["messages"][i].get("weight", 1)
            places.append((s, e, f"messages[{i}] (assistant{', weight 0' if w == 0 else ''})"))
    except KitError:
        pass

    def owner(a: int, b: int) -> str:
        hit = sorted((p for p in places if p[0] < b and a < p[1]), key=lambda p: p[0])
        return ", ".join(dict.fromkeys(p[2] for p in hit)) or "template text (headers, markers, tool list)"

    return owner
