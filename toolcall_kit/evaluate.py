"""Evaluation: does the model call the right tool with the right arguments, and stay quiet when it should.

A case is one assistant turn, prompted with the gold conversation before it (teacher forcing); its id is
the record id for the first turn and "<id>#<n>" for the n-th. An example is right when all its cases are.
Metrics, each a rate over the cases it applies to:
- tool_selection     the set of tools called equals the set expected (or rightly none);
- arguments_exact    call cases: the calls equal the gold calls, values and types exactly, in any order;
- arguments_ast      the same by the Berkeley Function Calling Leaderboard's AST rules (`match_calls`);
- no_call            no_call / declined cases (and BFCL irrelevance): no call made;
- valid_output       the output parses as vLLM's parser reads it, names only declared tools, and its calls
                     pass their JSON Schema without invented parameters (stricter kit flags: `kit_strict`);
- uses_tool_results  answers whose gold answer quotes tool-result values quote them too.
A case is correct when its calls match by the AST rules (a call case), when no call is made and the answer
uses the results where the gold one does (an answer case), or when any call is made (BFCL live_relevance).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import product, zip_longest
from pathlib import Path
from typing import Any

from .bfcl import load as load_bfcl
from .errors import DataError, KitError, loading
from .io import STDIN, atomic_open, check_writable_dir, iter_json_lines, write_json, write_jsonl, write_text
from .records import (
    DECLINED,
    NO_CALL,
    Record,
    calls_of,
    classify,
    read_records,
    text_of,
    to_openai,
    tool_schemas,
)
from .run_files import ACCURACY_PLOT, CONFUSION_PLOT, PREDICTIONS, REPORT, SUMMARY, RunFiles
from .templates import ParsedOutput, detect_family, parse_tool_calls, render
from .validate import ARGUMENTS_NOT_OBJECT, ARGUMENTS_SCHEMA, UNDECLARED_TOOL, check_call, check_tools

# Targets shown beside the numbers: a fine-tune below them is not ready to ship.
TARGETS = {"tool_selection": 0.90, "arguments_ast": 0.85, "no_call": 0.95}
METRICS = (
    "accuracy",
    "tool_selection",
    "arguments_exact",
    "arguments_ast",
    "no_call",
    "valid_output",
    "uses_tool_results",
)
NONE_LABEL = "(none)"  # the "no tool" row / column of the confusion matrix
MISSING = "missing_prediction"

# --- argument matching by the BFCL AST rules ---------------------------------------------------------------
# bfcl_eval/eval_checker/ast_eval/ast_checker.py on JSON Schema types, one-level nested type check included;
# tests/test_bfcl.py holds it to BFCL's own checker. Differences: parallel calls are paired by a full
# bipartite matching (BFCL pairs greedily, which can only reject more); an untyped property skips type checks.

_PY_TYPE = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}
_STANDARDIZE_RE = re.compile(r"[ \,\.\/\-\_\*\^]")


def _std(v: Any) -> Any:
    """BFCL's string normalisation (drop spaces and ,./-_*^, lowercase, ' -> "); other values as they are."""
    return _STANDARDIZE_RE.sub("", v).lower().replace("'", '"') if isinstance(v, str) else v


def _schema_type(prop: dict) -> type | None:
    t = prop.get("type") if isinstance(prop, dict) else None
    if isinstance(t, list):  # ["string", "null"]: the non-null type is the one BFCL checks
        t = next((x for x in t if x != "null"), None)
    return _PY_TYPE.get(t) if isinstance(t, str) else None


def _answer_type(acceptable: list) -> type | None:
    return next((type(a) for a in acceptable if a != ""), None)


def _items_ok(value: list, answer: Any, nested: type) -> bool:
    """Each item has the schema's item type or the answer's; a non-list answer (e.g. "") skips the check."""
    return not isinstance(answer, list) or all(type(v) in (nested, _answer_type(answer)) for v in value)


def _any_accepts(errors: Iterable[str], default: str) -> str:
    """No error when one acceptable value matches, else the last one's error (`default`: none tried)."""
    for error in errors:
        if not error:
            return ""
        default = error
    return default


def _dict_error(value: dict, answer: dict) -> str:
    for k, v in value.items():
        if k not in answer:
            return f"unexpected key {k!r}"
        if _std(v) not in [_std(a) for a in answer[k]]:
            return f"key {k!r} has {v!r}, expected one of {answer[k]!r}"
    missing = [k for k, vs in answer.items() if k not in value and "" not in vs]
    return f"missing key {missing[0]!r}" if missing else ""


def _dict_ok(value: dict, acceptable: list) -> str:
    """BFCL dict_checker: one acceptable dict must take every key of `value` with a matching value."""
    errors = (_dict_error(value, a) for a in acceptable if isinstance(a, dict))
    return _any_accepts(errors, f"no acceptable value matches {value!r}")


def _list_dict_error(value: list, answer: list) -> str:
    if len(value) != len(answer):
        return f"{len(value)} objects, expected {len(answer)}"
    errors = (_dict_ok(v, [a]) for v, a in zip(value, answer, strict=True))
    return next(filter(None, errors), "")


def _value_error(
    param: str, value: Any, acceptable: list, expected: type | None, nested: type | None, variable: bool
) -> str:
    if not variable and expected is dict:
        e = _dict_ok(value, acceptable)
        return f"{param!r}: {e}" if e else ""
    if not variable and expected is list and nested is dict:
        errors = (_list_dict_error(value, a) for a in acceptable if isinstance(a, list))
        e = _any_accepts(errors, f"no acceptable list of objects matches {value!r}")
        return f"{param!r}: {e}" if e else ""
    if (not variable and expected is str) or (expected is None and isinstance(value, str)):
        if _std(value) in [_std(a) for a in acceptable if isinstance(a, str)]:
            return ""
        return f"{param!r} is {value!r}, expected one of {acceptable!r} (case and punctuation ignored)"
    if not variable and expected is list:
        got = [_std(v) for v in value]
        matched = any(isinstance(a, list) and got == [_std(x) for x in a] for a in acceptable)
    else:
        matched = value in acceptable
    return "" if matched else f"{param!r} is {value!r}, expected one of {acceptable!r}"


def _ast_error(param: str, value: Any, acceptable: list, prop: dict) -> str:
    expected = _schema_type(prop)
    nested = _schema_type(prop.get("items") or {}) if expected is list else None
    written = value
    if expected is float and type(value) is int:
        value = float(value)  # BFCL: an int is accepted where a float is expected
    # BFCL's variable-name case: the answers hold another type than the schema's; values then compare as is.
    ans_type = _answer_type(acceptable)
    variable = expected is not None and ans_type is not None and ans_type is not expected
    if expected is not None and type(value) is not expected:
        if ans_type is None or type(value) is not ans_type:
            return f"{param!r} should be {expected.__name__}, got {type(value).__name__} {value!r}"
        variable = True
    elif nested is not None and not any(_items_ok(value, a, nested) for a in acceptable):
        return f"items of {param!r} should be {nested.__name__}: {value!r}"
    error = _value_error(param, value, acceptable, expected, nested, variable)
    return error.replace(repr(value), repr(written), 1)  # the value as the model wrote it


def _exact_error(param: str, value: Any, acceptable: list, prop: dict) -> str:
    options = [a for a in acceptable if a != ""]
    wrapped = _wrap(value, prop)  # BFCL's possible answers write object values as {key: [value]}
    if any(same(value, a) or same(wrapped, a) for a in options):
        return ""
    return f"{param!r} is {value!r}, expected exactly one of {options!r}"


