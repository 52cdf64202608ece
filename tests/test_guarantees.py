"""What the kit guarantees (README "What the kit guarantees"): nothing of the user's is deleted or half-written,
nothing hangs, and a bad input is one line naming it with exit 2, never a traceback.

One test per case found by probing the CLI with bad, odd and hostile input (issue 11). The property test over
every verb is in test_cli_properties.py.
"""

from __future__ import annotations

import fcntl
import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from toolcall_kit import io as kit_io
from toolcall_kit.cli import main
from toolcall_kit.errors import KitError

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SMOKE = ROOT / "configs" / "smoke.yaml"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def record(city: str = "Paris", rid: str | None = None, tools=None, args=None) -> dict:
    rec = {
        "tools": tools or [WEATHER],
        "messages": [
            {"role": "user", "content": f"Weather in {city}?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": (tools or [WEATHER])[0]["function"]["name"], "arguments": args or {"city": city}}}
                ],
            },
        ],
    }
    if rid is not None:
        rec["id"] = rid
    return rec


def write_rows(path: Path, rows, raw: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if raw else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in process: an uncaught exception fails the test (that is a traceback)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]  # transformers' progress bars may come first
    assert lines and lines[-1].startswith("error: ") and sum(x.startswith("error:") for x in lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[-1], (n, lines[-1])


def kit_cmd(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "toolcall_kit.cli", *args], capture_output=True, text=True,
                          env=env, timeout=kw.pop("timeout", 300), **kw)


# ------------------------------------------------------------------------ 1. merge --out never deletes


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapter")
    base = build_tiny_model(root / "base", arch="llama")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.save_pretrained(root / "run" / "adapter")
    (root / "run" / "config.yaml").write_text(f"model:\n  name: {base}\n")
    return base, root / "run"


def test_merge_out_refuses_a_users_folder_and_keeps_it(adapter, tmp_path, capsys):
    base, run = adapter
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    rc, _, err = cli(["merge", run, "--out", mine, "--base", base], capsys)
    one_line_error(rc, err, str(mine), "did not make")
    assert (mine / "thesis.txt").read_text() == "years of work" and sorted(os.listdir(mine)) == ["thesis.txt"]


@pytest.mark.parametrize("where", ["run", "adapter", "parent"])
def test_merge_out_refuses_its_own_inputs_and_folders_above_them(adapter, capsys, where):
    base, run = adapter
    out = {"run": run, "adapter": run / "adapter", "parent": run.parent}[where]
    before = sorted(p.name for p in out.iterdir())
    rc, _, err = cli(["merge", run, "--out", out, "--base", base], capsys)
    one_line_error(rc, err, "--out")
    assert sorted(p.name for p in out.iterdir()) == before
    assert (run / "adapter" / "adapter_config.json").is_file()


def test_merge_out_replaces_its_own_earlier_merge_and_marks_it(adapter, tmp_path):
    from toolcall_kit.merge import merge

    base, run = adapter
    out = tmp_path / "merged"
    merge(run, out, base=str(base))
    assert kit_io.is_marked(out)
    report = merge(run, out, base=str(base))  # the kit's own folder: replaced
    assert report["warnings"] == [] and (out / "model.safetensors").is_file()


