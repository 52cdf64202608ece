"""The canonical conversation every reader produces and every later stage consumes: the OpenAI / TRL
conversational shape, with tool-call arguments *decoded to objects*:

    {"id": "ex-000042",                   # optional; evaluation joins predictions on it
     "kind": "declined",                  # optional; only where the source says so
     "tools": [{"type": "function",       # parameters: a JSON Schema object
                "function": {"name": ..., "description": ..., "parameters": {...}}}],
     "parallel_tool_calls": true,         # optional, kept from OpenAI data
     "messages": [{"role": "user", "content": "..."},
                  {"role": "assistant", "content": null, "weight": 1, "tool_calls": [{"id": "call_1",
                   "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                  {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{...}"},
                  {"role": "assistant", "content": "It is 18 C in Paris."}]}

Records are plain dicts (they go to JSONL and to `apply_chat_template` unchanged); this module is the one
place that knows their layout, and `read_records` the one reader of the JSONL files the kit writes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

from .errors import DataError

Record = dict[str, Any]

ROLES = ("system", "developer", "user", "assistant", "tool")

# Example kinds, reported by prepare and used to stratify splits and evaluation.
NO_CALL = "no_call"
SINGLE_CALL = "single_call"
PARALLEL_CALLS = "parallel_calls"
MULTI_STEP = "multi_step"
DECLINED = "declined"
KINDS = (NO_CALL, SINGLE_CALL, PARALLEL_CALLS, MULTI_STEP, DECLINED)


def make_tool(name: str, description: str = "", parameters: dict | None = None) -> dict:
    params = parameters if parameters is not None else {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


def make_call(name: str, arguments: dict, call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_name(tool: dict) -> str:
    return tool["function"]["name"]


def tool_names(tools: list[dict] | None) -> list[str]:
    return [tool_name(t) for t in tools or []]


def tool_schemas(tools: list[dict] | None) -> dict[str, dict]:
    """Tool name -> its parameters' JSON Schema ({} when it declares none)."""
    return {tool_name(t): t["function"].get("parameters") or {} for t in tools or []}


def call_name(call: dict) -> str:
    return call["function"]["name"]


def iter_calls(record: Record) -> Iterator[tuple[int, dict]]:
    """(message index, tool call) for every assistant tool call, in order."""
    for i, msg in enumerate(record.get("messages") or []):
        if msg.get("role") == "assistant":
            for call in msg.get("tool_calls") or []:
                yield i, call


def calls_of(message: dict) -> list[tuple[str, Any]]:
    """[(name, arguments)] of one assistant message; the form parsers and metrics compare."""
    return [(call_name(c), c["function"]["arguments"]) for c in message.get("tool_calls") or []]


def classify(record: Record) -> str:
    """The example's kind. An explicit valid `kind` wins: 'declined' cannot be inferred from the turns."""
    explicit = record.get("kind")
    if explicit in KINDS:
        return explicit
    call_turns = [
        m for m in record.get("messages") or [] if m.get("role") == "assistant" and m.get("tool_calls")
    ]
    if not call_turns:
        return NO_CALL
    has_results = any(m.get("role") == "tool" for m in record["messages"])
    if len(call_turns) > 1 and has_results:
        return MULTI_STEP
    if any(len(m["tool_calls"]) > 1 for m in call_turns):
        return PARALLEL_CALLS
    return SINGLE_CALL if len(call_turns) == 1 else MULTI_STEP


def content_hash(record: Record) -> str:
    """Hash of the key-sorted conversation without its `id`, so re-ids do not hide duplicates."""
    core = {k: v for k, v in record.items() if k != "id"}
    text = json.dumps(core, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ensure_id(record: Record) -> Record:
    if not record.get("id"):
        record["id"] = f"ex-{content_hash(record)[:12]}"
    return record


def openai_call(call: dict) -> dict:
    """One tool call in OpenAI's form: the arguments as a JSON string."""
    args = call["function"]["arguments"]
    if isinstance(args, str):
        return call
    return {**call, "function": {**call["function"], "arguments": json.dumps(args, ensure_ascii=False)}}


def to_openai(record: Record) -> Record:
    """The OpenAI fine-tuning JSONL form: the same record with call arguments as JSON strings."""
    out = copy.deepcopy(record)
    for msg in out.get("messages") or []:
        if msg.get("tool_calls"):
            msg["tool_calls"] = [openai_call(c) for c in msg["tool_calls"]]
    return out


def text_of(content: Any) -> str | None:
    """Message content as one string: OpenAI allows a list of `{"type": "text", "text": ...}` parts."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(
            f"content must be a string, null or a list of text parts, got {type(content).__name__}"
        )
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
            parts.append(str(part.get("text", "")))
        elif isinstance(part, str):
            parts.append(part)
        else:
            raise ValueError(f"unsupported content part: {json.dumps(part)[:80]}")
    return "".join(parts)


def read_records(path: str | os.PathLike, validate: bool = False) -> list[Record]:
    """The records of a JSONL file the kit wrote (prepare's train/eval.jsonl; `-` is standard input), each an
    object with `messages`. With `validate` (evaluation), each must also pass `validate_record` and gets an id
    if it has none; ids must be unique, since predictions are joined on them. Errors are DataErrors naming
    the file and line."""
    from .io import iter_json_lines
    from .validate import validate_record

    records: list[Record] = []
    line_of_id: dict[str, int] = {}
    for n, record in iter_json_lines(path):
        if validate:
            problems = validate_record(record)
            if problems:
                raise DataError(path, n, f"not a valid canonical record: {problems[0]}")
            record["id"] = rid = str(ensure_id(record)["id"])
            if rid in line_of_id:
                raise DataError(path, n, f"id {rid!r} already used on line {line_of_id[rid]}")
            line_of_id[rid] = n
        elif not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            raise DataError(path, n, "not a canonical record (an object with `messages`); run prepare first")
        records.append(record)
    if not records:
        raise DataError(path, None, "no records")
    return records
