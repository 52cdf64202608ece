"""prepare: counts reconcile, rejects name file/line/reason, dedupe, stratified split, atomic outputs, CLI."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolcall_kit.cli import main
from toolcall_kit.errors import DataError, KitError
from toolcall_kit.prepare import prepare, split, summary
from toolcall_kit.records import KINDS, classify, content_hash, ensure_id, make_call, make_tool

DATA = Path(__file__).parent / "data"
FIXTURES = [
    DATA / n
    for n in ("openai_good.jsonl", "openai_broken.jsonl", "xlam.json", "sharegpt.jsonl", "chat.jsonl")
]
OUTPUTS = ("train.jsonl", "eval.jsonl", "rejects.jsonl", "report.json")


def read_jsonl(path):
    # split on "\n" only, as JSON Lines does: str.splitlines() also splits on U+0085 and U+2028 inside strings
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]


def check_reconciles(report, out):
    assert report["read"] == report["kept"] + report["rejected"] + report["duplicates"]
    assert report["kept"] == report["train"] + report["eval"]
    assert sum(report["rejected_by_reason"].values()) == report["rejected"]
    assert sum(report["kinds"].values()) == report["kept"]
    assert sum(f["rows"] for f in report["files"].values()) == report["read"]
    assert len(read_jsonl(out / "train.jsonl")) == report["train"]
    assert len(read_jsonl(out / "eval.jsonl")) == report["eval"]
    assert len(read_jsonl(out / "rejects.jsonl")) == report["rejected"]
    assert json.loads((out / "report.json").read_text()) == report


def test_fixtures_end_to_end(tmp_path):
    out = tmp_path / "out"
    report = prepare(FIXTURES, out)
    check_reconciles(report, out)
    assert report["read"] == 6 + 20 + 8 + 6 + 4
    assert report["duplicates"] == 2  # openai_broken lines 20 and 21 repeat openai_good line 1, across files
    assert report["files"][str(DATA / "xlam.json")]["format"] == "xlam"
    assert report["files"][str(DATA / "sharegpt.jsonl")]["how"].startswith("auto: ")
    assert all(report["kinds"][k] > 0 for k in KINDS)
    kept = read_jsonl(out / "train.jsonl") + read_jsonl(out / "eval.jsonl")
    assert len({r["id"] for r in kept}) == len(kept)
    assert len({content_hash(r) for r in kept}) == len(kept)
    assert report["calls_per_tool"]["get_weather"] >= 5
    assert any("fewer than 50" in w for w in report["warnings"])


EXPECTED_BROKEN = {
    1: "invalid_json", 2: "not_object", 3: "unknown_role", 4: "missing_field", 5: "undeclared_tool",
    6: "arguments_schema", 7: "arguments_schema", 8: "arguments_schema", 9: "arguments_not_object",
    10: "arguments_not_object", 11: "bad_tool_name", 12: "orphan_tool_result", 13: "unanswered_call",
    14: "empty_assistant", 15: "bad_weight", 16: "no_assistant", 17: "duplicate_tool", 18: "bad_tool_schema",
}  # fmt: skip


def test_rejects_name_file_line_reason_and_keep_the_original_text(tmp_path):
    src = DATA / "openai_broken.jsonl"
    report = prepare([src], tmp_path)
    rejects = read_jsonl(tmp_path / "rejects.jsonl")
    assert {r["line"]: r["reason"] for r in rejects} == EXPECTED_BROKEN
    lines = src.read_text().splitlines()
    for r in rejects:
        assert r["file"] == str(src)
        assert r["raw"] == lines[r["line"] - 1]  # the original text, byte for byte
        assert r["detail"] and r["reason"] in r["reasons"]
    assert report["kept"] == 1 and report["duplicates"] == 1
    assert report["duplicate_rows"] == [{"file": str(src), "line": 21, "same_as": f"{src}:20"}]


def test_xlam_array_rejects_carry_the_element_as_json(tmp_path):
    prepare([DATA / "xlam.json"], tmp_path)
    rejects = read_jsonl(tmp_path / "rejects.jsonl")
    assert [r["line"] for r in rejects] == [5, 6, 7, 8]
    assert json.loads(rejects[0]["raw"])["query"] == "Is seventeen prime?"


def test_ids_are_records_ensure_id_and_made_unique(tmp_path):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    same_id = [
        {"id": "x", "messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "d"}]}
        for t in "ce"
    ]
    p = tmp_path / "in.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [good, *same_id]) + "\n")
    report = prepare([p], tmp_path / "out", eval_fraction=0)
    ids = [r["id"] for r in read_jsonl(tmp_path / "out" / "train.jsonl")]
    assert ids == [ensure_id(dict(good))["id"], "x", "x-2"]
    assert any("1 rows reuse another row's id; renamed: 'x' -> 'x-2'" in w for w in report["warnings"])


def test_same_seed_same_files_other_seed_other_split(tmp_path):
    data = _stratified_data()
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in data) + "\n")
    outs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        prepare([src], tmp_path / name, seed=seed)
        outs.append((tmp_path / name / "eval.jsonl").read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def _stratified_data(n_tools=8, per_tool=12):
    """Every kind, each tool called per_tool times across single, parallel and multi-step rows."""
    tools = [
        make_tool(f"tool_{t}", "", {"type": "object", "properties": {"x": {"type": "integer"}}})
        for t in range(n_tools)
    ]
    rows = []
    for t in range(n_tools):
        for k in range(per_tool):
            name = f"tool_{t}"
            user = {"role": "user", "content": f"use {name} #{k}"}
            if k % 3 == 0:
                msgs = [
                    user,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [make_call(name, {"x": k}, "a"), make_call(name, {"x": -k}, "b")],
                    },
                ]
            elif k % 3 == 1:
                msgs = [user, {"role": "assistant", "content": None, "tool_calls": [make_call(name, {"x": k}, "a")]},
                        {"role": "tool", "tool_call_id": "a", "content": "1"},
                        {"role": "assistant", "content": None, "tool_calls": [make_call(name, {"x": k + 1}, "b")]},
                        {"role": "tool", "tool_call_id": "b", "content": "2"}, {"role": "assistant", "content": "done"}]  # fmt: skip
            else:
                msgs = [
                    user,
                    {"role": "assistant", "content": None, "tool_calls": [make_call(name, {"x": k}, "a")]},
                ]
            rows.append({"tools": tools, "messages": msgs})
    for k in range(30):
        rows.append(
            {
                "tools": tools,
                "messages": [
                    {"role": "user", "content": f"hi {k}"},
                    {"role": "assistant", "content": "hello"},
                ],
            }
        )
        rows.append(
            {
                "kind": "declined",
                "tools": tools[:1],
                "messages": [
                    {"role": "user", "content": f"book flight {k}"},
                    {"role": "assistant", "content": "I cannot."},
                ],
            }
        )
    return rows


def test_split_puts_every_kind_and_every_tool_in_both_sides():
    data = _stratified_data()
    in_eval = split(data, 0.1, seed=3)
    assert sum(in_eval) == round(len(data) * 0.1)
    kinds_all = Counter(classify(r) for r in data)
    kinds_eval = Counter(classify(r) for r, e in zip(data, in_eval, strict=True) if e)
    for kind, n in kinds_all.items():  # each kind keeps its share, give or take one row
        assert abs(kinds_eval[kind] - n * 0.1) <= 1, (kind, kinds_eval, kinds_all)
    for side in (True, False):
        part = [r for r, e in zip(data, in_eval, strict=True) if e is side]
        assert {classify(r) for r in part} == set(KINDS)
        called = {
            c["function"]["name"] for r in part for m in r["messages"] for c in m.get("tool_calls") or []
        }
        assert called == {f"tool_{t}" for t in range(8)}


def test_split_edge_cases():
    one = [{"messages": []}]
    assert split(one, 0.5, 0) == [False]  # a single row stays in train
    two = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(2)]
    assert sum(split(two, 0.01, 0)) == 1  # a positive fraction gives eval at least one row
    assert sum(split(two, 0.0, 0)) == 0


def test_eval_fraction_and_format_are_checked(tmp_path):
    with pytest.raises(KitError):
        prepare([DATA / "chat.jsonl"], tmp_path, eval_fraction=1.0)
    with pytest.raises(KitError):
        prepare([DATA / "chat.jsonl"], tmp_path, fmt="csv")
    assert not any((tmp_path / n).exists() for n in OUTPUTS)


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(KitError, match="not a folder"):
        prepare([DATA / "chat.jsonl"], tmp_path / "out")


def test_a_folder_input_means_its_data_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("chat.jsonl", "xlam.json"):
        (folder / name).write_bytes((DATA / name).read_bytes())
    (folder / "notes.txt").write_text("not data")
    report = prepare([folder], tmp_path / "out")
    assert sorted(Path(p).name for p in report["files"]) == ["chat.jsonl", "xlam.json"]


@pytest.mark.parametrize(
    "name, content",
    [
        ("bad.jsonl.gz", b"plain text"),
        ("bad.parquet", b"PAR1\x00\x01garbagePAR1"),
        ("bad.json", b'[\n{"messages": []},\n{oops}\n]'),
        (None, None),  # missing file
    ],
)
def test_unreadable_file_is_a_data_error_and_leaves_previous_outputs(tmp_path, name, content):
    out = tmp_path / "out"
    prepare([DATA / "chat.jsonl"], out)
    before = {n: (out / n).read_bytes() for n in OUTPUTS}
    bad = tmp_path / (name or "missing.jsonl")
    if content is not None:
        bad.write_bytes(content)
    with pytest.raises(DataError) as e:
        prepare([DATA / "openai_good.jsonl", bad], out)
    assert str(bad) in str(e.value)
    assert {n: (out / n).read_bytes() for n in OUTPUTS} == before
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)  # no temporary files left behind


FULL_DISK = """
import resource, signal, sys
from toolcall_kit.prepare import prepare
from toolcall_kit.errors import KitError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    prepare([sys.argv[1]], sys.argv[2])
except KitError as e:
    print("KitError:", e)
    sys.exit(3)
