"""OpenAI fine-tuning chat JSONL -> canonical record (the inverse of `records.to_openai`).

    {"messages": [...], "tools": [...], "parallel_tool_calls": false}

Handled: `tool_calls` with `arguments` as a JSON string (decoded), `tool` messages with `tool_call_id`
(their `name` filled from the matching call), content as a list of text parts, assistant `weight`, and the
legacy `functions` / `function_call` / `function`-role fields (converted to tools, tool calls with generated
ids, and tool messages). Calls without an id get one; a result without `tool_call_id` answers the oldest
open call of its name. Everything else (unknown roles, undeclared tools, bad arguments) is left in place
for `validate.validate_record` to name.
"""

from __future__ import annotations

import json
from typing import Any

from ..records import Record, text_of
from ..validate import BAD_FIELD, MISSING_FIELD
from . import CallIds, RowError, decode_arguments, decode_json_field, normalize_tools


def convert(row: dict) -> Record:
    messages = decode_json_field(row.get("messages"), "messages")
    if messages is None:
        raise RowError(MISSING_FIELD, "no `messages` field")
    if not isinstance(messages, list):
        raise RowError(BAD_FIELD, f"`messages` must be a list, got {type(messages).__name__}")
    tools = normalize_tools(row.get("tools"))
    functions = decode_json_field(row.get("functions"), "functions")
    if functions is not None:
        if not isinstance(functions, list):
            raise RowError(BAD_FIELD, "`functions` must be a list")
        if tools is None:
            tools = []
        if isinstance(tools, list):
            names = {
                t["function"].get("name")
                for t in tools
                if isinstance(t, dict)
                and isinstance(t.get("function"), dict)
                and isinstance(t["function"].get("name"), str)
            }
            for fn in functions:
                if not (isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"] in names):
                    tools.append({"type": "function", "function": fn})

    record: Record = {}
    if isinstance(row.get("id"), str | int) and not isinstance(row.get("id"), bool):
        record["id"] = str(row["id"])
    if "kind" in row:
        record["kind"] = row["kind"]
    if tools is not None:
        record["tools"] = tools
    if "parallel_tool_calls" in row:
        record["parallel_tool_calls"] = row["parallel_tool_calls"]
    record["messages"] = convert_messages(messages)
    return record


def convert_messages(messages: list) -> list:
    taken = [
        c["id"]
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("tool_calls"), list)
        for c in m["tool_calls"]
        if isinstance(c, dict) and isinstance(c.get("id"), str)
    ]
    ids = CallIds(taken)
    pending: list[tuple[str, Any]] = []  # (call id, tool name) awaiting a result, oldest first
    out: list = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or "role" not in m:
            out.append(m)  # the validator names it (not an object / no role)
            continue
        role = m["role"]
        if role in ("tool", "function"):
            msg = _result(m, pending)
        elif role == "assistant":
            msg = {"role": "assistant", "content": _text(m.get("content"), where)}
            calls = []
            raw_calls = m.get("tool_calls")
            if raw_calls is not None and not isinstance(raw_calls, list):
                raise RowError(BAD_FIELD, f"{where}: tool_calls must be a list")
            for j, call in enumerate(raw_calls or []):
                calls.append(_call(call, ids, f"{where}.tool_calls[{j}]"))
            if m.get("function_call") is not None:  # legacy: one call, no id
                calls.append(_call({"function": m["function_call"]}, ids, f"{where}.function_call"))
            if raw_calls is not None or m.get("function_call") is not None:
                msg["tool_calls"] = calls
            for call in calls:
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    pending.append((call.get("id"), call["function"].get("name")))
        else:
            msg = {"role": role, "content": _text(m.get("content"), where)}
        if "weight" in m:
            msg["weight"] = m["weight"]
        out.append(msg)
    return out


def _text(content: Any, where: str) -> str | None:
    try:
        return text_of(content)
    except ValueError as e:
        raise RowError(BAD_FIELD, f"{where}: {e}") from None


def _call(call: Any, ids: CallIds, where: str) -> Any:
    if not isinstance(call, dict):
        return call
    fn = call.get("function")
    if fn is None and "name" in call:  # flat {"name", "arguments"}: seen in several public dumps
        fn = {"name": call["name"], "arguments": call.get("arguments")}
    fn = decode_json_field(fn, f"{where}.function")
    if not isinstance(fn, dict):
        return call
    cid = call.get("id")
    if not isinstance(cid, str) or not cid:
        cid = ids.new()
    args = decode_arguments(fn.get("arguments"), where)
    return {"id": cid, "type": "function", "function": {"name": fn.get("name"), "arguments": args}}


def _result(m: dict, pending: list[tuple[str, Any]]) -> dict:
    """A `tool` (or legacy `function`) message, matched to the call it answers."""
    cid = m.get("tool_call_id")
    name = m.get("name")
    match = None
    if cid is not None:
        match = next((p for p in pending if p[0] == cid), None)
    elif pending:
        # No id (legacy `function` role, or sloppy data): the oldest open call of that name, else the oldest.
        match = next((p for p in pending if p[1] == name), None) if name else None
        match = match or pending[0]
        cid = match[0]
    if match is not None:
        pending.remove(match)
        name = name or match[1]
    content = m.get("content")
    try:
        text = text_of(content)
    except ValueError:
        text = json.dumps(content, ensure_ascii=False)  # results given as objects: the model sees JSON text
    msg = {"role": "tool", "tool_call_id": cid, "content": text}
    if name is not None:
        msg["name"] = name
    return msg
