"""What the numbered notebooks show besides each stage's summary: records, rejects, charts, the loss-mask
stepper, one generation, failed evaluation cases. Each function returns one thing for `display()` (an
IPython HTML / Markdown / Image object or an ipywidgets widget), so a notebook cell stays one library call:

    from toolcall_kit import explore
    display(explore.sample_record(cfg))          # 01: a kept record as JSON and as the model reads it
    display(explore.mask_stepper(cfg))           # 02: the loss mask of each training example, step by step
    display(explore.failed_cases(cfg))           # 05: the failed cases, filterable by reason

Plots are drawn on their own `matplotlib.figure.Figure` (no pyplot, no global backend switch), so the
user's own plots in the same kernel keep working. Widgets show in JupyterLab; headless (papermill) runs
keep their text form, and every widget here has a static HTML or PNG sibling that survives a saved notebook.
"""

from __future__ import annotations

import html
import io as _io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from . import pipeline
from .config import RunConfig
from .io import read_jsonl
from .records import Record, calls_of, text_of, tool_names
from .run_files import PREDICTIONS, REPORT, RunFiles

# Characters of a raw row or model output shown in a table cell (the rest is elided).
CELL_CHARS = 600
TABLE_STYLE = "border-collapse:collapse;font-size:12px;text-align:left"
CELL_STYLE = "border:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left"


def _cell(value: Any, pre: bool = False) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > CELL_CHARS:
        text = text[:CELL_CHARS] + f" … ({len(text) - CELL_CHARS} more characters)"
    body = html.escape(text)
    if pre:
        body = f"<pre style='white-space:pre-wrap;margin:0;max-height:12em;overflow:auto;min-width:14em'>{body}</pre>"
    return f"<td style='{CELL_STYLE}'>{body}</td>"


def html_table(headers: list[str], rows: list[list[Any]], pre: tuple[str, ...] = (), cls: str = "") -> str:
    """A plain HTML table; columns named in `pre` keep their line breaks."""
    head = "".join(f"<th style='{CELL_STYLE}'>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(_cell(v, h in pre) for h, v in zip(headers, row, strict=True)) + "</tr>"
        for row in rows
    )
    return f"<table class='{cls}' style='{TABLE_STYLE}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(text: str):
    from IPython.display import HTML

    return HTML(text)


def _png(fig) -> bytes:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _image(png: bytes):
    from IPython.display import Image

    return Image(data=png, format="png")


# ------------------------------------------------------------------------------------------ 01 prepare


def sample_record(cfg: RunConfig, index: int = 0):
    """Kept training record `index`, pretty-printed, and rendered with the family's training template."""
    from .templates import adapt_record, detect_family, render
    from .tokens import read_records

    record = read_records(cfg.data.train)[index]
    tok = pipeline.tokenizer(cfg)
    fam = detect_family(tok, cfg.model.family)
    adapted = adapt_record(
        record, fam, parallel=cfg.data.parallel, content_with_calls=cfg.data.content_with_calls
    )
    text = render(tok, adapted[0], fam, chat_template=pipeline.chat_template(cfg))
    pre = "<pre style='white-space:pre-wrap;font-size:12px;max-height:30em;overflow:auto'>"
    return _html(
        f"<div class='toolcall-kit-sample'><b>record {index} of {cfg.data.train}</b> (id "
        f"{html.escape(str(record.get('id')))})"
        f"{pre}{html.escape(json.dumps(record, indent=2, ensure_ascii=False))}</pre>"
        f"<b>as the model reads it</b> ({fam.name} training template, tools included)"
        f"{pre}{html.escape(text)}</pre></div>"
    )