def test_a_killed_builds_temporary_folder_is_removed_by_the_next_one(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / ".merged.abc123.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 1000)
    (stale / kit_io.KIT_MARKER).write_text(json.dumps({"kind": "building", "pid": dead.pid}))
    alive = tmp_path / ".merged.def456.tmp"  # a build in progress in a live process: left alone
    alive.mkdir()
    (alive / kit_io.KIT_MARKER).write_text(json.dumps({"kind": "building", "pid": os.getpid()}))
    users = tmp_path / ".merged.user.tmp"  # no marker: not the kit's
    users.mkdir()
    with kit_io.atomic_dir(tmp_path / "merged") as tmp:
        (tmp / "x").write_text("x")
    assert not stale.exists() and alive.exists() and users.exists()
    assert (tmp_path / "merged" / "x").read_text() == "x"


def test_merge_with_another_base_says_so(adapter, tmp_path):
    from tiny_model import build_tiny_model

    from toolcall_kit.merge import merge, summary

    base, run = adapter
    other = build_tiny_model(tmp_path / "other", arch="llama")
    report = merge(run, tmp_path / "merged", base=str(other))
    assert report["warnings"] and "not the model this adapter was trained on" in report["warnings"][0]
    assert "warning:" in summary(report)


# ------------------------------------------------------------------------ 2, 3. run folders: replace late, lock


def _train_data(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "train.jsonl", [record(c) for c in ("Paris", "Rome", "Oslo", "Lima")])


def _old_run(run: Path) -> None:
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (run / "config.yaml").write_text("old: run\n")
    (run / "result.json").write_text('{"status": "completed"}')
    kit_io.mark(run, "run")


def test_overwrite_keeps_the_old_run_when_the_new_one_fails_to_start(tmp_path):
    from toolcall_kit.config import load_config
    from toolcall_kit.train import train

    run = tmp_path / "runs" / "r"
    _old_run(run)
    cfg = load_config(SMOKE, {"output.dir": str(tmp_path / "runs"), "output.name": "r", "output.overwrite": True,
                              "data.train": str(_train_data(tmp_path)), "data.eval": None,
                              "model.name": str(tmp_path / "no-such-model")})
    with pytest.raises(KitError, match="not a model folder"):
        train(cfg)
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert (run / "config.yaml").read_text() == "old: run\n" and (run / "result.json").is_file()


def test_a_run_folder_of_the_users_is_refused(tmp_path):
    from toolcall_kit.config import load_config
    from toolcall_kit.train import train

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "notes.md").write_text("mine")
    cfg = load_config(SMOKE, {"output.dir": str(tmp_path / "runs"), "output.name": "r", "output.overwrite": True,
                              "data.train": str(_train_data(tmp_path)), "data.eval": None})
    with pytest.raises(KitError, match="did not write"):
        train(cfg)
    assert [p.name for p in run.iterdir() if p.name != kit_io.LOCK_FILE] == ["notes.md"]


def test_a_second_writer_of_a_run_gets_a_clear_error(tmp_path):
    from toolcall_kit.config import load_config
    from toolcall_kit.train import train

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    cfg = load_config(SMOKE, {"output.dir": str(tmp_path / "runs"), "output.name": "r",
                              "data.train": str(_train_data(tmp_path)), "data.eval": None})
    with open(run / kit_io.LOCK_FILE, "a+") as other:  # what another process's lock looks like
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(KitError, match="in use by another toolcall-kit process"):
            train(cfg)
    with kit_io.folder_lock(run), kit_io.folder_lock(run):  # re-entrant within one process
        pass


def test_pipeline_takes_the_run_lock(tmp_path):
    from toolcall_kit.pipeline import run_all

    run = tmp_path / "runs" / "smoke"
    run.mkdir(parents=True)
    with open(run / kit_io.LOCK_FILE, "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(KitError, match="in use"):
            run_all(SMOKE, [f"output.dir={tmp_path / 'runs'}"], stages=("prepare",))


def test_resume_of_a_finished_run_is_refused(tmp_path):
    from toolcall_kit.train import train

    run = tmp_path / "runs" / "done"
    ck = run / "checkpoints" / "checkpoint-4"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 4, "max_steps": 8, "epoch": 1.0}))
    (run / "result.json").write_text(json.dumps({"status": "completed", "steps": 8}))
    (run / "config.yaml").write_text(SMOKE.read_text())
    (run / "adapter").mkdir()
    with pytest.raises(KitError, match="already finished"):
        train(resume=run)
    assert not (run / "checkpoints" / "checkpoint-8").exists()


# ------------------------------------------------------------------------ 4. pipes, /dev/stdin, -, FIFOs


def _many_rows(tmp_path: Path, n: int = 120) -> Path:
    rows = [record(f"City{i:03d}", rid=f"r{i}") for i in range(n)]  # ~40 KiB: well past one 4 KiB read
    return write_rows(tmp_path / "raw.jsonl", rows)


