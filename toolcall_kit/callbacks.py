"""Trainer callbacks: the run log (metrics.jsonl), health checks, and the live loss curve.

The callback classes subclass TrainerCallback, imported on first use (`__getattr__`): unsloth must be
imported before transformers.
"""

from __future__ import annotations

import functools
import html
import io
import logging
import math
import os
import resource
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .io import atomic_open, write_jsonl
from .run_files import RunFiles

log = logging.getLogger("toolcall_kit.train")

# Trainer's end-of-training summary (train_runtime, ...): goes to result.json, not to the curve.
_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss")

# Health thresholds, chosen to stay quiet on ordinary noisy curves (tested on the tiny model and SmolLM2).
SPIKE_FACTOR = 2.0  # loss > 2x the median of the last WINDOW logged losses (and > median + 0.5 nats)
GRAD_FACTOR = 10.0  # grad norm > 10x the median of the last WINDOW grad norms
WINDOW = 10
FLAT_AFTER = 20  # logged train points before "the loss never moves" can be judged
FLAT_REL = 0.01  # < 1% change between the mean of the first 5 and of the last 5 points


@functools.cache  # one class per name
def __getattr__(name: str) -> type:
    logic = {"MetricsCallback": _Metrics, "HealthCallback": _Health, "LivePlotCallback": _LivePlot}.get(name)
    if logic is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from transformers import TrainerCallback

    return type(name, (logic, TrainerCallback), {"__doc__": logic.__doc__})


def memory_now() -> dict[str, float]:
    """Peak RSS of this process (GiB) and, with CUDA, peak allocated / reserved GPU memory (GiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out = {"peak_rss_gib": round(peak / (1 << 30) if sys.platform == "darwin" else peak / (1 << 20), 3)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["gpu_peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / (1 << 30), 3)
        out["gpu_peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / (1 << 30), 3)
    return out


class RunLog:
    """metrics.jsonl rows and health warnings; `flush()` rewrites the file atomically. From `follow` on, the
    rows are Trainer's `state.log_history`: checkpoints save it, so a resume cuts metrics.jsonl back."""

    min_interval_s = 5.0  # between rewrites; saves, evaluations and the end force one

    def __init__(self, run_dir: str | Path, main: bool = True):
        self.path = RunFiles(run_dir).metrics
        self.main = main
        self.rows: list[dict[str, Any]] = []
        self._last_flush = 0.0

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if "warning" in r]

    def follow(self, state) -> None:
        state.log_history.extend(self.rows)
        self.rows = state.log_history

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def warn(self, step: int, kind: str, message: str) -> None:
        log.warning("step %d: %s", step, message)
        self.add({"step": step, "warning": kind, "message": message})

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.main and (force or now - self._last_flush >= self.min_interval_s):
            write_jsonl(self.path, (r for r in self.rows if not any(k in r for k in _SUMMARY_KEYS)))
            self._last_flush = now


class BatchTracker:
    """Wraps the Trainer's data collator: counts real / padded / trained tokens of each training batch (not
    evaluation's). Batches queue as they are collated, since accelerate loads one batch ahead."""

    def __init__(self, collator, model):
        self.collator = collator
        self.model = model
        self.queue: list[tuple[int, int, int]] = []

    def __call__(self, features: list[dict[str, Any]]):
        real = sum(len(f["input_ids"]) for f in features)
        batch = self.collator(features)
        if getattr(self.model, "training", True):
            trained = int((batch["labels"] != -100).sum()) if "labels" in batch else 0
            self.queue.append((real, int(batch["input_ids"].numel()), trained))
        return batch

    def pop_step(self, n: int) -> tuple[int, int, int]:
        """(real, processed, trained) tokens of the next optimizer step's n batches."""
        taken, self.queue = self.queue[:n], self.queue[n:]
        return sum(b[0] for b in taken), sum(b[1] for b in taken), sum(b[2] for b in taken)


