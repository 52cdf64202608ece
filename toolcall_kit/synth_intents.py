"""The shipped tools' value samplers, fake results and multi-step chains (drawn by `synth`); their words are
data in synth_data/ (pools, intents, chains and dialogue .yaml).

The shipped demo files reproduce byte for byte from their seeds: a change here that adds, drops or reorders
a random draw (an `rng` call, `choice`, `pick` or `chance`) changes them (tests/test_synth.py says so).
"""

from __future__ import annotations

import ast
import datetime as dt
import operator
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).parent / "synth_data"


def load_data(name: str) -> dict:
    with open(DATA_DIR / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


POOLS, TOOL_TEXT, CHAIN_TEXT, DIALOGUE = (load_data(n) for n in ("pools", "intents", "chains", "dialogue"))


@dataclass(frozen=True)
class Slot:
    text: str  # what the user says
    arg: str | None = None  # the argument it sets; "*": `value` is a dict of arguments; None: wording only
    value: Any = None
    needs_today: bool = False  # relative dates ("tomorrow") need today's date in the system prompt


def _share(key: str, items: list[int], k: int) -> set[int]:
    """`k` of `items`, leaving at least one, shuffled by `key` alone: the same share whatever `--seed`."""
    if len(items) < 2 or k < 1:
        return set()
    order = list(items)
    random.Random(key).shuffle(order)
    return set(order[: min(len(items) - 1, k)])


def on_side(name: str, size: int, fraction: float, holdout_seed: int, side: str) -> list[int]:
    """Indices of a pool or template group that split `side` may use. eval: a held-out share (`fraction`,
    chosen by `holdout_seed`); dev: a second share of the same size; train: the rest ("all": everything). A
    group too small for a dev share (under 3 items) lends dev its train items: never eval's."""
    if side == "all":
        return list(range(size))
    k = max(1, round(fraction * size)) if fraction > 0 else 0
    held = _share(f"holdout:{holdout_seed}:{name}", list(range(size)), k)
    if side == "eval":
        return sorted(held)
    rest = [i for i in range(size) if i not in held]
    dev = _share(f"dev:{holdout_seed}:{name}", rest, k)
    if side == "dev":
        return sorted(dev) if dev else rest
    return [i for i in rest if i not in dev]


class Ctx:
    """The per-example sampling toolbox: one seeded rng, today's date, split-aware value pools."""

    def __init__(self, rng: random.Random, today: dt.date, side: str, fraction: float, holdout_seed: int):
        self.rng, self.today, self.side = rng, today, side
        self.fraction, self.holdout_seed = fraction, holdout_seed
        self._parts: dict[str, list] = {}

    def choice(self, seq):
        """A closed set (enums, units, currencies): never split between train and eval."""
        return seq[self.rng.randrange(len(seq))]

    def pick(self, name: str, pool: list | None = None):
        """An open pool (pools.yaml `name`, or `pool`): train, dev and eval draw from disjoint parts."""
        pool = POOLS[name] if pool is None else pool
        if self.side == "all":
            return self.choice(pool)
        if name not in self._parts:
            keep = on_side(f"pool:{name}", len(pool), self.fraction, self.holdout_seed, self.side)
            self._parts[name] = [pool[i] for i in keep]
        return self.choice(self._parts[name])

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def date(self, lo: int = 1, hi: int = 45) -> tuple[str, str, bool]:
        """(prepositional text, ISO date, needs today's date) for a future day `lo`..`hi` days ahead."""
        r, words = self.rng, DIALOGUE["dates"]
        form = r.randrange(9)
        if form == 0:
            days, text = 1, words["tomorrow"]
        elif form == 1:
            days, text = 2, words["day_after"]
        elif form == 2:
            days = r.randint(1, 6)  # never 7: "on Friday" said on a Friday is ambiguous
            text = f"{r.choice(words['this'])} {(self.today + dt.timedelta(days=days)):%A}"
        elif form == 3:
            days = r.randint(3, 10)
            text = words["in_days"].format(days=days)
        else:
            d = self.today + dt.timedelta(days=r.randint(max(lo, 3), max(hi, 4)))
            text = words["absolute"][form - 4].format(date=d, ordinal=ordinal(d.day))
            return text, d.isoformat(), form in (7, 8)  # no year: the year comes from today's date
        return text, (self.today + dt.timedelta(days=days)).isoformat(), True


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def join_words(items: list[str], last: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


class _Say(string.Formatter):
    """str.format plus the ways replies say a value: {date:day} (Monday, March 2), {units:deg}, {to:list}."""

    def format_field(self, value: Any, spec: str) -> str:
        if spec == "day":
            d = dt.date.fromisoformat(value)
            return f"{d:%A, %B} {d.day}"
        if spec == "deg":
            return "°F" if value == "fahrenheit" else "°C"
        if spec == "list":
            return join_words(value)
        return super().format_field(value, spec)


say = _Say().format


def num(x: float) -> int | float:
    """JSON-friendly number: 12.0 -> 12."""
    return int(x) if float(x).is_integer() else x


def hex_id(c: Ctx, n: int) -> str:
    return "".join(c.choice("0123456789abcdef") for _ in range(n))


def wording(tool: str) -> dict:
    return TOOL_TEXT[tool]["wording"]


def reply(c: Ctx, tool: str, fields: dict, key: str | None = None) -> str:
    """One of the tool's canned replies (intents.yaml `replies[key]`, else its only list), filled in."""
    replies = TOOL_TEXT[tool]["replies"]
    return say(c.choice(replies[key or next(iter(replies))]), **fields)


# ---------------------------------------------------------------- intents: one per shipped tool
@dataclass
class Intent:
    tool: str
    capability: str  # "check the weather": for declines ("I can't ...") and "what can you do"
    sample: Callable[[Ctx], dict[str, Slot]]  # draws the slots a request may mention
    templates: list[str]
    execute: Callable[[Ctx, dict], dict | None]  # a fake result; None: no plausible one, so no result turn
    summarize: Callable[[Ctx, dict, dict], str]  # the reply that sums the result up
    parallel: list[str] = field(default_factory=list)  # same-tool parallel templates ({slot.k})


def email_address(c: Ctx) -> tuple[str, str]:
    first, last, dom = c.pick("first"), c.pick("last"), c.pick("domains")
    fold = str.maketrans("äöüéáíóúñçãå", "aoueaiouncaa")
    a, b = first.translate(fold).lower(), last.translate(fold).lower()
    local = c.choice([f"{a}.{b}", f"{a[0]}{b}", f"{a}{c.rng.randint(2, 99)}", f"{a}_{b}", a])
    return first, f"{local}@{dom}"


def recipients(c: Ctx, k: int) -> tuple[str, list[str]]:
    people: dict[str, str] = {}  # address -> first name
    while len(people) < k:
        name, address = email_address(c)
        people.setdefault(address, name)
    named = c.chance(0.4)
    return join_words([f"{n} ({e})" if named else e for e, n in people.items()]), list(people)


def weather_slots(c: Ctx) -> dict[str, Slot]:
    city = c.pick("cities")
    u = c.choice(["celsius", "fahrenheit"])
    when, iso, rel = c.date(1, 10)
    units = Slot(c.choice(wording("get_weather")["units"][u]), "units", u)
    return {"city": Slot(city, "location", city), "units": units, "when": Slot(when, "date", iso, rel)}


def weather_result(c: Ctx, a: dict) -> dict:
    units = a.get("units", "celsius")
    t = c.rng.randint(-5, 34)
    out: dict[str, Any] = {"location": a["location"]}
    if "date" in a:
        out["date"] = a["date"]
    out["temperature"] = t if units == "celsius" else round(t * 9 / 5 + 32)
    out["units"] = units
    out["condition"] = c.choice(POOLS["conditions"])
    out["humidity"] = c.rng.randint(20, 95)
    return out


def weather_reply(c: Ctx, a: dict, r: dict) -> str:
    return reply(c, "get_weather", r, "dated" if "date" in r else "now")


def search_slots(c: Ctx) -> dict[str, Slot]:
    w = wording("search_web")
    q = c.pick("queries")
    k = c.choice([3, 5, 5, 10, 2, 4])
    rec = c.choice(list(w["recency"]))
    ktext = c.choice(w["results"]).format(k=k)
    recency = Slot(c.choice(w["recency"][rec]), "recency", rec)
    return {"query": Slot(q, "query", q), "num": Slot(ktext, "num_results", k), "recency": recency}


def search_result(c: Ctx, a: dict) -> dict:
    w, q = wording("search_web"), a["query"]
    slug = "-".join(q.lower().split()[:5])
    hits = [{"title": q[:1].upper() + q[1:] + c.choice(w["title_suffixes"]), "url": f"https://{c.choice(w['sites'])}/{slug}"}
            for _ in range(min(a.get("num_results", 3), 3))]  # fmt: skip
    return {"query": q, "results": hits}  # at most 3 results: each costs tokens


def search_reply(c: Ctx, a: dict, r: dict) -> str:
    return reply(c, "search_web", {**r, **r["results"][0], "n": len(r["results"])})


def email_slots(c: Ctx) -> dict[str, Slot]:
    to_text, to = recipients(c, 1 if c.chance(0.8) else 2)
    cc_text, cc = recipients(c, 1)
    subject, body = c.pick("email_topics")
    priority = wording("send_email")["priority"]
    pr = c.choice(list(priority))
    return {"to": Slot(to_text, "to", to), "cc": Slot(cc_text, "cc", cc), "subject": Slot(subject, "subject", subject),
            "body": Slot(body, "body", body), "priority": Slot(c.choice(priority[pr]), "priority", pr)}  # fmt: skip


def email_result(c: Ctx, a: dict) -> dict:
    return {"status": "sent", "message_id": f"msg_{hex_id(c, 10)}", "to": a["to"]}


def stock_slots(c: Ctx) -> dict[str, Slot]:
    w = wording("get_stock_price")
    t, name, ex, _ = c.pick("tickers")
    text = t if c.chance(0.6) else w["company"].format(company=name, ticker=t)
    return {"ticker": Slot(text, "ticker", t), "tk": Slot(t, "ticker", t),
            "exchange": Slot(c.choice(w["exchange"]).format(exchange=ex), "exchange", ex)}  # fmt: skip


def stock_result(c: Ctx, a: dict) -> dict:
    base = next((p for t, _, _, p in POOLS["tickers"] if t == a["ticker"]), 100)
    return {"ticker": a["ticker"], "price": round(base * c.rng.uniform(0.85, 1.15), 2), "currency": "USD",
            "change_percent": round(c.rng.uniform(-3.5, 3.5), 2)}  # fmt: skip


def stock_reply(c: Ctx, a: dict, r: dict) -> str:
    move = wording("get_stock_price")["up" if r["change_percent"] >= 0 else "down"]
    return reply(c, "get_stock_price", {**r, "move": move.format(pct=abs(r["change_percent"]))})


def translate_slots(c: Ctx) -> dict[str, Slot]:
    w, phrases = wording("translate_text"), POOLS["phrases"]
    if c.chance(0.8):
        text, src = c.pick("phrases", list(phrases)), "English"
        target = c.choice(list(phrases[text])) if c.chance(0.6) else c.choice(POOLS["languages"])
    else:
        text, src, _ = c.pick("foreign")
        target = "English"
    form = c.choice(["formal", "informal"])
    return {"text": Slot(text, "text", text), "target": Slot(target, "target_language", target),
            "source": Slot(w["source"].format(language=src), "source_language", src),
            "formality": Slot(c.choice(w["formality"][form]), "formality", form),
            "formality_adj": Slot(form, "formality", form)}  # fmt: skip


def translate_result(c: Ctx, a: dict) -> dict | None:
    text, target = a["text"], a["target_language"]
    if text in POOLS["phrases"]:
        out = POOLS["phrases"][text].get(target)
    else:
        out = next((e for f, _, e in POOLS["foreign"] if f == text and target == "English"), None)
    return None if out is None else {"translated_text": out, "target_language": target}


def operand(c: Ctx) -> str:
    return str(c.rng.randint(2, 999)) if c.chance(0.7) else f"{c.rng.randint(1, 99)}.{c.rng.randint(1, 9)}"


def calc_slots(c: Ctx) -> dict[str, Slot]:
    w = wording("calculate")
    a, b, d = operand(c), operand(c), operand(c)
    op, op2 = c.choice("+-*/"), c.choice("+-*/")
    form, simple = c.rng.randrange(4), f"{a} {op} {b}"
    expr = {2: f"({simple}) {op2} {d}", 3: f"{simple} {op2} {d}"}.get(form, simple)
    text = f"{a} {c.choice(w['operators'][op])} {b}" if form == 1 else expr  # form 1: the operator in words
    p = c.choice([0, 1, 2, 2, 3])
    ptext = c.choice(w["precision"]).format(p=p) if p else w["whole_number"]
    return {"expr": Slot(text, "expression", expr), "precision": Slot(ptext, "precision", p)}


def evaluate_expression(expr: str) -> float:
    """Arithmetic only (+ - * / parentheses): the fake `calculate` executor; no `eval`."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def ev(n):
        if isinstance(n, ast.BinOp) and type(n.op) in ops:
            return ops[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.Constant) and isinstance(n.value, int | float):
            return n.value
        raise ValueError(f"not arithmetic: {expr!r}")

    return ev(ast.parse(expr, mode="eval").body)


def calc_result(c: Ctx, a: dict) -> dict:
    v = evaluate_expression(a["expression"])
    return {"expression": a["expression"], "result": num(round(v, a.get("precision", 4)))}


def passengers(c: Ctx) -> tuple[str, dict]:
    w = wording("book_flight")
    adults, children = c.choice([1, 2, 2, 3, 4]), c.choice([0, 0, 1, 2])
    word = (lambda k: POOLS["number_words"][k]) if c.chance(0.5) else str
    text = w["adults" if adults > 1 else "adult"].format(n=word(adults))
    if not children:
        return text, {"adults": adults}
    text += w["children" if children > 1 else "child"].format(n=word(children))
    return text, {"adults": adults, "children": children}


def flight_slots(c: Ctx) -> dict[str, Slot]:
    w = wording("book_flight")
    (oc, o), (dc, d) = c.pick("airports"), c.pick("airports")
    while d == o:
        dc, d = c.pick("airports")
    dep_text, dep, rel = c.date(3, 60)
    back = dt.date.fromisoformat(dep) + dt.timedelta(days=c.rng.randint(2, 14))
    ret_text = c.choice(w["return"]).format(date=back)
    pax_text, pax = passengers(c)
    cabin = c.choice(list(w["cabin"]))

    def airport(city: str, code: str) -> str:
        return code if c.chance(0.4) else w["airport"].format(city=city, code=code)

    return {"origin": Slot(airport(oc, o), "origin", o), "dest": Slot(airport(dc, d), "destination", d),
            "depart": Slot(dep_text, "departure_date", dep, rel), "ret": Slot(ret_text, "return_date", back.isoformat()),
            "pax": Slot(pax_text, "passengers", pax), "cabin": Slot(c.choice(w["cabin"][cabin]), "cabin", cabin),
            "cabin_adj": Slot(w["cabin_adjective"][cabin], "cabin", cabin)}  # fmt: skip


def flight_result(c: Ctx, a: dict) -> dict:
    ref = "".join(c.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6))
    pax = a.get("passengers", {"adults": 1})
    fare = c.rng.uniform(180, 900) * TOOL_TEXT["book_flight"]["fare_factor"][a.get("cabin", "economy")]
    price = round(fare * (pax["adults"] + pax.get("children", 0)) * (1.8 if "return_date" in a else 1), 2)
    return {"status": "confirmed", "booking_reference": ref, "origin": a["origin"], "destination": a["destination"],
            "departure_date": a["departure_date"], "total_price": price, "currency": "USD"}  # fmt: skip


def amount(c: Ctx) -> tuple[str, float]:
    v = c.choice([c.rng.randint(5, 500), c.rng.randint(500, 20000), round(c.rng.uniform(1, 2000), 2)])
    if isinstance(v, float) and c.chance(0.5):
        return f"{v:,.2f}", v
    return (f"{v:,}" if isinstance(v, int) and c.chance(0.5) else str(v)), v


def convert_slots(c: Ctx) -> dict[str, Slot]:
    currencies = POOLS["currencies"]
    f, t = c.choice(list(currencies)), c.choice(list(currencies))
    while t == f:
        t = c.choice(list(currencies))
    atext, value = amount(c)

    def said(code: str) -> str:
        return code if c.chance(0.6) else currencies[code][0]

    return {"amount": Slot(atext, "amount", value), "from": Slot(said(f), "from_currency", f),
            "to": Slot(said(t), "to_currency", t)}  # fmt: skip


def convert_result(c: Ctx, a: dict) -> dict:
    currencies = POOLS["currencies"]
    rate = round(
        currencies[a["to_currency"]][1] / currencies[a["from_currency"]][1] * c.rng.uniform(0.99, 1.01), 4
    )
    return {"amount": a["amount"], "from_currency": a["from_currency"], "to_currency": a["to_currency"],
            "rate": rate, "converted_amount": round(a["amount"] * rate, 2)}  # fmt: skip


def event_slots(c: Ctx) -> dict[str, Slot]:
    w = wording("create_calendar_event")
    title = c.pick("event_titles")
    dtext, iso, rel = c.date(1, 30)
    h, m = c.rng.randint(7, 20), c.choice([0, 0, 0, 15, 30, 30, 45])
    ttext = c.choice(w["times"]).format(hour=h, minute=m, hour12=h % 12 or 12, minutes=f":{m:02d}" if m else "",
                                        ampm="am" if h < 12 else "pm")  # fmt: skip
    if h == 12 and m == 0 and c.chance(0.5):
        ttext = w["noon"]
    mins = c.choice([15, 30, 45, 60, 90, 120, 180])
    hour = c.choice(w["hour"])  # drawn for every duration: the shipped demo data was made with this draw
    dur_text = {60: hour, **w["durations"]}.get(mins, w["minutes"].format(mins=mins))
    att_text, att = recipients(c, c.choice([1, 2]))
    place = c.pick("places")
    return {"title": Slot(title, "title", title), "date": Slot(dtext, "date", iso, rel),
            "time": Slot(ttext, "start_time", f"{h:02d}:{m:02d}"), "duration": Slot(dur_text, "duration_minutes", mins),
            "attendees": Slot(att_text, "attendees", att),
            "location": Slot(c.choice(w["location"]).format(place=place), "location", place)}  # fmt: skip


def event_result(c: Ctx, a: dict) -> dict:
    return {"status": "created", "event_id": f"evt_{hex_id(c, 8)}", "title": a["title"], "date": a["date"],
            "start_time": a["start_time"]}  # fmt: skip


# ---------------------------------------------------------------------------- customer service
def order_id(c: Ctx) -> str:
    return f"ORD-{c.rng.randint(100000, 999999)}"


def tracking_number(c: Ctx, carrier: str) -> str:
    prefix, alphabet, length = POOLS["tracking_numbers"][carrier]
    return prefix + "".join(c.rng.choice(alphabet) for _ in range(length))


def order_record(c: Ctx, order: str, status: str | None = None, items: bool = False) -> dict:
    status = status or c.choice(["processing", "shipped", "delivered", "delivered"])
    out: dict[str, Any] = {"order_id": order, "status": status, "total": round(c.rng.uniform(12, 480), 2),
                           "currency": "USD"}  # fmt: skip
    if status in ("shipped", "delivered"):
        carrier = c.choice(list(POOLS["carriers"]))
        out.update({"carrier": carrier, "tracking_number": tracking_number(c, carrier)})
    d = c.today + dt.timedelta(days=c.rng.randint(1, 6) * (1 if status != "delivered" else -1))
    out["delivered_on" if status == "delivered" else "estimated_delivery"] = d.isoformat()
    if items:
        out["items"] = [c.choice(POOLS["items"]) for _ in range(c.rng.randint(1, 3))]
    return out


def order_slots(c: Ctx) -> dict[str, Slot]:
    o = order_id(c)
    return {"order": Slot(o, "order_id", o),
            "items": Slot(c.choice(wording("check_order_status")["items"]), "include_items", True)}  # fmt: skip


def order_result(c: Ctx, a: dict) -> dict:
    return order_record(c, a["order_id"], items=bool(a.get("include_items")))


def order_reply(c: Ctx, a: dict, r: dict) -> str:
    text = TOOL_TEXT["check_order_status"]["replies"]  # one reply per status: no draw
    head = say(text[r["status"]], **r, carrier_name=POOLS["carriers"].get(r.get("carrier")))
    return head + (say(text["contents"], **r) if "items" in r else "")


def refund_slots(c: Ctx) -> dict[str, Slot]:
    w = wording("submit_refund")
    o = order_id(c)
    reason = c.choice(list(w["reasons"]))
    said = w["reasons"][reason]
    amt = round(c.rng.uniform(5, 300), 2)
    return {"order": Slot(o, "order_id", o), "reason": Slot(c.choice(said["clauses"]), "reason", reason),
            "reason_noun": Slot(c.choice(said["nouns"]), "reason", reason),
            "amount": Slot(c.choice(w["amount"]).format(amount=amt), "amount", amt)}  # fmt: skip


def refund_result(c: Ctx, a: dict) -> dict:
    value = a.get("amount", round(c.rng.uniform(12, 480), 2))
    return {"status": "approved", "refund_id": f"RF-{c.rng.randint(10000, 99999)}", "order_id": a["order_id"],
            "amount": value, "currency": "USD", "eta_business_days": c.choice([3, 5, 7])}  # fmt: skip


def escalate_slots(c: Ctx) -> dict[str, Slot]:
    w = wording("escalate_to_human")
    issue = c.pick("issues")
    cap = issue[:1].upper() + issue[1:]  # opening a sentence: the summary argument stays word for word
    dept, prio = c.choice(list(w["department"])), c.choice(list(w["priority"]))
    return {"issue": Slot(issue, "summary", issue), "issue_cap": Slot(cap, "summary", cap),
            "dept": Slot(c.choice(w["department"][dept]), "department", dept),
            "priority": Slot(c.choice(w["priority"][prio]), "priority", prio)}  # fmt: skip


def escalate_result(c: Ctx, a: dict) -> dict:
    return {"status": "queued", "ticket_id": f"T-{c.rng.randint(100000, 999999)}",
            "department": a.get("department", "general"), "estimated_wait_minutes": c.rng.randint(2, 25)}  # fmt: skip


def address_slots(c: Ctx) -> dict[str, Slot]:
    w = wording("update_shipping_address")
    o = order_id(c)
    street, city, postal, code, name = c.pick("addresses")
    country = code if c.chance(0.3) else name
    layout = w["address_city_first"] if code in ("US", "CA", "AU") else w["address"]
    value = {"street": street, "city": city, "postal_code": postal, "country": code}
    text = layout.format(street=street, city=city, postal=postal, country=country)
    return {"order": Slot(o, "order_id", o), "addr": Slot(text, "address", value)}


def address_result(c: Ctx, a: dict) -> dict:
    return {"status": "updated", "order_id": a["order_id"], "address": a["address"]}


def cancel_slots(c: Ctx) -> dict[str, Slot]:
    reasons = wording("cancel_order")["reasons"]
    o = order_id(c)
    reason = c.choice(list(reasons))
    return {"order": Slot(o, "order_id", o), "reason": Slot(c.choice(reasons[reason]), "reason", reason)}


def cancel_result(c: Ctx, a: dict) -> dict:
    return {"status": "cancelled", "order_id": a["order_id"], "refund_amount": round(c.rng.uniform(12, 480), 2),
            "currency": "USD"}  # fmt: skip


def track_slots(c: Ctx) -> dict[str, Slot]:
    w = wording("track_package")
    carrier = c.choice(list(POOLS["carriers"]))
    tn = tracking_number(c, carrier)
    name = POOLS["carriers"][carrier]
    return {"tn": Slot(tn, "tracking_number", tn),
            "carrier": Slot(c.choice(w["carrier"]).format(name=name), "carrier", carrier),
            "carrier_adj": Slot(w["carrier_adjective"].format(name=name), "carrier", carrier)}  # fmt: skip


def track_result(c: Ctx, a: dict) -> dict:
    d = c.today + dt.timedelta(days=c.rng.randint(1, 5))
    # The default carrier is drawn even when the call names one: the demo data was made with this draw.
    return {"tracking_number": a["tracking_number"], "carrier": a.get("carrier", c.choice(list(POOLS["carriers"]))),
            "status": c.choice(wording("track_package")["statuses"]),
            "last_location": c.choice(POOLS["cities"]), "estimated_delivery": d.isoformat()}  # fmt: skip


def product_slots(c: Ctx) -> dict[str, Slot]:
    p, q, z = c.pick("products"), c.rng.randint(2, 6), c.pick("zips")
    return {
        "product": Slot(p, "product_name", p),
        "qty": Slot(str(q), "quantity", q),
        "postal": Slot(z, "postal_code", z),
    }


def product_result(c: Ctx, a: dict) -> dict:
    have = c.rng.randint(0, 40)
    out: dict[str, Any] = {"product_name": a["product_name"], "in_stock": have >= a.get("quantity", 1),
                           "quantity_available": have}  # fmt: skip
    if "postal_code" in a:
        out["nearest_store"] = c.choice(wording("check_product_availability")["stores"])
    return out


def product_reply(c: Ctx, a: dict, r: dict) -> str:
    text = TOOL_TEXT["check_product_availability"]  # one reply per case: no draw
    if not r["in_stock"]:
        return say(text["replies"]["out_of_stock"], **r)
    where = say(text["wording"]["at_store"], **r) if "nearest_store" in r else ""
    return say(text["replies"]["in_stock"], **r, where=where)


def discount_slots(c: Ctx) -> dict[str, Slot]:
    o, code = order_id(c), c.pick("codes")
    return {"order": Slot(o, "order_id", o), "code": Slot(code, "code", code)}


def discount_result(c: Ctx, a: dict) -> dict:
    return {"status": "applied", "order_id": a["order_id"], "code": a["code"],
            "discount_amount": round(c.rng.uniform(3, 60), 2), "currency": "USD"}  # fmt: skip


SAMPLERS = {  # tool -> (slots, fake result, reply: a function where a reply is chosen by the result)
    "get_weather": (weather_slots, weather_result, weather_reply),
    "search_web": (search_slots, search_result, search_reply),
    "send_email": (email_slots, email_result, None),
    "get_stock_price": (stock_slots, stock_result, stock_reply),
    "translate_text": (translate_slots, translate_result, None),
    "calculate": (calc_slots, calc_result, None),
    "book_flight": (flight_slots, flight_result, None),
    "convert_currency": (convert_slots, convert_result, None),
    "create_calendar_event": (event_slots, event_result, None),
    "check_order_status": (order_slots, order_result, order_reply),
    "submit_refund": (refund_slots, refund_result, None),
    "escalate_to_human": (escalate_slots, escalate_result, None),
    "update_shipping_address": (address_slots, address_result, None),
    "cancel_order": (cancel_slots, cancel_result, None),
    "track_package": (track_slots, track_result, None),
    "check_product_availability": (product_slots, product_result, product_reply),
    "apply_discount_code": (discount_slots, discount_result, None),
}


def reply_on_fields(tool: str, c: Ctx, a: dict, r: dict) -> str:
    return reply(c, tool, {**a, **r})


INTENTS: dict[str, Intent] = {
    tool: Intent(tool, TOOL_TEXT[tool]["capability"], slots, TOOL_TEXT[tool]["templates"], result,
                 summarize or partial(reply_on_fields, tool), TOOL_TEXT[tool].get("parallel", []))
    for tool, (slots, result, summarize) in SAMPLERS.items()
}  # fmt: skip

# Tools that could serve a request for the key tool: never offered when declining it (that would be wrong).
SUBSTITUTES = {tool: set(t["substitutes"]) for tool, t in TOOL_TEXT.items() if t.get("substitutes")}

# ---------------------- multi-step chains: a result feeds the next call; a final answer sums up
Step = tuple[str, dict, dict]  # (tool, arguments, result)


@dataclass
class Chain:
    name: str
    tools: list[str]
    sample: Callable[[Ctx], dict[str, Slot]]
    templates: list[str]
    run: Callable[[Ctx, dict[str, Slot], set[str]], tuple[list[list[Step]], str]]


def mentioned_args(slots: dict[str, Slot], names: list[str], mentioned: set[str]) -> dict:
    return {slots[n].arg: slots[n].value for n in names if n in mentioned}


def final(c: Ctx, chain: str, **fields) -> str:
    return say(c.choice(CHAIN_TEXT[chain]["final"]), **fields)


def calc_step(expr: str, value: float) -> Step:
    return ("calculate", {"expression": expr}, {"expression": expr, "result": num(value)})


def stock_cost_slots(c: Ctx) -> dict[str, Slot]:
    s = stock_slots(c)
    shares = c.choice([c.rng.randint(2, 40), c.rng.randint(50, 500)])
    return {**s, "shares": Slot(str(shares), None, shares)}


def stock_cost_run(c: Ctx, s: dict[str, Slot], m: set[str]):
    t, shares = s["tk"].value, s["shares"].value
    q = stock_result(c, {"ticker": t})
    total = round(shares * q["price"], 2)
    text = final(c, "stock_cost", price=q["price"], shares=shares, ticker=t, total=total)
    return [[("get_stock_price", {"ticker": t}, q)], [calc_step(f"{shares} * {q['price']}", total)]], text


def convert_split_slots(c: Ctx) -> dict[str, Slot]:
    s = convert_slots(c)
    people = c.rng.randint(2, 8)
    return {**s, "people": Slot(c.choice([str(people), POOLS["number_words"][people]]), None, people)}


def convert_split_run(c: Ctx, s: dict[str, Slot], m: set[str]):
    a = mentioned_args(s, ["amount", "from", "to"], m)
    r = convert_result(c, a)
    people = s["people"].value
    each = round(r["converted_amount"] / people, 2)
    text = final(c, "convert_split", **r, people=people, each=each)
    return [[("convert_currency", a, r)], [calc_step(f"{r['converted_amount']} / {people}", each)]], text


def order_refund_run(c: Ctx, s: dict[str, Slot], m: set[str]):
    o = s["order"].value
    st = order_record(c, o, status="delivered")
    a = {"order_id": o, "reason": s["reason"].value, "amount": st["total"]}
    r = refund_result(c, a)
    text = final(c, "order_refund", **{**st, **r})
    return [[("check_order_status", {"order_id": o}, st)], [("submit_refund", a, r)]], text


def order_track_run(c: Ctx, s: dict[str, Slot], m: set[str]):
    o = s["order"].value
    st = order_record(c, o, status="shipped")
    tr = track_result(c, {"tracking_number": st["tracking_number"], "carrier": st["carrier"]})
    a2 = {"tracking_number": st["tracking_number"]}
    if c.chance(0.5):
        a2["carrier"] = st["carrier"]
    text = final(c, "order_track", **tr, order_id=o, carrier_name=POOLS["carriers"][st["carrier"]])
    return [[("check_order_status", {"order_id": o}, st)], [("track_package", a2, tr)]], text


def order_cancel_run(c: Ctx, s: dict[str, Slot], m: set[str]):
    o = s["order"].value
    st = order_record(c, o, status="processing")
    a = mentioned_args(s, ["order", "reason"], m)
    r = cancel_result(c, a)
    text = final(c, "order_cancel", **r)
    return [[("check_order_status", {"order_id": o}, st)], [("cancel_order", a, r)]], text


def order_address_run(c: Ctx, s: dict[str, Slot], m: set[str]):
    o = s["order"].value
    st = order_record(c, o, status="processing")
    a = {"order_id": o, "address": s["addr"].value}
    r = address_result(c, a)
    text = final(c, "order_address", **r)
    return [[("check_order_status", {"order_id": o}, st)], [("update_shipping_address", a, r)]], text


def weather_mail_slots(c: Ctx) -> dict[str, Slot]:
    s = weather_slots(c)
    return {**s, "to": email_slots(c)["to"]}


def weather_mail_run(c: Ctx, s: dict[str, Slot], m: set[str]):
    words = CHAIN_TEXT["weather_mail"]
    wa = mentioned_args(s, ["city", "when", "units"], m)
    w = weather_result(c, wa)
    on_day = say(words["on_day"], **w) if "date" in w else ""
    body = say(words["body"], **w, when=on_day or words["now"])
    ea = {"to": s["to"].value, "subject": say(words["subject"], **w) + on_day, "body": body}
    er = email_result(c, ea)
    text = final(c, "weather_mail", **w, when=on_day or words["now"], to=ea["to"], body=body)
    return [[("get_weather", wa, w)], [("send_email", ea, er)]], text


def stock_diff_slots(c: Ctx) -> dict[str, Slot]:
    a, b = stock_slots(c), stock_slots(c)
    while b["tk"].value == a["tk"].value:
        b = stock_slots(c)
    return {"t1": a["ticker"], "t2": b["ticker"], "k1": a["tk"], "k2": b["tk"]}


def stock_diff_run(c: Ctx, s: dict[str, Slot], m: set[str]):
    t1, t2 = s["k1"].value, s["k2"].value
    q1, q2 = stock_result(c, {"ticker": t1}), stock_result(c, {"ticker": t2})
    diff = round(q1["price"] - q2["price"], 2)
    rel = CHAIN_TEXT["stock_diff"]["more" if diff >= 0 else "less"]
    text = final(c, "stock_diff", t1=t1, t2=t2, p1=q1["price"], p2=q2["price"], gap=abs(diff), rel=rel)
    steps = [("get_stock_price", {"ticker": t1}, q1), ("get_stock_price", {"ticker": t2}, q2)]
    return [steps, [calc_step(f"{q1['price']} - {q2['price']}", diff)]], text


CHAIN_STEPS = {  # chain -> (slots, run)
    "stock_cost": (stock_cost_slots, stock_cost_run),
    "convert_split": (convert_split_slots, convert_split_run),
    "order_refund": (refund_slots, order_refund_run),
    "order_track": (order_slots, order_track_run),
    "order_cancel": (cancel_slots, order_cancel_run),
    "order_address": (address_slots, order_address_run),
    "weather_mail": (weather_mail_slots, weather_mail_run),
    "stock_diff": (stock_diff_slots, stock_diff_run),
}
CHAINS: dict[str, Chain] = {
    name: Chain(name, CHAIN_TEXT[name]["tools"], slots, CHAIN_TEXT[name]["templates"], run)
    for name, (slots, run) in CHAIN_STEPS.items()
}