"""


def test_a_file_that_cannot_hold_the_data_leaves_no_half_written_output(tmp_path):
    out = tmp_path / "out"
    prepare([DATA / "chat.jsonl"], out)
    before = {n: (out / n).read_bytes() for n in OUTPUTS}
    big = tmp_path / "big.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{i} " + "x" * 500},
                {"role": "assistant", "content": "y"},
            ]
        }
        for i in range(200)
    ]
    big.write_text(
        "\n".join(map(json.dumps, rows)) + "\n"
    )  # about 100 KB of train.jsonl: over the 20 KB limit
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(big), str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 3, proc.stderr
    assert "cannot write the outputs" in proc.stdout and "nothing was changed" in proc.stdout
    assert {n: (out / n).read_bytes() for n in OUTPUTS} == before
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)


# ---------------------------------------------------------------- never crashes, always reconciles

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)
KEYS = ["messages", "conversations", "tools", "functions", "query", "answers", "role", "content", "from", "value",
        "tool_calls", "function", "name", "arguments", "id", "tool_call_id", "weight", "kind", "parameters", "type", "data"]  # fmt: skip
SHAPED = st.deferred(
    lambda: st.dictionaries(
        st.sampled_from(KEYS), JSON | st.lists(SHAPED, max_size=3) | SHAPED | st.text(max_size=20), max_size=5
    )
)


def _prepare_or_data_error(path):
    with tempfile.TemporaryDirectory() as out:
        try:
            report = prepare([path], out)
        except DataError:
            return None
        check_reconciles(report, Path(out))
        return report


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blob=st.binary(max_size=400),
    suffix=st.sampled_from([".jsonl", ".json", ".jsonl.gz", ".parquet", ".txt"]),
    gz=st.booleans(),
)
def test_prepare_never_crashes_on_arbitrary_bytes(blob, suffix, gz):
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / f"in{suffix}"
        p.write_bytes(gzip.compress(blob) if gz else blob)
        _prepare_or_data_error(p)


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.one_of(SHAPED.map(json.dumps), JSON.map(json.dumps), st.text(max_size=30)), max_size=8),
       fmt=st.sampled_from(["auto", "openai", "xlam", "sharegpt", "chat"]))  # fmt: skip
def test_prepare_never_crashes_on_arbitrary_json_lines_and_counts_reconcile(lines, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "in.jsonl"
        p.write_text("\n".join(line.replace("\n", " ") for line in lines) + "\n", encoding="utf-8")
        with tempfile.TemporaryDirectory() as out:
            report = prepare([p], out, fmt=fmt)  # a JSONL file is always readable: no DataError allowed
            check_reconciles(report, Path(out))
            # blank = ASCII whitespace only, as in JSON: a line holding U+00A0 is a (broken) row
            assert report["read"] == sum(1 for line in lines if line.replace("\n", " ").encode().strip())


# ---------------------------------------------------------------- summary and CLI


def test_summary_mentions_counts_reasons_and_warnings(tmp_path):
    text = summary(prepare(FIXTURES, tmp_path))
    assert "read 44 rows from 5 file(s)" in text
    assert "duplicates dropped 2" in text and "unknown_role 2" in text
    assert "xlam.json (xlam, 8 rows)" in text and "warning:" in text


def test_cli_prepare_summary_json_and_strict(tmp_path, capsys):
    assert main(["prepare", str(DATA / "openai_good.jsonl"), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("read 6 rows") and "kept 6" in out
    assert (
        main(["prepare", str(DATA / "openai_good.jsonl"), "--out", str(tmp_path / "a"), "--strict", "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["kept"] == 6 and report["rejected"] == 0
    assert main(["prepare", str(DATA / "openai_broken.jsonl"), "--out", str(tmp_path / "b"), "--strict"]) == 1
    assert main(["prepare", str(DATA / "openai_broken.jsonl"), "--out", str(tmp_path / "b")]) == 0
    args = [
        "prepare",
        str(DATA / "xlam.json"),
        "--out",
        str(tmp_path / "c"),
        "--format",
        "xlam",
        "--eval-fraction",
        "0.25",
        "--seed",
        "7",
    ]
    assert main(args) == 0
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert (
        report["split"]["seed"] == 7
        and report["eval"] == 1
        and report["files"][str(DATA / "xlam.json")]["how"] == "given: --format xlam"
    )


def test_cli_unreadable_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such file"