@pytest.mark.parametrize("how", ["dash", "dev_stdin", "process_substitution", "gzip_pipe"])
def test_prepare_reads_pipes_whole(tmp_path, how):
    raw = _many_rows(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kit = f"{sys.executable} -m toolcall_kit.cli prepare"
    cmd = {
        "dash": f"cat {raw} | {kit} - --out {out} --json",
        "dev_stdin": f"cat {raw} | {kit} /dev/stdin --out {out} --json",
        "process_substitution": f"{kit} <(cat {raw}) --out {out} --json",
        "gzip_pipe": f"gzip -c {raw} | {kit} - --out {out} --json",
    }[how]
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["read"] == report["kept"] == 120


def test_a_fifo_is_read_once_and_does_not_hang(tmp_path):
    raw = _many_rows(tmp_path)
    fifo = tmp_path / "data.fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as f:
            f.write(raw.read_bytes())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    done = kit_cmd("prepare", str(fifo), "--out", str(tmp_path / "out"), "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["read"] == 120


def test_score_reads_standard_input(tmp_path):
    preds = DATA / "eval_small_predictions.jsonl"
    done = kit_cmd("score", "--predictions", "-", "--data", str(DATA / "eval_small.jsonl"), "--json",
                   input=preds.read_text())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metrics"]


# ------------------------------------------------------------------------ 5. prepare never overwrites its input


def test_prepare_refuses_to_overwrite_its_own_input(tmp_path, capsys):
    raw = write_rows(tmp_path / "mine" / "train.jsonl", [record("Paris"), record("Rome")])
    before = raw.read_bytes()
    rc, _, err = cli(["prepare", raw, "--out", tmp_path / "mine"], capsys)
    one_line_error(rc, err, "would overwrite the input")
    assert raw.read_bytes() == before and not (tmp_path / "mine" / "report.json").exists()


def test_prepare_strict_fails_when_nothing_is_kept(tmp_path, capsys):
    empty = write_rows(tmp_path / "empty.jsonl", [])
    rc, _, _ = cli(["prepare", empty, "--out", tmp_path / "out", "--strict"], capsys)
    assert rc == 1


# ------------------------------------------------------------------------ 6. exact match on object arguments


def test_gold_calls_with_object_arguments_score_exact(tmp_path, capsys):
    from toolcall_kit.evaluate import score

    tool = {"type": "function", "function": {"name": "book", "parameters": {
        "type": "object",
        "properties": {"trip": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}}},
                       "stops": {"type": "array", "items": {"type": "object"}}},
        "required": ["trip"]}}}
    rec = record(tools=[tool], rid="t1", args={"trip": {"from": "Oslo", "to": "Rome"}, "stops": [{"city": "Bonn"}]})
    data = write_rows(tmp_path / "eval.jsonl", [rec])
    calls = rec["messages"][1]["tool_calls"]
    preds = write_rows(tmp_path / "preds.jsonl", [{"id": "t1", "tool_calls": calls}])
    report = score(preds, data=data)
    assert report["metrics"]["arguments_exact"]["rate"] == 1.0
    assert report["metrics"]["arguments_ast"]["rate"] == 1.0


# ------------------------------------------------------------------------ 7. secrets


class _Echo(http.server.BaseHTTPRequestHandler):
    auth: list = []

    def do_POST(self):  # noqa: N802
        type(self).auth.append(self.headers.get("Authorization"))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = "Please: " + body["messages"][-1]["content"]
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_teacher_key_only_when_given_and_never_over_plain_http(tmp_path, monkeypatch):
    from toolcall_kit import synth as S

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    records, _ = S.generate(6, seed=1)
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-other-programs-secret")
        monkeypatch.delenv("TOOLCALL_KIT_TEACHER_API_KEY", raising=False)
        _Echo.auth.clear()
        _, rep = S.paraphrase_with_teacher(records, url, "m")
        assert _Echo.auth and set(_Echo.auth) == {None} and rep["api_key_sent"] is False
        monkeypatch.setenv("TOOLCALL_KIT_TEACHER_API_KEY", "kit-key")
        _Echo.auth.clear()
        S.paraphrase_with_teacher(records, url, "m")
        assert set(_Echo.auth) == {"Bearer kit-key"}  # loopback over http: allowed
    finally:
        server.shutdown()
    for far in ("http://teacher.example.com/v1", "http://localhost.example.com/v1"):
        with pytest.raises(KitError, match="refusing to send the API key"):
            S.synth(tmp_path / "x.jsonl", n=4, teacher_url=far, teacher_model="m")
    assert not (tmp_path / "x.jsonl").exists()
    assert S.teacher_key("https://teacher.example.com/v1", "k") == "k"


