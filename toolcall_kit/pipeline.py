"""The five stages as functions (prepare, tokens, train, merge, evaluate): what the numbered notebooks,
`toolcall-kit pipeline` and the tests call. `load_run()` points a later stage at the prepare stage's cleaned
copies of the data, so a notebook run alone trains on exactly what prepare kept."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import io
from .config import RunConfig, load_config
from .errors import KitError
from .records import read_records
from .run_files import MODEL_CONFIG, STAGES


def write_stage(cfg: RunConfig, stage: str, result: dict[str, Any]) -> Path:
    """Keep a stage's result in RUN/stages/, with `recorded_at` (Unix seconds) for `demo_report`."""
    path = cfg.files.stage(stage)
    io.write_json(path, {**result, "recorded_at": round(time.time(), 2)})
    return path


def read_stage(cfg: RunConfig, stage: str) -> dict[str, Any] | None:
    """What `write_stage` kept for `stage`, or None."""
    path = cfg.files.stage(stage)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def project_root(config: str | Path | None) -> Path:
    """The working folder, or the nearest folder above it that holds `config`: a Jupyter kernel starts in
    notebooks/, and finds the config, the data and `runs/` one level up, as `make` does."""
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


def _from_root(root: Path, path: str | Path | None) -> str | Path | None:
    if path is None or root == Path.cwd() or Path(path).expanduser().is_absolute():
        return path
    return str(root / path)


def _found(path: str) -> str:
    """A relative path not found from the working folder, looked up in the folders above it."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return path
    return next((str(f / p) for f in Path.cwd().parents if (f / p).exists()), path)


def _same_file(root: Path, a: str | None, b: str | None) -> bool:
    return (a is None) == (b is None) and (a is None or (root / a).resolve() == (root / b).resolve())


def load_run(
    config: str | Path | None, overrides: list[str] | dict | None = None, prepared: bool = True
) -> RunConfig:
    """The run config, its relative paths read from `project_root(config)`, with the data paths of the prepare
    stage once it has run (`prepared`). If the config names other data than prepare ran on, a later stage
    is an error (not a silent switch of data) until prepare runs again."""
    root = project_root(config)
    cfg = load_config(_from_root(root, config), overrides)
    cfg.data.train, cfg.data.eval = _from_root(root, cfg.data.train), _from_root(root, cfg.data.eval)
    cfg.output.dir = _from_root(root, cfg.output.dir)
    cfg.model.chat_template = _from_root(root, cfg.model.chat_template)
    cfg.init_from = _from_root(root, cfg.init_from)
    if (root / cfg.model.name).is_dir():  # a local model folder (hub ids and packaged: names stay)
        cfg.model.name = _from_root(root, cfg.model.name)
    sources = {"train": cfg.data.train, "eval": cfg.data.eval}
    cfg._data_sources = sources  # what the prepare stage reads, whatever load_run substitutes below
    prep = read_stage(cfg, "prepare") if prepared else None
    if prep:
        was = prep.get("sources") or {}
        changed = [f"data.{k}" for k in sources if not _same_file(root, was.get(k), sources[k])]
        if changed:
            cfg._stale_prepare = (
                f"{', '.join(changed)}: the prepare stage in {cfg.run_dir} ran on other data "
                f"({cfg.files.stage('prepare')}); run the prepare stage again (--stages prepare,...) first"
            )
            return cfg
        cfg.data.train, cfg.data.eval = _from_root(root, prep["train"]), _from_root(root, prep.get("eval"))
    return cfg


def _check_prepared(cfg: RunConfig) -> None:
    stale = getattr(cfg, "_stale_prepare", None)
    if stale:
        raise KitError(stale)


def prepare_stage(
    cfg: RunConfig, inputs: list[str] | None = None, eval_fraction: float = 0.1
) -> dict[str, Any]:
    """Clean the run's data into RUN/data. Raw `inputs` are split by `eval_fraction`; without them the
    config's train and eval files are each cleaned as they are (a held-out eval file is never re-split)."""
    from .prepare import prepare

    sources = getattr(cfg, "_data_sources", None) or {"train": cfg.data.train, "eval": cfg.data.eval}
    out, seed = cfg.files.data, cfg.train.seed
    if inputs:
        rep = prepare([_found(str(p)) for p in inputs], out, eval_fraction=eval_fraction, seed=seed)
        reports, train, evals = {"all": rep}, rep["out"]["train"], rep["out"]["eval"]
    else:
        reports = {k: prepare([f], out / k, eval_fraction=0.0, seed=seed) for k, f in sources.items() if f}
        train = reports["train"]["out"]["train"]
        evals = reports["eval"]["out"]["train"] if "eval" in reports else None
    for rep in reports.values():
        if rep["kept"] == 0:
            raise KitError(
                f"prepare kept no rows from {', '.join(rep['files'])}: see {rep['out']['rejects']}"
            )
    cfg.data.train, cfg.data.eval = train, evals
    cfg._stale_prepare = None
    totals = {k: sum(r[k] for r in reports.values()) for k in ("read", "kept", "rejected", "duplicates")}
    return {"reports": reports, "train": train, "eval": evals, "sources": sources, **totals}


def tokenizer(cfg: RunConfig):
    from .tokens import load_tokenizer

    return load_tokenizer(cfg.model.name)


