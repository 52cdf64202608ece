"""Every CLI verb driven with hypothesis-generated paths and file contents (README "What the kit guarantees").

Whatever the input: no traceback (an exception escaping `main` fails the test), exit code 0 or 2 (argparse's
own usage errors are 2 as well), an error is one line naming what is wrong, and where a verb succeeds its
counts reconcile. Verbs that load a model use the tiny one and a few tokens; most generated inputs are refused
before any model loads, which is what keeps this test under a minute.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from toolcall_kit.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SMOKE = ROOT / "configs" / "smoke.yaml"
GOOD_LINES = [
    line
    for name in ("openai_good.jsonl", "eval_small.jsonl", "chat.jsonl")
    for line in (DATA / name).read_text(encoding="utf-8").splitlines()
    if line.strip()
]

EVAL_LINES = [line for line in (DATA / "eval_small.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]

# File contents: raw bytes, text, JSON fragments, and real rows cut or glued together.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
contents = st.one_of(
    st.binary(max_size=120),
    st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(json_values, max_size=4).map(
        lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()
    ),
    st.lists(st.sampled_from(GOOD_LINES), min_size=1, max_size=4).map(lambda ls: ("\n".join(ls) + "\n").encode()),
    st.tuples(st.sampled_from(GOOD_LINES), st.integers(0, 400)).map(lambda t: t[0][: t[1]].encode()),
)
# Canonical records (what tokens, show-mask and eval read): these get past the reading into the model.
canonical = st.lists(st.sampled_from(EVAL_LINES), min_size=1, max_size=3, unique=True).map(
    lambda ls: ("\n".join(ls) + "\n").encode()
)
# How an input path is given: a file holding the contents, standard input, a folder, nothing, a path under a file.
input_kinds = st.sampled_from(["file", "file", "stdin", "folder", "missing", "under_file"])
output_kinds = st.sampled_from(["new", "new", "existing_folder", "users_folder", "under_file", "a_file"])


class Scene:
    """A fresh folder per example, with input and output paths of the kinds asked for."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="props-"))
        (self.root / "a-file").write_text("x")
        self.stdin = b""

    def input(self, kind: str, data: bytes, name: str = "in.jsonl") -> str:
        if kind == "stdin":
            self.stdin = data
            return "-"
        if kind == "missing":
            return str(self.root / "missing" / name)
        if kind == "under_file":
            return str(self.root / "a-file" / name)
        path = self.root / f"{len(list(self.root.iterdir()))}-{name}"
        if kind == "folder":
            path.mkdir()
            (path / name).write_bytes(data)
        else:
            path.write_bytes(data)
        return str(path)

    def output(self, kind: str, name: str = "out") -> str:
        path = self.root / name
        if kind == "existing_folder":
            path.mkdir()
        elif kind == "users_folder":
            path.mkdir()
            (path / "mine.txt").write_text("keep me")
        elif kind == "under_file":
            return str(self.root / "a-file" / name)
        elif kind == "a_file":
            path.write_text("keep me too")
        return str(path)

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def run_cli(argv: list[str], scene: Scene, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(scene.stdin)))
    handlers = logging.root.handlers[:]  # `train` configures logging onto this example's captured stderr
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse: usage errors exit 2
        rc = e.code
    finally:
        logging.root.handlers[:] = handlers
    out, err = capsys.readouterr()
    event(f"{argv[0]} exit {rc}")  # --hypothesis-show-statistics: how many examples got through
    assert rc in (0, 2), (argv, rc, err[-2000:])
    # An exception escaping `main` already fails the test; this catches a traceback printed and swallowed. The
    # stdlib's "--- Logging error ---" report is an artifact of running in process: torch's loggers keep the
    # stderr of the example during which torch was imported, which capsys has closed since.
    assert "Traceback" not in re.sub(r"--- Logging error ---\n.*?\nArguments: [^\n]*\n", "", err, flags=re.S), err[-3000:]
    if rc == 2 and "usage:" not in err:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err[-2000:]
    return rc, out, err


