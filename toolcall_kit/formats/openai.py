"""OpenAI fine-tuning chat rows (`messages`, `tools`) -> canonical record: arguments decoded, each `tool`
message named after the call it answers, legacy `functions` / `function_call` turned into tools and calls.
Anything else wrong is left for the validator."""

from __future__ import annotations

import json
from typing import Any

from ..records import Record, make_call
from ..validate import BAD_FIELD, MISSING_FIELD
from . import (
    RowError,
    call_ids,
    content_text,
    decode_arguments,
    decode_json_field,
    merge_tools,
    normalize_tools,
    row_id,
)


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
        tools = merge_tools(tools, [{"type": "function", "function": fn} for fn in functions])
    record: Record = row_id(row)
    if "kind" in row:
        record["kind"] = row["kind"]
    if tools is not None:
        record["tools"] = tools
    if "parallel_tool_calls" in row:
        record["parallel_tool_calls"] = row["parallel_tool_calls"]
    record["messages"] = convert_messages(messages)
    return record


def convert_messages(messages: list) -> list:
    taken = {
        c["id"]
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("tool_calls"), list)
        for c in m["tool_calls"]
        if isinstance(c, dict) and isinstance(c.get("id"), str)
    }
    ids = call_ids(taken)
    pending: list[tuple[str, Any]] = []  # (call id, tool name) awaiting a result, oldest first
    out: list = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or "role" not in m:
            out.append(m)  # the validator names it (not an object / no role)
            continue
        if m["role"] in ("tool", "function"):
            msg = _result(m, pending)
        elif m["role"] == "assistant":
            msg = _assistant(m, ids, where)
            for call in msg.get("tool_calls", []):
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    pending.append((call.get("id"), call["function"].get("name")))
        else:
            msg = {"role": m["role"], "content": content_text(m.get("content"), where)}
        if "weight" in m:
            msg["weight"] = m["weight"]
        out.append(msg)
    return out


def _assistant(m: dict, ids, where: str) -> dict:
    msg = {"role": "assistant", "content": content_text(m.get("content"), where)}
    raw_calls = m.get("tool_calls")
    if raw_calls is not None and not isinstance(raw_calls, list):
        raise RowError(BAD_FIELD, f"{where}: tool_calls must be a list")
    calls = [_call(call, ids, f"{where}.tool_calls[{j}]") for j, call in enumerate(raw_calls or [])]
    if m.get("function_call") is not None:  # legacy: one call, no id
        calls.append(_call({"function": m["function_call"]}, ids, f"{where}.function_call"))
    if raw_calls is not None or m.get("function_call") is not None:
        msg["tool_calls"] = calls
    return msg


def _call(call: Any, ids, where: str) -> Any:
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
        cid = next(ids)
    return make_call(fn.get("name"), decode_arguments(fn.get("arguments"), where), cid)


def _result(m: dict, pending: list[tuple[str, Any]]) -> dict:
    cid, name = m.get("tool_call_id"), m.get("name")
    match = None
    if cid is not None:
        match = next((p for p in pending if p[0] == cid), None)
    elif pending:
        # No id (legacy `function` role, or sloppy data): the oldest open call of that name, else the oldest.
        match = (next((p for p in pending if p[1] == name), None) if name else None) or pending[0]
        cid = match[0]
    if match is not None:
        pending.remove(match)
        name = name or match[1]
    try:
        text = content_text(m.get("content"), "")
    except RowError:  # results given as objects: the model sees JSON
        text = json.dumps(m.get("content"), ensure_ascii=False)
    msg = {"role": "tool", "tool_call_id": cid, "content": text}
    if name is not None:
        msg["name"] = name
    return msg
