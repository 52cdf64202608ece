"""The tool-executing loop: the model calls, the kit runs only registered Python functions, and asks again.

    from toolcall_kit.agent import ToolRegistry, run_agent, model_generator

    tools = ToolRegistry()

    @tools.register
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict:
        \"\"\"Current weather in a city.\"\"\"
        return {"temp_c": 18, "condition": "sunny"}

    result = run_agent(model_generator("runs/demo/merged"), "Weather in Berlin?", tools, max_steps=4)
    print(result.final_text, result.stopped)

Safety: a call runs only when its name is a registered function and its arguments pass that function's
JSON Schema (validate.check_call, the kit's one validator); nothing the model writes is ever evaluated
as code. An unknown tool, invalid arguments or an exception inside the function become an error result
the model sees on its next step. The loop stops when the model answers without a call ("answered"),
when its output cannot be parsed ("unparseable"), or after `max_steps` model calls ("step_limit").

The model side is any callable `generate(messages, tools) -> str | dict`: raw text (parsed with the
family's format) or an OpenAI message dict (an endpoint's reply). `model_generator` and
`endpoint_generator` make one from a local model or an OpenAI-compatible server.
"""

from __future__ import annotations

import copy
import inspect
import json
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import KitError
from .records import Record, make_call, make_tool, text_of
from .validate import check_call, check_tools

Generate = Callable[[list[dict], list[dict]], "str | dict"]

_JSON_TYPES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    tuple: "array",
    type(None): "null",
}


def _type_schema(hint: Any, where: str) -> dict:
    """JSON Schema for a type hint: str/int/float/bool/None, list[X], tuple, dict, Literal, Optional/Union."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    if origin is typing.Literal:
        types_ = sorted({_JSON_TYPES.get(type(a), "string") for a in args})
        return {"type": types_[0] if len(types_) == 1 else types_, "enum": list(args)}
    if origin in (list, tuple, Sequence):
        if origin is tuple:  # tuple[X, ...] has one item type; tuple[X, Y] has none to give
            item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        else:
            item = args[0] if args else None
        return {"type": "array", **({"items": _type_schema(item, where)} if item is not None else {})}
    if origin is dict:
        return {"type": "object"}
    if origin in (typing.Union, types.UnionType):
        subs = [_type_schema(a, where) for a in args]
        if all(set(s) == {"type"} and isinstance(s["type"], str) for s in subs):
            return {"type": [s["type"] for s in subs]}
        return {"anyOf": subs}
    raise KitError(
        f"{where}: cannot derive a JSON Schema from the type {hint!r}; pass parameters= explicitly"
    )


def schema_from_function(fn: Callable) -> dict:
    """A JSON Schema object for `fn`'s parameters from its type hints; defaulted parameters are optional."""
    name = getattr(fn, "__name__", "function")
    hints = typing.get_type_hints(fn)
    props: dict[str, dict] = {}
    required: list[str] = []
    for p in inspect.signature(fn).parameters.values():
        where = f"{name}({p.name})"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise KitError(
                f"{where}: only named parameters can be tool arguments; pass parameters= explicitly"
            )
        if p.name not in hints:
            raise KitError(f"{where}: add a type hint (str, int, float, bool, list[...], dict, Literal[...])")
        schema = _type_schema(hints[p.name], where)
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        else:
            schema["default"] = p.default
        props[p.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


@dataclass
class RegisteredTool:
    fn: Callable
    tool: dict  # OpenAI shape: {"type": "function", "function": {...}}


class ToolRegistry:
    """The only functions the loop may run, each with the JSON Schema its arguments must pass."""

    def __init__(self) -> None:
        self._tools: dict[str, RegisteredTool] = {}

    def register(
        self,
        fn: Callable | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: dict | None = None,
    ):
        """Register `fn` (usable as `@reg.register` or `@reg.register(name=..., parameters=...)`).
        The schema comes from the type hints unless `parameters` gives one; description from the docstring."""

        def add(f: Callable) -> Callable:
            tool_name = name or f.__name__
            doc = inspect.getdoc(f) or ""
            desc = description if description is not None else doc.split("\n\n")[0].replace("\n", " ")
            tool = make_tool(
                tool_name, desc, parameters if parameters is not None else schema_from_function(f)
            )
            _, problems = check_tools([*(t.tool for t in self._tools.values()), tool])
            if problems:
                raise KitError(f"cannot register {tool_name!r}: {problems[0]}")
            self._tools[tool_name] = RegisteredTool(f, tool)
            return f

        return add(fn) if fn is not None else add

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def tools(self) -> list[dict]:
        """The `tools` list for the prompt / the request."""
        return [copy.deepcopy(t.tool) for t in self._tools.values()]

    def execute(self, name: str, arguments: Any) -> tuple[str, bool]:
        """(result content, ok). Runs the function only for a registered name with valid arguments."""
        declared = {n: t.tool["function"] for n, t in self._tools.items()}
        problems = check_call(
            {"function": {"name": name, "arguments": arguments}}, declared, f"call to {name!r}"
        )
        if problems:
            return json.dumps({"error": problems[0].detail}), False
        try:
            value = self._tools[name].fn(**arguments)
        except Exception as e:  # the tool's own failure is a result the model should see, not a crash
            return json.dumps({"error": f"{type(e).__name__}: {e}"}), False
        return (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)), True


