"""Trainer callbacks: the run log (metrics.jsonl), health checks, and the live loss curve.

    log = RunLog(run_dir, main=True)
    tracker = BatchTracker(trainer.data_collator, trainer.model)   # counts real, padded and trained tokens
    trainer.data_collator = tracker
    callbacks = [MetricsCallback(log, tracker), HealthCallback(log), LivePlotCallback(log, RunFiles(run_dir).loss_plot)]

- `RunLog` holds the metrics rows and warnings (in the Trainer's `log_history` once training begins, so a
  resumed run's log is the checkpoint's) and rewrites `metrics.jsonl` atomically (at most every few seconds,
  and at each save, evaluation and the end), so a crash never leaves a torn file.
- `HealthCallback`: a non-finite loss or non-finite trained weights stop the run before anything is saved
  from them (the last good checkpoint stays the newest); loss spikes, exploding gradient norms, eval loss
  rising while train loss falls, and a loss that never moves are warnings (log, metrics.jsonl, notebook).
- `LivePlotCallback`: one figure (loss + eval loss, learning rate, grad norm) written to loss.png and, in
  Jupyter, shown in one ipywidgets Output that is redrawn in place; a tqdm bar with steps, loss and ETA.

Transformers is not imported at module top (train.py imports this module after choosing a backend, and
unsloth must come first); `TrainerCallback` is resolved lazily through `_callback_base()`.
"""

from __future__ import annotations

import functools
import io as _io
import logging
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .io import atomic_open, write_jsonl
from .run_files import RunFiles

log = logging.getLogger("toolcall_kit.train")

# Final summary logged by Trainer at the end (train_runtime, ...): goes to result.json, not to the curve.
_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss")

# Health thresholds, chosen to stay quiet on ordinary noisy curves (tested on the tiny model and SmolLM2).
SPIKE_FACTOR = 2.0  # loss > 2x the median of the last WINDOW logged losses (and > median + 0.5 nats)
GRAD_FACTOR = 10.0  # grad norm > 10x the median of the last WINDOW grad norms
WINDOW = 10
FLAT_AFTER = 20  # logged train points before "the loss never moves" can be judged
FLAT_REL = 0.01  # < 1% change between the mean of the first 5 and of the last 5 points


def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


