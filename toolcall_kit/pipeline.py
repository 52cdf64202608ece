"""The five stages as functions: what the numbered notebooks, `toolcall-kit pipeline` and the tests call.

    toolcall-kit pipeline --config configs/demo_cpu.yaml            # all stages, no Jupyter needed
    make demo                                                        # the same through the notebooks

Stage -> notebook -> what `write_stage` keeps in `runs/NAME/stages/NN_stage.json`:
  prepare   01_prepare_data.ipynb  the prepare report(s) and the train/eval files later stages use
  tokens    02_count_tokens.ipynb  the token budget (lengths, trained tokens, truncation, steps)
  train     03_train.ipynb         result.json of the training run (loss, speed, memory, backend)
  merge     04_merge.ipynb         merge_report.json (export check, serve command)
  evaluate  05_evaluate.ipynb      base vs fine-tuned tool-call metrics and the examples that changed

The run folder is the config's `output.dir/output.name` (its files: run_files.py). Stage 1 writes the cleaned
data under `RUN/data/`; every later stage loads the config through `load_run()`, which points `data.train` /
`data.eval` at those files, so a notebook run alone after stage 1 trains on exactly what stage 1 kept.
`load_run()` also reads relative paths from the project root (`project_root`): a notebook opened in
JupyterLab, whose kernel starts in notebooks/, finds configs/, data/ and runs/ as `make` and papermill do.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import io
from .config import RunConfig, load_config
from .errors import KitError
from .run_files import MODEL_CONFIG, STAGES


def write_stage(cfg: RunConfig, stage: str, result: dict[str, Any]) -> Path:
    """Write a stage's result (atomically) where the tests and the next stages read it; the stage
    functions below only compute, so the notebooks' last cell and `run_all` decide what is kept."""
    path = cfg.files.stage(stage)
    # Wall-clock time of writing (Unix seconds): `demo_report` turns these into per-stage durations.
    io.write_json(path, {**result, "recorded_at": round(time.time(), 2)})
    return path


def read_stage(cfg: RunConfig, stage: str) -> dict[str, Any] | None:
    """What `write_stage` kept for `stage`, or None if the stage has not run in this run folder."""
    path = cfg.files.stage(stage)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def project_root(config: str | Path | None) -> Path:
    """The folder a run's relative paths are read from: the working folder, or the nearest folder above it
    that holds `config`. A Jupyter kernel starts in the notebook's folder (notebooks/), so there the config,
    the data and `runs/` are found one level up, as from the project root where `make` and papermill run."""
    cwd = Path.cwd()
    if config is None:
        return cwd
    path = Path(config).expanduser()
    for folder in (cwd, *cwd.parents):
        if path.is_absolute():
            # The filesystem root holds every absolute path: it is never the project root.
            if folder != Path(folder.anchor) and path.is_relative_to(folder):
                return folder
        elif (folder / path).is_file():
            return folder
    return cwd


def _from_root(root: Path, path: str | None) -> str | None:
    return path if path is None or Path(path).expanduser().is_absolute() else str(root / path)