def chat_template(cfg: RunConfig) -> str | None:
    """The config's own template text, else None (the family's training template, as train.py uses)."""
    return Path(cfg.model.chat_template).read_text(encoding="utf-8") if cfg.model.chat_template else None


def family_quirks(cfg: RunConfig) -> dict[str, str]:
    """How training adapts the data to the family (Llama 3.1: one call per turn)."""
    return {"parallel": cfg.data.parallel, "content_with_calls": cfg.data.content_with_calls}


def training_view(cfg: RunConfig):
    """(tokenizer, family, chat template) as training renders the examples."""
    from .templates import detect_family

    tok = tokenizer(cfg)
    return tok, detect_family(tok, cfg.model.family), chat_template(cfg)


def count_tokens(cfg: RunConfig, plot: str | Path | None = None) -> dict[str, Any]:
    """Exact token budget of `data.train` with the model's tokenizer and template (`toolcall-kit tokens`)."""
    from .tokens import token_report

    if plot:
        io.check_writable_file(plot, "--plot")
    m, t = cfg.model, cfg.train
    steps = {"batch_size": t.batch_size, "grad_accum": t.grad_accum, "epochs": t.epochs or 1}
    template = {"family": m.family, "chat_template": chat_template(cfg), **family_quirks(cfg)}
    records = read_records(cfg.data.train)
    return token_report(tokenizer(cfg), records, m.max_seq_length, plot=plot, **steps, **template)


def tokens_stage(cfg: RunConfig) -> dict[str, Any]:
    """The token budget of the prepared training file, its length histogram in the run folder."""
    _check_prepared(cfg)
    return count_tokens(cfg, plot=cfg.files.tokens_plot)


def mask_text(cfg: RunConfig, index: int = 0, color: bool = False) -> str:
    """Row `index` of `data.train` as text with its trained tokens marked (`toolcall-kit show-mask`)."""
    from .templates import adapt_records
    from .tokens import show_mask

    records = read_records(cfg.data.train)
    if not -len(records) <= index < len(records):
        raise KitError(f"{cfg.data.train}: --index {index} is out of range (0..{len(records) - 1})")
    tok, fam, template = training_view(cfg)
    rec = adapt_records([records[index]], fam, **family_quirks(cfg))[0]
    return show_mask(
        tok, rec, fam, color=color, chat_template=template, max_seq_length=cfg.model.max_seq_length
    )


def mask_view(cfg: RunConfig, index: int = 0) -> str:
    """HTML of training example `index` (counting adapted examples) as training encodes it."""
    _check_prepared(cfg)
    from .explore import MaskView

    return MaskView(cfg).html(index)


def train_stage(cfg: RunConfig) -> dict[str, Any]:
    _check_prepared(cfg)
    from .train import train

    return train(cfg)


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
    """Tool-call metrics of the merged model on the eval split, beside the base model's (whose generations
    are cached)."""
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
TRAIN_FIGURES = ("train_seconds", "tokens_per_s", "steps", "peak_rss_gib", "cpu_threads")


def demo_report(
    config: str | Path, started: float, overrides: list[str] | dict | None = None
) -> dict[str, Any]:
    """After `make demo` (begun at `started`, Unix seconds): wall seconds per stage and in all, and the
    headline metrics of both models; kept in stages/demo.json."""
    cfg = load_run(config, overrides)
    stage_seconds, last = {}, started
    for stage in STAGES:
        end = (read_stage(cfg, stage) or {}).get("recorded_at")
        if end is not None:
            stage_seconds[stage], last = round(end - last, 1), end
    out: dict[str, Any] = {"wall_seconds": round(time.time() - started, 1), "stage_seconds": stage_seconds}
    ev = read_stage(cfg, "evaluate") or {}
    for side in ("tuned", "base"):
        if side in ev:
            m, n, seconds = ev[side]["metrics"], ev[side]["n_cases"], ev[side]["timing"]["seconds"]
            out[side] = {**{k: m[k]["rate"] for k in HEADLINE if k in m}, "cases": n, "eval_seconds": seconds}
    if "tuned" in ev:
        out["meets_targets"] = ev["tuned"]["meets_targets"]
    train = read_stage(cfg, "train") or {}
    if any(k in train for k in TRAIN_FIGURES):
        out["train"] = {k: train[k] for k in TRAIN_FIGURES if k in train}
    io.write_json(cfg.files.stage("demo"), out)
    return out


def format_demo_report(rep: dict[str, Any]) -> str:
    stages = ", ".join(f"{k} {v / 60:.1f} min" for k, v in rep["stage_seconds"].items())
    lines = [f"demo: {rep['wall_seconds'] / 60:.1f} min in all; {stages}"]
    for side in (s for s in ("base", "tuned") if s in rep):
        m = rep[side]
        rates = ", ".join(f"{k} {100 * m[k]:.1f}%" for k in HEADLINE if m.get(k) is not None)
        lines.append(f"{side:5s}: {rates} ({m['cases']} cases)")
    return "\n".join(lines)


def run_all(
    config: str | Path,
    overrides: list[str] | dict | None = None,
    stages: tuple[str, ...] = STAGES,
    inputs: list[str] | None = None,
    eval_limit: int | None = None,
) -> dict[str, Any]:
    """Run the named stages in order (`toolcall-kit pipeline`)."""
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
    known = (files.config.name, files.stages.name, files.data.name)
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