class _Metrics:
    """Turns Trainer logs into metrics.jsonl rows with tokens/s and memory; counts tokens for result.json."""

    def __init__(self, runlog: RunLog, tracker: BatchTracker):
        self.runlog = runlog
        self.tracker = tracker
        self.totals: Counter[str] = Counter()  # real_tokens, processed_tokens, trained_tokens, steps
        self._real_since_log = 0
        self._last_log = time.perf_counter()

    def on_train_begin(self, args, state, control, **kw):
        self.runlog.follow(state)
        self._real_since_log = 0
        self._last_log = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        real, processed, trained = self.tracker.pop_step(args.gradient_accumulation_steps)
        self.totals.update(real_tokens=real, processed_tokens=processed, trained_tokens=trained, steps=1)
        self._real_since_log += real

    def on_log(self, args, state, control, logs=None, **kw):
        logs = dict(logs or {})
        if any(k in logs for k in _SUMMARY_KEYS):
            return
        # NaN/inf become null: metrics.jsonl stays strict JSON (the error row says what happened).
        row = {"step": state.global_step}
        for k, v in logs.items():
            if isinstance(v, (int, float)) and k != "total_flos":
                row[k] = float(v) if math.isfinite(v) else None
        if "loss" in logs:
            now = time.perf_counter()
            # Tokens of this process since the last log x processes (data parallel shards are equal-sized).
            if now > self._last_log:
                tokens = self._real_since_log * max(1, args.world_size)
                row["tokens_per_s"] = round(tokens / (now - self._last_log), 1)
            self._real_since_log = 0
            self._last_log = now
            processed = self.totals["processed_tokens"]
            if processed:
                row["real_token_fraction"] = round(self.totals["real_tokens"] / processed, 4)
        row.update(memory_now())
        history = state.log_history
        if history and history[-1].get("step") == state.global_step and logs.keys() <= history[-1].keys():
            history[-1] = row  # Trainer.log appended these logs just before calling back
        else:
            self.runlog.add(row)
        self.runlog.flush(force="eval_loss" in row)

    def on_save(self, args, state, control, **kw):
        self.runlog.flush(force=True)

    on_train_end = on_save


def _trained_weights_finite(model) -> bool:
    import torch

    return all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad)


def _recent_median(values: list[float]) -> float | None:
    """The median of the last WINDOW values, once there are 5 to judge by."""
    recent = values[-WINDOW:]
    return statistics.median(recent) if len(recent) >= 5 else None


