"""What the notebooks show (toolcall_kit/explore.py), without a browser: the mask is the sequence training
encodes, rejects and failed cases are grouped and filtered by reason, and no plot switches the kernel's
matplotlib backend (the user's own plots keep working). The browser tests are tests/test_notebooks_browser.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from template_fixtures import family_tokenizer, sample_records

from toolcall_kit import explore, pipeline
from toolcall_kit.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("max_seq_length", [4096, 40])
def test_mask_view_shows_the_sequence_training_encodes(tmp_path, monkeypatch, max_seq_length):
    """Llama 3.1 with a parallel call: the view adapts the record as training does (split into one call per
    turn), renders the same template, and marks the cut where max_seq_length cuts."""
    from toolcall_kit.records import read_records
    from toolcall_kit.train import encode_records

    recs = sample_records()
    train = _write_jsonl(tmp_path / "train.jsonl", [recs["single"], recs["parallel"], recs["no_call"]])
    cfg = load_config(
        None,
        {
            "model.name": "look-alike",
            "train.max_steps": 1,
            "model.family": "llama3_1",
            "model.max_seq_length": max_seq_length,
            "data.train": str(train),
            "data.parallel": "split",
            "data.content_with_calls": "drop",
        },
    )
    tok = family_tokenizer("llama3_1")
    monkeypatch.setattr(pipeline, "tokenizer", lambda cfg: tok)
    full = encode_records(
        read_records(train),
        tok,
        "llama3_1",
        10**6,
        "data.train",
        str(train),
        parallel="split",
        content_with_calls="drop",
    )
    view = explore.MaskView(cfg)
    assert len(view) == len(full.input_ids) == 3
    for i, ids in enumerate(full.input_ids):
        html = view.html(i)
        assert f"· {len(ids)} tokens ·" in html
        assert ("cut at 40 tokens" in html) == (len(ids) > max_seq_length)
    assert pipeline.mask_view(cfg, 1) == view.html(1)

    # The stepper: next / previous / a number, each showing that example's mask (clicks run the handlers).
    stepper = explore.mask_stepper(cfg, 0)
    (prev, number, nxt, _count), shown = stepper.children[0].children, stepper.children[1]
    assert shown.value == view.html(0)
    nxt.click()
    assert number.value == 1 and shown.value == view.html(1)
    number.value = 2
    nxt.click()  # stays on the last example
    assert number.value == 2 and shown.value == view.html(2)
    prev.click()
    assert shown.value == view.html(1)


def test_rejects_by_reason_lists_raw_rows_with_file_and_line(tmp_path):
    from toolcall_kit.prepare import prepare

    rep = prepare([str(DATA / "openai_broken.jsonl")], tmp_path / "out", eval_fraction=0.0)
    assert rep["rejected"] > 0
    html = explore.rejects_by_reason({"reports": {"all": rep}}, first=2).data
    for reason, n in rep["rejected_by_reason"].items():
        assert f"{reason}: {n} rows" in html
    assert "openai_broken.jsonl:" in html
    empty = {"reports": {"all": {**rep, "out": {**rep["out"], "rejects": str(tmp_path / "none.jsonl")}}}}
    assert "none" in explore.rejects_by_reason(empty).data


def test_data_chart_and_truncation_table():
    report = {"kinds": {"single_call": 3, "no_call": 1}, "calls_per_tool": {"get_weather": 2, "get_time": 1}}
    png = explore.data_chart({"reports": {"train": report}}).data
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    tokens = {
        "max_seq_length": 100,
        "distribution": {"max": 180},
        "over_max_seq_length": [
            {"index": 4, "id": "a", "tokens": 120},
            {"index": 7, "id": "b", "tokens": 180},
        ],
        "all_assistant_tokens_cut": [{"index": 7, "id": "b", "tokens": 180, "first_trained_token": 150}],
    }
    html = explore.truncation_table(tokens).data
    assert "2 examples longer than max_seq_length 100" in html
    assert "ALL (first trained token at 150)" in html and "<td style='" in html
    assert "none" in explore.truncation_table({**tokens, "over_max_seq_length": []}).data


def test_failed_cases_table_filters_by_reason():
    rows = [
        {
            "id": "a",
            "request": "weather?",
            "output": "<b>x</b>",
            "expected": [{"name": "w"}],
            "reason": "wrong_tool",
            "detail": "",
        },
        {
            "id": "b",
            "request": "time?",
            "output": "",
            "expected": "(no call) hi",
            "reason": "no_call",
            "detail": "d",
        },
        {"id": "c", "request": "fx?", "output": "y", "expected": [], "reason": "wrong_tool", "detail": ""},
    ]
    all_rows = explore.failed_cases_html(rows)
    assert all_rows.count("<tr>") == 4 and "&lt;b&gt;x&lt;/b&gt;" in all_rows  # header + 3, outputs escaped
    only = explore.failed_cases_html(rows, "wrong_tool")
    assert only.count("<tr>") == 3 and ">b<" not in only
    assert "no failed case" in explore.failed_cases_html([])


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    """A kernel's inline backend stays what it was after the kit draws its plots (no matplotlib.use, no pyplot)."""
    code = f"""
import matplotlib, sys
matplotlib.use("svg")
from toolcall_kit.tokens import plot_histogram
from toolcall_kit.evaluate import write_plots
from toolcall_kit import explore
from pathlib import Path
out = Path({str(tmp_path)!r})
plot_histogram([10, 20, 20, 35], 30, out / "h.png")
report = {{"by_tool": {{"w": {{"expected": 2, "accuracy": {{"rate": 0.5}}}}}},
          "confusion": {{"labels": ["w", "(none)"], "matrix": [[1, 1], [0, 1]]}}}}
assert write_plots(report, out) == ["accuracy_by_tool.png", "confusion.png"]
explore.data_chart({{"reports": {{"t": {{"kinds": {{"no_call": 1}}, "calls_per_tool": {{"w": 1}}}}}}}})
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["svg", "False"]
    assert all(
        (tmp_path / n).stat().st_size > 1000 for n in ("h.png", "accuracy_by_tool.png", "confusion.png")
    )