def same(a: Any, b: Any) -> bool:
    """Exact equality of decoded JSON values: types count (1 != 1.0, True != 1), dict key order does not."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def check_call_ast(call: dict, answer: dict, schema: dict | None, strict: bool = False) -> str:
    """Why one predicted call {"name", "arguments"} fails one possible answer {name: {param: [acceptable]}}
    ("" when it matches). `strict` compares values exactly (`same`): no normalisation, no int-for-float."""
    ((name, params),) = answer.items()
    if call.get("name") != name:
        return f"called {call.get('name')!r}, expected {name!r}"
    args = call.get("arguments")
    if not isinstance(args, dict):
        return f"arguments of {name!r} are not a JSON object"
    schema = schema or {}
    props = schema.get("properties") or {}
    missing = [p for p in schema.get("required") or [] if p not in args]
    if missing:
        return f"{name}: missing required parameter {missing[0]!r}"
    for p, value in args.items():
        # As in BFCL, a parameter the schema does not declare is unexpected even where an answer lists it.
        if p not in params or ("properties" in schema and p not in props):
            return f"{name}: unexpected parameter {p!r}"
        prop = props[p] if isinstance(props.get(p), dict) else {}
        error = (_exact_error if strict else _ast_error)(p, value, params[p], prop)
        if error:
            return f"{name}: {error}"
    missing = [p for p, acceptable in params.items() if p not in args and "" not in acceptable]
    return f"{name}: missing parameter {missing[0]!r}" if missing else ""


def match_calls(
    calls: Sequence[dict], answers: Sequence[dict], schemas: dict[str, dict], strict: bool = False
) -> str:
    """Why the predicted calls fail the possible answers ("" when they match): as many calls as answers, and
    a one-to-one pairing (any order) in which every call passes `check_call_ast` against its answer."""
    if len(calls) != len(answers):
        return f"{len(calls)} call(s), expected {len(answers)}"
    errors = [[check_call_ast(c, a, schemas.get(next(iter(a))), strict) for c in calls] for a in answers]
    answer_of_call: dict[int, int] = {}

    def pair(i: int, seen: set[int]) -> bool:  # an augmenting path (Kuhn's algorithm) that pairs answer i
        for j, error in enumerate(errors[i]):
            if not error and j not in seen:
                seen.add(j)
                if j not in answer_of_call or pair(answer_of_call[j], seen):
                    answer_of_call[j] = i
                    return True
        return False

    for i, answer in enumerate(answers):
        if not pair(i, set()):
            # The first same-name call this answer rejects; if each fits it alone, other answers took all.
            name = next(iter(answer))
            why = next((e for c, e in zip(calls, errors[i], strict=True) if c.get("name") == name and e), "")
            return why or f"too few calls to {name!r} fit the expected arguments"
    return ""


def answers_from_calls(
    calls: Iterable[tuple[str, Any]], schemas: dict[str, dict], defaults: bool, wrap: bool = True
) -> list[dict]:
    """Gold calls [(name, arguments)] as BFCL-style possible answers. With `defaults`, an omitted parameter
    may also take its schema default; without `wrap`, object values stay as written (for exact matching)."""
    out = []
    for name, args in calls:
        props = (schemas.get(name) or {}).get("properties") or {}
        params = {p: [_wrap(v, props.get(p) or {}) if wrap else v] for p, v in (args or {}).items()}
        if defaults:
            for p, prop in props.items():
                if p not in params and isinstance(prop, dict) and "default" in prop:
                    params[p] = ["", prop["default"]]
        out.append({name: params})
    return out


def _wrap(value: Any, prop: dict) -> Any:
    """A gold object value in BFCL's answer form: each key maps to a list of acceptable values."""
    if isinstance(value, dict) and _schema_type(prop) is dict:
        return {k: [v] for k, v in value.items()}
    items = prop.get("items") or {}
    if isinstance(value, list) and _schema_type(prop) is list and _schema_type(items) is dict:
        if all(isinstance(v, dict) for v in value):
            return [{k: [x] for k, x in v.items()} for v in value]
    return value


# --- cases: what is asked and what counts as right ---------------------------------------------------------
@dataclass
class Case:
    id: str  # record id, or "<record id>#<n>" for the n-th assistant turn (n >= 2)
    example_id: str
    kind: str  # records.classify of the whole record
    messages: list[dict]  # the prompt: the gold conversation before this turn
    tools: list[dict]
    expect: str  # "calls" | "none" | "any_call" (BFCL live_relevance)
    answers: list[dict] = field(default_factory=list)  # possible answers, AST rules
    exact: list[dict] = field(default_factory=list)  # possible answers for exact matching (strict)
    category: str | None = None  # BFCL category
    result_values: list = field(default_factory=list)  # tool-result values the gold answer quotes

    @property
    def schemas(self) -> dict[str, dict]:
        return tool_schemas(self.tools)

    @property
    def expected_names(self) -> list[str]:
        return [next(iter(a)) for a in self.answers]


def cases_from_records(records: Sequence[Record], turns: str = "all") -> list[Case]:
    if turns not in ("all", "first"):
        raise KitError(f"turns must be 'all' or 'first', got {turns!r}")
    record_ids = {str(r.get("id")) for r in records}
    cases: list[Case] = []
    for record in records:
        cases += [_bfcl_case(record)] if "bfcl" in record else _turn_cases(record, turns, record_ids)
    return cases


def _turn_cases(record: Record, turns: str, record_ids: set[str]) -> list[Case]:
    kind, tools, rid = classify(record), record.get("tools") or [], record["id"]
    schemas = tool_schemas(tools)
    turn_at = [i for i, m in enumerate(record["messages"]) if m.get("role") == "assistant"]
    cases = []
    for n, i in enumerate(turn_at[:1] if turns == "first" else turn_at, start=1):
        msg, history = record["messages"][i], record["messages"][:i]
        if msg.get("weight", 1) == 0:
            continue  # a turn the data marks as context, not a target
        if n > 1 and f"{rid}#{n}" in record_ids:
            raise KitError(
                f"record id {rid}#{n} is also the id of turn {n} of record {rid!r}: "
                "predictions could not tell them apart; rename that record"
            )
        calls = calls_of(msg)
        case = Case(
            id=rid if n == 1 else f"{rid}#{n}",
            example_id=rid,
            kind=kind,
            messages=history,
            tools=tools,
            expect="calls" if calls else "none",
            answers=answers_from_calls(calls, schemas, defaults=True),
            exact=answers_from_calls(calls, schemas, defaults=False, wrap=False),
        )
        if not calls:
            case.result_values = grounding_values(history, text_of(msg.get("content")) or "")
        cases.append(case)
    return cases


def _bfcl_case(record: Record) -> Case:
    info = record["bfcl"]
    prompt = [m for m in record["messages"] if not (m.get("role") == "assistant" and m.get("tool_calls"))]
    return Case(
        id=record["id"],
        example_id=record["id"],
        kind=classify(record),
        messages=prompt,
        tools=record["tools"],
        expect=info["expect"],
        answers=info["answers"],
        exact=info["answers"],
        category=info["category"],
    )


# --- does a final answer use the tool results? --------------------------------------------------------------

_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
MIN_QUOTED_CHARS = 3  # shorter strings ("ok", "C") match by accident
MAX_QUOTED_RESULT_CHARS = 40  # a plain-text result longer than this is not quoted whole