class _Health:
    """Stops on non-finite loss or weights (nothing is saved from them); warns on suspicious curves."""

    def __init__(self, runlog: RunLog, model=None):
        self.runlog = runlog
        self.model = model
        self.fatal: str | None = None
        self.losses: list[float] = []
        self.grads: list[float] = []
        self.evals: list[tuple[int, float, float | None]] = []  # (step, eval_loss, train loss then)
        self.warned_once: set[str] = set()  # flat_loss and zero_grad are said once a run
        self._overfit_warned = False

    def _stop(self, control, step: int, message: str) -> None:
        if self.fatal is None:
            self.fatal = message
            self.runlog.add({"step": step, "error": "non_finite", "message": message})
            log.error("%s", message)
        control.should_training_stop = True
        control.should_save = False
        control.should_evaluate = False

    def _warn_once(self, step: int, kind: str, message: str) -> None:
        if kind not in self.warned_once:
            self.warned_once.add(kind)
            self.runlog.warn(step, kind, message)

    def on_step_end(self, args, state, control, **kw):
        # LoRA weights are a few MB: checking them every step costs far less than the step itself, and it
        # catches a NaN update even when logging_steps > 1 would hide it until after a checkpoint.
        step = state.global_step
        if self.fatal is None and self.model is not None and not _trained_weights_finite(self.model):
            message = f"trained weights became NaN/inf at step {step}: training stopped; "
            self._stop(control, step, message + "lower train.learning_rate or check the data")
        elif self.fatal is not None:
            self._stop(control, step, self.fatal)

    def on_epoch_end(self, args, state, control, **kw):
        if self.fatal is not None:
            control.should_save = False
            control.should_evaluate = False

    def on_log(self, args, state, control, logs=None, **kw):
        logs, step = logs or {}, state.global_step
        loss, grad, eval_loss = logs.get("loss"), logs.get("grad_norm"), logs.get("eval_loss")
        if loss is not None and not math.isfinite(loss):
            hint = "lower train.learning_rate (or raise train.warmup_ratio) and resume from the last good checkpoint"
            return self._stop(control, step, f"loss is {loss} at step {step}: training stopped; {hint}")
        if loss is not None:
            self._check_loss(step, loss)
        if grad is not None and math.isfinite(grad):
            self._check_grad(step, grad)
        if eval_loss is not None and not math.isfinite(eval_loss):
            return self._stop(control, step, f"eval loss is {eval_loss} at step {step}: training stopped")
        if eval_loss is not None:
            self.evals.append((step, eval_loss, self.losses[-1] if self.losses else None))
            self._check_overfit(step)

    def _check_loss(self, step: int, loss: float) -> None:
        med = _recent_median(self.losses)
        if med is not None and loss > SPIKE_FACTOR * med and loss > med + 0.5:
            message = f"loss spike: {loss:.4g} vs recent median {med:.4g} (x{loss / med:.1f})"
            self.runlog.warn(step, "loss_spike", message)
        self.losses.append(loss)
        if len(self.losses) < FLAT_AFTER:
            return
        first, last = statistics.mean(self.losses[:5]), statistics.mean(self.losses[-5:])
        if abs(first - last) <= FLAT_REL * max(abs(first), 1e-8):
            self._warn_once(
                step,
                "flat_loss",
                f"loss has not moved in {len(self.losses)} logged steps ({first:.4g} -> {last:.4g}): "
                "learning rate too low, frozen weights, or nothing to learn in the labels",
            )

    def _check_grad(self, step: int, grad: float) -> None:
        med = _recent_median(self.grads)
        if med is not None and med > 0 and grad > GRAD_FACTOR * med:
            self.runlog.warn(
                step,
                "grad_explosion",
                f"gradient norm {grad:.4g} is {grad / med:.0f}x its recent median {med:.4g} "
                "(clipped to train.max_grad_norm, but the learning rate may be too high)",
            )
        self.grads.append(grad)
        if grad == 0:
            self._warn_once(
                step,
                "zero_grad",
                f"gradient norm is 0 at step {step}: the weights are not learning (a learning rate so "
                "high that the outputs saturated, frozen weights, or no trained tokens in the batch)",
            )

    def _check_overfit(self, step: int) -> None:
        """Eval loss rising over the last 3 evaluations while train loss fell: said once per rise."""
        if len(self.evals) < 3:
            return
        (_, e1, t1), (_, e2, _), (_, e3, t3) = self.evals[-3:]
        if not e3 > e2 > e1:
            self._overfit_warned = False
        elif t1 is not None and t3 is not None and t3 < t1 and not self._overfit_warned:
            self._overfit_warned = True
            self.runlog.warn(
                step,
                "overfitting",
                f"eval loss rose over the last 3 evaluations ({e1:.4g} -> {e3:.4g}) while train loss fell "
                f"({t1:.4g} -> {t3:.4g}): over-fitting; fewer epochs or more varied data",
            )


