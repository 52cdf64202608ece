"""Run config: every shipped config loads; unknown keys and impossible values name the key; overrides."""

from pathlib import Path

import pytest
import yaml

from toolcall_kit.config import (
    RunConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    mixed_precision,
    parse_override,
    sft_kwargs,
)
from toolcall_kit.errors import KitError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    names = {p.name for p in CONFIGS}
    for want in (
        "llama3_1_8b_qlora.yaml",
        "qwen2_5_7b_qlora.yaml",
        "mistral_7b_qlora.yaml",
        "demo_cpu.yaml",
        "smoke.yaml",
    ):
        assert want in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert cfg.output.name
    # The file opens with the exact command that runs it.
    first = path.read_text().splitlines()[0]
    assert first == f"# toolcall-kit train --config configs/{path.name}", first
    # And the resolved config round-trips through YAML unchanged (what the run folder stores).
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


@pytest.mark.parametrize("name", ["llama3_1_8b_qlora", "qwen2_5_7b_qlora", "mistral_7b_qlora"])
def test_gpu_configs_use_the_fields_usual_values(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.model.load_in_4bit and cfg.backend == "unsloth"
    assert cfg.lora.r == 16 and 16 <= cfg.lora.alpha <= 32
    assert cfg.train.learning_rate == 2e-4 and cfg.train.lr_scheduler == "cosine"
    assert cfg.train.warmup_ratio == 0.05 and 1 <= cfg.train.epochs <= 3
    assert cfg.train.optim == "adamw_8bit"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_families_are_known(path):
    from toolcall_kit.templates import get_family

    cfg = load_config(path)
    if cfg.model.family is not None:
        assert get_family(cfg.model.family).name == cfg.model.family


def test_demo_config_is_cpu_sized():
    cfg = load_config(ROOT / "configs" / "demo_cpu.yaml")
    assert cfg.model.name == "packaged:smollm2-135m-instruct"
    assert cfg.backend in ("auto", "hf") and not cfg.model.load_in_4bit
    assert cfg.method == "full" and cfg.full.top_layers == 15  # the dev split's pick (demo_experiments.md)
    # About 8 minutes of training on 2 cores (benchmarks/demo_experiments.md): steps x batch bounded.
    assert 60 <= cfg.train.max_steps * cfg.train.batch_size <= 260 and cfg.train.group_by_length
    assert cfg.train.eval_limit and cfg.train.eval_limit <= 50 and not cfg.train.eval_steps


def test_full_finetuning_refuses_4bit_weights_and_unknown_methods():
    with pytest.raises(KitError, match="method: full trains the weights themselves.*use method: lora"):
        load_config(None, {"method": "full", "model.load_in_4bit": True, "train.max_steps": 1})
    with pytest.raises(KitError, match="method: must be one of 'lora' or 'full', got 'freeze'"):
        load_config(None, {"method": "freeze", "train.max_steps": 1})
    with pytest.raises(KitError, match="full.top_layers: must be >= 1, got 0"):
        load_config(None, {"method": "full", "full.top_layers": 0, "train.max_steps": 1})


BASE = {"train": {"max_steps": 5}}


@pytest.mark.parametrize(
    "data, key",
    [
        ({**BASE, "lora": {"r": 0}}, "lora.r: must be > 0, got 0"),
        ({**BASE, "lora": {"rank": 8}}, "lora.rank: unknown key (known: r, alpha, dropout"),
        ({**BASE, "lora": {"alpah": 8}}, "lora.alpah: unknown key (did you mean 'alpha'?)"),
        ({**BASE, "train": {"max_steps": 5, "learning_rate": 0}}, "train.learning_rate: must be > 0"),
        ({**BASE, "train": {"max_steps": 5, "learning_rate": -1e-4}}, "train.learning_rate: must be > 0"),
        ({"train": {"max_steps": None}}, "train: set train.epochs or train.max_steps"),
        ({**BASE, "train": {"max_steps": 0}}, "train.max_steps: must be >= 1"),
        ({**BASE, "train": {"max_steps": 5, "batch_size": 0}}, "train.batch_size: must be >= 1"),
        ({**BASE, "train": {"max_steps": 5, "optim": "adam"}}, "train.optim: must be one of 'adamw_torch'"),
        ({**BASE, "train": {"max_steps": 5, "lr_scheduler": "cosin"}}, "train.lr_scheduler: must be one of"),
        ({**BASE, "train": {"max_steps": "ten"}}, "train.max_steps: expected an integer"),
        ({**BASE, "train": {"max_steps": 5.0}}, "train.max_steps: expected an integer"),
        ({**BASE, "train": {"max_steps": 5, "learning_rate": True}}, "train.learning_rate: expected a number"),
        ({**BASE, "train": {"max_steps": 5, "learning_rate": float("nan")}}, "train.learning_rate: must be a finite"),
        ({**BASE, "train": {"max_steps": 5, "learning_rate": 2.0}}, "train.learning_rate: must be <= 1.0"),
        ({**BASE, "lora": 3}, "lora: must be a mapping of keys, got 3"),
        ({**BASE, "init_from": ""}, "init_from: must not be empty"),
        ({**BASE, "train": {"max_steps": 5, "packing": "yes"}}, "train.packing: expected true or false"),
        ({**BASE, "model": {"max_seq_length": 8}}, "model.max_seq_length: must be >= 16"),
        ({**BASE, "model": {"dtype": "fp8"}}, "model.dtype: must be one of"),
        ({**BASE, "lora": {"dropout": 1.5}}, "lora.dropout: must be < 1.0, got 1.5"),
        ({**BASE, "lora": {"top_layers": 0}}, "lora.top_layers: must be >= 1, got 0"),
        ({**BASE, "train": {"max_steps": 5, "eval_limit": 0}}, "train.eval_limit: must be >= 1, got 0"),
        ({**BASE, "lora": {"target_modules": []}}, "lora.target_modules: must be 'all-linear' or a non-empty list of module names, got []"),
        ({**BASE, "lora": {"target_modules": "everything"}}, "lora.target_modules: must be 'all-linear' or a"),
        ({**BASE, "lora": {"target_modules": ["q_proj", ""]}}, "lora.target_modules: must be 'all-linear' or a"),
        ({**BASE, "backend": "jax"}, "backend: must be one of 'auto', 'unsloth' or 'hf', got 'jax'"),
        ({**BASE, "trainer": {}}, "trainer: unknown key (did you mean 'train'?)"),
        ({**BASE, "output": {"name": "a/b"}}, "output.name: must be a plain folder name"),
    ],
)
def test_bad_values_name_the_key(data, key):
    with pytest.raises(KitError) as e:
        config_from_dict(data)
    assert key in str(e.value)


def test_error_from_a_file_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  max_steps: 3\nlora:\n  r: -2\n")
    with pytest.raises(KitError, match=r"bad.yaml: lora.r: must be > 0, got -2"):
        load_config(f)


def test_overrides_parse_with_yaml_scalar_rules():
    assert parse_override("train.max_steps=20") == ("train.max_steps", 20)
    # YAML 1.1 (PyYAML's default) reads 2e-4 as a string; the config reads numbers as YAML 1.2 does.
    assert parse_override("train.learning_rate=2e-4") == ("train.learning_rate", 2e-4)
    assert parse_override("train.learning_rate=2.0e-4") == ("train.learning_rate", 2e-4)
    assert parse_override("model.load_in_4bit=true") == ("model.load_in_4bit", True)
    assert parse_override("train.epochs=null") == ("train.epochs", None)
    assert parse_override("lora.target_modules=[q_proj, v_proj]") == (
        "lora.target_modules",
        ["q_proj", "v_proj"],
    )
    assert parse_override("output.name=a=b") == ("output.name", "a=b")
    with pytest.raises(KitError, match="expected KEY=VALUE"):
        parse_override("train.max_steps")


def test_cli_and_notebook_overrides_reach_the_same_config():
    path = ROOT / "configs" / "smoke.yaml"
    from_cli = load_config(
        path, ["train.max_steps=20", "train.learning_rate=2e-4", "lora.r=4", "backend=unsloth"]
    )
    from_dict = load_config(
        path, {"train.max_steps": 20, "train.learning_rate": 2e-4, "lora": {"r": 4}, "backend": "unsloth"}
    )
    assert from_cli == from_dict
    assert from_cli.train.max_steps == 20 and from_cli.train.learning_rate == 2e-4
    assert from_cli.lora.r == 4 and from_cli.backend == "unsloth"
    # Untouched values stay as the file says.
    assert from_cli.model.name == "tiny:llama"


def test_bad_override_names_the_key():
    path = ROOT / "configs" / "smoke.yaml"
    with pytest.raises(KitError, match=r"train.max_stepz: unknown key \(did you mean 'max_steps'\?\)"):
        load_config(path, ["train.max_stepz=3"])
    with pytest.raises(KitError, match="lora.r: must be > 0, got 0"):
        load_config(path, {"lora.r": 0})
    with pytest.raises(KitError, match="train: must be a mapping of keys, got 3"):
        load_config(path, ["train=3"])
    with pytest.raises(KitError, match=r"train.a: unknown key"):
        load_config(path, ["train.a.b=3"])
    with pytest.raises(KitError, match="backend.x: backend is not a section"):
        apply_overrides({"backend": "hf"}, ["backend.x=3"])


def test_a_notebooks_section_override_keeps_the_sections_other_keys():
    data = {"lora": {"r": 8, "alpha": 16}}
    assert apply_overrides(data, {"lora": {"r": 4}}) == {"lora": {"r": 4, "alpha": 16}}
    assert data == {"lora": {"r": 8, "alpha": 16}}  # the caller's dict is untouched
    cfg = load_config(None, {"train": {"epochs": 1}, "lora": None})  # an empty section: the defaults
    assert cfg.lora.r == 16 and cfg.output.name == "run"


def test_a_file_reads_scientific_numbers_and_empty_sections(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("lora:\ntrain:\n  max_steps: 3\n  learning_rate: 2e-4\n")
    cfg = load_config(f)
    assert cfg.train.learning_rate == 2e-4 and cfg.output.name == "mine" and cfg.lora.r == 16


def test_validate_checks_values_changed_after_loading():
    cfg = load_config(None, {"train.epochs": 1})
    cfg.lora.r = 0
    with pytest.raises(KitError, match="lora.r: must be > 0, got 0"):
        cfg.validate()


def test_sft_mapping_is_explicit_and_cpu_safe(tmp_path):
    cfg = load_config(ROOT / "configs" / "demo_cpu.yaml")
    kw = sft_kwargs(cfg, tmp_path, on_gpu=False, bf16_ok=False)
    # TRL's defaults that would surprise on CPU are set on purpose.
    assert kw["bf16"] is False and kw["fp16"] is False and kw["use_cpu"] is True
    assert kw["gradient_checkpointing"] is False
    assert kw["max_length"] == cfg.model.max_seq_length
    assert kw["per_device_train_batch_size"] == cfg.train.batch_size == 2 and kw["learning_rate"] == 2e-4
    assert kw["train_sampling_strategy"] == "group_by_length"
    assert kw["max_steps"] == cfg.train.max_steps and kw["lr_scheduler_type"] == "cosine"
    # The demo computes its eval loss once, at the end (train.eval_steps null), and checkpoints.
    assert kw["eval_strategy"] == "no" and kw["save_strategy"] == "steps"
    # The mapping is accepted by TRL's SFTConfig as is.
    from trl import SFTConfig

    args = SFTConfig(**kw)
    assert args.bf16 is False and args.learning_rate == 2e-4 and args.max_length == cfg.model.max_seq_length


def test_mixed_precision_rules():
    assert mixed_precision("auto", on_gpu=False, bf16_ok=False) == (False, False)  # emulated bf16: stay fp32
    assert mixed_precision("auto", on_gpu=False, bf16_ok=True) == (True, False)  # avx512_bf16 / AMX
    assert mixed_precision("float32", on_gpu=False, bf16_ok=True) == (False, False)
    assert mixed_precision("bfloat16", on_gpu=False, bf16_ok=False) == (True, False)
    assert mixed_precision("auto", on_gpu=True, bf16_ok=True) == (True, False)
    assert mixed_precision("auto", on_gpu=True, bf16_ok=False) == (False, True)
    with pytest.raises(KitError, match="model.dtype: float16 training needs a GPU"):
        mixed_precision("float16", on_gpu=False, bf16_ok=True)
    with pytest.raises(KitError, match="model.dtype: bfloat16 is not supported on this GPU"):
        mixed_precision("bfloat16", on_gpu=True, bf16_ok=False)


def test_epochs_only_config_maps_to_epochs(tmp_path):
    cfg = config_from_dict({"train": {"epochs": 2}})
    kw = sft_kwargs(cfg, tmp_path, on_gpu=True, bf16_ok=True)
    assert kw["num_train_epochs"] == 2 and kw["max_steps"] == -1 and kw["bf16"] is True