def users_files_kept(scene: Scene, kind: str, folder_output: bool = True) -> None:
    """A folder of the user's given as an output folder keeps its files; so does a file given where a folder
    is expected (an output *file* given by name is the user's request to write it)."""
    out = scene.root / "out"
    if kind == "users_folder":
        assert (out / "mine.txt").read_text() == "keep me"
    if kind == "a_file" and folder_output:
        assert out.read_text() == "keep me too"


PROPS = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOOLCALL_KIT_NO_PROGRESS", "1")


@PROPS
@given(data=contents, kind=input_kinds, out=output_kinds, fmt=st.sampled_from(["auto", "openai", "xlam", "chat"]))
def test_prepare(data, kind, out, fmt, monkeypatch, capsys):
    scene = Scene()
    try:
        argv = ["prepare", scene.input(kind, data), "--out", scene.output(out), "--format", fmt, "--json"]
        rc, stdout, _ = run_cli(argv, scene, monkeypatch, capsys)
        if rc == 0:
            rep = json.loads(stdout)
            assert rep["read"] == rep["kept"] + rep["rejected"] + rep["duplicates"]
            assert rep["kept"] == rep["train"] + rep["eval"]
            for name in ("train", "eval", "rejects"):
                lines = Path(rep["out"][name]).read_text(encoding="utf-8").split("\n")
                assert sum(1 for x in lines if x.strip()) == rep["rejected" if name == "rejects" else name]
        users_files_kept(scene, out)
    finally:
        scene.close()


@PROPS
@given(data=contents, kind=input_kinds, out=output_kinds, n=st.integers(-2, 6), use_catalog=st.booleans())
def test_synth(data, kind, out, n, use_catalog, monkeypatch, capsys):
    scene = Scene()
    try:
        argv = ["synth", "--out", scene.output(out, "out"), "--n", str(n), "--json"]
        if use_catalog:
            argv += ["--catalog", scene.input(kind, data, "catalog.json")]
        rc, stdout, _ = run_cli(argv, scene, monkeypatch, capsys)
        if rc == 0:
            rep = json.loads(stdout)
            rows = Path(rep["out"]).read_text(encoding="utf-8").splitlines()
            assert len(rows) == rep["n"] == n and sum(rep["by_kind"].values()) == n
        users_files_kept(scene, out, folder_output=False)
    finally:
        scene.close()


@PROPS
@given(data=contents | canonical, kind=input_kinds, out=output_kinds, verb=st.sampled_from(["tokens", "show-mask"]),
       index=st.integers(-3, 3))
def test_tokens_and_show_mask(data, kind, out, verb, index, monkeypatch, capsys):
    scene = Scene()
    try:
        argv = [verb, scene.input(kind, data), "--model", "tiny:llama"]
        argv += ["--plot", scene.output(out, "h.png"), "--json"] if verb == "tokens" else ["--index", str(index)]
        rc, stdout, _ = run_cli(argv, scene, monkeypatch, capsys)
        if rc == 0 and verb == "tokens":
            rep = json.loads(stdout)
            assert rep["examples"] >= 1
    finally:
        scene.close()


@PROPS
@given(preds=contents, pkind=input_kinds, data=contents, dkind=st.sampled_from(["file", "folder", "missing"]),
       fixture_data=st.booleans())
def test_score(preds, pkind, data, dkind, fixture_data, monkeypatch, capsys):
    scene = Scene()
    try:
        data_path = str(DATA / "eval_small.jsonl") if fixture_data else scene.input(dkind, data, "data.jsonl")
        argv = ["score", "--predictions", scene.input(pkind, preds, "preds.jsonl"), "--data", data_path, "--json"]
        rc, stdout, _ = run_cli(argv, scene, monkeypatch, capsys)
        if rc == 0:
            rep = json.loads(stdout)
            assert rep["n_cases"] == len(rep["per_example"]) or rep["n_cases"] >= rep["n_examples"]
    finally:
        scene.close()


