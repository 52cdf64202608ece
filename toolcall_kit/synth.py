"""Synthetic tool-calling conversations: `toolcall-kit synth`. The shipped demo files were made by

    toolcall-kit synth --out data/demo/train.jsonl --n 1500 --seed 0 --split train --mix no_call=0.06,decline=0.08,parallel=0.06,multi_step=0.1,session=0.6
    toolcall-kit synth --out data/demo/dev.jsonl --n 150 --seed 2 --split dev
    toolcall-kit synth --out data/demo/eval.jsonl --n 150 --seed 1 --split eval

(`tests/test_synth.py` checks they still reproduce byte for byte). The train mix is mostly sessions
(several requests under one offered tool set): the tool schemas are most of every example's tokens, and a
session trains 4-5 answers on them instead of one (benchmarks/demo_experiments.md). dev is for choosing
settings; eval is scored by `make demo`, on a share of every template group and value pool train never sees.

Every example is a validated canonical record with `kind`, a stable `id` and the `template_ids` it was built
from; at most `max_tools` tools are offered (3 keeps a SmolLM2 example near 300 tokens). A user's catalog gets
values from each parameter's schema and phrasings that state every value (synth_data/generic.yaml). Teacher
mode has an OpenAI-compatible server paraphrase user turns; one that drops a stated value is rejected.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import json
import math
import os
import random
import re
import string
import urllib.parse
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import regex
import rstr

from . import synth_intents as si
from .errors import DataError, KitError
from .io import check_writable_file, read_text_input, write_jsonl
from .records import (
    DECLINED,
    MULTI_STEP,
    NO_CALL,
    PARALLEL_CALLS,
    SINGLE_CALL,
    Record,
    calls_of,
    classify,
    make_call,
    tool_name,
)
from .synth_intents import Chain, Ctx, Intent, Slot
from .validate import PatternTooSlow, argument_errors, bounded_search, check_tools, validate_record

CATALOG_DIR = Path(__file__).parent / "catalogs"
SHIPPED_CATALOGS = ("general", "customer_service")
DEFAULT_CATALOG = "general,customer_service"
# session: answers share the tool schemas' tokens, and it teaches to answer the latest request, not the first.
DEFAULT_MIX = {"no_call": 0.15, "decline": 0.1, "parallel": 0.15, "multi_step": 0.15, "session": 0.0}
SESSION = "session"
MIX_KIND = {"no_call": NO_CALL, "decline": DECLINED, "parallel": PARALLEL_CALLS, "multi_step": MULTI_STEP,
            "session": SESSION}  # fmt: skip
SESSION_TURNS = (2, 10)  # requests per session
SESSION_CHARS = 2600  # characters of messages (JSON) after which a session takes no further request
SPLITS = ("all", "train", "dev", "eval")

# Shares of examples carrying tool results and a final answer (the rest end at the call: the training target).
P_RESULT_SINGLE = 0.35
P_RESULT_PARALLEL = 0.3
P_NO_SYSTEM = 0.25
P_DATE_LINE = 0.3  # a dated system prompt even when no relative date needs it
P_PREAMBLE = 0.08  # a chit-chat exchange before the request
P_GREETING, P_THANKS = 0.1, 0.1
P_OUT_OF_SCOPE = 0.3  # declines that no catalog tool could serve (the rest: the needed tool is withheld)
GENERIC = si.load_data("generic")  # phrasings for user catalogs' tools


# ------------------------------------------------------------------------------------ templates
@dataclass(frozen=True)
class Template:
    id: str
    text: str
    nodes: tuple


_TOKEN = re.compile(r"(\{\^?[A-Za-z_][A-Za-z0-9_]*(?:\.\d)?\}|[\[\]<>|])")
_SLOT = re.compile(r"\{(\^?)(\w+)(?:\.(\d))?\}")


def parse_template(text: str) -> tuple:
    """Nodes: ("t", str) | ("s", name, k, cap) | ("o", nodes) | ("a", (nodes, ...)). Raises ValueError.
    The language is described at the top of synth_data/intents.yaml."""
    tokens = [t for t in _TOKEN.split(text) if t]
    pos = 0

    def seq(stops: tuple[str, ...]) -> tuple:
        nonlocal pos
        out: list = []
        while pos < len(tokens) and tokens[pos] not in stops:
            tok = tokens[pos]
            pos += 1
            if tok == "[":
                out.append(("o", closed(seq(("]",)), "[")))
            elif tok == "<":
                alts = [seq(("|", ">"))]
                while pos < len(tokens) and tokens[pos] == "|":
                    pos += 1
                    alts.append(seq(("|", ">")))
                out.append(("a", closed(tuple(alts), "<")))
            elif tok in ("]", ">"):
                raise ValueError(f"unbalanced {tok!r} in template {text!r}")
            elif m := _SLOT.fullmatch(tok):
                out.append(("s", m[2], int(m[3]) if m[3] else None, bool(m[1])))
            else:
                out.append(("t", tok))  # words, or a '|' outside <...>
        return tuple(out)

    def closed(nodes: tuple, opener: str) -> tuple:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"unclosed {opener} in template {text!r}")
        pos += 1  # past the closing ] or >
        return nodes

    return seq(())


def render(nodes: tuple, lookup: Callable[[str, int | None], Slot], rng: random.Random) -> tuple[str, list]:
    """(text, mentioned [(slot name, call index or None)] in order of appearance)."""
    parts: list[str] = []
    mentioned: list = []

    def walk(ns):
        for n in ns:
            if n[0] == "t":
                parts.append(n[1])
            elif n[0] == "s":
                t = lookup(n[1], n[2]).text
                parts.append(t[:1].upper() + t[1:] if n[3] else t)
                if (n[1], n[2]) not in mentioned:
                    mentioned.append((n[1], n[2]))
            elif n[0] == "o":
                if rng.random() < 0.5:
                    walk(n[1])
            else:
                walk(n[1][rng.randrange(len(n[1]))])

    walk(nodes)
    text = re.sub(r"[ \t]+", " ", "".join(parts)).strip()
    return text[:1].upper() + text[1:], mentioned


def calls_in(text: str) -> int:
    """How many calls a parallel template asks for: its highest `{slot.k}`."""
    return max([1, *(int(k) for k in re.findall(r"\{\^?\w+\.(\d)\}", text))])


def args_for(call: int, mentioned: list, samples: list[dict[str, Slot]]) -> dict:
    """Arguments of call `call` (1-based): its slots ({x.k}) and the shared ones ({x}), in mention order."""
    args: dict = {}
    for name, k in mentioned:
        slot = samples[(k or 1) - 1][name]
        if slot.arg and k in (None, call):
            value = copy.deepcopy(slot.value)
            args.update(value if slot.arg == "*" else {slot.arg: value})
    return args


# ---------------------------------- values for user catalogs, from each parameter's JSON Schema
class ShortXeger(rstr.Rstr):
    """rstr's sampler on our rng, open repeats (+, *, {2,}) at most 3 beyond their minimum (rstr: 100)."""

    def _handle_repeat(self, start_range: int, end_range: int, value: str) -> str:
        return super()._handle_repeat(start_range, min(end_range, start_range + 3), value)