def _leaves(obj: Any) -> list:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _leaves(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _leaves(v)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [obj] if math.isfinite(obj) else []
    if isinstance(obj, str) and len(obj.strip()) >= MIN_QUOTED_CHARS:
        return [obj.strip()]
    return []


def _result_leaves(content: str) -> list:
    try:
        return _leaves(json.loads(content))
    except (json.JSONDecodeError, TypeError):
        # A plain-text result: its numbers, and the text itself when short enough to be quoted whole.
        nums = [float(x) for x in _NUMBER_RE.findall(content)]
        whole = MIN_QUOTED_CHARS <= len(content.strip()) <= MAX_QUOTED_RESULT_CHARS
        return nums + ([content.strip()] if whole else [])


def mentions(text: str, value: Any) -> bool:
    """Does `text` quote `value`? Strings: case-insensitive substring. Numbers: `value` rounded to the
    decimals a number in the text shows (18.43 is quoted by "18.4" and by "18")."""
    if isinstance(value, str):
        return value.casefold() in text.casefold()
    numbers = _NUMBER_RE.findall(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text))
    return any(abs(float(tok) - value) <= 0.5 * 10 ** -len(tok.partition(".")[2]) + 1e-9 for tok in numbers)


def grounding_values(history: Sequence[dict], gold_answer: str) -> list:
    """Values from the tool results of the last exchange that the gold answer quotes, minus those the
    user already said (echoing the user is not using a result)."""
    start = max((i for i, m in enumerate(history) if m.get("role") == "user"), default=-1)
    results = [m for m in history[start + 1 :] if m.get("role") == "tool"]
    if not results or not gold_answer:
        return []
    user_text = " ".join(text_of(m.get("content")) or "" for m in history if m.get("role") == "user")
    out: list = []
    for m in results:
        for v in _result_leaves(text_of(m.get("content")) or ""):
            if mentions(gold_answer, v) and not mentions(user_text, v) and not any(same(v, o) for o in out):
                out.append(v)
    return out


# --- predictions: one per case, from generation, an endpoint or a file --------------------------------------
@dataclass
class Prediction(ParsedOutput):
    """What a server's client receives for one case, and `raw`: the model's text or the endpoint's message."""

    raw: str | None = None


def parse_output(text: str, fmt: str = "hermes") -> Prediction:
    return Prediction(**vars(parse_tool_calls(text if isinstance(text, str) else "", fmt)), raw=text)


def structured_prediction(calls: Any, content: Any = None) -> Prediction:
    """Canonical ({"name", "arguments"}) or OpenAI-shaped calls; one that cannot be read becomes an error."""
    parsed = parse_tool_calls(calls if isinstance(calls, list) else {"tool_calls": calls}, "openai")
    content = content if isinstance(content, str) else None
    return Prediction(calls=parsed.calls, content=content, errors=parsed.errors)


def prediction_from_row(row: dict, fmt: str = "hermes") -> Prediction:
    """A predictions-file row: {"id", "tool_calls": [...]} or {"id", "output": "raw text"}."""
    if "tool_calls" not in row:
        return parse_output(row.get("output"), fmt)
    calls = row["tool_calls"] if row["tool_calls"] is not None else []
    pred = structured_prediction(calls, row.get("content"))
    errors = [*map(str, row.get("parse_errors") or []), *pred.errors]
    strict = [str(e) for e in row.get("strict_errors") or []]
    return replace(pred, errors=errors, strict_errors=strict, raw=row.get("output"))


def prediction_from_message(message: dict, fmt: str = "hermes") -> Prediction:
    """Structured `tool_calls` win; a server without a tool parser returns the calls as text in `content`."""
    raw = json.dumps(message, ensure_ascii=False)
    if message.get("tool_calls"):
        return Prediction(**vars(parse_tool_calls(message, "openai")), raw=raw)
    return replace(parse_output(message.get("content"), fmt), raw=raw)


def _check_exists(path: str | Path, what: str) -> None:
    if str(path) != STDIN and not Path(path).exists():
        raise KitError(f"{what} {path} does not exist")


def read_predictions(path: str | Path, fmt: str = "hermes") -> dict[str, Prediction]:
    """id -> Prediction from a JSONL predictions file; a bad row is a DataError naming its line."""
    _check_exists(path, "predictions file")
    out: dict[str, Prediction] = {}
    for n, row in iter_json_lines(Path(path)):
        if not isinstance(row, dict) or not isinstance(row.get("id"), (str, int)):
            raise DataError(path, n, 'a prediction must be an object with an "id"')
        if "tool_calls" not in row and "output" not in row:
            raise DataError(
                path, n, 'a prediction needs "tool_calls" (a list, [] = no call) or "output" (raw text)'
            )
        if "output" in row and "tool_calls" not in row and not isinstance(row["output"], str):
            raise DataError(path, n, '"output" must be the raw model text (a string)')
        key = str(row["id"])
        if key in out:
            raise DataError(path, n, f"id {key!r} is predicted twice")
        out[key] = prediction_from_row(row, fmt)
    return out


# --- scoring one case, then the whole run -------------------------------------------------------------------
def _names(calls: Sequence[dict]) -> list[str]:
    return [str(c.get("name")) for c in calls]


@dataclass
class Verdict:
    """One case judged: each metric (None where it does not apply), `correct`, and the first failure's
    `reason` and `detail`. The defaults are a case without a prediction."""

    id: str
    example_id: str
    kind: str
    category: str | None
    expected_tools: list[str]
    called_tools: list[str] = field(default_factory=list)
    correct: bool = False
    reason: str = MISSING
    detail: str = "no prediction for this id"
    tool_selection: bool = False
    arguments_exact: bool | None = None
    arguments_ast: bool | None = None
    no_call: bool | None = None
    uses_tool_results: bool | None = None
    valid_output: bool = False
    # what valid_output is made of
    parse_ok: bool = False
    unknown_tools: list[str] = field(default_factory=list)
    schema_failures: list[str] = field(default_factory=list)
    invented_params: list[str] = field(default_factory=list)
    kit_strict: list[str] = field(default_factory=list)  # flagged by the kit although the server accepts it
    valid_output_strict: bool = False


def _output_problems(tools: Sequence[dict], calls: Sequence[dict]) -> tuple[list, list, list]:
    """(calls to undeclared tools, arguments failing their JSON Schema, parameters it does not declare)."""
    declared, _ = check_tools(tools)
    unknown, schema_failures, invented = [], [], []
    for j, call in enumerate(calls):
        for p in check_call({"function": call}, declared, f"call {j}"):
            if p.reason == UNDECLARED_TOOL:
                unknown.append(call.get("name"))
            elif p.reason in (ARGUMENTS_SCHEMA, ARGUMENTS_NOT_OBJECT):
                schema_failures.append(p.detail)
        fn = declared.get(call.get("name"))
        params = (fn or {}).get("parameters") or {"properties": {}}
        if fn is not None and isinstance(call.get("arguments"), dict) and "properties" in params:
            props = params["properties"] or {}
            invented += [f"{call['name']}.{k}" for k in call["arguments"] if k not in props]
    return unknown, schema_failures, invented