@PROPS
@given(data=canonical | contents, kind=input_kinds, out=output_kinds, limit=st.integers(-1, 2))
def test_eval(data, kind, out, limit, monkeypatch, capsys):
    scene = Scene()
    try:
        argv = ["eval", "--model", "tiny:llama", "--data", scene.input(kind, data), "--limit", str(limit),
                "--max-new-tokens", "2", "--out", scene.output(out, "out"), "--json"]
        rc, stdout, _ = run_cli(argv, scene, monkeypatch, capsys)
        if rc == 0:
            rep = json.loads(stdout)
            assert rep["n_examples"] <= max(limit, 0)
        users_files_kept(scene, out)
    finally:
        scene.close()


@PROPS
@given(a=contents, b=contents, akind=st.sampled_from(["file", "missing"]))
def test_compare(a, b, akind, monkeypatch, capsys):
    scene = Scene()
    try:
        dirs = []
        for data, kind in ((a, akind), (b, "file")):
            d = Path(tempfile.mkdtemp(dir=scene.root))
            if kind == "file":
                (d / "report.json").write_bytes(data)
            dirs.append(str(d))
        run_cli(["compare", *dirs, "--json"], scene, monkeypatch, capsys)
    finally:
        scene.close()


@PROPS
@given(config=contents, kind=input_kinds, adapter_cfg=contents, weights=st.binary(max_size=64), out=output_kinds)
def test_merge(config, kind, adapter_cfg, weights, out, monkeypatch, capsys):
    scene = Scene()
    try:
        run = scene.root / "run"
        (run / "adapter").mkdir(parents=True)
        (run / "adapter" / "adapter_config.json").write_bytes(adapter_cfg)
        (run / "adapter" / "adapter_model.safetensors").write_bytes(weights)
        (run / "config.yaml").write_bytes(config)
        argv = ["merge", str(run), "--out", scene.output(out, "out"), "--base", "tiny:llama"]
        run_cli(argv, scene, monkeypatch, capsys)
        users_files_kept(scene, out)
        assert (run / "adapter" / "adapter_config.json").read_bytes() == adapter_cfg  # inputs untouched
    finally:
        scene.close()


@settings(PROPS, max_examples=5)
@given(config=contents | st.just(SMOKE.read_bytes()), kind=input_kinds, data=contents,
       verb=st.sampled_from(["train", "pipeline", "plan"]))
def test_train_pipeline_and_plan_configs(config, kind, data, verb, monkeypatch, capsys):
    scene = Scene()
    try:
        cfg = scene.input(kind if kind != "stdin" else "file", config, "config.yaml")
        sets = ["--set", f"output.dir={scene.root / 'runs'}", "--set", f"data.train={scene.input('file', data)}",
                "--set", "data.eval=null", "--set", "train.max_steps=1", "--set", "train.save_steps=null",
                "--set", "train.eval_steps=null"]
        argv = {"train": ["train", "--config", cfg, *sets],
                "pipeline": ["pipeline", "--config", cfg, *sets, "--stages", "prepare"],
                "plan": ["plan", "--config", cfg]}[verb]
        run_cli(argv, scene, monkeypatch, capsys)
    finally:
        scene.close()


@PROPS
@given(name=st.text(max_size=20) | st.sampled_from(["tiny:llama", "tiny:nope", "packaged:nope", "./nowhere"]),
       cache=output_kinds)
def test_model(name, cache, monkeypatch, capsys):
    scene = Scene()
    try:
        cache_dir = scene.output(cache, "cache")
        rc, _, _ = run_cli(["model", name, "--cache-dir", cache_dir], scene, monkeypatch, capsys)
        if cache == "users_folder":
            assert (Path(cache_dir) / "mine.txt").read_text() == "keep me"
    finally:
        scene.close()
