"""`toolcall-kit <verb>`: parses arguments and calls one library function per verb.

Heavy imports (torch, transformers) happen inside the verb that needs them, so `prepare` and `score`
start fast. A `KitError` is printed as one line and exits 2, and so is an operating-system error (a full disk,
a path that cannot be written) that no verb anticipated; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import KitError


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toolcall-kit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)

    sp = sub.add_parser("prepare", help="read, convert, validate, dedupe and split tool-calling data")
    sp.add_argument("inputs", nargs="+", metavar="INPUT",
                    help=".jsonl, .json (array) or .parquet files, gzip too; or folders; - for standard input")
    sp.add_argument("--out", required=True, help="output folder for train/eval/rejects/report")
    sp.add_argument("--format", default="auto", choices=["auto", "openai", "xlam", "sharegpt", "chat"],
                    help="source format; auto detects it per file from its first rows and reports the choice")
    sp.add_argument("--eval-fraction", type=float, default=0.1, help="share of kept rows held out, in [0, 1)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the (stratified) train/eval split")
    sp.add_argument("--strict", action="store_true", help="exit 1 if any row was rejected or none was kept")
    sp.add_argument("--json", action="store_true", help="print report.json instead of the summary")
    sp.set_defaults(func=_prepare)

    sp = sub.add_parser("merge", help="merge a run's LoRA adapter into its base; check and describe the export")
    sp.add_argument("adapter", metavar="RUN_OR_ADAPTER")
    sp.add_argument("--out", required=True, help="folder for the merged model (written atomically)")
    sp.add_argument("--base", help="base model (default: the one named in adapter_config.json)")
    sp.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                    help="default: bfloat16 for a run trained in 4-bit or on a GPU, else float32")
    sp.add_argument("--method", default="peft", choices=["peft", "unsloth"])
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_merge)

    sp = sub.add_parser("pipeline", help="run the stages prepare, tokens, train, merge, evaluate for one config")
    _config_options(sp, required=True)
    sp.add_argument("--stages", default="prepare,tokens,train,merge,evaluate", help="comma-separated subset")
    sp.add_argument("--inputs", nargs="*", help="raw data files to prepare (default: the config's data files)")
    sp.add_argument("--eval-limit", type=int, help="evaluate only the first N examples")
    sp.set_defaults(func=_pipeline)

    sp = sub.add_parser("plan", help="estimate GPU memory, time and cost of a run")
    _config_options(sp, "; its model, LoRA, batch and length settings are planned for (without it: "
                    "QLoRA, gradient checkpointing, batch 2 x 2048 tokens)")  # fmt: skip
    sp.add_argument("--model", help="model name or folder (model.name)")
    sp.add_argument("--gpu", default="a10g-24gb")
    sp.add_argument("--tokens", type=int, help="training tokens per epoch (from `toolcall-kit tokens`)")
    sp.add_argument("--price", type=float, help="$ per GPU hour")
    sp.add_argument("--backend", choices=["unsloth", "hf"],
                    help="memory model (default: the config's backend; auto and no config: unsloth)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_plan)

    sp = sub.add_parser("train", help="LoRA/QLoRA fine-tune from a run config (unsloth or hf backend)")
    _config_options(sp, "; not needed with --resume")
    sp.add_argument("--backend", choices=["auto", "unsloth", "hf"], help="overrides the config's backend")
    sp.add_argument("--resume", metavar="RUN_DIR", help="continue runs/NAME from its last checkpoint")
    sp.add_argument("--json", action="store_true", help="print result.json instead of the summary")
    sp.set_defaults(func=_train)

    sp = sub.add_parser("synth", help="generate synthetic tool-calling conversations (validated, seeded)")
    sp.add_argument("--out", required=True, help="output JSONL file (written atomically)")
    sp.add_argument("--n", type=int, default=2000, help="number of examples, exactly")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--catalog",
        default="general,customer_service",
        help="general, customer_service, a JSON file of OpenAI tool definitions, or several joined by commas",
    )
    sp.add_argument(
        "--mix",
        help="shares per kind, e.g. no_call=0.15,decline=0.1,parallel=0.15,multi_step=0.15; single calls: the rest",
    )
    sp.add_argument(
        "--split",
        default="all",
        choices=["all", "train", "dev", "eval"],
        help="train: leave out the held-out phrasing templates and values; eval: use only them; "
        "dev: a second held-out share, disjoint from both, for choosing settings",
    )
    sp.add_argument("--holdout-fraction", type=float, default=0.2, help="share of each group held out")
    sp.add_argument("--holdout-seed", type=int, default=0, help="picks the held-out share")
    sp.add_argument("--max-tools", type=int, default=3, help="most tools offered (~150 tokens each)")
    sp.add_argument("--contrast", type=float, default=1.0, help="declines paired with a call twin")
    sp.add_argument("--teacher-url", help="OpenAI-compatible server that paraphrases user turns")
    sp.add_argument("--teacher-model", help="model name to send to the teacher")
    sp.add_argument("--teacher-workers", type=int, default=4, help="requests in flight at once")
    sp.add_argument("--teacher-timeout", type=float, default=60.0, help="seconds per request")
    sp.add_argument("--teacher-api-key-env", metavar="VAR",
                    help="environment variable holding the teacher's API key (default: TOOLCALL_KIT_TEACHER_API_KEY; "
                    "no other variable is read; sent only over https or to this machine)")
    sp.add_argument("--json", action="store_true", help="print the report as JSON instead of the summary")
    sp.set_defaults(func=_synth)

    sp = sub.add_parser("model", help="resolve packaged:..., tiny:..., a folder or a hub id; print it")
    sp.add_argument("name", metavar="NAME", help="e.g. packaged:smollm2-135m-instruct, tiny:qwen2")
    sp.add_argument("--cache-dir", help="default: $TOOLCALL_KIT_CACHE/models or ~/.cache/toolcall_kit/models")
    sp.set_defaults(func=_model)

    sp = sub.add_parser("eval", help="generate and score tool calls on held-out data or BFCL; write runs/NAME/eval")
    sp.add_argument("--model", help="base or merged model (folder, packaged:..., tiny:..., hub id)")
    sp.add_argument("--adapter", help="LoRA adapter folder applied on --model (or on the base it names)")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="canonical JSONL, e.g. prepare's eval.jsonl")
    src.add_argument("--bfcl", metavar="CATEGORY", help="BFCL categories: simple,multiple,parallel,... or all")
    sp.add_argument("--endpoint", help="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1) instead of --model")
    sp.add_argument("--endpoint-model", help="model name the endpoint serves")
    sp.add_argument("--concurrency", type=int, default=8, help="requests in flight to --endpoint")
    sp.add_argument("--batch-size", type=int, default=8, help="prompts per in-process generate() call")
    sp.add_argument("--max-new-tokens", type=int, default=128)
    sp.add_argument("--limit", type=int, help="first N records (per BFCL category)")
    sp.add_argument("--format", choices=["hermes", "llama3_json", "mistral"],
                    help="tool-call format of the output (default: from the model's template family; hermes for endpoints)")
    sp.add_argument("--turns", choices=["all", "first"], default="all", help="assistant turns to evaluate")
    sp.add_argument("--out", required=True, help="report folder, e.g. runs/NAME/eval")
    sp.add_argument("--json", action="store_true", help="print report.json instead of the summary")
    sp.set_defaults(func=_eval)

    sp = sub.add_parser("score", help="score a predictions file (JSONL keyed by id) against --data or --bfcl")
    sp.add_argument("--predictions", required=True, metavar="FILE",
                    help='rows {"id", "tool_calls": [...]} ([] = no call) or {"id", "output": "raw text"}')
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="canonical JSONL the predictions answer")
    src.add_argument("--bfcl", metavar="CATEGORY", help="BFCL categories the predictions answer")
    sp.add_argument("--format", default="hermes", choices=["hermes", "llama3_json", "mistral", "openai"],
                    help='parser for "output" rows (default hermes)')
    sp.add_argument("--turns", choices=["all", "first"], default="all")
    sp.add_argument("--json", action="store_true", help="print the report with per_example [{id, correct, reason}]")
    sp.set_defaults(func=_score)

    sp = sub.add_parser("compare", help="two evaluations side by side: metric deltas and examples that changed")
    sp.add_argument("run_a", metavar="RUN_A", help="an eval folder or a run folder holding eval/")
    sp.add_argument("run_b", metavar="RUN_B")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_compare)

    sp = sub.add_parser("tokens", help="exact token counts, trained tokens, truncation and steps for a dataset")
    _data_options(sp)
    sp.add_argument("--batch-size", type=int, help="examples per device step (train.batch_size)")
    sp.add_argument("--grad-accum", type=int, help="gradient accumulation steps (train.grad_accum)")
    sp.add_argument("--epochs", type=float, help="train.epochs (without --config: 1)")
    sp.add_argument("--plot", metavar="FILE", help="write a histogram PNG of tokens per example")
    sp.add_argument("--json", action="store_true", help="print the full report (per example too) as JSON")
    sp.set_defaults(func=_tokens)

    sp = sub.add_parser("show-mask", help="print one conversation with the trained tokens marked")
    _data_options(sp)
    sp.add_argument("--index", type=int, default=0, help="row of DATA (0-based)")
    sp.add_argument("--color", default="auto", choices=["auto", "always", "never"],
                    help="ANSI colour (auto: on a terminal); otherwise trained text is in [[...]]")
    sp.set_defaults(func=_show_mask)

    return p


def _config_options(sp: argparse.ArgumentParser, note: str = "", required: bool = False) -> None:
    sp.add_argument("--config", required=required, help="run config YAML (configs/*.yaml)" + note)
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set train.max_steps=20 (repeatable)")  # fmt: skip


def _data_options(sp: argparse.ArgumentParser) -> None:
    """What `tokens` and `show-mask` share: the data, the model and its template, as training uses them."""
    sp.add_argument("data", nargs="?", metavar="DATA", help="canonical JSONL (default: the config's data.train)")
    _config_options(sp, "; the options below override it")
    sp.add_argument("--model", help="model whose tokenizer counts: folder, tiny:..., packaged:..., hub id (model.name)")
    sp.add_argument("--max-seq-length", type=int,
                    help="tokens per example kept in training (model.max_seq_length; without --config: 4096)")
    sp.add_argument("--family", help="chat-template family: auto, chatml, qwen2_5, llama3_1, mistral (model.family)")
    sp.add_argument("--parallel", choices=["error", "split"],
                    help="Llama 3.1 parallel calls: refuse, or split into one call per assistant turn (data.parallel)")
    sp.add_argument("--call-text", choices=["error", "drop"],
                    help="Llama 3.1 text beside a call: refuse, or drop the text (data.content_with_calls)")  # fmt: skip


# Without --config, `tokens` and `show-mask` count as for a 4096-token run of one epoch.
DATA_DEFAULTS = {"model.max_seq_length": 4096, "train.epochs": 1}


def _run_config(args, flags: dict, defaults: dict):
    """The verb's RunConfig: --config (without one: the config defaults and `defaults`), then --set, then the
    verb's own flags (those given)."""
    from .config import load_config, parse_override

    overrides = {} if args.config else dict(defaults)
    overrides.update(parse_override(o) for o in args.overrides)
    overrides.update((k, v) for k, v in flags.items() if v is not None)
    return load_config(args.config, overrides)


