"""What the numbered notebooks show besides each stage's summary, one `display()`-able object per call.
Plots are drawn on their own `matplotlib.figure.Figure` (no pyplot), so the user's own plots keep working;
every widget has a static HTML or PNG sibling that survives a saved notebook and papermill runs."""

from __future__ import annotations

import html
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from . import pipeline
from .config import RunConfig
from .io import read_jsonl
from .records import Record, calls_of, read_records, text_of, tool_names
from .run_files import PREDICTIONS, REPORT, RunFiles

CELL_CHARS = 600  # characters of a raw row or model output shown in a table cell (the rest is elided)
TABLE_STYLE = "border-collapse:collapse;font-size:12px;text-align:left"
CELL_STYLE = "border:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left"
PRE = "<pre style='white-space:pre-wrap;font-size:12px;max-height:30em;overflow:auto'>"
CELL_PRE = "<pre style='white-space:pre-wrap;margin:0;max-height:12em;overflow:auto;min-width:14em'>"


def _cell(value: Any, pre: bool = False) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > CELL_CHARS:
        text = text[:CELL_CHARS] + f" … ({len(text) - CELL_CHARS} more characters)"
    body = f"{CELL_PRE}{html.escape(text)}</pre>" if pre else html.escape(text)
    return f"<td style='{CELL_STYLE}'>{body}</td>"


def html_table(headers: list[str], rows: list[list[Any]], pre: tuple[str, ...] = (), cls: str = "") -> str:
    """Columns named in `pre` keep their line breaks."""
    head = "".join(f"<th style='{CELL_STYLE}'>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(_cell(v, h in pre) for h, v in zip(headers, row, strict=True)) + "</tr>"
        for row in rows
    )
    return f"<table class='{cls}' style='{TABLE_STYLE}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(text: str):
    from IPython.display import HTML

    return HTML(text)


def sample_record(cfg: RunConfig, index: int = 0):
    """Kept training record `index`, as JSON and as rendered by the family's training template."""
    from .templates import adapt_records, render

    record = read_records(cfg.data.train)[index]
    tok, fam, template = pipeline.training_view(cfg)
    adapted = adapt_records([record], fam, **pipeline.family_quirks(cfg))[0]
    text = render(tok, adapted, fam, chat_template=template)
    record_json = html.escape(json.dumps(record, indent=2, ensure_ascii=False))
    return _html(
        f"<div class='toolcall-kit-sample'><b>record {index} of {cfg.data.train}</b> "
        f"(id {html.escape(str(record.get('id')))}){PRE}{record_json}</pre>"
        f"<b>as the model reads it</b> ({fam.name} training template, tools included){PRE}{html.escape(text)}</pre></div>"
    )


def rejects_by_reason(result: dict[str, Any], first: int = 3):
    """Rejected rows grouped by reason: the count and the first `first` rows of each."""
    by_reason: dict[str, list[dict]] = {}
    for rep in result["reports"].values():
        if Path(rep["out"]["rejects"]).is_file():
            for row in read_jsonl(rep["out"]["rejects"]):
                by_reason.setdefault(row["reason"], []).append(row)
    if not by_reason:
        return _html(
            "<p class='toolcall-kit-rejects'><b>rejects:</b> none: every row read was kept or a duplicate</p>"
        )
    parts = ["<div class='toolcall-kit-rejects'>"]
    for reason, rows in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        shown = [[f"{r['file']}:{r['line']}", r.get("detail", ""), r.get("raw", "")] for r in rows[:first]]
        parts.append(f"<h4>{html.escape(reason)}: {len(rows)} rows</h4>")
        parts.append(html_table(["file:line", "detail", "raw row"], shown, pre=("raw row",)))
    return _html("".join(parts) + "</div>")


def data_chart(result: dict[str, Any]):
    """Kept examples by kind and calls per tool, as one bar chart."""
    from IPython.display import Image
    from matplotlib.figure import Figure

    kinds: Counter = Counter()
    calls: Counter = Counter()
    for rep in result["reports"].values():
        kinds.update(rep["kinds"])
        calls.update(rep["calls_per_tool"])
    tools = dict(calls.most_common())
    fig = Figure(figsize=(11, 3.6), dpi=90, layout="constrained")
    axes = fig.subplots(1, 2, width_ratios=[1, 2.2])
    bars = [
        (kinds, "#4c78a8", {"rotation": 35}, "kept examples by kind", "examples"),
        (tools, "#f58518", {"rotation": 55, "fontsize": 7}, f"calls per tool ({len(tools)} tools)", "calls"),
    ]
    for ax, (counts, color, ticks, title, unit) in zip(axes, bars, strict=True):
        ax.bar(range(len(counts)), list(counts.values()), color=color)
        ax.set_xticks(range(len(counts)), list(counts), ha="right", rotation_mode="anchor", **ticks)
        ax.set_title(title)
        ax.set_ylabel(unit)
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return Image(data=png.getvalue(), format="png")


