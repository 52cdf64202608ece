"""The agent loop: registry schemas, validated execution, stopping rules, task success; a scripted model for
the loop's logic (the loop, not the model, is under test) and one real model for the mechanics."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

import pytest

from toolcall_kit import evaluate as E
from toolcall_kit.agent import (
    ToolRegistry,
    expectations_from_record,
    run_agent,
    run_record,
    schema_from_function,
    task_success,
)
from toolcall_kit.errors import KitError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_caller import build_tiny_caller  # noqa: E402

DATA = Path(__file__).parent / "data" / "eval_small.jsonl"


def tc(name: str, **args) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


def scripted(*outputs):
    """A stand-in model that returns `outputs` in turn and records what it was shown."""
    seen = []

    def generate(messages, tools):
        seen.append((messages, tools))
        return outputs[min(len(seen) - 1, len(outputs) - 1)]

    generate.seen = seen
    return generate


@pytest.fixture
def travel():
    """get_weather and convert_currency mocks returning the fixture's (ev-5) tool results, counting calls."""
    reg = ToolRegistry()
    log = []

    @reg.register
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict:
        """Current weather in a city.

        Longer text that is not part of the description."""
        log.append(("get_weather", city))
        if city == "Atlantis":
            raise LookupError("no such city")
        return {"temp_c": 18, "condition": "sunny"}

    @reg.register(
        name="convert_currency",
        parameters={
            "type": "object",
            "properties": {
                "amount": {"type": "number"},
                "from": {"type": "string"},
                "to": {"type": "string"},
            },
            "required": ["amount", "from", "to"],
        },
    )
    def convert(**kw) -> dict:  # explicit schema: "from" is not a Python parameter name
        log.append(("convert_currency", kw["amount"]))
        return {"result": 92.5, "currency": "EUR"}

    reg.log = log
    return reg


def test_schema_from_type_hints():
    def f(
        city: str,
        days: int,
        ratio: float,
        tags: list[str],
        opts: dict,
        unit: Literal["c", "f"] = "c",
        note: str | None = None,
        strict: bool = False,
    ):
        pass

    assert schema_from_function(f) == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "ratio": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "opts": {"type": "object"},
            "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
            "note": {"type": ["string", "null"], "default": None},
            "strict": {"type": "boolean", "default": False},
        },
        "required": ["city", "days", "ratio", "tags", "opts"],
    }


def test_registry_refuses_what_it_cannot_describe(travel):
    def no_hint(city):
        pass

    def var_kw(**kw):
        pass

    with pytest.raises(KitError, match=r"no_hint\(city\): add a type hint"):
        travel.register(no_hint)
    with pytest.raises(KitError, match=r"var_kw\(kw\): only named parameters"):
        travel.register(var_kw)
    with pytest.raises(KitError, match="is declared twice"):
        travel.register(lambda city: None, name="get_weather", parameters={"type": "object"})
    with pytest.raises(KitError, match="1-64 letters"):
        travel.register(lambda: None, name="os.system", parameters={"type": "object"})
    tools = travel.tools()
    assert [t["function"]["name"] for t in tools] == ["get_weather", "convert_currency"]
    assert tools[0]["function"]["description"] == "Current weather in a city."


