"""Training on the tiny random model: both backends for real, the run folder, masks, resume, health, DDP.

In-process tests use the hf backend (unsloth must be imported before transformers, so the Unsloth test runs
in a subprocess through the CLI). The slow ones start several processes (resume after SIGKILL, torchrun).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from toolcall_kit.config import load_config
from toolcall_kit.errors import KitError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
CITIES = ["Paris", "Lisbon", "Tokyo", "Oslo", "Lima", "Cairo", "Quito", "Rome", "Accra", "Hanoi"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def make_records(n: int, seed: int) -> list[dict]:
    """Canonical records: single calls, plain answers, and a call followed by its result and an answer."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        city = rnd.choice(CITIES)
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": city}},
        }
        if i % 3 == 0:
            msgs = [
                {"role": "user", "content": f"Hi there, number {i}!"},
                {"role": "assistant", "content": "Hello! How can I help?"},
            ]
        elif i % 3 == 1:
            msgs = [
                {"role": "user", "content": f"What is the weather in {city}?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
            ]
        else:
            msgs = [
                {"role": "user", "content": f"Weather for {city}, please."},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {
                    "role": "tool",
                    "tool_call_id": "call_1",
                    "name": "get_weather",
                    "content": '{"temp_c": 18}',
                },
                {"role": "assistant", "content": f"It is 18 C in {city}."},
            ]
        out.append({"id": f"ex-{seed}-{i:03d}", "tools": [WEATHER], "messages": msgs})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("data")
    return {
        "train": str(write_jsonl(d / "train.jsonl", make_records(32, 0))),
        "eval": str(write_jsonl(d / "eval.jsonl", make_records(8, 1))),
    }


def cfg_for(tmp_path: Path, data: dict, **overrides):
    base = {
        "data.train": data["train"],
        "data.eval": data["eval"],
        "output.dir": str(tmp_path / "runs"),
        "output.name": "t",
        "output.overwrite": False,
        "backend": "hf",
        "train.learning_rate": 1e-2,
        "train.max_steps": 10,
        "train.save_steps": 5,
        "train.eval_steps": 5,
    }
    base.update(overrides)
    return load_config(SMOKE, base)


def overrides_cli(o: dict) -> list[str]:
    return [
        a for k, v in o.items() for a in ("--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}")
    ]


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def env_for_subprocess() -> dict:
    env = dict(os.environ)
    env.update(
        UNSLOTH_SKIP_TORCHVISION_CHECK="1", TOKENIZERS_PARALLELISM="false", TOOLCALL_KIT_NO_PROGRESS="1"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


# ------------------------------------------------------------------ the hf backend, in process


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, data):
    from toolcall_kit.train import train

    tmp = tmp_path_factory.mktemp("hf")
    cfg = cfg_for(tmp, data)
    result = train(cfg)
    return cfg, result


def test_hf_backend_trains_and_fills_the_run_folder(hf_run):
    cfg, result = hf_run
    run = Path(result["run_dir"])
    assert result["status"] == "completed" and result["backend"] == "hf"
    assert result["steps"] == 10 and result["device"] == "cpu" and result["precision"] == "fp32"
    for name in (
        "config.yaml",
        "data_fingerprints.json",
        "metrics.jsonl",
        "loss.png",
        "result.json",
    ):
        assert (run / name).is_file(), name
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-10",
        "checkpoint-5",
    ]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "adapter" / "tokenizer_config.json").is_file()
    # The stored config is the resolved one and loads back equal.
    assert load_config(run / "config.yaml") == cfg
    fp = json.loads((run / "data_fingerprints.json").read_text())
    assert fp["train"]["rows"] == 32 and fp["eval"]["rows"] == 8 and len(fp["train"]["sha256"]) == 64
    assert json.loads((run / "result.json").read_text()) == result
    # PEFT resolved lora.target_modules "all-linear": every projection, never the output head.
    assert result["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_fingerprints_hold_the_token_reports_statistics(hf_run, data):
    """One set of token statistics: what training records for its data is what stage 02 reports."""
    from toolcall_kit.records import read_records
    from toolcall_kit.tokens import load_tokenizer, token_report

    cfg, result = hf_run
    fp = json.loads((Path(result["run_dir"]) / "data_fingerprints.json").read_text())
    tok = load_tokenizer(cfg.model.name)
    report = token_report(tok, read_records(data["train"]), max_seq_length=cfg.model.max_seq_length)
    keys = ("examples", "tokens", "trained_tokens", "kept_tokens", "kept_trained_tokens", "truncated_examples",
            "longest_tokens", "distribution", "max_seq_length")  # fmt: skip
    assert {k: fp["train"][k] for k in keys} == {k: report[k] for k in keys}
    assert fp["train"]["trained_tokens"] > 0 and fp["train"]["rows"] == 32


def test_recipe_steps_run_one_by_one(tmp_path, data):
    """train()'s steps are functions of their own: set up, load, encode, and the run folder's first files."""
    from toolcall_kit.train import build_datasets, load_model, setup_run, start_run_folder

    cfg = cfg_for(tmp_path, data, **{"output.name": "steps"})
    run = setup_run(cfg)
    assert run.backend == "hf" and run.checkpoint is None and run.main and cfg.run_dir.is_dir()
    loaded = load_model(run)
    assert loaded.family == "chatml" and loaded.targets and loaded.model.peft_config
    datasets = build_datasets(run, loaded)
    assert len(datasets.train.input_ids) == 32 and len(datasets.eval.input_ids) == 8
    assert all(len(i) == len(lab) for i, lab in zip(datasets.train.input_ids, datasets.train.labels, strict=True))
    start_run_folder(run, datasets)
    assert load_config(cfg.run_dir / "config.yaml") == cfg
    assert json.loads((cfg.run_dir / "data_fingerprints.json").read_text())["train"]["examples"] == 32


def test_hf_backend_loss_fell_and_adapter_changed(hf_run):
    _, result = hf_run
    run = Path(result["run_dir"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1] < evals[0]
    for r in rows:
        if "loss" in r:
            assert {"learning_rate", "grad_norm", "tokens_per_s", "peak_rss_gib"} <= set(r)
    # LoRA B starts at zero: trained weights are non-zero, and differ from the first checkpoint's.
    final = adapter_tensors(run / "adapter")
    early = adapter_tensors(run / "checkpoints" / "checkpoint-5")
    b_keys = [k for k in final if "lora_B" in k]
    assert b_keys and all(final[k].abs().sum() > 0 for k in b_keys)
    assert any((final[k] - early[k]).abs().max() > 0 for k in final)
    assert result["trainable_params"] > 0 and result["tokens_per_s"] > 0
    assert 0 < result["real_token_fraction"] <= 1 and 0 < result["trained_token_fraction"] < 1


def test_top_layers_adapts_only_the_top_layers_and_length_grouping_pads_less(tmp_path, data):
    from toolcall_kit.train import train

    cfg = cfg_for(tmp_path, data, **{"lora.top_layers": 1, "train.group_by_length": True, "train.eval_steps": None,
                                     "train.save_steps": None, "data.eval": None, "train.max_steps": 6})  # fmt: skip
    result = train(cfg)
    tensors = adapter_tensors(Path(result["run_dir"]) / "adapter")
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in tensors}
    assert layers == {1}, sorted(tensors)  # tiny:llama has 2 layers: only the top one is adapted
    assert result["cpu_threads"] >= 1
    random_order = train(cfg_for(tmp_path, data, **{"output.name": "random", "train.eval_steps": None,
                                                     "train.save_steps": None, "data.eval": None,
                                                     "train.max_steps": 6}))  # fmt: skip
    assert result["real_token_fraction"] > random_order["real_token_fraction"]
    with pytest.raises(KitError, match="lora.top_layers"):
        train(cfg_for(tmp_path, data, **{"output.name": "deep", "lora.top_layers": 3}))


def test_full_finetuning_trains_only_the_top_layers_and_saves_the_model(tmp_path, data):
    import torch
    from safetensors.torch import load_file

    from toolcall_kit.models import resolve_model
    from toolcall_kit.train import resolve_init_from, train

    o = {"method": "full", "full.top_layers": 1, "train.learning_rate": 1e-3, "train.max_steps": 8,
         "train.eval_steps": None, "train.save_steps": None, "data.eval": None}  # fmt: skip
    result = train(cfg_for(tmp_path, data, **o))
    assert result["method"] == "full" and result["adapter"] is None and result["target_modules"] == []
    assert result["final_loss"] < result["first_loss"] - 0.05
    run = Path(result["run_dir"])
    assert Path(result["trained_model"]) == run / "model" and not (run / "adapter").exists()
    base = load_file(str(Path(resolve_model("tiny:llama")) / "model.safetensors"))
    trained = load_file(str(run / "model" / "model.safetensors"))
    changed = {k for k in base if not torch.equal(base[k], trained[k].to(base[k].dtype))}
    # tiny:llama has 2 layers: the top one and the final norm train; layer 0 and the (tied) embeddings do not.
    assert changed and all(".layers.1." in k or k == "model.norm.weight" for k in changed), sorted(changed)
    assert any(".layers.1.mlp." in k for k in changed) and any(".layers.1.self_attn." in k for k in changed)
    assert result["trainable_params"] < result["total_params"]
    # Stage 04 exports it like a merged adapter: saved, reloaded and compared on the probe.
    from toolcall_kit.merge import merge

    report = merge(run, run / "merged")
    assert report["trained"] == "full" and report["max_abs_logit_diff"] <= report["tolerance"]
    exported = load_file(str(run / "merged" / "model.safetensors"))
    assert all(torch.equal(exported[k], trained[k]) for k in trained)  # fp32 run: fp32 export, bit for bit
    assert "fully fine-tuned weights" in (run / "merged" / "README.md").read_text()
    # The run folder is a model to start the next run from; an adapter is not.
    assert resolve_init_from(result["run_dir"]).model == run / "model"
    adapter = _lora_adapter(tmp_path, data)
    with pytest.raises(KitError, match="init_from: .* is a LoRA adapter; method: full"):
        train(cfg_for(tmp_path, data, **{**o, "output.name": "again", "init_from": adapter}))


def _lora_adapter(tmp_path: Path, data: dict) -> str:
    from toolcall_kit.train import train

    o = {"output.name": "lora", "train.max_steps": 1, "train.eval_steps": None, "train.save_steps": None,
         "data.eval": None}  # fmt: skip
    return train(cfg_for(tmp_path, data, **o))["adapter"]


def test_masked_tokens_get_label_minus_100_and_no_loss(tmp_path, data):
    """TRL 1.14 keeps the kit's labels: -100 exactly where the assistant mask is 0, and the loss is the
    mean cross-entropy over the trained positions only."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from toolcall_kit.config import sft_kwargs
    from toolcall_kit.models import resolve_model
    from toolcall_kit.records import read_records
    from toolcall_kit.tokens import encode
    from toolcall_kit.train import _dataset, encode_records, load_hf

    cfg = cfg_for(tmp_path, data, **{"data.eval": None})
    model, tok = load_hf(cfg, resolve_model(cfg.model.name), False, True)
    records = read_records(data["train"])
    enc = encode_records(records, tok, None, cfg.model.max_seq_length, "data.train", data["train"])
    for rec, ids, labels in zip(records, enc.input_ids, enc.labels, strict=True):
        ref = encode(tok, rec)
        assert ids == list(ref["input_ids"])
        assert [lab != -100 for lab in labels] == [bool(m) for m in ref["assistant_masks"]]
        assert 0 < sum(ref["assistant_masks"]) < len(ids)

    args = SFTConfig(**sft_kwargs(cfg, tmp_path / "ck", on_gpu=False, bf16_ok=True))
    trainer = SFTTrainer(model=model, args=args, train_dataset=_dataset(enc), processing_class=tok)
    assert trainer.train_dataset[0]["labels"] == enc.labels[0]
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits, shift_labels = logits[:, :-1], batch["labels"][:, 1:]
    keep = shift_labels != -100
    manual = torch.nn.functional.cross_entropy(shift_logits[keep], shift_labels[keep])
    assert torch.allclose(loss, manual, atol=1e-5), (loss, manual)
    # And it is not the loss over all tokens (which the mask exists to avoid).
    everything = torch.nn.functional.cross_entropy(
        shift_logits[batch["attention_mask"][:, 1:] == 1],
        batch["input_ids"][:, 1:][batch["attention_mask"][:, 1:] == 1],
    )
    assert abs(float(everything) - float(manual)) > 1e-4


def test_examples_cut_off_by_max_seq_length_are_an_error(tmp_path, data):
    from toolcall_kit.train import train

    cfg = cfg_for(tmp_path, data, **{"model.max_seq_length": 40})
    with pytest.raises(KitError) as e:
        train(cfg)
    msg = str(e.value)
    assert "data.train" in msg and "no trained tokens within model.max_seq_length=40" in msg
    assert "ex-0-000" in msg  # names the examples


def test_bfcl_records_are_never_trained_on(tmp_path, data):
    from toolcall_kit.train import train

    rows = [json.loads(line) for line in Path(data["train"]).read_text().splitlines()]
    rows[3]["id"] = "simple_python_7"  # a BFCL id: evaluation data that slipped into the training file
    bad = write_jsonl(tmp_path / "with_bfcl.jsonl", rows)
    with pytest.raises(KitError, match=r"data.train .* 1 BFCL evaluation record\(s\) \(simple_python_7\)"):
        train(cfg_for(tmp_path, {**data, "train": str(bad)}))


def test_missing_target_module_names_it(tmp_path, data):
    from toolcall_kit.train import train

    cfg = cfg_for(tmp_path, data, **{"lora.target_modules": ["q_proj", "qkv_proj"]})
    with pytest.raises(
        KitError, match=r"lora.target_modules: qkv_proj not found in tiny:llama \(its linear layers:"
    ):
        train(cfg)


def test_context_too_short_names_the_key(tmp_path, data):
    from toolcall_kit.train import train

    cfg = cfg_for(tmp_path, data, **{"model.max_seq_length": 100_000})
    with pytest.raises(KitError, match=r"model.max_seq_length: 100000 tokens do not fit"):
        train(cfg)


def test_existing_run_is_not_overwritten(hf_run):
    from toolcall_kit.train import train

    cfg, result = hf_run
    with pytest.raises(KitError, match="already holds a run: resume it"):
        train(cfg)


def test_overwrite_replaces_training_files_and_keeps_prepared_data(tmp_path, data):
    from toolcall_kit.train import train

    cfg = cfg_for(tmp_path, data, **{"train.max_steps": 1, "train.save_steps": None, "data.eval": None})
    prepared = cfg.run_dir / "data" / "train.jsonl"  # what the pipeline's prepare stage leaves there
    prepared.parent.mkdir(parents=True)
    prepared.write_text("kept\n")
    train(cfg)  # a folder with only other stages' files is not "a run"
    stale = cfg.run_dir / "checkpoints" / "checkpoint-99"
    stale.mkdir(parents=True)
    cfg.output.overwrite = True
    result = train(cfg)
    assert result["status"] == "completed"
    assert prepared.read_text() == "kept\n" and not stale.exists()


def test_resume_without_checkpoint_is_an_error(tmp_path):
    from toolcall_kit.train import train

    run = tmp_path / "empty"
    run.mkdir()
    (run / "config.yaml").write_text(SMOKE.read_text())
    with pytest.raises(KitError, match="no complete checkpoint"):
        train(resume=run)


def test_resume_from_a_checkpoint_cut_short_names_it(tmp_path):
    from toolcall_kit.train import train

    run = tmp_path / "cut"
    (run / "checkpoints" / "checkpoint-4").mkdir(parents=True)  # killed while saving: no trainer_state.json
    (run / "config.yaml").write_text(SMOKE.read_text())
    with pytest.raises(KitError, match=r"checkpoint-4 is incomplete .*delete it"):
        train(resume=run)


def test_metrics_are_the_trainers_log_history(tmp_path):
    """The log is the Trainer's log_history (a checkpoint restores it on resume); the end-of-training summary
    stays out of metrics.jsonl."""
    from transformers import TrainerState

    from toolcall_kit.callbacks import RunLog

    state = TrainerState()
    state.log_history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]  # as restored from checkpoint-2
    log = RunLog(tmp_path)
    log.follow(state)
    log.warn(2, "loss_spike", "spike")
    state.log_history.append({"step": 2, "train_runtime": 1.0, "train_loss": 1.7})
    log.flush(force=True)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("loss") for r in rows] == [2.0, 1.5, None] and rows[2]["warning"] == "loss_spike"
    assert state.log_history[2]["warning"] == "loss_spike"  # saved with the next checkpoint


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data):
    import torch
    from transformers import TrainerCallback

    from toolcall_kit.train import train

    class Poison(TrainerCallback):
        """Before the third step, LoRA B becomes inf: that forward overflows to inf/NaN (the config refuses
        the absurd learning rates that used to provoke it, so the fault is injected)."""

        def on_step_begin(self, args, state, control, model=None, **kw):
            if state.global_step == 2:
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if "lora_B" in name:
                            p.fill_(float("inf"))

    cfg = cfg_for(tmp_path, data, **{"train.save_steps": 1, "train.warmup_ratio": 0.0})
    with pytest.raises(KitError) as e:
        train(cfg, extra_callbacks=[Poison()])
    msg = str(e.value)
    assert "NaN" in msg or "nan" in msg or "inf" in msg
    assert "training stopped" in msg and "last good checkpoint is" in msg
    run = cfg.run_dir
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "stopped" and result["adapter"] is None
    assert not (run / "adapter").exists()
    assert result["steps"] < 10
    ckpts = sorted((run / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert ckpts and str(ckpts[-1]) in msg
    for ck in ckpts:  # nothing saved from non-finite weights
        assert all(torch.isfinite(t).all() for t in adapter_tensors(ck).values()), ck
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("error") == "non_finite" for r in rows)


def test_out_of_memory_names_the_batch_size(tmp_path, data):
    import torch
    from transformers import TrainerCallback

    from toolcall_kit.train import train

    class Oom(TrainerCallback):  # what CUDA raises when a batch does not fit, at step 3
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    cfg = cfg_for(tmp_path, data, **{"train.save_steps": 2})
    with pytest.raises(KitError) as e:
        train(cfg, extra_callbacks=[Oom()])
    msg = str(e.value)
    want = f"train.batch_size: a batch of {cfg.train.batch_size} x up to {cfg.model.max_seq_length} tokens"
    assert msg.startswith(want) and "at step 3" in msg
    assert f"--resume {cfg.run_dir}" in msg and "checkpoint-2" in msg


# ------------------------------------------------------------------ health warnings (no training needed)


def _feed(cb, logs_per_step):
    from transformers import TrainerControl, TrainerState

    state, control = TrainerState(), TrainerControl()
    for step, logs in logs_per_step:
        state.global_step = step
        cb.on_log(None, state, control, logs=logs)
    return control


def test_health_warnings(tmp_path):
    from toolcall_kit.callbacks import HealthCallback, RunLog

    log = RunLog(tmp_path)
    cb = HealthCallback(log)
    steady = [(s, {"loss": 2.0 - 0.01 * s, "grad_norm": 1.0}) for s in range(1, 11)]
    _feed(cb, steady + [(11, {"loss": 9.0, "grad_norm": 50.0})])
    kinds = [w["warning"] for w in log.warnings]
    assert kinds == ["loss_spike", "grad_explosion"], kinds
    assert log.warnings[0]["step"] == 11

    log = RunLog(tmp_path)
    cb = HealthCallback(log)
    _feed(cb, [(s, {"loss": 3.0}) for s in range(1, 25)])
    assert [w["warning"] for w in log.warnings] == ["flat_loss"]  # once, not at every step

    log = RunLog(tmp_path)
    cb = HealthCallback(log)
    seq = []
    for i, ev in enumerate([1.0, 1.1, 1.2, 1.3]):
        s = 10 * (i + 1)
        seq += [(s, {"loss": 1.0 - 0.1 * i}), (s, {"eval_loss": ev})]
    _feed(cb, seq)
    assert [w["warning"] for w in log.warnings] == ["overfitting"]

    # A healthy, falling curve gives no warnings.
    log = RunLog(tmp_path)
    cb = HealthCallback(log)
    _feed(cb, [(s, {"loss": 3.0 * 0.97**s, "grad_norm": 1.0 + 0.1 * (s % 3)}) for s in range(1, 40)])
    assert log.warnings == []


def test_health_stops_on_inf_loss(tmp_path):
    from toolcall_kit.callbacks import HealthCallback, RunLog

    log = RunLog(tmp_path)
    cb = HealthCallback(log)
    control = _feed(cb, [(1, {"loss": 2.0}), (2, {"loss": math.inf})])
    assert control.should_training_stop and not control.should_save
    assert cb.fatal and "loss is inf at step 2" in cb.fatal


def test_examples_with_no_trained_turn_are_an_error(tmp_path, data):
    from toolcall_kit.train import train

    recs = make_records(6, 3)
    for m in recs[4]["messages"]:
        if m["role"] == "assistant":
            m["weight"] = 0
    path = write_jsonl(tmp_path / "w.jsonl", recs)
    cfg = cfg_for(tmp_path, {"train": str(path), "eval": None})
    with pytest.raises(
        KitError,
        match=r"data.train: 1 of 6 examples .* ex-3-004 \(no trained turn: all assistant weights are 0\)",
    ):
        train(cfg)


def test_auto_backend_on_cpu_picks_hf_and_says_why():
    import torch

    from toolcall_kit.train import choose_backend

    if torch.cuda.is_available():
        pytest.skip("this test is about a machine without a GPU")
    backend, why = choose_backend("auto")
    assert backend == "hf" and ("no CUDA GPU" in why or "not installed" in why)
    assert choose_backend("hf") == ("hf", "backend: hf was asked for")


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, data):
    from toolcall_kit.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: 3\nlora:\n  r: 0\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "lora.r: must be > 0, got 0" in capsys.readouterr().err
    assert main(["train", "--config", str(SMOKE), "--set", "train.max_stepz=3"]) == 2
    assert "train.max_stepz: unknown key" in capsys.readouterr().err
    assert main(["train", "--config", str(SMOKE), "--resume", str(tmp_path)]) == 2
    assert "drop --config" in capsys.readouterr().err


@pytest.mark.slow
def test_live_plot_updates_one_figure_in_place_in_jupyter(tmp_path):
    """In a real kernel (nbclient): 30 redraws leave ONE image in ONE Output widget, not 30 outputs."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    code = textwrap.dedent(
        f"""
        from transformers import TrainerControl, TrainerState
        from toolcall_kit.callbacks import LivePlotCallback, RunLog
        log = RunLog({str(tmp_path)!r})
        cb = LivePlotCallback(log, {str(tmp_path / "loss.png")!r}, min_interval_s=0)
        state, control = TrainerState(max_steps=30), TrainerControl()
        cb.on_train_begin(None, state, control)
        for s in range(1, 31):
            state.global_step = s
            log.add({{"step": s, "loss": 3 - 0.05 * s, "learning_rate": 1e-3, "grad_norm": 1.0}})
            cb.on_step_end(None, state, control)
            cb.on_log(None, state, control, logs={{"loss": 3 - 0.05 * s}})
            cb.draw(force=True)
        cb.on_train_end(None, state, control)
        print(cb.notebook)
        """
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = nb.cells[0].outputs
    assert any(o.get("output_type") == "stream" and "True" in o.get("text", "") for o in outputs)
    # No image lands in the cell itself; the figure lives in the Output widget, replaced at each draw.
    assert not any("image/png" in o.get("data", {}) for o in outputs)
    states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()
    output_widgets = [w for w in states if w["model_name"] == "OutputModel"]
    assert len(output_widgets) == 1
    assert [list(o["data"]) for o in output_widgets[0]["state"]["outputs"]] == [["image/png", "text/plain"]]
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ two-stage


def test_init_from_an_earlier_runs_adapter(tmp_path, data, hf_run):
    from toolcall_kit.train import train

    _, first = hf_run
    cfg = cfg_for(
        tmp_path, data, **{"init_from": first["run_dir"], "train.max_steps": 2, "train.save_steps": None}
    )
    second = train(cfg)
    # Starting from the trained adapter, the first loss is already near where the first run ended.
    assert second["first_loss"] < first["first_loss"] - 0.05
    assert (
        abs(second["first_loss"] - first["final_loss"])
        < 0.5 * (first["first_loss"] - first["final_loss"]) + 0.2
    )

    cfg = cfg_for(tmp_path, data, **{"init_from": first["run_dir"], "lora.r": 4, "output.name": "t2"})
    with pytest.raises(KitError, match="lora.r: 4 differs from the init_from adapter's r=8"):
        train(cfg)


def test_init_from_a_model_folder(tmp_path, data):
    from toolcall_kit.models import resolve_model
    from toolcall_kit.train import train

    folder = resolve_model("tiny:llama")
    cfg = cfg_for(tmp_path, data, **{"init_from": folder, "train.max_steps": 2, "train.save_steps": None})
    result = train(cfg)
    assert result["model_path"] == folder and result["status"] == "completed"


# ------------------------------------------------------------------ unsloth, resume, torchrun: subprocesses


def test_importing_the_training_modules_leaves_transformers_unimported():
    """unsloth must be imported before transformers/TRL/PEFT: the kit's modules may not import them early."""
    code = (
        "import sys, toolcall_kit.cli, toolcall_kit.config, toolcall_kit.train, toolcall_kit.callbacks; "
        "print(sorted(m for m in ('transformers', 'trl', 'peft', 'torch') if m in sys.modules))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env_for_subprocess(), cwd=ROOT
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


@pytest.mark.slow
def test_unsloth_backend_trains_on_cpu_through_the_cli(tmp_path, data):
    pytest.importorskip("unsloth")
    o = {
        "data.train": data["train"],
        "data.eval": data["eval"],
        "output.dir": str(tmp_path / "runs"),
        "output.name": "u",
        "train.learning_rate": 0.01,
        "train.max_steps": 10,
        "train.save_steps": 5,
    }
    cmd = [sys.executable, "-m", "toolcall_kit.cli", "train", "--config", str(SMOKE), *overrides_cli(o)]
    cmd += ["--backend", "unsloth", "--json"]
    env = env_for_subprocess() | {"UNSLOTH_FORCE_CPU": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads((tmp_path / "runs" / "u" / "result.json").read_text())
    assert result["backend"] == "unsloth" and result["steps"] == 10
    out = p.stdout + p.stderr
    assert "Unsloth" in out and "training on CPU" in out  # its CPU backend announced itself
    assert result["unsloth_imported_first"] is True  # before transformers, TRL and PEFT in that process
    assert result["final_loss"] < result["first_loss"] - 0.05
    final = adapter_tensors(Path(result["adapter"]))
    assert all(t.abs().sum() > 0 for k, t in final.items() if "lora_B" in k)

    # Unsloth's own writer: its merged_16bit export, checked like the peft one. On CPU it writes bfloat16
    # whatever it is asked, so float16 is refused rather than reported wrongly (and float32 failed its check).
    merge = [sys.executable, "-m", "toolcall_kit.cli", "merge", str(tmp_path / "runs" / "u"), "--method", "unsloth"]
    p = subprocess.run([*merge, "--out", str(tmp_path / "m")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads((tmp_path / "m" / "merge_report.json").read_text())
    assert report["method"] == "unsloth" and report["dtype"] == "bfloat16"
    assert report["max_abs_logit_diff"] <= report["tolerance"]
    assert (tmp_path / "m" / "model.safetensors").is_file()
    p = subprocess.run(
        [*merge, "--out", str(tmp_path / "m16"), "--dtype", "float16"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert p.returncode == 2 and "Unsloth wrote bfloat16 weights where float16 was asked for" in p.stderr
    assert not (tmp_path / "m16").exists()


@pytest.mark.slow
def test_unsloth_backend_fully_finetunes_on_cpu(tmp_path, data):
    """`method: full` on the unsloth backend is Unsloth's own `full_finetuning=True` loader."""
    pytest.importorskip("unsloth")
    o = {"data.train": data["train"], "data.eval": None, "output.dir": str(tmp_path / "runs"), "output.name": "uf",
         "method": "full", "full.top_layers": 1, "train.learning_rate": 1e-3, "train.max_steps": 6,
         "train.save_steps": None, "train.eval_steps": None}  # fmt: skip
    cmd = [sys.executable, "-m", "toolcall_kit.cli", "train", "--config", str(SMOKE), *overrides_cli(o)]
    env = env_for_subprocess() | {"UNSLOTH_FORCE_CPU": "1"}
    p = subprocess.run([*cmd, "--backend", "unsloth"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads((tmp_path / "runs" / "uf" / "result.json").read_text())
    assert result["backend"] == "unsloth" and result["method"] == "full" and result["steps"] == 6
    assert "full fine-tuning" in p.stderr and result["adapter"] is None
    assert (Path(result["trained_model"]) / "model.safetensors").is_file()
    assert 0 < result["trainable_params"] < result["total_params"]


SLOW_DRIVER = textwrap.dedent(
    """
    import sys, time, json
    from transformers import TrainerCallback
    from toolcall_kit.config import load_config
    from toolcall_kit.train import train

    class Slow(TrainerCallback):
        # After the first checkpoint, slow down so the test can kill the run mid-way.
        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= 4:
                time.sleep(1.0)

    cfg = load_config(sys.argv[1], json.loads(sys.argv[2]))
    train(cfg, extra_callbacks=[Slow()])
    """
)


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, data):
    from toolcall_kit.train import train

    o = {
        "data.train": data["train"],
        "data.eval": None,
        "output.dir": str(tmp_path / "runs"),
        "train.learning_rate": 0.01,
        "train.max_steps": 12,
        "train.save_steps": 4,
        "train.eval_steps": None,
        "train.save_total_limit": None,
        "backend": "hf",
    }
    ref = train(load_config(SMOKE, {**o, "output.name": "ref"}))

    driver = tmp_path / "driver.py"
    driver.write_text(SLOW_DRIVER)
    run = tmp_path / "runs" / "killed"
    p = subprocess.Popen(
        [sys.executable, str(driver), str(SMOKE), json.dumps({**o, "output.name": "killed"})],
        env=env_for_subprocess(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file():
        assert p.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.1)
    time.sleep(1.5)  # mid-way through step 5 or 6
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (run / "adapter").exists() and not (run / "result.json").exists()

    r = subprocess.run(
        [sys.executable, "-m", "toolcall_kit.cli", "train", "--resume", str(run), "--json"],
        capture_output=True,
        text=True,
        env=env_for_subprocess(),
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = json.loads(r.stdout)
    assert resumed["resumed_from"].endswith("checkpoint-4")
    assert resumed["steps"] == ref["steps"] == 12
    assert resumed["final_loss"] == pytest.approx(ref["final_loss"], rel=1e-4)
    # The per-step losses agree (same data order), and the killed attempt's rows past step 4 are gone: the
    # log is the checkpoint's log_history.
    losses = lambda d: [  # noqa: E731
        (m["step"], m["loss"])
        for m in map(json.loads, (Path(d) / "metrics.jsonl").read_text().splitlines())
        if "loss" in m
    ]
    got, want = losses(run), losses(ref["run_dir"])
    assert [s for s, _ in got] == list(range(1, 13))
    assert all(a == pytest.approx(b, rel=1e-4) for (_, a), (_, b) in zip(got, want, strict=True))
    final, want_final = adapter_tensors(run / "adapter"), adapter_tensors(Path(ref["adapter"]))
    assert all((final[k] - want_final[k]).abs().max() < 1e-4 for k in want_final)


@pytest.mark.slow
def test_torchrun_two_ranks_train_and_save_one_adapter(tmp_path, data):
    o = {
        "data.train": data["train"],
        "data.eval": None,
        "output.dir": str(tmp_path / "runs"),
        "output.name": "ddp",
        "train.max_steps": 4,
        "train.save_steps": None,
        "train.eval_steps": None,
        "backend": "hf",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    cmd += ["-m", "toolcall_kit.cli", "train", "--config", str(SMOKE), *overrides_cli(o), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env_for_subprocess(), cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    result = json.loads((run / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 4
    losses = [json.loads(x).get("loss") for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len([x for x in losses if x is not None]) == 4  # one metrics.jsonl, written by rank 0
    # Exactly one adapter, written by rank 0.
    adapters = [p for p in run.rglob("adapter_model.safetensors") if "checkpoints" not in p.parts]
    assert adapters == [run / "adapter" / "adapter_model.safetensors"]
