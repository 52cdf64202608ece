import json

import pytest

from toolcall_kit.cli import main
from toolcall_kit.errors import KitError
from toolcall_kit.plan import arch_for, estimate, lora_params


@pytest.mark.parametrize(
    "name,published",
    [
        # Parameter counts published on the models' hub pages.
        ("meta-llama/Llama-3.1-8B-Instruct", 8.03e9),
        ("Qwen/Qwen2.5-7B-Instruct", 7.62e9),
        ("mistralai/Mistral-7B-Instruct-v0.3", 7.25e9),
        ("packaged:smollm2-135m-instruct", 0.1345e9),
    ],
)
def test_param_counts_match_published(name, published):
    assert arch_for(name).params() == pytest.approx(published, rel=0.01)


def test_lora_count_llama8b_r16_all_linear():
    # PEFT reports 41,943,040 trainable parameters for this setting.
    assert lora_params(arch_for("llama-3.1-8b"), 16) == 41_943_040


def test_4bit_and_checkpointing_lower_memory_and_small_gpu_does_not_fit():
    full = estimate("llama-3.1-8b", load_in_4bit=False, gradient_checkpointing=False, gpu="a10g-24gb")
    q = estimate("llama-3.1-8b", load_in_4bit=True, gradient_checkpointing=True, gpu="a10g-24gb")
    assert q["memory_gib"]["total"] < full["memory_gib"]["total"]
    assert q["fits"] and not full["fits"] and "advice" in full


def test_time_scales_with_tokens_and_price():
    a = estimate("qwen2.5-7b", tokens=1_000_000, price_per_hour=2.0)
    b = estimate("qwen2.5-7b", tokens=2_000_000, price_per_hour=2.0)
    assert b["hours"] == pytest.approx(2 * a["hours"], rel=0.05)
    assert b["cost_usd"] == pytest.approx(b["hours"] * 2.0, rel=0.01)


def test_local_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 1000,
        "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}))
    arch = arch_for(str(tmp_path))
    assert (arch.hidden, arch.kv_heads, arch.tied_embeddings) == (64, 2, True)


def test_unknown_gpu_is_an_error():
    with pytest.raises(KitError, match="gpu"):
        estimate("qwen2.5-7b", gpu="tpu-v9")


def test_cli_plan_json(capsys):
    assert main(["plan", "--model", "qwen2.5-7b", "--gpu", "t4-16gb", "--tokens", "1000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpu"] == "t4-16gb" and out["training_tokens"] == 1000
