"""The Berkeley Function Calling Leaderboard's data, read from the `bfcl-eval` wheel, as canonical records.

The wheel is installed with `--no-deps` (its dependencies pin numpy 1.26 and pull 1.9 GB of API clients):
only its constants (empty package __init__ files) are imported; the data files (JSON Lines named `.json`) are
read directly. BFCL is an evaluation set: NEVER train on it. Every record made here carries a `"bfcl"` key
and keeps its BFCL id; `assert_not_bfcl` is the guard the training path calls.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import DataError, KitError
from .io import read_jsonl
from .records import DECLINED, PARALLEL_CALLS, SINGLE_CALL, Record, make_call, make_tool, tool_schemas

INSTALL_HINT = "install the data wheel: pip install --no-deps bfcl-eval==2026.3.23"

# Short names accepted on the command line -> the file stem after "BFCL_v4_".
ALIASES = {"simple": "simple_python", "python": "simple_python"}

# Single-turn categories scored by AST matching or (ir)relevance; value = (kind, expectation).
# "calls": match the possible answers; "none": any call is wrong; "any_call": at least one call is right.
SUPPORTED = {
    "simple_python": (SINGLE_CALL, "calls"),
    "multiple": (SINGLE_CALL, "calls"),
    "parallel": (PARALLEL_CALLS, "calls"),
    "parallel_multiple": (PARALLEL_CALLS, "calls"),
    "irrelevance": (DECLINED, "none"),
    "live_simple": (SINGLE_CALL, "calls"),
    "live_multiple": (SINGLE_CALL, "calls"),
    "live_parallel": (PARALLEL_CALLS, "calls"),
    "live_parallel_multiple": (PARALLEL_CALLS, "calls"),
    "live_irrelevance": (DECLINED, "none"),
    "live_relevance": (SINGLE_CALL, "any_call"),
}
# Present in the wheel but not scored here, by category prefix, with the reason given to the user.
UNSUPPORTED = {
    "simple_javascript": "JavaScript-syntax string values need BFCL's JS type converter",
    "simple_java": "Java-syntax string values need BFCL's Java type converter",
    "multi_turn": "multi-turn categories are scored by executing BFCL's simulated APIs",
    "memory": "agentic categories need BFCL's memory backend",
    "web_search": "agentic categories need live web search",
    "format_sensitivity": "format sensitivity re-prompts the model in many formats",
}

# Ids distinctive enough to recognise on their own ("multiple_3" or "parallel_1" could be anyone's).
_ID_RE = re.compile(
    r"^(simple_python|simple_java|simple_javascript|parallel_multiple|live_[a-z_]+|multi_turn_[a-z_]+)_\d+"
)


def data_dir() -> Path:
    try:
        import bfcl_eval
    except ImportError:
        raise KitError(f"the BFCL data is not installed; {INSTALL_HINT}") from None
    path = Path(list(bfcl_eval.__path__)[0]) / "data"
    if not path.is_dir():
        raise KitError(f"{path} is missing from the bfcl-eval wheel; {INSTALL_HINT}")
    return path


def _data_file(category: str) -> Path:
    folder = data_dir()  # first: without the wheel, the error with the install hint
    from bfcl_eval.constants.category_mapping import VERSION_PREFIX

    return folder / f"{VERSION_PREFIX}_{category}.json"


def resolve_categories(spec: str) -> list[str]:
    """'simple,parallel' | 'all' -> file stems, with a clear error for unknown or unsupported ones."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["all"]:
        return [c for c in SUPPORTED if _data_file(c).exists()]
    out = []
    for name in names:
        cat = ALIASES.get(name, name)
        why = next((why for prefix, why in UNSUPPORTED.items() if cat.startswith(prefix)), None)
        if why:
            raise KitError(f"BFCL category {name!r} is not supported: {why}")
        if cat not in SUPPORTED:
            raise KitError(
                f"unknown BFCL category {name!r}; choose from: all, simple, {', '.join(SUPPORTED)}"
            )
        if cat not in out:
            out.append(cat)
    if not out:
        raise KitError("no BFCL category given")
    return out


def sanitize_name(name: str) -> str:
    """BFCL's rename for OpenAI-style tool calling, where names must match ^[a-zA-Z0-9_-]{1,64}$."""
    return name.replace(".", "_")


def gorilla_to_json_schema(schema: dict) -> dict:
    """A Gorilla parameter schema (any depth) as JSON Schema; unknown types become "string" as in BFCL."""
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI

    def convert(node: Any) -> None:
        if not isinstance(node, dict):
            return
        t = node.get("type")
        if t is not None or "properties" in node:
            node["type"] = GORILLA_TO_OPENAPI.get(t, "string") if t is not None else "object"
            if "default" in node and node["default"] is None:
                # BFCL marks "may be null" only with `"default": null` (and its answers then hold None);
                # saying so in the schema keeps a correct null from failing the validity check.
                node["type"] = [node["type"], "null"]
                if isinstance(node.get("enum"), list) and None not in node["enum"]:
                    node["enum"] = [*node["enum"], None]
        node.pop("optional", None)  # a Gorilla marker; `required` says the same in JSON Schema
        for child in (node.get("properties") or {}).values():
            convert(child)
        convert(node.get("items"))

    out = copy.deepcopy(schema)
    convert(out)
    out["type"] = "object"
    out.setdefault("properties", {})
    return out