def render_curve(rows: list[dict[str, Any]], title: str = "") -> bytes:
    """PNG bytes of the training curves: loss + eval loss, learning rate, grad norm (x = optimizer step)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def series(key: str, among: list[dict[str, Any]]) -> tuple[list, list]:
        points = [(r["step"], r[key]) for r in among if r.get(key) is not None]
        return [s for s, _ in points], [v for _, v in points]

    fig = Figure(figsize=(11, 3.2), dpi=90)
    FigureCanvasAgg(fig)
    ax_loss, ax_lr, ax_grad = fig.subplots(1, 3)
    for key, style, label in (("loss", "-", "train"), ("eval_loss", "o-", "eval")):
        steps, values = series(key, rows)
        if steps:
            ax_loss.plot(steps, values, style, label=label, lw=1.2)
    for w in rows:
        if "warning" in w or "error" in w:
            ax_loss.axvline(w["step"], color="red" if "error" in w else "orange", alpha=0.4, lw=0.8)
    if ax_loss.get_legend_handles_labels()[0]:  # a curve was drawn (the marker lines have no label)
        ax_loss.legend(loc="upper right", fontsize=8)
    train = [r for r in rows if r.get("loss") is not None]
    ax_lr.plot(*series("learning_rate", train), color="tab:green", lw=1.2)
    ax_grad.plot(*series("grad_norm", train), color="tab:purple", lw=1.2)
    titles = ("loss (nats / trained token)", "learning rate", "grad norm (before clipping)")
    for ax, name in zip((ax_loss, ax_lr, ax_grad), titles, strict=True):
        ax.set_title(name)
        ax.set_xlabel("step")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class _LivePlot:
    """loss.png at each log step (throttled), one in-place figure in Jupyter, and a tqdm bar."""

    def __init__(self, runlog: RunLog, png_path: str | Path, title: str = "", min_interval_s: float = 2.0):
        self.runlog = runlog
        self.png_path = Path(png_path)
        self.title = title
        # A redraw costs ~0.1 s, more than a step of the tiny model or on a fast GPU: at most every
        # min_interval_s seconds and 20 draw-times (under ~5% of the run), and at evaluations, warnings, end.
        self.min_interval_s = min_interval_s
        # A Jupyter kernel, not a terminal IPython or a script.
        shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
        self.notebook = shell is not None and "IPKernelApp" in getattr(shell, "config", {})
        self.bar = self.out = self.warn_box = None
        self._last_draw = self._draw_cost = 0.0
        self._shown_warnings = 0

    def on_train_begin(self, args, state, control, **kw):
        if not self.runlog.main:
            return
        if self.notebook:
            import ipywidgets as widgets
            from IPython.display import display

            self.out, self.warn_box = widgets.Output(), widgets.HTML("")
            display(widgets.VBox([self.out, self.warn_box]))
        from tqdm.auto import tqdm  # the notebook bar in Jupyter, the terminal one elsewhere

        off = os.environ.get("TOOLCALL_KIT_NO_PROGRESS") == "1"
        bar = dict(desc="train", unit="step", dynamic_ncols=True, file=sys.stderr, disable=off)
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, **bar)

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kw):
        if not self.runlog.main:
            return
        logs = logs or {}
        if self.bar is not None and "loss" in logs:
            lr = {"lr": f"{logs['learning_rate']:.2e}"} if "learning_rate" in logs else {}
            self.bar.set_postfix({"loss": f"{logs['loss']:.4g}", **lr}, refresh=False)
        self.draw(force="eval_loss" in logs or len(self.runlog.warnings) != self._shown_warnings)

    def on_train_end(self, args, state, control, **kw):
        if self.runlog.main:
            self.draw(force=True)
            if self.bar is not None:
                self.bar.close()

    def draw(self, force: bool = False) -> None:
        start = time.monotonic()
        if not force and start - self._last_draw < max(self.min_interval_s, 20 * self._draw_cost):
            return
        png = render_curve(self.runlog.rows, self.title)
        with atomic_open(self.png_path, "wb") as f:
            f.write(png)
        self._last_draw = time.monotonic()
        self._draw_cost = self._last_draw - start
        if self.out is not None:
            from IPython.display import Image, display

            with self.out:
                self.out.clear_output(wait=True)
                display(Image(data=png))
        warns = self.runlog.warnings
        if self.warn_box is not None and len(warns) != self._shown_warnings:
            items = "".join(f"<li>step {w['step']}: {html.escape(w['message'])}</li>" for w in warns[-10:])
            self.warn_box.value = f"<b>warnings</b><ul>{items}</ul>"
        self._shown_warnings = len(warns)