@dataclass
class ExecutedCall:
    step: int
    name: str
    arguments: Any
    result: str
    ok: bool


@dataclass
class AgentResult:
    messages: list[dict]
    final_text: str
    stopped: str  # "answered" | "unparseable" | "step_limit"
    steps: int  # model calls made
    calls: list[ExecutedCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # parse problems, by step

    def call_steps(self) -> list[list[dict]]:
        """Executed calls grouped by the model step that made them: [[{"name", "arguments"}]]."""
        groups: dict[int, list[dict]] = {}
        for c in self.calls:
            groups.setdefault(c.step, []).append({"name": c.name, "arguments": c.arguments})
        return [groups[k] for k in sorted(groups)]


# A model step that emits hundreds of calls (a degenerate loop) must not run hundreds of real functions.
MAX_CALLS_PER_STEP = 8


def run_agent(
    generate: Generate,
    conversation: str | Sequence[dict],
    registry: ToolRegistry,
    max_steps: int = 5,
    fmt: str = "hermes",
    max_calls_per_step: int = MAX_CALLS_PER_STEP,
) -> AgentResult:
    """Run the conversation until the model answers without a call, up to `max_steps` model calls. At most
    `max_calls_per_step` of one model step's calls are executed; the rest are dropped and named in `errors`."""
    from .templates import parse_tool_calls

    if max_steps < 1:
        raise KitError("max_steps must be at least 1")
    if max_calls_per_step < 1:
        raise KitError("max_calls_per_step must be at least 1")
    messages = (
        [{"role": "user", "content": conversation}]
        if isinstance(conversation, str)
        else copy.deepcopy(list(conversation))
    )
    tools = registry.tools()
    result = AgentResult(messages=messages, final_text="", stopped="step_limit", steps=0)
    for step in range(max_steps):
        out = generate(copy.deepcopy(messages), copy.deepcopy(tools))
        result.steps += 1
        parsed = parse_tool_calls(out, "openai" if isinstance(out, dict) else fmt)
        result.errors += [f"step {step + 1}: {e}" for e in parsed.errors]
        if not parsed.calls:
            messages.append({"role": "assistant", "content": parsed.content})
            result.final_text = parsed.content
            result.stopped = "answered" if parsed.ok else "unparseable"
            return result
        wanted = parsed.calls
        if len(wanted) > max_calls_per_step:
            result.errors.append(
                f"step {step + 1}: {len(wanted)} calls in one step; only the first {max_calls_per_step} were run"
            )
            wanted = wanted[:max_calls_per_step]
        calls = [make_call(c["name"], c["arguments"], f"call_{step + 1}_{j}") for j, c in enumerate(wanted)]
        messages.append({"role": "assistant", "content": parsed.content or None, "tool_calls": calls})
        for call in calls:
            fn = call["function"]
            content, ok = registry.execute(fn["name"], fn["arguments"])
            result.calls.append(ExecutedCall(step + 1, fn["name"], fn["arguments"], content, ok))
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "name": fn["name"], "content": content}
            )
    return result


# --- task success ------------------------------------------------------------------------------------------