def _first_failure(
    case: Case, pred: Prediction, quiet: bool, ast_error: str, unquoted: list
) -> tuple[str, str]:
    """(reason, detail) of the first way the prediction fails the case; ("ok", "") when it does not."""
    calls, called = pred.calls, ", ".join(_names(pred.calls))
    if case.expect == "any_call":
        return ("ok", "") if calls else ("no_call_made", "expected a call (relevance)")
    if case.expect == "none":
        if calls:
            return "over_triggered", f"called {called}; expected no call"
        if not quiet:
            return "unparseable", "; ".join(pred.errors)
        if unquoted:
            return "ignores_tool_results", "answer does not quote " + ", ".join(repr(x) for x in unquoted)
        return "ok", ""
    expected = ", ".join(case.expected_names)
    if not pred.ok:
        return "unparseable", "; ".join(pred.errors)
    if not calls:
        return "no_call_made", f"expected {expected}"
    if set(_names(calls)) != set(case.expected_names):
        return "wrong_tool", f"called {called}; expected {expected}"
    if len(calls) != len(case.answers):
        return "wrong_count", f"{len(calls)} call(s), expected {len(case.answers)}"
    return ("wrong_arguments", ast_error) if ast_error else ("ok", "")


def score_case(case: Case, pred: Prediction | None) -> Verdict:
    """The verdict of one case (a missing prediction is wrong, "missing_prediction")."""
    counts_no_call = case.kind in (NO_CALL, DECLINED) and case.expect == "none"
    grounded = case.expect == "none" and bool(case.result_values)
    call_metric = False if case.expect == "calls" else None  # the argument metrics apply to call cases only
    v = Verdict(
        id=case.id,
        example_id=case.example_id,
        kind=case.kind,
        category=case.category,
        expected_tools=case.expected_names,
        arguments_exact=call_metric,
        arguments_ast=call_metric,
        no_call=False if counts_no_call else None,
        uses_tool_results=False if grounded else None,
    )
    if pred is None:
        return v
    calls = pred.calls
    v.called_tools, v.parse_ok, v.kit_strict = _names(calls), pred.ok, list(pred.strict_errors)
    v.unknown_tools, v.schema_failures, v.invented_params = _output_problems(case.tools, calls)
    v.valid_output = pred.ok and not (v.unknown_tools or v.schema_failures or v.invented_params)
    v.valid_output_strict = v.valid_output and not v.kit_strict
    if case.expect == "any_call":
        v.tool_selection = bool(calls)
    else:
        v.tool_selection = pred.ok and set(v.called_tools) == set(case.expected_names)
    ast_error = ""
    if case.expect == "calls":
        v.arguments_exact = pred.ok and not match_calls(calls, case.exact, case.schemas, strict=True)
        ast_error = match_calls(calls, case.answers, case.schemas) if pred.ok else ""
        v.arguments_ast = pred.ok and not ast_error
    quiet = not calls if case.category else (not calls and pred.ok)  # BFCL: an unparseable call is no call
    if counts_no_call:
        v.no_call = quiet
    unquoted = [x for x in case.result_values if not mentions(pred.content or "", x)] if grounded else []
    if grounded:
        v.uses_tool_results = not unquoted
    v.reason, v.detail = _first_failure(case, pred, quiet, ast_error, unquoted)
    v.correct = v.reason == "ok"
    return v


def _rate(flags: Iterable[bool | None]) -> dict:
    vals = [bool(f) for f in flags if f is not None]
    return {"correct": sum(vals), "total": len(vals), "rate": (sum(vals) / len(vals)) if vals else None}


def _metric_block(verdicts: Sequence[Verdict]) -> dict:
    return {m: _rate(getattr(v, "correct" if m == "accuracy" else m) for v in verdicts) for m in METRICS}


def _groups(verdicts: Sequence[Verdict], keys: Callable[[Verdict], Iterable]) -> dict[str, list[Verdict]]:
    """Verdicts grouped by key, in first-seen order; a verdict joins the group of each of its keys."""
    groups: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        for k in keys(v):
            if k is not None:
                groups[k].append(v)
    return groups


def _breakdown(groups: dict[str, list[Verdict]]) -> dict[str, dict]:
    return {key: _metric_block(vs) for key, vs in sorted(groups.items())}


def per_example(verdicts: Sequence[Verdict]) -> list[dict]:
    """[{"id", "correct", "reason"}] per record: right when all its cases are; reason of the first miss."""
    out = []
    for eid, vs in _groups(verdicts, lambda v: [v.example_id]).items():
        miss = next((v for v in vs if not v.correct), None)
        if miss is None:
            out.append({"id": eid, "correct": True, "reason": "ok"})
            continue
        where = f"turn {miss.id.rsplit('#', 1)[1]}: " if miss.id != eid else ""
        detail = f": {miss.detail}" if miss.detail else ""
        out.append({"id": eid, "correct": False, "reason": f"{where}{miss.reason}{detail}"})
    return out


def confusion(verdicts: Sequence[Verdict]) -> dict:
    """Expected tool (rows) against called tool (columns); "(none)" for no call. Within a case, calls to
    an expected tool pair with it, the rest pair in order and leftovers pair with "(none)"."""
    pairs: Counter = Counter()
    for v in verdicts:
        expected, called = Counter(v.expected_tools), Counter(v.called_tools)
        common = expected & called
        pairs.update({(name, name): k for name, k in common.items()})
        rest_e, rest_c = sorted((expected - common).elements()), sorted((called - common).elements())
        pairs.update(zip_longest(rest_e, rest_c, fillvalue=NONE_LABEL))
        if not expected and not called:
            pairs[(NONE_LABEL, NONE_LABEL)] += 1
    labels = sorted({x for pair in pairs for x in pair} - {NONE_LABEL}) + [NONE_LABEL]
    matrix = [[pairs[(e, c)] for c in labels] for e in labels]
    return {"labels": labels, "matrix": matrix}


def aggregate(verdicts: Sequence[Verdict], extra: dict | None = None) -> dict:
    """The report: overall metrics, targets, breakdowns by kind / tool / BFCL category, per example."""
    examples = per_example(verdicts)
    metrics = {**_metric_block(verdicts), "example_accuracy": _rate(e["correct"] for e in examples)}
    validity = {
        "calls_made": sum(len(v.called_tools) for v in verdicts),
        "unparseable_outputs": sum(v.reason != MISSING and not v.parse_ok for v in verdicts),
        # valid for the server, yet flagged by the kit's stricter reading (unclosed tag, dropped text, ...)
        "kit_stricter_outputs": sum(v.valid_output and bool(v.kit_strict) for v in verdicts),
        "unknown_tool_calls": sum(len(v.unknown_tools) for v in verdicts),
        "schema_failures": sum(len(v.schema_failures) for v in verdicts),
        "invented_params": sum(len(v.invented_params) for v in verdicts),
        "missing_predictions": sum(v.reason == MISSING for v in verdicts),
    }
    # over-triggering per tool: called in a case that did not expect it
    unexpected = Counter(n for v in verdicts for n in set(v.called_tools) - set(v.expected_tools))
    by_tool = {
        name: {**_metric_block(vs), "expected": len(vs), "unexpected_calls": unexpected[name]}
        for name, vs in sorted(_groups(verdicts, lambda v: set(v.expected_tools)).items())
    }
    for name, n in unexpected.items():
        by_tool.setdefault(name, {"expected": 0, **_metric_block([]), "unexpected_calls": n})
    rates = {m: metrics[m]["rate"] for m in TARGETS}
    return {
        "n_examples": len(examples),
        "n_cases": len(verdicts),
        **(extra or {}),
        "metrics": metrics,
        "targets": dict(TARGETS),
        "meets_targets": {m: None if rates[m] is None else rates[m] >= t for m, t in TARGETS.items()},
        "validity": validity,
        "reasons": dict(Counter(v.reason for v in verdicts).most_common()),
        "by_kind": _breakdown(_groups(verdicts, lambda v: [v.kind])),
        "by_category": _breakdown(_groups(verdicts, lambda v: [v.category])),
        "by_tool": by_tool,
        "confusion": confusion(verdicts),
        "per_example": examples,
    }


