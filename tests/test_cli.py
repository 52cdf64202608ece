"""`tokens`, `show-mask` and `plan` read a run config (--config, --set) and their own flags override it."""

import json
import re
from pathlib import Path

import pytest

from toolcall_kit.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
DATA = str(Path(__file__).parent / "data" / "eval_small.jsonl")


def run(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_tokens_takes_the_config_and_flags_override_it(capsys):
    rc, out, err = run(["tokens", DATA, "--config", SMOKE, "--json"], capsys)
    assert rc == 0, err
    rep = json.loads(out)
    # smoke.yaml: 2048 tokens, batch 2, grad_accum 1, max_steps (no epochs: one epoch is counted).
    assert (rep["max_seq_length"], rep["batch_size"], rep["grad_accum"], rep["epochs"]) == (2048, 2, 1, 1)
    assert rep["source_records"] == 6
    argv = ["tokens", DATA, "--config", SMOKE, "--set", "train.grad_accum=3", "--max-seq-length", "64",
            "--batch-size", "1", "--json"]  # fmt: skip
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    rep = json.loads(out)
    assert (rep["max_seq_length"], rep["batch_size"], rep["grad_accum"]) == (64, 1, 3)
    assert rep["over_max_seq_length"]  # the eval examples are longer than 64 tokens


def test_tokens_without_a_config_keeps_its_defaults_and_needs_data_and_model(capsys):
    rc, out, err = run(["tokens", DATA, "--model", "tiny:llama", "--json"], capsys)
    assert rc == 0, err
    rep = json.loads(out)
    assert (rep["max_seq_length"], rep["batch_size"], rep["epochs"]) == (4096, 4, 1)
    rc, _, err = run(["tokens", DATA], capsys)
    assert rc == 2 and "tokens: give DATA and --model, or --config" in err
    rc, _, err = run(["show-mask", "--model", "tiny:llama"], capsys)
    assert rc == 2 and "show-mask: give DATA and --model, or --config" in err


def test_tokens_config_errors_name_the_file_and_key(capsys):
    rc, _, err = run(["tokens", DATA, "--config", SMOKE, "--set", "train.grad_acum=2"], capsys)
    assert rc == 2 and "smoke.yaml: train.grad_acum: unknown key (did you mean 'grad_accum'?)" in err
    rc, _, err = run(["tokens", DATA, "--config", SMOKE, "--max-seq-length", "8"], capsys)
    assert rc == 2 and "model.max_seq_length: must be >= 16, got 8" in err


def test_show_mask_takes_the_config_and_marks_its_cut(capsys):
    rc, out, err = run(["show-mask", DATA, "--config", SMOKE, "--set", "model.max_seq_length=32",
                        "--color", "never"], capsys)  # fmt: skip
    assert rc == 0, err
    assert "<<cut at 32 tokens" in out and "[[" in out
    rc, out, _ = run(["show-mask", DATA, "--config", SMOKE, "--max-seq-length", "4096", "--color", "never"], capsys)
    assert "<<cut at" not in out


def test_plan_uses_grad_accum_top_layers_and_target_modules(capsys):
    config = ROOT / "configs" / "qwen2_5_7b_qlora.yaml"
    rc, out, err = run(["plan", "--config", config, "--set", "train.grad_accum=4", "--json"], capsys)
    assert rc == 0, err
    est = json.loads(out)
    assert est["effective_batch"] == 16 and est["fits"]  # batch_size 4 x grad_accum 4
    # Too large a batch: the advice names a batch that fits and the grad_accum that keeps the effective batch.
    big = ["plan", "--config", config, "--gpu", "t4-16gb", "--set", "train.batch_size=64", "--set",
           "train.grad_accum=2", "--json"]  # fmt: skip
    rc, out, _ = run(big, capsys)
    too_big = json.loads(out)
    assert not too_big["fits"] and too_big["effective_batch"] == 128
    batch, accum = map(int, re.fullmatch(r"batch_size (\d+) x grad_accum (\d+) .*", too_big["advice"]).groups())
    assert batch < 64 and batch * accum >= 128
    rc, out, _ = run([*big, "--set", f"train.batch_size={batch}", "--set", f"train.grad_accum={accum}"], capsys)
    assert json.loads(out)["fits"]
    rc, out, _ = run(["plan", "--config", config, "--set", "lora.top_layers=7", "--json"], capsys)
    assert json.loads(out)["lora_params_million"] == pytest.approx(est["lora_params_million"] / 4, rel=0.01)
    rc, _, err = run(["plan", "--config", config, "--set", "lora.target_modules=[q_proj, qkv_proj]"], capsys)
    assert rc == 2 and "lora.target_modules" in err and "qkv_proj" in err


def test_plan_without_config_needs_a_model(capsys):
    rc, _, err = run(["plan"], capsys)
    assert rc == 2 and "plan needs --config or --model" in err
