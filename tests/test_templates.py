"""Chat-template families: real templates (TRL's and the kit's), render checks, quirks, parsers, round trip."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from template_fixtures import FAMILY_NAMES, KINDS, family_tokenizer, sample_records

from toolcall_kit.errors import KitError
from toolcall_kit.records import calls_of
from toolcall_kit.templates import (
    FAMILIES,
    ParsedOutput,
    _template_text,
    adapt_record,
    detect_family,
    get_family,
    mistral_call_id,
    parse_tool_calls,
    render,
    render_with_spans,
    template_losses,
    verify_roundtrip,
)

# SmolLM2's own template: plain ChatML that ignores `tools` and `tool_calls` (None content printed empty).
PLAIN_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def adapted(kind: str, family: str) -> dict:
    return adapt_record(sample_records()[kind], family, parallel="split")[0]


# ---------------------------------------------------------------------------------------------------------
# Families and detection
# ---------------------------------------------------------------------------------------------------------


def test_families_map_to_vllm_parsers_and_training_templates():
    assert {n: f.vllm_parser for n, f in FAMILIES.items()} == {
        "chatml": "hermes",
        "qwen2_5": "hermes",
        "llama3_1": "llama3_json",
        "mistral": "mistral",
    }
    assert get_family("hermes").name == "qwen2_5" and get_family("Llama3.1").name == "llama3_1"
    for fam in FAMILIES.values():
        text = fam.template()
        assert re.search(r"\{%-?\s*generation\s*-?%\}", text), fam.name  # assistant-only loss needs markers
        assert "tools" in text
    # qwen2_5 is TRL's own shipped training template, read from the installed package.
    assert "Training variant of the Qwen2.5 chat template" in FAMILIES["qwen2_5"].template()
    with pytest.raises(KitError, match="unknown chat-template family"):
        get_family("gpt2")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_detect_family_from_template_text(family):
    assert detect_family(family_tokenizer(family)).name == family


def test_detect_family_from_models_own_templates_and_override():
    tok = family_tokenizer("chatml")
    tok.chat_template = _template_text("trl:qwen2_5.jinja")  # Qwen 2.5's original template
    assert detect_family(tok).name == "qwen2_5"
    tok.chat_template = _template_text("trl:llama3_1.jinja")  # Meta's original template
    assert detect_family(tok).name == "llama3_1"
    assert detect_family(tok, "mistral").name == "mistral"  # --family overrides
    tok.chat_template = "{{ messages }}"
    with pytest.raises(KitError, match="--family"):
        detect_family(tok)


# ---------------------------------------------------------------------------------------------------------
# Rendering and the render checks, per family with the real templates
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_render_check_and_roundtrip(family, kind):
    tok = family_tokenizer(family)
    rec = adapted(kind, family)
    text = render(tok, rec, family)
    # render goes through apply_chat_template with the family's training template, arguments as objects
    direct = tok.apply_chat_template(
        [{k: v for k, v in m.items() if k != "weight"} for m in rec["messages"]],
        tools=rec["tools"],
        tokenize=False,
    )
    assert text == direct
    assert render_with_spans(tok, rec, family)[0] == text
    assert template_losses(text, rec) == []
    n_assistant = sum(m["role"] == "assistant" for m in rec["messages"])
    assert verify_roundtrip(tok, rec, family) == n_assistant


def test_family_specific_renders():
    llama = render(family_tokenizer("llama3_1"), adapted("single", "llama3_1"), "llama3_1")
    assert '{"name": "get_weather", "parameters": {"city": "Lisbon", "unit": "celsius"}}<|eot_id|>' in llama
    assert "<|start_header_id|>ipython<|end_header_id|>" in llama  # results in the ipython role
    mistral = render(family_tokenizer("mistral"), adapted("parallel", "mistral"), "mistral")
    assert mistral.count("[TOOL_RESULTS]") == 2 and mistral.index("[AVAILABLE_TOOLS]") < mistral.index(
        "[INST]"
    )
    assert re.search(
        r'\[TOOL_CALLS\] \[\{"name": "get_weather", "arguments": \{"city": "Oslo"\}, "id": "[A-Za-z0-9]{9}"\}',
        mistral,
    )
    hermes = render(family_tokenizer("qwen2_5"), adapted("parallel", "qwen2_5"), "qwen2_5")
    assert hermes.count('<tool_call>\n{"name": "') == 2 and hermes.count("<tool_response>") == 2


def test_trl_llama3_training_template_drops_tools_and_is_caught():
    tok = family_tokenizer("llama3_1")
    rec = adapted("no_call", "llama3_1")
    text = render(tok, rec, "llama3_1", chat_template=_template_text("trl:llama3_training.jinja"))
    assert "record nocall-1: tool 'get_weather' is not in the render" in template_losses(text, rec)


def test_plain_chatml_that_ignores_tools_is_refused_naming_what_was_lost():
    tok = family_tokenizer("chatml")
    tok.chat_template = PLAIN_CHATML
    rec = sample_records()["single"]
    msg = "; ".join(template_losses(render(tok, rec, "chatml", chat_template="model"), rec))
    assert "record single-1" in msg and "tool 'get_weather'" in msg and "tool 'get_time'" in msg
    assert "call 'get_weather'" in msg and "argument city=" in msg
    # the same record passes with the tool-aware template: the check is about the template
    assert template_losses(render(tok, rec, "chatml"), rec) == []


def test_dropped_tool_results_are_named():
    tmpl = (
        FAMILIES["chatml"]
        .template()
        .replace("render_content(message.content) ~ '\\n</tool_response>'", "'\\n</tool_response>'")
    )
    assert tmpl != FAMILIES["chatml"].template()
    rec = sample_records()["single"]
    lost = template_losses(render(family_tokenizer("chatml"), rec, "chatml", chat_template=tmpl), rec)
    assert lost == ["record single-1: messages[3] tool result for 'call_w1' is not in the render"]


def test_double_encoding_is_refused():
    tok = family_tokenizer("chatml")
    rec = sample_records()["single"]
    as_string = copy.deepcopy(rec)
    as_string["messages"][2]["tool_calls"][0]["function"]["arguments"] = json.dumps({"city": "Lisbon"})
    with pytest.raises(KitError, match="arguments as a JSON string"):
        render(tok, as_string, "chatml")
    twice = (
        FAMILIES["qwen2_5"]
        .template()
        .replace("tool_call.arguments | tojson", "tool_call.arguments | tojson | tojson")
    )
    assert twice != FAMILIES["qwen2_5"].template()
    with pytest.raises(KitError, match="JSON-encoded twice"):
        render(tok, rec, "qwen2_5", chat_template=twice)


def test_roundtrip_refuses_a_target_the_server_reads_but_the_kit_does_not():
    # Leaves </tool_call> out: vLLM still reads a last unclosed call, so the server would parse this
    # single call, but a model trained on it learns to leave its calls open.
    tmpl = FAMILIES["chatml"].template().replace("'}\\n</tool_call>'", "'}'")
    assert tmpl != FAMILIES["chatml"].template()
    tok = family_tokenizer("chatml")
    rec = sample_records()["single"]
    with pytest.raises(KitError, match=r"single-1: messages\[2\].*vLLM accepts it.*unclosed <tool_call>"):
        verify_roundtrip(tok, rec, "chatml", chat_template=tmpl)


def test_roundtrip_catches_a_template_the_server_cannot_parse():
    # Renders everything (the loss check passes) but writes "args" where vLLM's hermes parser reads "arguments".
    tmpl = FAMILIES["chatml"].template().replace('\\"arguments\\": \' }}', '\\"args\\": \' }}')
    tmpl = tmpl.replace('\'", "arguments": \'', '\'", "args": \'')
    assert tmpl != FAMILIES["chatml"].template()
    tok = family_tokenizer("chatml")
    rec = sample_records()["single"]
    assert template_losses(render(tok, rec, "chatml", chat_template=tmpl), rec) == []
    with pytest.raises(KitError, match=r"single-1: messages\[2\].*has no \"arguments\""):
        verify_roundtrip(tok, rec, "chatml", chat_template=tmpl)


# ---------------------------------------------------------------------------------------------------------
# Family quirks
# ---------------------------------------------------------------------------------------------------------


def test_llama_parallel_calls_error_names_the_record():
    rec = sample_records()["parallel"]
    with pytest.raises(KitError, match=r"record parallel-1: messages\[1\] makes 2 parallel calls"):
        adapt_record(rec, "llama3_1")
    with pytest.raises(KitError, match="parallel-1"):  # the raw template refuses too, with the record id
        render(family_tokenizer("llama3_1"), rec, "llama3_1")


def test_llama_split_puts_each_result_after_its_call_and_keeps_the_input():
    rec = sample_records()["parallel"]
    before = copy.deepcopy(rec)
    out = adapt_record(rec, "llama3_1", parallel="split")
    assert rec == before and len(out) == 1
    roles = [(m["role"], len(m.get("tool_calls") or []), m.get("tool_call_id")) for m in out[0]["messages"]]
    assert roles == [
        ("user", 0, None),
        ("assistant", 1, None),
        ("tool", 0, "call_p1"),
        ("assistant", 1, None),
        ("tool", 0, "call_p2"),
        ("assistant", 0, None),
    ]
    assert [c for m in out[0]["messages"] for c in calls_of(m)] == [
        c for m in rec["messages"] for c in calls_of(m)
    ]
    # without results (single-turn data): consecutive assistant turns of one call each
    bare = {"id": "bare", "tools": rec["tools"], "messages": rec["messages"][:2]}
    split = adapt_record(bare, "llama3_1", parallel="split")[0]
    assert [len(m.get("tool_calls") or []) for m in split["messages"]] == [0, 1, 1]
    assert verify_roundtrip(family_tokenizer("llama3_1"), split, "llama3_1") == 2


def test_llama_text_beside_a_call():
    rec = sample_records()["single"]
    rec["messages"][2]["content"] = "Let me look that up."
    with pytest.raises(KitError, match="single-1: messages\\[2\\] has text beside its tool call"):
        adapt_record(rec, "llama3_1")
    out = adapt_record(rec, "llama3_1", content_with_calls="drop")[0]
    assert out["messages"][2]["content"] is None and rec["messages"][2]["content"] == "Let me look that up."


def test_mistral_ids_are_remapped_consistently_and_deterministically():
    rec = sample_records()["multi_step"]
    a = adapt_record(rec, "mistral")[0]
    b = adapt_record(copy.deepcopy(rec), "mistral")[0]
    assert a == b  # deterministic
    ids = [c["id"] for m in a["messages"] for c in m.get("tool_calls") or []]
    assert len(set(ids)) == 2 and all(len(i) == 9 and i.isalnum() and i.isascii() for i in ids)
    results = [m["tool_call_id"] for m in a["messages"] if m["role"] == "tool"]
    assert results == ids  # tool_call_id follows its call
    assert rec["messages"][2]["tool_calls"][0]["id"] == "call_m1"  # input untouched
    assert mistral_call_id("call_m1") == ids[0]
    valid = sample_records()["single"]
    valid["messages"][2]["tool_calls"][0]["id"] = valid["messages"][3]["tool_call_id"] = "abcDEF123"
    assert adapt_record(valid, "mistral")[0]["messages"][2]["tool_calls"][0]["id"] == "abcDEF123"
    with pytest.raises(KitError, match="9 letters and digits"):
        render(family_tokenizer("mistral"), rec, "mistral")  # unremapped ids are refused by the template


def test_chatml_records_pass_through_unchanged():
    rec = sample_records()["parallel"]
    assert adapt_record(rec, "chatml", parallel="error")[0] is rec


# ---------------------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------------------


def test_hermes_parser():
    out = parse_tool_calls(
        'Checking.\n<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call><|im_end|>',
        "hermes",
    )
    assert out.strict_ok and out.pairs() == [("a", {"x": 1}), ("b", {})] and out.content == "Checking."
    # vLLM accepts an unclosed last tag: the call counts, the kit's stricter finding is reported apart
    out = parse_tool_calls('<tool_call>\n{"name": "a", "arguments": {"x": 1}}', "hermes")
    assert out.pairs() == [("a", {"x": 1})] and out.ok and not out.strict_ok
    assert "unclosed" in out.strict_errors[0]
    out = parse_tool_calls('<tool_call>\n{"name": "a", "arguments": {"x": ', "hermes")
    assert out.calls == [] and "truncated" in out.errors[0]
    out = parse_tool_calls('<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call>', "hermes")
    assert out.calls == [] and "JSON string" in out.errors[0]
    out = parse_tool_calls('<tool_call>{"name": "a", "arguments": {"x": 1},}</tool_call>', "hermes")
    assert out.calls == [] and "malformed JSON" in out.errors[0]
    out = parse_tool_calls("Just an answer.", "hermes")
    assert out.ok and out.calls == [] and out.content == "Just an answer."
    # two disagreements with vLLM worth pinning: one broken call among several, and an output
    # cut inside the closing tag, each make vLLM return no calls at all (the whole text comes back as content)
    two = '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n<tool_call>{"name": "b", "arguments": {</tool_call>'
    out = parse_tool_calls(two, "hermes")
    assert out.calls == [] and "#2" in out.errors[0] and "no calls at all" in out.errors[-1]
    assert out.content == two
    out = parse_tool_calls('<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_', "hermes")
    assert out.calls == [] and "ends inside </tool_call>" in out.errors[0]
    # text after the calls is dropped by the server: content is the text before them, the kit notes the rest
    out = parse_tool_calls('Sure. <tool_call>{"name": "a", "arguments": {}}</tool_call> Done.', "hermes")
    assert out.ok and out.content == "Sure." and "Done." in out.strict_errors[0]


def test_llama3_json_parser():
    out = parse_tool_calls(
        '<|python_tag|>{"name": "a", "parameters": {"x": 1}}; {"name": "b", "arguments": {}}', "llama3_json"
    )
    assert out.strict_ok and out.pairs() == [("a", {"x": 1}), ("b", {})] and out.content == ""
    out = parse_tool_calls('{"name": "a", "parameters": {"q": "x"}}<|eot_id|>', "llama3_json")
    assert out.strict_ok and out.pairs() == [("a", {"q": "x"})]
    # vLLM returns the call and no content: the text beside it is dropped (the kit says so apart)
    out = parse_tool_calls('Sure: {"name": "a", "parameters": {}}', "llama3_json")
    assert out.ok and out.pairs() == [("a", {})] and out.content == "" and "Sure:" in out.strict_errors[0]
    out = parse_tool_calls("The set {1, 2} has two elements.", "llama3_json")
    assert out.strict_ok and out.calls == [] and out.content.startswith("The set")
    # both keys: vLLM takes "arguments"
    out = parse_tool_calls('{"name": "a", "parameters": {"p": 1}, "arguments": {"a": 2}}', "llama3_json")
    assert out.pairs() == [("a", {"a": 2})] and out.ok and "both" in out.strict_errors[0]
    out = parse_tool_calls('{"name": "a", "parameters": {"x": [1, 2', "llama3_json")
    assert not out.ok and "truncated" in out.errors[0] and out.calls == []
    # a "{" right after a call's "}" is skipped by vLLM, which then fails on the next call's arguments
    out = parse_tool_calls('{"name": "a", "parameters": {}}{"name": "b", "parameters": {}}', "llama3_json")
    assert out.calls == [] and '"; "' in out.errors[0]
    # any "{" after a good call that does not start a call makes vLLM return nothing
    out = parse_tool_calls('{"name": "a", "parameters": {}} then {1}', "llama3_json")
    assert out.calls == [] and not out.ok


def test_mistral_parser():
    out = parse_tool_calls(
        '[TOOL_CALLS] [{"name": "a", "arguments": {"x": 1}, "id": "abcdefghi"}, '
        '{"name": "b", "arguments": {}}]</s>',
        "mistral",
    )
    assert out.strict_ok and out.pairs() == [("a", {"x": 1}), ("b", {})]
    out = parse_tool_calls('Let me see.[TOOL_CALLS]a[ARGS]{"x": 1}[TOOL_CALLS]b{"y": "z"}', "mistral")
    assert out.ok and out.pairs() == [("a", {"x": 1}), ("b", {"y": "z"})] and out.content == "Let me see."
    out = parse_tool_calls('[TOOL_CALLS] [{"name": "a", "arguments": {"x"', "mistral")
    assert out.calls == [] and not out.ok
    out = parse_tool_calls(" Plain answer.</s>", "mistral")
    assert out.strict_ok and out.content == "Plain answer."
    # vLLM passes string arguments on as they are: a string holding the object still reaches the client
    out = parse_tool_calls('[TOOL_CALLS] [{"name": "a", "arguments": "{\\"x\\": 1}"}]', "mistral")
    assert out.ok and out.pairs() == [("a", {"x": 1})] and "encoded twice" in out.strict_errors[0]
    # a missing name reaches the client as "" (unusable); missing arguments as {}
    out = parse_tool_calls('[TOOL_CALLS] [{"arguments": {}}, {"name": "b"}]', "mistral")
    assert out.pairs() == [("b", {})] and "no function name" in out.errors[0] and out.strict_errors


def test_openai_parser():
    msg = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}}],
    }
    for payload in (msg, json.dumps(msg), msg["tool_calls"], {"choices": [{"message": msg}]}):
        out = parse_tool_calls(payload, "openai")
        assert out.ok and out.pairs() == [("a", {"x": 1})], payload
    out = parse_tool_calls([{"function": {"name": "a", "arguments": '{"x": '}}], "openai")
    assert out.calls == [] and not out.ok
    out = parse_tool_calls([{"function": {"name": "a", "arguments": "[1]"}}], "openai")
    assert "not an object" in out.errors[0]
    assert parse_tool_calls("{not json", "openai").errors
    with pytest.raises(KitError, match="unknown tool-call format"):
        parse_tool_calls("x", "xml")


FRAGMENTS = st.sampled_from(
    [
        "<tool_call>",
        "</tool_call>",
        "<|python_tag|>",
        "[TOOL_CALLS]",
        "[ARGS]",
        "[CALL_ID]",
        "{",
        "}",
        "[",
        "]",
        '"name"',
        '"arguments"',
        '"parameters"',
        ":",
        ",",
        ";",
        '"a"',
        "1",
        "null",
        "\n",
        " ",
        "<|eot_id|>",
        "</s>",
        '{"name": "f", "arguments": {"x": 1}}',
        '"\\',
        "\x00",
        "é",
        "9" * 30,
    ]
)


@pytest.mark.parametrize("fmt", ["hermes", "llama3_json", "mistral", "openai"])
@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=300), st.lists(FRAGMENTS, max_size=40).map("".join)))
def test_parsers_never_raise(fmt, text):
    out = parse_tool_calls(text, fmt)
    assert isinstance(out, ParsedOutput)
    assert all(isinstance(c["name"], str) and isinstance(c["arguments"], dict) for c in out.calls)
    assert isinstance(out.content, str) and out.ok == (not out.errors)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(args=st.dictionaries(st.text(min_size=1, max_size=6), JSON_VALUES, max_size=4))
def test_parser_roundtrips_any_arguments(args):
    call = json.dumps({"name": "f", "arguments": args}, ensure_ascii=False)
    assert parse_tool_calls(f"<tool_call>\n{call}\n</tool_call>", "hermes").pairs() == [("f", args)]
    llama = json.dumps({"name": "f", "parameters": args}, ensure_ascii=False)
    assert parse_tool_calls(llama, "llama3_json").pairs() == [("f", args)]
    assert parse_tool_calls(f"[TOOL_CALLS] [{call}]", "mistral").pairs() == [("f", args)]
