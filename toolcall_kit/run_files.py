"""The one place that names what a run folder holds (`runs/<name>/`): every stage, the CLI, the notebooks and
the tests find a run's files through `RunFiles`, so a name is spelled once.

    runs/<name>/
      config.yaml              the resolved RunConfig the run was started with
      data/                    stage 01's prepared copies (train/, eval/ with rejects.jsonl)
      tokens/lengths.png       stage 02's length histogram
      adapter/                 the final LoRA adapter (PEFT layout) and the tokenizer
      model/                   method: full: the trained model (fp32) and the tokenizer, instead of adapter/
      checkpoints/checkpoint-N Trainer checkpoints (trainer_state.json holds the log history)
      metrics.jsonl            one JSON line per logged step
      result.json              training's summary: steps, seconds, tokens/s, peak memory
      data_fingerprints.json   hashes and token statistics of the data the run trained on
      loss.png                 the loss curve (the same plot the notebook widget shows)
      merged/                  stage 04's 16-bit model (merge_report.json inside)
      eval/, eval_base/        stage 05's reports for the fine-tuned and the untouched model
      stages/NN_<stage>.json   what each pipeline stage recorded (stages/demo.json: the demo's figures)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The pipeline's stages, in the order of the numbered notebooks.
STAGES = ("prepare", "tokens", "train", "merge", "evaluate")

# Names of files that are not tied to one run folder.
CONFIG = "config.yaml"
RESULT = "result.json"
METRICS = "metrics.jsonl"
DATA_FINGERPRINTS = "data_fingerprints.json"
LOSS_PLOT = "loss.png"
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


@dataclass(frozen=True)
class RunFiles:
    """Paths inside one run folder."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def tokens_plot(self) -> Path:
        return self.root / "tokens" / "lengths.png"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def trained_model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def result(self) -> Path:
        return self.root / RESULT

    @property
    def data_fingerprints(self) -> Path:
        return self.root / DATA_FINGERPRINTS

    @property
    def loss_plot(self) -> Path:
        return self.root / LOSS_PLOT

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def eval_base(self) -> Path:
        return self.root / "eval_base"

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    def stage(self, name: str) -> Path:
        """A pipeline stage's record, numbered as the notebooks are: stages/03_train.json; "demo" is unnumbered."""
        if name in STAGES:
            return self.stages / f"{STAGES.index(name) + 1:02d}_{name}.json"
        return self.stages / f"{name}.json"