def truncation_table(report: dict[str, Any]):
    """The examples longer than max_seq_length, and those that lose every trained token."""
    limit, over = report["max_seq_length"], report["over_max_seq_length"]
    if not over:
        return _html(
            f"<p class='toolcall-kit-truncation'><b>truncation:</b> none: every example fits in "
            f"max_seq_length {limit} tokens (longest {report['distribution']['max']})</p>"
        )
    cut = {e["index"]: e["first_trained_token"] for e in report["all_assistant_tokens_cut"]}
    lost = {i: f"ALL (first trained token at {first})" for i, first in cut.items()}
    rows = [
        [e["index"], e["id"] or "", e["tokens"], e["tokens"] - limit, lost.get(e["index"], "some or none")]
        for e in over
    ]
    return _html(
        f"<div class='toolcall-kit-truncation'><b>{len(over)} examples longer than max_seq_length {limit}</b>"
        + html_table(["index", "id", "tokens", "tokens cut", "trained tokens lost"], rows)
        + "</div>"
    )


class MaskView:
    """The training examples as training encodes them; the tokenizer is loaded once, for quick stepping."""

    def __init__(self, cfg: RunConfig):
        from .templates import adapt_records

        self.max_seq_length = cfg.model.max_seq_length
        self.tokenizer, self.family, self.template = pipeline.training_view(cfg)
        self.records = adapt_records(read_records(cfg.data.train), self.family, **pipeline.family_quirks(cfg))

    def __len__(self) -> int:
        return len(self.records)

    def html(self, index: int) -> str:
        from .tokens import mask_html

        return mask_html(self.tokenizer, self.records[index], self.family, self.template, self.max_seq_length)


def mask_stepper(cfg: RunConfig, start: int = 0):
    """An ipywidgets control stepping through the training examples' masks."""
    import ipywidgets as widgets

    view = MaskView(cfg)
    number = widgets.BoundedIntText(value=start, min=0, max=len(view) - 1, description="example")
    prev = widgets.Button(description="◀ previous", layout=widgets.Layout(width="8em"))
    nxt = widgets.Button(description="next ▶", layout=widgets.Layout(width="8em"))
    shown = widgets.HTML(view.html(start))
    count = widgets.Label(f"of {len(view)} training examples (index as in the truncation table)")
    number.observe(lambda change: setattr(shown, "value", view.html(change["new"])), names="value")
    prev.on_click(lambda _b: setattr(number, "value", max(0, number.value - 1)))
    nxt.on_click(lambda _b: setattr(number, "value", min(len(view) - 1, number.value + 1)))
    box = widgets.VBox([widgets.HBox([prev, number, nxt, count]), shown])
    box.add_class("toolcall-kit-mask-stepper")
    return box


def loss_plot(cfg: RunConfig):
    """RUN/loss.png: unlike the live widget, it stays in a saved notebook."""
    from IPython.display import Image

    return Image(filename=str(RunFiles(cfg.run_dir).loss_plot))


def train_health(result: dict[str, Any]):
    """Memory, speed and the health warnings of a training run."""

    def g(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4g}"

    gpu = "no GPU"
    if "gpu_peak_reserved_gib" in result:
        gpu = f"{result['gpu_peak_allocated_gib']} / {result['gpu_peak_reserved_gib']}"
    losses = (
        f"{g(result['first_loss'])} -> {g(result['final_loss'])} (eval {g(result.get('final_eval_loss'))})"
    )
    facts = [
        ["status", result["status"] + (f": {result['error']}" if result.get("error") else "")],
        ["steps", f"{result['steps']} / {result['max_steps']}"],
        ["loss (nats / trained token)", losses],
        ["peak RSS (GiB)", result.get("peak_rss_gib")],
        ["GPU peak allocated / reserved (GiB)", gpu],
        ["tokens / s", result.get("tokens_per_s")],
        ["real tokens of processed (padding excluded)", result.get("real_token_fraction")],
        ["precision, device", f"{result['precision']}, {result['device']}"],
    ]
    warns = result.get("warnings") or []
    warn_html = "<p>no health warning (loss spikes, exploding gradients, over-fitting, a flat loss)</p>"
    if warns:
        warn_html = html_table(
            ["step", "warning", "message"], [[w["step"], w["warning"], w["message"]] for w in warns]
        )
    return _html(
        f"<div class='toolcall-kit-train-health'>{html_table(['', 'value'], facts)}"
        f"<b>warnings ({len(warns)})</b>{warn_html}</div>"
    )


def model_card(cfg: RunConfig):
    """RUN/merged/README.md rendered (its YAML front matter as a code block)."""
    from IPython.display import Markdown

    text = (RunFiles(cfg.run_dir).merged / "README.md").read_text(encoding="utf-8")
    if text.startswith("---\n"):
        front, _, body = text[4:].partition("\n---\n")
        text = f"```yaml\n{front}\n```\n{body}"
    return Markdown(text)


