"""The Berkeley Function Calling Leaderboard's data, read from the `bfcl-eval` wheel, as canonical records.

    toolcall-kit eval --model runs/demo/merged --bfcl simple,multiple --out runs/demo/eval-bfcl
    toolcall-kit score --bfcl parallel --predictions preds.jsonl --json

The wheel is installed with `--no-deps` (its dependencies pin numpy 1.26 and pull 1.9 GB of API
clients), so it is never imported: `importlib.util.find_spec` finds its folder and the data files
(JSON Lines named `.json`) are read directly. Gorilla types ("dict", "float", "tuple", "any") become JSON
Schema with BFCL's own mapping, and "." in function names becomes "_" as BFCL does for OpenAI-style
tool calling (names must match ^[a-zA-Z0-9_-]{1,64}$); the possible answers are renamed to match.

BFCL is an evaluation set: NEVER train on it. Every record made here carries a `"bfcl"` key and keeps
its BFCL id; `is_bfcl(record)` recognises them and `assert_not_bfcl(records)` is the guard the training
and data-preparation paths call.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import DataError, KitError
from .io import read_jsonl
from .records import DECLINED, PARALLEL_CALLS, SINGLE_CALL, Record, tool_schemas

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
# Present in the wheel but not scored here, with the reason given to the user.
UNSUPPORTED = {
    "simple_java": "Java-syntax string values need BFCL's Java type converter",
    "simple_javascript": "JavaScript-syntax string values need BFCL's JS type converter",
    "multi_turn_base": "multi-turn categories are scored by executing BFCL's simulated APIs",
    "multi_turn_long_context": "multi-turn categories are scored by executing BFCL's simulated APIs",
    "multi_turn_miss_func": "multi-turn categories are scored by executing BFCL's simulated APIs",
    "multi_turn_miss_param": "multi-turn categories are scored by executing BFCL's simulated APIs",
    "memory": "agentic categories need BFCL's memory backend",
    "web_search": "agentic categories need live web search",
    "format_sensitivity": "format sensitivity re-prompts the model in many formats",
}

# BFCL's GORILLA_TO_OPENAPI table (bfcl_eval/constants/type_mappings.py), copied so the wheel is not imported.
GORILLA_TO_JSON_SCHEMA = {
    "integer": "integer",
    "number": "number",
    "float": "number",
    "string": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "dict": "object",
    "object": "object",
    "tuple": "array",
    "any": "string",
    "byte": "integer",
    "short": "integer",
    "long": "integer",
    "double": "number",
    "char": "string",
    "ArrayList": "array",
    "Array": "array",
    "HashMap": "object",
    "Hashtable": "object",
    "Queue": "array",
    "Stack": "array",
    "Any": "string",
    "String": "string",
    "Bigint": "integer",
}

# Ids distinctive enough to recognise on their own ("multiple_3" or "parallel_1" could be anyone's).
_ID_RE = re.compile(
    r"^(simple_python|simple_java|simple_javascript|parallel_multiple|live_[a-z_]+|multi_turn_[a-z_]+)_\d+"
)


def data_dir() -> Path:
    """bfcl_eval/data inside the installed wheel, found without importing the package."""
    try:
        spec = importlib.util.find_spec("bfcl_eval")
        locations = list(spec.submodule_search_locations or []) if spec else []
    except ValueError:  # already in sys.modules without a spec (a test's stub package)
        locations = list(getattr(sys.modules.get("bfcl_eval"), "__path__", []))
    if not locations:
        raise KitError(f"the BFCL data is not installed; {INSTALL_HINT}")
    path = Path(locations[0]) / "data"
    if not path.is_dir():
        raise KitError(f"{path} is missing from the bfcl-eval wheel; {INSTALL_HINT}")
    return path


def _data_file(category: str) -> Path:
    # Exact stems only: the glob "BFCL_v*_multiple.json" also matches parallel_multiple and live_multiple.
    pattern = re.compile(rf"BFCL_v(\d+)_{re.escape(category)}\.json$")
    found = [(int(m.group(1)), p) for p in data_dir().glob("BFCL_v*.json") if (m := pattern.match(p.name))]
    matches = [p for _, p in sorted(found)]
    if not matches:
        raise KitError(f"BFCL category {category!r} has no data file in {data_dir()}")
    return matches[-1]  # the newest BFCL version present (v4 after v3, by number)


def categories() -> list[str]:
    """Every category with a data file in the installed wheel (supported or not)."""
    out = []
    for p in sorted(data_dir().glob("BFCL_v*_*.json")):
        m = re.match(r"BFCL_v\d+_(.+)\.json$", p.name)
        if m:
            out.append(m.group(1))
    return sorted(set(out))


def resolve_categories(spec: str) -> list[str]:
    """'simple,parallel' | 'all' -> file stems, with a clear error for unknown or unsupported ones."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["all"]:
        present = set(categories())
        return [c for c in SUPPORTED if c in present]
    out = []
    for name in names:
        cat = ALIASES.get(name, name)
        if cat in UNSUPPORTED:
            raise KitError(f"BFCL category {name!r} is not supported: {UNSUPPORTED[cat]}")
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
    """BFCL's rename for OpenAI-style tool calling: '.' is not allowed in a function name."""
    return name.replace(".", "_")


