"""Salesforce xLAM rows (`query`, `tools`, `answers`) -> canonical record: a user turn, an assistant turn with
calls. Python-style parameter types ("List[int], optional", "int, default=5") become JSON Schema; a parameter
is required unless it says optional, has a default, or says `"required": false`."""

from __future__ import annotations

import ast
import json
from functools import lru_cache
from typing import Any

from ..records import Record, make_call, make_tool
from ..validate import BAD_FIELD, BAD_TOOL, BAD_TOOL_SCHEMA, MISSING_FIELD, NO_ASSISTANT
from . import RowError, decode_arguments, decode_json_field

_MISSING = object()

_SIMPLE = {
    "str": "string", "string": "string", "text": "string", "char": "string",
    "int": "integer", "integer": "integer", "long": "integer",
    "float": "number", "number": "number", "double": "number", "decimal": "number",
    "bool": "boolean", "boolean": "boolean",
    "none": "null", "null": "null", "nonetype": "null",
}  # fmt: skip
_ARRAYS = {"list", "tuple", "set", "frozenset", "sequence", "iterable", "array", "collection"}
_OBJECTS = {"dict", "mapping", "object", "map"}


def convert(row: dict) -> Record:
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        raise RowError(MISSING_FIELD, "`query` must be a non-empty string")
    tools = decode_json_field(row.get("tools"), "tools")
    if tools is not None and not isinstance(tools, list):
        raise RowError(BAD_FIELD, f"`tools` must be a list, got {type(tools).__name__}")
    answers = decode_json_field(row.get("answers"), "answers")
    if answers is None:
        raise RowError(MISSING_FIELD, "no `answers`")
    if not isinstance(answers, list):
        raise RowError(BAD_FIELD, f"`answers` must be a list, got {type(answers).__name__}")
    if not answers:
        raise RowError(NO_ASSISTANT, "`answers` is empty: no call and no reply text to train on")
    calls = []
    for j, answer in enumerate(answers):
        if not isinstance(answer, dict):
            raise RowError(BAD_FIELD, f"answers[{j}] must be an object with `name` and `arguments`")
        args = decode_arguments(answer.get("arguments"), f"answers[{j}]")
        calls.append(make_call(answer.get("name"), args, f"call_{j}"))
    return {
        "tools": [convert_tool(t, i) for i, t in enumerate(tools or [])],
        "messages": [
            {"role": "user", "content": query},
            {"role": "assistant", "content": None, "tool_calls": calls},
        ],
    }


def convert_tool(tool: Any, i: int = 0) -> dict:
    """One xLAM tool -> an OpenAI tool with a JSON Schema `parameters`."""
    tool = decode_json_field(tool, f"tools[{i}]")
    if not isinstance(tool, dict):
        raise RowError(BAD_TOOL, f"tools[{i}] must be an object with `name`, `description`, `parameters`")
    if isinstance(tool.get("function"), dict):
        tool = tool["function"]
    description = tool.get("description")
    params = decode_json_field(tool.get("parameters"), f"tools[{i}].parameters")
    return make_tool(
        tool.get("name"), "" if description is None else str(description), parameters_schema(params, i)
    )


