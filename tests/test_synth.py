"""toolcall_kit.synth: validity, determinism, exact counts, held-out templates, user catalogs, teacher mode."""

from __future__ import annotations

import http.server
import json
import random
import re
import shlex
import socket
import threading
from collections import Counter
from pathlib import Path

import pytest

from toolcall_kit import synth as S
from toolcall_kit import synth_intents as si
from toolcall_kit.cli import main
from toolcall_kit.errors import DataError, KitError
from toolcall_kit.io import read_jsonl
from toolcall_kit.records import KINDS, classify
from toolcall_kit.validate import check_call, validate_record

ROOT = Path(__file__).resolve().parents[1]


def _user_texts(r):
    return [m["content"] for m in r["messages"] if m["role"] == "user"]


def _calls(r):
    return [c for m in r["messages"] for c in m.get("tool_calls") or []]


@pytest.fixture(scope="module")
def sample():
    records, report = S.generate(800, seed=7)
    return records, report


def test_every_example_validates_and_every_kind_appears(sample):
    records, report = sample
    assert len(records) == 800
    for r in records:
        assert validate_record(r) == [], r["id"]
        assert r["kind"] in KINDS
        assert len(r["tools"]) <= 3
        assert r["template_ids"]
    assert set(Counter(r["kind"] for r in records)) == set(KINDS)
    assert len({r["id"] for r in records}) == 800
    assert report["by_kind"] == dict(Counter(r["kind"] for r in records)) | report["by_kind"]
    # Every shipped tool is called somewhere, and the report counts calls exactly.
    calls = Counter(c["function"]["name"] for r in records for c in _calls(r))
    assert report["by_tool"] == dict(sorted(calls.items()))
    assert set(calls) == set(si.INTENTS)


def test_kinds_have_their_structure(sample):
    records, _ = sample
    for r in records:
        structural = classify({k: v for k, v in r.items() if k != "kind"})
        calls = _calls(r)
        if r["kind"] == "declined":
            offered = {t["function"]["name"] for t in r["tools"]}
            assert not calls and structural == "no_call"
            # A withheld-tool decline never offers the tool (nor a substitute) its request needs.
            tid = r["template_ids"][-1].split("/")[0]
            if tid in si.INTENTS:
                assert tid not in offered and not (si.SUBSTITUTES.get(tid, set()) & offered)
        else:
            assert structural == r["kind"], r["id"]
        if r["kind"] == "parallel_calls":
            first = next(m for m in r["messages"] if m.get("tool_calls"))
            assert 2 <= len(first["tool_calls"]) <= 3
        if r["kind"] == "multi_step":
            turns = [m for m in r["messages"] if m.get("tool_calls")]
            assert (
                len(turns) >= 2 and r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"]
            )
            for m in r["messages"]:
                if m["role"] == "tool":
                    json.loads(m["content"])  # plausible JSON from the fake executor


def test_multi_step_results_feed_the_next_call(sample):
    records, _ = sample
    fed = 0
    for r in records:
        if r["kind"] != "multi_step":
            continue
        results = " ".join(m["content"] for m in r["messages"] if m["role"] == "tool")
        later = [c for m in [m for m in r["messages"] if m.get("tool_calls")][1:] for c in m["tool_calls"]]
        numbers = re.findall(
            r"\d+\.\d+|[A-Z0-9]{10,}", json.dumps([c["function"]["arguments"] for c in later])
        )
        fed += any(n in results for n in numbers)
    assert fed >= 0.6 * sum(r["kind"] == "multi_step" for r in records)


def test_declines_come_with_contrastive_partners(sample):
    records, report = sample
    by_text: dict[str, list] = {}
    for r in records:
        by_text.setdefault(_user_texts(r)[-1], []).append(r)
    pairs = 0
    for r in records:
        if r["kind"] != "declined" or r["template_ids"][-1].startswith("oos/"):
            continue
        twins = [t for t in by_text[_user_texts(r)[-1]] if t["kind"] == "single_call"]
        if twins:
            pairs += 1
            needed = _calls(twins[0])[0]["function"]["name"]
            assert needed in {t["function"]["name"] for t in twins[0]["tools"]}
            assert needed not in {t["function"]["name"] for t in r["tools"]}
    assert pairs == report["contrastive_pairs"] > 0


