"""Evaluation: does the model call the right tool with the right arguments, and stay quiet when it should.

    toolcall-kit eval --model runs/demo/merged --data runs/demo/data/eval.jsonl --out runs/demo/eval
    toolcall-kit eval --model packaged:smollm2-135m-instruct --adapter runs/demo/adapter --bfcl simple --limit 50 --out runs/demo/eval-bfcl
    toolcall-kit eval --endpoint http://127.0.0.1:8000/v1 --endpoint-model my-model --data eval.jsonl --out runs/x/eval
    toolcall-kit score --predictions preds.jsonl --data eval.jsonl --json
    toolcall-kit compare runs/base runs/demo

What is evaluated ("cases"): every assistant turn of a record, given the gold conversation before it
(teacher forcing). A single-turn record gives one case whose id is the record id; the n-th assistant turn
of a longer record (n >= 2) is the case "<id>#<n>", so a predictions file can address every turn. An
example is right when all its cases are. `turns="first"` keeps only each record's first assistant turn
(the single-turn benchmark; BFCL records have one turn anyway).

Metrics (rates over the cases they apply to):
- tool_selection   every case: the set of tools called equals the set expected (or rightly none);
- arguments_exact  cases that expect calls: the calls equal the gold calls, values and types exactly,
                   parallel calls in any order;
- arguments_ast    the same by the Berkeley Function Calling Leaderboard's AST rules (`match_calls`);
- no_call          cases of no_call / declined examples (and BFCL irrelevance): no call made;
- valid_output     the output parses, names only declared tools, and every call passes its JSON Schema
                   (validate.check_call) without invented parameter names. "Parses" means what vLLM's
                   parser for the format returns (templates.parse_tool_calls follows it): one broken
                   <tool_call> among several leaves no calls, an unclosed last tag is read. Where the kit
                   is stricter than the server (an unclosed tag, text the server drops) each verdict lists
                   it in `kit_strict`, `valid_output_strict` requires its absence too, and the report
                   counts such outputs as `validity.kit_stricter_outputs`;
- uses_tool_results  answer turns after tool results whose gold answer quotes result values: the
                   predicted answer quotes them too.
A case is correct when the output parses and its calls match by the AST rules (a call case), no call is
made and the answer uses the results where the gold one does (an answer case), or any call is made
(BFCL live_relevance).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError, KitError, loading
from .records import (
    DECLINED,
    NO_CALL,
    Record,
    calls_of,
    classify,
    openai_call,
    read_records,
    text_of,
    tool_schemas,
)
from .run_files import ACCURACY_PLOT, CONFUSION_PLOT, PREDICTIONS, REPORT, SUMMARY, RunFiles
from .validate import ARGUMENTS_NOT_OBJECT, ARGUMENTS_SCHEMA, UNDECLARED_TOOL, check_call, check_tools

# Targets shown beside the numbers: a fine-tune below them is not ready to ship.
TARGETS = {"tool_selection": 0.90, "arguments_ast": 0.85, "no_call": 0.95}

NONE_LABEL = "(none)"  # the "no tool" row / column of the confusion matrix
MISSING = "missing_prediction"

# ---------------------------------------------------------------------------------------------------
# Argument matching by the BFCL AST rules (bfcl_eval/eval_checker/ast_eval/ast_checker.py), on JSON Schema
# types. Kept deliberately close to the original, including its one-level nested type check. Differences:
# parallel calls are matched by a full bipartite matching (BFCL matches greedily, which can only reject
# more), and a property without a `type` skips the type check.
# ---------------------------------------------------------------------------------------------------

_PY_TYPE = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}
_STANDARDIZE_RE = re.compile(r"[ \,\.\/\-\_\*\^]")


def standardize_string(s: str) -> str:
    """BFCL's string normalisation: drop spaces and ,./-_*^, lowercase, single quotes -> double."""
    return _STANDARDIZE_RE.sub("", s).lower().replace("'", '"')


def _schema_type(prop: dict) -> type | None:
    t = prop.get("type") if isinstance(prop, dict) else None
    if isinstance(t, list):  # ["string", "null"]: the non-null type is the one BFCL checks
        t = next((x for x in t if x != "null"), None)
    return _PY_TYPE.get(t) if isinstance(t, str) else None


def _answer_type(acceptable: list) -> type | None:
    for a in acceptable:
        if a != "":
            return type(a)
    return None


def _type_check(
    param: str, value: Any, acceptable: list, expected: type, nested: type | None
) -> tuple[bool, bool, str]:
    """(ok, is_variable, error). `is_variable`: the answers hold another type (BFCL's variable-name case)."""
    ans_type = _answer_type(acceptable)
    is_variable = ans_type is not None and ans_type is not expected
    if type(value) is expected:
        if nested is None:
            return True, is_variable, ""
        for item in acceptable:
            if not isinstance(item, list):
                return True, is_variable, ""  # BFCL: a non-list answer (e.g. "") skips the item check
            inner = _answer_type(item)
            if all(type(v) is nested or type(v) is inner for v in value):
                return True, is_variable, ""
        return False, is_variable, f"items of {param!r} should be {nested.__name__}: {value!r}"
    if ans_type is not None and type(value) is ans_type:
        return True, True, ""
    return (
        False,
        is_variable,
        f"{param!r} should be {expected.__name__}, got {type(value).__name__} {value!r}",
    )


def _std(v: Any) -> Any:
    return standardize_string(v) if isinstance(v, str) else v


