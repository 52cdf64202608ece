"""Assistant-only masks checked token by token, Unsloth's marker masking, the token budget, show-mask."""

from __future__ import annotations

import importlib.util
import json

import pytest
from mask_checks import verify_mask
from template_fixtures import FAMILY_NAMES, KINDS, family_tokenizer, sample_records
from unsloth_masks import unsloth_mask_leaks

from toolcall_kit.errors import KitError
from toolcall_kit.records import text_of
from toolcall_kit.templates import FAMILIES, adapt_record, render_with_spans
from toolcall_kit.tokens import (
    encode,
    encode_many,
    mask_html,
    show_mask,
    token_report,
)


def adapted(kind: str, family: str) -> dict:
    return adapt_record(sample_records()[kind], family, parallel="split")[0]


def trained_text(tok, ids, mask) -> str:
    return tok.decode([i for i, m in zip(ids, mask, strict=True) if m], skip_special_tokens=False)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_masks_token_by_token(family, kind):
    tok = family_tokenizer(family)
    rec = adapted(kind, family)
    out = encode(tok, rec, family)
    assert set(out) == {"input_ids", "assistant_masks"}  # the pre-tokenized dataset contract with the trainer
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask) and set(mask) <= {0, 1} and all(isinstance(i, int) for i in ids)
    assert verify_mask(tok, rec, ids, mask, family) == []

    # Independently of verify_mask: the trained tokens are exactly the trained assistant turns' text.
    text, spans = render_with_spans(tok, rec, family)
    turns = [m for m in rec["messages"] if m["role"] == "assistant"]
    want = "".join(text[s:e] for (s, e), m in zip(spans, turns, strict=True) if m.get("weight", 1) != 0)
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    got = "".join(text[a:b] for (a, b), m in zip(offsets, mask, strict=True) if m)
    assert got == want
    end = FAMILIES[family].end_token
    assert got.count(end) == sum(m.get("weight", 1) != 0 for m in turns)  # every trained turn learns to stop
    for m in rec["messages"]:
        body = (text_of(m.get("content")) or "").strip()
        if m["role"] in ("user", "system", "tool") and body:
            assert body not in got, (m["role"], body)
    for word in ("<|im_start|>user", "ipython", "[TOOL_RESULTS]", "[INST]", "[AVAILABLE_TOOLS]", "<tools>"):
        assert word not in got


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_fast_masks_equal_apply_chat_template_masks(family):
    tok = family_tokenizer(family)
    recs = [adapted(k, family) for k in ("single", "parallel", "multi_step", "no_call")]  # all weight 1
    fast = encode_many(tok, recs, family)
    for rec, mine in zip(recs, fast, strict=True):
        ref = tok.apply_chat_template(
            rec["messages"],
            tools=rec["tools"],
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        assert mine["input_ids"] == list(ref["input_ids"])
        assert mine["assistant_masks"] == list(ref["assistant_masks"])


def test_weight_zero_turn_is_not_trained():
    tok = family_tokenizer("chatml")
    rec = sample_records()["weighted"]
    ids, mask = encode(tok, rec, "chatml").values()
    got = trained_text(tok, ids, mask)
    assert "one moment" not in got and "Quito is at 14 C." in got and '"city": "Quito"' in got
    rec_all = sample_records()["weighted"]
    del rec_all["messages"][1]["weight"]
    assert sum(encode(tok, rec_all, "chatml")["assistant_masks"]) > sum(mask)


def test_verify_mask_finds_wrong_masks():
    tok = family_tokenizer("llama3_1")
    rec = adapted("single", "llama3_1")
    ids, mask = encode(tok, rec, "llama3_1").values()
    text = tok.decode(ids)
    result_at = text.index('"{\\"temp_c\\"')  # the ipython tool result
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    leak = list(mask)
    for k, (a, b) in enumerate(enc["offset_mapping"]):
        if a >= result_at and b <= result_at + 10:
            leak[k] = 1
    problems = verify_mask(tok, rec, ids, leak, "llama3_1")
    assert problems and "outside the trained assistant turns" in problems[0]
    missing = list(mask)
    missing[mask.index(1)] = 0
    assert "not trained" in verify_mask(tok, rec, ids, missing, "llama3_1")[0]
    assert verify_mask(tok, rec, ids, [1] * len(ids), "llama3_1")
    assert verify_mask(tok, rec, ids[:-1] + [ids[0]], mask, "llama3_1")[0].startswith("input_ids differ")


def test_truncation_keeps_prefix_and_is_reported_by_index_and_id():
    tok = family_tokenizer("chatml")
    recs = [sample_records()[k] for k in KINDS]
    full = encode_many(tok, recs, "chatml")
    lengths = [len(x["input_ids"]) for x in full]
    first_trained = [x["assistant_masks"].index(1) for x in full]
    limit = sorted(first_trained)[2]  # some examples keep trained tokens, the others lose all of them
    cut = encode_many(tok, recs, "chatml", max_seq_length=limit)
    assert all(c["input_ids"] == f["input_ids"][:limit] for c, f in zip(cut, full, strict=True))
    for rec, c in zip(recs, cut, strict=True):  # a truncated mask is checked against the cut text
        assert verify_mask(tok, rec, c["input_ids"], c["assistant_masks"], "chatml") == []
    rep = token_report(tok, recs, max_seq_length=limit, batch_size=2, grad_accum=1, epochs=3, family="chatml")
    lost = {i for i, f in enumerate(first_trained) if f >= limit}
    assert {e["index"] for e in rep["all_assistant_tokens_cut"]} == lost
    assert {e["id"] for e in rep["all_assistant_tokens_cut"]} == {recs[i]["id"] for i in lost}
    assert {e["index"] for e in rep["over_max_seq_length"]} == {i for i, n in enumerate(lengths) if n > limit}
    assert rep["examples_trained"] == len(recs) - len(lost)
    assert (
        rep["steps_per_epoch"] == -(-(len(recs) - len(lost)) // 2)
        and rep["total_steps"] == 3 * rep["steps_per_epoch"]
    )
    assert rep["tokens"] == sum(lengths)
    assert rep["trained_tokens"] == sum(sum(x["assistant_masks"]) for x in full)
    assert rep["training_tokens"] == 3 * sum(min(n, limit) for i, n in enumerate(lengths) if i not in lost)


def test_token_report_counts_distribution_naive_estimate_and_plot(tmp_path):
    tok = family_tokenizer("llama3_1")
    recs = [sample_records()[k] for k in KINDS]
    rep = token_report(
        tok, recs, max_seq_length=4096, family="llama3_1", parallel="split", plot=tmp_path / "hist.png"
    )
    texts = [render_with_spans(tok, adapt_record(r, "llama3_1", parallel="split")[0])[0] for r in recs]
    lengths = sorted(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert [e["tokens"] for e in rep["per_example"]] == [
        len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts
    ]
    assert rep["distribution"]["min"] == lengths[0] and rep["distribution"]["max"] == lengths[-1]
    assert rep["distribution"]["median"] == lengths[2]
    assert rep["naive_tokens"] == sum(round(len(t) / 4) for t in texts)
    assert rep["naive_error_pct"] == round(100 * (rep["naive_tokens"] - sum(lengths)) / sum(lengths), 1)
    assert rep["all_assistant_tokens_cut"] == [] and rep["over_max_seq_length"] == []
    assert (tmp_path / "hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(rep)  # --json prints it


def test_token_report_refuses_parallel_for_llama_unless_split():
    tok = family_tokenizer("llama3_1")
    with pytest.raises(KitError, match="parallel-1"):
        token_report(tok, [sample_records()["parallel"]], family="llama3_1")


def test_token_report_refuses_a_template_that_drops_tools():
    tok = family_tokenizer("chatml")
    plain = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{% generation %}"
        "{{ m.content or '' }}<|im_end|>{% endgeneration %}{% else %}{{ m.content }}<|im_end|>{% endif %}\n"
        "{% endfor %}"
    )
    with pytest.raises(KitError, match="silently drops data: record single-1: tool 'get_weather'"):
        token_report(tok, [sample_records()["single"]], family="chatml", chat_template=plain)


def test_show_mask_and_html():
    tok = family_tokenizer("qwen2_5")
    rec = sample_records()["single"]
    ids, mask = encode(tok, rec, "qwen2_5").values()
    plain = show_mask(tok, rec, "qwen2_5", color=False)
    body = plain.split("\n", 1)[1]
    import re

    marked = "".join(re.findall(r"\[\[(.*?)\]\]", body, flags=re.S))
    assert marked == trained_text(tok, ids, mask)
    assert body.replace("[[", "").replace("]]", "") == tok.decode(ids)
    coloured = show_mask(tok, rec, "qwen2_5", color=True)
    assert "\x1b[1;32m" in coloured and "[[" not in coloured
    cut = show_mask(tok, rec, "qwen2_5", color=False, max_seq_length=10)
    assert "<<cut at 10 tokens" in cut
    page = mask_html(tok, rec, "qwen2_5")
    assert "background:#c8f7c5" in page and "&lt;tool_call&gt;" in page and "<tool_call>" not in page


@pytest.mark.skipif(importlib.util.find_spec("unsloth") is None, reason="Unsloth not installed")
def test_unsloth_marker_masking_leaks_llama_tool_results_and_ours_do_not():
    # A Llama 3.1 base tokenizer (eos <|end_of_text|>) with markers that lack the shared
    # <|start_header_id|> opener: Unsloth's span runs from one assistant header to the next user marker,
    # over the ipython results.
    tok = family_tokenizer("llama3_1", eos_token="<|end_of_text|>")
    recs = [adapted("single", "llama3_1"), adapted("parallel", "llama3_1")]
    rep = unsloth_mask_leaks(
        tok,
        recs,
        instruction_part="user<|end_header_id|>\n\n",
        response_part="assistant<|end_header_id|>\n\n",
        family="llama3_1",
    )
    tool_leaks = [x for x in rep["leaks"] if "(tool)" in x["message"]]
    assert rep["leaked_tokens"] > 0 and tool_leaks
    assert {x["id"] for x in tool_leaks} == {"single-1", "parallel-1"}
    assert any('\\"temp_c\\": 21' in x["text"] for x in tool_leaks)
    for rec in recs:  # the fix: the kit's own masks, token by token
        ids, mask = encode(tok, rec, "llama3_1").values()
        assert verify_mask(tok, rec, ids, mask, "llama3_1") == []


@pytest.mark.skipif(importlib.util.find_spec("unsloth") is None, reason="Unsloth not installed")
def test_unsloth_marker_masking_misses_mistral_answers_after_tool_results():
    tok = family_tokenizer("mistral")
    rec = adapted("single", "mistral")
    rep = unsloth_mask_leaks(tok, [rec], family="mistral")  # Unsloth's documented [INST] / [/INST]
    assert rep["leaked_tokens"] == 0
    assert [x["message"] for x in rep["misses"]] == ["messages[4] (assistant)"]
    assert "It is 21 C and sunny in Lisbon." in rep["misses"][0]["text"]


def test_cli_tokens_and_show_mask(tmp_path, capsys):
    from toolcall_kit.cli import main
    from toolcall_kit.io import write_jsonl

    data = tmp_path / "train.jsonl"
    write_jsonl(data, [sample_records()[k] for k in KINDS])
    assert (
        main(
            [
                "tokens",
                str(data),
                "--model",
                "tiny:llama",
                "--max-seq-length",
                "512",
                "--batch-size",
                "2",
                "--json",
                "--plot",
                str(tmp_path / "t.png"),
            ]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["family"] == "chatml" and rep["examples"] == len(KINDS) and rep["steps_per_epoch"] == 3
    assert (tmp_path / "t.png").exists()
    assert main(["tokens", str(data), "--model", "tiny:llama"]) == 0
    assert "steps/epoch" in capsys.readouterr().out
    assert main(["show-mask", str(data), "--model", "tiny:llama", "--index", "1", "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert "[[<tool_call>" in out and "record parallel-1" in out
    assert main(["show-mask", str(data), "--model", "tiny:llama", "--index", "9"]) == 2
    assert "out of range" in capsys.readouterr().err
