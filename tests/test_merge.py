"""Merge: a LoRA adapter with non-zero weights merges into a folder whose logits match the adapter model."""

import json

import pytest
import torch
from tiny_model import build_tiny_model

from toolcall_kit import merge as merge_mod
from toolcall_kit.cli import main
from toolcall_kit.errors import KitError


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
    assert (out / "chat_template.jinja").is_file()  # the trained template, which Llama 3.1's serve command pins

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


# --- the GPU path (issue 10): Unsloth adapters name a 4-bit base; merge must use the 16-bit one -------------


def _unsloth_like_run(tmp_path, base, adapter_dir, adapter_base: str, model_name: str | None, result: dict):
    """A run folder as an Unsloth QLoRA run leaves it: adapter_config names a bnb-4bit base."""
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(adapter_dir, run / "adapter")
    cfg_file = run / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = adapter_base
    cfg_file.write_text(json.dumps(cfg))
    if model_name is not None:
        (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": model_name, "load_in_4bit": True}}))
    (run / "result.json").write_text(json.dumps(result))
    return run


def _quantized_copy(base, dest):
    """`base` with a bitsandbytes quantization_config in its config, as Unsloth's -bnb-4bit repos have."""
    import shutil

    shutil.copytree(base, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_merge_maps_the_bnb_base_back_to_16bit_and_defaults_to_bf16(adapter, tmp_path):
    base, adapter_dir = adapter
    # The hub layout in miniature: NAME (16-bit) beside NAME-bnb-4bit (pre-quantized), the adapter naming the latter.
    sixteen = tmp_path / "Tiny-Instruct"
    import shutil

    shutil.copytree(base, sixteen)
    four = _quantized_copy(base, tmp_path / "Tiny-Instruct-bnb-4bit")
    run = _unsloth_like_run(tmp_path, base, adapter_dir, str(four), None, {"load_in_4bit": True, "device": "cuda"})
    report = merge_mod.merge(run, tmp_path / "merged")
    assert report["base"] == str(sixteen) and report["base_path"] == str(sixteen.resolve())
    assert report["dtype"] == "bfloat16" and report["max_abs_logit_diff"] <= report["tolerance"]
    merged_cfg = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in merged_cfg and merged_cfg.get("dtype", merged_cfg.get("torch_dtype")) == "bfloat16"


def test_merge_takes_the_runs_model_name_over_the_adapters_4bit_repo(adapter, tmp_path):
    base, adapter_dir = adapter
    # The adapter names an Unsloth hub repo (unreachable here); the run's config.yaml names the model asked for.
    run = _unsloth_like_run(
        tmp_path, base, adapter_dir, "unsloth/Tiny-Instruct-unsloth-bnb-4bit", str(base), {"device": "cpu"}
    )
    report = merge_mod.merge(run, tmp_path / "merged", dtype="float32")
    assert report["base"] == str(base)


def test_a_quantized_base_is_refused_and_nothing_is_written(adapter, tmp_path):
    base, adapter_dir = adapter
    four = _quantized_copy(base, tmp_path / "Tiny-bnb-4bit")
    out = tmp_path / "merged"
    with pytest.raises(KitError, match="quantization_config"):
        merge_mod.merge(adapter_dir, out, base=str(four))
    assert not out.exists()


@pytest.mark.parametrize(
    "name,expected",
    [
        ("unsloth/Qwen2.5-7B-Instruct-unsloth-bnb-4bit", "unsloth/Qwen2.5-7B-Instruct"),
        ("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", "unsloth/Meta-Llama-3.1-8B-Instruct"),
        ("unsloth/mistral-7b-instruct-v0.3-bnb-4bit", "unsloth/mistral-7b-instruct-v0.3"),
        ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct"),
    ],
)
def test_base_for_maps_unsloth_4bit_names(name, expected):
    assert merge_mod.base_for({"base_model_name_or_path": name}, {}) == expected
    # A run that started from a merged folder (init_from) merges into that folder, not model.name.
    info = {"config": {"model": {"name": "other/model"}, "init_from": "runs/a/merged"}}
    assert merge_mod.base_for({"base_model_name_or_path": name}, info) == expected


@pytest.mark.parametrize(
    "result,adapter_base,expected",
    [
        ({"load_in_4bit": True, "device": "cuda"}, "x", "bfloat16"),
        ({"load_in_4bit": False, "device": "cuda"}, "x", "bfloat16"),  # 16-bit LoRA on a GPU
        ({"load_in_4bit": False, "device": "cpu"}, "x", "float32"),  # the CPU demo
        ({}, "unsloth/Qwen2.5-7B-Instruct-unsloth-bnb-4bit", "bfloat16"),  # no result.json: the name says 4-bit
    ],
)
def test_default_dtype(result, adapter_base, expected):
    assert merge_mod.default_dtype({"result": result}, {"base_model_name_or_path": adapter_base}) == expected


def test_probe_inputs_go_to_the_models_device(adapter):
    from transformers import AutoTokenizer

    base, _ = adapter

    class OnAnotherDevice:  # a model whose weights live elsewhere (a GPU): inputs must follow it
        device = torch.device("meta")

        def __call__(self, input_ids, attention_mask):
            assert input_ids.device.type == "meta" and attention_mask.device.type == "meta"
            return type("Out", (), {"logits": torch.zeros(1, input_ids.shape[1], 8, device="meta")})()

    with pytest.raises(NotImplementedError):  # meta tensors cannot be copied back: the forward was reached
        merge_mod._probe_logits(OnAnotherDevice(), AutoTokenizer.from_pretrained(base), None)


def test_serve_command_and_card_notes_per_family(tmp_path):
    out = tmp_path / "merged"
    assert merge_mod.serve_command(out, "mistral", "mistral").endswith("--tool-call-parser mistral --tokenizer-mode hf")
    llama = merge_mod.serve_command(out, "llama3_1", "llama3_json")
    assert f"--chat-template {out / 'chat_template.jinja'}" in llama
    assert "--chat-template" not in merge_mod.serve_command(out, "qwen2_5", "hermes")
    report = {"dtype": "bfloat16", "max_abs_logit_diff": 0.1, "tolerance": 0.25, "serve_command": llama}
    card = merge_mod.model_card(out, "b", tmp_path, "llama3_1", report, {})
    assert llama in card and "tool_chat_template_llama3.1_json.jinja" in card