def _dict_ok(value: dict, acceptable: list) -> str:
    """BFCL dict_checker: one acceptable dict must take every key of `value` with a matching value."""
    error = f"no acceptable value matches {value!r}"
    for answer in acceptable:
        if answer == "" or not isinstance(answer, dict):
            continue
        error = ""
        for k, v in value.items():
            if k not in answer:
                error = f"unexpected key {k!r}"
                break
            if _std(v) not in [_std(a) for a in answer[k]]:
                error = f"key {k!r} has {v!r}, expected one of {answer[k]!r}"
                break
        if not error:
            for k, vs in answer.items():
                if k not in value and "" not in vs:
                    error = f"missing key {k!r}"
                    break
        if not error:
            return ""
    return error


def _list_dict_ok(value: list, acceptable: list) -> str:
    error = f"no acceptable list of objects matches {value!r}"
    for answer in acceptable:
        if not isinstance(answer, list):
            continue
        if len(value) != len(answer):
            error = f"{len(value)} objects, expected {len(answer)}"
            continue
        errs = [_dict_ok(v, [a]) for v, a in zip(value, answer, strict=True)]
        if not any(errs):
            return ""
        error = next(e for e in errs if e)
    return error


def _value_ok(
    param: str, value: Any, acceptable: list, expected: type | None, nested: type | None, variable: bool
) -> str:
    if not variable and expected is dict:
        e = _dict_ok(value, acceptable)
        return f"{param!r}: {e}" if e else ""
    if not variable and expected is list and nested is dict:
        e = _list_dict_ok(value, acceptable)
        return f"{param!r}: {e}" if e else ""
    if (not variable and expected is str) or (expected is None and isinstance(value, str)):
        if standardize_string(value) in [standardize_string(a) for a in acceptable if isinstance(a, str)]:
            return ""
        return f"{param!r} is {value!r}, expected one of {acceptable!r} (case and punctuation ignored)"
    if not variable and expected is list:
        got = [_std(v) for v in value]
        if any(isinstance(a, list) and got == [_std(x) for x in a] for a in acceptable):
            return ""
        return f"{param!r} is {value!r}, expected one of {acceptable!r}"
    if value in acceptable:
        return ""
    return f"{param!r} is {value!r}, expected one of {acceptable!r}"


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
    ("" when it matches). `strict` compares values exactly (`same`): no normalisation, no int-for-float.
    """
    ((name, params),) = answer.items()
    if call.get("name") != name:
        return f"called {call.get('name')!r}, expected {name!r}"
    args = call.get("arguments")
    if not isinstance(args, dict):
        return f"arguments of {name!r} are not a JSON object"
    schema = schema or {}
    props = schema.get("properties") or {}
    for p in schema.get("required") or []:
        if p not in args:
            return f"{name}: missing required parameter {p!r}"
    for p, value in args.items():
        # As in BFCL, a parameter the schema does not declare is unexpected even where an answer lists it.
        if p not in params or ("properties" in schema and p not in props):
            return f"{name}: unexpected parameter {p!r}"
        acceptable = params[p]
        if strict:
            prop = props.get(p) if isinstance(props.get(p), dict) else {}
            wrapped = _wrap(value, prop)  # BFCL's possible answers write object values as {key: [value]}
            if not any(
                same(value, a) or same(wrapped, a) for a in acceptable if not (isinstance(a, str) and a == "")
            ):
                return f"{name}: {p!r} is {value!r}, expected exactly one of {[a for a in acceptable if a != '']!r}"
            continue
        prop = props.get(p) if isinstance(props.get(p), dict) else {}
        expected = _schema_type(prop)
        nested = _schema_type(prop.get("items") or {}) if expected is list else None
        if expected is float and type(value) is int:
            value = float(value)  # BFCL: an int is accepted where a float is expected
        variable = False
        if expected is not None:
            ok, variable, err = _type_check(p, value, acceptable, expected, nested)
            if not ok:
                return f"{name}: {err}"
        err = _value_ok(p, value, acceptable, expected, nested, variable)
        if err:
            return f"{name}: {err.replace(repr(value), repr(args[p]), 1)}"  # the value as the model wrote it
    for p, acceptable in params.items():
        if p not in args and "" not in acceptable:
            return f"{name}: missing parameter {p!r}"
    return ""


def match_calls(
    calls: Sequence[dict], answers: Sequence[dict], schemas: dict[str, dict], strict: bool = False
) -> str:
    """Why the predicted calls fail the possible answers ("" when they match): same count, and a one-to-one
    pairing (any order) in which every call passes `check_call_ast` against its answer."""
    if len(calls) != len(answers):
        return f"{len(calls)} call(s), expected {len(answers)}"
    n = len(answers)
    ok = [[False] * n for _ in range(n)]
    errors: list[list[str]] = [[""] * n for _ in range(n)]
    for i, ans in enumerate(answers):
        name = next(iter(ans))
        for j, call in enumerate(calls):
            errors[i][j] = check_call_ast(call, ans, schemas.get(name), strict)
            ok[i][j] = not errors[i][j]
    match_of_call: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in range(n):
            if ok[i][j] and j not in seen:
                seen.add(j)
                if j not in match_of_call or augment(match_of_call[j], seen):
                    match_of_call[j] = i
                    return True
        return False

    for i in range(n):
        if not augment(i, set()):
            # Explain with the first same-name call this answer rejects; if every one fits it in
            # isolation, they are all taken by other answers (too few such calls).
            name = next(iter(answers[i]))
            same_name = [j for j, c in enumerate(calls) if c.get("name") == name]
            why = next((errors[i][j] for j in same_name if errors[i][j]), "")
            return why or f"too few calls to {name!r} fit the expected arguments"
    return ""


def answers_from_calls(
    calls: Iterable[tuple[str, Any]], schemas: dict[str, dict], defaults: bool, wrap: bool = True
) -> list[dict]:
    """Gold calls [(name, arguments)] as BFCL-style possible answers. With `defaults`, an optional parameter
    the gold call leaves out may also be given its schema default (the AST rules' "optional" case). Without
    `wrap`, object values stay as written (what exact matching compares with)."""
    out = []
    for name, args in calls:
        props = (schemas.get(name) or {}).get("properties") or {}
        params: dict[str, list] = {}
        for p, v in (args or {}).items() if isinstance(args, dict) else []:
            params[p] = [_wrap(v, props.get(p) or {}) if wrap else v]
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


# ---------------------------------------------------------------------------------------------------
# Cases: what is asked and what counts as right.
# ---------------------------------------------------------------------------------------------------


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
    """The cases of `records` (see the module docstring); `turns` is "all" or "first"."""
    if turns not in ("all", "first"):
        raise KitError(f"turns must be 'all' or 'first', got {turns!r}")
    cases: list[Case] = []
    record_ids = {str(r.get("id")) for r in records}
    for record in records:
        if "bfcl" in record:
            cases.append(_bfcl_case(record))
            continue
        kind = classify(record)
        tools = record.get("tools") or []
        schemas = tool_schemas(tools)
        n = 0
        for i, msg in enumerate(record["messages"]):
            if msg.get("role") != "assistant":
                continue
            n += 1
            if turns == "first" and n > 1:
                break
            if msg.get("weight", 1) == 0:
                continue  # a turn the data marks as context, not a target
            calls = calls_of(msg)
            history = record["messages"][:i]
            if n > 1 and f"{record['id']}#{n}" in record_ids:
                raise KitError(
                    f"record id {record['id']}#{n!s} is also the id of turn {n} of record {record['id']!r}: "
                    "predictions could not tell them apart; rename that record"
                )
            case = Case(
                id=record["id"] if n == 1 else f"{record['id']}#{n}",
                example_id=record["id"],
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


# --- does a final answer use the tool results? -----------------------------------------------------

_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
MIN_QUOTED_CHARS = 3  # shorter strings ("ok", "C") match by accident


def _leaves(obj: Any) -> list:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _leaves(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _leaves(v)]
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, (int, float)):
        return [obj] if math.isfinite(obj) else []
    if isinstance(obj, str):
        return [obj.strip()] if len(obj.strip()) >= MIN_QUOTED_CHARS else []
    return []


def _result_leaves(content: str) -> list:
    try:
        return _leaves(json.loads(content))
    except (json.JSONDecodeError, TypeError):
        # A plain-text result: its numbers, and the text itself when short enough to be quoted whole.
        nums = [float(x) for x in _NUMBER_RE.findall(content)]
        return nums + ([content.strip()] if MIN_QUOTED_CHARS <= len(content.strip()) <= 40 else [])


def mentions(text: str, value: Any) -> bool:
    """Does `text` quote `value`? Strings: case-insensitive substring. Numbers: a number in the text
    that is `value` rounded to the decimals it shows (18.43 is quoted by "18.4" and by "18")."""
    if isinstance(value, str):
        return value.casefold() in text.casefold()
    for tok in _NUMBER_RE.findall(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)):
        decimals = len(tok.split(".")[1]) if "." in tok else 0
        if abs(float(tok) - value) <= 0.5 * 10**-decimals + 1e-9:
            return True
    return False


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


# ---------------------------------------------------------------------------------------------------
# Predictions: one per case, from generation, an endpoint or a file.
# ---------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    calls: list[dict]  # [{"name", "arguments": dict}]: the usable calls a client of the server receives
    content: str | None = None  # text besides the calls
    errors: list[str] = field(default_factory=list)  # the server drops a call or delivers it unusable
    raw: str | None = None  # the model's text (or the endpoint's message as JSON)
    strict_errors: list[str] = field(default_factory=list)  # the kit is stricter: the server accepts these

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_output(text: str, fmt: str = "hermes") -> Prediction:
    """Raw model text -> Prediction through the one parser per format (templates.parse_tool_calls)."""
    from .templates import parse_tool_calls

    parsed = parse_tool_calls(text if isinstance(text, str) else "", fmt)
    calls = [{"name": c.get("name"), "arguments": c.get("arguments")} for c in parsed.calls]
    errors = [str(e) for e in parsed.errors]
    if not parsed.ok and not errors:
        errors = ["output could not be parsed"]
    return Prediction(
        calls=calls, content=parsed.content, errors=errors, raw=text, strict_errors=list(parsed.strict_errors)
    )


def structured_prediction(
    calls: Any,
    content: Any = None,
    errors: Sequence[str] = (),
    raw: str | None = None,
    strict_errors: Sequence[str] = (),
) -> Prediction:
    """Structured calls, canonical ({"name", "arguments"}) or OpenAI-shaped ({"function": {...}} with
    string arguments), read by the one "openai" parser. A call that cannot be read becomes an error."""
    from .templates import parse_tool_calls

    parsed = parse_tool_calls(calls if isinstance(calls, list) else {"tool_calls": calls}, "openai")
    text = content if isinstance(content, str) else None
    return Prediction(
        calls=list(parsed.calls),
        content=text,
        errors=[*map(str, errors), *parsed.errors],
        raw=raw,
        strict_errors=[str(e) for e in strict_errors],
    )


def prediction_from_row(row: dict, fmt: str = "hermes") -> Prediction:
    """A predictions-file row: {"id", "tool_calls": [...]} or {"id", "output": "raw text"}."""
    if "tool_calls" in row:
        return structured_prediction(
            row["tool_calls"] if row["tool_calls"] is not None else [],
            row.get("content"),
            row.get("parse_errors") or [],
            row.get("output"),
            row.get("strict_errors") or [],
        )
    return parse_output(row.get("output"), fmt)


def read_predictions(path: str | Path, fmt: str = "hermes") -> dict[str, Prediction]:
    """id -> Prediction from a JSONL predictions file; a bad row is a DataError naming its line."""
    from .io import STDIN, iter_json_lines

    path = Path(path)
    if str(path) != STDIN and not path.exists():
        raise KitError(f"predictions file {path} does not exist")
    out: dict[str, Prediction] = {}
    for n, row in iter_json_lines(path):  # a folder, non-UTF-8 text or a pipe are handled there
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


# ---------------------------------------------------------------------------------------------------
# Scoring one case, then the whole run.
# ---------------------------------------------------------------------------------------------------


def _names(calls: Sequence[dict]) -> list[str]:
    return [str(c.get("name")) for c in calls]


@dataclass
class Verdict:
    """One case judged: every metric that applies (None where it does not), `correct`, and the first `reason`
    it fails with its `detail`. The defaults are a case without a prediction."""

    id: str
    example_id: str
    kind: str
    category: str | None
    expected_tools: list[str]
    called_tools: list[str] = field(default_factory=list)
    correct: bool = False
    reason: str = MISSING
    detail: str = "no prediction for this id"
    # the metrics (module docstring)
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
    """(calls to undeclared tools, arguments that fail their JSON Schema, parameter names the schema does not
    declare), by the kit's one validator."""
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
    calls = pred.calls
    if case.expect == "any_call":
        return ("ok", "") if calls else ("no_call_made", "expected a call (relevance)")
    called = ", ".join(_names(calls))
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
    if ast_error:
        return "wrong_arguments", ast_error
    return "ok", ""


def score_case(case: Case, pred: Prediction | None) -> Verdict:
    """The verdict of one case (a missing prediction is wrong, "missing_prediction")."""
    counts_no_call = case.kind in (NO_CALL, DECLINED) and case.expect == "none"
    grounded = case.expect == "none" and bool(case.result_values)
    v = Verdict(
        id=case.id,
        example_id=case.example_id,
        kind=case.kind,
        category=case.category,
        expected_tools=case.expected_names,
        arguments_exact=False if case.expect == "calls" else None,
        arguments_ast=False if case.expect == "calls" else None,
        no_call=False if counts_no_call else None,
        uses_tool_results=False if grounded else None,
    )
    if pred is None:
        return v
    calls = pred.calls
    v.called_tools = _names(calls)
    v.parse_ok = pred.ok
    v.unknown_tools, v.schema_failures, v.invented_params = _output_problems(case.tools, calls)
    v.valid_output = pred.ok and not (v.unknown_tools or v.schema_failures or v.invented_params)
    v.kit_strict = list(pred.strict_errors)
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
    unquoted = []
    if grounded:
        unquoted = [x for x in case.result_values if not mentions(pred.content or "", x)]
        v.uses_tool_results = not unquoted
    v.reason, v.detail = _first_failure(case, pred, quiet, ast_error, unquoted)
    v.correct = v.reason == "ok"
    return v


def _rate(flags: Iterable[bool | None]) -> dict:
    vals = [bool(f) for f in flags if f is not None]
    return {"correct": sum(vals), "total": len(vals), "rate": (sum(vals) / len(vals)) if vals else None}


METRICS = (
    "accuracy",
    "tool_selection",
    "arguments_exact",
    "arguments_ast",
    "no_call",
    "valid_output",
    "uses_tool_results",
)


def _metric_block(verdicts: Sequence[Verdict]) -> dict:
    """Each metric's rate; "accuracy" is the rate of `correct`."""
    return {m: _rate(getattr(v, "correct" if m == "accuracy" else m) for v in verdicts) for m in METRICS}


def per_example(verdicts: Sequence[Verdict]) -> list[dict]:
    """[{"id", "correct", "reason"}] per record: right when all its cases are; reason of the first miss."""
    groups: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        groups[v.example_id].append(v)
    out = []
    for eid, vs in groups.items():
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
        exp = Counter(v.expected_tools)
        got = Counter(v.called_tools)
        common = exp & got
        for name, k in common.items():
            pairs[(name, name)] += k
        rest_e = sorted((exp - common).elements())
        rest_g = sorted((got - common).elements())
        for i in range(max(len(rest_e), len(rest_g))):
            e = rest_e[i] if i < len(rest_e) else NONE_LABEL
            g = rest_g[i] if i < len(rest_g) else NONE_LABEL
            pairs[(e, g)] += 1
        if not exp and not got:
            pairs[(NONE_LABEL, NONE_LABEL)] += 1
    labels = sorted({x for pair in pairs for x in pair} - {NONE_LABEL}) + [NONE_LABEL]
    index = {name: i for i, name in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for (e, g), k in pairs.items():
        matrix[index[e]][index[g]] += k
    return {"labels": labels, "matrix": matrix}


def aggregate(verdicts: Sequence[Verdict], extra: dict | None = None) -> dict:
    """The report: overall metrics, targets, breakdowns by kind / tool / BFCL category, per example."""
    examples = per_example(verdicts)
    metrics = _metric_block(verdicts)
    metrics["example_accuracy"] = _rate(e["correct"] for e in examples)
    validity = {
        "calls_made": sum(len(v.called_tools) for v in verdicts),
        "unparseable_outputs": sum(1 for v in verdicts if v.reason != MISSING and not v.parse_ok),
        # valid for the server, yet flagged by the kit's stricter reading (unclosed tag, dropped text, ...)
        "kit_stricter_outputs": sum(1 for v in verdicts if v.valid_output and v.kit_strict),
        "unknown_tool_calls": sum(len(v.unknown_tools) for v in verdicts),
        "schema_failures": sum(len(v.schema_failures) for v in verdicts),
        "invented_params": sum(len(v.invented_params) for v in verdicts),
        "missing_predictions": sum(1 for v in verdicts if v.reason == MISSING),
    }
    by_kind = {k: _metric_block(vs) for k, vs in sorted(_group(verdicts, lambda v: [v.kind]).items())}
    by_category = {}
    if any(v.category for v in verdicts):
        by_category = {
            c: _metric_block(vs) for c, vs in sorted(_group(verdicts, lambda v: [v.category]).items())
        }
    by_tool = {}
    for name, vs in sorted(_group(verdicts, lambda v: sorted(set(v.expected_tools))).items()):
        block = _metric_block(vs)
        block["expected"] = len(vs)
        by_tool[name] = block
    for v in verdicts:  # over-triggering per tool: called where it was not expected
        for name in set(v.called_tools) - set(v.expected_tools):
            by_tool.setdefault(name, {"expected": 0, **_metric_block([])})
            by_tool[name]["unexpected_calls"] = by_tool[name].get("unexpected_calls", 0) + 1
    for block in by_tool.values():
        block.setdefault("unexpected_calls", 0)
    meets = {
        m: (metrics[m]["rate"] >= t if metrics[m]["rate"] is not None else None) for m, t in TARGETS.items()
    }
    report = {
        "n_examples": len(examples),
        "n_cases": len(verdicts),
        **(extra or {}),
        "metrics": metrics,
        "targets": dict(TARGETS),
        "meets_targets": meets,
        "validity": validity,
        "reasons": dict(Counter(v.reason for v in verdicts).most_common()),
        "by_kind": by_kind,
        "by_category": by_category,
        "by_tool": by_tool,
        "confusion": confusion(verdicts),
        "per_example": examples,
    }
    return report


def _group(verdicts: Sequence[Verdict], keys: Callable[[Verdict], list]) -> dict[str, list[Verdict]]:
    out: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        for k in keys(v):
            if k is not None:
                out[k].append(v)
    return out


def score_cases(
    cases: Sequence[Case], predictions: dict[str, Prediction], extra: dict | None = None
) -> tuple[dict, list[Verdict]]:
    """(report, verdicts). Cases without a prediction count as wrong ("missing_prediction");
    predictions for ids that are not cases are listed in `unknown_prediction_ids`."""
    verdicts = [score_case(c, predictions.get(c.id)) for c in cases]
    known = {c.id for c in cases}
    unknown = sorted(k for k in predictions if k not in known)
    report = aggregate(verdicts, {**(extra or {}), "unknown_prediction_ids": unknown})
    return report, verdicts


# ---------------------------------------------------------------------------------------------------
# Loading the data to evaluate on.
# ---------------------------------------------------------------------------------------------------


def load_records(path: str | Path) -> list[Record]:
    """Canonical records (prepare's eval.jsonl), each valid and with a unique id (predictions are keyed by id)."""
    from .io import STDIN

    if str(path) != STDIN and not Path(path).exists():
        raise KitError(f"data file {path} does not exist")
    return read_records(path, validate=True)


def select_records(data: str | Path | None, bfcl: str | None, limit: int | None) -> tuple[list[Record], dict]:
    """Records from --data or --bfcl (exactly one), and a description of the source for the report."""
    _check_limit(limit)
    if (data is None) == (bfcl is None):
        raise KitError("give exactly one of --data FILE or --bfcl CATEGORY")
    if bfcl is not None:
        from . import bfcl as bfcl_data

        records = bfcl_data.load(bfcl, limit)
        return records, {"data": f"bfcl:{bfcl}", "limit": limit}
    records = load_records(data)
    if limit is not None:
        records = records[:limit]
    return records, {"data": str(data), "limit": limit}


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:  # records[:-1] would silently drop the last record
        raise KitError(f"--limit must be >= 0, got {limit}")


def score(
    predictions: str | Path,
    data: str | Path | None = None,
    bfcl: str | None = None,
    fmt: str = "hermes",
    turns: str = "all",
) -> dict:
    """`toolcall-kit score`: score a predictions file against --data or --bfcl; the report includes
    `per_example` [{"id", "correct", "reason"}] and `per_case`."""
    records, source = select_records(data, bfcl, None)
    cases = cases_from_records(records, turns)
    preds = read_predictions(predictions, fmt)
    report, verdicts = score_cases(
        cases, preds, {"source": {**source, "predictions": str(predictions), "format": fmt, "turns": turns}}
    )
    report["per_case"] = [
        {"id": v.id, "correct": v.correct, "reason": v.reason, "detail": v.detail} for v in verdicts
    ]
    return report


# ---------------------------------------------------------------------------------------------------
# Prediction sources: in-process generation and OpenAI-compatible endpoints.
# ---------------------------------------------------------------------------------------------------


def render_prompts(tokenizer, cases: Sequence[Case], family) -> list[str]:
    """Each case's prompt as text with the generation prompt: the model's own chat template (what a server
    uses) when it has one, else its family's training template."""
    from .templates import render

    template = "model" if getattr(tokenizer, "chat_template", None) else None
    return [
        render(
            tokenizer,
            {"messages": c.messages, "tools": c.tools},
            family,
            add_generation_prompt=True,
            chat_template=template,
        )
        for c in cases
    ]


def _stop_ids(model, tokenizer) -> set[int]:
    ids = set()
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(x) for x in src)
    return ids


def generate_batched(
    model,
    tokenizer,
    prompts: Sequence[str],
    batch_size: int = 8,
    max_new_tokens: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Greedy completions of `prompts` (rendered text), `batch_size` at a time with left padding.

    Prompts are sorted by length so a batch pads little; outputs come back in the input order, decoded
    with special tokens kept (Mistral's [TOOL_CALLS] is one) and cut at the first end-of-turn token.
    """
    import torch

    if batch_size < 1:
        raise KitError("batch size must be at least 1")
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    stop = _stop_ids(model, tokenizer)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    model.eval()
    done = 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, padding=True, return_tensors="pt")
        with torch.inference_mode():
            new = greedy_decode(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device), max_new_tokens, stop
            )
        for i, ids in zip(idx, new, strict=True):
            out[i] = tokenizer.decode(ids, skip_special_tokens=False)
        done += len(idx)
        if progress:
            progress(done, len(order))
    return out


def greedy_decode(model, input_ids, attention_mask, max_new_tokens: int, stop: set[int]) -> list[list[int]]:
    """Greedy new tokens of a left-padded batch, each row cut before its first stop token.

    Written out instead of `model.generate` because generate keeps a finished row in the batch until the
    longest one ends: on a CPU a decoding step costs ~50 ms plus ~6 ms a row (SmolLM2-135M, 600-token prompts,
    2 cores), and one rambling answer per batch of 16 made evaluation ~3x longer than its tokens need.
    Here a row leaves the batch (and the KV cache) when it ends, so batches can be large. transformers'
    continuous batching (`generate_batch`) does this too, but its paged attention was ~2x slower than
    `generate` on this CPU. Positions follow `generate`'s rule for left padding (cumulative mask - 1), so
    the tokens are the ones `generate` picks.
    """
    import torch
    from transformers import DynamicCache

    rows = input_ids.shape[0]
    live = list(range(rows))  # original row of each row still in the batch
    new: list[list[int]] = [[] for _ in range(rows)]
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config)
    logits = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    next_pos = positions[:, -1] + 1
    for _ in range(max_new_tokens):
        tokens = logits.argmax(-1)
        keep = []
        for j, (row, tok) in enumerate(zip(live, tokens.tolist(), strict=True)):
            if tok in stop:
                continue
            new[row].append(tok)
            if len(new[row]) < max_new_tokens:
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(live):
            pick = torch.tensor(keep, device=tokens.device)
            cache.batch_select_indices(pick)
            live, tokens, mask, next_pos = [live[j] for j in keep], tokens[pick], mask[pick], next_pos[pick]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        logits = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        ).logits[:, -1]
        next_pos = next_pos + 1
    return new


def _generations_dir() -> Path:
    from .models import cache_root

    return cache_root().parent / "generations"


def _folder_digest(h, folder: Path) -> bool:
    """Feed every file of a model or adapter folder into `h`; False for a hub id (nothing local to hash)."""
    if not folder.is_dir():
        return False
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return True


def generation_key(model, adapter: str | None, prompts: Sequence[str], settings: dict) -> str | None:
    """A fingerprint of everything that decides the generated texts, or None when the model is not a local
    folder (a hub id can change under the same name)."""
    import hashlib

    import torch
    import transformers

    h = hashlib.sha256()
    base = getattr(model, "get_base_model", lambda: model)()
    if not _folder_digest(h, Path(str(base.name_or_path))):
        return None
    if adapter is not None and not _folder_digest(h, Path(adapter)):
        return None
    h.update(json.dumps([list(prompts), settings, torch.__version__, transformers.__version__]).encode())
    return h.hexdigest()


def read_cached_generations(key: str | None) -> list[str] | None:
    if key is None:
        return None
    f = _generations_dir() / f"{key}.json"
    try:
        return json.loads(f.read_text(encoding="utf-8"))["texts"]
    except (OSError, ValueError, KeyError):
        return None


def write_cached_generations(key: str | None, texts: list[str]) -> None:
    from .io import write_json

    if key is not None:
        write_json(_generations_dir() / f"{key}.json", {"texts": texts})


def eval_dtype(device: str):
    """Generation dtype: bf16 on a CPU with native bf16 (AMX / avx512_bf16: faster greedy decoding of the same
    weights), float32 on other CPUs, the checkpoint's own ("auto") on a GPU."""
    import torch

    if not device.startswith("cpu"):
        return "auto"
    native = [getattr(torch.cpu, f, None) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.bfloat16 if any(f() for f in native if f is not None) else torch.float32


def load_for_eval(model_name: str | None, adapter: str | None = None, dtype: str | None = None):
    """(model, tokenizer) for evaluation: a base or merged model, optionally with a LoRA adapter on top.
    With only `adapter`, the base named in its adapter_config.json is used."""
    from .models import load_model_and_tokenizer

    if model_name is None:
        if adapter is None:
            raise KitError("give --model (a base or merged model) and/or --adapter")
        cfg = Path(adapter) / "adapter_config.json"
        if not cfg.exists():
            raise KitError(f"{adapter} has no adapter_config.json; give --model for the base")
        model_name = json.loads(cfg.read_text())["base_model_name_or_path"]
    if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
        raise KitError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # On the GPU when there is one.
    model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype or eval_dtype(device), device=device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        model.eval()
    return model, tokenizer


def openai_messages(messages: Sequence[dict]) -> list[dict]:
    """Messages as an OpenAI-compatible server takes them: string arguments, no kit-only keys."""
    out = []
    for m in messages:
        msg = {k: v for k, v in m.items() if k in ("role", "content", "tool_calls", "tool_call_id", "name")}
        if msg.get("tool_calls"):
            msg["tool_calls"] = [
                {"id": c.get("id"), "type": "function", "function": openai_call(c)["function"]}
                for c in msg["tool_calls"]
            ]
        if msg.get("role") == "tool":
            msg.pop("name", None)
        out.append(msg)
    return out


def endpoint_client(url: str, timeout: float = 300.0, api_key: str | None = None):
    """An `openai` client for a server's `/v1` base URL (a full `.../chat/completions` URL is accepted too).
    No retries: a failed request is that case's failure. A key is sent only when given (never OPENAI_API_KEY);
    servers without auth ignore the placeholder."""
    from openai import OpenAI

    base = url.rstrip("/").removesuffix("/chat/completions")
    return OpenAI(base_url=base, api_key=api_key or "none", timeout=timeout, max_retries=0)


def request_endpoint(
    client, model: str, messages: Sequence[dict], tools: Sequence[dict], max_tokens: int = 128
) -> dict:
    """One greedy chat completion with `tools`; returns choices[0].message as the server sent it."""
    extra = {"tools": list(tools)} if tools else {}
    reply = client.chat.completions.create(
        model=model, messages=openai_messages(messages), temperature=0, max_tokens=max_tokens, **extra
    )
    return reply.choices[0].message.model_dump(exclude_unset=True)


def prediction_from_message(message: dict, fmt: str = "hermes") -> Prediction:
    """An endpoint's message -> Prediction. Structured `tool_calls` win; a server without a tool parser
    returns the calls as text in `content`, which is then parsed with the model's format."""
    raw = json.dumps(message, ensure_ascii=False)
    if message.get("tool_calls"):
        from .templates import parse_tool_calls

        parsed = parse_tool_calls(message, "openai")
        return Prediction(
            calls=list(parsed.calls), content=parsed.content, errors=list(parsed.errors), raw=raw
        )
    pred = parse_output(message.get("content") or "", fmt)
    pred.raw = raw
    return pred


def predict_endpoint(
    cases: Sequence[Case],
    url: str,
    model: str,
    concurrency: int = 8,
    max_tokens: int = 128,
    fmt: str = "hermes",
    timeout: float = 300.0,
    api_key: str | None = None,
) -> list[Prediction]:
    """Predictions from an OpenAI-compatible server, `concurrency` requests in flight (threads)."""
    from concurrent.futures import ThreadPoolExecutor

    if concurrency < 1:
        raise KitError("concurrency must be at least 1")

    client = endpoint_client(url, timeout, api_key)

    def one(case: Case) -> Prediction:
        try:
            message = request_endpoint(client, model, case.messages, case.tools, max_tokens)
        except Exception as e:  # an HTTP error on one case is that case's failure, not the run's
            return Prediction(calls=[], errors=[f"endpoint error: {type(e).__name__}: {e}"], raw=None)
        return prediction_from_message(message, fmt)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        preds = list(pool.map(one, cases))
    if preds and all(p.raw is None for p in preds):
        raise KitError(f"the endpoint {url} answered no request: {preds[0].errors[0]}")
    return preds


# ---------------------------------------------------------------------------------------------------
# Reports: report.json, predictions.jsonl, summary.md, plots; compare.
# ---------------------------------------------------------------------------------------------------


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def summary_markdown(report: dict) -> str:
    """The Markdown summary: metrics with targets beside them, then breakdowns."""
    m = report["metrics"]
    src = report.get("source", {})
    lines = [
        f"# Evaluation: {src.get('model') or src.get('endpoint') or src.get('predictions') or 'predictions'}",
        "",
    ]
    lines.append(
        f"Data: `{src.get('data')}` — {report['n_examples']} examples, {report['n_cases']} cases "
        f"(assistant turns, teacher-forced)."
    )
    if report.get("timing"):
        t = report["timing"]
        lines.append(f"Generation: {t.get('seconds', 0):.1f} s for {report['n_cases']} cases.")
    lines += ["", "| metric | value | n | target | |", "|---|---|---|---|---|"]
    for name in (
        "tool_selection",
        "arguments_ast",
        "arguments_exact",
        "no_call",
        "valid_output",
        "uses_tool_results",
        "accuracy",
        "example_accuracy",
    ):
        r = m[name]
        target = TARGETS.get(name)
        mark = (
            "" if target is None or r["rate"] is None else ("meets" if r["rate"] >= target else "**below**")
        )
        tcell = f"> {int(target * 100)}%" if target else ""
        lines.append(f"| {name} | {_pct(r['rate'])} | {r['correct']}/{r['total']} | {tcell} | {mark} |")
    val = report["validity"]
    lines += ["", "Output validity: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in val.items()) + "."]
    if report.get("unknown_prediction_ids"):
        ids = report["unknown_prediction_ids"]
        lines.append(
            f"Predictions for unknown ids ({len(ids)}): {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
        )
    for title, key in (("By kind", "by_kind"), ("By BFCL category", "by_category")):
        if report.get(key):
            lines += [
                "",
                f"## {title}",
                "",
                "| | n | accuracy | selection | arguments (AST) | no-call |",
                "|---|---|---|---|---|---|",
            ]
            for name, b in report[key].items():
                lines.append(
                    f"| {name} | {b['accuracy']['total']} | {_pct(b['accuracy']['rate'])} | "
                    f"{_pct(b['tool_selection']['rate'])} | {_pct(b['arguments_ast']['rate'])} | "
                    f"{_pct(b['no_call']['rate'])} |"
                )
    if report.get("by_tool"):
        lines += [
            "",
            "## By tool",
            "",
            "| tool | expected | accuracy | arguments (AST) | called when not expected |",
            "|---|---|---|---|---|",
        ]
        for name, b in report["by_tool"].items():
            lines.append(
                f"| {name} | {b['expected']} | {_pct(b['accuracy']['rate'])} | "
                f"{_pct(b['arguments_ast']['rate'])} | {b['unexpected_calls']} |"
            )
    lines += ["", "## Why cases failed", ""]
    lines += [f"- {reason}: {n}" for reason, n in report["reasons"].items() if reason != "ok"] or ["- none"]
    return "\n".join(lines) + "\n"


def write_plots(report: dict, folder: Path) -> list[str]:
    """accuracy_by_tool.png and confusion.png; returns the file names. Each is drawn on its own Figure (no
    pyplot): a notebook's backend and its other plots are left alone."""
    from matplotlib.figure import Figure

    from .io import atomic_open

    written = []
    tools = [(k, b) for k, b in report["by_tool"].items() if b["expected"]]
    if tools:
        fig = Figure(figsize=(max(4, 0.6 * len(tools) + 2), 3.5))
        ax = fig.subplots()
        names = [k for k, _ in tools]
        ax.bar(names, [100 * (b["accuracy"]["rate"] or 0) for _, b in tools], color="#4c72b0")
        ax.axhline(100 * TARGETS["arguments_ast"], color="grey", linestyle="--", linewidth=1)
        ax.set_ylim(0, 100)
        ax.set_ylabel("cases right (%)")
        ax.set_title("Accuracy by expected tool")
        ax.tick_params(axis="x", labelrotation=45)
        fig.tight_layout()
        with atomic_open(folder / ACCURACY_PLOT, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
        written.append(ACCURACY_PLOT)
    conf = report["confusion"]
    if conf["labels"]:
        n = len(conf["labels"])
        fig = Figure(figsize=(max(4, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5)))
        ax = fig.subplots()
        ax.imshow(conf["matrix"], cmap="Blues")
        ax.set_xticks(range(n), conf["labels"], rotation=45, ha="right")
        ax.set_yticks(range(n), conf["labels"])
        ax.set_xlabel("called")
        ax.set_ylabel("expected")
        for i in range(n):
            for j in range(n):
                if conf["matrix"][i][j]:
                    ax.text(j, i, str(conf["matrix"][i][j]), ha="center", va="center", fontsize=8)
        ax.set_title("Called vs expected tools")
        fig.tight_layout()
        with atomic_open(folder / CONFUSION_PLOT, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
        written.append(CONFUSION_PLOT)
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
    from .io import write_json, write_jsonl, write_text

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

    `dtype`: the weights' dtype for in-process generation (None: bfloat16 on a CPU with native bf16, else
    float32; the checkpoint's own on a GPU). `cache`: reuse the generated texts of an earlier identical run
    (same model files, adapter files, rendered prompts, settings and library versions; see `generation_key`);
    they are scored afresh every time, so a changed scorer is never hidden."""
    from .io import check_writable_dir

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
        from .templates import detect_family

        with loading("model", f"{model}{f' with adapter {adapter}' if adapter else ''}"):
            mdl, tok = load_for_eval(model, adapter, dtype=dtype)
        family = detect_family(tok)
        fmt = fmt or family.fmt
        prompts = render_prompts(tok, cases, family)
        settings = {"batch_size": batch_size, "max_new_tokens": max_new_tokens, "dtype": str(mdl.dtype)}
        key = generation_key(mdl, adapter, prompts, settings) if cache else None
        texts = read_cached_generations(key)
        hit = texts is not None
        log(
            f"eval: {len(cases)} cases, family {family.name}, batch {batch_size}, up to {max_new_tokens} new tokens, "
            f"{str(mdl.dtype).removeprefix('torch.')}" + (" (cached generations)" if hit else "")
        )
        if texts is None:
            texts = generate_batched(
                mdl,
                tok,
                prompts,
                batch_size,
                max_new_tokens,
                progress=lambda d, n: log(f"  generated {d}/{n}"),
            )
            write_cached_generations(key, texts)
        preds_list = [parse_output(t, fmt) for t in texts]
        source.update(
            model=model,
            adapter=adapter,
            family=family.name,
            batch_size=batch_size,
            dtype=str(mdl.dtype).removeprefix("torch."),
            cached_generations=hit,
        )
    seconds = time.perf_counter() - t0
    source.update(format=fmt, turns=turns, max_new_tokens=max_new_tokens)
    preds = {c.id: p for c, p in zip(cases, preds_list, strict=True)}
    report, verdicts = score_cases(
        cases,
        preds,
        {
            "source": source,
            "timing": {
                "seconds": round(seconds, 2),
                "cases_per_second": round(len(cases) / max(seconds, 1e-9), 3),
            },
        },
    )
    try:
        write_run(out, report, verdicts, preds)
    except OSError as e:
        raise KitError(f"--out {out}: cannot write the report ({e.filename}: {e.strerror or e})") from None
    return report


def resolve_eval_dir(path: str | Path) -> Path:
    """An eval folder (holding report.json) or a run folder holding eval/."""
    p = Path(path)
    for cand in (p, RunFiles(p).eval):
        if (cand / REPORT).exists():
            return cand
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
        delta = None if rate_a is None or rate_b is None else rate_b - rate_a
        rows[name] = {"a": rate_a, "b": rate_b, "delta": delta}
    in_a = {e["id"]: e for e in a.get("per_example", [])}
    in_b = {e["id"]: e for e in b.get("per_example", [])}
    both = [i for i in in_a if i in in_b]
    return {
        "a": str(a_dir),
        "b": str(b_dir),
        "metrics": rows,
        "fixed": [{"id": i, "a": in_a[i]["reason"]} for i in both if not in_a[i]["correct"] and in_b[i]["correct"]],
        "broken": [{"id": i, "b": in_b[i]["reason"]} for i in both if in_a[i]["correct"] and not in_b[i]["correct"]],
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