def rejects_by_reason(result: dict[str, Any], first: int = 3):
    """Rejected rows grouped by reason: the count and the first `first` raw rows of each, with file and line."""
    rows_by_reason: dict[str, list[dict]] = {}
    for rep in result["reports"].values():
        path = Path(rep["out"]["rejects"])
        if not path.is_file():
            continue
        for row in read_jsonl(path):
            rows_by_reason.setdefault(row["reason"], []).append(row)
    if not rows_by_reason:
        return _html(
            "<p class='toolcall-kit-rejects'><b>rejects:</b> none: every row read was kept or a duplicate</p>"
        )
    parts = ["<div class='toolcall-kit-rejects'>"]
    for reason, rows in sorted(rows_by_reason.items(), key=lambda kv: -len(kv[1])):
        parts.append(f"<h4>{html.escape(reason)}: {len(rows)} rows</h4>")
        parts.append(
            html_table(
                ["file:line", "detail", "raw row"],
                [[f"{r['file']}:{r['line']}", r.get("detail", ""), r.get("raw", "")] for r in rows[:first]],
                pre=("raw row",),
            )
        )
    parts.append("</div>")
    return _html("".join(parts))


def data_chart(result: dict[str, Any]):
    """Kept examples by kind and calls per tool, as one bar chart (all reports of the stage summed)."""
    from matplotlib.figure import Figure

    kinds: Counter = Counter()
    calls: Counter = Counter()
    for rep in result["reports"].values():
        kinds.update(rep["kinds"])
        calls.update(rep["calls_per_tool"])
    tools = calls.most_common()
    fig = Figure(figsize=(11, 3.6), dpi=90, layout="constrained")
    ax_kind, ax_tool = fig.subplots(1, 2, width_ratios=[1, 2.2])
    label = dict(ha="right", rotation_mode="anchor")
    ax_kind.bar(range(len(kinds)), list(kinds.values()), color="#4c78a8")
    ax_kind.set_xticks(range(len(kinds)), list(kinds), rotation=35, **label)
    ax_kind.set_title("kept examples by kind")
    ax_kind.set_ylabel("examples")
    ax_tool.bar(range(len(tools)), [n for _, n in tools], color="#f58518")
    ax_tool.set_xticks(range(len(tools)), [t for t, _ in tools], rotation=55, fontsize=7, **label)
    ax_tool.set_title(f"calls per tool ({len(tools)} tools)")
    ax_tool.set_ylabel("calls")
    return _image(_png(fig))


# ------------------------------------------------------------------------------------------ 02 tokens


def truncation_table(report: dict[str, Any]):
    """The examples longer than max_seq_length, and those that lose every trained token, as a table."""
    limit = report["max_seq_length"]
    over = report["over_max_seq_length"]
    if not over:
        return _html(
            f"<p class='toolcall-kit-truncation'><b>truncation:</b> none: every example fits in "
            f"max_seq_length {limit} tokens (longest {report['distribution']['max']})</p>"
        )
    cut = {e["index"]: e for e in report["all_assistant_tokens_cut"]}
    rows = [
        [
            e["index"],
            e["id"] or "",
            e["tokens"],
            e["tokens"] - limit,
            f"ALL (first trained token at {cut[e['index']]['first_trained_token']})"
            if e["index"] in cut
            else "some or none",
        ]
        for e in over
    ]
    return _html(
        f"<div class='toolcall-kit-truncation'><b>{len(over)} examples longer than max_seq_length {limit}</b>"
        + html_table(["index", "id", "tokens", "tokens cut", "trained tokens lost"], rows)
        + "</div>"
    )


class MaskView:
    """The training examples exactly as training encodes them (family adaptation, then the loss mask and the
    max_seq_length cut); the tokenizer is loaded once so stepping through examples is quick."""

    def __init__(self, cfg: RunConfig):
        from .templates import adapt_records, detect_family
        from .tokens import read_records

        self.cfg = cfg
        self.tokenizer = pipeline.tokenizer(cfg)
        self.family = detect_family(self.tokenizer, cfg.model.family)
        self.template = pipeline.chat_template(cfg)
        self.records = adapt_records(
            read_records(cfg.data.train),
            self.family,
            parallel=cfg.data.parallel,
            content_with_calls=cfg.data.content_with_calls,
        )

    def __len__(self) -> int:
        return len(self.records)

    def html(self, index: int) -> str:
        from .tokens import mask_html

        return mask_html(
            self.tokenizer, self.records[index], self.family, self.template, self.cfg.model.max_seq_length
        )