def _found(path: str) -> str:
    """A relative path not found from the working folder, looked up in the folders above it (as the config)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return path
    return next((str(f / p) for f in Path.cwd().parents if (f / p).exists()), path)


def load_run(
    config: str | Path | None, overrides: list[str] | dict | None = None, prepared: bool = True
) -> RunConfig:
    """The run config, with data paths taken from the prepare stage once it has run (`prepared`).

    Relative paths (the config's own, and in it the data files, output.dir, model.chat_template, init_from
    and a local model folder) are read from `project_root(config)`, whatever the working folder: outside
    the project root they become absolute paths under it.

    If the config now names other data than the prepare stage ran on (`--set data.train=...`), the prepared
    files are not used: the prepare stage prepares the new data, and any later stage run before it is an
    error (`_check_prepared`) instead of a silent switch back to the old data."""
    root = project_root(config)
    cwd = Path.cwd()
    if root != cwd and config is not None:
        config = _from_root(root, str(config))
    cfg = _rooted(load_config(config, overrides), root, cwd)
    sources = {"train": cfg.data.train, "eval": cfg.data.eval}
    cfg._data_sources = sources  # what the prepare stage reads, whatever load_run substitutes below
    prep = read_stage(cfg, "prepare") if prepared else None
    if prep:
        was = prep.get("sources") or {}

        def same(x: str | None, y: str | None) -> bool:  # relative paths are read from the project root
            return (x is None) == (y is None) and (x is None or (root / x).resolve() == (root / y).resolve())

        changed = [f"data.{k}" for k in ("train", "eval") if not same(was.get(k), sources[k])]
        if changed:
            cfg._stale_prepare = (
                f"{', '.join(changed)}: the prepare stage in {cfg.run_dir} ran on other data "
                f"({cfg.files.stage('prepare')}); run the prepare stage again (--stages prepare,...) first"
            )
            return cfg
        cfg.data.train = _from_root(root, prep["train"]) if root != cwd else prep["train"]
        cfg.data.eval = _from_root(root, prep.get("eval")) if root != cwd else prep.get("eval")
    return cfg


def _rooted(cfg: RunConfig, root: Path, cwd: Path) -> RunConfig:
    """`cfg` with its relative paths made absolute under `root` (unchanged when root is the working folder)."""
    if root == cwd:
        return cfg
    cfg.data.train = _from_root(root, cfg.data.train)
    cfg.data.eval = _from_root(root, cfg.data.eval)
    cfg.output.dir = _from_root(root, cfg.output.dir)
    cfg.model.chat_template = _from_root(root, cfg.model.chat_template)
    cfg.init_from = _from_root(root, cfg.init_from)
    if (root / cfg.model.name).is_dir() and not Path(cfg.model.name).expanduser().is_absolute():
        cfg.model.name = str(root / cfg.model.name)  # a local model folder (hub ids and packaged: stay)
    return cfg


def _check_prepared(cfg: RunConfig) -> None:
    stale = getattr(cfg, "_stale_prepare", None)
    if stale:
        raise KitError(stale)


# ------------------------------------------------------------------------------------------- stages


def prepare_stage(
    cfg: RunConfig, inputs: list[str] | None = None, eval_fraction: float = 0.1
) -> dict[str, Any]:
    """Clean the run's data into RUN/data. Raw `inputs` (any format) are split by `eval_fraction`; without
    them the config's train and eval files are each validated as they are (a held-out eval file is never
    re-split: the demo's eval set is held out by phrasing template)."""
    from .prepare import prepare

    out = cfg.files.data
    sources = dict(getattr(cfg, "_data_sources", None) or {"train": cfg.data.train, "eval": cfg.data.eval})
    cfg.data.train, cfg.data.eval = (
        sources["train"],
        sources["eval"],
    )  # the config's data, not a prepared copy
    if inputs:
        rep = prepare([_found(str(p)) for p in inputs], out, eval_fraction=eval_fraction, seed=cfg.train.seed)
        result = {"reports": {"all": rep}, "train": rep["out"]["train"], "eval": rep["out"]["eval"]}
    else:
        reports = {"train": prepare([cfg.data.train], out / "train", eval_fraction=0.0, seed=cfg.train.seed)}
        if cfg.data.eval:
            reports["eval"] = prepare([cfg.data.eval], out / "eval", eval_fraction=0.0, seed=cfg.train.seed)
        eval_file = reports["eval"]["out"]["train"] if "eval" in reports else None
        result = {"reports": reports, "train": reports["train"]["out"]["train"], "eval": eval_file}
    reports = result["reports"].values()
    for rep in reports:
        if rep["kept"] == 0:
            raise KitError(
                f"prepare kept no rows from {', '.join(rep['files'])}: see {rep['out']['rejects']}"
            )
    result["sources"] = sources  # what `load_run` compares the config with before it uses the prepared files
    result |= {k: sum(r[k] for r in reports) for k in ("read", "kept", "rejected", "duplicates")}
    cfg.data.train, cfg.data.eval = result["train"], result["eval"]
    cfg._stale_prepare = None
    return result


def tokenizer(cfg: RunConfig):
    from .tokens import load_tokenizer

    return load_tokenizer(cfg.model.name)


