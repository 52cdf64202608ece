"""The one validator: a canonical record's shape, its tools' JSON Schemas, its calls and its turn order.

`validate_record(record)` returns a list of `Problem`s (empty = valid). Every reader, `prepare`,
`synth`, the teacher paraphraser and the evaluator's output-validity checks go through here, so a
rule changes in one place. Argument checks use the `jsonschema` library; validators are cached per
schema because 60k rows usually share a handful of tools.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema
import regex
from jsonschema.exceptions import ValidationError
from jsonschema.validators import extend, validator_for

from .records import KINDS, ROLES

# OpenAI's rule for function names (matched whole: `$` would let a trailing newline through).
TOOL_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")

# Schema `pattern`s come from data (a tool's JSON Schema) and run on data and on model output. Python's `re`
# backtracks without bound (`^(a+)+$` on 40 characters: hours), so they run under the `regex` module with a time
# bound per match; a pattern that ran out of time once is refused from then on without running again.
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
            if (key == "items" and isinstance(value, list)) or not _same_in_draft7(value):
                return False  # array-form `items` is draft 7's tuple form, invalid in 2020-12
        elif key in _SCHEMA_MAP_KEYWORDS:
            if isinstance(value, dict) and not all(_same_in_draft7(v) for v in value.values()):
                return False
        elif key in _SCHEMA_LIST_KEYWORDS:
            if isinstance(value, list) and not all(_same_in_draft7(v) for v in value):
                return False
        else:
            return False  # $ref, $defs, prefixItems, unknown keywords...: the full 2020-12 check
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


def _slow(pattern: str) -> ValidationError:
    return ValidationError(
        f"pattern {pattern!r} ran out of time ({REGEX_TIMEOUT_S} s; catastrophic backtracking?): refused"
    )


def _pattern(validator, patrn, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    try:
        if not bounded_search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")
    except PatternTooSlow:
        yield _slow(patrn)
    except regex.error as e:
        yield ValidationError(f"pattern {patrn!r} is not a usable regular expression: {e}")


def _matches_any(patterns, key: str) -> bool:
    return any(bounded_search(p, key) for p in patterns)


def _pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for k, v in instance.items():
            try:
                found = bounded_search(pattern, k)
            except PatternTooSlow:
                yield _slow(pattern)
                return
            except regex.error as e:
                yield ValidationError(f"pattern {pattern!r} is not a usable regular expression: {e}")
                return
            if found:
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties(validator, ap, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    try:
        extras = [k for k in instance if k not in properties and not (patterns and _matches_any(patterns, k))]
    except PatternTooSlow as e:
        yield _slow(e.args[0])
        return
    except regex.error as e:
        yield ValidationError(f"a patternProperties pattern is not a usable regular expression: {e}")
        return
    if validator.is_type(ap, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], ap, path=extra)
    elif not ap and extras:
        listed = ", ".join(repr(k) for k in sorted(extras, key=str))
        verb = "was" if len(extras) == 1 else "were"
        yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


_BOUNDED_KEYWORDS = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
}


@lru_cache(maxsize=16)
def _bounded(cls):
    """`cls` with the keywords that run schema regexes replaced by time-bounded ones."""
    return extend(cls, _BOUNDED_KEYWORDS)


@lru_cache(maxsize=8192)
def _validator(schema_json: str):
    schema = json.loads(schema_json)
    cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    # Checking a schema against the 2020-12 meta-schema takes about 1.7 ms here ($dynamicRef resolution),
    # the draft-7 meta-schema about 0.34 ms, and xLAM's 60k rows carry about 3,600 distinct tools. Where
    # both meta-schemas say the same, use the cheaper one; arguments are validated with 2020-12 either way.
    meta = (
        jsonschema.Draft7Validator
        if cls is jsonschema.Draft202012Validator and _same_in_draft7(schema)
        else cls
    )
    meta.check_schema(schema)
    return _bounded(cls)(schema)


def schema_validator(schema: dict):
    """A cached jsonschema validator; raises `jsonschema.SchemaError` for a schema that is itself invalid."""
    return _validator(json.dumps(schema, sort_keys=True))


def argument_errors(schema: dict, arguments: Any) -> list[str]:
    """Human-readable reasons `arguments` fails `schema` (empty when valid), path first."""
    return _errors(schema_validator(schema), arguments)


def _errors(validator, arguments: Any) -> list[str]:
    errs = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
    out = []
    for e in errs:
        where = "/".join(str(p) for p in e.path)
        out.append(f"{where + ': ' if where else ''}{e.message}")
    return out


def check_tools(tools: Any) -> tuple[dict[str, dict], list[Problem]]:
    """Validate a `tools` list; returns (name -> function object, problems)."""
    declared, problems, _ = _check_tools(tools)
    return declared, problems


def _check_tools(tools: Any) -> tuple[dict[str, dict], list[Problem], dict[str, Any]]:
    """`check_tools` plus each declared tool's validator, so a record's calls skip the cache key (a sorted
    JSON dump of the schema, about 8 us each)."""
    problems: list[Problem] = []
    declared: dict[str, dict] = {}
    validators: dict[str, Any] = {}
    if tools is None:
        return declared, problems, validators
    if not isinstance(tools, list):
        return declared, [Problem(BAD_FIELD, "`tools` must be a list")], validators
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or (tool.get("type", "function") != "function"):
            problems.append(
                Problem(BAD_TOOL, f'tools[{i}] is not {{"type": "function", "function": {{...}}}}')
            )
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME_RE.fullmatch(name):
            problems.append(
                Problem(BAD_TOOL_NAME, f"tools[{i}] name {name!r} must be 1-64 letters, digits, '_' or '-'")
            )
            continue
        if name in declared:
            problems.append(Problem(DUPLICATE_TOOL, f"tool {name!r} is declared twice"))
            continue
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            problems.append(
                Problem(BAD_TOOL_SCHEMA, f"tool {name!r}: parameters must be a JSON Schema object")
            )
            continue
        try:
            validators[name] = schema_validator(params)
        except jsonschema.SchemaError as e:
            problems.append(Problem(BAD_TOOL_SCHEMA, f"tool {name!r}: invalid JSON Schema: {e.message}"))
            continue
        except Exception as e:  # noqa: BLE001 - an unhashable/odd `$schema` makes validator_for itself fail
            problems.append(Problem(BAD_TOOL_SCHEMA, f"tool {name!r}: unusable JSON Schema: {e}"))
            continue
        declared[name] = fn
    return declared, problems, validators


def check_call(
    call: Any, declared: dict[str, dict], where: str, validators: dict | None = None
) -> list[Problem]:
    """One assistant tool call against the declared tools (shared with the evaluator's validity checks).
    `validators` (tool name -> validator, from validate_record) only saves time."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return [Problem(MISSING_FIELD, f"{where}: a tool call needs a `function` object")]
    fn = call["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        return [Problem(MISSING_FIELD, f"{where}: a tool call needs a function name")]
    if name not in declared:
        known = ", ".join(sorted(declared)) or "none"
        return [
            Problem(UNDECLARED_TOOL, f"{where}: calls {name!r}, which is not declared (declared: {known})")
        ]
    args = fn.get("arguments", {})
    if not isinstance(args, dict):
        return [Problem(ARGUMENTS_NOT_OBJECT, f"{where}: arguments of {name!r} must be a JSON object")]
    schema = declared[name].get("parameters") or {"type": "object"}
    try:
        validator = (validators or {}).get(name) or schema_validator(schema)
        errs = _errors(validator, args)
    except Exception as e:  # noqa: BLE001 - a schema can pass check_schema yet fail to apply (unresolvable $ref)
        return [Problem(BAD_TOOL_SCHEMA, f"{where}: the schema of {name!r} cannot be applied: {e}")]
    if errs:
        return [
            Problem(ARGUMENTS_SCHEMA, f"{where}: arguments of {name!r} fail its schema: {'; '.join(errs)}")
        ]
    return []


def non_finite_at(value: Any, where: str = "") -> str | None:
    """Where `value` holds a number JSON cannot write (NaN, Infinity, or 1e400 read as infinity), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where or "the value"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
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
    bad_number = non_finite_at(record)
    if bad_number:
        return [Problem(INVALID_JSON, f"{bad_number}: NaN, Infinity or a number out of range, which JSON cannot hold")]
    declared, problems, validators = _check_tools(record.get("tools"))
    if problems:
        return problems
    if "kind" in record and record["kind"] not in KINDS:
        problems.append(Problem(BAD_FIELD, f"kind {record['kind']!r} is not one of {', '.join(KINDS)}"))
    parallel = record.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        problems.append(Problem(BAD_FIELD, f"parallel_tool_calls must be true or false, got {parallel!r}"))

    open_calls: dict[str, str] = {}  # call id -> tool name, awaiting a result
    answered_any = False
    seen_assistant = False
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            problems.append(Problem(NOT_OBJECT, f"{where} is not an object"))
            continue
        if "role" not in msg:
            problems.append(Problem(MISSING_FIELD, f"{where} has no `role`"))
            continue
        role = msg["role"]
        if role not in ROLES:
            problems.append(
                Problem(UNKNOWN_ROLE, f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
            )
            continue
        # bool is an int in Python: `True in (0, 1)` holds, but OpenAI's weight is the number 0 or 1.
        if "weight" in msg and (isinstance(msg["weight"], bool) or msg["weight"] not in (0, 1)):
            problems.append(Problem(BAD_WEIGHT, f"{where}: weight must be 0 or 1, got {msg['weight']!r}"))
        content = msg.get("content")
        if content is not None and not isinstance(content, str):
            problems.append(Problem(BAD_FIELD, f"{where}: content must be a string or null"))
            continue
        if role in ("system", "developer", "user") and content is None:
            problems.append(Problem(MISSING_FIELD, f"{where}: {role} turn has no content"))
        if role == "assistant":
            seen_assistant = True
            calls = msg.get("tool_calls") or []
            if not isinstance(calls, list):
                problems.append(Problem(BAD_FIELD, f"{where}: tool_calls must be a list"))
                continue
            if not calls and not (content or "").strip():
                problems.append(
                    Problem(EMPTY_ASSISTANT, f"{where}: assistant turn has neither content nor tool calls")
                )
            if len(calls) > 1 and parallel is False:
                problems.append(
                    Problem(
                        BAD_FIELD, f"{where}: {len(calls)} calls in one turn but parallel_tool_calls is false"
                    )
                )
            for j, call in enumerate(calls):
                call_at = f"{where}.tool_calls[{j}]"
                problems.extend(check_call(call, declared, call_at, validators))
                if isinstance(call, dict):
                    cid = call.get("id")
                    fn = call.get("function")
                    if not isinstance(cid, str) or not cid:
                        problems.append(Problem(MISSING_FIELD, f"{call_at}: a tool call needs an `id`"))
                    elif cid in open_calls:
                        problems.append(
                            Problem(BAD_FIELD, f"{call_at}: call id {cid!r} is already awaiting a result")
                        )
                    else:
                        open_calls[cid] = fn.get("name", "") if isinstance(fn, dict) else ""
        elif role == "tool":
            cid = msg.get("tool_call_id")
            if not isinstance(cid, str) or cid not in open_calls:
                problems.append(
                    Problem(
                        ORPHAN_TOOL_RESULT,
                        f"{where}: tool result answers {cid!r}, which no earlier call made",
                    )
                )
                continue
            if content is None:
                problems.append(Problem(MISSING_FIELD, f"{where}: tool result has no content"))
            name = msg.get("name")
            if name is not None and name != open_calls[cid]:
                problems.append(
                    Problem(
                        BAD_FIELD,
                        f"{where}: result named {name!r} answers {cid!r}, a call to {open_calls[cid]!r}",
                    )
                )
            del open_calls[cid]
            answered_any = True
        elif role == "user":
            # Results are optional in single-turn data (the call is the target), but once a conversation
            # carries results, every call must be answered before the user speaks again.
            if open_calls and answered_any:
                problems.append(
                    Problem(
                        UNANSWERED_CALL,
                        f"{where}: user turn before results for {', '.join(sorted(open_calls))}",
                    )
                )
            open_calls.clear()
            answered_any = False
    if open_calls and answered_any:
        problems.append(Problem(UNANSWERED_CALL, f"calls {', '.join(sorted(open_calls))} never get a result"))
    if not seen_assistant:
        problems.append(Problem(NO_ASSISTANT, "no assistant turn: nothing to train on"))
    return problems
