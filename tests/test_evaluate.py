"""Evaluation: AST rules, metrics on a hand-scored fixture, parser robustness, reports, generation sources.

Expected numbers below were worked out by hand from tests/data/eval_small.jsonl (6 records, 8 assistant
turns) and tests/data/eval_small_predictions.jsonl; the comments give the reasoning per case.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from toolcall_kit import evaluate as E
from toolcall_kit.cli import main
from toolcall_kit.errors import DataError, KitError

sys.path.insert(0, str(Path(__file__).parent))
from served import free_port, local_server, stub_openai_server  # noqa: E402
from tiny_caller import CALL_TEXT, build_tiny_caller  # noqa: E402

DATA = Path(__file__).parent / "data" / "eval_small.jsonl"
PREDS = Path(__file__).parent / "data" / "eval_small_predictions.jsonl"

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "default": "c"}},
    "required": ["city"],
}
NUMS = {
    "type": "object",
    "properties": {
        "x": {"type": "number"},
        "n": {"type": "integer"},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "prefs": {"type": "object"},
    },
}


def call(name, **args):
    return {"name": name, "arguments": args}


# --- the AST rules, case by case ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, acceptable, schema, ok",
    [
        ({"city": "new-york"}, {"city": ["New York"]}, WEATHER, True),  # BFCL: case, '-' and ' ' ignored
        ({"city": "NYC"}, {"city": ["New York"]}, WEATHER, False),
        ({"city": "Paris"}, {"city": ["Paris"], "unit": ["", "c"]}, WEATHER, True),  # optional omitted
        ({"city": "Paris", "unit": "c"}, {"city": ["Paris"], "unit": ["", "c"]}, WEATHER, True),
        ({"city": "Paris", "unit": "f"}, {"city": ["Paris"], "unit": ["", "c"]}, WEATHER, False),
        ({"city": "Paris"}, {"city": ["Paris"], "unit": ["c"]}, WEATHER, False),  # not optional in the answer
        ({"unit": "c"}, {"city": ["Paris"], "unit": ["c"]}, WEATHER, False),  # required missing
        ({"city": "Paris", "country": "FR"}, {"city": ["Paris"]}, WEATHER, False),  # unexpected parameter
        ({"city": "01/01/2024"}, {"city": ["2024-01-01", "01/01/2024"]}, WEATHER, True),  # any listed value
        ({"x": 2}, {"x": [2.0]}, NUMS, True),  # an int where a float is expected
        ({"n": 2.0}, {"n": [2]}, NUMS, False),  # but not a float where an int is
        ({"n": True}, {"n": [1]}, NUMS, False),  # a bool is not an int
        ({"flag": True}, {"flag": [True]}, NUMS, True),
        ({"tags": ["A b", "c"]}, {"tags": [["ab", "C"]]}, NUMS, True),  # list items normalised, order kept
        ({"tags": ["c", "ab"]}, {"tags": [["ab", "c"]]}, NUMS, False),
        ({"prefs": {"size": "LARGE"}}, {"prefs": [{"size": ["large"], "milk": ["", "whole"]}]}, NUMS, True),
        ({"prefs": {"size": "large", "sugar": 1}}, {"prefs": [{"size": ["large"]}]}, NUMS, False),
        ({"prefs": {}}, {"prefs": [{"size": ["large"]}]}, NUMS, False),  # a required key of the dict missing
    ],
)
def test_check_call_ast(args, acceptable, schema, ok):
    why = E.check_call_ast(call("f", **args), {"f": acceptable}, schema)
    assert (why == "") is ok, why


def test_wrong_name_and_strict_mode():
    assert "expected 'g'" in E.check_call_ast(call("f", city="x"), {"g": {"city": ["x"]}}, WEATHER)
    # strict (exact) matching: no normalisation, and 2 is not 2.0
    assert E.check_call_ast(call("f", city="paris"), {"f": {"city": ["Paris"]}}, WEATHER, strict=True)
    assert E.check_call_ast(call("f", x=2), {"f": {"x": [2.0]}}, NUMS, strict=True)
    assert E.check_call_ast(call("f", x=2.0), {"f": {"x": [2.0]}}, NUMS, strict=True) == ""


def test_parallel_calls_any_order_and_counts():
    answers = [{"f": {"city": ["Paris"]}}, {"f": {"city": ["Rome"]}}]
    schemas = {"f": WEATHER}
    assert E.match_calls([call("f", city="Rome"), call("f", city="Paris")], answers, schemas) == ""
    assert "1 call(s), expected 2" in E.match_calls([call("f", city="Rome")], answers, schemas)
    assert E.match_calls([call("f", city="Rome"), call("f", city="Rome")], answers, schemas)


def test_matching_is_one_to_one_not_greedy():
    # The first answer accepts x or y, the second only x. Greedy matching (BFCL's) gives call 0 (x) to the
    # first answer and then fails the second; a full matching pairs answer 0 with call 1 and succeeds.
    answers = [{"f": {"city": ["x", "y"]}}, {"f": {"city": ["x"]}}]
    assert E.match_calls([call("f", city="x"), call("f", city="y")], answers, {"f": WEATHER}) == ""
    # ...but two calls cannot both satisfy the x-only answer
    answers = [{"f": {"city": ["x"]}}, {"f": {"city": ["x"]}}]
    assert E.match_calls([call("f", city="x"), call("f", city="y")], answers, {"f": WEATHER})


def test_answers_from_gold_calls():
    schemas = {"get_weather": WEATHER}
    ast = E.answers_from_calls([("get_weather", {"city": "Paris"})], schemas, defaults=True)
    exact = E.answers_from_calls([("get_weather", {"city": "Paris"})], schemas, defaults=False)
    assert ast == [{"get_weather": {"city": ["Paris"], "unit": ["", "c"]}}]
    assert exact == [{"get_weather": {"city": ["Paris"]}}]


def test_mentions_and_grounding_values():
    assert E.mentions("It is 18.4 C", 18.43) and E.mentions("about 18 C", 18.43)
    assert not E.mentions("It is 18.5 C", 18.43)
    assert E.mentions("costs 1,234 EUR", 1234) and E.mentions("SUNNY today", "sunny")
    history = [
        {"role": "user", "content": "Convert 100 USD, weather in Berlin"},
        {"role": "tool", "content": '{"result": 92.5, "from": "USD", "amount": 100, "ok": true}'},
        {"role": "tool", "content": "18 degrees and sunny"},
    ]
    # 100 and USD are the user's own words; True is not a quotable value.
    values = E.grounding_values(history, "100 USD is 92.5 EUR; Berlin has 18 degrees and sunny weather.")
    assert values == [92.5, 18.0, "18 degrees and sunny"]


# --- metrics on the hand-scored fixture ---------------------------------------------------------------------


def test_score_fixture_hand_computed():
    report = E.score(PREDS, data=DATA)
    m = report["metrics"]
    # cases: ev-1, ev-2, ev-3, ev-4, ev-5, ev-5#2, ev-5#3, ev-6
    # ev-1 "paris": AST yes (case-insensitive), exact no | ev-2 reversed OpenAI-shaped calls: both yes
    # ev-3 no_call but calls get_weather: over-triggered | ev-4 declined, [] : right
    # ev-5 amount 100.0 for gold 100 (number): AST yes, exact no | ev-5#2 truncated JSON: unparseable
    # ev-5#3 answer quotes 92.5 and 18 but not "sunny" | ev-6 no prediction
    assert report["n_examples"] == 6 and report["n_cases"] == 8
    assert (m["accuracy"]["correct"], m["accuracy"]["total"]) == (4, 8)  # ev-1, ev-2, ev-4, ev-5
    assert (m["tool_selection"]["correct"], m["tool_selection"]["total"]) == (5, 8)  # + ev-5#3; not 3, 5#2, 6
    assert (m["arguments_ast"]["correct"], m["arguments_ast"]["total"]) == (3, 5)  # call cases: 1, 2, 5
    assert (m["arguments_exact"]["correct"], m["arguments_exact"]["total"]) == (1, 5)  # only ev-2
    assert (m["no_call"]["correct"], m["no_call"]["total"]) == (1, 2)  # ev-4 of ev-3, ev-4
    assert (m["uses_tool_results"]["correct"], m["uses_tool_results"]["total"]) == (0, 1)
    assert (m["valid_output"]["correct"], m["valid_output"]["total"]) == (6, 8)  # not ev-5#2, ev-6
    assert (m["example_accuracy"]["correct"], m["example_accuracy"]["total"]) == (3, 6)  # ev-1, 2, 4
    assert m["tool_selection"]["rate"] == pytest.approx(5 / 8)
    assert report["meets_targets"] == {"tool_selection": False, "arguments_ast": False, "no_call": False}
    assert report["unknown_prediction_ids"] == ["zz-unknown"]
    assert report["validity"]["missing_predictions"] == 1 and report["validity"]["unparseable_outputs"] == 1
    reasons = {e["id"]: e["reason"] for e in report["per_example"]}
    assert reasons["ev-1"] == "ok" and reasons["ev-3"].startswith("over_triggered")
    assert reasons["ev-5"].startswith("turn 2: unparseable") and reasons["ev-6"].startswith(
        "missing_prediction"
    )
    per_case = {c["id"]: c["reason"] for c in report["per_case"]}
    assert per_case["ev-5#3"] == "ignores_tool_results" and per_case["ev-5"] == "ok"
    # breakdowns
    assert report["by_kind"]["multi_step"]["accuracy"]["correct"] == 1  # ev-5 turn 1 of 3
    assert report["by_kind"]["declined"]["no_call"]["rate"] == 1.0
    assert report["by_tool"]["get_weather"]["expected"] == 3  # ev-1, ev-2, ev-5#2
    assert report["by_tool"]["get_weather"]["accuracy"]["correct"] == 2
    assert report["by_tool"]["get_weather"]["unexpected_calls"] == 1  # ev-3
    conf = report["confusion"]
    assert conf["labels"] == ["convert_currency", "get_weather", "(none)"]
    # rows expected, columns called: cc->cc (ev-5), cc->none (ev-6 missing); gw->gw x3 (ev-1, ev-2 twice),
    # gw->none (ev-5#2, nothing parsed); none->gw (ev-3); none->none (ev-4, ev-5#3)
    assert conf["matrix"] == [[1, 0, 1], [0, 3, 1], [0, 1, 2]]


@pytest.mark.parametrize(
    "output, reason",
    [
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"</tool_call>',
            "unparseable",
        ),  # bad JSON
        # an unclosed last tag: vLLM reads the call, so it scores (the kit's stricter finding is kept apart)
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}', "ok"),
        # one broken call beside a good one, or a cut inside </tool_call>: vLLM returns no calls at all
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>',
            "unparseable",
        ),
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_', "unparseable"),
        ('<tool_call>\n{"name": "get_weather", "argu', "unparseable"),  # truncated mid-call
        (
            'Sure! <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call> Done.',
            "ok",
        ),
        ("I think it is sunny in Paris.", "no_call_made"),
        ("", "no_call_made"),
        ("<tool_call></tool_call>", "unparseable"),
        (
            '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',
            "unparseable",
        ),
        ('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', "wrong_tool"),
        ("\x00\ufffd<tool_call>[1, 2]</tool_call>", "unparseable"),
    ],
)
def test_malformed_outputs_are_counted_not_raised(output, reason):
    (case,) = [c for c in E.cases_from_records(E.load_records(DATA)) if c.id == "ev-1"]
    pred = E.prediction_from_row({"id": "ev-1", "output": output})
    v = E.score_case(case, pred)
    assert v.reason == reason, (v.reason, v.detail, pred.errors)
    assert v.correct is (reason == "ok")


def test_server_semantics_and_the_kits_stricter_findings_apart():
    (case,) = [c for c in E.cases_from_records(E.load_records(DATA)) if c.id == "ev-1"]
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
    unclosed = E.score_case(case, E.parse_output(call))  # vLLM accepts it
    clean = E.score_case(case, E.parse_output(call + "\n</tool_call>"))
    assert unclosed.correct and unclosed.valid_output and not unclosed.valid_output_strict
    assert "unclosed" in unclosed.kit_strict[0]
    assert clean.valid_output_strict and clean.kit_strict == []
    report = E.aggregate([unclosed, clean])
    assert (
        report["validity"]["kit_stricter_outputs"] == 1 and report["metrics"]["valid_output"]["rate"] == 1.0
    )
    # the finding survives a predictions file written and read back
    row = {"id": "ev-1", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    back = E.prediction_from_row({**row, "strict_errors": unclosed.kit_strict})
    assert back.strict_errors == unclosed.kit_strict and back.ok


def test_unknown_tool_and_schema_failures_counted():
    (case,) = [c for c in E.cases_from_records(E.load_records(DATA)) if c.id == "ev-1"]
    pred = E.structured_prediction([call("get_weather", city=5, zip="75001"), call("launch", target="moon")])
    v = E.score_case(case, pred)
    assert v.unknown_tools == ["launch"]
    assert len(v.schema_failures) == 1 and "city" in v.schema_failures[0]
    assert v.invented_params == ["get_weather.zip"]
    assert v.valid_output is False and v.tool_selection is False and v.reason == "wrong_tool"


def test_read_predictions_errors(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"id": "a", "tool_calls": []}\n{"id": "a", "tool_calls": []}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: id 'a' is predicted twice"):
        E.read_predictions(bad)
    bad.write_text('{"id": "a", "tool_calls": []}\n\n{not json\n')
    with pytest.raises(DataError, match=r"p.jsonl:3: invalid JSON"):
        E.read_predictions(bad)
    bad.write_text('{"id": "a"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:1: a prediction needs"):
        E.read_predictions(bad)


def test_endpoint_predictions_through_the_openai_client():
    """A stub OpenAI-compatible server: structured calls come back as the server sent them, requests run
    concurrently, arguments go out as JSON strings, and a dead endpoint is an error that names it."""
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    reply = {"role": "assistant", "content": None, "tool_calls": [call]}
    cases = E.cases_from_records(E.load_records(DATA))
    after_a_call = [c for c in cases if len(c.messages) > 2][:1]
    with stub_openai_server(lambda body: reply, delay=0.3) as (url, seen):
        preds = E.predict_endpoint(cases[:4] + after_a_call, url, "m", concurrency=4)
        assert max(n for _, _, n in seen) > 1  # requests were in flight together
        assert [p.calls for p in preds] == [[{"name": "get_weather", "arguments": {"city": "Paris"}}]] * 5
        assert json.loads(preds[0].raw)["tool_calls"] == [call]
        path, body, _ = seen[0]
        assert path == "/v1/chat/completions" and body["temperature"] == 0 and body["tools"]
        sent = [c for _, b, _ in seen for m in b["messages"] for c in m.get("tool_calls") or []]
        assert sent and all(isinstance(c["function"]["arguments"], str) for c in sent)
        E.predict_endpoint(cases[:1], url + "/chat/completions", "m", concurrency=1)  # a full URL works too
        assert seen[-1][0] == "/v1/chat/completions"
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(KitError, match=rf"the endpoint {re.escape(dead)} answered no request: .*Connection"):
        E.predict_endpoint(cases[:2], dead, "m", concurrency=2, timeout=5)


def test_load_records_errors(tmp_path):
    rows = DATA.read_text().splitlines()
    f = tmp_path / "d.jsonl"
    f.write_text(rows[0] + "\n" + rows[0] + "\n")
    with pytest.raises(DataError, match=r"d.jsonl:2: id 'ev-1' already used on line 1"):
        E.load_records(f)
    f.write_text(json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl:1: not a valid canonical record: no_assistant"):
        E.load_records(f)
    with pytest.raises(KitError, match="does not exist"):
        E.load_records(tmp_path / "nope.jsonl")


def test_turns_first_keeps_one_case_per_record():
    cases = E.cases_from_records(E.load_records(DATA), turns="first")
    assert [c.id for c in cases] == ["ev-1", "ev-2", "ev-3", "ev-4", "ev-5", "ev-6"]


def test_cli_score_json(capsys):
    assert main(["score", "--predictions", str(PREDS), "--data", str(DATA), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in report["per_example"]] == ["ev-1", "ev-2", "ev-3", "ev-4", "ev-5", "ev-6"]
    assert [e["correct"] for e in report["per_example"]] == [True, True, False, True, False, False]
    assert main(["score", "--predictions", str(PREDS), "--data", str(DATA) + ".missing"]) == 2


def test_write_run_and_compare(tmp_path, capsys):
    cases = E.cases_from_records(E.load_records(DATA))
    preds_a = E.read_predictions(PREDS)
    # B fixes ev-3 (no call) and ev-6, and breaks ev-1 (wrong city)
    preds_b = dict(preds_a)
    preds_b["ev-3"] = E.structured_prediction([], "A cloud joke.")
    preds_b["ev-6"] = E.structured_prediction(
        [call("convert_currency", amount=50, **{"from": "GBP", "to": "JPY"})]
    )
    preds_b["ev-1"] = E.structured_prediction([call("get_weather", city="Lyon")])
    for name, preds in (("a", preds_a), ("b", preds_b)):
        report, verdicts = E.score_cases(cases, preds, {"source": {"data": str(DATA)}})
        E.write_run(tmp_path / name / "eval", report, verdicts, preds)
    out = tmp_path / "a" / "eval"
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy_by_tool.png",
        "confusion.png",
        "predictions.jsonl",
        "report.json",
        "summary.md",
    ]
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["ev-1", "ev-2", "ev-3", "ev-4", "ev-5", "ev-5#2", "ev-5#3", "ev-6"]
    assert rows[2]["reason"] == "over_triggered" and rows[2]["tool_calls"] == [call("get_weather", city="x")]
    summary = (out / "summary.md").read_text()
    assert "| tool_selection | 62.5% | 5/8 | > 90% | **below** |" in summary

    result = E.compare(tmp_path / "a", tmp_path / "b" / "eval")  # a run folder and an eval folder
    assert [x["id"] for x in result["fixed"]] == ["ev-3", "ev-6"]
    assert [x["id"] for x in result["broken"]] == ["ev-1"]
    # accuracy: A 4/8, B 5/8 (ev-3 and ev-6 right, ev-1 wrong)
    assert result["metrics"]["accuracy"]["delta"] == pytest.approx(1 / 8)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "+12.5 pp" in text and "broken in B (1):" in text
    with pytest.raises(KitError, match="holds no report.json"):
        E.compare(tmp_path, tmp_path / "b")


# --- prediction sources on real models ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from toolcall_kit.models import load_model_and_tokenizer

    return load_model_and_tokenizer("tiny:qwen2")


@pytest.fixture
def untied(tiny):
    """The tiny model with a random, untied output layer: the random tiny model ties it to its embeddings and
    so repeats its last token whatever the prompt; untied, each prompt's continuation is its own."""
    import torch

    model, tok = tiny
    saved = model.lm_head.weight
    model.lm_head.weight = torch.nn.Parameter(
        torch.randn(saved.shape, generator=torch.Generator().manual_seed(0))
    )
    yield model, tok
    model.lm_head.weight = saved


