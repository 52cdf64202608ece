"""Chat-template families, render checks and one parser per tool-call format.

A family (chat_templates/families.json) ties together what must agree once vLLM serves the fine-tune: its
`--tool-call-parser`, the format the assistant writes, and the training template, whose {% generation %}
blocks are what is trained. TRL's llama3_training.jinja renders neither tools nor calls and TRL ships no
Mistral template, hence the kit's own for those two, written after Meta's and Mistral's.
tests/test_vllm_parsers.py holds `parse_tool_calls` to vLLM's own parsers.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import itertools
import json
import re
import string
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .errors import KitError
from .records import Record, calls_of, text_of
from .run_files import MODEL_CONFIG

_KIT_TEMPLATES = Path(__file__).parent / "chat_templates"

# ------------------------------------------------------------------------------------------------ Families


@dataclass(frozen=True)
class Family:
    name: str
    vllm_parser: str  # vLLM `--tool-call-parser`
    fmt: str  # `parse_tool_calls` format of what the assistant writes
    template_source: str  # "kit:<file>" or "trl:<file>"
    end_token: str  # closes an assistant turn; trained, so that the model learns to stop
    one_call_per_turn: bool = False  # Llama 3.1
    call_id_length: int | None = None  # Mistral: exactly 9 letters and digits

    def template(self) -> str:
        """The training chat template text (with {% generation %} markers)."""
        return _template_text(self.template_source)


_FAMILY_DATA = json.loads((_KIT_TEMPLATES / "families.json").read_text(encoding="utf-8"))
FAMILIES = {name: Family(name, **fields) for name, fields in _FAMILY_DATA["families"].items()}
ALIASES: dict[str, str] = _FAMILY_DATA["aliases"]
FORMATS = ("hermes", "llama3_json", "mistral", "openai")


def get_family(family: str | Family) -> Family:
    if isinstance(family, Family):
        return family
    key = ALIASES.get(str(family).lower(), str(family).lower())
    if key not in FAMILIES:
        known = ", ".join(sorted(FAMILIES) + sorted(ALIASES))
        raise KitError(f"unknown chat-template family {family!r}; known: {known}")
    return FAMILIES[key]


@cache
def _template_text(source: str) -> str:
    where, _, name = source.partition(":")
    if where == "kit":
        path = _KIT_TEMPLATES / name
    else:  # TRL's training templates, found without importing trl (seconds of imports)
        spec = importlib.util.find_spec("trl")
        if spec is None or not spec.submodule_search_locations:
            raise KitError(f"the template {name} ships with TRL, which is not installed (pip install trl)")
        path = Path(list(spec.submodule_search_locations)[0]) / "chat_templates" / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise KitError(f"chat template {path} cannot be read: {e}") from e


def detect_family(tokenizer: Any, family: str | Family | None = None) -> Family:
    """The family of a tokenizer's model, from its chat template text or its config's model_type; `family`
    (a name; None or "auto" = detect) overrides detection, for models whose template is unusual."""
    if family is not None and family != "auto":
        return get_family(family)
    text = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(text, dict):  # several named templates: all of them decide
        text = "\n".join(str(v) for v in text.values())
    if "<|start_header_id|>" in text or "<|eot_id|>" in text:
        return FAMILIES["llama3_1"]
    if "[INST]" in text or "[TOOL_CALLS]" in text:
        return FAMILIES["mistral"]
    if "<|im_start|>" in text:
        return FAMILIES["qwen2_5" if "You are Qwen" in text else "chatml"]
    try:
        config = Path(str(getattr(tokenizer, "name_or_path", "") or "")) / MODEL_CONFIG
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        model_type = None
    by_type = {"llama": "llama3_1", "qwen2": "qwen2_5", "mistral": "mistral"}
    if model_type in by_type:
        return FAMILIES[by_type[model_type]]
    raise KitError(
        f"cannot tell the chat-template family of {getattr(tokenizer, 'name_or_path', 'this tokenizer')!r} "
        f"(model_type {model_type!r}); pass --family with one of {', '.join(FAMILIES)}"
    )


# ------------------------------------------------------------------------------------------- Family quirks


def record_id(record: Record) -> str:
    return str(record.get("id") or "<no id>")


def _assistant_calls(msg: dict) -> list[dict]:
    return msg.get("tool_calls") or [] if msg.get("role") == "assistant" else []


def _has_text(msg: dict) -> bool:
    return bool((text_of(msg.get("content")) or "").strip())


_ALNUM = string.digits + string.ascii_lowercase + string.ascii_uppercase


def mistral_call_id(call_id: str, salt: int = 0) -> str:
    """A deterministic 9-character alphanumeric id for an OpenAI-style id (same input, same output)."""
    n = int.from_bytes(hashlib.sha256(f"{salt}:{call_id}".encode()).digest()[:8], "big")
    return "".join(_ALNUM[n // 62**k % 62] for k in range(9))  # n's last 9 digits in base 62


def _is_mistral_id(call_id: Any) -> bool:
    return isinstance(call_id, str) and len(call_id) == 9 and call_id.isascii() and call_id.isalnum()


def adapt_record(
    record: Record, family: str | Family, parallel: str = "error", content_with_calls: str = "error"
) -> list[Record]:
    """The record rewritten for its family's quirks, as a list (one record today); the input is never changed.

    - llama3_1: one call per assistant turn and no text beside it (vLLM's llama3_json returns no content with
      calls): `parallel="split"` makes a turn per call, each followed by its result; `content_with_calls="drop"`
      drops the text; "error" refuses.
    - mistral: call ids become exactly 9 letters and digits, deterministically.
    Only a record that changes is copied (a deepcopy of each of 60k records cost seconds).
    """
    fam = get_family(family)
    if parallel not in ("error", "split") or content_with_calls not in ("error", "drop"):
        raise KitError(
            f"parallel must be 'error' or 'split' (not {parallel!r}) and content_with_calls 'error' or "
            f"'drop' (not {content_with_calls!r})"
        )
    msgs = record.get("messages") or []
    out = record
    if fam.one_call_per_turn and any(
        len(calls) > 1 or (calls and _has_text(m)) for m in msgs if (calls := _assistant_calls(m))
    ):
        out = _one_call_per_turn(copy.deepcopy(record), fam, parallel, content_with_calls)
    ids = [c.get("id") for m in out.get("messages") or [] for c in m.get("tool_calls") or []]
    if fam.call_id_length and any(i is not None and not _is_mistral_id(i) for i in ids):
        out = _remap_call_ids(copy.deepcopy(out) if out is record else out)
    return [out]


def _one_call_per_turn(record: Record, fam: Family, parallel: str, content_with_calls: str) -> Record:
    msgs, new, i = record.get("messages") or [], [], 0
    while i < len(msgs):
        msg, calls, i = msgs[i], _assistant_calls(msgs[i]), i + 1
        where = f"record {record_id(record)}: messages[{i - 1}]"
        if calls and _has_text(msg):
            if content_with_calls == "error":
                raise KitError(
                    f"{where} has text beside its tool call; {fam.name} writes only the call (vLLM's "
                    "llama3_json parser returns no content with calls): drop the text "
                    "(content_with_calls='drop') or remove it from the data"
                )
            msg = {**msg, "content": None}
        if len(calls) <= 1:
            new.append(msg)
            continue
        if parallel == "error":
            raise KitError(
                f"{where} makes {len(calls)} parallel calls and {fam.name} allows one call per assistant "
                "turn; split them (parallel='split' / --parallel split) or drop the record"
            )
        first_result = i
        while i < len(msgs) and msgs[i].get("role") == "tool":  # the results answering this turn
            i += 1
        new += _split_calls(msg, calls, msgs[first_result:i])
    record["messages"] = new
    return record


def _split_calls(msg: dict, calls: list[dict], results: list[dict]) -> list[dict]:
    """One assistant turn per call, each followed by its result; results matching no call come after them."""
    by_id = {str(r.get("tool_call_id")): r for r in reversed(results)}  # the first result for each id
    turns = []
    for call in calls:
        turns.append(
            {k: v for k, v in msg.items() if k != "tool_calls"} | {"content": None, "tool_calls": [call]}
        )
        if (res := by_id.pop(str(call.get("id")), None)) is not None:
            turns.append(res)
    placed = {id(t) for t in turns}
    return turns + [r for r in results if id(r) not in placed]


def _remap_call_ids(record: Record) -> Record:
    calls = [c for m in record.get("messages") or [] for c in m.get("tool_calls") or []]
    taken = {c["id"] for c in calls if _is_mistral_id(c.get("id"))}
    mapping: dict[str, str] = {}
    for call in calls:
        old = call.get("id")
        if old is None or _is_mistral_id(old):
            continue
        if old not in mapping:  # a salt only on a clash (astronomically rare): ids stay unique in the record
            salted = (mistral_call_id(str(old), salt) for salt in itertools.count())
            mapping[old] = next(new for new in salted if new not in taken)
            taken.add(mapping[old])
        call["id"] = mapping[old]
    for msg in record.get("messages") or []:
        if msg.get("role") == "tool" and msg.get("tool_call_id") in mapping:
            msg["tool_call_id"] = mapping[msg["tool_call_id"]]
    return record


def adapt_records(
    records: list[Record], family: str | Family, parallel: str = "error", content_with_calls: str = "error"
) -> list[Record]:
    return [a for r in records for a in adapt_record(r, family, parallel, content_with_calls)]


# ------------------------------------------------------------------------- Rendering and the render checks


def _template_for(tokenizer: Any, fam: Family, chat_template: str | None) -> str:
    if chat_template == "model":  # the tokenizer's own template, e.g. to check it before training
        tmpl = getattr(tokenizer, "chat_template", None)
        if not tmpl:
            raise KitError(f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} has no chat template")
        return tmpl if isinstance(tmpl, str) else tokenizer.get_chat_template(None, None)
    return chat_template if chat_template is not None else fam.template()


def _call_arguments(record: Record) -> Iterator[tuple[int, Any, Any]]:
    """(message index, name, arguments) of every call, read leniently: nothing has checked the layout yet."""
    for i, msg in enumerate(record.get("messages") or []):
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") or {}
            yield i, fn.get("name"), fn.get("arguments")


def _render(tokenizer, record, family, chat_template, add_generation_prompt, spans: bool):
    # apply_chat_template renders through render_jinja_template with the special tokens as variables; the
    # {% generation %} spans need it called directly (apply_chat_template only gives them as token masks).
    from transformers.utils.chat_template_utils import render_jinja_template

    fam = detect_family(tokenizer, family)
    for i, name, args in _call_arguments(record):
        if isinstance(args, str):
            raise KitError(
                f"record {record_id(record)}: messages[{i}] call {name!r} has arguments as a JSON string; records "
                "keep them decoded (read data through toolcall_kit formats) or every template writes them "
                "encoded twice"
            )
    # `weight` is the kit's, not the template's; content lists become strings every template can print.
    messages = [{k: v for k, v in m.items() if k != "weight"} for m in record.get("messages") or []]
    for m in messages:
        if isinstance(m.get("content"), list):
            m["content"] = text_of(m["content"])
    tmpl = _template_for(tokenizer, fam, chat_template)
    try:
        texts, marks = render_jinja_template(
            conversations=[messages],
            tools=record.get("tools") or None,
            chat_template=tmpl,
            return_assistant_tokens_mask=spans,
            add_generation_prompt=add_generation_prompt,
            **tokenizer.special_tokens_map,
        )
    except Exception as e:  # jinja's raise_exception and type errors: name the record
        raise KitError(f"record {record_id(record)}: the {fam.name} chat template failed: {e}") from e
    _refuse_double_encoding(record, texts[0])
    return texts[0], [tuple(s) for s in marks[0]] if spans else []


def render_with_spans(
    tokenizer: Any, record: Record, family: str | Family | None = None, chat_template: str | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """(rendered text, [(start, end) character span of each {% generation %} block, in order])."""
    return _render(tokenizer, record, family, chat_template, False, spans=True)


def render(
    tokenizer: Any,
    record: Record,
    family: str | Family | None = None,
    add_generation_prompt: bool = False,
    chat_template: str | None = None,
) -> str:
    """The record as `tokenizer.apply_chat_template(messages, tools=...)` renders it, arguments as objects.
    `chat_template`: None = the family's training template, "model" = the tokenizer's own, or a template
    text. Raises KitError for arguments kept as JSON strings or a render that encodes them twice."""
    return _render(tokenizer, record, family, chat_template, add_generation_prompt, spans=False)[0]


def _json_forms(value: Any) -> list[str]:
    # tojson in transformers is json.dumps(ensure_ascii=False) with default separators; accept compact too.
    seps = ((", ", ": "), (",", ":"))
    forms = [json.dumps(value, ensure_ascii=a, separators=s) for a in (False, True) for s in seps]
    return list(dict.fromkeys(forms))


def _refuse_double_encoding(record: Record, text: str) -> None:
    for i, name, args in _call_arguments(record):
        for form in _json_forms(args) if isinstance(args, dict) and args else []:
            twice = json.dumps(form, ensure_ascii=False)[1:-1]  # the object as a JSON string's body
            if twice != form and twice in text:
                raise KitError(
                    f"record {record_id(record)}: messages[{i}] arguments of {name!r} are JSON-encoded twice by the "
                    f"chat template ({twice[:60]}...): the model would learn to write a string where the "
                    "server's parser expects an object; fix the template (`arguments | tojson` once, on the object)"
                )


def _json_body_in(text: str, value: Any) -> bool:
    """A JSON form of `value`, less its outer braces or quotes, is in `text` (a template may `tojson` it)."""
    return any(form[1:-1] in text for form in _json_forms(value))


def template_losses(text: str, record: Record) -> list[str]:
    """What of the record (tools, calls, arguments, tool results) its rendered `text` lacks; empty: nothing."""
    rid, lost = record_id(record), []
    names = [n for t in record.get("tools") or [] if (n := t.get("function", {}).get("name"))]
    lost += [f"record {rid}: tool {n!r} is not in the render" for n in names if n not in text]
    need = Counter(names)  # a call's name is in the tool list too: count, so a dropped call is not hidden
    for i, msg in enumerate(record.get("messages") or []):
        where = f"record {rid}: messages[{i}]"
        if msg.get("role") == "assistant":
            for name, args in calls_of(msg):
                need[name] += 1
                if text.count(name) < need[name]:
                    lost.append(f"{where} call {name!r} is not in the render")
                for key, value in args.items() if isinstance(args, dict) else []:
                    if not _json_body_in(text, {key: value}):
                        shown = json.dumps(value)[:40]
                        lost.append(f"{where} argument {key}={shown} of call {name!r} is not in the render")
        elif msg.get("role") == "tool":
            result = (text_of(msg.get("content")) or "").strip()
            if result and result not in text and not _json_body_in(text, result):
                lost.append(f"{where} tool result for {msg.get('tool_call_id')!r} is not in the render")
    return lost


# ----------------------------------------------- Parsing: one parser per output format, shared with evaluation


@dataclass
class ParsedOutput:
    """A model output as vLLM's parser (0.33, the family's --tool-call-parser) returns it to a client.

    `errors`: why the client gets fewer usable calls than the model wrote (vLLM's hermes and llama3_json
    return NO calls when one fails); `strict_errors`: what the kit flags although the server lets it pass
    (an unclosed last <tool_call>, dropped text). A training target has neither (`strict_ok`); scoring uses
    `errors` (`ok`)."""

    calls: list[dict] = field(default_factory=list)  # [{"name": str, "arguments": dict}]: usable calls
    content: str = ""  # the text the server returns as content, stripped
    errors: list[str] = field(default_factory=list)
    strict_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def strict_ok(self) -> bool:
        return not self.errors and not self.strict_errors

    def pairs(self) -> list[tuple[str, Any]]:
        """[(name, arguments)]: the form `records.calls_of` gives for source turns."""
        return [(c["name"], c["arguments"]) for c in self.calls]


# End-of-turn markers a server may leave at the end of a generation; not part of the answer.
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "</s>", "<|endoftext|>")
_DECODER = json.JSONDecoder()


def _strip_end(text: str) -> str:
    text = text.rstrip()
    while marker := next((m for m in _END_MARKERS if text.endswith(m)), None):
        text = text[: -len(marker)].rstrip()
    return text


def _usable(name: Any, args: Any, where: str, out: ParsedOutput) -> None:
    """Add the call when a client can use it: a non-empty name and arguments that decode to an object.
    vLLM passes other calls on (name "", arguments a JSON string or list): they reach the client unusable."""
    if not isinstance(name, str) or not name:
        out.errors.append(f"{where}: call has no function name")
    elif isinstance(args, str):
        out.errors.append(f"{where}: arguments of {name!r} are a JSON string, not an object (encoded twice?)")
    elif not isinstance(args, dict):
        out.errors.append(f"{where}: arguments of {name!r} are not an object ({type(args).__name__})")
    else:
        out.calls.append({"name": name, "arguments": args})


def _json_problem(e: Exception, text: str, where: str) -> str:
    if not isinstance(e, json.JSONDecodeError):
        return f"{where}: JSON nested too deeply"
    if e.msg == "Extra data":
        return f"{where}: text after the JSON object"
    if e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string"):
        return f"{where}: truncated JSON (the output ends inside the call)"
    return f"{where}: malformed JSON: {e.msg} at char {e.pos}"


def _decode_at(text: str, pos: int, where: str, errors: list[str]) -> tuple[Any, int] | None:
    try:
        return _DECODER.raw_decode(text, pos)
    except (json.JSONDecodeError, RecursionError) as e:
        errors.append(_json_problem(e, text, where) if text[pos:].strip() else f"{where}: empty JSON")
        return None


# --- hermes: <tool_call>{"name": ..., "arguments": {...}}</tool_call> (vLLM's Hermes2ProToolParser) --------

HERMES_CLOSE = "</tool_call>"
_HERMES_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)  # vLLM's own regex


@dataclass(frozen=True)
class HermesBlock:
    body: str  # the text between the tags, as written
    closed: bool  # False: the last block runs to the end of the text without </tool_call>


def hermes_blocks(text: str) -> tuple[str, list[HermesBlock], list[str]]:
    """(text before the first <tool_call>, the blocks, the texts after each closed block), cut as vLLM's
    hermes parser cuts them: a block ends at the first </tool_call> after its opening tag (a <tool_call> in it
    belongs to its body), a last block without one runs to the end. Shared with formats/sharegpt.py."""
    found = list(_HERMES_BLOCK.finditer(text))
    if not found:
        return text, [], []
    ends = [m.start() for m in found[1:]] + [len(text)]
    after = [text[m.end() : end] for m, end in zip(found, ends, strict=True) if m[1] is not None]
    blocks = [HermesBlock(m[1], True) if m[1] is not None else HermesBlock(m[2], False) for m in found]
    return text[: found[0].start()], blocks, after


def _hermes_call(block: HermesBlock, where: str) -> tuple[Any, str | None]:
    """(the call object, None), or (None, why vLLM fails on it). vLLM reads obj["name"] and obj["arguments"]:
    a KeyError, a TypeError or a name that is not a string (its FunctionCall refuses it) fails the output."""
    try:
        obj = json.loads(block.body)  # as vLLM: the whole body, JSON whitespace allowed around it
    except (ValueError, RecursionError) as e:
        body = block.body.rstrip()
        if not block.closed and any(body.endswith(HERMES_CLOSE[:k]) for k in range(2, len(HERMES_CLOSE))):
            return None, f"{where}: the output ends inside </tool_call> (truncated)"
        return None, _json_problem(e, block.body, where) if body.strip() else f"{where}: empty call"
    if not isinstance(obj, dict):
        return None, f"{where}: a call must be a JSON object, got {type(obj).__name__}"
    if "name" not in obj:
        return None, f'{where}: call has no "name"'
    if not isinstance(obj["name"], str):
        return None, f"{where}: the call's name is not a string"
    if "arguments" not in obj:
        hint = ' (it gives "parameters"; the hermes format says "arguments")' if "parameters" in obj else ""
        return None, f'{where}: call {obj["name"]!r} has no "arguments"{hint}'
    return obj, None


def _parse_hermes(text: str, out: ParsedOutput) -> None:
    before, blocks, after = hermes_blocks(text)
    if not blocks:
        out.content = text.strip()
        if HERMES_CLOSE in text:
            out.strict_errors.append("</tool_call> without an opening <tool_call>")
        return
    found = []
    for n, block in enumerate(blocks, 1):
        obj, problem = _hermes_call(block, f"<tool_call> #{n}")
        if problem:
            out.errors.append(problem)
            continue
        found.append((f"<tool_call> #{n}", obj))
        if not block.closed:
            out.strict_errors.append(
                f"<tool_call> #{n}: unclosed <tool_call> tag (vLLM accepts a last one unclosed)"
            )
    if out.errors:
        out.errors.append(
            "vLLM's hermes parser returns no calls at all when one <tool_call> fails: the whole output becomes content"
        )
        out.content = text.strip()
        return
    for where, obj in found:
        _usable(obj["name"], obj["arguments"], where, out)
    out.content = before.strip()
    if dropped := "".join(after).strip():
        out.strict_errors.append(
            f"text after the first <tool_call> is dropped by the server: {dropped[:60]!r}"
        )


# --- llama3_json: {"name": ..., "parameters": {...}}, several joined by "; " (vLLM's Llama3JsonToolParser) --

LLAMA_TAG = "<|python_tag|>"


def _parse_llama3_json(text: str, out: ParsedOutput) -> None:
    # vLLM reads a JSON call at EVERY "{" that is not inside a call already read (one right after a call's
    # closing "}" counts as inside), and returns no calls at all when any of them fails.
    if LLAMA_TAG not in text and "{" not in text:
        out.content = text.strip()
        return
    found: list[tuple[str, dict, str]] = []
    spans: list[tuple[int, int]] = []
    end, adjacent, problem, i = -1, False, None, 0
    for m in re.finditer(r"\{", text):
        i = m.start()
        if i <= end:
            adjacent = adjacent or i == end
            continue
        where = f"call #{len(found) + 1}"
        try:
            obj, end = _DECODER.raw_decode(text, i)
        except (json.JSONDecodeError, RecursionError) as e:
            problem = _json_problem(e, text, where)
            break
        key = "arguments" if "arguments" in obj else "parameters"
        if "name" not in obj:
            problem = f'{where}: a JSON object without "name" at char {i}'
        elif key not in obj:
            problem = f'{where}: call {obj["name"]!r} has no "parameters"'
        elif not isinstance(obj["name"], str):
            problem = f"{where}: the call's name is not a string"
        if problem:
            break
        found.append((where, obj, key))
        spans.append((i, end))
    if problem:
        # Text that merely holds a "{" (an answer about sets, a JSON example) is content for the server as
        # for the kit; only a failed call attempt is an error.
        if found or '"name"' in text[i:] or LLAMA_TAG in text:
            if adjacent:
                problem += ' (vLLM skips a "{" right after a call\'s "}": separate calls with "; ")'
            out.errors += [
                problem,
                "vLLM's llama3_json parser returns no calls at all when one fails: the whole output becomes content",
            ]
        out.content = text.strip()
        return
    if not found:
        out.content = text.strip()
        out.errors.append(f"{LLAMA_TAG} without a JSON call after it")
        return
    for where, obj, key in found:
        if key == "arguments" and "parameters" in obj:
            out.strict_errors.append(
                f'{where}: gives both "parameters" and "arguments" (vLLM uses "arguments")'
            )
        _usable(obj["name"], obj[key], where, out)
    cuts = [0, *(p for span in spans for p in span), len(text)]
    beside = [text[cuts[k] : cuts[k + 1]].replace(LLAMA_TAG, "").strip() for k in range(0, len(cuts), 2)]
    if any(b.strip(";").strip() for b in beside):
        dropped = " ".join(b for b in beside if b)
        out.strict_errors.append(f"text beside the calls is dropped by the server: {dropped[:60]!r}")


# --- mistral: [TOOL_CALLS] [{"name": ..., "arguments": {...}, "id": ...}] (vLLM's MistralToolParser) -------

MISTRAL_TAG = "[TOOL_CALLS]"
_MISTRAL_LIST = re.compile(r"\[\{.*\}\]", re.DOTALL)


def _parse_mistral(text: str, out: ParsedOutput) -> None:
    # The v3 format the kit's mistral template writes, read as vLLM reads it for a tokenizer without the
    # [ARGS] token: the first JSON value after [TOOL_CALLS], entries that are not calls skipped.
    if MISTRAL_TAG not in text:
        out.content = text.strip()
        return
    before, *segments = text.split(MISTRAL_TAG)
    payloads = [s.strip() for s in segments if s.strip()]
    payload = payloads[0] if payloads else ""
    if "[ARGS]" in text and not payload.startswith(("[", "{")):
        # Only v11+ tokenizers have the [ARGS] token, and vLLM reads name[ARGS]{...} for them.
        _parse_mistral_v11(text, out)
        return
    if len(payloads) > 1:
        out.strict_errors.append(f"text after a second {MISTRAL_TAG} is dropped by the server")
    parsed, problem = _mistral_payload(payload, out)
    items = [parsed] if isinstance(parsed, dict) else parsed if isinstance(parsed, list) else []
    entries = []
    for j, item in enumerate(items):
        if isinstance(item, dict) and ("name" in item or "arguments" in item):
            entries.append((f"{MISTRAL_TAG}[{j}]", item))
        else:
            out.strict_errors.append(f"{MISTRAL_TAG}[{j}]: not a call object; vLLM skips it")
    if not entries:
        out.errors.append(problem or f"{MISTRAL_TAG}: no call in the JSON after it")
        out.content = payload  # what vLLM returns as content then: the text after [TOOL_CALLS]
        return
    for where, item in entries:
        name, args = item.get("name"), item.get("arguments")
        if args is None:
            out.strict_errors.append(f"{where}: call {name!r} has no arguments (vLLM sends {{}})")
            args = {}
        elif isinstance(args, str) and isinstance(decoded := _loads_or_none(args), dict):
            # vLLM passes a string on as it is, and the client decodes it
            out.strict_errors.append(
                f"{where}: arguments of {name!r} are a JSON string holding the object (encoded twice); "
                "vLLM passes the string on, so the client still reads the object"
            )
            args = decoded
        _usable(name if isinstance(name, str) else "", args, where, out)
    out.content = before.strip()


def _loads_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _mistral_payload(payload: str, out: ParsedOutput) -> tuple[Any, str | None]:
    """(the first JSON value after [TOOL_CALLS], None) or (None, why there is none)."""
    try:
        parsed, stop = _DECODER.raw_decode(payload)
    except json.JSONDecodeError as e:
        empty = f"{MISTRAL_TAG}: nothing after it (truncated call)"
        problem = _json_problem(e, payload, MISTRAL_TAG) if payload else empty
        found = _MISTRAL_LIST.search(payload)  # vLLM's fallback: the span from the first [{ to the last }]
        parsed = _loads_or_none(found.group(0)) if found else None
        if parsed is None:
            return None, problem
        out.strict_errors.append(f"{problem}; vLLM reads the [{{...}}] inside it")
        return parsed, None
    except RecursionError as e:  # vLLM fails the request here (an HTTP 500): no calls either way
        return None, _json_problem(e, payload, MISTRAL_TAG)
    if payload[stop:].strip():
        out.strict_errors.append(
            f"{MISTRAL_TAG}: text after the call list is dropped: {payload[stop:][:60]!r}"
        )
    return parsed, None


def _parse_mistral_v11(text: str, out: ParsedOutput) -> None:
    # v11+: [TOOL_CALLS]name[ARGS]{...} per call (older v11: name{...}), read as vLLM's engine reads it:
    # the name runs to the first [ARGS] or "{" (a [TOOL_CALLS] before that is part of the name), the
    # arguments run to the next [TOOL_CALLS] (even one inside a string) and are the first JSON value there
    # (text after it is dropped); no arguments at all are {}. vLLM also coerces argument types by the
    # request's tool schemas for this format; the kit, which parses without the schemas, does not.
    first = text.find(MISTRAL_TAG)
    out.content = _drop_specials(text[:first]).strip()
    pos, k, nxt = first + len(MISTRAL_TAG), 0, 0
    while nxt >= 0:
        cuts = [i for i in (text.find("[ARGS]", pos), text.find("{", pos)) if i >= 0]
        nxt = -1
        if not cuts:
            name_raw, args_raw = text[pos:], ""
        else:
            name_raw = text[pos : min(cuts)]
            start = min(cuts) + (len("[ARGS]") if text.startswith("[ARGS]", min(cuts)) else 0)
            nxt = text.find(MISTRAL_TAG, start)
            args_raw = text[start : nxt if nxt >= 0 else len(text)]
        name_raw, args_raw = _drop_specials(name_raw), _drop_specials(args_raw)
        if name_raw or args_raw:  # vLLM makes no call of an empty [TOOL_CALLS]
            k += 1
            _mistral_v11_call(name_raw.strip(), args_raw.strip(), f"{MISTRAL_TAG} #{k}", out)
        pos = nxt + len(MISTRAL_TAG)


def _drop_specials(text: str) -> str:
    # vLLM's engine finds [TOOL_CALLS], [ARGS] and "{" first, then drops the tokenizer's special tokens
    # (Mistral's <s>, </s>, <unk>) from the text it keeps.
    for special in ("<s>", "</s>", "<unk>"):
        text = text.replace(special, "")
    return text


def _mistral_v11_call(name: str, raw: str, where: str, out: ParsedOutput) -> None:
    if not raw:
        out.strict_errors.append(f"{where}: call {name!r} has no arguments (vLLM sends {{}})")
        _usable(name, {}, where, out)
        return
    got = _decode_at(raw, 0, where, out.errors)
    if got is None:
        return
    args, stop = got
    if raw[stop:].strip():
        out.strict_errors.append(f"{where}: text after the arguments of {name!r} is dropped by the server")
    _usable(name, args, where, out)


# --- openai: a chat completion, a message or its tool_calls, arguments as a JSON string -----------------


def _parse_openai(payload: Any, out: ParsedOutput) -> None:
    if isinstance(payload, str):
        try:
            payload = json.loads(payload) if payload.strip() else {"content": ""}
        except json.JSONDecodeError as e:
            out.errors.append(f"not JSON: {e.msg}")
            out.content = payload.strip()
            return
    if isinstance(payload, dict) and "choices" in payload:  # a whole chat completion
        try:
            payload = payload["choices"][0]["message"]
        except (LookupError, TypeError):
            out.errors.append("chat completion without choices[0].message")
            return
    if isinstance(payload, dict):
        content = payload.get("content")
        out.content = ("" if content is None else str(content)).strip()
        calls = payload.get("tool_calls") or []
    elif isinstance(payload, list):
        calls = payload
    else:
        out.errors.append(f"expected a message object or a list of tool calls, got {type(payload).__name__}")
        return
    if not isinstance(calls, list):
        out.errors.append("tool_calls is not a list")
        return
    for j, call in enumerate(calls):
        where = f"tool_calls[{j}]"
        fn = call.get("function", call) if isinstance(call, dict) else call
        if not isinstance(fn, dict):
            out.errors.append(f"{where}: not an object")
            continue
        args = fn.get("arguments")
        if isinstance(args, str):  # the OpenAI wire form: a JSON string holding the object
            raw = args.strip()
            got = _decode_at(raw, 0, where, out.errors) if raw else ({}, 0)
            if got is None:
                continue
            args, stop = got
            if raw[stop:].strip():
                out.errors.append(f"{where}: text after the arguments JSON")
                continue
        _usable(fn.get("name"), args, where, out)


_PARSERS = {"hermes": _parse_hermes, "llama3_json": _parse_llama3_json, "mistral": _parse_mistral}


def parse_tool_calls(text: Any, fmt: str) -> ParsedOutput:
    """Tool calls and content in a model's output written in `fmt` ("hermes", "llama3_json", "mistral",
    "openai"), as vLLM's parser for that format returns them. Never raises on model output: `calls` are the
    usable calls a client of the server receives, `errors` why it receives fewer than the model wrote, and
    `strict_errors` what the kit flags although the server accepts it."""
    fmt = FAMILIES[fmt].fmt if fmt in FAMILIES else fmt  # a family name stands for its format
    if fmt not in FORMATS:
        raise KitError(f"unknown tool-call format {fmt!r}; known: {', '.join(FORMATS)}")
    out = ParsedOutput()
    try:
        if fmt == "openai":
            _parse_openai(text, out)
        elif isinstance(text, str):
            _PARSERS[fmt](_strip_end(text), out)
        else:
            out.errors.append(f"expected text, got {type(text).__name__}")
    except Exception as e:  # a parser bug must not crash an evaluation run: report it as a problem
        out.calls = []
        out.errors.append(f"parser error: {type(e).__name__}: {e}")
    return out


# ----------------------- Round trip: render -> cut each assistant turn -> parse -> compare with the source


def turn_texts(
    tokenizer: Any, record: Record, family: str | Family | None = None, chat_template: str | None = None
) -> tuple[str, list[tuple[int, int, int]]]:
    """(render, [(message index, start, end)]): each assistant turn's {% generation %} span."""
    fam = detect_family(tokenizer, family)
    text, spans = render_with_spans(tokenizer, record, fam, chat_template=chat_template)
    turns = [i for i, m in enumerate(record.get("messages") or []) if m.get("role") == "assistant"]
    if len(spans) != len(turns):
        raise KitError(
            f"record {record_id(record)}: the {fam.name} template marks {len(spans)} {{% generation %}} blocks for "
            f"{len(turns)} assistant turns; use a training template that wraps each assistant turn"
        )
    return text, [(i, s, e) for i, (s, e) in zip(turns, spans, strict=True)]