def memory_now() -> dict[str, float]:
    """Peak RSS of this process (GiB) and, with CUDA, peak allocated / reserved GPU memory (GiB)."""
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_gib = peak / (1 << 30) if sys.platform == "darwin" else peak / (1 << 20)
    out = {"peak_rss_gib": round(peak_gib, 3)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["gpu_peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / (1 << 30), 3)
        out["gpu_peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / (1 << 30), 3)
    return out


class RunLog:
    """metrics.jsonl rows and health warnings, in memory; `flush()` rewrites the file atomically.

    Once training begins the rows are the Trainer's own `state.log_history` (`follow`), which every checkpoint
    saves and a resumed run restores: metrics.jsonl is cut back to the checkpoint's step with no code here.
    """

    def __init__(self, run_dir: str | Path, main: bool = True, min_interval_s: float = 5.0):
        self.path = RunFiles(run_dir).metrics
        self.main = main
        self.min_interval_s = min_interval_s
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
        if not self.main:
            return
        now = time.monotonic()
        if force or now - self._last_flush >= self.min_interval_s:
            # Trainer's end-of-training summary (train_runtime, ...) goes to result.json, not to the curve.
            write_jsonl(self.path, (r for r in self.rows if not any(k in r for k in _SUMMARY_KEYS)))
            self._last_flush = now


class BatchTracker:
    """Wraps the Trainer's data collator: counts real / padded / trained tokens of each training batch.

    Batches are queued as they are collated (accelerate loads one batch ahead) and `pop_step(n)` hands the
    oldest n to the step that trained them. Evaluation batches (model in eval mode) are not counted.
    """

    def __init__(self, collator, model):
        self.collator = collator
        self.model = model
        self.queue: list[tuple[int, int, int]] = []

    def __call__(self, features: list[dict[str, Any]]):
        real = sum(len(f["input_ids"]) for f in features)
        batch = self.collator(features)
        if getattr(self.model, "training", True):
            processed = int(batch["input_ids"].numel())
            trained = int((batch["labels"] != -100).sum()) if "labels" in batch else 0
            self.queue.append((real, processed, trained))
        return batch

    def pop_step(self, n: int) -> tuple[int, int, int]:
        """(real, processed, trained) tokens of the next optimizer step's n batches."""
        taken, self.queue = self.queue[:n], self.queue[n:]
        return sum(b[0] for b in taken), sum(b[1] for b in taken), sum(b[2] for b in taken)


@functools.cache
def _metrics_callback_cls():
    base = _callback_base()

    class MetricsCallback(base):
        """Turns Trainer logs into metrics.jsonl rows with tokens/s and memory; counts tokens for result.json."""

        def __init__(self, runlog: RunLog, tracker: BatchTracker | None):
            self.runlog = runlog
            self.tracker = tracker
            self.totals = {"real_tokens": 0, "processed_tokens": 0, "trained_tokens": 0, "steps": 0}
            self._since = {"real": 0, "t0": time.perf_counter()}

        def on_train_begin(self, args, state, control, **kw):
            self.runlog.follow(state)
            self._since = {"real": 0, "t0": time.perf_counter()}

        def on_step_end(self, args, state, control, **kw):
            if self.tracker is None:
                return
            real, processed, trained = self.tracker.pop_step(args.gradient_accumulation_steps)
            self.totals["real_tokens"] += real
            self.totals["processed_tokens"] += processed
            self.totals["trained_tokens"] += trained
            self.totals["steps"] += 1
            self._since["real"] += real

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if any(k in logs for k in _SUMMARY_KEYS):
                return
            row: dict[str, Any] = {"step": state.global_step}
            for k, v in logs.items():
                if isinstance(v, (int, float)) and k != "total_flos":
                    # NaN/inf become null: metrics.jsonl stays strict JSON (the error row says what happened).
                    row[k] = float(v) if math.isfinite(v) else None
            if "loss" in logs:
                now = time.perf_counter()
                dt = now - self._since["t0"]
                world = max(1, args.world_size)
                # Tokens of this process since the last log x processes (data parallel shards are equal-sized).
                if dt > 0 and self.tracker is not None:
                    row["tokens_per_s"] = round(self._since["real"] * world / dt, 1)
                self._since = {"real": 0, "t0": now}
                if self.totals["processed_tokens"]:
                    row["real_token_fraction"] = round(
                        self.totals["real_tokens"] / self.totals["processed_tokens"], 4
                    )
            row.update(memory_now())
            history = state.log_history
            if history and history[-1].get("step") == state.global_step and logs.keys() <= history[-1].keys():
                history[-1] = row  # Trainer.log appended these logs just before calling back
            else:
                self.runlog.add(row)
            self.runlog.flush(force="eval_loss" in row)

        def on_save(self, args, state, control, **kw):
            self.runlog.flush(force=True)

        def on_train_end(self, args, state, control, **kw):
            self.runlog.flush(force=True)

    return MetricsCallback


@functools.cache
def _health_callback_cls():
    base = _callback_base()

    class HealthCallback(base):
        """Stops on non-finite loss or weights (nothing is saved from them); warns on suspicious curves."""

        def __init__(self, runlog: RunLog, model=None):
            self.runlog = runlog
            self.model = model
            self.fatal: str | None = None
            self.losses: list[float] = []
            self.grads: list[float] = []
            self.evals: list[tuple[int, float, float | None]] = []  # (step, eval_loss, train loss then)
            self._flat_warned = False
            self._zero_grad_warned = False
            self._overfit_warned_at: int | None = None

        def _stop(self, control, step: int, message: str) -> None:
            if self.fatal is None:
                self.fatal = message
                self.runlog.add({"step": step, "error": "non_finite", "message": message})
                log.error("%s", message)
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False

        def _trained_params_finite(self) -> bool:
            import torch

            for p in self.model.parameters():
                if p.requires_grad and not torch.isfinite(p).all():
                    return False
            return True

        def on_step_end(self, args, state, control, **kw):
            # LoRA weights are a few MB: checking them every step costs far less than the step itself, and it
            # catches a NaN update even when logging_steps > 1 would hide it until after a checkpoint.
            if self.fatal is None and self.model is not None and not self._trained_params_finite():
                self._stop(
                    control,
                    state.global_step,
                    f"trained weights became NaN/inf at step {state.global_step}: training stopped; "
                    "lower train.learning_rate or check the data",
                )
            elif self.fatal is not None:
                self._stop(control, state.global_step, self.fatal)

        def on_epoch_end(self, args, state, control, **kw):
            if self.fatal is not None:
                control.should_save = False
                control.should_evaluate = False

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            step = state.global_step
            loss = logs.get("loss")
            if loss is not None:
                if not math.isfinite(loss):
                    self._stop(
                        control,
                        step,
                        f"loss is {loss} at step {step}: training stopped; lower train.learning_rate "
                        "(or raise train.warmup_ratio) and resume from the last good checkpoint",
                    )
                    return
                self._check_spike(step, loss)
                self.losses.append(loss)
                self._check_flat(step)
            grad = logs.get("grad_norm")
            if grad is not None and math.isfinite(grad):
                self._check_grad(step, grad)
                self.grads.append(grad)
                if grad == 0 and not self._zero_grad_warned:
                    self._zero_grad_warned = True
                    self.runlog.warn(
                        step,
                        "zero_grad",
                        f"gradient norm is 0 at step {step}: the weights are not learning (a learning rate so "
                        "high that the outputs saturated, frozen weights, or no trained tokens in the batch)",
                    )
            eval_loss = logs.get("eval_loss")
            if eval_loss is not None:
                if not math.isfinite(eval_loss):
                    self._stop(control, step, f"eval loss is {eval_loss} at step {step}: training stopped")
                    return
                self.evals.append((step, eval_loss, self.losses[-1] if self.losses else None))
                self._check_overfit(step)

        def _check_spike(self, step, loss):
            recent = self.losses[-WINDOW:]
            if len(recent) >= 5:
                med = statistics.median(recent)
                if loss > SPIKE_FACTOR * med and loss > med + 0.5:
                    self.runlog.warn(
                        step,
                        "loss_spike",
                        f"loss spike: {loss:.4g} vs recent median {med:.4g} (x{loss / med:.1f})",
                    )

        def _check_grad(self, step, grad):
            recent = self.grads[-WINDOW:]
            if len(recent) >= 5:
                med = statistics.median(recent)
                if med > 0 and grad > GRAD_FACTOR * med:
                    self.runlog.warn(
                        step,
                        "grad_explosion",
                        f"gradient norm {grad:.4g} is {grad / med:.0f}x its recent median {med:.4g} "
                        "(clipped to train.max_grad_norm, but the learning rate may be too high)",
                    )

        def _check_flat(self, step):
            if self._flat_warned or len(self.losses) < FLAT_AFTER:
                return
            first, last = statistics.mean(self.losses[:5]), statistics.mean(self.losses[-5:])
            if abs(first - last) <= FLAT_REL * max(abs(first), 1e-8):
                self._flat_warned = True
                self.runlog.warn(
                    step,
                    "flat_loss",
                    f"loss has not moved in {len(self.losses)} logged steps ({first:.4g} -> {last:.4g}): "
                    "learning rate too low, frozen weights, or nothing to learn in the labels",
                )

        def _check_overfit(self, step):
            if len(self.evals) < 3:
                return
            (_, e1, t1), (_, e2, _), (_, e3, t3) = self.evals[-3:]
            rising = e3 > e2 > e1
            if not rising:
                self._overfit_warned_at = None
                return
            if t1 is not None and t3 is not None and t3 < t1 and self._overfit_warned_at is None:
                self._overfit_warned_at = step
                self.runlog.warn(
                    step,
                    "overfitting",
                    f"eval loss rose over the last 3 evaluations ({e1:.4g} -> {e3:.4g}) while train loss fell "
                    f"({t1:.4g} -> {t3:.4g}): over-fitting; fewer epochs or more varied data",
                )

    return HealthCallback


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not a terminal IPython, not papermill-less scripts)."""
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        shell = ip.get_ipython()
    except Exception:  # noqa: BLE001 - any failure means "not a notebook"
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def render_curve(rows: list[dict[str, Any]], title: str = "") -> bytes:
    """PNG bytes of the training curves: loss + eval loss, learning rate, grad norm (x = optimizer step)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [r for r in rows if r.get("loss") is not None]
    evals = [r for r in rows if r.get("eval_loss") is not None]
    warns = [r for r in rows if "warning" in r or "error" in r]
    fig = Figure(figsize=(11, 3.2), dpi=90)
    FigureCanvasAgg(fig)
    ax_loss, ax_lr, ax_grad = fig.subplots(1, 3)
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1.2)
    if evals:
        ax_loss.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval", lw=1.2)
    for w in warns:
        ax_loss.axvline(w["step"], color="red" if "error" in w else "orange", alpha=0.4, lw=0.8)
    ax_loss.set_title("loss (nats / trained token)")
    ax_loss.set_xlabel("step")
    if train or evals:
        ax_loss.legend(loc="upper right", fontsize=8)
    lr = [r for r in train if r.get("learning_rate") is not None]
    ax_lr.plot([r["step"] for r in lr], [r["learning_rate"] for r in lr], color="tab:green", lw=1.2)
    ax_lr.set_title("learning rate")
    ax_lr.set_xlabel("step")
    gn = [r for r in train if r.get("grad_norm") is not None]
    ax_grad.plot([r["step"] for r in gn], [r["grad_norm"] for r in gn], color="tab:purple", lw=1.2)
    ax_grad.set_title("grad norm (before clipping)")
    ax_grad.set_xlabel("step")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@functools.cache
def _plot_callback_cls():
    base = _callback_base()

    class LivePlotCallback(base):
        """loss.png at each log step (throttled), one in-place figure in Jupyter, and a tqdm bar."""

        def __init__(
            self,
            runlog: RunLog,
            png_path: str | Path,
            title: str = "",
            min_interval_s: float = 2.0,
            notebook: bool | None = None,
            progress: bool = True,
        ):
            self.runlog = runlog
            self.png_path = Path(png_path)
            self.title = title
            # Redrawing costs ~0.1 s; on a fast GPU or the tiny model a step is shorter, so redraw at most every
            # min_interval_s seconds (and at most every 20 draw-times), plus at evaluations, warnings and the end.
            self.min_interval_s = min_interval_s
            self.notebook = in_notebook() if notebook is None else notebook
            self.progress = progress
            self.bar = None
            self.out = None
            self.warn_box = None
            self._last_draw = 0.0
            self._draw_cost = 0.0
            self._shown_warnings = 0

        def on_train_begin(self, args, state, control, **kw):
            if not self.runlog.main:
                return
            if self.notebook:
                import ipywidgets as widgets
                from IPython.display import display

                self.out = widgets.Output()
                self.warn_box = widgets.HTML("")
                display(widgets.VBox([self.out, self.warn_box]))
            if self.progress:
                if self.notebook:
                    from tqdm.auto import tqdm
                else:
                    from tqdm import tqdm
                self.bar = tqdm(
                    total=state.max_steps,
                    initial=state.global_step,
                    desc="train",
                    unit="step",
                    dynamic_ncols=True,
                    file=sys.stderr,
                    disable=os.environ.get("TOOLCALL_KIT_NO_PROGRESS") == "1",
                )

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            if not self.runlog.main:
                return
            logs = logs or {}
            if self.bar is not None and "loss" in logs:
                post = {"loss": f"{logs['loss']:.4g}"}
                if "learning_rate" in logs:
                    post["lr"] = f"{logs['learning_rate']:.2e}"
                self.bar.set_postfix(post, refresh=False)
            force = "eval_loss" in logs or len(self.runlog.warnings) != self._shown_warnings
            self.draw(force=force)

        def on_train_end(self, args, state, control, **kw):
            if not self.runlog.main:
                return
            self.draw(force=True)
            if self.bar is not None:
                self.bar.close()

        def draw(self, force: bool = False) -> None:
            now = time.monotonic()
            if not force and now - self._last_draw < max(self.min_interval_s, 20 * self._draw_cost):
                return
            png = render_curve(self.runlog.rows, self.title)
            with atomic_open(self.png_path, "wb") as f:
                f.write(png)
            # Wait at least 20x the cost of a draw before the next one: plotting stays under ~5% of the run.
            self._draw_cost = time.monotonic() - now
            self._last_draw = time.monotonic()
            if self.out is not None:
                from IPython.display import Image, display

                with self.out:
                    self.out.clear_output(wait=True)
                    display(Image(data=png))
            warns = self.runlog.warnings
            if self.warn_box is not None and len(warns) != self._shown_warnings:
                import html

                items = "".join(
                    f"<li>step {w['step']}: {html.escape(w['message'])}</li>" for w in warns[-10:]
                )
                self.warn_box.value = f"<b>warnings</b><ul>{items}</ul>"
            self._shown_warnings = len(warns)

    return LivePlotCallback


def MetricsCallback(*args, **kwargs):  # noqa: N802 - a class, built lazily so transformers loads late
    return _metrics_callback_cls()(*args, **kwargs)


def HealthCallback(*args, **kwargs):  # noqa: N802
    return _health_callback_cls()(*args, **kwargs)


def LivePlotCallback(*args, **kwargs):  # noqa: N802
    return _plot_callback_cls()(*args, **kwargs)