def expectations_from_record(record: Record) -> tuple[list[dict], list[list[dict]], list]:
    """(prompt messages, expected call steps, expected answer values) of a multi-step record: the prompt is
    the conversation before the first assistant turn, the steps are its gold calls turn by turn, and the
    values are the tool-result values its gold final answer quotes (right when the registered mocks return
    the record's results)."""
    from .evaluate import grounding_values

    msgs = record["messages"]
    first = next((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), len(msgs))
    steps = [
        [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in m["tool_calls"]]
        for m in msgs
        if m.get("role") == "assistant" and m.get("tool_calls")
    ]
    final = next(
        (
            i
            for i in range(len(msgs) - 1, -1, -1)
            if msgs[i].get("role") == "assistant" and not msgs[i].get("tool_calls")
        ),
        None,
    )
    values = (
        grounding_values(msgs[:final], text_of(msgs[final].get("content")) or "") if final is not None else []
    )
    return msgs[:first], steps, values


def task_success(
    result: AgentResult,
    expected_steps: Sequence[Sequence[dict]] | None = None,
    expected_values: Sequence[Any] | None = None,
    tools: Sequence[dict] | None = None,
) -> dict:
    """Did the agent do the task? It must answer (not stop on the step limit or bad output), make the
    expected calls step by step (any order within a step; arguments by the AST rules where given, names
    only where not), and its final answer must quote every expected value (evaluate.mentions)."""
    from .evaluate import answers_from_calls, match_calls, mentions

    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools or []}
    reasons = []
    if result.stopped != "answered":
        reasons.append(f"stopped: {result.stopped}")
    calls_ok = None
    if expected_steps is not None:
        got = result.call_steps()
        calls_ok = len(got) == len(expected_steps)
        if not calls_ok:
            reasons.append(f"{len(got)} call step(s), expected {len(expected_steps)}")
        for k, (g, e) in enumerate(zip(got, expected_steps, strict=False), 1):
            if all("arguments" in c for c in e):
                answers = answers_from_calls([(c["name"], c["arguments"]) for c in e], schemas, defaults=True)
                why = match_calls(g, answers, schemas)
            else:
                names_g, names_e = sorted(c["name"] for c in g), sorted(c["name"] for c in e)
                why = "" if names_g == names_e else f"called {names_g}, expected {names_e}"
            if why:
                calls_ok = False
                reasons.append(f"step {k}: {why}")
    values_ok = None
    if expected_values:
        missing = [v for v in expected_values if not mentions(result.final_text, v)]
        values_ok = not missing
        if missing:
            reasons.append("answer does not quote " + ", ".join(repr(v) for v in missing))
    return {"success": not reasons, "calls_ok": calls_ok, "values_ok": values_ok, "reasons": reasons}


def run_record(
    record: Record, registry: ToolRegistry, generate: Generate, max_steps: int = 5, fmt: str = "hermes"
) -> tuple[AgentResult, dict]:
    """Replay a multi-step record's task with live (mock) tools and judge it against the record's gold."""
    prompt, steps, values = expectations_from_record(record)
    result = run_agent(generate, prompt, registry, max_steps, fmt)
    return result, task_success(result, steps, values, registry.tools())


# --- generators ---------------------------------------------------------------------------------------------


def model_generator(model: Any, tokenizer: Any = None, max_new_tokens: int = 256) -> Generate:
    """`generate` for a local model (a name/folder, or a loaded model with its tokenizer); greedy."""
    from .evaluate import generate_batched
    from .templates import detect_family, render

    if tokenizer is None:
        from .models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(model)
    family = detect_family(tokenizer)
    template = "model" if getattr(tokenizer, "chat_template", None) else None

    def generate(messages: list[dict], tools: list[dict]) -> str:
        prompt = render(
            tokenizer,
            {"messages": messages, "tools": tools},
            family,
            add_generation_prompt=True,
            chat_template=template,
        )
        return generate_batched(model, tokenizer, [prompt], batch_size=1, max_new_tokens=max_new_tokens)[0]

    return generate


def endpoint_generator(
    url: str, model: str, max_tokens: int = 256, timeout: float = 300.0, api_key: str | None = None
) -> Generate:
    """`generate` for an OpenAI-compatible server: returns its message dict (structured tool_calls)."""
    from .evaluate import request_endpoint

    def generate(messages: list[dict], tools: list[dict]) -> dict:
        return request_endpoint(url, model, messages, tools, max_tokens, timeout, api_key)

    return generate
