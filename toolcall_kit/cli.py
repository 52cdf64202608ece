"""`toolcall-kit <verb>`: parses arguments and calls one library function per verb.

Heavy imports (torch, transformers) happen inside the verb that needs them, so `prepare` and `score`
start fast. A `KitError` is printed as one line and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import KitError


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toolcall-kit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)

    # --- prepare (issue: foundation) ---
    sp = sub.add_parser("prepare", help="read, convert, validate, dedupe and split tool-calling data")
    sp.add_argument("inputs", nargs="+", metavar="INPUT")
    sp.add_argument("--out", required=True, help="output folder for train/eval/rejects/report")
    sp.add_argument("--format", default="auto", choices=["auto", "openai", "xlam", "sharegpt", "chat"])
    sp.add_argument("--eval-fraction", type=float, default=0.1)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--strict", action="store_true", help="exit 1 if any row was rejected")
    sp.add_argument("--json", action="store_true", help="print report.json instead of the summary")
    sp.set_defaults(func=_prepare)

    return p


def _prepare(args) -> int:
    from .prepare import prepare, summary

    report = prepare(args.inputs, args.out, fmt=args.format, eval_fraction=args.eval_fraction, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 1 if (args.strict and report["rejected"]) else 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