def _unwrap(value: Any, schema: dict) -> Any:
    """The gold value in a possible answer: the first acceptable value of each key, at any depth."""
    props = schema.get("properties") or {}
    if isinstance(value, dict) and schema.get("type") == "object":
        out = {}
        for k, acceptable in value.items():
            present = [v for v in (acceptable if isinstance(acceptable, list) else [acceptable]) if v != ""]
            if present:
                out[k] = _unwrap(present[0], props.get(k, {}))
        return out
    items = schema.get("items") or {}
    if isinstance(value, list) and items.get("type") == "object" and all(isinstance(v, dict) for v in value):
        return [_unwrap(v, items) for v in value]
    return value


def to_record(entry: dict, answers: list[dict] | None, category: str) -> Record:
    """One BFCL entry (and its possible answers) as a canonical record marked with `"bfcl"`."""
    kind, expect = SUPPORTED[category]
    tools = []
    for fn in entry["function"]:
        schema = gorilla_to_json_schema(fn.get("parameters") or {})
        tools.append(make_tool(sanitize_name(fn["name"]), fn.get("description", ""), schema))
    messages = [{"role": m["role"], "content": m.get("content") or ""} for m in entry["question"][0]]
    renamed = [{sanitize_name(name): params for name, params in a.items()} for a in answers or []]
    if renamed:
        # A gold turn (each parameter's first acceptable value) to render; scoring uses `bfcl.answers`.
        schemas = tool_schemas(tools)
        calls = []
        for j, answer in enumerate(renamed):
            ((name, params),) = answer.items()
            calls.append(make_call(name, _unwrap(params, schemas.get(name, {"type": "object"})), f"call_{j}"))
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
    names = {sanitize_name(fn["name"]): fn["name"] for fn in entry["function"]}
    bfcl = {"category": category, "expect": expect, "answers": renamed, "names": names}
    return {"id": entry["id"], "kind": kind, "tools": tools, "messages": messages, "bfcl": bfcl}


def load_category(category: str, limit: int | None = None) -> list[Record]:
    """Records of one supported category (a file stem), in BFCL's order."""
    path = _data_file(category)
    if not path.exists():
        raise KitError(f"BFCL category {category!r} has no data file in {data_dir()}")
    entries = read_jsonl(path)[:limit]
    answers: dict[str, list] = {}
    if SUPPORTED[category][1] == "calls":
        answer_path = path.parent / "possible_answer" / path.name
        if not answer_path.exists():
            raise KitError(f"BFCL category {category!r} has no possible answers at {answer_path}")
        answers = {row["id"]: row["ground_truth"] for row in read_jsonl(answer_path)}
        missing = next((e["id"] for e in entries if e["id"] not in answers), None)
        if missing:
            raise DataError(path, None, f"{missing} has no possible answer")
    return [to_record(entry, answers.get(entry["id"]), category) for entry in entries]


def load(spec: str, limit: int | None = None) -> list[Record]:
    """Records of one or more categories ('simple,parallel', 'all'); `limit` applies per category."""
    return [record for category in resolve_categories(spec) for record in load_category(category, limit)]


# A user message copied from BFCL is recognised only from this many characters (whitespace folded):
# BFCL holds short generic turns ("Who is Lebron James?", "Create a file.") that anyone may write.
MIN_COPIED_CHARS = 48


def _user_text_hash(message: Any) -> str | None:
    if not (isinstance(message, dict) and message.get("role") == "user"):
        return None
    text = " ".join(message["content"].split()) if isinstance(message.get("content"), str) else ""
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if len(text) >= MIN_COPIED_CHARS else None


@lru_cache(maxsize=1)
def _question_hashes() -> frozenset[str]:
    """Hashes of the user messages in the installed BFCL data (empty when the wheel is absent)."""
    try:
        files = list(data_dir().glob("BFCL_v*_*.json"))
    except KitError:
        return frozenset()
    out = set()
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # format_sensitivity.json is one pretty-printed object of ids, not questions
                turns = entry.get("question") or [] if isinstance(entry, dict) else []
                out.update(_user_text_hash(m) for turn in turns if isinstance(turn, list) for m in turn)
    return frozenset(out - {None})


def is_bfcl(record: Any) -> bool:
    """True for BFCL evaluation data: the `bfcl` marker, a BFCL id, or a user message copied from BFCL
    (which catches BFCL rows converted to another format that lost their marker and id)."""
    if not isinstance(record, dict):
        return False
    if "bfcl" in record or _ID_RE.match(str(record.get("id") or "")):
        return True
    hashes = _question_hashes()
    return any(_user_text_hash(m) in hashes for m in record.get("messages") or [])


def assert_not_bfcl(records, where: str = "training data") -> None:
    """The training guard: raise if any record is BFCL evaluation data (it must never be trained on)."""
    bad = [str(r.get("id")) for r in records if is_bfcl(r)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise KitError(
            f"{where} contains {len(bad)} BFCL evaluation record(s) ({shown}); never train on BFCL"
        )