def mask_stepper(cfg: RunConfig, start: int = 0):
    """An ipywidgets control over the training examples: previous / next / a number, and the example's mask."""
    import ipywidgets as widgets

    view = MaskView(cfg)
    number = widgets.BoundedIntText(value=start, min=0, max=len(view) - 1, description="example")
    prev = widgets.Button(description="◀ previous", layout=widgets.Layout(width="8em"))
    nxt = widgets.Button(description="next ▶", layout=widgets.Layout(width="8em"))
    shown = widgets.HTML(view.html(start))
    count = widgets.Label(f"of {len(view)} training examples (index as in the truncation table)")

    def show(change):
        shown.value = view.html(change["new"])

    number.observe(show, names="value")
    prev.on_click(lambda _b: setattr(number, "value", max(0, number.value - 1)))
    nxt.on_click(lambda _b: setattr(number, "value", min(len(view) - 1, number.value + 1)))
    box = widgets.VBox([widgets.HBox([prev, number, nxt, count]), shown])
    box.add_class("toolcall-kit-mask-stepper")
    return box


# ------------------------------------------------------------------------------------------ 03 train


def loss_plot(cfg: RunConfig):
    """RUN/loss.png as an image output: unlike the live widget, it stays in a saved notebook."""
    from IPython.display import Image

    return Image(filename=str(RunFiles(cfg.run_dir).loss_plot))


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def train_health(result: dict[str, Any]):
    """Memory, speed and the health warnings of a training run, from its result."""
    facts = [
        ["status", result["status"] + (f": {result['error']}" if result.get("error") else "")],
        ["steps", f"{result['steps']} / {result['max_steps']}"],
        [
            "loss (nats / trained token)",
            f"{_g(result['first_loss'])} -> {_g(result['final_loss'])} "
            f"(eval {_g(result.get('final_eval_loss'))})",
        ],
        ["peak RSS (GiB)", result.get("peak_rss_gib")],
        [
            "GPU peak allocated / reserved (GiB)",
            f"{result['gpu_peak_allocated_gib']} / {result['gpu_peak_reserved_gib']}"
            if "gpu_peak_reserved_gib" in result
            else "no GPU",
        ],
        ["tokens / s", result.get("tokens_per_s")],
        ["real tokens of processed (padding excluded)", result.get("real_token_fraction")],
        ["precision, device", f"{result['precision']}, {result['device']}"],
    ]
    warns = result.get("warnings") or []
    warn_html = (
        html_table(["step", "warning", "message"], [[w["step"], w["warning"], w["message"]] for w in warns])
        if warns
        else "<p>no health warning (loss spikes, exploding gradients, over-fitting, a flat loss)</p>"
    )
    return _html(
        "<div class='toolcall-kit-train-health'>"
        + html_table(["", "value"], facts)
        + f"<b>warnings ({len(warns)})</b>{warn_html}</div>"
    )


# ------------------------------------------------------------------------------------------ 04 merge


def model_card(cfg: RunConfig):
    """RUN/merged/README.md rendered (its YAML front matter as a code block)."""
    from IPython.display import Markdown

    text = (RunFiles(cfg.run_dir).merged / "README.md").read_text(encoding="utf-8")
    if text.startswith("---\n"):
        front, _, body = text[4:].partition("\n---\n")
        text = f"```yaml\n{front}\n```\n{body}"
    return Markdown(text)


def _case_expected(records: dict[str, Record], case) -> Any:
    """The gold assistant turn of a case: its calls, or its reply text when it calls nothing."""
    gold = records[case.example_id]["messages"][len(case.messages)]
    calls = [{"name": name, "arguments": args} for name, args in calls_of(gold)]
    return calls or f"(no call) {text_of(gold.get('content')) or ''}"