def test_multi_step_task_with_a_scripted_model(travel):
    record = next(r for r in E.load_records(DATA) if r["id"] == "ev-5")
    gen = scripted(
        tc("convert_currency", amount=100, **{"from": "USD", "to": "EUR"}),
        tc("get_weather", city="Berlin"),
        "100 USD is 92.5 EUR, and Berlin is 18 C and sunny.",
    )
    result, verdict = run_record(record, travel, gen, max_steps=5)
    assert result.stopped == "answered" and result.steps == 3
    assert travel.log == [("convert_currency", 100), ("get_weather", "Berlin")]
    assert [m["role"] for m in result.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert result.messages[3] == {
        "role": "tool",
        "tool_call_id": "call_1_0",
        "name": "convert_currency",
        "content": '{"result": 92.5, "currency": "EUR"}',
    }
    # the model saw the first result when it made its second call
    assert gen.seen[1][0][-1]["content"] == '{"result": 92.5, "currency": "EUR"}'
    assert verdict == {"success": True, "calls_ok": True, "values_ok": True, "reasons": []}
    _, steps, values = expectations_from_record(record)
    assert [[c["name"] for c in s] for s in steps] == [["convert_currency"], ["get_weather"]]
    assert values == [92.5, 18, "sunny"]


def test_task_failures_are_explained(travel):
    record = next(r for r in E.load_records(DATA) if r["id"] == "ev-5")
    gen = scripted(tc("convert_currency", amount=10, **{"from": "USD", "to": "EUR"}), "It is 92.5 EUR.")
    result, verdict = run_record(record, travel, gen)
    assert verdict["success"] is False and verdict["calls_ok"] is False and verdict["values_ok"] is False
    assert verdict["reasons"] == [
        "1 call step(s), expected 2",
        "step 1: convert_currency: 'amount' is 10, expected one of [100]",
        "answer does not quote 18, 'sunny'",
    ]


def test_only_registered_functions_with_valid_arguments_run(travel):
    gen = scripted(
        tc("get_weather", city=5) + tc("os_system", cmd="rm -rf /") + tc("get_weather", city="Atlantis"),
        "Sorry, I could not find that.",
    )
    result = run_agent(gen, "weather?", travel, max_steps=3)
    assert travel.log == [("get_weather", "Atlantis")]  # only the valid call ran (and raised inside)
    results = [json.loads(m["content"]) for m in result.messages if m["role"] == "tool"]
    assert "fail its schema" in results[0]["error"] and "5 is not of type 'string'" in results[0]["error"]
    assert "'os_system', which is not declared" in results[1]["error"]
    assert results[2] == {"error": "LookupError: no such city"}
    assert [c.ok for c in result.calls] == [False, False, False]
    assert result.stopped == "answered" and result.final_text == "Sorry, I could not find that."


def test_step_limit_and_unparseable_output(travel):
    looping = run_agent(scripted(tc("get_weather", city="Rome")), "weather?", travel, max_steps=3)
    assert looping.stopped == "step_limit" and looping.steps == 3 and len(looping.calls) == 3
    assert task_success(looping)["reasons"] == ["stopped: step_limit"]
    broken = run_agent(scripted('<tool_call>{"name": "get_weather", "argu'), "weather?", travel)
    assert broken.stopped == "unparseable" and broken.steps == 1 and broken.calls == []
    assert broken.errors and "truncated" in broken.errors[0]
    with pytest.raises(KitError):
        run_agent(scripted("hi"), "hi", travel, max_steps=0)


def test_endpoint_shaped_messages(travel):
    """A generator may return an OpenAI message (what endpoint_generator does): string arguments parse."""
    msg = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "x",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    }
    result = run_agent(scripted(msg, {"role": "assistant", "content": "Cold."}), "weather?", travel)
    assert travel.log == [("get_weather", "Oslo")] and result.final_text == "Cold."


@pytest.mark.slow
def test_real_model_loop(tmp_path_factory, travel):
    """The tiny caller (a real model that always calls get_weather(Paris)) drives the loop to its limit."""
    from toolcall_kit.agent import model_generator

    folder = build_tiny_caller(tmp_path_factory.getbasetemp() / "tiny-caller")
    result = run_agent(
        model_generator(str(folder), max_new_tokens=40), "What's the weather in Paris?", travel, max_steps=3
    )
    assert result.stopped == "step_limit" and result.steps == 3
    assert travel.log == [("get_weather", "Paris")] * 3
    assert [m["role"] for m in result.messages] == ["user"] + ["assistant", "tool"] * 3
    assert all(c.ok and c.result == '{"temp_c": 18, "condition": "sunny"}' for c in result.calls)
