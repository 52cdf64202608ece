"""The GPU path's decisions, with the device facts faked (no GPU here or in CI)."""

from pathlib import Path

import pytest
import torch

from toolcall_kit import pipeline, train
from toolcall_kit.config import load_config, mixed_precision

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "qwen2_5_7b_qlora.yaml")


@pytest.mark.parametrize(
    "capability,bf16",
    [((7, 5), False), ((7, 0), False), ((8, 0), True), ((8, 9), True), ((9, 0), True)],  # T4, V100, A100, L4, H100
)
def test_bf16_follows_the_compute_capability(monkeypatch, capability, bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # torch says yes on sm_75 too (emulated bf16); Unsloth then loads fp16 and its trainer rejects bf16.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    on_gpu, bf16_ok = train._device()
    assert on_gpu and bf16_ok is bf16
    assert mixed_precision("auto", on_gpu=True, bf16_ok=bf16_ok) == ((True, False) if bf16 else (False, True))


def test_pipeline_imports_unsloth_before_the_tokens_stage(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(train, "choose_backend", lambda requested: ("unsloth", "faked: a CUDA GPU is present"))
    monkeypatch.setattr(train, "_import_unsloth", lambda: calls.append("import unsloth") or True)
    for stage in ("prepare", "tokens", "train"):
        monkeypatch.setattr(pipeline, f"{stage}_stage", lambda cfg, *a, _s=stage, **k: calls.append(_s) or {})
    pipeline.run_all(CONFIG, {"output.dir": str(tmp_path)}, stages=("prepare", "tokens", "train"))
    assert calls == ["import unsloth", "prepare", "tokens", "train"]


def test_pipeline_without_training_does_not_import_unsloth(monkeypatch, tmp_path):
    monkeypatch.setattr(train, "_import_unsloth", lambda: pytest.fail("unsloth imported for a tokens-only run"))
    monkeypatch.setattr(pipeline, "tokens_stage", lambda cfg: {})
    cfg = load_config(CONFIG, {"output.dir": str(tmp_path)})
    assert cfg.backend == "unsloth"
    pipeline.run_all(CONFIG, {"output.dir": str(tmp_path)}, stages=("tokens",))