def verify_roundtrip(
    tokenizer: Any, record: Record, family: str | Family | None = None, chat_template: str | None = None
) -> int:
    """Parse each rendered assistant turn as the family's vLLM parser would, compare it with the source turn
    and return the number of turns checked. Raises KitError naming the record and turn when a client of the
    server would get other calls or content, or when the kit is stricter than the server (an unclosed tag,
    dropped text): a training target must be clean."""
    fam = detect_family(tokenizer, family)
    text, turns = turn_texts(tokenizer, record, fam, chat_template)
    for i, s, e in turns:
        piece, msg = text[s:e], record["messages"][i]
        where = f"record {record_id(record)}: messages[{i}]"
        if fam.end_token not in piece:
            raise KitError(
                f"{where} renders without its end token {fam.end_token!r}: the model would never learn to stop"
            )
        parsed = parse_tool_calls(piece[: piece.find(fam.end_token)], fam.fmt)
        where += f" ({fam.name}, parser {fam.fmt})"
        if parsed.errors:
            raise KitError(
                f"{where}: vLLM's {fam.vllm_parser} parser would not return these calls: {'; '.join(parsed.errors)}"
            )
        if parsed.strict_errors:
            raise KitError(
                f"{where}: the rendered turn is not a clean target (vLLM accepts it, the kit does not): "
                + "; ".join(parsed.strict_errors)
            )
        if parsed.pairs() != calls_of(msg):
            raise KitError(f"{where}: rendered calls {parsed.pairs()} differ from the source {calls_of(msg)}")
        want = (text_of(msg.get("content")) or "").strip()
        if parsed.content != want:
            raise KitError(
                f"{where}: rendered content {parsed.content[:60]!r} differs from the source {want[:60]!r}"
            )
    return len(turns)