# ------------------------------------------------------------------------ 8. schema regexes are bounded


@pytest.mark.parametrize("pattern", [r"^(a+)+$", r"^(a|aa)+$", r"^(a|a)*$"])
def test_catastrophic_schema_patterns_do_not_hang(tmp_path, pattern):
    from toolcall_kit.prepare import prepare
    from toolcall_kit.validate import check_call, check_tools

    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"s": {"type": "string", "pattern": pattern}},
        "patternProperties": {pattern: {"type": "string"}}}}}
    rows = [record(tools=[tool], args={"s": "a" * (60 + i) + "b"}) for i in range(3)]  # none matches
    rows += [record(tools=[tool], args={"a" * 60 + "b": "x", "s": "aa"})]
    t0 = time.monotonic()
    report = prepare([write_rows(tmp_path / "raw.jsonl", rows)], tmp_path / "out")
    assert report["read"] == 4 and report["rejected"] >= 3
    hostile = {"s": "a" * 70 + "b"}
    declared, _ = check_tools([tool])
    assert check_call({"function": {"name": "f", "arguments": hostile}}, declared, "eval")  # eval's check
    assert time.monotonic() - t0 < 20  # Python's re: hours for each of these


# ------------------------------------------------------------------------ 9. pipeline data overrides


def test_pipeline_set_data_train_is_not_ignored_after_prepare(tmp_path):
    from toolcall_kit import pipeline

    first = write_rows(tmp_path / "a.jsonl", [record(c) for c in ("Paris", "Rome", "Oslo")])
    second = write_rows(tmp_path / "b.jsonl", [record(c) for c in ("Lima", "Kyiv")])
    common = [f"output.dir={tmp_path / 'runs'}", "data.eval=null"]
    pipeline.run_all(SMOKE, [*common, f"data.train={first}"], stages=("prepare",))
    cfg = pipeline.load_run(SMOKE, [*common, f"data.train={second}"])
    assert cfg.data.train == str(second)  # not the old prepared copy
    with pytest.raises(KitError, match="ran on other data"):
        pipeline.tokens_stage(cfg)
    out = pipeline.run_all(SMOKE, [*common, f"data.train={second}"], stages=("prepare",))
    assert out["prepare"]["kept"] == 2
    cfg = pipeline.load_run(SMOKE, [*common, f"data.train={second}"])
    assert cfg.data.train == out["prepare"]["train"] and len(Path(cfg.data.train).read_text().splitlines()) == 2


# ------------------------------------------------------------------------ 10. numbers JSON cannot hold


def test_nan_infinity_and_overflow_are_rejected_not_written(tmp_path):
    from toolcall_kit.prepare import prepare

    rows = [json.dumps(record("Paris"))]
    for bad in ("NaN", "Infinity", "-Infinity", "1e400"):  # inside string-encoded arguments
        call = {"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": f'{{"city": "X", "n": {bad}}}'}}
        rows.append(json.dumps({"tools": [WEATHER], "messages": [{"role": "user", "content": "hi"},
                                                                  {"role": "assistant", "tool_calls": [call]}]}))
    rows.append(rows[-1].replace('"arguments": "{\\"city\\": \\"X\\", \\"n\\": 1e400}"',
                                 '"arguments": {"city": "Y", "n": 1e400}'))  # an object holding 1e400
    assert '"n": 1e400}' in rows[-1]
    report = prepare([write_rows(tmp_path / "raw.jsonl", rows, raw=True)], tmp_path / "out", eval_fraction=0)
    assert report["kept"] == 1 and report["rejected"] == 5
    assert set(report["rejected_by_reason"]) == {"invalid_json"}

    def refuse(constant):
        raise ValueError(constant)

    for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines():
        json.dumps(json.loads(line, parse_constant=refuse), allow_nan=False)  # strict JSON only
    assert prepare([tmp_path / "out" / "train.jsonl"], tmp_path / "again")["rejected"] == 0