def chat_template(cfg: RunConfig) -> str | None:
    """The config's own template text, else None (the family's training template, as train.py uses)."""
    return Path(cfg.model.chat_template).read_text(encoding="utf-8") if cfg.model.chat_template else None


def count_tokens(cfg: RunConfig, plot: str | Path | None = None) -> dict[str, Any]:
    """Exact token budget of `data.train` with the model's tokenizer and template (`toolcall-kit tokens`)."""
    from .tokens import read_records, token_report

    if plot:
        io.check_writable_file(plot, "--plot")  # before the counting, not after it
    return token_report(
        tokenizer(cfg),
        read_records(cfg.data.train),
        max_seq_length=cfg.model.max_seq_length,
        batch_size=cfg.train.batch_size,
        grad_accum=cfg.train.grad_accum,
        epochs=cfg.train.epochs or 1,
        family=cfg.model.family,
        chat_template=chat_template(cfg),
        # The family's quirks as training applies them (Llama 3.1: one call per turn), or the count refuses
        # examples that training would rewrite.
        parallel=cfg.data.parallel,
        content_with_calls=cfg.data.content_with_calls,
        plot=plot,
    )


def tokens_stage(cfg: RunConfig) -> dict[str, Any]:
    """The token budget of the prepared training file, its length histogram in the run folder."""
    _check_prepared(cfg)
    return count_tokens(cfg, plot=cfg.files.tokens_plot)


def mask_text(cfg: RunConfig, index: int = 0, color: bool = False) -> str:
    """Row `index` of `data.train` (negative: from the end) as text with its trained tokens marked and the
    tokens past `model.max_seq_length` shown after a cut line (`toolcall-kit show-mask`)."""
    from .templates import adapt_records, detect_family
    from .tokens import read_records, show_mask

    records = read_records(cfg.data.train)
    if not -len(records) <= index < len(records):
        raise KitError(f"{cfg.data.train}: --index {index} is out of range (0..{len(records) - 1})")
    tok = tokenizer(cfg)
    fam = detect_family(tok, cfg.model.family)
    rec = adapt_records([records[index]], fam, parallel=cfg.data.parallel,
                        content_with_calls=cfg.data.content_with_calls)[0]  # fmt: skip
    return show_mask(tok, rec, fam, color=color, chat_template=chat_template(cfg),
                     max_seq_length=cfg.model.max_seq_length)  # fmt: skip


def mask_view(cfg: RunConfig, index: int = 0) -> str:
    """HTML of training example `index` exactly as training encodes it: adapted to the family, its trained
    tokens marked, cut at max_seq_length (`index` counts adapted examples, as the token report does)."""
    _check_prepared(cfg)
    from .explore import MaskView

    return MaskView(cfg).html(index)


def train_stage(cfg: RunConfig, extra_callbacks=None) -> dict[str, Any]:
    _check_prepared(cfg)
    from .train import train

    return train(cfg, extra_callbacks=extra_callbacks)


def merge_stage(cfg: RunConfig, dtype: str | None = None) -> dict[str, Any]:
    """Merge the run's adapter; dtype None: bfloat16 for a 4-bit or GPU-trained run, else float32."""
    from .merge import merge

    return merge(cfg.run_dir, cfg.files.merged, dtype=dtype)


def evaluate_stage(
    cfg: RunConfig,
    limit: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 160,
    base: bool = True,
) -> dict[str, Any]:
    """Tool-call metrics of the merged model on the eval split, beside the untouched base model's.

    The base model's generations are cached by the fingerprint of its files, the rendered prompts and the
    settings (`evaluate.generation_key`): a second run on the same data skips generating them again (and
    says so in its report's source); the fine-tuned model is always generated afresh."""
    from .evaluate import compare, evaluate

    _check_prepared(cfg)
    if not cfg.data.eval:
        raise KitError("data.eval: the evaluate stage needs an eval file (prepare splits one off raw inputs)")
    files = cfg.files
    if not (files.merged / MODEL_CONFIG).is_file():
        raise KitError(f"{files.merged}: no merged model; run the merge stage first")
    common = dict(data=cfg.data.eval, batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit)
    result: dict[str, Any] = {"tuned": evaluate(files.eval, model=str(files.merged), **common)}
    if base:
        result["base"] = evaluate(files.eval_base, model=cfg.model.name, cache=True, **common)
        result["compare"] = compare(files.eval_base, files.eval)
    return result


