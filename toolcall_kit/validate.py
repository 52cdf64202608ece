"""The one validator: a canonical record's shape, its tools' JSON Schemas, its calls and its turn order.

`validate_record(record)` returns a list of `Problem`s (empty = valid). Readers, `prepare`, `synth` and the
evaluator's output-validity checks all go through here, so a rule changes in one place.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
import types
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any


def _defer_rfc3987_syntax() -> None:
    """Let jsonschema import `rfc3987_syntax` (its "iri" format check) only when that check first runs: the
    module compiles 39 lark grammars, so `import jsonschema` took 2.5 s instead of 0.3 s in every kit process
    (jsonschema[format-nongpl] comes with JupyterLab). `LazyLoader` cannot do this: `from rfc3987_syntax
    import is_valid_syntax` loads the module."""
    name = "rfc3987_syntax"
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    stand_in = types.ModuleType(name)

    @cache
    def load() -> types.ModuleType:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return importlib.import_module(name)

    def forward(attr: str):  # any other name is the real module's; dunders are the import system's probes
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(load(), attr)

    stand_in.is_valid_syntax = lambda term, value: load().is_valid_syntax(term, value)
    stand_in.__getattr__ = forward
    sys.modules[name] = stand_in


_defer_rfc3987_syntax()

import jsonschema  # noqa: E402  (after the stand-in above)
import regex  # noqa: E402
from jsonschema.exceptions import ValidationError  # noqa: E402
from jsonschema.validators import extend, validator_for  # noqa: E402

from .records import KINDS, ROLES  # noqa: E402

# OpenAI's rule for function names (matched whole: `$` would let a trailing newline through).
TOOL_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")

# Schema `pattern`s come from data and run on data and on model output. Python's `re` backtracks without
# bound (`^(a+)+$` on 40 characters: hours), so they run under `regex` with a time bound per match (seconds);
# a pattern that ran out of time once is refused from then on without running again.
REGEX_TIMEOUT_S = 0.2
_SLOW_PATTERNS: set[str] = set()

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


@dataclass(frozen=True)
class Problem:
    reason: str  # one of the codes above
    detail: str  # a sentence a user can act on, naming the message / tool / argument

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


# Keywords that draft 7 and draft 2020-12 define the same way, by what their value holds.
_DATA_KEYWORDS = frozenset(
    "type required enum const description title default examples minimum maximum exclusiveMinimum "
    "exclusiveMaximum multipleOf minLength maxLength pattern format minItems maxItems uniqueItems "
    "minProperties maxProperties readOnly writeOnly".split()
)
_SCHEMA_KEYWORDS = frozenset(("items", "additionalProperties", "not", "propertyNames", "contains"))
_SCHEMA_MAP_KEYWORDS = frozenset(("properties", "patternProperties"))
_SCHEMA_LIST_KEYWORDS = frozenset(("anyOf", "oneOf", "allOf"))


def _same_in_draft7(schema: Any) -> bool:
    """True if `schema` uses only keywords whose meta-schema rules are identical in drafts 7 and 2020-12."""
    if not isinstance(schema, dict):
        return True  # booleans are schemas in both; anything else fails both meta-schemas
    for key, value in schema.items():
        if key in _DATA_KEYWORDS:
            continue
        if key in _SCHEMA_KEYWORDS:
            if key == "items" and isinstance(value, list):
                return False  # draft 7's tuple form, invalid in 2020-12
            subschemas = [value]
        elif key in _SCHEMA_MAP_KEYWORDS:
            subschemas = list(value.values()) if isinstance(value, dict) else []
        elif key in _SCHEMA_LIST_KEYWORDS:
            subschemas = value if isinstance(value, list) else []
        else:
            return False  # $ref, $defs, prefixItems, unknown keywords...: the full 2020-12 check
        if not all(_same_in_draft7(v) for v in subschemas):
            return False
    return True


class PatternTooSlow(Exception):
    pass


def bounded_search(pattern: str, text: str) -> bool:
    """`re.search(pattern, text)` with a time bound; raises PatternTooSlow (or regex.error for a pattern the
    `regex` module cannot compile)."""
    if pattern in _SLOW_PATTERNS:
        raise PatternTooSlow(pattern)
    try:
        return regex.search(pattern, text, timeout=REGEX_TIMEOUT_S) is not None
    except TimeoutError:
        _SLOW_PATTERNS.add(pattern)
        raise PatternTooSlow(pattern) from None


def _search(pattern: str, text: str) -> bool | ValidationError:
    """`bounded_search`, with a slow or unusable pattern returned as the error that refuses it."""
    try:
        return bounded_search(pattern, text)
    except PatternTooSlow:
        return ValidationError(
            f"pattern {pattern!r} ran out of time ({REGEX_TIMEOUT_S} s; catastrophic backtracking?): refused"
        )
    except regex.error as e:
        return ValidationError(f"pattern {pattern!r} is not a usable regular expression: {e}")


# jsonschema's own `pattern`, `patternProperties` and `additionalProperties` run `re.search`: replaced.
def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string"):
        found = _search(pattern, instance)
        if isinstance(found, ValidationError):
            yield found
        elif not found:
            yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for k, v in instance.items():
            found = _search(pattern, k)
            if isinstance(found, ValidationError):
                yield found
                return
            if found:
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties(validator, ap, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    extras = []
    for k in instance:
        if k in schema.get("properties", {}):
            continue
        for pattern in schema.get("patternProperties", {}):
            found = _search(pattern, k)
            if isinstance(found, ValidationError):
                yield found
                return
            if found:
                break
        else:
            extras.append(k)
    if validator.is_type(ap, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], ap, path=extra)
    elif not ap and extras:
        listed = ", ".join(repr(k) for k in sorted(extras, key=str))
        verb = "was" if len(extras) == 1 else "were"
        yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


@lru_cache(maxsize=16)
def _bounded(cls):
    keywords = {"pattern": _pattern, "patternProperties": _pattern_properties}
    return extend(cls, {**keywords, "additionalProperties": _additional_properties})


@lru_cache(maxsize=8192)
def _validator(schema_json: str):
    schema = json.loads(schema_json)
    cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    # Checking a schema against the 2020-12 meta-schema takes about 1.7 ms ($dynamicRef resolution), against
    # draft 7's about 0.34 ms, and xLAM's 60k rows carry about 3,600 distinct tools. Where both meta-schemas
    # say the same, use the cheaper one; arguments are validated with 2020-12 either way.
    cheap = cls is jsonschema.Draft202012Validator and _same_in_draft7(schema)
    (jsonschema.Draft7Validator if cheap else cls).check_schema(schema)
    return _bounded(cls)(schema)


def schema_validator(schema: dict):
    """A jsonschema validator, cached per schema because 60k rows usually share a handful of tools; raises
    `jsonschema.SchemaError` for a schema that is itself invalid."""
    return _validator(json.dumps(schema, sort_keys=True))


def argument_errors(schema: dict, arguments: Any) -> list[str]:
    """Human-readable reasons `arguments` fails `schema` (empty when valid), path first."""
    return _errors(schema_validator(schema), arguments)


def _errors(validator, arguments: Any) -> list[str]:
    out = []
    for e in sorted(validator.iter_errors(arguments), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in e.path)
        out.append(f"{where + ': ' if where else ''}{e.message}")
    return out


def check_tools(tools: Any) -> tuple[dict[str, dict], list[Problem]]:
    """Validate a `tools` list; returns (name -> function object, problems)."""
    return _check_tools(tools)[:2]


def _check_tools(tools: Any) -> tuple[dict[str, dict], list[Problem], dict[str, Any]]:
    """`check_tools` plus each declared tool's validator, so a record's calls skip the cache key (a sorted
    JSON dump of the schema, about 8 us each)."""
    declared: dict[str, dict] = {}
    validators: dict[str, Any] = {}
    if tools is None:
        return declared, [], validators
    if not isinstance(tools, list):
        return declared, [Problem(BAD_FIELD, "`tools` must be a list")], validators
    problems = [p for i, tool in enumerate(tools) if (p := _add_tool(i, tool, declared, validators))]
    return declared, problems, validators


def _add_tool(i: int, tool: Any, declared: dict, validators: dict) -> Problem | None:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or tool.get("type", "function") != "function":
        return Problem(BAD_TOOL, f'tools[{i}] is not {{"type": "function", "function": {{...}}}}')
    name = fn.get("name")
    if not isinstance(name, str) or not TOOL_NAME_RE.fullmatch(name):
        return Problem(BAD_TOOL_NAME, f"tools[{i}] name {name!r} must be 1-64 letters, digits, '_' or '-'")
    if name in declared:
        return Problem(DUPLICATE_TOOL, f"tool {name!r} is declared twice")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, dict):
        return Problem(BAD_TOOL_SCHEMA, f"tool {name!r}: parameters must be a JSON Schema object")
    try:
        validators[name] = schema_validator(params)
    except jsonschema.SchemaError as e:
        return Problem(BAD_TOOL_SCHEMA, f"tool {name!r}: invalid JSON Schema: {e.message}")
    except Exception as e:  # noqa: BLE001 - an unhashable/odd `$schema` makes validator_for itself fail
        return Problem(BAD_TOOL_SCHEMA, f"tool {name!r}: unusable JSON Schema: {e}")
    declared[name] = fn
    return None


def check_call(
    call: Any, declared: dict[str, dict], where: str, validators: dict | None = None
) -> list[Problem]:
    """One assistant tool call against the declared tools (shared with the evaluator's validity checks).
    `validators` (tool name -> validator, from validate_record) only saves time."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return [Problem(MISSING_FIELD, f"{where}: a tool call needs a `function` object")]
    name = call["function"].get("name")
    if not isinstance(name, str) or not name:
        return [Problem(MISSING_FIELD, f"{where}: a tool call needs a function name")]
    if name not in declared:
        known = ", ".join(sorted(declared)) or "none"
        return [
            Problem(UNDECLARED_TOOL, f"{where}: calls {name!r}, which is not declared (declared: {known})")
        ]
    args = call["function"].get("arguments", {})
    if not isinstance(args, dict):
        return [Problem(ARGUMENTS_NOT_OBJECT, f"{where}: arguments of {name!r} must be a JSON object")]
    schema = declared[name].get("parameters") or {"type": "object"}
    try:
        errs = _errors((validators or {}).get(name) or schema_validator(schema), args)
    except Exception as e:  # noqa: BLE001 - a schema can pass check_schema yet fail to apply (unresolvable $ref)
        return [Problem(BAD_TOOL_SCHEMA, f"{where}: the schema of {name!r} cannot be applied: {e}")]
    if not errs:
        return []
    return [Problem(ARGUMENTS_SCHEMA, f"{where}: arguments of {name!r} fail its schema: {'; '.join(errs)}")]


def non_finite_at(value: Any, where: str = "") -> str | None:
    """Where `value` holds a number JSON cannot write (NaN, Infinity, or 1e400 read as infinity), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where or "the value"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        if isinstance(v, float | dict | list):
            found = non_finite_at(v, f"{where}/{k}" if where else str(k))
            if found:
                return found
    return None


def validate_record(record: Any) -> list[Problem]:
    """All problems of one canonical record; an empty list means it may be trained on."""
    if not isinstance(record, dict):
        return [Problem(NOT_OBJECT, f"a row must be a JSON object, got {type(record).__name__}")]
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return [Problem(MISSING_FIELD, "`messages` must be a non-empty list")]
    if bad_number := non_finite_at(record):
        detail = f"{bad_number}: NaN, Infinity or a number out of range, which JSON cannot hold"
        return [Problem(INVALID_JSON, detail)]
    declared, problems, validators = _check_tools(record.get("tools"))
    if problems:
        return problems
    if "kind" in record and record["kind"] not in KINDS:
        problems.append(Problem(BAD_FIELD, f"kind {record['kind']!r} is not one of {', '.join(KINDS)}"))
    parallel = record.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        problems.append(Problem(BAD_FIELD, f"parallel_tool_calls must be true or false, got {parallel!r}"))
    turns = _Turns(declared, validators, parallel, problems)
    for i, msg in enumerate(messages):
        turns.check(f"messages[{i}]", msg)
    if turns.open_calls and turns.answered_any:
        turns.add(UNANSWERED_CALL, f"calls {', '.join(sorted(turns.open_calls))} never get a result")
    if not turns.seen_assistant:
        turns.add(NO_ASSISTANT, "no assistant turn: nothing to train on")
    return problems


class _Turns:
    """The turn-order rules, message by message: which calls await a result, whether any was answered."""

    def __init__(self, declared: dict, validators: dict, parallel: bool, problems: list[Problem]):
        self.declared, self.validators = declared, validators
        self.parallel, self.problems = parallel, problems
        self.open_calls: dict[str, str] = {}  # call id -> tool name, awaiting a result
        self.answered_any = False
        self.seen_assistant = False

    def add(self, reason: str, detail: str) -> None:
        self.problems.append(Problem(reason, detail))

    def check(self, where: str, msg: Any) -> None:
        if not isinstance(msg, dict):
            return self.add(NOT_OBJECT, f"{where} is not an object")
        if "role" not in msg:
            return self.add(MISSING_FIELD, f"{where} has no `role`")
        role = msg["role"]
        if role not in ROLES:
            return self.add(UNKNOWN_ROLE, f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
        # bool is an int in Python: `True in (0, 1)` holds, but OpenAI's weight is the number 0 or 1.
        if "weight" in msg and (isinstance(msg["weight"], bool) or msg["weight"] not in (0, 1)):
            self.add(BAD_WEIGHT, f"{where}: weight must be 0 or 1, got {msg['weight']!r}")
        content = msg.get("content")
        if content is not None and not isinstance(content, str):
            return self.add(BAD_FIELD, f"{where}: content must be a string or null")
        if role in ("system", "developer", "user") and content is None:
            self.add(MISSING_FIELD, f"{where}: {role} turn has no content")
        if role == "assistant":
            self.assistant(where, msg, content)
        elif role == "tool":
            self.result(where, msg, content)
        elif role == "user":
            # Results are optional in single-turn data (the call is the target), but once a conversation
            # carries results, every call must be answered before the user speaks again.
            if self.open_calls and self.answered_any:
                waiting = ", ".join(sorted(self.open_calls))
                self.add(UNANSWERED_CALL, f"{where}: user turn before results for {waiting}")
            self.open_calls.clear()
            self.answered_any = False

    def assistant(self, where: str, msg: dict, content: str | None) -> None:
        self.seen_assistant = True
        calls = msg.get("tool_calls") or []
        if not isinstance(calls, list):
            return self.add(BAD_FIELD, f"{where}: tool_calls must be a list")
        if not calls and not (content or "").strip():
            self.add(EMPTY_ASSISTANT, f"{where}: assistant turn has neither content nor tool calls")
        if len(calls) > 1 and self.parallel is False:
            self.add(BAD_FIELD, f"{where}: {len(calls)} calls in one turn but parallel_tool_calls is false")
        for j, call in enumerate(calls):
            call_at = f"{where}.tool_calls[{j}]"
            self.problems.extend(check_call(call, self.declared, call_at, self.validators))
            if not isinstance(call, dict):
                continue
            cid, fn = call.get("id"), call.get("function")
            if not isinstance(cid, str) or not cid:
                self.add(MISSING_FIELD, f"{call_at}: a tool call needs an `id`")
            elif cid in self.open_calls:
                self.add(BAD_FIELD, f"{call_at}: call id {cid!r} is already awaiting a result")
            else:
                self.open_calls[cid] = fn.get("name", "") if isinstance(fn, dict) else ""

    def result(self, where: str, msg: dict, content: str | None) -> None:
        cid = msg.get("tool_call_id")
        if not isinstance(cid, str) or cid not in self.open_calls:
            detail = f"{where}: tool result answers {cid!r}, which no earlier call made"
            return self.add(ORPHAN_TOOL_RESULT, detail)
        if content is None:
            self.add(MISSING_FIELD, f"{where}: tool result has no content")
        name = msg.get("name")
        called = self.open_calls.pop(cid)
        if name is not None and name != called:
            self.add(BAD_FIELD, f"{where}: result named {name!r} answers {cid!r}, a call to {called!r}")
        self.answered_any = True
