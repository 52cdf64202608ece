"""Chat-template families, render checks and ONE parser per tool-call output format.

    from toolcall_kit.templates import get_family, detect_family, render, check_template, parse_tool_calls

A family ties together what must agree for a tool-calling fine-tune to work once served with vLLM:

    family    vLLM --tool-call-parser  output format  training template (has {% generation %} markers)
    chatml    hermes                   hermes         toolcall_kit/chat_templates/chatml_tools.jinja
    qwen2_5   hermes                   hermes         trl/chat_templates/qwen2_5_training.jinja
    llama3_1  llama3_json              llama3_json    toolcall_kit/chat_templates/llama3_1_tools_training.jinja
    mistral   mistral                  mistral        toolcall_kit/chat_templates/mistral_tools_training.jinja

("hermes" is an alias of qwen2_5.) TRL's llama3_training.jinja renders neither tools nor calls and TRL
ships no Mistral template, hence the kit's own for those two, written after Meta's and Mistral's.

- `render` goes through `tokenizer.apply_chat_template(messages, tools=...)` with call arguments as
  objects, and refuses a render in which they were JSON-encoded twice.
- `check_template` proves every tool, call, argument and tool result of every record reaches the text.
- `adapt_record` applies a family's quirks: Llama 3.1's one call per assistant turn, Mistral's 9-character
  call ids.
- `parse_tool_calls(text, fmt)` is the one parser per format, shared with evaluation; it never raises.
- `verify_roundtrip` parses what the template rendered for each assistant turn and compares it with the
  source calls: the training target is what the server's parser will read.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .errors import KitError
from .records import Record, calls_of, text_of

_KIT_TEMPLATES = Path(__file__).parent / "chat_templates"


# ---------------------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    vllm_parser: str  # vLLM `--tool-call-parser`
    fmt: str  # `parse_tool_calls` format of what the assistant writes
    template_source: str  # "kit:<file>" or "trl:<file>"
    end_token: str  # literal that closes an assistant turn (trained: the model must learn to stop)
    tool_role: str  # role the rendered prompt gives tool results
    one_call_per_turn: bool = False
    call_id_length: int | None = None  # Mistral: exactly 9 letters and digits
    # Markers for Unsloth's train_on_responses_only, as its docs give them for this family.
    instruction_part: str = ""
    response_part: str = ""
    # Control tokens the template writes; the model's vocabulary must hold each as one token.
    control_tokens: tuple[str, ...] = field(default_factory=tuple)

    def template(self) -> str:
        """The training chat template text (with {% generation %} markers)."""
        return _template_text(self.template_source)


FAMILIES: dict[str, Family] = {
    "chatml": Family(
        "chatml",
        "hermes",
        "hermes",
        "kit:chatml_tools.jinja",
        "<|im_end|>",
        "user",
        instruction_part="<|im_start|>user\n",
        response_part="<|im_start|>assistant\n",
        control_tokens=("<|im_start|>", "<|im_end|>"),
    ),
    "qwen2_5": Family(
        "qwen2_5",
        "hermes",
        "hermes",
        "trl:qwen2_5_training.jinja",
        "<|im_end|>",
        "user",
        instruction_part="<|im_start|>user\n",
        response_part="<|im_start|>assistant\n",
        control_tokens=("<|im_start|>", "<|im_end|>"),
    ),
    "llama3_1": Family(
        "llama3_1",
        "llama3_json",
        "llama3_json",
        "kit:llama3_1_tools_training.jinja",
        "<|eot_id|>",
        "ipython",
        one_call_per_turn=True,
        instruction_part="<|start_header_id|>user<|end_header_id|>\n\n",
        response_part="<|start_header_id|>assistant<|end_header_id|>\n\n",
        control_tokens=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    "mistral": Family(
        "mistral",
        "mistral",
        "mistral",
        "kit:mistral_tools_training.jinja",
        "</s>",
        "tool",
        call_id_length=9,
        instruction_part="[INST]",
        response_part="[/INST]",
        control_tokens=(
            "[INST]",
            "[/INST]",
            "[TOOL_CALLS]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
        ),
    ),
}
ALIASES = {
    "hermes": "qwen2_5",
    "qwen2.5": "qwen2_5",
    "qwen": "qwen2_5",
    "llama3.1": "llama3_1",
    "llama3": "llama3_1",
    "llama": "llama3_1",
    "smollm2": "chatml",
    "smollm": "chatml",
}
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
    """The family of a tokenizer's model, from its chat template text or its config's model_type.

    `family` (a name, "auto" or None) overrides detection: pass it for models whose template is unusual.
    """
    if family is not None and family != "auto":
        return get_family(family)
    text = _tokenizer_template(tokenizer)
    if "<|start_header_id|>" in text or "<|eot_id|>" in text:
        return FAMILIES["llama3_1"]
    if "[INST]" in text or "[TOOL_CALLS]" in text:
        return FAMILIES["mistral"]
    if "<|im_start|>" in text:
        return FAMILIES["qwen2_5"] if "You are Qwen" in text else FAMILIES["chatml"]
    model_type = _model_type(tokenizer)
    by_type = {"llama": "llama3_1", "qwen2": "qwen2_5", "mistral": "mistral"}
    if model_type in by_type:
        return FAMILIES[by_type[model_type]]
    raise KitError(
        f"cannot tell the chat-template family of {getattr(tokenizer, 'name_or_path', 'this tokenizer')!r} "
        f"(model_type {model_type!r}); pass --family with one of {', '.join(FAMILIES)}"
    )


def _tokenizer_template(tokenizer: Any) -> str:
    tmpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tmpl, dict):  # several named templates: the default one (or "tool_use") decides
        tmpl = "\n".join(str(v) for v in tmpl.values())
    return tmpl or ""


def _model_type(tokenizer: Any) -> str | None:
    folder = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------
# Family quirks
# ---------------------------------------------------------------------------------------------------------

_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def mistral_call_id(call_id: str, salt: int = 0) -> str:
    """A deterministic 9-character alphanumeric id for an OpenAI-style id (same input, same output)."""
    n = int.from_bytes(hashlib.sha256(f"{salt}:{call_id}".encode()).digest()[:8], "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, 62)
        out.append(_ALNUM[r])
    return "".join(out)


def _is_mistral_id(call_id: Any) -> bool:
    return isinstance(call_id, str) and len(call_id) == 9 and call_id.isascii() and call_id.isalnum()


def adapt_record(
    record: Record, family: str | Family, parallel: str = "error", content_with_calls: str = "error"
) -> list[Record]:
    """The record rewritten for a family's quirks.

    - llama3_1: one call per assistant turn. `parallel="error"` refuses a turn with several calls (naming
      the record); `parallel="split"` makes consecutive assistant turns of one call each, each followed by
      its own result when the record has results. Llama 3.1 writes no text beside a call (Meta's
      template drops it and vLLM's llama3_json parser returns no content with calls):
      `content_with_calls="error"` refuses such a turn, `"drop"` drops the text.
    - mistral: call ids become exactly 9 letters and digits, deterministically, and the results'
      `tool_call_id` follow; ids already valid are kept.
    Returns a list (one record today) so that a future quirk may split an example in several. The input
    is never changed: a record that needs no change is returned as it is, others as copies.
    """
    fam = get_family(family)
    if parallel not in ("error", "split"):
        raise KitError(f"parallel must be 'error' or 'split', not {parallel!r}")
    if content_with_calls not in ("error", "drop"):
        raise KitError(f"content_with_calls must be 'error' or 'drop', not {content_with_calls!r}")
    out = record
    # Copy only what changes: 60k records mostly pass through untouched (a deepcopy each cost seconds).
    if fam.one_call_per_turn and _needs_one_call_fix(record):
        out = _one_call_per_turn(copy.deepcopy(out), fam, parallel, content_with_calls)
    if fam.call_id_length and _needs_id_remap(out):
        out = _remap_call_ids(copy.deepcopy(out) if out is record else out)
    return [out]


def _needs_one_call_fix(record: Record) -> bool:
    for m in record.get("messages") or []:
        calls = m.get("tool_calls") or [] if m.get("role") == "assistant" else []
        if len(calls) > 1 or (calls and (text_of(m.get("content")) or "").strip()):
            return True
    return False


def _needs_id_remap(record: Record) -> bool:
    return any(
        not _is_mistral_id(c.get("id")) and c.get("id") is not None
        for m in record.get("messages") or []
        for c in m.get("tool_calls") or []
    )


def _rid(record: Record) -> str:
    return str(record.get("id") or "<no id>")


def _one_call_per_turn(record: Record, fam: Family, parallel: str, content_with_calls: str) -> Record:
    msgs = record.get("messages") or []
    new: list[dict] = []
    i = 0
    while i < len(msgs):
        msg = msgs[i]
        calls = msg.get("tool_calls") or [] if msg.get("role") == "assistant" else []
        if calls and (text_of(msg.get("content")) or "").strip():
            if content_with_calls == "error":
                raise KitError(
                    f"record {_rid(record)}: messages[{i}] has text beside its tool call; {fam.name} writes "
                    "only the call (vLLM's llama3_json parser returns no content with calls): "
                    "drop the text (content_with_calls='drop') or remove it from the data"
                )
            msg = {**msg, "content": None}
        if len(calls) <= 1:
            new.append(msg)
            i += 1
            continue
        if parallel == "error":
            raise KitError(
                f"record {_rid(record)}: messages[{i}] makes {len(calls)} parallel calls and {fam.name} allows "
                "one call per assistant turn; split them (parallel='split' / --parallel split) or drop the record"
            )
        # The results answering this turn follow it; each one goes right after its own call.
        j = i + 1
        results: dict[str, dict] = {}
        order: list[dict] = []
        while j < len(msgs) and msgs[j].get("role") == "tool":
            results.setdefault(str(msgs[j].get("tool_call_id")), msgs[j])
            order.append(msgs[j])
            j += 1
        used = set()
        for call in calls:
            turn = {k: v for k, v in msg.items() if k != "tool_calls"}
            turn["content"] = None
            turn["tool_calls"] = [call]
            new.append(turn)
            res = results.get(str(call.get("id")))
            if res is not None and id(res) not in used:
                new.append(res)
                used.add(id(res))
        new.extend(r for r in order if id(r) not in used)  # results matching no call keep their place
        i = j
    record["messages"] = new
    return record


def _remap_call_ids(record: Record) -> Record:
    mapping: dict[str, str] = {}
    taken = {
        c["id"]
        for m in record.get("messages") or []
        for c in m.get("tool_calls") or []
        if _is_mistral_id(c.get("id"))
    }
    for msg in record.get("messages") or []:
        for call in msg.get("tool_calls") or []:
            old = call.get("id")
            if _is_mistral_id(old) or old is None:
                continue
            if old not in mapping:
                salt = 0
                new = mistral_call_id(str(old))
                while new in taken:  # astronomically rare; keeps ids unique within the record
                    salt += 1
                    new = mistral_call_id(str(old), salt)
                mapping[old] = new
                taken.add(new)
            call["id"] = mapping[old]
    for msg in record.get("messages") or []:
        if msg.get("role") == "tool" and msg.get("tool_call_id") in mapping:
            msg["tool_call_id"] = mapping[msg["tool_call_id"]]
    return record


def adapt_records(
    records: list[Record], family: str | Family, parallel: str = "error", content_with_calls: str = "error"
) -> list[Record]:
    """`adapt_record` over a list, flattened."""
    out: list[Record] = []
    for r in records:
        out.extend(adapt_record(r, family, parallel=parallel, content_with_calls=content_with_calls))
    return out


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------


def _template_for(tokenizer: Any, fam: Family, chat_template: str | None) -> str:
    if chat_template == "model":  # the tokenizer's own template, e.g. to check it before training
        tmpl = getattr(tokenizer, "chat_template", None)
        if not tmpl:
            raise KitError(f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} has no chat template")
        return tmpl if isinstance(tmpl, str) else tokenizer.get_chat_template(None, None)
    return chat_template if chat_template is not None else fam.template()


def _check_decoded(record: Record) -> None:
    for i, msg in enumerate(record.get("messages") or []):
        for call in msg.get("tool_calls") or []:
            args = (call.get("function") or {}).get("arguments")
            if isinstance(args, str):
                raise KitError(
                    f"record {_rid(record)}: messages[{i}] call {call.get('function', {}).get('name')!r} has "
                    "arguments as a JSON string; records keep them decoded (read data through toolcall_kit "
                    "formats) or every template writes them encoded twice"
                )


def _messages(record: Record) -> list[dict]:
    # `weight` is the kit's, not the template's; content lists become strings every template can print.
    out = []
    for m in record.get("messages") or []:
        m2 = {k: v for k, v in m.items() if k != "weight"}
        if isinstance(m2.get("content"), list):
            m2["content"] = text_of(m2["content"])
        out.append(m2)
    return out


def render_with_spans(
    tokenizer: Any,
    record: Record,
    family: str | Family | None = None,
    chat_template: str | None = None,
    add_generation_prompt: bool = False,
) -> tuple[str, list[tuple[int, int]]]:
    """(rendered text, [(start, end) character span of each {% generation %} block, in order])."""
    from transformers.utils.chat_template_utils import render_jinja_template

    fam = detect_family(tokenizer, family)
    _check_decoded(record)
    tmpl = _template_for(tokenizer, fam, chat_template)
    try:
        texts, spans = render_jinja_template(
            conversations=[_messages(record)],
            tools=record.get("tools") or None,
            chat_template=tmpl,
            return_assistant_tokens_mask=True,
            add_generation_prompt=add_generation_prompt,
            **tokenizer.special_tokens_map,
        )
    except Exception as e:  # jinja's raise_exception and type errors: name the record
        raise KitError(f"record {_rid(record)}: the {fam.name} chat template failed: {e}") from e
    text = texts[0]
    _refuse_double_encoding(record, text)
    return text, [tuple(s) for s in spans[0]]


def render(
    tokenizer: Any,
    record: Record,
    family: str | Family | None = None,
    add_generation_prompt: bool = False,
    chat_template: str | None = None,
) -> str:
    """The record rendered by `tokenizer.apply_chat_template(messages, tools=...)`.

    `chat_template`: None = the family's training template, "model" = the tokenizer's own, or a template
    text. Raises KitError for arguments kept as JSON strings or a render that encodes them twice.
    """
    fam = detect_family(tokenizer, family)
    _check_decoded(record)
    tmpl = _template_for(tokenizer, fam, chat_template)
    try:
        text = tokenizer.apply_chat_template(
            _messages(record),
            tools=record.get("tools") or None,
            chat_template=tmpl,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    except Exception as e:
        raise KitError(f"record {_rid(record)}: the {fam.name} chat template failed: {e}") from e
    _refuse_double_encoding(record, text)
    return text


def _encodings(value: Any) -> list[str]:
    # tojson in transformers is json.dumps(ensure_ascii=False), default separators; accept compact too.
    return list(
        dict.fromkeys(
            [
                json.dumps(value, ensure_ascii=False),
                json.dumps(value, ensure_ascii=False, separators=(",", ":")),
                json.dumps(value),
                json.dumps(value, separators=(",", ":")),
            ]
        )
    )


def _refuse_double_encoding(record: Record, text: str) -> None:
    for i, msg in enumerate(record.get("messages") or []):
        for call in msg.get("tool_calls") or []:
            args = (call.get("function") or {}).get("arguments")
            if not isinstance(args, dict) or not args:
                continue
            for enc in _encodings(args):
                twice = json.dumps(enc, ensure_ascii=False)[1:-1]  # the object as a JSON string's body
                if twice != enc and twice in text:
                    raise KitError(
                        f"record {_rid(record)}: messages[{i}] arguments of {call['function'].get('name')!r} are "
                        f"JSON-encoded twice by the chat template ({twice[:60]}...): the model would learn "
                        "to write a string where the server's parser expects an object; fix the template "
                        "(`arguments | tojson` once, on the object)"
                    )


def _present(text: str, value: Any) -> bool:
    return any(e in text for e in _encodings(value))


def _arg_pairs(args: dict) -> list[tuple[str, list[str]]]:
    """(key, [accepted renderings of '"key": value']) for each top-level argument."""
    out = []
    for k, v in args.items():
        forms = []
        for sep in (": ", ":"):
            for ascii_ in (False, True):
                forms.append(
                    json.dumps(k, ensure_ascii=ascii_)
                    + sep
                    + json.dumps(
                        v, ensure_ascii=ascii_, separators=(", ", ": ") if sep == ": " else (",", ":")
                    )
                )
        out.append((k, list(dict.fromkeys(forms))))
    return out


def _result_present(text: str, content: str) -> bool:
    c = content.strip()
    if not c:
        return True
    return c in text or json.dumps(c, ensure_ascii=False)[1:-1] in text or json.dumps(c)[1:-1] in text


def template_losses(text: str, record: Record) -> list[str]:
    """What of the record is missing from its rendered `text` (empty when all of it is there)."""
    lost = []
    rid = _rid(record)
    tools = [t.get("function", {}).get("name") for t in record.get("tools") or []]
    for name in tools:
        if name and name not in text:
            lost.append(f"record {rid}: tool {name!r} is not in the render")
    # A call's name also appears in the tool list: count occurrences so a dropped call is not hidden.
    need: dict[str, int] = {}
    for name in tools:
        if name:
            need[name] = need.get(name, 0) + 1
    for i, msg in enumerate(record.get("messages") or []):
        if msg.get("role") == "assistant":
            for name, args in calls_of(msg):
                need[name] = need.get(name, 0) + 1
                if text.count(name) < need[name]:
                    lost.append(f"record {rid}: messages[{i}] call {name!r} is not in the render")
                if isinstance(args, dict):
                    for key, forms in _arg_pairs(args):
                        if not any(f in text for f in forms):
                            lost.append(
                                f"record {rid}: messages[{i}] argument {key}={json.dumps(args[key])[:40]} of "
                                f"call {name!r} is not in the render"
                            )
        elif msg.get("role") == "tool":
            content = text_of(msg.get("content")) or ""
            if not _result_present(text, content):
                lost.append(
                    f"record {rid}: messages[{i}] tool result for {msg.get('tool_call_id')!r} is not in the render"
                )
    return lost


def check_template(
    tokenizer: Any,
    records: list[Record],
    family: str | Family | None = None,
    chat_template: str | None = None,
) -> dict:
    """Render every record and prove that each tool, call, argument and tool result reached the text.

    Raises KitError naming what was lost (tool / call / argument / result, and the record id) when the
    template silently drops anything, or when it encodes arguments twice. Returns counts of what was
    checked. Records must already be adapted to the family (`adapt_records`).
    """
    fam = detect_family(tokenizer, family)
    lost: list[str] = []
    counts = {"records": 0, "tools": 0, "calls": 0, "results": 0}
    for rec in records:
        text = render(tokenizer, rec, fam, chat_template=chat_template)
        lost.extend(template_losses(text, rec))
        counts["records"] += 1
        counts["tools"] += len(rec.get("tools") or [])
        counts["calls"] += sum(len(m.get("tool_calls") or []) for m in rec.get("messages") or [])
        counts["results"] += sum(1 for m in rec.get("messages") or [] if m.get("role") == "tool")
    if lost:
        which = (
            "the tokenizer's own template"
            if chat_template == "model"
            else ("the given template" if chat_template else f"the {fam.name} training template")
        )
        more = f" (and {len(lost) - 5} more)" if len(lost) > 5 else ""
        raise KitError(f"{which} silently drops data: " + "; ".join(lost[:5]) + more)
    return counts


# ---------------------------------------------------------------------------------------------------------
# Parsing: one parser per output format, shared with evaluation. Never raises on model output.
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ParsedOutput:
    calls: list[dict] = field(default_factory=list)  # [{"name": str, "arguments": dict}]
    content: str = ""  # text outside the calls, stripped
    errors: list[str] = field(default_factory=list)  # malformed JSON, unclosed tag, truncated call, ...

    @property
    def ok(self) -> bool:
        return not self.errors

    def pairs(self) -> list[tuple[str, Any]]:
        """[(name, arguments)]: the form `records.calls_of` gives for source turns."""
        return [(c["name"], c["arguments"]) for c in self.calls]


# End-of-turn markers a server may leave at the end of a generation; not part of the answer.
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "</s>", "<|endoftext|>")
_DECODER = json.JSONDecoder()


def _strip_end(text: str) -> str:
    t = text.rstrip()
    changed = True
    while changed:
        changed = False
        for m in _END_MARKERS:
            if t.endswith(m):
                t = t[: -len(m)].rstrip()
                changed = True
    return t


def _call_from(
    obj: Any, where: str, errors: list[str], keys: tuple[str, ...] = ("arguments",)
) -> dict | None:
    if not isinstance(obj, dict):
        errors.append(f"{where}: a call must be a JSON object, got {type(obj).__name__}")
        return None
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        errors.append(f"{where}: call has no function name")
        return None
    present = [k for k in keys if k in obj]
    if len(present) > 1:
        errors.append(f"{where}: call {name!r} gives both {' and '.join(present)}")
        return None
    if not present:
        errors.append(f"{where}: call {name!r} has no {' / '.join(keys)}")
        return None
    args = obj[present[0]]
    if isinstance(args, str):
        errors.append(f"{where}: arguments of {name!r} are a JSON string, not an object (encoded twice?)")
        return None
    if not isinstance(args, dict):
        errors.append(f"{where}: arguments of {name!r} are not an object ({type(args).__name__})")
        return None
    return {"name": name, "arguments": args}


def _decode_at(text: str, pos: int, where: str, errors: list[str]) -> tuple[Any, int] | None:
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as e:
        rest = text[pos:].strip()
        if e.pos >= len(text.rstrip()) or not rest:
            errors.append(f"{where}: truncated JSON (the output ends inside the call)")
        else:
            errors.append(f"{where}: malformed JSON: {e.msg} at char {e.pos - pos}")
        return None
    except RecursionError:
        errors.append(f"{where}: JSON nested too deeply")
        return None


def _parse_hermes(text: str, out: ParsedOutput) -> None:
    open_tag, close_tag = "<tool_call>", "</tool_call>"
    pieces: list[str] = []
    pos, n = 0, 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            pieces.append(text[pos:])
            break
        pieces.append(text[pos:start])
        n += 1
        where = f"<tool_call> #{n}"
        body_start = start + len(open_tag)
        end = text.find(close_tag, body_start)
        nxt = text.find(open_tag, body_start)
        if end < 0 or (0 <= nxt < end):
            stop = nxt if nxt >= 0 else len(text)
            out.errors.append(f"{where}: unclosed <tool_call> tag")
            body, pos = text[body_start:stop], stop
        else:
            body, pos = text[body_start:end], end + len(close_tag)
        body = body.strip()
        if not body:
            out.errors.append(f"{where}: empty call")
            continue
        got = _decode_at(body, 0, where, out.errors)
        if got is None:
            continue
        obj, stop_at = got
        if body[stop_at:].strip():
            out.errors.append(f"{where}: text after the JSON object inside the tag")
        call = _call_from(obj, where, out.errors)
        if call:
            out.calls.append(call)
    rest = "".join(pieces)
    if close_tag in rest:
        out.errors.append("</tool_call> without an opening <tool_call>")
        rest = rest.replace(close_tag, "")
    out.content = rest.strip()


_LLAMA_START = re.compile(r'\{\s*"name"\s*:')


def _parse_llama3_json(text: str, out: ParsedOutput) -> None:
    tag = "<|python_tag|>"
    tagged = tag in text
    body = text.replace(tag, "")
    stripped = body.lstrip()
    if stripped.startswith("{"):
        start = len(body) - len(stripped)
    else:
        m = _LLAMA_START.search(body)
        if not m:
            out.content = body.strip()
            if tagged:
                out.errors.append("<|python_tag|> without a JSON call after it")
            return
        start = m.start()
    content = [body[:start]]
    pos, n = start, 0
    while True:
        n += 1
        where = f"call #{n}"
        got = _decode_at(body, pos, where, out.errors)
        if got is None:
            break
        obj, pos = got
        call = _call_from(obj, where, out.errors, keys=("parameters", "arguments"))
        if call:
            out.calls.append(call)
        m = re.match(r"\s*;\s*", body[pos:])
        if m and body[pos + m.end() :].lstrip().startswith("{"):
            pos += m.end()
            pos += len(body[pos:]) - len(body[pos:].lstrip())
            continue
        content.append(body[pos:].lstrip(" ;"))
        break
    out.content = "".join(content).strip()


_MISTRAL_NAME = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*")


def _parse_mistral(text: str, out: ParsedOutput) -> None:
    tag = "[TOOL_CALLS]"
    if tag not in text:
        out.content = text.strip()
        return
    parts = text.split(tag)
    out.content = parts[0].strip()
    for k, seg in enumerate(parts[1:], 1):
        where = f"[TOOL_CALLS] #{k}"
        s = seg.strip()
        if not s:
            out.errors.append(f"{where}: nothing after [TOOL_CALLS] (truncated call)")
            continue
        if s.startswith("["):  # v3: a JSON list of {"name", "arguments", "id"}
            got = _decode_at(s, 0, where, out.errors)
            if got is None:
                continue
            arr, stop = got
            if s[stop:].strip():
                out.errors.append(f"{where}: text after the call list")
                out.content = (out.content + " " + s[stop:].strip()).strip()
            if not isinstance(arr, list):
                out.errors.append(f"{where}: expected a list of calls")
                continue
            for j, obj in enumerate(arr):
                call = _call_from(obj, f"{where}[{j}]", out.errors)
                if call:
                    out.calls.append(call)
            continue
        # v11+: name[ARGS]{...} (older v11 writes name{...}); [CALL_ID]id may sit between them.
        m = _MISTRAL_NAME.match(s)
        if not m or not m.group(1):
            out.errors.append(f"{where}: expected a JSON list or a function name after [TOOL_CALLS]")
            continue
        name, pos = m.group(1), m.end()
        if s.startswith("[CALL_ID]", pos):
            m2 = re.match(r"\[CALL_ID\]\s*[A-Za-z0-9]*\s*", s[pos:])
            pos += m2.end() if m2 else len("[CALL_ID]")
        if s.startswith("[ARGS]", pos):
            pos += len("[ARGS]")
        while pos < len(s) and s[pos].isspace():
            pos += 1
        if pos >= len(s):
            out.errors.append(f"{where}: call {name!r} has no arguments (truncated call)")
            continue
        got = _decode_at(s, pos, where, out.errors)
        if got is None:
            continue
        args, stop = got
        if s[stop:].strip():
            out.errors.append(f"{where}: text after the arguments of {name!r}")
        call = _call_from({"name": name, "arguments": args}, where, out.errors)
        if call:
            out.calls.append(call)


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
        out.content = (
            text_of(payload.get("content"))
            if isinstance(payload.get("content"), (str, type(None)))
            else str(payload.get("content"))
        ) or ""
        out.content = out.content.strip()
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
            if not args.strip():
                args = {}
            else:
                raw = args.strip()
                got = _decode_at(raw, 0, where, out.errors)
                if got is None:
                    continue
                args, stop = got
                if raw[stop:].strip():
                    out.errors.append(f"{where}: text after the arguments JSON")
                    continue
        parsed = _call_from({"name": fn.get("name"), "arguments": args}, where, out.errors)
        if parsed:
            out.calls.append(parsed)


_PARSERS = {
    "hermes": _parse_hermes,
    "llama3_json": _parse_llama3_json,
    "mistral": _parse_mistral,
    "openai": _parse_openai,
}


def parse_tool_calls(text: Any, fmt: str) -> ParsedOutput:
    """Tool calls and content in a model's output written in `fmt` ("hermes", "llama3_json", "mistral",
    "openai"). Never raises on model output: every problem becomes an entry of `errors`, and `calls` holds
    the calls that were read cleanly (what the server would return)."""
    fmt = {"qwen2_5": "hermes", "chatml": "hermes", "llama3_1": "llama3_json"}.get(fmt, fmt)
    if fmt not in _PARSERS:
        raise KitError(f"unknown tool-call format {fmt!r}; known: {', '.join(FORMATS)}")
    out = ParsedOutput()
    try:
        if fmt == "openai":
            _parse_openai(text, out)
        else:
            if not isinstance(text, str):
                out.errors.append(f"expected text, got {type(text).__name__}")
                return out
            _PARSERS[fmt](_strip_end(text), out)
    except Exception as e:  # a parser bug must not crash an evaluation run: report it as a problem
        out.errors.append(f"parser error: {type(e).__name__}: {e}")
    return out


# ---------------------------------------------------------------------------------------------------------
# Round trip: render -> cut each assistant turn -> parse -> compare with the source
# ---------------------------------------------------------------------------------------------------------


def assistant_turns(record: Record) -> list[int]:
    return [i for i, m in enumerate(record.get("messages") or []) if m.get("role") == "assistant"]


def turn_texts(
    tokenizer: Any,
    record: Record,
    family: str | Family | None = None,
    chat_template: str | None = None,
) -> tuple[str, list[tuple[int, int, int]]]:
    """(render, [(message index, start, end)]) for each assistant turn's {% generation %} span."""
    fam = detect_family(tokenizer, family)
    text, spans = render_with_spans(tokenizer, record, fam, chat_template=chat_template)
    turns = assistant_turns(record)
    if len(spans) != len(turns):
        raise KitError(
            f"record {_rid(record)}: the {fam.name} template marks {len(spans)} {{% generation %}} blocks but "
            f"the record has {len(turns)} assistant turns; the template must wrap every assistant turn"
        )
    return text, [(i, s, e) for i, (s, e) in zip(turns, spans, strict=True)]