def test_batched_left_padded_generation_matches_one_at_a_time(untied):
    from toolcall_kit.templates import detect_family

    model, tok = untied
    cases = E.cases_from_records(E.load_records(DATA))
    prompts = E.render_prompts(tok, cases, detect_family(tok))
    lengths = {len(tok(p)["input_ids"]) for p in prompts}
    batched = E.generate_batched(model, tok, prompts, batch_size=8, max_new_tokens=12)
    single = E.generate_batched(model, tok, prompts, batch_size=1, max_new_tokens=12)
    assert len(lengths) > 4  # the batch really mixes prompt lengths (so padding matters)
    assert len(set(single)) >= 3  # continuations differ by prompt, so equality below means something
    assert batched == single


def test_greedy_decode_drops_finished_rows_and_picks_what_generate_picks(untied):
    """Rows that stop early leave the batch; every row still gets exactly `model.generate`'s greedy tokens."""
    import torch

    from toolcall_kit.templates import detect_family

    model, tok = untied
    cases = E.cases_from_records(E.load_records(DATA))[:6]
    prompts = E.render_prompts(tok, cases, detect_family(tok))
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    with torch.inference_mode():
        free = [
            model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=None)[
                0, len(ids) :
            ]
            for ids in encoded
        ]
        # A stop token that ends some rows early and not others: the batch must shrink mid-way.
        counts: dict[int, int] = {}
        for row in free:
            for t in set(row[2:10].tolist()):
                counts[t] = counts.get(t, 0) + 1
        stop = max(counts, key=lambda t: (0 < counts[t] < len(free), counts[t]))
        got, _ = E.greedy_decode(model, encoded, 16, {stop})
    want = [
        row.tolist()[: row.tolist().index(stop)] if stop in row.tolist() else row.tolist() for row in free
    ]
    lengths = {len(w) for w in want}
    assert len(lengths) > 1 and 16 in lengths  # some rows stopped early, at least one ran to the limit
    assert got == want


