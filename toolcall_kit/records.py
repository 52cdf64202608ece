"""The canonical conversation every reader produces and every later stage consumes.

The shape is the OpenAI / TRL conversational one, with tool-call arguments *decoded to objects*:

    {
      "id": "ex-000042",                      # optional; stable id used by eval/score
      "kind": "declined",                     # optional; only where the source says so
      "tools": [{"type": "function",
                 "function": {"name": ..., "description": ..., "parameters": {JSON Schema}}}],
      "parallel_tool_calls": true,            # optional, kept from OpenAI data
      "messages": [
        {"role": "system", "content": "..."},
        {"role": "user", "content": "..."},
        {"role": "assistant", "content": null, "weight": 1,
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{...}"},
        {"role": "assistant", "content": "It is 18 C in Paris."}
      ]
    }

Records are plain dicts (they go to JSONL and to `apply_chat_template` unchanged); the helpers here are
the one place that knows their layout. `to_openai` is the inverse of the OpenAI reader: arguments become
JSON strings again, so a record round-trips through OpenAI fine-tuning JSONL unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from typing import Any

Record = dict[str, Any]
Message = dict[str, Any]

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


def call_arguments(call: dict) -> Any:
    """A call's arguments: an object in a canonical record, a JSON string in OpenAI's form."""
    return call["function"]["arguments"]


def iter_calls(record: Record) -> Iterator[tuple[int, dict]]:
    """(message index, tool call) for every assistant tool call, in order."""
    for i, msg in enumerate(record.get("messages") or []):
        if msg.get("role") == "assistant":
            for call in msg.get("tool_calls") or []:
                yield i, call


def calls_of(message: Message) -> list[tuple[str, Any]]:
    """[(name, arguments)] of one assistant message; the form parsers and metrics compare."""
    return [(call_name(c), call_arguments(c)) for c in message.get("tool_calls") or []]


def classify(record: Record) -> str:
    """The example's kind. An explicit valid `kind` wins: 'declined' cannot be inferred from the turns."""
    explicit = record.get("kind")
    if explicit in KINDS:
        return explicit
    call_turns = [m for m in record.get("messages") or [] if m.get("role") == "assistant" and m.get("tool_calls")]
    if not call_turns:
        return NO_CALL
    has_results = any(m.get("role") == "tool" for m in record["messages"])
    if len(call_turns) > 1 and has_results:
        return MULTI_STEP
    if any(len(m["tool_calls"]) > 1 for m in call_turns):
        return PARALLEL_CALLS
    return SINGLE_CALL if len(call_turns) == 1 else MULTI_STEP


def canonical_json(record: Record) -> str:
    """Key-sorted compact JSON: the identity used for de-duplication and fingerprints."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_hash(record: Record) -> str:
    """Hash of the conversation itself (messages and tools), ignoring `id`, so re-ids do not hide duplicates."""
    core = {k: v for k, v in record.items() if k not in ("id",)}
    return hashlib.sha256(canonical_json(core).encode("utf-8")).hexdigest()


def ensure_id(record: Record, prefix: str = "ex") -> Record:
    if not record.get("id"):
        record["id"] = f"{prefix}-{content_hash(record)[:12]}"
    return record


def openai_call(call: dict) -> dict:
    """One tool call in OpenAI's form: the arguments as a JSON string."""
    args = call_arguments(call)
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
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise ValueError(f"unsupported content part: {json.dumps(part)[:80]}")
        return "".join(parts)
    raise ValueError(f"content must be a string, null or a list of text parts, got {type(content).__name__}")