def score_cases(
    cases: Sequence[Case], predictions: dict[str, Prediction], extra: dict | None = None
) -> tuple[dict, list[Verdict]]:
    """(report, verdicts). Cases without a prediction count as wrong ("missing_prediction");
    predictions for ids that are not cases are listed in `unknown_prediction_ids`."""
    verdicts = [score_case(c, predictions.get(c.id)) for c in cases]
    unknown = sorted(set(predictions) - {c.id for c in cases})
    return aggregate(verdicts, {**(extra or {}), "unknown_prediction_ids": unknown}), verdicts


# --- the data to evaluate on --------------------------------------------------------------------------------
def load_records(path: str | Path) -> list[Record]:
    """Canonical records (prepare's eval.jsonl), each valid, with unique ids (predictions are keyed by id)."""
    _check_exists(path, "data file")
    return read_records(path, validate=True)


def select_records(data: str | Path | None, bfcl: str | None, limit: int | None) -> tuple[list[Record], dict]:
    """Records from --data or --bfcl (exactly one), and a description of the source for the report."""
    if limit is not None and limit < 0:  # records[:-1] would silently drop the last record
        raise KitError(f"--limit must be >= 0, got {limit}")
    if (data is None) == (bfcl is None):
        raise KitError("give exactly one of --data FILE or --bfcl CATEGORY")
    if bfcl is not None:
        return load_bfcl(bfcl, limit), {"data": f"bfcl:{bfcl}", "limit": limit}
    return load_records(data)[:limit], {"data": str(data), "limit": limit}


def score(
    predictions: str | Path,
    data: str | Path | None = None,
    bfcl: str | None = None,
    fmt: str = "hermes",
    turns: str = "all",
) -> dict:
    """`toolcall-kit score`: a predictions file against --data or --bfcl; the report includes `per_case`."""
    records, source = select_records(data, bfcl, None)
    cases = cases_from_records(records, turns)
    preds = read_predictions(predictions, fmt)
    source.update(predictions=str(predictions), format=fmt, turns=turns)
    report, verdicts = score_cases(cases, preds, {"source": source})
    report["per_case"] = [{k: getattr(v, k) for k in ("id", "correct", "reason", "detail")} for v in verdicts]
    return report


# --- prediction sources: in-process generation and OpenAI-compatible endpoints ------------------------------
def render_prompts(tokenizer, cases: Sequence[Case], family) -> list[str]:
    """Each case's prompt, ready for generation, in the model's own chat template (what a server uses) when
    it has one, else in its family's training template."""
    template = "model" if getattr(tokenizer, "chat_template", None) else None
    records = ({"messages": c.messages, "tools": c.tools} for c in cases)
    return [render(tokenizer, r, family, add_generation_prompt=True, chat_template=template) for r in records]


def generate_batched(
    model,
    tokenizer,
    prompts: Sequence[str],
    batch_size: int = 8,
    max_new_tokens: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Greedy completions of `prompts` (rendered text), in their order, decoded with special tokens kept
    (Mistral's [TOOL_CALLS] is one) and cut at the first end-of-turn token.

    A later turn's prompt extends its earlier turn's, so it prefills only its new tokens after that prompt's
    cached keys and values (a third of the demo's prompt tokens): prompts go in rounds (those that extend no
    other, then those that extend one of the first round, ...), shortest first to pad little."""
    import torch

    if batch_size < 1:
        raise KitError("batch size must be at least 1")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos = [model.generation_config.eos_token_id, tokenizer.eos_token_id]  # each an id, a list of ids or None
    stop = {int(i) for e in eos for i in (e if isinstance(e, (list, tuple)) else [e]) if i is not None}
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    parent = prefix_parents(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # a parent is shorter: seen first
    depth: dict[int, int] = {}
    for i in order:
        depth[i] = depth[parent[i]] + 1 if i in parent else 0
    rounds = [[i for i in order if depth[i] == d] for d in sorted(set(depth.values()))]
    batches = [group[s : s + batch_size] for group in rounds for s in range(0, len(group), batch_size)]
    waiting = Counter(parent.values())  # prompts still to come that extend prompt j
    kept: dict[int, list] = {}  # prompt j's keys and values, while prompts that extend it wait
    out: list[str] = [""] * len(prompts)
    done = 0
    model.eval()
    with grouped_decode_attention(model), torch.inference_mode():
        for idx in batches:
            prefixes = [kept.get(parent[i]) if i in parent else None for i in idx]
            for j in [parent[i] for i in idx if i in parent]:
                waiting[j] -= 1
                if not waiting[j]:
                    kept.pop(j, None)
            batch, keep = [encoded[i] for i in idx], [waiting[i] > 0 for i in idx]
            new, prompt_kv = greedy_decode(model, batch, max_new_tokens, stop, prefixes, keep)
            kept.update({i: kv for i, kv in zip(idx, prompt_kv, strict=True) if kv is not None})
            for i, ids in zip(idx, new, strict=True):
                out[i] = tokenizer.decode(ids, skip_special_tokens=False)
            done += len(idx)
            if progress:
                progress(done, len(prompts))
    return out


def prefix_parents(encoded: Sequence[Sequence[int]]) -> dict[int, int]:
    """{i: j}: j is the longest other prompt that prompt i extends token for token (an earlier turn)."""
    by_length: dict[int, dict[tuple, int]] = defaultdict(dict)
    for j, ids in enumerate(encoded):
        by_length[len(ids)].setdefault(tuple(ids), j)
    lengths = sorted(by_length, reverse=True)
    parents = {}
    for i, ids in enumerate(encoded):
        for n in (n for n in lengths if n < len(ids)):
            j = by_length[n].get(tuple(ids[:n]))
            if j is not None:
                parents[i] = j
                break
    return parents


def prefix_cut(lengths: Sequence[int], cached: Sequence[int]) -> int:
    """How much of each row's cached prefix a batch uses: the cut that keeps the batch narrowest (the longest
    on a tie). The cache part is as wide as the longest prefix and the new part as the longest rest: one long
    row without a prefix could double the batch's width and every decoding step's cost."""
    width = {c: c + max(n - min(p, c) for n, p in zip(lengths, cached, strict=True)) for c in {0, *cached}}
    return min(sorted(width, reverse=True), key=width.__getitem__)


def greedy_decode(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop: set[int],
    prefixes: Sequence[list | None] | None = None,
    keep: Sequence[bool] | None = None,
) -> tuple[list[list[int]], list[list | None]]:
    """Greedy new tokens of a batch of prompts (token ids), each row cut before its first stop token; and,
    where `keep` asks, each prompt's own keys and values (per layer, for `prefixes` of a later batch).

    A row's cached prefix goes before its remaining tokens, both parts left-padded and the holes masked;
    positions count real tokens only (cumulative mask - 1), so the tokens are `generate`'s. Not `generate`
    itself, which keeps a finished row in the batch until the longest ends: a CPU decoding step costs ~50 ms
    plus ~6 ms a row (SmolLM2-135M, 600-token prompts, 2 cores), and one rambling answer per batch of 16 made
    evaluation ~3x longer; here a row leaves the batch and the KV cache when it ends. transformers'
    `generate_batch` does that too, but its paged attention was ~2x slower than `generate` on this CPU."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    device = next(model.parameters()).device
    cache = DynamicCache(config=model.config)
    if not all(type(layer) is DynamicLayer for layer in cache.layers):  # sliding windows: no prefixes
        prefixes, keep = None, None
    prefixes = list(prefixes or [None] * len(prompts))
    cached = [0 if p is None else p[0][0].shape[-2] for p in prefixes]
    cut = prefix_cut([len(ids) for ids in prompts], cached)
    cached = [min(n, cut) for n in cached]
    prefixes = [
        [(k[:, :n], v[:, :n]) for k, v in p] if n else None for p, n in zip(prefixes, cached, strict=True)
    ]
    rest = [list(ids[n:]) for ids, n in zip(prompts, cached, strict=True)]
    width_c, width_r = max(cached), max(len(r) for r in rest)
    mask = torch.zeros(len(prompts), width_c + width_r, dtype=torch.long, device=device)
    ids = torch.zeros(len(prompts), width_r, dtype=torch.long, device=device)
    for row, (n, r) in enumerate(zip(cached, rest, strict=True)):
        mask[row, width_c - n : width_c] = 1
        mask[row, mask.shape[1] - len(r) :] = 1
        ids[row, width_r - len(r) :] = torch.tensor(r, dtype=torch.long)
    if width_c:  # the cached prefixes, each left-padded to the longest
        ref = next(p for p in prefixes if p is not None)
        for layer, (k0, _) in enumerate(ref):
            keys = k0.new_zeros(len(prompts), k0.shape[0], width_c, k0.shape[-1])
            values = torch.zeros_like(keys)
            for row, (p, n) in enumerate(zip(prefixes, cached, strict=True)):
                if p is not None:
                    keys[row, :, width_c - n :], values[row, :, width_c - n :] = p[layer]
            cache.update(keys, values, layer)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions[:, width_c:],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    kept: list[list | None] = [None] * len(prompts)
    for row, wanted in enumerate(keep or []):
        if wanted:
            real = mask[row].bool()
            kept[row] = [(layer.keys[row][:, real], layer.values[row][:, real]) for layer in cache.layers]
    live = list(range(len(prompts)))  # original row of each row still in the batch
    new: list[list[int]] = [[] for _ in live]
    next_pos = positions[:, -1] + 1
    for _ in range(max_new_tokens):
        tokens = logits.argmax(-1)
        still = []
        for j, (row, tok) in enumerate(zip(live, tokens.tolist(), strict=True)):
            if tok not in stop:
                new[row].append(tok)
                if len(new[row]) < max_new_tokens:
                    still.append(j)
        if not still:
            break
        if len(still) < len(live):
            pick = torch.tensor(still, device=tokens.device)
            cache.batch_select_indices(pick)
            live, tokens, mask, next_pos = [live[j] for j in still], tokens[pick], mask[pick], next_pos[pick]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        logits = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        ).logits[:, -1]
        next_pos = next_pos + 1
    return new, kept


