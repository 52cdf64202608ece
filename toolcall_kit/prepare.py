"""`toolcall-kit prepare INPUT... --out DIR`: read -> validate -> dedupe -> split -> report. Every row read
ends in DIR/train.jsonl or eval.jsonl, in DIR/rejects.jsonl (with its reason), or in the duplicate count."""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path

from . import io
from .errors import DataError, KitError
from .formats import FORMATS, read_file
from .records import KINDS, Record, call_name, classify, content_hash, iter_calls
from .run_files import PREPARED_EVAL, PREPARED_TRAIN, REJECTS, REPORT
from .validate import validate_record

RARE_CALLS = 50  # a tool called fewer times than this is probably under-represented for fine-tuning
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".gz")
MAX_DUPLICATES_LISTED = 20
OUTPUTS = {"train": PREPARED_TRAIN, "eval": PREPARED_EVAL, "rejects": REJECTS, "report": REPORT}
MAX_LISTED = 5  # problems, renamed ids: how many a warning or a reject's detail names


def prepare(inputs, out_dir, fmt: str = "auto", eval_fraction: float = 0.1, seed: int = 0) -> dict:
    """Read, validate, dedupe and split `inputs` into `out_dir`; returns the report (also DIR/report.json)."""
    if fmt != "auto" and fmt not in FORMATS:
        raise KitError(f"unknown format {fmt!r}; expected auto, {', '.join(FORMATS)}")
    if not 0 <= eval_fraction < 1:
        raise KitError(f"--eval-fraction must be in [0, 1), got {eval_fraction}")
    paths = _expand(inputs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise KitError(f"--out {out} exists and is not a folder")
    _refuse_overwriting_inputs(paths, out)
    kept, rejects, duplicates, files = _read_all(paths, fmt)
    read = sum(f["rows"] for f in files.values())
    assert read == len(kept) + len(rejects) + len(duplicates), "every row is kept, rejected or a duplicate"
    warnings = _file_warnings(files) + _make_ids_unique(kept)
    in_eval = split(kept, eval_fraction, seed)
    train = [r for r, e in zip(kept, in_eval, strict=True) if not e]
    evals = [r for r, e in zip(kept, in_eval, strict=True) if e]
    calls = Counter(call_name(call) for r in kept for _, call in iter_calls(r))
    rare = {name: n for name, n in sorted(calls.items(), key=lambda kv: (kv[1], kv[0])) if n < RARE_CALLS}
    if rare:
        listed = ", ".join(f"{name} ({n})" for name, n in list(rare.items())[:10])
        more = f" and {len(rare) - 10} more" if len(rare) > 10 else ""
        warnings.append(
            f"{len(rare)} of {len(calls)} tools are called fewer than {RARE_CALLS} times: {listed}{more}"
        )
    eval_tools = {call_name(call) for r in evals for _, call in iter_calls(r)}
    train_tools = {call_name(call) for r in train for _, call in iter_calls(r)}
    kinds = Counter(classify(r) for r in kept)
    report = {
        "read": read,
        "kept": len(kept),
        "rejected": len(rejects),
        "duplicates": len(duplicates),
        "rejected_by_reason": dict(Counter(r["reason"] for r in rejects).most_common()),
        "kinds": {k: kinds[k] for k in KINDS},
        "calls_per_tool": dict(calls.most_common()),
        "rare_tools": rare,
        "warnings": warnings,
        "files": files,
        "train": len(train),
        "eval": len(evals),
        "split": {
            "seed": seed,
            "eval_fraction": eval_fraction,
            "train_kinds": dict(Counter(classify(r) for r in train)),
            "eval_kinds": dict(Counter(classify(r) for r in evals)),
            "tools_only_in_train": len(train_tools - eval_tools),
            "tools_only_in_eval": len(eval_tools - train_tools),
        },
        "duplicate_rows": duplicates[:MAX_DUPLICATES_LISTED],
        "out": {key: str(out / name) for key, name in OUTPUTS.items()},
    }
    _write_all(out, train, evals, rejects, report)
    return report


def _read_all(paths: list[Path], fmt: str) -> tuple[list[Record], list[dict], list[dict], dict[str, dict]]:
    """(records kept, rejects, duplicates, per file: format, how it was chosen, rows)."""
    kept: list[Record] = []
    rejects: list[dict] = []
    duplicates: list[dict] = []
    files: dict[str, dict] = {}
    seen: dict[str, str] = {}  # content hash -> "file:line" of the copy kept
    for path in paths:
        info: dict = {}
        rows = 0
        for row in read_file(path, fmt, info):
            rows += 1
            problems = [row.problem] if row.problem else validate_record(row.record)
            h = None if problems else content_hash(row.record)
            if problems:
                rejects.append(_reject(row, problems))
            elif h in seen:
                duplicates.append({"file": row.path, "line": row.line, "same_as": seen[h]})
            else:
                seen[h] = f"{row.path}:{row.line}"
                # records.ensure_id's id, from the hash in hand (2 s on 60k rows)
                if not row.record.get("id"):
                    row.record["id"] = f"ex-{h[:12]}"
                kept.append(row.record)
        files[str(path)] = {**info, "rows": rows}
    return kept, rejects, duplicates, files


def _reject(row, problems: list) -> dict:
    detail = "; ".join(p.detail for p in problems[:MAX_LISTED])
    if len(problems) > MAX_LISTED:
        detail += f"; and {len(problems) - MAX_LISTED} more"
    return {
        "file": row.path,
        "line": row.line,
        "reason": problems[0].reason,
        "detail": detail,
        "reasons": sorted({p.reason for p in problems}),
        "raw": row.raw,
    }


def _file_warnings(files: dict[str, dict]) -> list[str]:
    warnings = []
    for name, info in files.items():
        if not info["rows"]:
            warnings.append(f"{name}: no rows")
        if info.get("warning"):
            warnings.append(f"{name}: {info['warning']}")
    return warnings


def _make_ids_unique(kept: list[Record]) -> list[str]:
    """Two different rows the source gave the same id get `-2`, `-3`...: evaluation joins on ids."""
    ids: set[str] = set()
    renamed: list[str] = []
    for rec in kept:
        if rec["id"] in ids:
            base, k = rec["id"], 2
            while f"{base}-{k}" in ids:
                k += 1
            rec["id"] = f"{base}-{k}"
            renamed.append(f"{base!r} -> {rec['id']!r}")
        ids.add(rec["id"])
    if not renamed:
        return []
    more = f" and {len(renamed) - MAX_LISTED} more" if len(renamed) > MAX_LISTED else ""
    return [f"{len(renamed)} rows reuse another row's id; renamed: {', '.join(renamed[:MAX_LISTED])}{more}"]


def split(records: list[Record], eval_fraction: float, seed: int) -> list[bool]:
    """Which records go to eval (True), deterministic for a seed: stratified on each record's kind and the
    tools it calls, never taking a label's last train row while another choice exists."""
    n = len(records)
    target = round(n * eval_fraction)
    if eval_fraction > 0 and n >= 2:
        target = min(max(target, 1), n - 1)
    in_eval = [False] * n
    if target <= 0:
        return in_eval
    labels = [_labels(r) for r in records]
    kind_of = [ls[0] for ls in labels]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    count = Counter(label for ls in labels for label in ls)
    left_in_train = Counter(count)
    share = {k: round(c * eval_fraction) for k, c in Counter(kind_of).items()}
    in_eval_by_kind: Counter = Counter()
    moved = 0

    def movable(i: int, within_share: bool = False) -> bool:
        if in_eval[i] or (within_share and in_eval_by_kind[kind_of[i]] >= share[kind_of[i]]):
            return False
        return all(left_in_train[label] > 1 for label in labels[i])

    def move(i: int) -> None:
        nonlocal moved
        in_eval[i] = True
        moved += 1
        in_eval_by_kind[kind_of[i]] += 1
        for label in labels[i]:
            left_in_train[label] -= 1

    by_label: dict[str, list[int]] = defaultdict(list)
    for i in order:
        for label in labels[i]:
            by_label[label].append(i)
    # Every kind seen twice gets an eval row; then, while the budget lasts, every tool seen twice, rarest
    # first, from rows of kinds under their share (so covering tools does not skew the kind mix).
    covered: set[str] = set()
    for label in sorted(count, key=lambda lb: (not lb.startswith("kind:"), count[lb], lb)):
        if moved >= target:
            break
        if count[label] < 2 or label in covered:
            continue
        is_kind = label.startswith("kind:")
        pick = next((i for i in by_label[label] if movable(i, within_share=not is_kind)), None)
        if pick is not None:
            move(pick)
            covered.update(labels[pick])
    for kind in KINDS:  # then each kind filled to its share
        for i in by_label.get(f"kind:{kind}", []):
            if moved >= target or in_eval_by_kind[kind_of[i]] >= share[kind_of[i]]:
                break
            if movable(i):
                move(i)
    for strict in (True, False):  # keep every label in train if possible; else fill the budget anyway
        for i in order:
            if moved >= target:
                break
            if movable(i) if strict else not in_eval[i]:
                move(i)
    return in_eval


def summary(report: dict) -> str:
    files = ", ".join(
        f"{Path(p).name} ({f.get('format', '?')}, {f['rows']} rows)" for p, f in report["files"].items()
    )
    lines = [f"read {report['read']} rows from {len(report['files'])} file(s): {files}"]
    for p, f in report["files"].items():
        if f.get("how", "").startswith("auto"):
            lines.append(f"  {Path(p).name}: {f['how']}")
    lines.append(
        f"kept {report['kept']} (train {report['train']}, eval {report['eval']}), "
        f"rejected {report['rejected']}, duplicates dropped {report['duplicates']}"
    )
    if report["rejected_by_reason"]:
        reasons = ", ".join(f"{k} {v}" for k, v in report["rejected_by_reason"].items())
        lines.append(f"rejected by reason: {reasons}  (see {report['out']['rejects']})")
    lines.append("kinds: " + ", ".join(f"{k} {v}" for k, v in report["kinds"].items()))
    calls = report["calls_per_tool"]
    if calls:
        top = ", ".join(f"{k} {v}" for k, v in list(calls.items())[:5])
        lines.append(f"tools called: {len(calls)} ({top}{', ...' if len(calls) > 5 else ''})")
    lines += [f"warning: {w}" for w in report["warnings"]]
    lines.append(f"wrote {Path(report['out']['train']).parent}/{{train,eval,rejects}}.jsonl and report.json")
    return "\n".join(lines)


def _labels(record: Record) -> tuple[str, ...]:
    tools = sorted({call_name(call) for _, call in iter_calls(record)})
    return (f"kind:{classify(record)}", *(f"tool:{t}" for t in tools))


def _refuse_overwriting_inputs(paths: list[Path], out: Path) -> None:
    """`prepare data/mine/train.jsonl --out data/mine` would replace its own input: refused."""
    targets = {(out / name).resolve() for name in OUTPUTS.values()}
    for p in paths:
        if str(p) != io.STDIN and p.resolve() in targets:
            raise KitError(
                f"--out {out} would overwrite the input {p} with prepare's own {p.name}; pick another --out"
            )


def _expand(inputs) -> list[Path]:
    """Input paths; a folder stands for the data files directly inside it; `-` is standard input."""
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if str(item) == io.STDIN:
            paths.append(p)
        elif p.is_dir():
            found = sorted(c for c in p.iterdir() if c.is_file() and c.name.lower().endswith(DATA_SUFFIXES))
            if not found:
                raise DataError(p, None, f"folder has no {', '.join(DATA_SUFFIXES)} files")
            paths.extend(found)
        elif not p.exists():
            raise DataError(p, None, "no such file")
        else:
            paths.append(p)
    if not paths:
        raise KitError("no input files given")
    return paths


def _write_all(out: Path, train: list, evals: list, rejects: list, report: dict) -> None:
    """All four outputs or none: every file is written and synced before the first is moved into place."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            handles = {name: stack.enter_context(io.atomic_open(out / name)) for name in OUTPUTS.values()}
            for name, rows in ((PREPARED_TRAIN, train), (PREPARED_EVAL, evals), (REJECTS, rejects)):
                handles[name].writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            handles[REPORT].write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            for f in handles.values():
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        raise KitError(
            f"cannot write the outputs to {out}: {e.strerror or e}; nothing was changed there"
        ) from None