def parameters_schema(params: Any, i: int = 0) -> dict:
    """xLAM's `{pname: {type, description, default}}` -> `{"type": "object", "properties", "required"}`."""
    if params is None or params == {}:
        return {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise RowError(BAD_TOOL_SCHEMA, f"tools[{i}].parameters must be an object")
    if params.get("type") == "object" and isinstance(params.get("properties"), dict):
        return params  # already JSON Schema
    properties: dict[str, Any] = {}
    required: list[str] = []
    for pname, spec in params.items():
        spec = {"type": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict):
            raise RowError(BAD_TOOL_SCHEMA, f"tools[{i}].parameters.{pname} must be an object")
        type_text = spec.get("type") if isinstance(spec.get("type"), str) else "Any"
        as_json, optional, default = _type_json(type_text)
        # A fresh dict per parameter, so records never share (and co-mutate) schemas.
        prop = properties[pname] = json.loads(as_json)
        if spec.get("description") is not None:
            prop["description"] = str(spec["description"])
        if isinstance(spec.get("enum"), list):
            prop["enum"] = spec["enum"]
        if "default" in spec or default is not _MISSING:
            prop["default"] = spec["default"] if "default" in spec else default
        explicit = spec.get("required")
        if explicit is True or (explicit is None and not optional and "default" not in prop):
            required.append(pname)
    return {"type": "object", "properties": properties, "required": required}


@lru_cache(maxsize=4096)
def _type_json(text: str) -> tuple[str, bool, Any]:
    """The schema as JSON text, cached: 60k xLAM rows share a few hundred type strings."""
    schema, optional, default = python_type_schema(text)
    return json.dumps(schema), optional, default


def python_type_schema(text: str) -> tuple[dict, bool, Any]:
    """'List[int], optional' -> ({"type": "array", "items": {"type": "integer"}}, optional=True, default);
    the default is `_MISSING` unless the text says `default=...`."""
    parts = _split_top(text, ",")
    base, optional, default = parts[0].strip(), False, _MISSING
    for flag in (p.strip() for p in parts[1:]):
        low = flag.lower()
        if low == "optional":
            optional = True
        elif low.startswith("default"):
            optional = True
            if "=" in flag or ":" in flag:
                value = flag.split("=" if "=" in flag else ":", 1)[1].strip()
                default = _literal(value)
    if "optional" in base.lower():  # Optional[int], "int (optional)"
        optional = True
    return type_schema(base), optional, default


def type_schema(text: str) -> dict:
    """JSON Schema of a Python type; unknown names (Callable, custom classes) become `{}`: any value."""
    text = text.strip()
    for sep in ("|", " or "):
        alternatives = _split_top(text, sep)
        if len(alternatives) > 1:
            return _union([type_schema(a) for a in alternatives])
    name, args = _head(text)
    key = name.lower().removeprefix("typing.")
    if key == "optional":
        return _union([type_schema(args[0]) if args else {}, {"type": "null"}])
    if key == "union":
        return _union([type_schema(a) for a in args])
    if key == "literal":
        return {"enum": [_literal(a) for a in args]}
    if key in _SIMPLE:
        return {"type": _SIMPLE[key]}
    if key in _ARRAYS:
        schema: dict = {"type": "array"}
        items = [a for a in args if a.strip() != "..."]
        item_schemas = [type_schema(a) for a in items]
        if item_schemas and all(s == item_schemas[0] for s in item_schemas) and item_schemas[0]:
            schema["items"] = item_schemas[0]
        return schema
    if key in _OBJECTS:
        schema = {"type": "object"}
        if len(args) == 2:
            values = type_schema(args[1])
            if values:
                schema["additionalProperties"] = values
        return schema
    return {}


def _union(schemas: list[dict]) -> dict:
    if any(not s for s in schemas):
        return {}  # one alternative is "anything"
    if all(set(s) == {"type"} for s in schemas):
        listed = [t for s in schemas for t in (s["type"] if isinstance(s["type"], list) else [s["type"]])]
        types = list(dict.fromkeys(listed))  # first appearance order, no repeats
        return {"type": types[0] if len(types) == 1 else types}
    return {"anyOf": schemas}


def _head(text: str) -> tuple[str, list[str]]:
    """'Dict[str, List[int]]' -> ('Dict', ['str', 'List[int]'])."""
    text = text.strip()
    for open_, close in (("[", "]"), ("(", ")")):
        if open_ in text and text.endswith(close):
            name, inner = text.split(open_, 1)
            return name.strip(), [a.strip() for a in _split_top(inner[:-1], ",") if a.strip()]
    return text, []


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets and quotes."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[(":
            depth += 1
        elif c in "])":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _literal(text: str) -> Any:
    try:
        value = ast.literal_eval(text.strip())
    except Exception:  # noqa: BLE001 - a bare word such as `default=all`
        return text.strip().strip("'\"")
    return value if isinstance(value, str | int | float | bool | type(None)) else text.strip()