# ------------------------------------------------------------------------ also


def test_a_mixed_file_reads_each_row_in_its_own_format(tmp_path):
    from toolcall_kit.prepare import prepare

    xlam = {"query": "Weather in Bern?", "tools": json.dumps([WEATHER["function"]]),
            "answers": json.dumps([{"name": "get_weather", "arguments": {"city": "Bern"}}])}
    rows = [record(c) for c in ("Paris", "Rome", "Oslo")] + [xlam]
    report = prepare([write_rows(tmp_path / "mixed.jsonl", rows)], tmp_path / "out", eval_fraction=0)
    assert report["kept"] == 4 and report["rejected"] == 0
    assert report["files"][str(tmp_path / "mixed.jsonl")]["other_format_rows"] == {"xlam": 1}


def test_a_tool_name_ending_in_a_newline_is_refused():
    from toolcall_kit.validate import check_tools

    bad = {"type": "function", "function": {"name": "get_weather\n", "parameters": {"type": "object"}}}
    _, problems = check_tools([bad])
    assert problems and problems[0].reason == "bad_tool_name"


def test_eval_limit_must_not_be_negative(tmp_path, capsys):
    rc, _, err = cli(["eval", "--model", "tiny:llama", "--data", DATA / "eval_small.jsonl", "--limit", "-1",
                      "--out", tmp_path / "ev"], capsys)
    one_line_error(rc, err, "--limit")