def pattern_sample(pattern: str, rng: random.Random) -> str:
    try:
        return ShortXeger(rng).xeger(pattern)
    except Exception as e:  # rstr has no error type of its own for constructs it cannot draw
        raise KitError(f"cannot draw a value for the schema pattern {pattern!r}: {e}") from None


def string_value(schema: dict, c: Ctx) -> str:
    fmt, r = schema.get("format"), c.rng
    if fmt == "date":
        return (c.today + dt.timedelta(days=r.randint(1, 60))).isoformat()
    if fmt == "date-time":
        day = (c.today + dt.timedelta(days=r.randint(1, 30))).isoformat()
        return f"{day}T{r.randint(7, 20):02d}:{r.choice([0, 30]):02d}:00Z"
    if fmt == "time":
        return f"{r.randint(7, 20):02d}:{r.choice([0, 15, 30, 45]):02d}"
    if fmt == "email":
        return si.email_address(c)[1]
    if fmt in ("uri", "url"):
        return f"https://www.{c.pick('domains')}/{c.choice(si.POOLS['url_paths'])}"
    if fmt == "uuid":
        return "-".join(si.hex_id(c, k) for k in (8, 4, 4, 4, 12))
    if fmt == "ipv4":
        return ".".join(str(r.randint(1, 254)) for _ in range(4))
    return c.pick("words")


def number_value(schema: dict, integer: bool, c: Ctx) -> int | float:
    """A number within the schema's bounds (1..100 where it sets none), on its `multipleOf` grid."""
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if "exclusiveMinimum" in schema:
        lo = schema["exclusiveMinimum"] + (1 if integer else 0.01)
    if "exclusiveMaximum" in schema:
        hi = schema["exclusiveMaximum"] - (1 if integer else 0.01)
    if lo is None:
        lo = 1 if hi is None or hi >= 1 else hi - 99
    if hi is None:
        hi = max(100, lo + 10)
    if step := schema.get("multipleOf"):
        v = c.rng.randint(math.ceil(lo / step), math.floor(hi / step)) * step
        return int(v) if integer or float(v).is_integer() else round(v, 6)
    return c.rng.randint(math.ceil(lo), math.floor(hi)) if integer else round(c.rng.uniform(lo, hi), 2)