def verify_roundtrip(
    tokenizer: Any,
    record: Record,
    family: str | Family | None = None,
    chat_template: str | None = None,
) -> int:
    """Parse every rendered assistant turn with the family's parser and compare it with the source turn.

    Raises KitError naming the record and turn when the parse fails or differs (name, arguments or
    content); returns the number of turns checked.
    """
    fam = detect_family(tokenizer, family)
    text, turns = turn_texts(tokenizer, record, fam, chat_template)
    msgs = record["messages"]
    for i, s, e in turns:
        piece = text[s:e]
        cut = piece.find(fam.end_token)
        if cut < 0:
            raise KitError(
                f"record {_rid(record)}: messages[{i}] renders without its end token {fam.end_token!r}: "
                "the model would never learn to stop"
            )
        parsed = parse_tool_calls(piece[:cut], fam.fmt)
        where = f"record {_rid(record)}: messages[{i}] ({fam.name}, parser {fam.fmt})"
        if parsed.errors:
            raise KitError(f"{where}: the rendered turn does not parse: {'; '.join(parsed.errors)}")
        want = calls_of(msgs[i])
        if parsed.pairs() != want:
            raise KitError(f"{where}: rendered calls {parsed.pairs()} differ from the source {want}")
        want_text = (text_of(msgs[i].get("content")) or "").strip()
        if parsed.content != want_text:
            raise KitError(
                f"{where}: rendered content {parsed.content[:60]!r} differs from the source "
                f"{want_text[:60]!r}"
            )
    return len(turns)