def gorilla_to_json_schema(schema: dict) -> dict:
    """A Gorilla parameter schema (any depth) as JSON Schema; unknown types become "string" as in BFCL."""
    out = copy.deepcopy(schema)

    def convert(node: Any) -> None:
        if not isinstance(node, dict):
            return
        t = node.get("type")
        if t is not None or "properties" in node:
            node["type"] = GORILLA_TO_JSON_SCHEMA.get(t, "string") if t is not None else "object"
            if "default" in node and node["default"] is None:
                # BFCL marks "may be null" only with `"default": null` (and its answers then hold None);
                # saying so in the schema keeps a correct null from failing the validity check.
                node["type"] = [node["type"], "null"]
                if isinstance(node.get("enum"), list) and None not in node["enum"]:
                    node["enum"] = [*node["enum"], None]
        # `optional` is a Gorilla marker, not JSON Schema; `required` already says the same thing.
        node.pop("optional", None)
        for child in (node.get("properties") or {}).values():
            convert(child)
        if isinstance(node.get("items"), dict):
            convert(node["items"])

    convert(out)
    out["type"] = "object"
    out.setdefault("properties", {})
    return out


def _gold_value(acceptable: list, schema: dict) -> tuple[bool, Any]:
    """(present, value): the first acceptable value, unwrapping BFCL's nested dict answers."""
    for value in acceptable:
        if value == "":
            continue
        return True, _unwrap(value, schema)
    return False, None


def _unwrap(value: Any, schema: dict) -> Any:
    props = schema.get("properties") or {}
    if isinstance(value, dict) and schema.get("type") == "object":
        out = {}
        for k, vs in value.items():
            present, v = _gold_value(vs if isinstance(vs, list) else [vs], props.get(k, {}))
            if present:
                out[k] = v
        return out
    items = schema.get("items") or {}
    if isinstance(value, list) and items.get("type") == "object" and all(isinstance(v, dict) for v in value):
        return [_unwrap(v, items) for v in value]
    return value


def _rename_answers(answers: list[dict]) -> list[dict]:
    return [{sanitize_name(name): params for name, params in ans.items()} for ans in answers]


