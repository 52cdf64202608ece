"""ShareGPT / Hermes function-calling rows -> canonical record.

    {"conversations": [
       {"from": "system", "value": "You are a function calling AI model. ... <tools> [{...}] </tools> ..."},
       {"from": "human", "value": "What's the weather in Paris?"},
       {"from": "gpt", "value": "<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Paris\\"}}\\n</tool_call>"},
       {"from": "tool", "value": "<tool_response>\\n{\\"name\\": \\"get_weather\\", \\"content\\": {...}}\\n</tool_response>"},
       {"from": "gpt", "value": "It is 18 C in Paris."}]}

Speakers: human/user, gpt/assistant/model, system, tool/observation/function_response/ipython (results),
and LLaMA-Factory's `function_call` turn (a JSON call, or a list of them). Tools come from a top-level
`tools` field (JSON string or list, as in Glaive/Hermes/LLaMA-Factory exports) and/or a `<tools>` block in
the system turn. A system turn that carries `<tools>` is Hermes' fixed tool-use boilerplate and is dropped:
the chat template renders the tools and their instructions itself. Calls get ids call_0, call_1, ...;
results are matched to open calls by tool name where the result names one, else oldest first.
An unknown speaker keeps its name as the role, so the validator rejects it as `unknown_role`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..records import Record, call_name, text_of
from ..templates import hermes_blocks
from ..validate import BAD_FIELD, MISSING_FIELD, NOT_OBJECT
from . import CallIds, RowError, decode_arguments, decode_json_field, loads_lenient, normalize_tools

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
    ids = CallIds()
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
        new: list[dict] = []
        if role is None:
            new.append({"role": speaker, "content": value})
        elif role == "system":
            blocks = TOOLS_RE.findall(value)
            if blocks:
                # Hermes' boilerplate names the tag before the real block ("within <tools></tools> XML tags").
                for block in blocks:
                    if block.strip():
                        tools = _merge_tools(tools, _parse_tools(block, where))
                continue
            new.append({"role": "system", "content": value})
        elif speaker.lower() == "function_call":
            parsed = loads_lenient(value, f"{where} (function_call)")
            new.append({"role": "assistant", "content": None, "tool_calls": _calls(parsed, ids, where)})
        elif role == "assistant":
            content, calls = _split_calls(value, ids, where)
            msg: dict = {"role": "assistant", "content": content}
            if calls:
                msg["tool_calls"] = calls
            new.append(msg)
        elif role == "tool":
            results = [r.strip() for r in RESPONSE_RE.findall(value)] or [value.strip()]
            new.extend(_result(text, pending) for text in results)
        else:
            new.append({"role": role, "content": value})
        for msg in new:
            if "weight" in turn:
                msg["weight"] = turn["weight"]
            for call in msg.get("tool_calls") or []:
                pending.append((call["id"], call_name(call)))
        messages.extend(new)
    record: Record = {"messages": messages}
    if tools is not None:
        record = {"tools": tools, **record}
    if isinstance(row.get("id"), str | int) and not isinstance(row.get("id"), bool):
        record = {"id": str(row["id"]), **record}
    return record


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)  # function_call / observation given as objects
    try:
        return text_of(value)
    except ValueError as e:
        raise RowError(BAD_FIELD, f"{where}: {e}") from None


def _parse_tools(text: str, where: str) -> list:
    """The inside of `<tools>`: a JSON list, or one JSON object per tool (Hermes writes them back to back)."""
    text = text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        value, decoder, pos = [], json.JSONDecoder(), 0
        while pos < len(text):
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text):
                break
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


def _merge_tools(tools: Any, more: list) -> Any:
    if not isinstance(tools, list):
        return more if tools is None else tools  # a broken top-level `tools` is the validator's to name

    def name(t: Any) -> Any:
        fn = t.get("function") if isinstance(t, dict) else None
        return fn.get("name") if isinstance(fn, dict) and isinstance(fn.get("name"), str) else None

    names = {name(t) for t in tools} - {None}
    return tools + [t for t in more if name(t) is None or name(t) not in names]


def _split_calls(value: str, ids: CallIds, where: str) -> tuple[str | None, list[dict]]:
    """An assistant turn -> (text outside the <tool_call> blocks or None, the calls inside them).

    The tags are cut by the kit's one Hermes reader (templates.hermes_blocks, the one that parses model
    output as vLLM does). The bodies are read more leniently than a server reads them, because Hermes and
    Glaive exports need it: Python literals (`{'name': ...}`), a list of calls in one block, `parameters`
    for `arguments`. That is safe for training data: the chat template writes every call again as strict
    JSON, and the round trip before training checks it with the server's reading."""
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


def _calls(parsed: Any, ids: CallIds, where: str) -> list[dict]:
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RowError(BAD_FIELD, f"{where}: a tool call must be an object with a `name`")
        args = item.get("arguments", item.get("parameters"))
        calls.append(
            {
                "id": ids.new(),
                "type": "function",
                "function": {"name": item["name"], "arguments": decode_arguments(args, where)},
            }
        )
    return calls


def _result(text: str, pending: list[tuple[str, Any]]) -> dict:
    """A tool result matched to an open call: by the name it carries (Hermes: {"name": ..., "content": ...})."""
    name = None
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
            name = parsed.get("name") if isinstance(parsed, dict) else None
        except ValueError:
            pass
    match = next((p for p in pending if p[1] == name), None) if isinstance(name, str) else None
    match = match or (pending[0] if pending else None)
    if match is None:
        return {"role": "tool", "tool_call_id": None, "content": text}  # the validator: orphan result
    pending.remove(match)
    return {"role": "tool", "tool_call_id": match[0], "name": match[1], "content": text}