def _request(case) -> str:
    user = [m for m in case.messages if m.get("role") == "user"]
    return (text_of(user[-1].get("content")) or "") if user else ""


def generate_one(cfg: RunConfig, index: int | None = None, max_new_tokens: int = 160):
    """One held-out request answered by the merged model: the request, the tools offered, the raw output,
    what the server's parser makes of it, the expected turn and the verdict. `index`: a case of the eval
    split; None = the first case that expects a call."""
    from .evaluate import (
        cases_from_records,
        generate_batched,
        load_records,
        parse_output,
        render_prompts,
        score_case,
    )
    from .models import load_model_and_tokenizer
    from .templates import detect_family

    records = load_records(cfg.data.eval)
    cases = cases_from_records(records)
    if index is None:
        index = next((i for i, c in enumerate(cases) if c.expect == "calls"), 0)
    case = cases[index]
    model, tok = load_model_and_tokenizer(str(RunFiles(cfg.run_dir).merged))
    fam = detect_family(tok)
    (prompt,) = render_prompts(tok, [case], fam)
    (raw,) = generate_batched(model, tok, [prompt], batch_size=1, max_new_tokens=max_new_tokens)
    pred = parse_output(raw, fam.fmt)
    verdict = score_case(case, pred)
    rows = [
        ["case", f"{case.id} ({case.kind}), {index} of {len(cases)} in {cfg.data.eval}"],
        ["request", _request(case)],
        ["tools offered", ", ".join(tool_names(case.tools)) or "none"],
        ["raw output", _visible(raw)],
        ["parsed calls", pred.calls or "none"],
        ["expected", _case_expected({r["id"]: r for r in records}, case)],
        [
            "verdict",
            "right" if verdict.correct else f"wrong: {verdict.reason} {verdict.detail}",
        ],
    ]
    return _html(
        "<div class='toolcall-kit-generation'>" + html_table(["", "value"], rows, pre=("value",)) + "</div>"
    )


# ------------------------------------------------------------------------------------------ 05 evaluate


def eval_plots(cfg: RunConfig, which: str = "eval") -> list:
    """The evaluation's plots (confusion.png, accuracy_by_tool.png) as image outputs."""
    from IPython.display import Image

    folder = cfg.run_dir / which
    report = json.loads((folder / REPORT).read_text())
    return [Image(filename=str(folder / name)) for name in report.get("plots", [])]


def failed_case_rows(cfg: RunConfig, which: str = "eval") -> list[dict[str, Any]]:
    """The cases an evaluation got wrong: id, request, raw output, expected turn, reason (RUN/which/)."""
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
                "expected": _case_expected(records, case) if case else p.get("expected_tools"),
                "reason": p["reason"],
                "detail": p.get("detail") or "",
            }
        )
    return out


def _visible(text: str) -> str:
    """A model output as shown in a table: whitespace-only output says so instead of a blank cell."""
    if text.strip():
        return text
    return f"(whitespace only: {len(text)} characters)" if text else "(empty)"


def failed_cases_html(rows: list[dict[str, Any]], reason: str = "") -> str:
    """The failed cases as an HTML table; `reason` keeps only those that failed for it ("" = all)."""
    shown = [r for r in rows if not reason or r["reason"] == reason]
    if not shown:
        return "<p class='toolcall-kit-failed-cases'>no failed case</p>"
    return html_table(
        ["id", "request", "raw output", "expected", "reason"],
        [
            [
                r["id"],
                r["request"],
                _visible(r["output"]),
                r["expected"],
                f"{r['reason']}: {r['detail']}".rstrip(": "),
            ]
            for r in shown
        ],
        pre=("raw output", "expected"),
        cls="toolcall-kit-failed-cases",
    )


def failed_cases(cfg: RunConfig, which: str = "eval"):
    """The failed cases of RUN/which as a table with a reason filter (an ipywidgets Dropdown)."""
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