HEADLINE = ("tool_selection", "arguments_ast", "no_call", "valid_output", "accuracy")


def demo_report(
    config: str | Path, started: float, overrides: list[str] | dict | None = None
) -> dict[str, Any]:
    """After `make demo`: wall time per stage (between the stage files' `recorded_at`, the first from
    `started`, Unix seconds) and in all, and the headline metrics of both models; written to
    `stages/demo.json` and returned."""
    cfg = load_run(config, overrides)
    stages, last = {}, started
    for stage in STAGES:
        written = read_stage(cfg, stage) or {}
        if "recorded_at" in written:
            stages[stage] = round(written["recorded_at"] - last, 1)
            last = written["recorded_at"]
    out: dict[str, Any] = {"wall_seconds": round(time.time() - started, 1), "stage_seconds": stages}
    ev = read_stage(cfg, "evaluate") or {}
    for side in ("tuned", "base"):
        if side in ev:
            m = ev[side]["metrics"]
            out[side] = {k: m[k]["rate"] for k in HEADLINE if k in m}
            out[side]["cases"] = ev[side]["n_cases"]
            out[side]["eval_seconds"] = ev[side]["timing"]["seconds"]
    if "tuned" in ev:
        out["meets_targets"] = ev["tuned"]["meets_targets"]
    train = read_stage(cfg, "train") or {}
    for k in ("train_seconds", "tokens_per_s", "steps", "peak_rss_gib", "cpu_threads"):
        if k in train:
            out.setdefault("train", {})[k] = train[k]
    io.write_json(cfg.files.stage("demo"), out)
    return out


def format_demo_report(rep: dict[str, Any]) -> str:
    lines = [f"demo: {rep['wall_seconds'] / 60:.1f} min in all; "
             + ", ".join(f"{k} {v / 60:.1f} min" for k, v in rep["stage_seconds"].items())]  # fmt: skip
    for side in ("base", "tuned"):
        if side in rep:
            m = rep[side]
            lines.append(
                f"{side:5s}: "
                + ", ".join(f"{k} {100 * m[k]:.1f}%" for k in HEADLINE if m.get(k) is not None)
                + f" ({m['cases']} cases)"
            )
    return "\n".join(lines)


def run_all(
    config: str | Path,
    overrides: list[str] | dict | None = None,
    stages: tuple[str, ...] = STAGES,
    inputs: list[str] | None = None,
    eval_limit: int | None = None,
) -> dict[str, Any]:
    """Run the named stages in order (what `toolcall-kit pipeline` and `make demo` do)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise KitError(f"--stages: unknown {', '.join(unknown)}; known: {', '.join(STAGES)}")
    # A prepare stage that runs now reads the config's own data, not what an earlier one prepared.
    cfg = load_run(config, overrides, prepared="prepare" not in stages)
    if eval_limit is not None and eval_limit < 0:
        raise KitError(f"--eval-limit must be >= 0, got {eval_limit}")
    if "train" in stages:
        # The tokens stage imports transformers; Unsloth must come first to patch it for training.
        from .train import import_backend_first

        import_backend_first(cfg)
    files = cfg.files
    known = (files.config.name, files.stages.name, files.data.name)  # what an earlier stage left there
    io.claim_dir(files.root, "run", "output.dir/output.name", known=known)
    run = {
        "prepare": lambda: prepare_stage(cfg, inputs),
        "tokens": lambda: tokens_stage(cfg),
        "train": lambda: train_stage(cfg),
        "merge": lambda: merge_stage(cfg),
        "evaluate": lambda: evaluate_stage(cfg, limit=eval_limit),
    }
    out: dict[str, Any] = {}
    with io.folder_lock(files.root, "output.dir/output.name"):
        for stage in (s for s in STAGES if s in stages):
            print(f"== {stage}", flush=True)
            out[stage] = run[stage]()
            print(f"   wrote {write_stage(cfg, stage, out[stage])}", flush=True)
    return out