GROUPED_SDPA = "toolcall_kit_grouped_sdpa"


def grouped_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' SDPA attention, except that a grouped-query model's decoding step (one query position)
    reads each key/value head once instead of copying it for every query head that shares it.

    With a padding mask, `sdpa_attention_forward` repeats the KV cache `num_key_value_groups` times a step
    (SmolLM2-135M: 3x, ~40 MB a row at 600 tokens), and torch's `enable_gqa=True` gave wrong logits for
    left-padded rows on this CPU (torch 2.13: off by up to 20). Query heads sharing a KV head become its query
    rows instead: decoding steps ~33% faster (batch 16, bf16, 2 cores), logits equal to ~1e-4 in fp32."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len > 1 or heads == kv_heads or attention_mask is None:  # prefill: the library's path is as fast
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    import torch

    group = heads // kv_heads
    out = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(batch, kv_heads, group, dim),  # query head h uses KV head h // group, as repeat_kv does
        key,
        value,
        attn_mask=attention_mask.expand(batch, 1, group, attention_mask.shape[-1]),
        scale=scaling,
    )
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


@contextmanager
def grouped_decode_attention(model):
    """Decode with `grouped_sdpa` while inside, on a CPU model that uses SDPA; anything else is left as it is
    (GPUs evaluate through a server; this path was only measured on CPUs)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = getattr(base.config, "_attn_implementation", None)
    if before != "sdpa" or next(base.parameters()).device.type != "cpu":
        yield
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)
    base.set_attn_implementation(GROUPED_SDPA)
    try:
        yield
    finally:
        base.set_attn_implementation(before)


def generation_key(model, adapter: str | None, prompts: Sequence[str], settings: dict) -> str | None:
    """A fingerprint of the model and adapter files, prompts, settings and library versions; None when the
    model is not a local folder (a hub id can change under the same name)."""
    import torch
    import transformers

    base = getattr(model, "get_base_model", lambda: model)()
    folders = [Path(str(base.name_or_path))] + ([Path(adapter)] if adapter is not None else [])
    if not all(folder.is_dir() for folder in folders):
        return None
    h = hashlib.sha256()
    for folder in folders:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(folder)).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):  # 4 MiB at a time: weights run to GBs
                    h.update(chunk)
    h.update(json.dumps([list(prompts), settings, torch.__version__, transformers.__version__]).encode())
    return h.hexdigest()


def _generations_file(key: str) -> Path:
    from .models import cache_root

    return cache_root().parent / "generations" / f"{key}.json"


def read_cached_generations(key: str | None) -> list[str] | None:
    try:
        return json.loads(_generations_file(key).read_text(encoding="utf-8"))["texts"] if key else None
    except (OSError, ValueError, KeyError):
        return None


def eval_dtype(device: str):
    """Generation dtype: bf16 on a CPU with native bf16 (AMX / avx512_bf16: faster greedy decoding of the same
    weights), float32 on other CPUs, the checkpoint's own ("auto") on a GPU."""
    import torch

    if not device.startswith("cpu"):
        return "auto"
    native = [getattr(torch.cpu, f, None) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.bfloat16 if any(f() for f in native if f is not None) else torch.float32


def load_for_eval(model_name: str | None, adapter: str | None = None, dtype: str | None = None):
    """(model, tokenizer) on the GPU when there is one, with the LoRA `adapter` on top; with only `adapter`,
    on the base its adapter_config.json names."""
    import torch

    from .models import load_model_and_tokenizer

    if model_name is None and adapter is None:
        raise KitError("give --model (a base or merged model) and/or --adapter")
    if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
        if model_name is None:
            raise KitError(f"{adapter} has no adapter_config.json; give --model for the base")
        raise KitError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    if model_name is None:
        from peft import PeftConfig

        model_name = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype or eval_dtype(device), device=device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)  # in eval mode: is_trainable=False
    return model, tokenizer


def openai_messages(messages: Sequence[dict]) -> list[dict]:
    """Messages as an OpenAI-compatible server takes them: string arguments, no kit-only keys."""
    out = []
    for m in to_openai({"messages": list(messages)})["messages"]:
        msg = {k: v for k, v in m.items() if k in ("role", "content", "tool_calls", "tool_call_id", "name")}
        if m.get("role") == "tool":
            msg.pop("name", None)  # OpenAI's tool message has no name
        if msg.get("tool_calls"):
            msg["tool_calls"] = [
                {"id": c.get("id"), "type": "function", "function": c["function"]} for c in msg["tool_calls"]
            ]
        out.append(msg)
    return out