def test_prefix_parents_finds_the_longest_prompt_each_prompt_extends():
    assert E.prefix_parents([[1, 2], [1, 2, 3], [1, 2, 3, 4], [9], [1, 2], [2, 1, 2]]) == {1: 0, 2: 1}


def test_prefix_cut_keeps_the_batch_narrow():
    assert E.prefix_cut([1000, 1100], [950, 1000]) == 1000  # both rows reuse all: 1,100 wide either way
    assert E.prefix_cut([376, 432, 207], [308, 376, 0]) == 0  # reuse would make it 583 wide, not 432
    assert E.prefix_cut([376, 432], [308, 376]) == 308  # 432 wide, where the whole prefixes make it 444
    assert E.prefix_cut([50, 60], [0, 0]) == 0


def test_later_turns_start_from_the_earlier_turns_cached_prompt_and_still_pick_generates_tokens(untied, monkeypatch):
    """A conversation's later turn extends its earlier turn's prompt: it is prefilled from that prompt's cached
    keys and values, in a batch beside rows with other prefixes or none, and gets `model.generate`'s tokens."""
    import torch

    from toolcall_kit.templates import detect_family

    model, tok = untied
    cases = E.cases_from_records(E.load_records(DATA))
    prompts = E.render_prompts(tok, cases, detect_family(tok))
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    parents = E.prefix_parents(encoded)
    assert len(parents) >= 2  # the data has multi-turn records: some prompts extend others
    with torch.inference_mode():
        want = [
            model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None)[
                0, len(ids) :
            ]
            for ids in encoded
        ]
        # One batch keeps the parents' prompts; the next prefills the children from them beside a row without.
        children = sorted(parents)
        other = next(i for i in range(len(encoded)) if i not in parents and i not in parents.values())
        _, kept = E.greedy_decode(
            model, [encoded[parents[c]] for c in children], 8, set(), keep=[True] * len(children)
        )
        batch = [*children, other]
        # Whole prefixes of different lengths beside a row without one (the narrowest cut would drop them).
        with monkeypatch.context() as m:
            m.setattr(E, "prefix_cut", lambda lengths, cached: max(cached))
            got, kv = E.greedy_decode(
                model, [encoded[i] for i in batch], 8, set(), prefixes=[*kept, None], keep=[True] * len(batch)
            )
        alone = [E.greedy_decode(model, [encoded[i]], 1, set(), keep=[True])[1][0] for i in batch]
    assert len({len(encoded[i]) for i in batch}) == len(batch)  # rows of different lengths and prefix lengths
    assert got == [want[i].tolist() for i in batch]
    for row, ref in zip(kv, alone, strict=True):  # every layer's keys and values as if prefilled whole
        assert all(
            torch.allclose(a, b, atol=1e-5)
            for pair, refs in zip(row, ref, strict=True)
            for a, b in zip(pair, refs, strict=True)
        )

    # End to end: one prompt a batch, so every later turn finds its earlier turn cached.
    used = []
    real = E.greedy_decode

    def spy(model, batch, *a, **kw):
        used.extend(p is not None for p in a[2])
        return real(model, batch, *a, **kw)

    monkeypatch.setattr(E, "greedy_decode", spy)
    texts = E.generate_batched(model, tok, prompts, batch_size=1, max_new_tokens=8)
    assert sum(used) == len(parents)
    assert texts == [
        tok.decode(w[: list(w).index(tok.eos_token_id)] if tok.eos_token_id in w else w) for w in want
    ]