def _data_config(args, flags: dict | None = None):
    if not args.config and not (args.data and args.model):
        raise KitError(f"{args.verb}: give DATA and --model, or --config")
    shared = {"data.train": args.data, "model.name": args.model, "model.max_seq_length": args.max_seq_length,
              "model.family": args.family, "data.parallel": args.parallel, "data.content_with_calls": args.call_text}
    return _run_config(args, shared | (flags or {}), DATA_DEFAULTS)


def _prepare(args) -> int:
    from .prepare import prepare, summary

    report = prepare(args.inputs, args.out, fmt=args.format, eval_fraction=args.eval_fraction, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 1 if (args.strict and (report["rejected"] or not report["kept"])) else 0


def _merge(args) -> int:
    from .merge import merge, summary

    report = merge(args.adapter, args.out, base=args.base, dtype=args.dtype, method=args.method)
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 0


def _pipeline(args) -> int:
    from .pipeline import run_all

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    run_all(args.config, args.overrides, stages=stages, inputs=args.inputs, eval_limit=args.eval_limit)
    return 0


def _plan(args) -> int:
    from .plan import NO_CONFIG, estimate, summary

    if not args.config and not args.model:
        raise KitError("plan needs --config or --model")
    cfg = _run_config(args, {"model.name": args.model, "backend": args.backend}, NO_CONFIG)
    est = estimate(cfg, gpu=args.gpu, tokens=args.tokens, price_per_hour=args.price)
    print(json.dumps(est, indent=2) if args.json else summary(est))
    return 0


def _train(args) -> int:
    import logging

    from .config import load_config
    from .train import load_run_config, summary, train

    # force: the handler writes to the stderr of this call (a second in-process call gets its own).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"backend={args.backend}")
    if args.resume:
        if args.config:
            raise KitError("--resume uses the run's own config.yaml: drop --config (use --set to change values)")
        result = train(load_run_config(args.resume, overrides), resume=args.resume)
    elif args.config:
        result = train(load_config(args.config, overrides))
    else:
        raise KitError("train: give --config CFG or --resume RUN_DIR")
    print(json.dumps(result, indent=2) if args.json else summary(result))
    return 0


def _synth(args) -> int:
    import os

    from .synth import summary, synth

    key = None
    if args.teacher_api_key_env:
        key = os.environ.get(args.teacher_api_key_env)
        if not key:
            raise KitError(f"--teacher-api-key-env: ${args.teacher_api_key_env} is not set")

    report = synth(
        args.out,
        n=args.n,
        seed=args.seed,
        catalog=args.catalog,
        mix=args.mix,
        split=args.split,
        holdout_fraction=args.holdout_fraction,
        holdout_seed=args.holdout_seed,
        max_tools=args.max_tools,
        contrast=args.contrast,
        teacher_url=args.teacher_url,
        teacher_model=args.teacher_model,
        teacher_workers=args.teacher_workers,
        teacher_timeout=args.teacher_timeout,
        teacher_api_key=key,
    )
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 0


def _model(args) -> int:
    from .models import resolve_model

    print(resolve_model(args.name, cache_dir=args.cache_dir))
    return 0


def _eval(args) -> int:
    from .evaluate import evaluate, summary_markdown

    report = evaluate(
        args.out, model=args.model, adapter=args.adapter, data=args.data, bfcl=args.bfcl, endpoint=args.endpoint,
        endpoint_model=args.endpoint_model, concurrency=args.concurrency, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, limit=args.limit, fmt=args.format, turns=args.turns,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    print(json.dumps(report, indent=2) if args.json else summary_markdown(report) + f"\nwritten to {args.out}")
    return 0


def _score(args) -> int:
    from .evaluate import score, summary_markdown

    report = score(args.predictions, data=args.data, bfcl=args.bfcl, fmt=args.format, turns=args.turns)
    print(json.dumps(report, indent=2) if args.json else summary_markdown(report))
    return 0


def _compare(args) -> int:
    from .evaluate import compare, format_compare

    result = compare(args.run_a, args.run_b)
    print(json.dumps(result, indent=2) if args.json else format_compare(result))
    return 0


def _tokens(args) -> int:
    from .pipeline import count_tokens
    from .tokens import summary

    flags = {"train.batch_size": args.batch_size, "train.grad_accum": args.grad_accum, "train.epochs": args.epochs}
    report = count_tokens(_data_config(args, flags), plot=args.plot)
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 0


def _show_mask(args) -> int:
    from .pipeline import mask_text

    color = sys.stdout.isatty() if args.color == "auto" else args.color == "always"
    print(mask_text(_data_config(args), index=args.index, color=color))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except KitError as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)  # one line, whatever a library said
        return 2
    except OSError as e:  # the file system said no (full, read-only, not a folder): the user's to fix
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
