"""Plain chat with no tools (`messages`, `conversations`, or UltraChat's `data` list of alternating turns) ->
canonical record, for mixing general conversation into training; a row with tools or calls is rejected."""

from __future__ import annotations

from typing import Any

from ..records import Record
from ..validate import BAD_FIELD, MISSING_FIELD
from . import RowError, content_text, decode_json_field, row_id

_ALIASES = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
}


def convert(row: dict) -> Record:
    if row.get("tools") or row.get("functions"):
        raise RowError(BAD_FIELD, "this row declares tools; read it with --format openai or sharegpt")
    if "messages" in row or "conversations" in row:
        field = "messages" if "messages" in row else "conversations"
        turns = decode_json_field(row[field], field)
        if not isinstance(turns, list):
            raise RowError(BAD_FIELD, f"`{field}` must be a list")
    elif isinstance(row.get("data"), list):
        field = "data"
        turns = [
            {"role": "user" if k % 2 == 0 else "assistant", "content": t} for k, t in enumerate(row["data"])
        ]
    else:
        raise RowError(MISSING_FIELD, "no `messages`, `conversations` or `data` field")
    messages: list[Any] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            messages.append(turn)  # the validator names it
            continue
        role = turn.get("role", turn.get("from"))
        if isinstance(role, str):
            role = _ALIASES.get(role.lower(), role)
        if role in ("tool", "function") or turn.get("tool_calls") or turn.get("function_call"):
            raise RowError(
                BAD_FIELD, f"{field}[{i}] is a tool call or result; read this file with --format openai"
            )
        content = content_text(turn.get("content", turn.get("value")), f"{field}[{i}]")
        msg: dict = {"content": content} if role is None else {"role": role, "content": content}
        if "weight" in turn:
            msg["weight"] = turn["weight"]
        messages.append(msg)
    return {**row_id(row), "messages": messages}
