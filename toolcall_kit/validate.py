"""The one validator: a canonical record's shape, its tools' JSON Schemas, its calls and its turn order.

`validate_record(record)` returns a list of `Problem`s (empty = valid). Every reader, `prepare`,
`synth`, the teacher paraphraser and the evaluator's output-validity checks go through here, so a
rule changes in one place. Argument checks use the `jsonschema` library; validators are cached per
schema because 60k rows usually share a handful of tools.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.validators import validator_for

from .records import ROLES, Record

# OpenAI's rule for function names.
TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

# Reason codes, stable: they key report.json's `rejected_by_reason`.
INVALID_JSON = "invalid_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
BAD_FIELD = "bad_field"
UNKNOWN_ROLE = "unknown_role"
BAD_TOOL = "bad_tool"
BAD_TOOL_NAME = "bad_tool_name"
DUPLICATE_TOOL = "duplicate_tool"
BAD_TOOL_SCHEMA = "bad_tool_schema"
UNDECLARED_TOOL = "undeclared_tool"
ARGUMENTS_NOT_OBJECT = "arguments_not_object"
ARGUMENTS_SCHEMA = "arguments_schema"
ORPHAN_TOOL_RESULT = "orphan_tool_result"
UNANSWERED_CALL = "unanswered_call"
EMPTY_ASSISTANT = "empty_assistant"
NO_ASSISTANT = "no_assistant"
BAD_WEIGHT = "bad_weight"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Problem:
    reason: str  # one of the codes above
    detail: str  # a sentence a user can act on, naming the message / tool / argument

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@lru_cache(maxsize=4096)
def _validator(schema_json: str):
    schema = json.loads(schema_json)
    cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def schema_validator(schema: dict):
    """A cached jsonschema validator; raises `jsonschema.SchemaError` for a schema that is itself invalid."""
    return _validator(json.dumps(schema, sort_keys=True))


def argument_errors(schema: dict, arguments: Any) -> list[str]:
    """Human-readable reasons `arguments` fails `schema` (empty when valid), path first."""
    errs = sorted(schema_validator(schema).iter_errors(arguments), key=lambda e: list(e.path))
    out = []
    for e in errs:
        where = "/".join(str(p) for p in e.path)
        out.append(f"{where + ': ' if where else ''}{e.message}")
    return out


def check_tools(tools: Any) -> tuple[dict[str, dict], list[Problem]]:
    """Validate a `tools` list; returns (name -> function object, problems)."""
    problems: list[Problem] = []
    declared: dict[str, dict] = {}
    if tools is None:
        return declared, problems
    if not isinstance(tools, list):
        return declared, [Problem(BAD_FIELD, "`tools` must be a list")]
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or (tool.get("type", "function") != "function"):
            problems.append(Problem(BAD_TOOL, f'tools[{i}] is not {{"type": "function", "function": {{...}}}}'))
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME_RE.match(name):
            problems.append(
                Problem(BAD_TOOL_NAME, f"tools[{i}] name {name!r} must be 1-64 letters, digits, '_' or '-'")
            )
            continue
        if name in declared:
            problems.append(Problem(DUPLICATE_TOOL, f"tool {name!r} is declared twice"))
            continue
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            problems.append(Problem(BAD_TOOL_SCHEMA, f"tool {name!r}: parameters must be a JSON Schema object"))
            continue
        try:
            schema_validator(params)
        except jsonschema.SchemaError as e:
            problems.append(Problem(BAD_TOOL_SCHEMA, f"tool {name!r}: invalid JSON Schema: {e.message}"))
            continue
        declared[name] = fn
    return declared, problems


def check_call(call: Any, declared: dict[str, dict], where: str) -> list[Problem]:
    """One assistant tool call against the declared tools (shared with the evaluator's validity checks)."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return [Problem(MISSING_FIELD, f"{where}: a tool call needs a `function` object")]
    fn = call["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        return [Problem(MISSING_FIELD, f"{where}: a tool call needs a function name")]
    if name not in declared:
        known = ", ".join(sorted(declared)) or "none"
        return [Problem(UNDECLARED_TOOL, f"{where}: calls {name!r}, which is not declared (declared: {known})")]
    args = fn.get("arguments", {})
    if not isinstance(args, dict):
        return [Problem(ARGUMENTS_NOT_OBJECT, f"{where}: arguments of {name!r} must be a JSON object")]
    schema = declared[name].get("parameters") or {"type": "object"}
    errs = argument_errors(schema, args)
    if errs:
        return [Problem(ARGUMENTS_SCHEMA, f"{where}: arguments of {name!r} fail its schema: {'; '.join(errs)}")]
    return []


def validate_record(record: Any) -> list[Problem]:
    """All problems of one canonical record; an empty list means it may be trained on."""
    if not isinstance(record, dict):
        return [Problem(NOT_OBJECT, f"a row must be a JSON object, got {type(record).__name__}")]
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return [Problem(MISSING_FIELD, "`messages` must be a non-empty list")]
    declared, problems = check_tools(record.get("tools"))
    if problems:
        return problems

    open_calls: dict[str, str] = {}  # call id -> tool name, awaiting a result
    answered_any = False
    seen_assistant = False
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            problems.append(Problem(NOT_OBJECT, f"{where} is not an object"))
            continue
        role = msg.get("role")
        if role not in ROLES:
            problems.append(Problem(UNKNOWN_ROLE, f"{where} has role {role!r}; expected one of {', '.join(ROLES)}"))
            continue
        if "weight" in msg and msg["weight"] not in (0, 1):
            problems.append(Problem(BAD_WEIGHT, f"{where}: weight must be 0 or 1, got {msg['weight']!r}"))
        content = msg.get("content")
        if content is not None and not isinstance(content, str):
            problems.append(Problem(BAD_FIELD, f"{where}: content must be a string or null"))
            continue
        if role == "assistant":
            seen_assistant = True
            calls = msg.get("tool_calls") or []
            if not isinstance(calls, list):
                problems.append(Problem(BAD_FIELD, f"{where}: tool_calls must be a list"))
                continue
            if not calls and not (content or "").strip():
                problems.append(Problem(EMPTY_ASSISTANT, f"{where}: assistant turn has neither content nor tool calls"))
            for j, call in enumerate(calls):
                cw = f"{where}.tool_calls[{j}]"
                problems.extend(check_call(call, declared, cw))
                if isinstance(call, dict):
                    cid = call.get("id")
                    if not isinstance(cid, str) or not cid:
                        problems.append(Problem(MISSING_FIELD, f"{cw}: a tool call needs an `id`"))
                    else:
                        open_calls[cid] = (call.get("function") or {}).get("name", "")
        elif role == "tool":
            cid = msg.get("tool_call_id")
            if not isinstance(cid, str) or cid not in open_calls:
                problems.append(
                    Problem(ORPHAN_TOOL_RESULT, f"{where}: tool result answers {cid!r}, which no earlier call made")
                )
                continue
            if content is None:
                problems.append(Problem(MISSING_FIELD, f"{where}: tool result has no content"))
            del open_calls[cid]
            answered_any = True
        elif role == "user":
            # Results are optional in single-turn data (the call is the target), but once a conversation
            # carries results, every call must be answered before the user speaks again.
            if open_calls and answered_any:
                problems.append(
                    Problem(UNANSWERED_CALL, f"{where}: user turn before results for {', '.join(sorted(open_calls))}")
                )
            open_calls.clear()
            answered_any = False
    if open_calls and answered_any:
        problems.append(Problem(UNANSWERED_CALL, f"calls {', '.join(sorted(open_calls))} never get a result"))
    if not seen_assistant:
        problems.append(Problem(NO_ASSISTANT, "no assistant turn: nothing to train on"))
    return problems
