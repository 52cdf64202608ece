"""Every rule of validate.py, each with a record that breaks it and the reason code it must produce."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from toolcall_kit import validate as v
from toolcall_kit.records import make_call, make_tool

WEATHER = make_tool(
    "get_weather",
    "Current weather.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["city"],
    },
)


def user(text="Weather in Paris?"):
    return {"role": "user", "content": text}


def calls(*cs, content=None):
    return {"role": "assistant", "content": content, "tool_calls": list(cs)}


def result(cid, content='{"temp_c": 18}', **kw):
    return {"role": "tool", "tool_call_id": cid, "content": content, **kw}


def rec(*messages, tools=(WEATHER,), **kw):
    return {"tools": [copy.deepcopy(t) for t in tools], "messages": list(messages), **kw}


PARIS = make_call("get_weather", {"city": "Paris"}, "c1")
NICE = make_call("get_weather", {"city": "Nice"}, "c2")

VALID = {
    "single call, no result (the call is the target)": rec(user(), calls(PARIS)),
    "parallel calls": rec(user(), calls(PARIS, NICE)),
    "multi-step with results": rec(
        user(),
        calls(PARIS),
        result("c1", name="get_weather"),
        {"role": "assistant", "content": "18 C. Nice too?", "weight": 0},
        user("yes"),
        calls(NICE),
        result("c2"),
        {"role": "assistant", "content": "20 C in Nice.", "weight": 1},
    ),
    "no tools at all": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            user("hi"),
            {"role": "assistant", "content": "Hi."},
        ]
    },
    "declined": rec(
        user("Book a flight"), {"role": "assistant", "content": "I cannot book flights."}, kind="declined"
    ),
    "developer role and parallel false with one call": rec(
        {"role": "developer", "content": "Use tools."}, user(), calls(PARIS), parallel_tool_calls=False
    ),
    "tool without parameters": rec(user(), calls(make_call("ping", {}, "p")), tools=[make_tool("ping")]),
    "enum and array arguments": rec(
        user(), calls(make_call("get_weather", {"city": "Oslo", "unit": "c", "days": [1, 2]}, "c1"))
    ),
}


@pytest.mark.parametrize("name", VALID)
def test_valid_records_have_no_problems(name):
    assert v.validate_record(VALID[name]) == []


def too_long_name():
    return "a" * 65


BROKEN = {
    # shape
    "row is a list": ([user()], v.NOT_OBJECT),
    "no messages": ({"tools": []}, v.MISSING_FIELD),
    "empty messages": ({"messages": []}, v.MISSING_FIELD),
    "message is a string": (rec(user(), "hello", {"role": "assistant", "content": "x"}), v.NOT_OBJECT),
    "message without role": (rec({"content": "hi"}, {"role": "assistant", "content": "x"}), v.MISSING_FIELD),
    "unknown role": (rec(user(), {"role": "robot", "content": "beep"}, {"role": "assistant", "content": "x"}), v.UNKNOWN_ROLE),
    "content is a list": (rec({"role": "user", "content": [{"type": "text", "text": "hi"}]}, {"role": "assistant", "content": "x"}), v.BAD_FIELD),
    "user without content": (rec({"role": "user"}, {"role": "assistant", "content": "x"}), v.MISSING_FIELD),
    "bad kind": (rec(user(), {"role": "assistant", "content": "x"}, kind="weird"), v.BAD_FIELD),
    "parallel_tool_calls not bool": (rec(user(), calls(PARIS), parallel_tool_calls="yes"), v.BAD_FIELD),
    "two calls with parallel false": (rec(user(), calls(PARIS, NICE), parallel_tool_calls=False), v.BAD_FIELD),
    "tool_calls not a list": (rec(user(), {"role": "assistant", "content": "x", "tool_calls": {"id": "c1"}}), v.BAD_FIELD),
    # weights
    "weight 2": (rec(user(), {"role": "assistant", "content": "x", "weight": 2}), v.BAD_WEIGHT),
    "weight true": (rec(user(), {"role": "assistant", "content": "x", "weight": True}), v.BAD_WEIGHT),
    "weight string": (rec(user(), {"role": "assistant", "content": "x", "weight": "1"}), v.BAD_WEIGHT),
    # tools
    "tools not a list": (rec(user(), calls(PARIS), tools=()) | {"tools": {"get_weather": {}}}, v.BAD_FIELD),
    "tool not in function shape": (rec(user(), {"role": "assistant", "content": "x"}, tools=[{"name": "f"}]), v.BAD_TOOL),
    "tool type not function": (
        rec(user(), {"role": "assistant", "content": "x"}, tools=[{"type": "retrieval", "function": {"name": "f"}}]),
        v.BAD_TOOL,
    ),
    "tool name with a dot": (rec(user(), {"role": "assistant", "content": "x"}, tools=[make_tool("weather.get")]), v.BAD_TOOL_NAME),
    "tool name with a space": (rec(user(), {"role": "assistant", "content": "x"}, tools=[make_tool("get weather")]), v.BAD_TOOL_NAME),
    "tool name 65 chars": (rec(user(), {"role": "assistant", "content": "x"}, tools=[make_tool(too_long_name())]), v.BAD_TOOL_NAME),
    "tool name missing": (
        rec(user(), {"role": "assistant", "content": "x"}, tools=[{"type": "function", "function": {"description": "d"}}]),
        v.BAD_TOOL_NAME,
    ),
    "tool declared twice": (rec(user(), calls(PARIS), tools=(WEATHER, WEATHER)), v.DUPLICATE_TOOL),
    "schema with a bad type": (
        rec(user(), {"role": "assistant", "content": "x"}, tools=[make_tool("f", "", {"type": "objekt"})]),
        v.BAD_TOOL_SCHEMA,
    ),
    "schema required not a list": (
        rec(user(), {"role": "assistant", "content": "x"}, tools=[make_tool("f", "", {"type": "object", "required": "city"})]),
        v.BAD_TOOL_SCHEMA,
    ),
    "parameters not an object": (
        rec(user(), {"role": "assistant", "content": "x"}, tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
        v.BAD_TOOL_SCHEMA,
    ),
    "unhashable $schema": (
        rec(user(), {"role": "assistant", "content": "x"}, tools=[make_tool("f", "", {"$schema": ["x"], "type": "object"})]),
        v.BAD_TOOL_SCHEMA,
    ),
    "$ref to nowhere (fails only when applied)": (
        rec(
            user(),
            calls(make_call("f", {"a": 1}, "c1")),
            tools=[make_tool("f", "", {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}})],
        ),
        v.BAD_TOOL_SCHEMA,
    ),
    # calls
    "undeclared tool": (rec(user(), calls(make_call("get_forecast", {"city": "Paris"}, "c1"))), v.UNDECLARED_TOOL),
    "call to a tool when none are declared": (rec(user(), calls(PARIS), tools=()), v.UNDECLARED_TOOL),
    "call without function": (rec(user(), calls({"id": "c1", "type": "function"})), v.MISSING_FIELD),
    "call without name": (rec(user(), calls({"id": "c1", "function": {"arguments": {}}})), v.MISSING_FIELD),
    "call without id": (rec(user(), calls({"type": "function", "function": {"name": "get_weather", "arguments": {"city": "P"}}})), v.MISSING_FIELD),
    "arguments still a JSON string": (rec(user(), calls(make_call("get_weather", '{"city": "Paris"}', "c1"))), v.ARGUMENTS_NOT_OBJECT),
    "arguments a list": (rec(user(), calls(make_call("get_weather", ["Paris"], "c1"))), v.ARGUMENTS_NOT_OBJECT),
    "required argument missing": (rec(user(), calls(make_call("get_weather", {"unit": "c"}, "c1"))), v.ARGUMENTS_SCHEMA),
    "argument of the wrong type": (rec(user(), calls(make_call("get_weather", {"city": 42}, "c1"))), v.ARGUMENTS_SCHEMA),
    "argument outside its enum": (rec(user(), calls(make_call("get_weather", {"city": "P", "unit": "k"}, "c1"))), v.ARGUMENTS_SCHEMA),
    "nested item of the wrong type": (rec(user(), calls(make_call("get_weather", {"city": "P", "days": [1, "2"]}, "c1"))), v.ARGUMENTS_SCHEMA),
    "same call id twice while open": (rec(user(), calls(PARIS, make_call("get_weather", {"city": "Nice"}, "c1"))), v.BAD_FIELD),
    # turn order
    "result with an unknown id": (rec(user(), calls(PARIS), result("c9"), {"role": "assistant", "content": "x"}), v.ORPHAN_TOOL_RESULT),
    "result without an id": (rec(user(), calls(PARIS), result(None), {"role": "assistant", "content": "x"}), v.ORPHAN_TOOL_RESULT),
    "result before the call": (rec(user(), result("c1"), calls(PARIS)), v.ORPHAN_TOOL_RESULT),
    "result after the next user turn": (
        rec(user(), calls(PARIS), user("and?"), result("c1"), {"role": "assistant", "content": "x"}),
        v.ORPHAN_TOOL_RESULT,
    ),
    "result answered twice": (rec(user(), calls(PARIS), result("c1"), result("c1"), {"role": "assistant", "content": "x"}), v.ORPHAN_TOOL_RESULT),
    "result without content": (rec(user(), calls(PARIS), result("c1", content=None), {"role": "assistant", "content": "x"}), v.MISSING_FIELD),
    "result named for another tool": (
        rec(user(), calls(PARIS), result("c1", name="get_time"), {"role": "assistant", "content": "x"}),
        v.BAD_FIELD,
    ),
    "one of two calls answered before the user speaks": (
        rec(user(), calls(PARIS, NICE), result("c1"), user("and?"), {"role": "assistant", "content": "x"}),
        v.UNANSWERED_CALL,
    ),
    "one of two calls never answered": (rec(user(), calls(PARIS, NICE), result("c2"), {"role": "assistant", "content": "x"}), v.UNANSWERED_CALL),
    "empty assistant turn": (rec(user(), {"role": "assistant", "content": "   "}), v.EMPTY_ASSISTANT),
    "assistant with empty tool_calls and no content": (rec(user(), {"role": "assistant", "content": None, "tool_calls": []}), v.EMPTY_ASSISTANT),
    "no assistant turn": (rec(user()), v.NO_ASSISTANT),
}  # fmt: skip


@pytest.mark.parametrize("name", BROKEN)
def test_each_rule_rejects_with_its_reason(name):
    record, reason = BROKEN[name]
    problems = v.validate_record(record)
    assert reason in [p.reason for p in problems], problems
    assert all(p.detail for p in problems)


def test_problem_details_name_the_place():
    (p,) = v.validate_record(BROKEN["argument outside its enum"][0])
    assert "messages[1].tool_calls[0]" in p.detail and "'get_weather'" in p.detail and "unit" in p.detail
    (p,) = v.validate_record(BROKEN["undeclared tool"][0])
    assert "get_forecast" in p.detail and "get_weather" in p.detail  # names what is declared
    assert str(p).startswith("undeclared_tool: ")


def test_argument_errors_lists_every_failure_path_first():
    schema = WEATHER["function"]["parameters"]
    errs = v.argument_errors(schema, {"unit": "k", "days": ["x"]})
    assert len(errs) == 3
    assert errs[0] == "'city' is a required property"
    assert any(e.startswith("days/0: ") for e in errs) and any(e.startswith("unit: ") for e in errs)
    assert v.argument_errors(schema, {"city": "Paris"}) == []


def test_check_call_gives_the_same_answer_with_and_without_cached_validators():
    declared, problems, validators = v._check_tools([WEATHER])
    assert not problems and set(validators) == {"get_weather"}
    for args in ({"city": "P"}, {"city": 1}, {}, {"city": "P", "unit": "x"}):
        call = make_call("get_weather", args, "c")
        assert v.check_call(call, declared, "w") == v.check_call(call, declared, "w", validators)


def test_schema_validator_is_cached_and_rejects_invalid_schemas():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert v.schema_validator(schema) is v.schema_validator(copy.deepcopy(schema))
    with pytest.raises(jsonschema.SchemaError):
        v.schema_validator({"type": 5})


META_CASES = [
    {
        "type": "object",
        "properties": {"a": {"type": "string", "description": "x", "default": "y"}},
        "required": ["a"],
    },
    {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}, "minItems": 1}}},
    {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
    {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
    {"type": ["string", "null"], "enum": ["a", None]},
    {"type": "object", "properties": {"a": {"type": "strin"}}},  # invalid in both
    {"type": "object", "required": "a"},  # invalid in both
    {"type": "object", "properties": {"a": {"minLength": -1}}},  # invalid in both
    {"type": "object", "properties": {"a": {"pattern": "("}}},  # invalid regex: both reject
    {"type": "object", "properties": []},  # invalid in both
]


@pytest.mark.parametrize("schema", META_CASES)
def test_draft7_meta_check_shortcut_agrees_with_2020_12(schema):
    assert v._same_in_draft7(schema)

    def ok(cls):
        try:
            cls.check_schema(schema)
            return True
        except jsonschema.SchemaError:
            return False

    assert ok(jsonschema.Draft7Validator) == ok(jsonschema.Draft202012Validator)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": [{"type": "string"}]},  # draft-7 tuple form: invalid in 2020-12
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"$ref": "#/$defs/a", "$defs": {"a": {"type": "string"}}},
        {"type": "object", "properties": {"a": {"type": "integer", "deprecated": True}}},
        {"type": "object", "dependentRequired": {"a": ["b"]}},
    ],
)
def test_draft_specific_keywords_get_the_full_2020_12_check(schema):
    assert not v._same_in_draft7(schema)


def test_array_items_in_tuple_form_is_a_bad_tool_schema():
    record = rec(
        user(),
        {"role": "assistant", "content": "x"},
        tools=[
            make_tool(
                "f",
                "",
                {"type": "object", "properties": {"a": {"type": "array", "items": [{"type": "string"}]}}},
            )
        ],
    )
    assert [p.reason for p in v.validate_record(record)] == [v.BAD_TOOL_SCHEMA]


def test_importing_the_validator_defers_rfc3987_syntax_and_its_iri_check_still_works():
    """`import jsonschema` would compile rfc3987-syntax's 39 grammars (~2 s in every kit process); the kit
    defers that import to the first "iri" format check, which then gives the library's answers."""
    import subprocess
    import sys

    pytest.importorskip("rfc3987_syntax")
    code = (
        "import sys, toolcall_kit.validate, jsonschema\n"
        "real = lambda: 'rfc3987_syntax.syntax_helpers' in sys.modules  # the module that builds the grammars\n"
        "print(real())\n"
        "c = jsonschema.FormatChecker()\n"
        "print(c.conforms('https://example.com/caf\u00e9', 'iri'), c.conforms('no scheme here', 'iri'), real())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "False", "True"]
