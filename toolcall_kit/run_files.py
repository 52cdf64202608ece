"""The one place that names what a run folder (`runs/<name>/`) holds: every stage, the CLI, the notebooks and
the tests find a run's files through `RunFiles`, so a name is spelled once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The pipeline's stages, in the order of the numbered notebooks.
STAGES = ("prepare", "tokens", "train", "merge", "evaluate")

CONFIG = "config.yaml"
TRAINER_STATE = "trainer_state.json"  # transformers' name, inside each checkpoint
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's name, inside an adapter folder
MODEL_CONFIG = "config.json"  # transformers' name, inside a model folder
MERGE_REPORT = "merge_report.json"
# An evaluation folder.
REPORT = "report.json"
PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.md"
CONFUSION_PLOT = "confusion.png"
ACCURACY_PLOT = "accuracy_by_tool.png"
# A prepared-data folder.
PREPARED_TRAIN = "train.jsonl"
PREPARED_EVAL = "eval.jsonl"
REJECTS = "rejects.jsonl"


@dataclass
class RunFiles:
    root: Path

    def __post_init__(self) -> None:
        self.root = root = Path(self.root)
        self.config = root / CONFIG  # the resolved RunConfig the run was started with
        self.data = root / "data"  # stage 01's prepared copies (train/, eval/, each with rejects.jsonl)
        self.tokens_plot = root / "tokens" / "lengths.png"  # stage 02's histogram of tokens per example
        self.adapter = root / "adapter"  # the final LoRA adapter (PEFT layout) and the tokenizer
        self.trained_model = root / "model"  # method: full: the trained model and tokenizer, instead of adapter/
        self.checkpoints = root / "checkpoints"  # Trainer's checkpoint-N folders, each with its TRAINER_STATE
        self.metrics = root / "metrics.jsonl"  # one JSON line per logged step
        self.result = root / "result.json"  # training's summary: steps, seconds, tokens/s, peak memory
        self.data_fingerprints = root / "data_fingerprints.json"  # hashes and token statistics of the data
        self.loss_plot = root / "loss.png"  # the loss curve (the plot the notebook's widget shows)
        self.merged = root / "merged"  # stage 04's 16-bit model, MERGE_REPORT inside
        self.eval = root / "eval"  # stage 05's report on the fine-tuned model
        self.eval_base = root / "eval_base"  # and on the untouched base model
        self.stages = root / "stages"  # what each pipeline stage recorded (demo.json: the demo's figures)

    def stage(self, name: str) -> Path:
        """A stage's record, numbered as the notebooks are (stages/03_train.json); "demo" is unnumbered."""
        if name in STAGES:
            return self.stages / f"{STAGES.index(name) + 1:02d}_{name}.json"
        return self.stages / f"{name}.json"