def to_record(entry: dict, answers: list[dict] | None, category: str) -> Record:
    """One BFCL entry (and its possible answers) as a canonical record marked with `"bfcl"`."""
    kind, expect = SUPPORTED[category]
    tools = []
    for fn in entry["function"]:
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": sanitize_name(fn["name"]),
                    "description": fn.get("description", ""),
                    "parameters": gorilla_to_json_schema(fn.get("parameters") or {}),
                },
            }
        )
    messages = [{"role": m["role"], "content": m.get("content") or ""} for m in entry["question"][0]]
    renamed = _rename_answers(answers or [])
    if renamed:
        # The gold turn (first acceptable value of each parameter) makes the record complete for
        # rendering and inspection; scoring uses `bfcl.answers`, which holds every acceptable value.
        schemas = tool_schemas(tools)
        calls = []
        for j, ans in enumerate(renamed):
            ((name, params),) = ans.items()
            schema = schemas.get(name, {"type": "object", "properties": {}})
            args = {}
            for p, acceptable in params.items():
                present, v = _gold_value(acceptable, (schema.get("properties") or {}).get(p, {}))
                if present:
                    args[p] = v
            calls.append(
                {"id": f"call_{j}", "type": "function", "function": {"name": name, "arguments": args}}
            )
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
    return {
        "id": entry["id"],
        "kind": kind,
        "tools": tools,
        "messages": messages,
        "bfcl": {
            "category": category,
            "expect": expect,
            "answers": renamed,
            "names": {sanitize_name(fn["name"]): fn["name"] for fn in entry["function"]},
        },
    }


def load_category(category: str, limit: int | None = None) -> list[Record]:
    """Records of one supported category (file stem or alias), in BFCL's order."""
    (category,) = resolve_categories(category)
    entries = read_jsonl(_data_file(category))
    answers: dict[str, list] = {}
    if SUPPORTED[category][1] == "calls":
        path = data_dir() / "possible_answer" / _data_file(category).name
        if not path.exists():
            raise KitError(f"BFCL category {category!r} has no possible answers at {path}")
        answers = {row["id"]: row["ground_truth"] for row in read_jsonl(path)}
    if limit is not None:
        entries = entries[:limit]
    out = []
    for entry in entries:
        if SUPPORTED[category][1] == "calls" and entry["id"] not in answers:
            raise DataError(_data_file(category), None, f"{entry['id']} has no possible answer")
        out.append(to_record(entry, answers.get(entry["id"]), category))
    return out


def load(spec: str, limit: int | None = None) -> list[Record]:
    """Records of one or more categories ('simple,parallel', 'all'); `limit` applies per category."""
    records: list[Record] = []
    for category in resolve_categories(spec):
        records.extend(load_category(category, limit))
    return records


# A user message copied from BFCL is recognised only from this many characters (whitespace folded):
# BFCL holds short generic turns ("Who is Lebron James?", "Create a file.") that anyone may write.
MIN_COPIED_CHARS = 48


@lru_cache(maxsize=1)
def _question_hashes() -> frozenset[str]:
    """Hashes of the user messages in the installed BFCL data (empty when the wheel is absent)."""
    try:
        root = data_dir()
    except KitError:
        return frozenset()
    out = set()
    for path in root.glob("BFCL_v*_*.json"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # format_sensitivity.json is one pretty-printed object of ids, not questions
                for turn in entry.get("question") or [] if isinstance(entry, dict) else []:
                    for m in turn if isinstance(turn, list) else []:
                        h = _user_text_hash(m)
                        if h:
                            out.add(h)
    return frozenset(out)


def _user_text_hash(message: Any) -> str | None:
    if not (
        isinstance(message, dict)
        and message.get("role") == "user"
        and isinstance(message.get("content"), str)
    ):
        return None
    text = " ".join(message["content"].split())
    if len(text) < MIN_COPIED_CHARS:
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_bfcl(record: Any) -> bool:
    """True for BFCL evaluation data: the `bfcl` marker, a BFCL id, or a user message copied from BFCL.

    The last check catches BFCL rows converted to another format that lost their marker and id.
    """
    if not isinstance(record, dict):
        return False
    if "bfcl" in record or _ID_RE.match(str(record.get("id") or "")):
        return True
    hashes = _question_hashes()
    return any(_user_text_hash(m) in hashes for m in record.get("messages") or [] if _user_text_hash(m))


def assert_not_bfcl(records, where: str = "training data") -> None:
    """The training guard: raise if any record is BFCL evaluation data (it must never be trained on)."""
    bad = [str(r.get("id")) for r in records if is_bfcl(r)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise KitError(
            f"{where} contains {len(bad)} BFCL evaluation record(s) ({shown}); never train on BFCL"
        )
