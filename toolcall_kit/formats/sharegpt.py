"""ShareGPT / Hermes rows (`conversations` of `from`/`value` turns, calls in <tool_call> tags) -> canonical
record. Tools come from `tools` and/or a system turn's `<tools>` block (that Hermes boilerplate turn is
dropped: the template renders tools itself); results match open calls by tool name, else oldest first."""

from __future__ import annotations

import json
import re
from contextlib import suppress
from typing import Any

from ..records import Record, call_name, make_call
from ..templates import hermes_blocks
from ..validate import BAD_FIELD, MISSING_FIELD, NOT_OBJECT
from . import (
    RowError,
    call_ids,
    content_text,
    decode_arguments,
    decode_json_field,
    loads_lenient,
    merge_tools,
    normalize_tools,
    row_id,
)

ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "bing": "assistant",
    "system": "system",
    "tool": "tool", "observation": "tool", "function_response": "tool", "ipython": "tool", "function": "tool",
    "function_call": "assistant",
}  # fmt: skip
TOOLS_RE = re.compile(r"<tools>(.*?)</tools>", re.DOTALL)
RESPONSE_RE = re.compile(r"<tool_response>(.*?)</tool_response>", re.DOTALL)
_SEPARATORS = re.compile(r"[ \t\r\n,]*")  # between the tools of a <tools> block


def convert(row: dict) -> Record:
    turns = decode_json_field(row.get("conversations"), "conversations")
    if turns is None:
        raise RowError(MISSING_FIELD, "no `conversations` field")
    if not isinstance(turns, list):
        raise RowError(BAD_FIELD, f"`conversations` must be a list, got {type(turns).__name__}")
    tools = normalize_tools(row.get("tools"))
    messages: list[dict] = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        messages.append({"role": "system", "content": row["system"]})
    ids = call_ids()
    pending: list[tuple[str, Any]] = []  # (call id, tool name) awaiting a result, oldest first
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise RowError(NOT_OBJECT, f"{where} is not an object")
        speaker = turn.get("from", turn.get("role"))
        if speaker is None:
            raise RowError(MISSING_FIELD, f"{where} has no `from`")
        value = _text(turn.get("value", turn.get("content")), where)
        role = ROLES.get(speaker.lower()) if isinstance(speaker, str) else None
        if role == "system" and TOOLS_RE.search(value):
            # Hermes' boilerplate names the tag before the real block ("within <tools></tools> XML tags").
            for block in TOOLS_RE.findall(value):
                if block.strip():
                    tools = merge_tools(tools, _parse_tools(block, where))
            continue
        new = _messages(speaker, role, value, ids, pending, where)
        for msg in new:
            if "weight" in turn:
                msg["weight"] = turn["weight"]
            for call in msg.get("tool_calls") or []:
                pending.append((call["id"], call_name(call)))
        messages.extend(new)
    return {**row_id(row), **({"tools": tools} if tools is not None else {}), "messages": messages}


def _messages(speaker: Any, role: str | None, value: str, ids, pending: list, where: str) -> list[dict]:
    """The canonical messages of one turn (a tool turn may hold several results)."""
    if role is None:
        return [{"role": speaker, "content": value}]
    if speaker.lower() == "function_call":
        parsed = loads_lenient(value, f"{where} (function_call)")
        return [{"role": "assistant", "content": None, "tool_calls": _calls(parsed, ids, where)}]
    if role == "assistant":
        content, calls = _split_calls(value, ids, where)
        return [{"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}]
    if role == "tool":
        results = [r.strip() for r in RESPONSE_RE.findall(value)] or [value.strip()]
        return [_result(text, pending) for text in results]
    return [{"role": role, "content": value}]


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)  # function_call / observation given as objects
    return content_text(value, where)


def _parse_tools(text: str, where: str) -> list:
    """The inside of `<tools>`: a JSON list, or one JSON object per tool (Hermes writes them back to back)."""
    text = text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        value, decoder, pos = [], json.JSONDecoder(), 0
        while (pos := _SEPARATORS.match(text, pos).end()) < len(text):
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except ValueError:
                value = loads_lenient(text, f"{where}: the <tools> block")
                break
            value.append(obj)
    tools = normalize_tools(value if isinstance(value, list) else [value])
    if not isinstance(tools, list):
        raise RowError(BAD_FIELD, f"{where}: the <tools> block is not a list of tools")
    return tools


def _split_calls(value: str, ids, where: str) -> tuple[str | None, list[dict]]:
    """An assistant turn -> (text outside the <tool_call> blocks or None, the calls inside them). The tags are
    cut as vLLM cuts them; the bodies are read leniently (Python literals, lists, `parameters`), as Hermes and
    Glaive exports need: the chat template writes every call again as strict JSON."""
    before, blocks, after = hermes_blocks(value)
    if not blocks:
        return value, []
    if not blocks[-1].closed:
        raise RowError(BAD_FIELD, f"{where}: a <tool_call> is not closed by </tool_call>")
    calls: list[dict] = []
    for k, block in enumerate(blocks):
        calls.extend(_calls(loads_lenient(block.body, f"{where}: <tool_call> {k + 1}"), ids, where))
    content = (before + "".join(after)).strip()
    return content or None, calls


def _calls(parsed: Any, ids, where: str) -> list[dict]:
    calls = []
    for item in parsed if isinstance(parsed, list) else [parsed]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RowError(BAD_FIELD, f"{where}: a tool call must be an object with a `name`")
        args = decode_arguments(item.get("arguments", item.get("parameters")), where)
        calls.append(make_call(item["name"], args, next(ids)))
    return calls


def _result(text: str, pending: list[tuple[str, Any]]) -> dict:
    """A tool result matched to an open call: by the name it carries (Hermes: {"name": ..., "content": ...})."""
    name = None
    if text.startswith("{"):
        with suppress(ValueError):
            parsed = json.loads(text)
            name = parsed.get("name") if isinstance(parsed, dict) else None
    match = next((p for p in pending if p[1] == name), None) if isinstance(name, str) else None
    match = match or (pending[0] if pending else None)
    if match is None:
        return {"role": "tool", "tool_call_id": None, "content": text}  # the validator: orphan result
    pending.remove(match)
    return {"role": "tool", "tool_call_id": match[0], "name": match[1], "content": text}
