"""BFCL: data read from the bfcl-eval wheel, Gorilla -> JSON Schema, AST scoring checked against BFCL's own
checker, and the never-train guard."""

from __future__ import annotations

import collections
import copy
import importlib.util
import json
import random
import sys
import types

import pytest

from toolcall_kit import bfcl
from toolcall_kit import evaluate as E
from toolcall_kit.cli import main
from toolcall_kit.errors import KitError
from toolcall_kit.io import read_jsonl
from toolcall_kit.validate import check_tools

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bfcl_eval") is None, reason="bfcl-eval not installed"
)


def test_categories_and_sizes():
    # Sizes as documented for bfcl-eval==2026.3.23 (shared/ENVIRONMENT.md), counted here from the files.
    sizes = {
        "simple": 400,
        "multiple": 200,
        "parallel": 200,
        "parallel_multiple": 200,
        "irrelevance": 240,
        "live_simple": 258,
        "live_multiple": 1053,
        "live_irrelevance": 884,
    }
    for name, n in sizes.items():
        assert len(bfcl.load(name)) == n, name
    assert len(bfcl.load("simple,parallel", limit=3)) == 6
    assert set(bfcl.resolve_categories("all")) >= {
        "simple_python",
        "live_relevance",
        "live_parallel_multiple",
    }


def test_unknown_and_unsupported_categories():
    with pytest.raises(KitError, match="unknown BFCL category 'simpel'"):
        bfcl.load("simpel")
    with pytest.raises(KitError, match="not supported: Java-syntax"):
        bfcl.load("simple_java")


def test_gorilla_types_to_json_schema():
    gorilla = {
        "type": "dict",
        "properties": {
            "radius": {"type": "float", "description": "r"},
            "point": {"type": "tuple", "items": {"type": "integer"}},
            "anything": {"type": "any"},
            "opts": {"type": "dict", "properties": {"deep": {"type": "boolean", "optional": True}}},
            "maybe": {"type": "string", "enum": ["a", "b"], "default": None},
        },
        "required": ["radius"],
    }
    assert bfcl.gorilla_to_json_schema(gorilla) == {
        "type": "object",
        "properties": {
            "radius": {"type": "number", "description": "r"},
            "point": {"type": "array", "items": {"type": "integer"}},
            "anything": {"type": "string"},  # BFCL's own mapping of "any"
            "opts": {"type": "object", "properties": {"deep": {"type": "boolean"}}},
            "maybe": {"type": ["string", "null"], "enum": ["a", "b", None], "default": None},
        },
        "required": ["radius"],
    }
    assert gorilla["type"] == "dict"  # the input is not modified


