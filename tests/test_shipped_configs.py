"""Every shipped config runs stages 01-02 (prepare, count tokens) and notebook 02's mask cell on the shipped
data, with a tokenizer like its model's: the real one for `tiny:` models, else the family look-alike of
tests/template_fixtures.py (the real Llama/Qwen/Mistral tokenizers cannot be downloaded here)."""

from pathlib import Path

import pytest
from template_fixtures import family_tokenizer

from toolcall_kit import pipeline
from toolcall_kit.records import read_records
from toolcall_kit.tokens import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _tokenizer_like(cfg):
    if cfg.model.name.startswith("tiny:"):
        return load_tokenizer(cfg.model.name)
    # Hub models and packaged:smollm2 (a GGUF conversion, 16 s and 1.5 GB): the family's look-alike.
    return family_tokenizer(cfg.model.family or "chatml")


def _first_parallel(records) -> int:
    for i, rec in enumerate(records):
        if any(len(m.get("tool_calls") or []) > 1 for m in rec["messages"]):
            return i
    raise AssertionError("the shipped data has no parallel calls: this test would not exercise data.parallel")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_stages_01_02_run_on_the_shipped_data(path, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name data/demo/... relative to the repository
    overrides = {"output.dir": str(tmp_path)}
    cfg = pipeline.load_run(path, overrides)
    tok = _tokenizer_like(cfg)
    monkeypatch.setattr(pipeline, "tokenizer", lambda cfg: tok)

    prep = pipeline.prepare_stage(cfg)
    pipeline.write_stage(cfg, "prepare", prep)
    cfg = pipeline.load_run(path, overrides)  # what notebook 02 does: the prepared files from here on
    rep = pipeline.tokens_stage(cfg)
    assert rep["source_records"] == prep["reports"]["train"]["kept"] > 0
    assert rep["examples"] >= rep["source_records"]  # Llama 3.1 splits parallel calls into more examples

    html = pipeline.mask_view(cfg, _first_parallel(read_records(cfg.data.train)))
    assert "trained</span>" in html
