"""`toolcall-kit <verb>`: parses arguments and calls one library function per verb.

The verbs and their options are in cli.yaml; heavy imports happen inside the verb that needs them. A
`KitError` or an operating-system error is printed as one line and exits 2; anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from .errors import KitError

SPEC = Path(__file__).with_name("cli.yaml")
TYPES = {"int": int, "float": float}
VERBS = {}  # verb name -> the function below that runs it
# Without --config, `tokens` and `show-mask` count as for a 4096-token run of one epoch.
DATA_DEFAULTS = {"model.max_seq_length": 4096, "train.epochs": 1}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toolcall-kit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)
    for name, verb in yaml.safe_load(SPEC.read_text(encoding="utf-8"))["verbs"].items():
        sp = sub.add_parser(name, help=verb["help"])
        one_of = sp.add_mutually_exclusive_group(required=True) if "one_of" in verb else None
        config_keys = {}  # an option's dest -> the config key it overrides
        for flag, options in verb["args"].items():
            options = {**options, "type": TYPES[options["type"]]} if "type" in options else dict(options)
            key = options.pop("key", None)
            dest = (one_of if flag in verb.get("one_of", ()) else sp).add_argument(flag, **options).dest
            if key:
                config_keys[dest] = key
        sp.set_defaults(run=VERBS[name], config_keys=config_keys)
    return p


def verb(name: str):
    def register(run):
        VERBS[name] = run
        return run

    return register


def _call(fn, args, **extra):
    """`fn` called with the verb's options: cli.yaml names each as `fn`'s parameter is named."""
    own = ("verb", "run", "config_keys", "json", "strict")
    return fn(**{k: v for k, v in vars(args).items() if k not in own}, **extra)


def _show(args, report: dict, summary) -> int:
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 0


def _overrides(args) -> dict:
    """--set values, then the verb's own options that override a config key (those given)."""
    from .config import parse_override

    options = {key: getattr(args, dest) for dest, key in args.config_keys.items()}
    return dict(map(parse_override, args.overrides)) | {k: v for k, v in options.items() if v is not None}


def _run_config(args, defaults: dict):
    """--config (without one: the config defaults and `defaults`), then the overrides."""
    from .config import load_config

    return load_config(args.config, ({} if args.config else defaults) | _overrides(args))


def _data_config(args):
    if not args.config and not (args.data and args.model):
        raise KitError(f"{args.verb}: give DATA and --model, or --config")
    return _run_config(args, DATA_DEFAULTS)


@verb("prepare")
def _prepare(args) -> int:
    from .prepare import prepare, summary

    report = _call(prepare, args)
    _show(args, report, summary)
    return 1 if (args.strict and (report["rejected"] or not report["kept"])) else 0


@verb("merge")
def _merge(args) -> int:
    from .merge import merge, summary

    return _show(args, _call(merge, args), summary)


@verb("pipeline")
def _pipeline(args) -> int:
    from .pipeline import run_all

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    run_all(args.config, args.overrides, stages=stages, inputs=args.inputs, eval_limit=args.eval_limit)
    return 0


@verb("plan")
def _plan(args) -> int:
    from .plan import NO_CONFIG, estimate, summary

    if not args.config and not args.model:
        raise KitError("plan needs --config or --model")
    cfg = _run_config(args, NO_CONFIG)
    return _show(args, estimate(cfg, gpu=args.gpu, tokens=args.tokens, price_per_hour=args.price), summary)


@verb("train")
def _train(args) -> int:
    import logging

    from .train import load_run_config, summary, train

    # force: the handler writes to the stderr of this call (a second in-process call gets its own).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    if args.resume:
        if args.config:
            raise KitError(
                "--resume uses the run's own config.yaml: drop --config (use --set to change values)"
            )
        result = train(load_run_config(args.resume, _overrides(args)), resume=args.resume)
    elif args.config:
        result = train(_run_config(args, {}))
    else:
        raise KitError("train: give --config CFG or --resume RUN_DIR")
    return _show(args, result, summary)


@verb("synth")
def _synth(args) -> int:
    from .synth import summary, synth

    key, env = None, vars(args).pop("teacher_api_key_env")  # synth takes the key, not where it is kept
    if env:
        key = os.environ.get(env)
        if not key:
            raise KitError(f"--teacher-api-key-env: ${env} is not set")
    return _show(args, _call(synth, args, teacher_api_key=key), summary)


@verb("model")
def _model(args) -> int:
    from .models import resolve_model

    print(_call(resolve_model, args))
    return 0


@verb("eval")
def _eval(args) -> int:
    from .evaluate import evaluate, summary_markdown

    report = _call(evaluate, args, log=lambda msg: print(msg, file=sys.stderr))
    return _show(args, report, lambda r: summary_markdown(r) + f"\nwritten to {args.out}")


@verb("score")
def _score(args) -> int:
    from .evaluate import score, summary_markdown

    return _show(args, _call(score, args), summary_markdown)


@verb("compare")
def _compare(args) -> int:
    from .evaluate import compare, format_compare

    return _show(args, _call(compare, args), format_compare)


@verb("tokens")
def _tokens(args) -> int:
    from .pipeline import count_tokens
    from .tokens import summary

    return _show(args, count_tokens(_data_config(args), plot=args.plot), summary)


@verb("show-mask")
def _show_mask(args) -> int:
    from .pipeline import mask_text

    color = sys.stdout.isatty() if args.color == "auto" else args.color == "always"
    print(mask_text(_data_config(args), index=args.index, color=color))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.run(args)
    except KitError as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)  # one line, whatever a library said
        return 2
    except OSError as e:  # the file system said no (full, read-only, not a folder): the user's to fix
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