def test_record_of_simple_python_0():
    r = bfcl.load("simple", limit=1)[0]
    assert r["id"] == "simple_python_0" and r["kind"] == "single_call"
    fn = r["tools"][0]["function"]
    assert fn["name"] == "calculate_triangle_area"
    assert fn["parameters"]["properties"]["base"] == {
        "type": "integer",
        "description": "The base of the triangle.",
    }
    assert r["messages"][0]["content"].startswith("Find the area of a triangle with a base of 10")
    # gold turn: the first acceptable value of each parameter ("units" before the optional marker "")
    assert r["messages"][1]["tool_calls"][0]["function"]["arguments"] == {
        "base": 10,
        "height": 5,
        "unit": "units",
    }
    assert r["bfcl"]["answers"] == [
        {"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}
    ]


def test_dotted_names_are_renamed_everywhere():
    r = bfcl.load("simple", limit=2)[1]  # "math.factorial"
    assert r["tools"][0]["function"]["name"] == "math_factorial"
    assert list(r["bfcl"]["answers"][0]) == ["math_factorial"]
    assert r["bfcl"]["names"] == {"math_factorial": "math.factorial"}


def test_every_converted_tool_is_valid_json_schema():
    records = bfcl.load("all")
    assert len(records) == sum(len(bfcl.load(c)) for c in bfcl.resolve_categories("all"))
    bad = [r["id"] for r in records if check_tools(r["tools"])[1]]
    assert bad == []


# --- our AST rules against BFCL's own checker ------------------------------------------------------------


@pytest.fixture(scope="module")
def bfcl_checker():
    """BFCL's ast_checker, imported with stubs for the package __init__ (which imports every API client)
    and model_config (which needs them). Restores sys.modules afterwards."""
    spec = importlib.util.find_spec("bfcl_eval")
    saved = {k: v for k, v in sys.modules.items() if k == "bfcl_eval" or k.startswith("bfcl_eval.")}
    pkg = types.ModuleType("bfcl_eval")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["bfcl_eval"] = pkg

    class _Cfg:
        underscore_to_dot = False

    mc = types.ModuleType("bfcl_eval.constants.model_config")
    mc.MODEL_CONFIG_MAPPING = collections.defaultdict(_Cfg)
    sys.modules["bfcl_eval.constants.model_config"] = mc
    try:
        from bfcl_eval.constants.enums import Language
        from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

        yield ast_checker, Language.PYTHON
    finally:
        for k in [k for k in sys.modules if k == "bfcl_eval" or k.startswith("bfcl_eval.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def _first(acceptable):
    for a in acceptable:
        if a != "":
            return True, a
    return False, None


def _unwrap(v):
    if isinstance(v, dict):
        return {k: _first(vs)[1] for k, vs in v.items() if _first(vs)[0]}
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return [_unwrap(x) for x in v]
    return v


def _variants(gold, rng):
    """The gold calls, reordered, one short, and single-parameter mutations of the kinds models make."""
    yield gold
    if len(gold) > 1:
        yield list(reversed(gold))
    yield gold[:-1]
    for _ in range(6):
        c = copy.deepcopy(gold)
        name = next(iter(c[rng.randrange(len(c))]))
        args = next(x for x in c if name in x)[name]
        op = rng.choice(
            ["upper", "int_float", "float_int", "drop", "add", "type", "num", "str", "rev", "punct"]
        )
        keys = list(args)
        if op == "add":
            args["zz_extra"] = 1
        elif keys:
            k = rng.choice(keys)
            v = args[k]
            if op == "drop":
                del args[k]
            elif op == "upper" and isinstance(v, str):
                args[k] = v.upper()
            elif op == "punct" and isinstance(v, str):
                args[k] = v.replace(" ", "-") + "."
            elif op == "int_float" and type(v) is int:
                args[k] = float(v)
            elif op == "float_int" and type(v) is float and v.is_integer():
                args[k] = int(v)
            elif op == "type":
                args[k] = str(v) if not isinstance(v, str) else 7
            elif op == "num" and type(v) in (int, float):
                args[k] = v + 1
            elif op == "str" and isinstance(v, str):
                args[k] = v + "x"
            elif op == "rev" and isinstance(v, list) and len(v) > 1:
                args[k] = list(reversed(v))
        yield c


def test_ast_rules_agree_with_bfcls_checker(bfcl_checker):
    ast_checker, python = bfcl_checker
    rng = random.Random(0)
    agree, disagree = 0, []
    verdicts: collections.Counter = collections.Counter()
    data = bfcl.data_dir()
    for cat in [
        "simple_python",
        "multiple",
        "parallel",
        "parallel_multiple",
        "live_simple",
        "live_multiple",
        "live_parallel",
        "live_parallel_multiple",
    ]:
        name = bfcl._data_file(cat).name
        entries = read_jsonl(data / name)
        answers = {r["id"]: r["ground_truth"] for r in read_jsonl(data / "possible_answer" / name)}
        records = {r["id"]: r for r in bfcl.load(cat)}
        for e in entries:
            gt = answers[e["id"]]
            gold = [
                {n: {p: _unwrap(_first(acc)[1]) for p, acc in params.items() if _first(acc)[0]}}
                for a in gt
                for n, params in a.items()
            ]
            rec = records[e["id"]]
            schemas = {t["function"]["name"]: t["function"]["parameters"] for t in rec["tools"]}
            for variant in _variants(gold, rng):
                theirs = ast_checker(
                    copy.deepcopy(e["function"]),
                    copy.deepcopy(variant),
                    copy.deepcopy(gt),
                    python,
                    cat,
                    "model",
                )
                ours_calls = [
                    {"name": bfcl.sanitize_name(n), "arguments": a} for c in variant for n, a in c.items()
                ]
                ours = E.match_calls(ours_calls, rec["bfcl"]["answers"], schemas) == ""
                verdicts[theirs["valid"]] += 1
                if ours == theirs["valid"]:
                    agree += 1
                else:
                    disagree.append((e["id"], ours, theirs))
    assert agree > 15000 and min(verdicts.values()) > 5000  # many right and many wrong variants
    # The one documented difference: BFCL pairs parallel calls greedily, we find a full matching, so we
    # may only ever accept more, and only where BFCL reports that it could not find a match.
    for eid, ours, theirs in disagree:
        assert ours and theirs["error_type"] == "parallel_function_checker_no_order:cannot_find_match", eid
    assert len(disagree) <= 3, disagree


# --- scoring BFCL predictions -------------------------------------------------------------------------------


def test_score_bfcl_predictions_file(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    rows = [
        # simple_python_0: right (the optional "unit" omitted)
        {
            "id": "simple_python_0",
            "tool_calls": [{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}],
        },
        # simple_python_1: math.factorial renamed to math_factorial; 5.0 is not an integer
        {"id": "simple_python_1", "tool_calls": [{"name": "math_factorial", "arguments": {"number": 5.0}}]},
        # simple_python_2: OpenAI-shaped with string arguments, right
        {
            "id": "simple_python_2",
            "tool_calls": [
                {"type": "function", "function": {"name": "math_hypot", "arguments": '{"x": 4, "y": 5}'}}
            ],
        },
        {"id": "bogus_7", "tool_calls": []},
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", "--bfcl", "simple", "--predictions", str(preds), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    m = report["metrics"]
    assert (m["accuracy"]["correct"], m["accuracy"]["total"]) == (2, 400)  # 397 missing count as wrong
    assert report["validity"]["missing_predictions"] == 397
    assert report["unknown_prediction_ids"] == ["bogus_7"]
    first = {e["id"]: e for e in report["per_example"][:3]}
    assert first["simple_python_0"]["correct"] and first["simple_python_2"]["correct"]
    assert (
        first["simple_python_1"]["reason"].startswith("wrong_arguments")
        and "int" in first["simple_python_1"]["reason"]
    )
    assert report["by_category"]["simple_python"]["accuracy"]["correct"] == 2


def test_irrelevance_scoring_follows_bfcl(tmp_path):
    preds = tmp_path / "p.jsonl"
    rows = [
        {"id": "irrelevance_0", "output": "I cannot compute that with the tools I have."},  # right
        {
            "id": "irrelevance_1",
            "tool_calls": [{"name": "math_sum", "arguments": {"numbers": [1, 2, 3]}}],
        },  # wrong
        # BFCL: output that does not decode as a call is no call, hence right on irrelevance
        {"id": "irrelevance_2", "output": "<tool_call>{broken</tool_call>"},
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = E.score(preds, bfcl="irrelevance")
    per = {e["id"]: e["correct"] for e in report["per_example"][:3]}
    assert per == {"irrelevance_0": True, "irrelevance_1": False, "irrelevance_2": True}
    assert (report["metrics"]["no_call"]["correct"], report["metrics"]["no_call"]["total"]) == (2, 240)


def test_live_relevance_expects_any_call():
    cases = E.cases_from_records(bfcl.load("live_relevance", limit=1))
    assert cases[0].expect == "any_call"
    name = cases[0].tools[0]["function"]["name"]
    assert E.score_case(cases[0], E.structured_prediction([{"name": name, "arguments": {}}])).correct
    assert not E.score_case(cases[0], E.structured_prediction([])).correct


# --- never train on BFCL ----------------------------------------------------------------------------------


def test_is_bfcl_and_the_training_guard():
    rec = bfcl.load("live_multiple", limit=1)[0]
    assert bfcl.is_bfcl(rec)
    stripped = {"messages": copy.deepcopy(rec["messages"]), "tools": rec["tools"]}  # marker and id gone
    assert bfcl.is_bfcl(stripped)  # the copied question still gives it away
    assert bfcl.is_bfcl({"id": "simple_python_12", "messages": []})
    mine = {"id": "parallel_1", "messages": [{"role": "user", "content": "Weather in Paris and Rome?"}]}
    assert not bfcl.is_bfcl(mine)  # a generic id and a question that is not BFCL's
    short = {"messages": [{"role": "user", "content": "Who is Lebron James?"}]}  # in BFCL, but anyone may ask
    assert not bfcl.is_bfcl(short)
    bfcl.assert_not_bfcl([mine, short])
    with pytest.raises(
        KitError, match=r"1 BFCL evaluation record\(s\) \(live_multiple_0-0-0\); never train on BFCL"
    ):
        bfcl.assert_not_bfcl([mine, rec])