def sample_value(schema: dict, name: str, c: Ctx, depth: int = 0) -> Any:
    """A value a JSON Schema accepts (user catalogs): const/enum/examples first, then type rules."""
    if depth > 6:
        raise ValueError(f"schema for {name!r} nests too deeply")
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return c.choice(schema["enum"])
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return copy.deepcopy(c.choice(schema["examples"]))
    for key in ("anyOf", "oneOf"):
        if isinstance(options := schema.get(key), list) and options:
            branches = [b for b in options if isinstance(b, dict) and b.get("type") != "null"] or options
            return sample_value(c.choice(branches), name, c, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        return sample_value({k: v for b in schema["allOf"] for k, v in b.items()}, name, c, depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    if t is None:
        t = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if t == "boolean":
        return c.chance(0.5)
    if t in ("integer", "number"):
        return number_value(schema, t == "integer", c)
    if t == "array":
        lo = schema.get("minItems", 1)
        want = c.rng.randint(lo, max(lo, min(schema.get("maxItems", lo + 2), lo + 2)))
        items = schema["items"] if isinstance(schema.get("items"), dict) else {"type": "string"}
        out: list = []
        for _ in range(50):  # draws, not items: unique items may run out
            if len(out) >= want:
                break
            v = sample_value(items, name, c, depth + 1)
            if v not in out or not schema.get("uniqueItems"):
                out.append(v)
        return out
    if t == "object":
        required = set(schema.get("required") or [])
        return {k: sample_value(sub if isinstance(sub, dict) else {}, k, c, depth + 1)
                for k, sub in (schema.get("properties") or {}).items()
                if k in required or c.chance(0.35 if depth == 0 else 0.25)}  # fmt: skip
    if t == "null":
        return None
    v = string_value(schema, c)
    if pattern := schema.get("pattern"):
        try:  # time-bounded as everywhere a catalog's pattern runs
            if not bounded_search(pattern, v):
                v = pattern_sample(pattern, c.rng)
        except (PatternTooSlow, regex.error) as e:
            raise ValueError(f"pattern {pattern!r} cannot be used: {type(e).__name__} {e}") from None
    v += "x" * (schema.get("minLength", 0) - len(v))
    return v[: schema["maxLength"]] if schema.get("maxLength") is not None else v


def _text_value(v: Any) -> str:
    """How a user would say a value: strings as written, booleans as yes/no, objects as JSON."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, str | int | float):
        return str(v)
    if isinstance(v, list) and all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in v):
        return si.join_words([str(x) for x in v])
    return json.dumps(v, ensure_ascii=False)


def _human(key: str) -> str:
    return key.replace("_", " ").replace("-", " ").strip()


def generic_intent(fn: dict) -> Intent:
    """An intent for any tool definition: schema-driven values and phrasings that state every value."""
    name = fn["name"]
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    first = (fn.get("description") or "").strip().split(". ")[0].rstrip(".").strip()
    desc = first[:1].lower() + first[1:] if first else f"run {_human(name)}"

    def sample(c: Ctx) -> dict[str, Slot]:
        for _ in range(30):
            args = sample_value(params, name, c)
            if not isinstance(args, dict):
                raise KitError(f"tool {name!r}: parameters must describe an object")
            if not argument_errors(params, args):
                break
        else:
            errs = "; ".join(argument_errors(params, args))
            raise KitError(f"tool {name!r}: cannot generate arguments that pass its schema ({errs}); "
                           "add `enum` or `examples` to the parameters that fail")  # fmt: skip
        said = [(_human(k), _text_value(v)) for k, v in args.items()]
        as_json = [(k, json.dumps(v, ensure_ascii=False)) for k, v in args.items()]
        kv = {}
        for key, form in GENERIC["values_said"].items():
            parts = [form["each"].format(k=k, v=v) for k, v in (as_json if form.get("json") else said)]
            kv[key] = si.join_words(parts, form["last"]) if "last" in form else form["sep"].join(parts)
        return {**{k: Slot(t, "*", args) for k, t in kv.items()}, "tool": Slot(_human(name)), "name": Slot(name),
                "desc": Slot(desc)}  # fmt: skip

    def execute(c: Ctx, args: dict) -> dict:
        return {"status": "success", "reference": f"{name[:3]}_{si.hex_id(c, 8)}", "input": args}

    def summarize(c: Ctx, args: dict, result: dict) -> str:
        reply = c.choice(GENERIC["replies"])
        return reply.format(tool=_human(name), name=name, reference=result["reference"])

    if params.get("properties"):
        return Intent(name, desc, sample, GENERIC["templates"], execute, summarize, GENERIC["parallel"])
    return Intent(name, desc, sample, GENERIC["templates_noargs"], execute, summarize)


# ------------------------------------------------------------------------------------- catalogs
@dataclass
class Catalog:
    names: list[str]  # the catalog names / paths, for the report
    tools: dict[str, dict]  # name -> OpenAI tool definition, in catalog order
    intents: dict[str, Intent]
    source: dict[str, str]  # tool name -> catalog it came from (distractors prefer the same one)
    generic: set[str] = field(default_factory=set)  # tools phrased generically (user catalogs)

    def chains(self) -> list[Chain]:
        """The shipped multi-step chains whose tools are all here as shipped."""
        shipped = set(self.tools) - self.generic
        return [ch for ch in si.CHAINS.values() if set(ch.tools) <= shipped]


def _read_tools(path: Path) -> list:
    try:
        data = json.loads(read_text_input(path))  # a folder or non-UTF-8 text: a DataError naming it
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"invalid JSON: {e.msg}") from e
    except (ValueError, RecursionError) as e:
        raise DataError(path, None, f"not a usable JSON catalog: {e}") from None
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list) or not data:
        raise DataError(path, None, "a catalog is a non-empty JSON list of OpenAI tool definitions")
    return data


def load_catalog(spec: str = DEFAULT_CATALOG) -> Catalog:
    """`general`, `customer_service`, a path to a JSON list of OpenAI tools, or several joined by commas."""
    shipped = {name: _read_tools(CATALOG_DIR / f"{name}.json") for name in SHIPPED_CATALOGS}
    shipped_defs = {tool_name(t): t for tools in shipped.values() for t in tools}
    cat = Catalog([], {}, {}, {})
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        path = CATALOG_DIR / f"{item}.json" if item in shipped else Path(item)
        if not path.exists():
            if path.suffix == ".json":
                raise DataError(path, None, "catalog file not found")
            known = ", ".join(SHIPPED_CATALOGS)
            raise KitError(f"unknown catalog {item!r}: use {known} or a path to a JSON file")
        tools = shipped[item] if item in shipped else _read_tools(path)
        if problems := check_tools(tools)[1]:
            raise DataError(path, None, str(problems[0]))
        cat.names.append(item)
        for t in tools:
            name = tool_name(t)
            if name in cat.tools:
                raise KitError(f"tool {name!r} is defined by more than one catalog in {spec!r}")
            cat.tools[name], cat.source[name] = t, item
            if shipped_defs.get(name) == t and name in si.INTENTS:
                cat.intents[name] = si.INTENTS[name]
            else:  # a user's tool (or an edited copy of ours): values come from its schema
                cat.intents[name] = generic_intent(t["function"])
                cat.generic.add(name)
    if not cat.tools:
        raise KitError(f"catalog {spec!r} has no tools")
    return cat


# ------------------------------------------------------------------------------------------ mix
def parse_mix(mix: str | dict | None) -> dict[str, float]:
    """`no_call=0.15,decline=0.1,...` -> shares; keys not given keep their defaults; singles take the rest."""
    out, keys = dict(DEFAULT_MIX), ", ".join(DEFAULT_MIX)
    if isinstance(mix, str):
        parts = [p.strip() for p in mix.split(",") if p.strip()]
        if bad := [p for p in parts if "=" not in p]:
            raise KitError(f"--mix entry {bad[0]!r} must look like KEY=SHARE (keys: {keys})")
        items = [(key.strip(), val.strip()) for key, _, val in (p.partition("=") for p in parts)]
    else:
        items = list((mix or {}).items())
    for key, val in items:
        if key not in DEFAULT_MIX:
            raise KitError(f"--mix: unknown key {key!r} (known: {keys}; single calls take the rest)")
        try:
            share = float(val)
        except (TypeError, ValueError) as e:
            raise KitError(f"--mix: {key}={val!r} is not a number") from e
        if math.isnan(share) or not 0 <= share <= 1:
            raise KitError(f"--mix: {key}={share} must be between 0 and 1")
        out[key] = share
    if (total := sum(out.values())) > 1 + 1e-9:
        given = ", ".join(f"{k}={v:g}" for k, v in out.items())
        raise KitError(f"--mix: shares sum to {total:g} > 1 ({given}); lower one of them")
    return out


def mix_counts(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Exact counts per kind summing to `n` (largest remainders; single calls take what is left)."""
    raw = {k: mix[k] * n for k in DEFAULT_MIX}
    base = {k: math.floor(raw[k] + 1e-9) for k in raw}
    target = min(n, round(sum(raw.values())))
    order = sorted(raw, key=lambda k: (-(raw[k] - base[k]), list(DEFAULT_MIX).index(k)))
    for k in order[: max(0, target - sum(base.values()))]:
        base[k] += 1
    return {SINGLE_CALL: n - sum(base.values()), **{MIX_KIND[k]: base[k] for k in DEFAULT_MIX}}


# ---------------------------------------------------------------------------- building examples
def exchange(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def join_requests(joiner: dict, parts: list[str]) -> str:
    """Several requests as one message (a `joiners` entry of dialogue.yaml)."""
    items = [joiner.get("item", "{text}").format(text=p, n=i, ordinal=o)
             for i, (p, o) in enumerate(zip(parts, si.DIALOGUE["ordinals"], strict=False), 1)]  # fmt: skip
    return joiner.get("before", "") + joiner["sep"].join(items)


def chars(messages: list[dict]) -> int:
    return sum(len(json.dumps(m, ensure_ascii=False)) for m in messages)


@dataclass
class Draft:  # one example before it becomes a record (the offered tools and system prompt come last)
    kind: str
    messages: list[dict]
    needed: list[str]  # tools that must be offered
    template_ids: list[str]
    needs_today: bool = False
    offer_min: int = 0  # offer at least this many tools
    topic: list[str] | None = None  # whose catalog picks the system prompt (default: needed, else offered)
    tool_order: list[str] | None = None  # a fixed offered list (declines, "what can you do", partners)


class Said(NamedTuple):  # a request for one tool, rendered from one of its templates
    text: str
    args: dict
    template: Template
    needs_today: bool
    slots: list[Slot]  # the slots the words mention


class Generator:
    """Builds drafts of each kind from the catalog's intents and the split's share of every template group."""

    def __init__(self, cat: Catalog, side: str, fraction: float, holdout_seed: int, max_tools: int):
        self.cat, self.side, self.max_tools = cat, side, max_tools
        self.fraction, self.holdout_seed = fraction, holdout_seed
        self._templates: dict[str, list[Template]] = {}

    # --- the split's share of phrasings and dialogue (train, dev, eval: disjoint, see `si.on_side`)
    def items(self, group: str, items: list) -> list[tuple[str, Any]]:
        """(id, item) of a group that is not templates (chat pairs, system prompts, joiners)."""
        keep = si.on_side(f"tpl:{group}", len(items), self.fraction, self.holdout_seed, self.side)
        return [(f"{group}/{i + 1:02d}", items[i]) for i in keep]

    def templates(self, group: str, texts: list[str]) -> list[Template]:
        if group not in self._templates:
            self._templates[group] = [Template(i, t, parse_template(t)) for i, t in self.items(group, texts)]
        return self._templates[group]

    def dialogue(self, group: str, key: str | None = None) -> list[tuple[str, Any]]:
        return self.items(group, si.DIALOGUE[key or group])

    def single_templates(self, tool: str) -> list[Template]:
        texts = self.cat.intents[tool].templates
        if tool not in self.cat.generic:
            return self.templates(tool, texts)
        return self.templates("generic" if texts is GENERIC["templates"] else "generic0", texts)

    def parallel_templates(self, tool: str) -> list[Template]:
        texts = self.cat.intents[tool].parallel
        group = "generic_par" if tool in self.cat.generic else f"par.{tool}"
        return self.templates(group, texts) if texts else []

    def callable_tools(self) -> list[str]:
        tools = [t for t in self.cat.tools if self.single_templates(t)]
        if not tools:
            raise KitError(f"no phrasing templates left for split {self.side!r}; lower --holdout-fraction")
        return tools

    # --- shared pieces
    def ctx(self, rng: random.Random) -> Ctx:
        today = dt.date(2026, 1, 5) + dt.timedelta(days=rng.randrange(340))
        return Ctx(rng, today, self.side, self.fraction, self.holdout_seed)

    def affinity(self, tools: list[str]) -> str:
        """Which system prompts fit these tools: any | general | customer_service."""
        if any(t in self.cat.generic for t in tools):
            return "any"
        srcs = {self.cat.source[t] for t in tools}
        return srcs.pop() if len(srcs) == 1 else "any"

    def render_single(self, c: Ctx, tool: str) -> Said:
        tpl = c.choice(self.single_templates(tool))
        slots = self.cat.intents[tool].sample(c)
        text, mentioned = render(tpl.nodes, lambda name, k: slots[name], c.rng)
        today = any(slots[nm].needs_today for nm, _ in mentioned)
        return Said(text, args_for(1, mentioned, [slots]), tpl, today, [slots[nm] for nm, _ in mentioned])

    def request(self, c: Ctx, tool: str) -> Said:
        said = self.render_single(c, tool)
        return said._replace(text=self.decorate(c, said.text, said.slots))

    def decorate(self, c: Ctx, text: str, mentioned: list[Slot]) -> str:
        if c.chance(P_GREETING):
            text = c.choice(si.DIALOGUE["greetings"]) + text
        # A closing "Thanks!" right after a value the user dictates (an e-mail body) would read as part of it.
        if c.chance(P_THANKS) and not any(s.text and text.endswith(s.text) for s in mentioned):
            text += c.choice(si.DIALOGUE["thanks"])
        return text

    def call_turn(
        self, c: Ctx, calls: list[tuple[str, dict]], results: list | None, final: str | None
    ) -> list:
        ids: list[str] = []
        while len(ids) < len(calls):
            cid = "call_" + "".join(c.choice(string.ascii_letters + string.digits) for _ in range(8))
            if cid not in ids:
                ids.append(cid)
        tcs = [make_call(name, args, cid) for cid, (name, args) in zip(ids, calls, strict=True)]
        msgs: list[dict] = [{"role": "assistant", "content": None, "tool_calls": tcs}]
        if results is not None:
            msgs += [{"role": "tool", "tool_call_id": cid, "name": name, "content": json.dumps(r, ensure_ascii=False)}
                     for (name, _), cid, r in zip(calls, ids, results, strict=True)]  # fmt: skip
            if final:
                msgs.append({"role": "assistant", "content": final})
        return msgs

    def results(self, c: Ctx, calls: list[tuple[str, dict]]) -> list[dict] | None:
        out = []
        for name, args in calls:
            r = self.cat.intents[name].execute(c, args)
            if r is None:  # no plausible fake result (e.g. a translation we have no text for)
                return None
            out.append(r)
        return out

    def summaries(self, c: Ctx, calls: list[tuple[str, dict]], results: list[dict]) -> str:
        said = [self.cat.intents[t].summarize(c, a, r) for (t, a), r in zip(calls, results, strict=True)]
        return " ".join(said)

    # --- kinds
    def single(
        self, c: Ctx, tool: str | None = None, said: Said | None = None, result: bool | None = None
    ) -> Draft:
        """A single call (to `tool`, else any); `said`: a declined request, word for word, for its partner."""
        partner = said is not None
        tool = tool or c.choice(self.callable_tools())
        said = said or self.request(c, tool)
        calls = [(tool, said.args)]
        wanted = c.chance(P_RESULT_SINGLE) if result is None else result
        res = self.results(c, calls) if wanted else None
        final = self.summaries(c, calls, res) if res else None
        msgs: list[dict] = []
        tids = [said.template.id]
        if not partner and self.dialogue("chat") and c.chance(P_PREAMBLE):
            qid, msgs = self.chat(c)
            tids.append(qid)
        msgs += [{"role": "user", "content": said.text}, *self.call_turn(c, calls, res, final)]
        return Draft(SINGLE_CALL, msgs, [tool], tids, said.needs_today)

    def parallel(self, c: Ctx) -> Draft:
        same = [t for t in self.cat.tools if self.parallel_templates(t)]
        if same and (len(self.cat.tools) < 2 or c.chance(0.5)):
            for _ in range(20):
                if d := self._parallel_same(c, c.choice(same)):
                    return d
        return self._parallel_mixed(c)

    def _parallel_same(self, c: Ctx, tool: str) -> Draft | None:
        tpl = c.choice(self.parallel_templates(tool))
        k = calls_in(tpl.text)
        samples = [self.cat.intents[tool].sample(c) for _ in range(k)]
        text, mentioned = render(tpl.nodes, lambda name, kk: samples[(kk or 1) - 1][name], c.rng)
        calls = [(tool, args_for(i + 1, mentioned, samples)) for i in range(k)]
        if any(calls[i][1] == calls[j][1] for i in range(k) for j in range(i)):
            return None  # two identical calls (same city drawn twice): draw again
        slots = [samples[(kk or 1) - 1][nm] for nm, kk in mentioned]
        text = self.decorate(c, text, slots)
        return self._parallel_draft(c, text, calls, [tpl.id], any(s.needs_today for s in slots))

    def _parallel_mixed(self, c: Ctx) -> Draft:
        tools = self.callable_tools()
        m = 3 if (len(tools) >= 3 and self.max_tools >= 3 and c.chance(0.3)) else 2
        chosen = c.rng.sample(tools, m) if len(tools) >= m else [tools[0]] * m
        parts, calls, tids, today = [], [], [], False
        for t in chosen:
            for _ in range(20):
                text, args, tpl, td, _ = self.render_single(c, t)
                if (t, args) not in calls:
                    break
            parts.append(text)
            calls.append((t, args))
            tids.append(tpl.id)
            today |= td
        jid, joiner = c.choice(self.dialogue("join", "joiners"))
        return self._parallel_draft(c, join_requests(joiner, parts), calls, [jid, *tids], today)

    def _parallel_draft(self, c: Ctx, text: str, calls: list, tids: list[str], today: bool) -> Draft:
        res = self.results(c, calls) if c.chance(P_RESULT_PARALLEL) else None
        final = self.summaries(c, calls, res) if res else None
        msgs = [{"role": "user", "content": text}, *self.call_turn(c, calls, res, final)]
        needed = list(dict.fromkeys(t for t, _ in calls))
        return Draft(PARALLEL_CALLS, msgs, needed, tids, today)

    def multi_step(self, c: Ctx) -> Draft:
        chains = [ch for ch in self.cat.chains() if self.templates(f"chain.{ch.name}", ch.templates)]
        if self.cat.generic and self.dialogue("seq", "seq_joiners") and (not chains or c.chance(0.5)):
            return self._multi_seq(c)
        if not chains:
            names = ",".join(self.cat.names)
            raise KitError(f"no multi-step chain fits catalog {names!r} on split {self.side!r}")
        ch = c.choice(chains)
        tpl = c.choice(self.templates(f"chain.{ch.name}", ch.templates))
        slots = ch.sample(c)
        text, mentioned = render(tpl.nodes, lambda name, k: slots[name], c.rng)
        text = self.decorate(c, text, [slots[nm] for nm, _ in mentioned])
        turns, final = ch.run(c, slots, {nm for nm, _ in mentioned})
        msgs: list[dict] = [{"role": "user", "content": text}]
        for steps in turns:
            msgs += self.call_turn(c, [(t, a) for t, a, _ in steps], [r for _, _, r in steps], None)
        msgs.append({"role": "assistant", "content": final})
        today = any(slots[nm].needs_today for nm, _ in mentioned)
        return Draft(MULTI_STEP, msgs, list(ch.tools), [tpl.id], today)

    def _multi_seq(self, c: Ctx) -> Draft:
        """User catalogs: two requests done one after the other (their results do not feed each other)."""
        tools = self.callable_tools()
        for _ in range(20):
            pair = c.rng.sample(tools, 2) if len(tools) >= 2 else [tools[0], tools[0]]
            first, second = (self.render_single(c, t) for t in pair)
            calls = [(pair[0], first.args), (pair[1], second.args)]
            if (res := self.results(c, calls)) is not None:  # both tools have a plausible fake result
                break
        else:
            raise RuntimeError("synth: no pair of tools with fake results for a sequential example")
        jid, joiner = c.choice(self.dialogue("seq", "seq_joiners"))
        msgs: list[dict] = [{"role": "user", "content": joiner.format(first.text, second.text)}]
        for call, r in zip(calls, res, strict=True):
            msgs += self.call_turn(c, [call], [r], None)
        msgs.append({"role": "assistant", "content": self.summaries(c, calls, res)})
        needed = list(dict.fromkeys(pair))
        tids = [jid, first.template.id, second.template.id]
        return Draft(MULTI_STEP, msgs, needed, tids, first.needs_today or second.needs_today)

    def clarifications(self, offered: list[str] | dict) -> list[tuple[str, Any]]:
        """Requests missing a required value of an offered shipped tool (`dialogue.yaml` clarify)."""
        clar = self.dialogue("clarify")
        return [(i, it) for i, it in clar if it[0] in offered and it[0] not in self.cat.generic]

    def no_call(self, c: Ctx) -> Draft:
        clar, whatcan = self.clarifications(self.cat.tools), self.dialogue("whatcan", "what_can")
        r = c.rng.random()
        if clar and r < 0.3:  # the tool is offered but a required value is missing: ask, do not call
            cid, tool, msgs = self.clarification(c, clar)
            return Draft(NO_CALL, msgs, [tool], [cid])
        if whatcan and r < 0.5:  # the answer names the offered tools, so they are fixed here
            wid, q = c.choice(whatcan)
            offered = self.offer(c, [], set(), 1)
            caps = si.join_words([self.cat.intents[t].capability for t in offered])
            msgs = exchange(q, c.choice(si.DIALOGUE["what_can_answers"]).format(caps=caps))
            return Draft(NO_CALL, msgs, [], [wid], tool_order=offered)
        qid, msgs = self.chat(c)
        return Draft(NO_CALL, msgs, [], [qid], offer_min=1)

    def declined(self, c: Ctx, partner: bool) -> tuple[Draft, Draft | None]:
        """A request whose tool is not offered; with `partner`, the same request with its tool offered."""
        oos = self.dialogue("oos", "out_of_scope")
        withheld = [t for t in self.callable_tools() if set(self.cat.tools) - self.serving(t)]
        if not withheld or (oos and c.chance(P_OUT_OF_SCOPE)):
            oid, (req, cap) = c.choice(oos)
            offered = self.offer(c, [], set(), 1)
            msgs = exchange(req, self.decline_reply(c, cap, offered))
            return Draft(DECLINED, msgs, [], [oid], tool_order=offered), None
        tool = c.choice(withheld)
        said = self.request(c, tool)
        offered = self.offer(c, [], self.serving(tool), 1)
        msgs = exchange(said.text, self.decline_reply(c, self.cat.intents[tool].capability, offered))
        d = Draft(DECLINED, msgs, [], [said.template.id], said.needs_today, tool_order=offered, topic=[tool])
        if not partner:
            return d, None
        p = self.single(c, tool, said)
        keep = list(offered)
        while len(keep) + 1 > self.max_tools:
            keep.pop(c.rng.randrange(len(keep)))
        p.tool_order = [*keep, tool]
        c.rng.shuffle(p.tool_order)
        return d, p

    def session(self, c: Ctx) -> Draft:
        """Several requests under one offered tool set: one anchor (a single call, parallel calls or a chain)
        among calls to the offered tools, chit-chat, clarifications and declines naming what is offered."""
        r = c.rng.random()
        anchor = self.multi_step(c) if r < 0.35 else self.parallel(c) if r < 0.55 else self.single(c)
        offered = self.offer(c, anchor.needed, set(), 1)
        callable_ = [t for t in offered if self.single_templates(t)]
        blocked = set().union(*(self.serving(t) for t in offered))
        withheld = [t for t in self.callable_tools() if t not in blocked]
        clar, oos = self.clarifications(offered), self.dialogue("oos", "out_of_scope")
        exchanges: list[tuple[list[dict], list[str], bool]] = []  # (messages, template ids, needs today)
        size = chars(anchor.messages)
        for _ in range(c.rng.randint(*SESSION_TURNS) - 1):
            if size > SESSION_CHARS:
                break  # keep the whole conversation within the sequence length with three tools offered
            r = c.rng.random()
            ex: tuple[list[dict], list[str], bool] | None = None
            if r < 0.4 and callable_:  # a call to an offered tool, with its result and a summary
                d = self.single(c, c.choice(callable_), result=True)
                if any(m["role"] == "tool" for m in d.messages):  # else: no plausible fake result
                    ex = (d.messages, d.template_ids, d.needs_today)
            elif r < 0.65 and withheld:  # the needed tool is not offered: decline, name what is
                tool = c.choice(withheld)
                text, _, tpl, td, mentioned = self.render_single(c, tool)
                reply = self.decline_reply(c, self.cat.intents[tool].capability, offered)
                ex = (exchange(self.decorate(c, text, mentioned), reply), [tpl.id], td)
            elif r < 0.75 and clar:  # the tool is offered but a required value is missing: ask
                cid, _, msgs = self.clarification(c, clar)
                ex = (msgs, [cid], False)
            elif r < 0.87 and oos:  # nothing in the catalog could do it
                oid, (req, cap) = c.choice(oos)
                ex = (exchange(req, self.decline_reply(c, cap, offered)), [oid], False)
            if ex is None:
                qid, msgs = self.chat(c)
                ex = (msgs, [qid], False)
            exchanges.append(ex)
            size += chars(ex[0])
        # An anchor that ends at its call (no results yet) must come last; otherwise anywhere.
        at = len(exchanges) if anchor.messages[-1].get("tool_calls") else c.rng.randint(0, len(exchanges))
        exchanges.insert(at, (anchor.messages, anchor.template_ids, anchor.needs_today))
        msgs = [m for ex in exchanges for m in ex[0]]
        tids = [t for ex in exchanges for t in ex[1]]
        return Draft(classify({"messages": msgs}), msgs, [], tids, any(ex[2] for ex in exchanges),
                     tool_order=offered)  # fmt: skip

    def chat(self, c: Ctx) -> tuple[str, list[dict]]:
        """(template id, [user, assistant]): chit-chat that needs no tool."""
        qid, (q, a) = c.choice(self.dialogue("chat"))
        return qid, exchange(q, a)

    def clarification(self, c: Ctx, clar: list) -> tuple[str, str, list[dict]]:
        """(template id, tool, [user, assistant]): a request missing a required value, answered by asking."""
        cid, (tool, user, answer) = c.choice(clar)
        slots = self.cat.intents[tool].sample(c)
        u, _ = render(parse_template(user), lambda name, k: slots[name], c.rng)
        a, _ = render(parse_template(answer), lambda name, k: slots[name], c.rng)
        return cid, tool, exchange(u, a)

    def serving(self, tool: str) -> set[str]:
        """The tool and those that could serve its requests: none of them is offered when declining it."""
        return {tool} | si.SUBSTITUTES.get(tool, set())

    def decline_reply(self, c: Ctx, cap: str, offered: list[str]) -> str:
        offered_caps = si.join_words([self.cat.intents[t].capability for t in offered], "or")
        return c.choice(si.DIALOGUE["decline_replies"]).format(cap=cap, offered=offered_caps)

    def offer(self, c: Ctx, needed: list[str], exclude: set[str], at_least: int = 0) -> list[str]:
        """The needed tools plus distractors (same catalog preferred: harder to tell apart), shuffled."""
        room = max(0, self.max_tools - len(needed))
        pool = [t for t in self.cat.tools if t not in needed and t not in exclude]
        k = min(len(pool), c.rng.randint(min(at_least, room), room))
        srcs = {self.cat.source[t] for t in needed}
        chosen: list[str] = []
        while len(chosen) < k:
            rest = [t for t in pool if t not in chosen]
            same = [t for t in rest if self.cat.source[t] in srcs]
            chosen.append(c.choice(same if same and c.chance(0.75) else rest))
        order = needed + chosen
        c.rng.shuffle(order)
        return order

    def system(self, c: Ctx, d: Draft) -> tuple[str | None, str | None]:
        # A prompt fits any catalog, or only the one that all the (shipped) tools come from.
        fits = ("any", self.affinity(d.topic or d.needed or d.tool_order or []))
        prompts = [(i, t) for i, (aff, t) in self.dialogue("system", "system_prompts") if aff in fits]
        text, pid = None, None
        if prompts and not c.chance(P_NO_SYSTEM):
            pid, text = c.choice(prompts)
        if d.needs_today or c.chance(P_DATE_LINE):  # "tomorrow" means nothing without today's date
            line = c.choice(si.DIALOGUE["date_lines"]).format(date=c.today)
            text = f"{text} {line}" if text else line
        return text, pid

    def finish(self, c: Ctx, d: Draft) -> Record:
        offered = d.tool_order or self.offer(c, d.needed, set(), d.offer_min)
        system, pid = self.system(c, d)
        msgs = ([{"role": "system", "content": system}] if system else []) + d.messages
        tids = ([pid] if pid else []) + d.template_ids
        return {"kind": d.kind, "tools": [copy.deepcopy(self.cat.tools[t]) for t in offered], "messages": msgs,
                "template_ids": tids}  # fmt: skip


def _check(record: Record) -> None:
    """Generation asserts its own output: a failure here is a bug in synth, not in the user's data."""
    if problems := validate_record(record):
        raise RuntimeError(f"synth produced an invalid record ({record.get('template_ids')}): {problems[0]}")
    structural = classify({k: v for k, v in record.items() if k != "kind"})
    if structural != (NO_CALL if record["kind"] == DECLINED else record["kind"]):
        raise RuntimeError(
            f"synth built a {structural} record labelled {record['kind']} ({record['template_ids']})"
        )


def generate(
    n: int = 2000,
    seed: int = 0,
    catalog: str = DEFAULT_CATALOG,
    mix: str | dict | None = None,
    split: str = "all",
    holdout_fraction: float = 0.2,
    holdout_seed: int = 0,
    max_tools: int = 3,
    contrast: float = 1.0,
) -> tuple[list[Record], dict]:
    """`n` validated records and a report (counts per kind and per tool). Same arguments, same records.
    `split`: see `si.on_side` (`holdout_seed`, not `seed`, picks the held-out share). `contrast`: the share of
    withheld-tool declines paired with the same request, tool offered (counted as a single call)."""
    if n < 1:
        raise KitError(f"--n must be at least 1, got {n}")
    if split not in SPLITS:
        raise KitError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0 <= holdout_fraction < 1:
        raise KitError(f"--holdout-fraction must be in [0, 1), got {holdout_fraction}")
    if split != "all" and holdout_fraction <= 0:
        raise KitError(f"--split {split} needs --holdout-fraction > 0")
    if max_tools < 2:
        raise KitError(
            f"--max-tools must be at least 2 (parallel and multi-step examples need two), got {max_tools}"
        )
    if not 0 <= contrast <= 1:
        raise KitError(f"--contrast must be in [0, 1], got {contrast}")
    shares = parse_mix(mix)
    counts = mix_counts(n, shares)
    cat = load_catalog(catalog)
    gen = Generator(cat, split, holdout_fraction, holdout_seed, max_tools)
    rng = random.Random(seed)

    def sub() -> Ctx:  # one rng per example: a retry inside one example cannot shift the others
        return gen.ctx(random.Random(rng.getrandbits(64)))

    drafts: list[tuple[Draft, Ctx]] = []
    pairs = 0
    singles_left = counts[SINGLE_CALL]
    for _ in range(counts[DECLINED]):
        c = sub()
        d, p = gen.declined(c, singles_left > 0 and c.chance(contrast))
        drafts.append((d, c))
        if p is not None:
            drafts.append((p, c))
            singles_left -= 1
            pairs += 1
    for build, k in ((gen.no_call, counts[NO_CALL]), (gen.parallel, counts[PARALLEL_CALLS]),
                     (gen.multi_step, counts[MULTI_STEP]), (gen.single, singles_left),
                     (gen.session, counts[SESSION])):  # fmt: skip
        for _ in range(k):
            c = sub()
            drafts.append((build(c), c))

    records = [gen.finish(c, d) for d, c in drafts]
    rng.shuffle(records)
    prefix = f"synth-{seed}" if split == "all" else f"synth-{split}-{seed}"
    out = [{"id": f"{prefix}-{i:06d}", **rec} for i, rec in enumerate(records)]
    for rec in out:
        _check(rec)
    report = _report(out, seed, split, cat, shares, pairs, max_tools)
    report["sessions"] = counts[SESSION]  # counted above by their calls' kind as well
    return out, report


def _report(
    records: list[Record], seed: int, split: str, cat: Catalog, shares: dict, pairs: int, max_tools: int
) -> dict:
    by_kind = Counter(r["kind"] for r in records)
    by_tool = Counter(name for r in records for m in r["messages"] for name, _ in calls_of(m))
    return {
        "n": len(records),
        "seed": seed,
        "split": split,
        "catalogs": cat.names,
        "tools_in_catalog": len(cat.tools),
        "max_tools": max_tools,
        "mix": shares,
        "by_kind": {
            k: by_kind.get(k, 0) for k in (SINGLE_CALL, PARALLEL_CALLS, MULTI_STEP, NO_CALL, DECLINED)
        },
        "by_tool": dict(sorted(by_tool.items())),
        "contrastive_pairs": pairs,
        "with_tool_results": sum(any(m["role"] == "tool" for m in r["messages"]) for r in records),
        "with_system_prompt": sum(r["messages"][0]["role"] == "system" for r in records),
        "distinct_templates": len({t for r in records for t in r["template_ids"]}),
    }


# -------------------------------------------------------------------------- teacher paraphrases
TEACHER_KEY_ENV = "TOOLCALL_KIT_TEACHER_API_KEY"


def _leaves(v: Any) -> list[Any]:
    if isinstance(v, dict | list):
        return [x for val in (v.values() if isinstance(v, dict) else v) for x in _leaves(val)]
    return [v]


def anchors_of(text: str, record: Record) -> list[tuple[str, bool]]:
    """Argument values the user's words state, as (value, case-sensitive): a paraphrase must keep them all
    ("in Fahrenheit" states "fahrenheit"; "Germany" does not state "DE": implied values are the teacher's)."""
    out: list[tuple[str, bool]] = []
    for v in (v for m in record["messages"] for _, args in calls_of(m) for v in _leaves(args)):
        s = str(v)
        if isinstance(v, bool) or v is None or (len(s) < 2 and not s.isdigit()):
            continue
        if s in text:
            out.append((s, True))
        elif s.lower() in text.lower():
            out.append((s, False))
    return list(dict.fromkeys(out))


def check_paraphrase(original: str, new: str, record: Record) -> str | None:
    """None if `new` may replace `original` in `record`, else the reason it may not."""
    if not new.strip():
        return "empty"
    if new.strip() == original.strip():
        return "unchanged"
    if len(new) > 3 * len(original) + 60:
        return "too_long"
    if "<tool_call>" in new or "<|" in new or "```" in new:
        return "markup"
    for value, exact in anchors_of(original, record):
        if (value not in new) if exact else (value.lower() not in new.lower()):
            return "dropped_value"
    return None


def teacher_key(url: str, api_key: str | None = None) -> str | None:
    """The key sent to the teacher: the one passed, else $TOOLCALL_KIT_TEACHER_API_KEY, never another
    program's (OPENAI_API_KEY is not read). A key never goes over plain http except to this machine."""
    key = api_key or os.environ.get(TEACHER_KEY_ENV) or None
    if not key:
        return None
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "https" and not loopback:
        raise KitError(f"--teacher-url {url}: refusing to send the API key over {parts.scheme or 'an unknown scheme'} "
                       "to a host that is not this machine; use https, or unset the key")  # fmt: skip
    return key


def paraphrase_with_teacher(
    records: list[Record],
    url: str,
    model: str,
    *,
    workers: int = 4,
    timeout: float = 60.0,
    api_key: str | None = None,
) -> tuple[list[Record], dict]:
    """(records, report): user turns of call examples that state argument values, paraphrased by an
    OpenAI-compatible endpoint (`workers` requests in flight). A paraphrase that drops a stated value or
    breaks the record is rejected: the original stays and the reason is counted."""
    from openai import Omit, OpenAI, OpenAIError

    from .evaluate import openai_base_url

    base = openai_base_url(url)
    key = teacher_key(base, api_key)
    # The client fills the key, organization, project and headers from OPENAI_* variables: send only ours.
    headers = {"Authorization": f"Bearer {key}" if key else Omit()}
    headers |= {"OpenAI-Organization": Omit(), "OpenAI-Project": Omit()}
    # A placeholder api_key only lets the client be built; the Authorization header above is what is sent.
    client = OpenAI(
        api_key=key or "unused", base_url=base, timeout=timeout, max_retries=0, default_headers=headers
    )
    out = copy.deepcopy(records)
    jobs: list[tuple[int, int, str]] = []  # (record, message, text)
    not_sent: Counter = Counter()
    for ri, r in enumerate(out):
        if r.get("kind") in (NO_CALL, DECLINED):
            not_sent["no_calls"] += 1
            continue
        for mi, m in enumerate(r["messages"]):
            if m["role"] == "user" and m.get("content"):
                if anchors_of(m["content"], r):
                    jobs.append((ri, mi, m["content"]))
                else:
                    not_sent["no_stated_values"] += 1

    def ask(job: tuple[int, int, str]) -> tuple[str | None, str | None]:
        text = job[2]
        try:
            resp = client.chat.completions.create(
                model=model, temperature=0.8, stream=False, extra_headers=headers,
                max_tokens=min(512, 16 + len(text)),  # a paraphrase needs about as many tokens as characters at most
                messages=[{"role": "system", "content": si.DIALOGUE["paraphrase_system"]}, {"role": "user", "content": text}],
            )  # fmt: skip
            return resp.choices[0].message.content or "", None
        except (OpenAIError, IndexError, AttributeError, TypeError, ValueError) as e:
            return None, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        answers = list(pool.map(ask, jobs))

    errors = [err for _, err in answers if err is not None]
    rejected = Counter({"http_error": len(errors)} if errors else {})
    for (ri, mi, original), (content, err) in zip(jobs, answers, strict=True):
        if err is not None:
            continue
        new = (content or "").strip()
        if len(new) > 1 and new[0] in '"\u201c' and new[-1] in '"\u201d' and original[:1] not in '"\u201c':
            new = new[1:-1].strip()  # a teacher that quotes its whole answer
        trial = copy.deepcopy(out[ri])
        trial["messages"][mi]["content"] = new
        reason = check_paraphrase(original, new, out[ri]) or (
            "invalid_record" if validate_record(trial) else None
        )
        if reason:
            rejected[reason] += 1
        else:
            out[ri] = trial
    endpoint = base + "/chat/completions"
    http_ok, accepted = len(jobs) - len(errors), len(jobs) - sum(rejected.values())
    if jobs and http_ok == 0:
        raise KitError(f"teacher at {endpoint} answered no request: {errors[0]}")
    return out, {
        "endpoint": endpoint,
        "model": model,
        "api_key_sent": bool(key),
        "requested": len(jobs),
        "http_ok": http_ok,
        "accepted": accepted,
        "kept_original": len(jobs) - accepted,
        "rejected_by_reason": dict(sorted(rejected.items())),
        "not_sent": dict(sorted(not_sent.items())),
    }


# ---------------------------------------------------------------------------------- entry point
def synth(
    out: str | os.PathLike,
    *,
    teacher_url: str | None = None,
    teacher_model: str | None = None,
    teacher_workers: int = 4,
    teacher_timeout: float = 60.0,
    teacher_api_key: str | None = None,
    **options: Any,
) -> dict:
    """Writes `generate(**options)` to `out` (paraphrased if a teacher is given); returns the report."""
    if bool(teacher_url) != bool(teacher_model):
        raise KitError("--teacher-url and --teacher-model go together")
    if teacher_url:
        from .evaluate import openai_base_url

        teacher_key(openai_base_url(teacher_url), teacher_api_key)  # refuse before generating, not after
    check_writable_file(out, "--out")
    records, report = generate(**options)
    if teacher_url:
        records, report["teacher"] = paraphrase_with_teacher(
            records, teacher_url, teacher_model or "", workers=teacher_workers, timeout=teacher_timeout,
            api_key=teacher_api_key,
        )  # fmt: skip
    try:
        write_jsonl(out, records)
    except OSError as e:
        raise KitError(f"--out {out}: cannot write: {e.strerror or e}") from None
    report["out"] = str(out)
    return report


def summary(report: dict) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in report["by_kind"].items())
    tools = ", ".join(f"{k} {v}" for k, v in report["by_tool"].items())
    lines = [
        f"wrote {report['n']} examples to {report.get('out', '-')} "
        f"(seed {report['seed']}, split {report['split']}, catalogs {'+'.join(report['catalogs'])})",
        f"kinds: {kinds}",
        f"calls per tool: {tools}",
        f"contrastive decline pairs {report['contrastive_pairs']}, with tool results {report['with_tool_results']}, "
        f"with a system prompt {report['with_system_prompt']}, distinct templates {report['distinct_templates']}",
    ]
    if t := report.get("teacher"):
        rej = ", ".join(f"{k} {v}" for k, v in t["rejected_by_reason"].items()) or "none"
        lines.append(f"teacher {t['model']}: {t['requested']} sent, {t['http_ok']} answered, {t['accepted']} accepted, "
                     f"{t['kept_original']} kept the original (rejected: {rej})")  # fmt: skip
    return "\n".join(lines)