def openai_base_url(url: str) -> str:
    """The OpenAI base URL (ending in /v1) for a server address, its /v1, or its /v1/chat/completions: the one
    rule for every endpoint the kit talks to (`eval --endpoint`, `synth --teacher-url`)."""
    u = url.rstrip("/").removesuffix("/chat/completions")
    return u if u.endswith("/v1") else u + "/v1"


def predict_endpoint(
    cases: Sequence[Case],
    url: str,
    model: str,
    concurrency: int = 8,
    max_tokens: int = 128,
    fmt: str = "hermes",
    timeout: float = 300.0,
) -> list[Prediction]:
    """Greedy predictions from an OpenAI-compatible server at `url` (see `openai_base_url`), `concurrency`
    requests in flight. No retries: a failed request is that case's failure. No key is sent (never
    OPENAI_API_KEY): servers without auth ignore the placeholder."""
    from concurrent.futures import ThreadPoolExecutor

    from openai import OpenAI

    if concurrency < 1:
        raise KitError("concurrency must be at least 1")
    client = OpenAI(base_url=openai_base_url(url), api_key="none", timeout=timeout, max_retries=0)

    def one(case: Case) -> Prediction:
        tools = {"tools": list(case.tools)} if case.tools else {}
        messages = openai_messages(case.messages)
        try:
            reply = client.chat.completions.create(
                model=model, messages=messages, temperature=0, max_tokens=max_tokens, **tools
            )
        except Exception as e:  # an HTTP error on one case is that case's failure, not the run's
            return Prediction(content=None, errors=[f"endpoint error: {type(e).__name__}: {e}"])
        return prediction_from_message(reply.choices[0].message.model_dump(exclude_unset=True), fmt)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        preds = list(pool.map(one, cases))
    if preds and all(p.raw is None for p in preds):
        raise KitError(f"the endpoint {url} answered no request: {preds[0].errors[0]}")
    return preds


# --- reports: report.json, predictions.jsonl, summary.md, plots; compare ------------------------------------
def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _row(*cells: Any) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


# summary.md's order: the targeted metrics first
SUMMARY_METRICS = (
    "tool_selection",
    "arguments_ast",
    "arguments_exact",
    "no_call",
    "valid_output",
    "uses_tool_results",
    "accuracy",
    "example_accuracy",
)


def summary_markdown(report: dict) -> str:
    """The Markdown summary: metrics with targets beside them, then breakdowns."""
    src, n_cases = report.get("source", {}), report["n_cases"]
    title = src.get("model") or src.get("endpoint") or src.get("predictions") or "predictions"
    lines = [
        f"# Evaluation: {title}",
        "",
        f"Data: `{src.get('data')}` — {report['n_examples']} examples, {n_cases} cases (assistant turns, teacher-forced).",
    ]
    if report.get("timing"):
        lines.append(f"Generation: {report['timing'].get('seconds', 0):.1f} s for {n_cases} cases.")
    lines += ["", "| metric | value | n | target | |", "|---|---|---|---|---|"]
    lines += [_metric_row(name, report["metrics"][name]) for name in SUMMARY_METRICS]
    validity = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report["validity"].items())
    lines += ["", f"Output validity: {validity}."]
    if ids := report.get("unknown_prediction_ids"):
        lines.append(
            f"Predictions for unknown ids ({len(ids)}): {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
        )
    rated = ("accuracy", "tool_selection", "arguments_ast", "no_call")
    for title, key in (("By kind", "by_kind"), ("By BFCL category", "by_category")):
        rows = [
            (name, b["accuracy"]["total"], *_rates(b, *rated)) for name, b in (report.get(key) or {}).items()
        ]
        lines += _section(title, "| | n | accuracy | selection | arguments (AST) | no-call |", rows)
    header = "| tool | expected | accuracy | arguments (AST) | called when not expected |"
    rows = [
        (name, b["expected"], *_rates(b, "accuracy", "arguments_ast"), b["unexpected_calls"])
        for name, b in (report.get("by_tool") or {}).items()
    ]
    lines += _section("By tool", header, rows)
    lines += ["", "## Why cases failed", ""]
    lines += [f"- {reason}: {n}" for reason, n in report["reasons"].items() if reason != "ok"] or ["- none"]
    return "\n".join(lines) + "\n"


def _metric_row(name: str, r: dict) -> str:
    target = TARGETS.get(name)
    mark = "" if target is None or r["rate"] is None else ("meets" if r["rate"] >= target else "**below**")
    goal = f"> {int(target * 100)}%" if target else ""
    return _row(name, _pct(r["rate"]), f"{r['correct']}/{r['total']}", goal, mark)


def _rates(block: dict, *metrics: str) -> list[str]:
    return [_pct(block[m]["rate"]) for m in metrics]


def _section(title: str, header: str, rows: list[tuple]) -> list[str]:
    """A titled Markdown table, or nothing without rows."""
    if not rows:
        return []
    rule = "|---" * (header.count("|") - 1) + "|"
    return ["", f"## {title}", "", header, rule, *(_row(*cells) for cells in rows)]


def write_plots(report: dict, folder: Path) -> list[str]:
    """Writes accuracy_by_tool.png and confusion.png and returns their names. Each is its own Figure (no
    pyplot), so a notebook's backend and its other plots are left alone."""
    from matplotlib.figure import Figure

    def save(fig: Figure, name: str) -> str:
        fig.tight_layout()
        with atomic_open(folder / name, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
        return name

    written = []
    tools = [(k, b) for k, b in report["by_tool"].items() if b["expected"]]
    if tools:
        ax = Figure(figsize=(max(4, 0.6 * len(tools) + 2), 3.5)).subplots()
        ax.bar([k for k, _ in tools], [100 * (b["accuracy"]["rate"] or 0) for _, b in tools], color="#4c72b0")
        ax.axhline(100 * TARGETS["arguments_ast"], color="grey", linestyle="--", linewidth=1)
        ax.set(ylim=(0, 100), ylabel="cases right (%)", title="Accuracy by expected tool")
        ax.tick_params(axis="x", labelrotation=45)
        written.append(save(ax.figure, ACCURACY_PLOT))
    labels, matrix = report["confusion"]["labels"], report["confusion"]["matrix"]
    if labels:
        n = len(labels)
        ax = Figure(figsize=(max(4, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5))).subplots()
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(n), labels, rotation=45, ha="right")
        ax.set_yticks(range(n), labels)
        ax.set(xlabel="called", ylabel="expected", title="Called vs expected tools")
        for i, j in product(range(n), repeat=2):
            if matrix[i][j]:
                ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=8)
        written.append(save(ax.figure, CONFUSION_PLOT))
    return written


def prediction_row(v: Verdict, p: Prediction | None) -> dict:
    """One line of predictions.jsonl; `read_predictions` reads it back."""
    return {
        "id": v.id,
        "example_id": v.example_id,
        "output": p.raw if p else None,
        "tool_calls": p.calls if p else None,
        "content": p.content if p else None,
        "parse_errors": p.errors if p else [],
        "strict_errors": p.strict_errors if p else [],
        "expected_tools": v.expected_tools,
        "correct": v.correct,
        "reason": v.reason,
        "detail": v.detail,
    }