def test_a_record_id_that_looks_like_another_records_turn_is_refused():
    from toolcall_kit.evaluate import cases_from_records

    two_turns = record("Paris", rid="a")
    two_turns["messages"] += [{"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                              {"role": "assistant", "content": "Sunny."}]
    with pytest.raises(KitError, match="turn 2 of record 'a'"):
        cases_from_records([two_turns, record("Rome", rid="a#2")])


def test_plan_reads_the_kits_own_tiny_names(capsys):
    rc, out, err = cli(["plan", "--config", SMOKE], capsys)
    assert rc == 0, err
    assert "tiny:llama" in out


def test_an_absurd_learning_rate_is_refused_and_a_zero_gradient_warned(tmp_path):
    from transformers import TrainerControl, TrainerState

    from toolcall_kit.callbacks import HealthCallback, RunLog
    from toolcall_kit.config import load_config

    with pytest.raises(KitError, match="learning_rate"):
        load_config(SMOKE, {"train.learning_rate": 1e12})
    log = RunLog(tmp_path)
    cb = HealthCallback(log)
    state, control = TrainerState(), TrainerControl()
    for step in (1, 2, 3):
        state.global_step = step
        cb.on_log(None, state, control, logs={"loss": 5.0, "grad_norm": 0.0})
    assert [w["warning"] for w in log.warnings] == ["zero_grad"]


# ------------------------------------------------------------------------ tracebacks -> one line, exit 2


def _blocker(tmp_path: Path) -> Path:
    """A plain file: any path under it cannot be created, whoever runs the tests (root included)."""
    f = tmp_path / "a-file"
    f.write_text("x")
    return f


def test_unwritable_out_paths_are_one_line(tmp_path, capsys):
    under = _blocker(tmp_path) / "sub"
    train = _train_data(tmp_path)
    cases = [
        ["synth", "--out", under / "x.jsonl", "--n", "5"],
        ["eval", "--model", "tiny:llama", "--data", DATA / "eval_small.jsonl", "--out", under / "ev"],
        ["tokens", train, "--model", "tiny:llama", "--plot", under / "h.png"],
        ["train", "--config", SMOKE, "--set", f"output.dir={under}", "--set", f"data.train={train}",
         "--set", "data.eval=null"],
        ["model", "tiny:llama", "--cache-dir", under],
        ["prepare", train, "--out", under],
    ]
    for argv in cases:
        rc, _, err = cli(argv, capsys)
        one_line_error(rc, err, str(under))


def test_non_utf8_and_folder_inputs_are_one_line(tmp_path, capsys):
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(json.dumps(record("Zürich"), ensure_ascii=False).encode("latin-1") + b"\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    for bad in (latin, folder):
        for argv in (
            ["synth", "--out", tmp_path / "s.jsonl", "--n", "5", "--catalog", bad],
            ["tokens", bad, "--model", "tiny:llama"],
            ["show-mask", bad, "--model", "tiny:llama"],
            ["score", "--predictions", bad, "--data", DATA / "eval_small.jsonl"],
            ["score", "--predictions", DATA / "eval_small_predictions.jsonl", "--data", bad],
            ["eval", "--model", "tiny:llama", "--data", bad, "--out", tmp_path / "ev"],
            ["train", "--config", SMOKE, "--set", f"output.dir={tmp_path / 'runs'}", "--set", f"data.train={bad}",
             "--set", "data.eval=null"],
        ):
            rc, _, err = cli(argv, capsys)
            one_line_error(rc, err or f"no error from {argv}", str(bad))


def test_broken_adapters_and_non_model_folders_are_one_line(adapter, tmp_path, capsys):
    base, run = adapter
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "adapter_config.json").write_text('{"base_model_name_or_path": ')
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "adapter_config.json").write_text((run / "adapter" / "adapter_config.json").read_text())
    half = tmp_path / "half"
    half.mkdir()
    (half / "adapter_config.json").write_text((run / "adapter" / "adapter_config.json").read_text())
    full = (run / "adapter" / "adapter_model.safetensors").read_bytes()
    (half / "adapter_model.safetensors").write_bytes(full[: len(full) // 2])
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    data = DATA / "eval_small.jsonl"
    for argv, name in (
        (["merge", truncated, "--out", tmp_path / "m1", "--base", base], truncated),
        (["merge", no_weights, "--out", tmp_path / "m2", "--base", base], no_weights),
        (["merge", half, "--out", tmp_path / "m3", "--base", base], half),
        (["merge", run, "--out", tmp_path / "m4", "--base", not_a_model], not_a_model),
        (["eval", "--model", base, "--adapter", half, "--data", data, "--limit", "1", "--out", tmp_path / "e1"], half),
        (["eval", "--model", base, "--adapter", truncated, "--data", data, "--limit", "1", "--out", tmp_path / "e2"],
         truncated),
        (["eval", "--model", not_a_model, "--data", data, "--limit", "1", "--out", tmp_path / "e3"], not_a_model),
        (["tokens", data, "--model", not_a_model], not_a_model),
    ):
        rc, _, err = cli(argv, capsys)
        one_line_error(rc, err, str(name))
    assert not any(p.name.startswith(".m") for p in tmp_path.iterdir())  # no temporary folder left behind


def test_gzip_input_still_reads_by_name(tmp_path):
    from toolcall_kit.prepare import prepare

    raw = _many_rows(tmp_path, 10)
    gz = tmp_path / "raw.jsonl.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    assert prepare([gz], tmp_path / "out")["kept"] == 10


def test_parquet_says_when_it_cannot_keep_null_arguments(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from toolcall_kit.prepare import prepare

    def row(args):
        rec = record("Paris", args=args)
        rec["tools"] = json.dumps(rec["tools"])
        return rec

    as_struct = tmp_path / "struct.parquet"
    pq.write_table(pa.Table.from_pylist([row({"city": "Paris", "unit": None})]), as_struct)
    report = prepare([as_struct], tmp_path / "a", eval_fraction=0)
    assert any("explicit null" in w for w in report["warnings"])
    as_json = tmp_path / "json.parquet"  # arguments as a JSON string: the null survives
    pq.write_table(pa.Table.from_pylist([row(json.dumps({"city": "Paris", "unit": None}))]), as_json)
    report = prepare([as_json], tmp_path / "b", eval_fraction=0)
    assert not any("explicit null" in w for w in report["warnings"])
    kept = json.loads((tmp_path / "b" / "train.jsonl").read_text())
    assert kept["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris", "unit": None}
