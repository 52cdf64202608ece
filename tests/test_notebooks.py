"""The numbered notebooks: stored clean, thin over `pipeline`, and they run headless with the smoke config."""

import json
from pathlib import Path

import nbformat
import pytest

from toolcall_kit import pipeline
from toolcall_kit.config import load_config
from toolcall_kit.run_files import STAGES, RunFiles

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_one_notebook_per_stage_in_order():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]
    for path, stage in zip(NOTEBOOKS, STAGES, strict=True):
        src = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        assert f'pipeline.write_stage(cfg, "{stage}", result)' in src, f"{path.name} does not write stage {stage!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs_and_with_parameters(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} cell {i} has outputs: clear them (jupyter nbconvert --clear-output) before committing"
            )
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters' (papermill needs it)"
    assert nb.cells[0].cell_type == "markdown" and "make " in nb.cells[0].source, (
        f"{path.name}: the title cell must give the make command that runs it"
    )
    params: dict = {}
    exec(tagged[0].source, params)  # noqa: S102 - our own notebook's literal assignments
    load_config(ROOT / params["config"], params["overrides"])  # the default config loads


@pytest.mark.parametrize("config", ["configs/smoke.yaml", "configs/demo_cpu.yaml", str(ROOT / "configs/smoke.yaml")])
def test_a_kernel_in_notebooks_reads_paths_from_the_project_root(config, monkeypatch):
    """JupyterLab starts the kernel in notebooks/: the config, its data and runs/ are found one level up."""
    monkeypatch.chdir(ROOT / "notebooks")
    cfg = pipeline.load_run(config, {})
    assert pipeline.project_root(config) == ROOT
    assert Path(cfg.data.train) == ROOT / "data/demo/train.jsonl" and Path(cfg.data.train).is_file()
    assert Path(cfg.data.eval) == ROOT / "data/demo/eval.jsonl"
    assert cfg.run_dir == ROOT / "runs" / cfg.output.name
    elsewhere = pipeline.load_run(config, {"output.dir": "/tmp/x", "data.train": "tests/data/chat.jsonl"})
    assert elsewhere.run_dir == Path("/tmp/x") / cfg.output.name  # absolute paths stay as they are
    assert Path(elsewhere.data.train) == ROOT / "tests/data/chat.jsonl"  # overrides: from the root as well


def test_paths_stay_as_written_from_the_project_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = pipeline.load_run("configs/smoke.yaml", {})
    assert (cfg.data.train, cfg.data.eval, cfg.output.dir) == ("data/demo/train.jsonl", "data/demo/eval.jsonl", "runs")


def test_recorded_relative_paths_resolve_from_the_project_root(tmp_path, monkeypatch):
    """A prepare stage written by `make train` (relative paths, from the root) is found from notebooks/ too."""
    root = tmp_path / "project"
    (root / "configs").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "configs" / "c.yaml").write_text((ROOT / "configs/smoke.yaml").read_text())
    monkeypatch.chdir(root)
    cfg = pipeline.load_run("configs/c.yaml", {})
    sources = {"train": "data/demo/train.jsonl", "eval": "data/demo/eval.jsonl"}  # what smoke.yaml names
    prepared = {"train": "runs/smoke/data/train.jsonl", "eval": "runs/smoke/data/eval.jsonl"}
    pipeline.write_stage(cfg, "prepare", {**prepared, "sources": sources})
    monkeypatch.chdir(root / "notebooks")
    cfg = pipeline.load_run("configs/c.yaml", {})
    assert Path(cfg.data.train) == root / "runs/smoke/data/train.jsonl"
    assert Path(cfg.data.eval) == root / "runs/smoke/data/eval.jsonl"
    assert pipeline._found("configs/c.yaml") == str(root / "configs/c.yaml")  # prepare's raw inputs likewise


@pytest.mark.slow
def test_all_notebooks_run_headless_with_the_smoke_config(tmp_path):
    papermill = pytest.importorskip("papermill")
    params = {"config": "configs/smoke.yaml", "overrides": {"output.dir": str(tmp_path / "runs")}}
    for path in NOTEBOOKS:
        extra = {"eval_limit": 6} if path.name.startswith("05") else {}
        papermill.execute_notebook(
            str(path), str(tmp_path / path.name), parameters={**params, **extra},
            kernel_name="python3", cwd=str(ROOT), progress_bar=False,
        )
    run = RunFiles(tmp_path / "runs" / "smoke")
    got = {name: json.loads(run.stage(name).read_text()) for name in STAGES}
    prep = got["prepare"]
    assert prep["read"] == prep["kept"] + prep["rejected"] + prep["duplicates"] and prep["kept"] > 0
    assert got["tokens"]["examples"] == prep["reports"]["train"]["kept"]
    assert got["train"]["status"] == "completed" and got["train"]["steps"] == got["train"]["max_steps"]
    assert got["merge"]["max_abs_logit_diff"] <= got["merge"]["tolerance"]
    assert got["evaluate"]["tuned"]["n_examples"] == 6 and got["evaluate"]["base"]["n_examples"] == 6
    assert run.loss_plot.is_file()