def write_run(
    out: str | Path, report: dict, verdicts: Sequence[Verdict], preds: dict[str, Prediction]
) -> Path:
    """runs/NAME/eval/: report.json, predictions.jsonl, summary.md, accuracy_by_tool.png, confusion.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / PREDICTIONS, [prediction_row(v, preds.get(v.id)) for v in verdicts])
    report = {**report, "plots": write_plots(report, out)}
    write_json(out / REPORT, report)
    write_text(out / SUMMARY, summary_markdown(report))
    return out


def evaluate(
    out: str | Path,
    *,
    model: str | None = None,
    adapter: str | None = None,
    data: str | None = None,
    bfcl: str | None = None,
    endpoint: str | None = None,
    endpoint_model: str | None = None,
    concurrency: int = 8,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    limit: int | None = None,
    fmt: str | None = None,
    turns: str = "all",
    log: Callable[[str], None] = print,
    dtype: str | None = None,
    cache: bool = False,
) -> dict:
    """`toolcall-kit eval`: predict every case (in process or from an endpoint), score, write the run folder.

    `dtype`: of the weights in process (None: `eval_dtype`). `cache`: reuse the texts generated by an earlier
    identical run (`generation_key`); they are scored afresh, so a changed scorer is never hidden."""
    check_writable_dir(out, "--out")  # before the generation, not after it
    records, source = select_records(data, bfcl, limit)
    cases = cases_from_records(records, turns)
    if not cases:
        raise KitError("no cases to evaluate (no assistant turns in the data)")
    t0 = time.perf_counter()
    if endpoint:
        name = endpoint_model or model
        if not name:
            raise KitError("--endpoint needs --endpoint-model (the model name the server knows)")
        fmt = fmt or "hermes"
        log(f"eval: {len(cases)} cases -> {endpoint} ({name}), concurrency {concurrency}")
        preds_list = predict_endpoint(cases, endpoint, name, concurrency, max_new_tokens, fmt)
        source.update(endpoint=endpoint, endpoint_model=name, concurrency=concurrency)
    else:
        texts, fmt = _generate(
            cases, model, adapter, dtype, batch_size, max_new_tokens, fmt, cache, log, source
        )
        preds_list = [parse_output(t, fmt) for t in texts]
    seconds = time.perf_counter() - t0
    source.update(format=fmt, turns=turns, max_new_tokens=max_new_tokens)
    preds = {c.id: p for c, p in zip(cases, preds_list, strict=True)}
    timing = {"seconds": round(seconds, 2), "cases_per_second": round(len(cases) / max(seconds, 1e-9), 3)}
    report, verdicts = score_cases(cases, preds, {"source": source, "timing": timing})
    try:
        write_run(out, report, verdicts, preds)
    except OSError as e:
        raise KitError(f"--out {out}: cannot write the report ({e.filename}: {e.strerror or e})") from None
    return report


def _generate(
    cases, model, adapter, dtype, batch_size, max_new_tokens, fmt, cache, log, source
) -> tuple[list[str], str]:
    """(generated texts, tool-call format) in process, from the cache when `cache` finds an identical run;
    adds the model, the settings and whether the texts were cached to `source`."""
    with loading("model", f"{model}{f' with adapter {adapter}' if adapter else ''}"):
        mdl, tok = load_for_eval(model, adapter, dtype=dtype)
    family = detect_family(tok)
    prompts = render_prompts(tok, cases, family)
    dtype_name = str(mdl.dtype).removeprefix("torch.")
    # The decoding attention is a setting: in bf16 its rounding can change a near-tie token.
    settings = dict(
        batch_size=batch_size, max_new_tokens=max_new_tokens, dtype=str(mdl.dtype), attention=GROUPED_SDPA
    )
    key = generation_key(mdl, adapter, prompts, settings) if cache else None
    texts = read_cached_generations(key)
    log(
        f"eval: {len(cases)} cases, family {family.name}, batch {batch_size}, up to {max_new_tokens} new tokens, "
        f"{dtype_name}" + (" (cached generations)" if texts is not None else "")
    )
    source.update(model=model, adapter=adapter, family=family.name, batch_size=batch_size, dtype=dtype_name)
    source["cached_generations"] = texts is not None
    if texts is None:
        progress = lambda done, n: log(f"  generated {done}/{n}")  # noqa: E731
        texts = generate_batched(mdl, tok, prompts, batch_size, max_new_tokens, progress=progress)
        if key:
            write_json(_generations_file(key), {"texts": texts})
    return texts, fmt or family.fmt


def resolve_eval_dir(path: str | Path) -> Path:
    """An eval folder (holding report.json) or a run folder holding eval/."""
    for folder in (Path(path), RunFiles(Path(path)).eval):
        if (folder / REPORT).exists():
            return folder
    raise KitError(f"{path} holds no report.json (nor eval/report.json): run `toolcall-kit eval` first")


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise KitError(f"{path}: unreadable ({type(e).__name__})") from None
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise KitError(f"{path}: not an eval report (no metrics)")
    return report


def compare(run_a: str | Path, run_b: str | Path) -> dict:
    """Two evaluations side by side: metric deltas (B - A) and the examples whose verdict changed."""
    a_dir, b_dir = resolve_eval_dir(run_a), resolve_eval_dir(run_b)
    a, b = _read_report(a_dir / REPORT), _read_report(b_dir / REPORT)
    rows = {}
    for name in (*METRICS, "example_accuracy"):
        rate_a, rate_b = a["metrics"][name]["rate"], b["metrics"][name]["rate"]
        delta = None if None in (rate_a, rate_b) else rate_b - rate_a
        rows[name] = {"a": rate_a, "b": rate_b, "delta": delta}
    in_a = {e["id"]: e for e in a.get("per_example", [])}
    in_b = {e["id"]: e for e in b.get("per_example", [])}
    both = [i for i in in_a if i in in_b]
    fixed = [{"id": i, "a": in_a[i]["reason"]} for i in both if not in_a[i]["correct"] and in_b[i]["correct"]]
    broken = [
        {"id": i, "b": in_b[i]["reason"]} for i in both if in_a[i]["correct"] and not in_b[i]["correct"]
    ]
    return {
        "a": str(a_dir),
        "b": str(b_dir),
        "metrics": rows,
        "fixed": fixed,
        "broken": broken,
        "only_in_a": sorted(set(in_a) - set(in_b)),
        "only_in_b": sorted(set(in_b) - set(in_a)),
    }


def format_compare(result: dict) -> str:
    lines = [f"A: {result['a']}", f"B: {result['b']}", "", f"{'metric':<20} {'A':>8} {'B':>8} {'B-A':>9}"]
    for name, r in result["metrics"].items():
        delta = "" if r["delta"] is None else f"{100 * r['delta']:+.1f} pp"
        lines.append(f"{name:<20} {_pct(r['a']):>8} {_pct(r['b']):>8} {delta:>9}")
    lines += ["", f"fixed in B ({len(result['fixed'])}):"]
    lines += [f"  {x['id']}  (A: {x['a']})" for x in result["fixed"]]
    lines += [f"broken in B ({len(result['broken'])}):"]
    lines += [f"  {x['id']}  (B: {x['b']})" for x in result["broken"]]
    if result["only_in_a"] or result["only_in_b"]:
        lines.append(f"examples only in A: {len(result['only_in_a'])}, only in B: {len(result['only_in_b'])}")
    return "\n".join(lines)
