"""Merge: a LoRA adapter with non-zero weights merges into a folder whose logits match the adapter model."""

import json

import pytest
import torch

from toolcall_kit import merge as merge_mod
from toolcall_kit.cli import main
from toolcall_kit.errors import KitError
from toolcall_kit.models import build_tiny_model


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("merge")
    base = build_tiny_model(root / "base", arch="llama")
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero (a no-op adapter): give it a real update to merge
                p.normal_(0, 0.5)
    peft_model.save_pretrained(root / "adapter")
    return base, root / "adapter"


def _logits(folder_or_model, tokenizer, text="hello <tool_call> world"):
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return folder_or_model(**ids).logits


def test_merge_matches_adapter_and_writes_card(adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter_dir = adapter
    out = tmp_path / "merged"
    report = merge_mod.merge(adapter_dir, out, base=str(base))
    assert report["max_abs_logit_diff"] <= report["tolerance"]
    assert report["vllm_tool_call_parser"] == "hermes" and "--tool-call-parser hermes" in report["serve_command"]
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert json.loads((out / "merge_report.json").read_text())["out"] == str(out)
    assert not (out / "adapter_config.json").exists()  # a plain model, not an adapter

    tok = AutoTokenizer.from_pretrained(base)
    plain = AutoModelForCausalLM.from_pretrained(base)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir)
    merged = AutoModelForCausalLM.from_pretrained(out)
    ref, got, untouched = _logits(with_adapter, tok), _logits(merged, tok), _logits(plain, tok)
    assert torch.allclose(ref, got, atol=1e-4)
    # The adapter really changed the model, so the check above is not comparing the base with itself.
    assert (ref - untouched).abs().max() > 1e-2


def test_failed_check_leaves_nothing(adapter, tmp_path, monkeypatch):
    base, adapter_dir = adapter
    monkeypatch.setitem(merge_mod.TOLERANCE, "float32", -1.0)  # no export can pass
    out = tmp_path / "merged"
    with pytest.raises(KitError, match="differs"):
        merge_mod.merge(adapter_dir, out, base=str(base))
    assert not out.exists() and not list(tmp_path.glob(".merged*"))


def test_not_an_adapter_is_a_clear_error(tmp_path, capsys):
    assert main(["merge", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "no adapter_config.json" in capsys.readouterr().err