def _expected(records: dict[str, Record], case) -> Any:
    gold = records[case.example_id]["messages"][len(case.messages)]
    calls = [{"name": name, "arguments": args} for name, args in calls_of(gold)]
    return calls or f"(no call) {text_of(gold.get('content')) or ''}"


def _request(case) -> str:
    user = [m for m in case.messages if m.get("role") == "user"]
    return (text_of(user[-1].get("content")) or "") if user else ""


def _visible(text: str) -> str:
    """Whitespace-only output says so instead of showing a blank cell."""
    if text.strip():
        return text
    return f"(whitespace only: {len(text)} characters)" if text else "(empty)"


def generate_one(cfg: RunConfig, index: int | None = None, max_new_tokens: int = 160):
    """One held-out request (`index`; None: the first that expects a call) answered by the merged model: raw
    output, parsed calls, expected turn and verdict."""
    from . import evaluate
    from .models import load_model_and_tokenizer
    from .templates import detect_family

    records = evaluate.load_records(cfg.data.eval)
    cases = evaluate.cases_from_records(records)
    if index is None:
        index = next((i for i, c in enumerate(cases) if c.expect == "calls"), 0)
    case = cases[index]
    model, tok = load_model_and_tokenizer(str(RunFiles(cfg.run_dir).merged))
    fam = detect_family(tok)
    (prompt,) = evaluate.render_prompts(tok, [case], fam)
    (raw,) = evaluate.generate_batched(model, tok, [prompt], batch_size=1, max_new_tokens=max_new_tokens)
    pred = evaluate.parse_output(raw, fam.fmt)
    verdict = evaluate.score_case(case, pred)
    rows = [
        ["case", f"{case.id} ({case.kind}), {index} of {len(cases)} in {cfg.data.eval}"],
        ["request", _request(case)],
        ["tools offered", ", ".join(tool_names(case.tools)) or "none"],
        ["raw output", _visible(raw)],
        ["parsed calls", pred.calls or "none"],
        ["expected", _expected({r["id"]: r for r in records}, case)],
        ["verdict", "right" if verdict.correct else f"wrong: {verdict.reason} {verdict.detail}"],
    ]
    return _html(
        f"<div class='toolcall-kit-generation'>{html_table(['', 'value'], rows, pre=('value',))}</div>"
    )


def eval_plots(cfg: RunConfig, which: str = "eval") -> list:
    from IPython.display import Image

    folder = cfg.run_dir / which
    report = json.loads((folder / REPORT).read_text())
    return [Image(filename=str(folder / name)) for name in report.get("plots", [])]


def failed_case_rows(cfg: RunConfig, which: str = "eval") -> list[dict[str, Any]]:
    from .evaluate import cases_from_records, load_records, resolve_eval_dir

    folder = resolve_eval_dir(cfg.run_dir / which)
    records = {r["id"]: r for r in load_records(cfg.data.eval)}
    cases = {c.id: c for c in cases_from_records(list(records.values()))}
    out = []
    for p in read_jsonl(folder / PREDICTIONS):
        if p["correct"]:
            continue
        case = cases.get(p["id"])
        out.append(
            {
                "id": p["id"],
                "request": _request(case) if case else "",
                "output": p.get("output") or "",
                "expected": _expected(records, case) if case else p.get("expected_tools"),
                "reason": p["reason"],
                "detail": p.get("detail") or "",
            }
        )
    return out


def failed_cases_html(rows: list[dict[str, Any]], reason: str = "") -> str:
    """`reason` keeps only the cases that failed for it ("" = all)."""
    shown = [r for r in rows if not reason or r["reason"] == reason]
    if not shown:
        return "<p class='toolcall-kit-failed-cases'>no failed case</p>"
    table = []
    for r in shown:
        why = f"{r['reason']}: {r['detail']}".rstrip(": ")
        table.append([r["id"], r["request"], _visible(r["output"]), r["expected"], why])
    headers = ["id", "request", "raw output", "expected", "reason"]
    return html_table(headers, table, pre=("raw output", "expected"), cls="toolcall-kit-failed-cases")


def failed_cases(cfg: RunConfig, which: str = "eval"):
    """The failed cases of RUN/which as a table with a reason filter."""
    import ipywidgets as widgets

    rows = failed_case_rows(cfg, which)
    counts = Counter(r["reason"] for r in rows)
    options = [(f"all reasons ({len(rows)})", "")] + [(f"{k} ({n})", k) for k, n in counts.most_common()]
    choose = widgets.Dropdown(options=options, value="", description="reason")
    table = widgets.HTML(failed_cases_html(rows))
    choose.observe(
        lambda change: setattr(table, "value", failed_cases_html(rows, change["new"])), names="value"
    )
    title = widgets.HTML(f"<b>{len(rows)} failed cases</b> in {cfg.run_dir / which}")
    box = widgets.VBox([title, choose, table])
    box.add_class("toolcall-kit-failed-cases-view")
    return box