def test_free_text_arguments_are_stated_by_the_user(sample):
    """Optional arguments ride on the words: values a user must dictate appear in the user's text."""
    records, _ = sample
    verbatim = {"location", "query", "subject", "body", "text", "title", "order_id", "tracking_number",
                "product_name", "code", "summary", "street", "city", "postal_code"}  # fmt: skip
    checked = 0
    for r in records:
        if r["kind"] != "single_call":
            continue
        text = " ".join(_user_texts(r))
        args = _calls(r)[0]["function"]["arguments"]
        flat = {**args, **(args.get("address") or {})}
        for k, v in flat.items():
            if k in verbatim and isinstance(v, str):
                assert v in text, (r["id"], k, v, text)
                checked += 1
    assert checked > 200


def test_relative_dates_come_with_todays_date(sample):
    records, _ = sample
    seen = 0
    for r in records:
        text = " ".join(_user_texts(r))
        if re.search(r"\btomorrow\b|\bin \d+ days\b", text) and _calls(r):
            system = r["messages"][0]
            assert system["role"] == "system" and re.search(r"20\d\d", system["content"]), r["id"]
            seen += 1
    assert seen > 5


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    assert main(["synth", "--out", str(a), "--n", "150", "--seed", "3"]) == 0
    assert main(["synth", "--out", str(b), "--n", "150", "--seed", "3"]) == 0
    assert main(["synth", "--out", str(c), "--n", "150", "--seed", "4"]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("n", [1, 7, 101, 333])
def test_n_and_mix_are_exact(n):
    mix = "no_call=0.2,decline=0.05,parallel=0.25,multi_step=0.1"
    records, report = S.generate(n, seed=n, mix=mix)
    counts = Counter(r["kind"] for r in records)
    assert len(records) == n == sum(report["by_kind"].values())
    assert {k: v for k, v in report["by_kind"].items() if v} == dict(counts)
    expected = S.mix_counts(n, S.parse_mix(mix))
    assert all(counts.get(k, 0) == v for k, v in expected.items())
    for kind, share in (("no_call", 0.2), ("declined", 0.05), ("parallel_calls", 0.25), ("multi_step", 0.1)):
        assert abs(counts.get(kind, 0) - share * n) < 1


def test_mix_rounding_reconciles_to_n():
    # 0.15 * 101 = 15.15 etc.: the 55.55 non-single examples round to 56; the largest remainder gets it.
    counts = S.mix_counts(101, S.parse_mix(None))
    assert counts == {
        "single_call": 45,
        "no_call": 16,
        "declined": 10,
        "parallel_calls": 15,
        "multi_step": 15,
        "session": 0,
    }
    assert S.mix_counts(10, S.parse_mix("no_call=1,decline=0,parallel=0,multi_step=0")) == {
        "single_call": 0, "no_call": 10, "declined": 0, "parallel_calls": 0, "multi_step": 0, "session": 0}  # fmt: skip


def test_bad_mix_is_rejected_naming_the_key(capsys):
    with pytest.raises(KitError, match="'paralel'"):
        S.parse_mix("paralel=0.2")
    with pytest.raises(KitError, match="sum to 1.25"):
        S.parse_mix("no_call=0.5,parallel=0.5")
    with pytest.raises(KitError, match="decline"):
        S.parse_mix("decline=abc")
    with pytest.raises(KitError, match="between 0 and 1"):
        S.parse_mix("multi_step=-0.1")
    assert main(["synth", "--out", "/nonexistent/x.jsonl", "--mix", "chitchat=0.1"]) == 2
    assert "'chitchat'" in capsys.readouterr().err


def test_eval_templates_and_values_are_held_out():
    train, _ = S.generate(600, seed=0, split="train")
    evl, _ = S.generate(200, seed=1, split="eval")
    tt = {t for r in train for t in r["template_ids"]}
    te = {t for r in evl for t in r["template_ids"]}
    assert tt and te and not (tt & te)
    assert set(Counter(r["kind"] for r in evl)) == set(KINDS)

    def cities(rs):
        return {
            c["function"]["arguments"]["location"]
            for r in rs
            for c in _calls(r)
            if c["function"]["name"] == "get_weather"
        }

    assert cities(train) and cities(evl) and not (cities(train) & cities(evl))


def test_dev_split_is_disjoint_from_eval_and_held_out_from_train():
    train, _ = S.generate(600, seed=0, split="train")
    dev, _ = S.generate(200, seed=2, split="dev")
    evl, _ = S.generate(200, seed=1, split="eval")
    ids = {
        name: {t for r in rs for t in r["template_ids"]}
        for name, rs in (("train", train), ("dev", dev), ("eval", evl))
    }
    assert not (ids["dev"] & ids["eval"]) and not (ids["train"] & ids["eval"])
    # Groups of at least 3 phrasings give dev a share of its own; smaller ones lend dev their train share.
    sizes = Counter(t.rpartition("/")[0] for t in ids["train"] | ids["dev"] | ids["eval"])
    shared = ids["dev"] & ids["train"]
    assert len(shared) < len(ids["dev"]) / 4, sorted(shared)
    for group in {t.rpartition("/")[0] for t in shared}:
        assert len(si.on_side(f"tpl:{group}", 99, 0.2, 0, "dev")) > 0  # the helper itself gives dev a share
        assert sizes[group] <= 3 or group.startswith("par."), group
    vals = {name: {c["function"]["arguments"].get("location") for r in rs for c in _calls(r)
                   if c["function"]["name"] == "get_weather"} - {None}
            for name, rs in (("train", train), ("dev", dev), ("eval", evl))}  # fmt: skip
    assert vals["dev"] and not (vals["dev"] & vals["eval"]) and not (vals["dev"] & vals["train"])


def test_on_side_partitions_every_group():
    for size in (1, 2, 3, 5, 12, 40):
        tr, dv, ev = (set(si.on_side("tpl:x", size, 0.2, 0, side)) for side in ("train", "dev", "eval"))
        assert not (tr & ev) and not (dv & ev)
        assert tr | ev == set(range(size)) if size < 3 else tr | dv | ev == set(range(size))
        if size >= 5:
            assert dv and not (dv & tr)


def test_sessions_ask_several_things_under_one_tool_set():
    records, report = S.generate(300, seed=5, split="train", mix={"session": 0.4})
    assert report["sessions"] == 120 and len(records) == 300
    assert sum(sum(m["role"] == "user" for m in r["messages"]) >= 2 for r in records) >= 120
    offered_names = lambda r: {t["function"]["name"] for t in r["tools"]}  # noqa: E731
    declines = 0
    for r in records:
        assert not validate_record(r)
        msgs = r["messages"]
        for i, m in enumerate(msgs):
            for c in m.get("tool_calls") or []:
                assert c["function"]["name"] in offered_names(r)
            # A call is answered by its results before the user speaks again.
            if m.get("tool_calls") and i + 1 < len(msgs):
                assert msgs[i + 1]["role"] == "tool", r["id"]
        declines += sum(
            1
            for m in msgs
            if m["role"] == "assistant" and m.get("content") and "tool" in m["content"].lower()
        )
    assert declines > 20


def test_shipped_demo_files_reproduce_from_the_documented_commands(tmp_path):
    commands = [
        line.strip() for line in S.__doc__.splitlines() if line.strip().startswith("toolcall-kit synth")
    ]
    assert len(commands) == 3
    for cmd in commands:
        argv = shlex.split(cmd)[1:]
        shipped = ROOT / argv[argv.index("--out") + 1]
        argv[argv.index("--out") + 1] = str(tmp_path / shipped.name)
        assert main(argv) == 0
        assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes(), (
            f"{shipped} is stale: rerun `{cmd}`"
        )
    train, evl = read_jsonl(ROOT / "data/demo/train.jsonl"), read_jsonl(ROOT / "data/demo/eval.jsonl")
    assert 1000 <= len(train) <= 2000 and 120 <= len(evl) <= 200
    assert not ({t for r in train for t in r["template_ids"]} & {t for r in evl for t in r["template_ids"]})


def test_every_shipped_template_renders_valid_calls():
    cat = S.load_catalog()
    declared = {n: t["function"] for n, t in cat.tools.items()}
    assert set(si.INTENTS) == set(cat.tools) and not cat.generic
    for tool, intent in si.INTENTS.items():
        assert len(intent.templates) >= 8, tool
        for text in intent.templates + intent.parallel:
            nodes = S.parse_template(text)
            for seed in range(12):
                c = si.Ctx(random.Random(seed), si.dt.date(2026, 3, 2), "all", 0.2, 0)
                samples = [intent.sample(c) for _ in range(S.calls_in(text))]
                _, mentioned = S.render(nodes, lambda name, k, s=samples: s[(k or 1) - 1][name], c.rng)
                for k in range(len(samples)):
                    call = {"function": {"name": tool, "arguments": S.args_for(k + 1, mentioned, samples)}}
                    assert check_call(call, declared, text) == []
    for chain in si.CHAINS.values():
        assert len(chain.templates) >= 8
        for text in chain.templates:
            nodes = S.parse_template(text)
            for seed in range(8):
                c = si.Ctx(random.Random(seed), si.dt.date(2026, 3, 2), "all", 0.2, 0)
                slots = chain.sample(c)
                _, mentioned = S.render(nodes, lambda name, k, s=slots: s[name], c.rng)
                turns, final = chain.run(c, slots, {nm for nm, _ in mentioned})
                assert final and len(turns) == 2
                for steps in turns:
                    for tool, args, _ in steps:
                        assert (
                            check_call({"function": {"name": tool, "arguments": args}}, declared, text) == []
                        )
    for _, user, answer in si.DIALOGUE["clarify"]:
        S.parse_template(user), S.parse_template(answer)


def test_template_language():
    nodes = S.parse_template("Hi {^a}[ and {b}] <x|y>.")
    slots = {"a": si.Slot("paris", "location", "Paris"), "b": si.Slot("in °F", "units", "fahrenheit")}
    seen = set()
    for seed in range(40):
        text, mentioned = S.render(nodes, lambda n, k: slots[n], random.Random(seed))
        args = S.args_for(1, mentioned, [slots])
        assert text.startswith("Hi Paris")
        assert ("units" in args) == ("in °F" in text)
        seen.add(text)
    assert len(seen) == 4
    with pytest.raises(ValueError):
        S.parse_template("unclosed [ segment")


USER_TOOLS = [
    {"type": "function", "function": {
        "name": "create_ticket", "description": "Open a support ticket in the helpdesk.",
        "parameters": {"type": "object", "properties": {
            "title": {"type": "string", "minLength": 3},
            "severity": {"type": "string", "enum": ["sev1", "sev2", "sev3"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
            "reporter": {"type": "object", "properties": {
                "email": {"type": "string", "format": "email"},
                "team": {"type": "string", "pattern": "^[A-Z]{2,4}-\\d{2}$"}}, "required": ["email", "team"]},
            "due": {"type": "string", "format": "date"},
            "estimate_hours": {"type": "number", "minimum": 0.5, "maximum": 40},
            "public": {"type": "boolean"}},
            "required": ["title", "severity", "reporter"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "lookup_customer", "description": "Find a customer by id.",
        "parameters": {"type": "object", "properties": {
            "customer_id": {"type": "string", "pattern": "^C\\d{7}$"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["customer_id"]}}},
    {"type": "function", "function": {"name": "ping_oncall", "description": "Page the on-call engineer."}},
]  # fmt: skip


def test_user_catalog_file_works(tmp_path):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(USER_TOOLS))
    out = tmp_path / "u.jsonl"
    assert main(["synth", "--out", str(out), "--n", "120", "--seed", "5", "--catalog", str(path)]) == 0
    records = read_jsonl(out)
    assert len(records) == 120 and set(Counter(r["kind"] for r in records)) == set(KINDS)
    names = {t["function"]["name"] for t in USER_TOOLS}
    called = Counter()
    for r in records:
        assert validate_record(r) == []
        assert {t["function"]["name"] for t in r["tools"]} <= names
        text = " ".join(_user_texts(r))
        for c in _calls(r):
            called[c["function"]["name"]] += 1
            # Generic phrasings state every value, so every argument is derivable from the words.
            for leaf in S._leaves(c["function"]["arguments"]):
                if isinstance(leaf, str):
                    assert leaf in text, (leaf, text)
    assert set(called) == names


def test_bad_catalogs_are_rejected(tmp_path):
    with pytest.raises(KitError, match="unknown catalog 'weather'"):
        S.load_catalog("weather")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"type": "function", "function": {"name": "bad name!"}}]))
    with pytest.raises(DataError, match="bad.json"):
        S.load_catalog(str(bad))
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(DataError, match="invalid JSON"):
        S.load_catalog(str(broken))
    with pytest.raises(KitError, match="more than one catalog"):
        S.load_catalog("general,general")


def test_schema_values_and_regex_sampler():
    rng = random.Random(0)
    for pattern in [
        r"^ORD-\d{6}$",
        r"^([01]\d|2[0-3]):[0-5]\d$",
        r"^[A-Z]{3}$",
        r"^(sku|SKU)_[a-z0-9]{4,8}$",
        r"^\w+@\w+\.com$",
    ]:
        for _ in range(20):
            assert re.fullmatch(pattern, v := S.pattern_sample(pattern, rng)) and len(v) < 40, (pattern, v)
    c = si.Ctx(rng, si.dt.date(2026, 3, 2), "all", 0.2, 0)
    for _ in range(30):
        v = S.sample_value({"type": "integer", "minimum": 3, "maximum": 5}, "n", c)
        assert 3 <= v <= 5 and isinstance(v, int)
        assert S.sample_value({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, "x", c) > 0


def test_check_paraphrase_rules():
    records, _ = S.generate(30, seed=11, mix="no_call=0,decline=0,parallel=0,multi_step=0")
    r = next(r for r in records if any(isinstance(v, str) and v in _user_texts(r)[-1]
                                       for v in S._leaves(_calls(r)[0]["function"]["arguments"])))  # fmt: skip
    original = _user_texts(r)[-1]
    values = [v for v, _ in S.anchors_of(original, r)]
    assert values
    assert S.check_paraphrase(original, "Could you please help: " + original, r) is None
    assert S.check_paraphrase(original, original.replace(values[0], "something"), r) == "dropped_value"
    assert S.check_paraphrase(original, "   ", r) == "empty"
    assert S.check_paraphrase(original, original, r) == "unchanged"


class _Teacher(http.server.BaseHTTPRequestHandler):
    """A local OpenAI-style endpoint that rewrites every other message and drops values from the rest."""

    seen: list = []
    headers_seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        type(self).seen.append(body)
        type(self).headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        new = (
            f"Please help me with this: {text}"
            if len(text) % 2
            else re.sub(r"\d", "#", text) + " (rephrased)"
        )
        data = json.dumps(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": new}}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_teacher_accepts_good_paraphrases_and_rejects_dropped_values(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        records, _ = S.generate(40, seed=4)
        out, rep = S.paraphrase_with_teacher(
            records, f"http://127.0.0.1:{server.server_port}/v1", "t", workers=3
        )
    finally:
        server.shutdown()
    assert rep["requested"] == rep["http_ok"] == len(_Teacher.seen) > 0
    assert rep["accepted"] > 0 and rep["rejected_by_reason"].get("dropped_value", 0) > 0
    assert rep["accepted"] + rep["kept_original"] == rep["requested"]
    changed = sum(a != b for a, b in zip(records, out, strict=True))
    assert changed == rep["accepted"]
    for before, after in zip(records, out, strict=True):
        assert validate_record(after) == []
        assert _calls(before) == _calls(after)  # calls stay fixed
        if before != after:
            old, new = _user_texts(before)[-1], _user_texts(after)[-1]
            # Accepted: the prefixed rewrites, and the digit-free ones whose values all survived.
            assert new == f"Please help me with this: {old}" or (
                new == f"{old} (rephrased)" and not re.search(r"\d", old)
            )
        elif (
            re.search(r"\d", _user_texts(before)[-1])
            and len(_user_texts(before)[-1]) % 2 == 0
            and _calls(before)
        ):
            pass  # digits replaced by '#': a dropped value, kept as it was


def test_teacher_sends_nothing_the_environment_holds_for_other_programs(monkeypatch):
    """The openai client fills the key, organization, project and headers from OPENAI_* variables: not here."""
    for var, value in (
        ("OPENAI_API_KEY", "sk-other"),
        ("OPENAI_ORG_ID", "org-other"),
        ("OPENAI_PROJECT_ID", "proj-other"),
        ("OPENAI_CUSTOM_HEADERS", "Authorization: Bearer other"),
    ):
        monkeypatch.setenv(var, value)  # fmt: skip
    monkeypatch.delenv("TOOLCALL_KIT_TEACHER_API_KEY", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    records, _ = S.generate(8, seed=3, mix="no_call=0,decline=0")
    try:
        _Teacher.headers_seen.clear()
        assert S.paraphrase_with_teacher(records, url, "t")[1]["api_key_sent"] is False
        sent = {k: v for h in _Teacher.headers_seen for k, v in h.items()}
        assert _Teacher.headers_seen and not {"authorization", "openai-organization", "openai-project"} & set(
            sent
        )
        _Teacher.headers_seen.clear()
        S.paraphrase_with_teacher(records, url + "/v1/chat/completions", "t", api_key="kit-key")
        assert {h["authorization"] for h in _Teacher.headers_seen} == {"Bearer kit-key"}
    finally:
        server.shutdown()


def test_unreachable_teacher_is_a_kit_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    records, _ = S.generate(10, seed=1)
    with pytest.raises(KitError, match="answered no request"):
        S.paraphrase_with_teacher(records, f"http://127.0.0.1:{port}", "m", timeout=5)
    with pytest.raises(KitError, match="go together"):
        S.synth("/tmp/unused.jsonl", n=5, teacher_url="http://127.0.0.1:1")


@pytest.mark.slow
def test_teacher_against_a_real_transformers_server(tmp_path):
    """`transformers serve` on a random tiny model: a real HTTP round trip whose garbage is rejected."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from served import local_server  # tests/served.py
    from tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", arch="llama")
    out = tmp_path / "t.jsonl"
    with local_server(model, timeout=120, cwd=tmp_path) as url:
        report = S.synth(out, n=12, seed=2, teacher_url=url.removesuffix("/v1"), teacher_model=str(model))
    t = report["teacher"]
    assert t["requested"] > 0 and t["http_ok"] == t["requested"]  # every request made the round trip
    # A random model cannot keep every stated value: nothing gets in, every rejection is counted.
    assert (
        t["accepted"] == 0 and sum(t["rejected_by_reason"].values()) == t["requested"] == t["kept_original"]
    )
    plain, _ = S.generate(12, seed=2)
    assert read_jsonl(out) == plain  # the originals were kept