def test_grouped_decode_attention_matches_the_library_and_is_undone(untied):
    """A decoding step through `grouped_sdpa` (KV heads read once, not copied per query head) gives the
    library's logits for left-padded rows of a grouped-query model; the model's attention is restored after."""
    import torch

    from toolcall_kit.templates import detect_family

    model, tok = untied
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped: the path is taken
    prompts = E.render_prompts(tok, E.cases_from_records(E.load_records(DATA))[:4], detect_family(tok))
    tok.padding_side = "left"
    batch = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # some rows are padded

    def two_steps():
        from transformers import DynamicCache

        cache, mask = DynamicCache(config=model.config), batch["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        first = model(
            input_ids=batch["input_ids"], attention_mask=mask, position_ids=pos, past_key_values=cache
        )
        nxt = first.logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        return model(
            input_ids=nxt, attention_mask=mask, position_ids=pos[:, -1:] + 1, past_key_values=cache
        ).logits

    with torch.inference_mode():
        library = two_steps()
        with E.grouped_decode_attention(model):
            assert model.config._attn_implementation == E.GROUPED_SDPA
            grouped = two_steps()
    assert model.config._attn_implementation == "sdpa"
    assert torch.allclose(library, grouped, atol=1e-5)


def test_eval_with_adapter_matches_base(tmp_path):
    """A fresh LoRA adapter (B = 0) changes nothing: base and base+adapter predict the same text."""
    from peft import LoraConfig, get_peft_model

    from toolcall_kit.models import load_model_and_tokenizer, resolve_model

    base, _ = load_model_and_tokenizer("tiny:qwen2")
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == resolve_model("tiny:qwen2")
    quiet = lambda msg: None  # noqa: E731
    kw = dict(data=str(DATA), max_new_tokens=6, limit=2, log=quiet)
    r_base = E.evaluate(tmp_path / "base", model="tiny:qwen2", **kw)
    r_adapter = E.evaluate(tmp_path / "adapter_eval", adapter=str(tmp_path / "adapter"), **kw)
    rows = [
        [json.loads(x)["output"] for x in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
        for d in ("base", "adapter_eval")
    ]
    assert rows[0] == rows[1] and len(rows[0]) == 2
    assert r_adapter["source"]["adapter"] == str(tmp_path / "adapter")
    assert r_base["metrics"] == r_adapter["metrics"]


def test_cached_generations_are_reused_only_for_the_same_model_prompts_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLCALL_KIT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = E.generate_batched

    def counting(*a, **kw):
        calls.append(len(a[2]))
        return real(*a, **kw)

    monkeypatch.setattr(E, "generate_batched", counting)
    quiet = lambda msg: None  # noqa: E731
    kw = dict(model="tiny:qwen2", data=str(DATA), max_new_tokens=6, limit=2, log=quiet, cache=True)
    first = E.evaluate(tmp_path / "a", **kw)
    second = E.evaluate(tmp_path / "b", **kw)
    assert len(calls) == 1 and first["source"]["cached_generations"] is False
    assert second["source"]["cached_generations"] is True and second["metrics"] == first["metrics"]
    preds = [(tmp_path / d / "predictions.jsonl").read_text() for d in ("a", "b")]
    assert preds[0] == preds[1]
    E.evaluate(tmp_path / "c", **{**kw, "max_new_tokens": 7})  # other settings: generated again
    E.evaluate(tmp_path / "d", **{**kw, "limit": 3})  # other prompts: generated again
    E.evaluate(tmp_path / "e", **{**kw, "cache": False})  # caching off
    assert len(calls) == 4
    # A changed model file (same name) is a different model.
    from toolcall_kit.models import resolve_model

    cfg = Path(resolve_model("tiny:qwen2")) / "generation_config.json"
    before = cfg.read_text() if cfg.exists() else None
    try:
        cfg.write_text(json.dumps({**(json.loads(before) if before else {}), "kit_test_marker": 1}))
        E.evaluate(tmp_path / "f", **kw)
    finally:
        cfg.write_text(before) if before is not None else cfg.unlink()
    assert len(calls) == 5


# The tiny caller answers every prompt with get_weather(city="Paris"). By hand, on the 8 cases:
# right only ev-1; selection right for ev-1, ev-2 (same tool, one call short), ev-5#2 (Paris for Berlin);
# over-triggered ev-3, ev-4, ev-5#3; wrong tool ev-5, ev-6 (ev-6 does not even declare get_weather).
CALLER_EXPECTED = {
    "accuracy": (1, 8),
    "tool_selection": (3, 8),
    "arguments_ast": (1, 5),
    "arguments_exact": (1, 5),
    "no_call": (0, 2),
    "valid_output": (7, 8),
    "uses_tool_results": (0, 1),
    "example_accuracy": (1, 6),
}
CALLER_REASONS = {"ok": 1, "wrong_count": 1, "over_triggered": 3, "wrong_tool": 2, "wrong_arguments": 1}


@pytest.fixture(scope="session")
def tiny_caller(tmp_path_factory):
    return build_tiny_caller(tmp_path_factory.getbasetemp() / "tiny-caller")


def _counts(report):
    return {k: (report["metrics"][k]["correct"], report["metrics"][k]["total"]) for k in CALLER_EXPECTED}


@pytest.mark.slow
def test_eval_in_process_on_a_model_that_calls(tiny_caller, tmp_path, capsys):
    out = tmp_path / "runs" / "caller" / "eval"
    rc = main(
        [
            "eval",
            "--model",
            str(tiny_caller),
            "--data",
            str(DATA),
            "--batch-size",
            "4",
            "--max-new-tokens",
            "40",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert _counts(report) == CALLER_EXPECTED
    assert report["reasons"] == CALLER_REASONS
    assert report["validity"]["unknown_tool_calls"] == 1
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(r["output"].strip() == CALL_TEXT for r in rows)
    assert json.loads((out / "report.json").read_text())["source"]["family"] == "chatml"


@pytest.fixture(scope="module")
def served_caller(tiny_caller):
    """A real `transformers serve` of the tiny caller on 127.0.0.1, stopped afterwards."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    with local_server(tiny_caller) as url:
        yield url, str(tiny_caller)


@pytest.mark.slow
def test_eval_against_a_real_transformers_serve(served_caller, tmp_path):
    url, name = served_caller
    report = E.evaluate(
        tmp_path / "eval",
        endpoint=url,
        endpoint_model=name,
        data=str(DATA),
        concurrency=4,
        max_new_tokens=40,
        log=lambda m: None,
    )
    # the server parsed the <tool_call> itself and returned structured tool_calls with string arguments
    rows = [json.loads(x) for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    message = json.loads(rows[0]["output"])
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert _counts(report) == CALLER_EXPECTED  # the same verdicts as in process
    assert report["source"]["concurrency"] == 4
    # an unreachable endpoint is a clear error, not 8 silent failures
    with pytest.raises(KitError, match="answered no request"):
        E.predict_endpoint(
            E.cases_from_records(E.load_records(DATA))[:2],
            f"http://127.0.0.1:{free_port()}/v1",
            name,
            concurrency=2,
            timeout=5,
        )


def test_every_endpoint_url_form_reaches_the_same_v1_base():
    from toolcall_kit.evaluate import openai_base_url

    forms = ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/chat/completions/"]
    assert {openai_base_url(u) for u in forms} == {"http://h:8000/v1"}
