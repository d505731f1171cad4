"""What `glan eval` reports: every benchmark as run, skipped (why) or failed (why), with every
metric lm-eval reports per model (the headline one in the table), sample counts, shots, prompt
format, the paired base-vs-tuned comparison and the run's provenance; as JSON, Markdown, a Rich
table and a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from glan.evaluate.paired import ALPHA, BOOTSTRAP_ITERS, BOOTSTRAP_SEED, POWER, Comparison
from glan.evaluate.provenance import RunProvenance, TaskProvenance
from glan.run.files import atomic_write_json, atomic_write_text

Status = Literal["run", "skipped", "failed"]


class BenchmarkResult(BaseModel):
    benchmark: str
    status: Status
    reason: str = ""
    metric: str = ""
    shots: int | None = None
    prompt: str = ""
    source: str = ""
    samples: int | None = None
    scores: dict[str, float | None] = {}  # the headline metric (`metric`) per model
    headline: str = ""  # the headline metric's key as lm-eval reports it (`name,filter`)
    metrics: dict[str, dict[str, float]] = {}  # every metric lm-eval reported, per model
    comparisons: list[Comparison] = []  # each later model against the first, item by item
    paired_note: str = ""  # why there is no comparison, where one was expected
    samples_files: dict[str, str] = {}  # per model: lm-eval's per-sample records
    provenance: TaskProvenance | None = None


class EvalReport(BaseModel):
    models: dict[str, str]  # label -> path or id
    limit: int | None
    chat_template: bool
    results: list[BenchmarkResult]
    provenance: RunProvenance | None = None


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _delta(result: BenchmarkResult, base: str, tuned: str) -> str:
    a, b = result.scores.get(base), result.scores.get(tuned)
    return "" if a is None or b is None else f"{100 * (b - a):+.1f}"


COMPARED = ["delta", "95% CI", "p (Holm)", "verdict", "detectable"]


def _pair(result: BenchmarkResult, base: str, tuned: str) -> list[str]:
    """One pair's cells, in points: delta, interval, Holm-adjusted p, verdict, and the smallest
    difference detectable at this item count ("n too small" when none is)."""
    delta = _delta(result, base, tuned)
    c = next((c for c in result.comparisons if (c.base, c.tuned) == (base, tuned)), None)
    if c is None:
        return [delta, "", "", "", ""]
    mde = "n too small" if c.mde is None else f"{100 * c.mde:.1f}"
    p = "" if c.p_holm is None else f"{c.p_holm:.3g}"
    return [delta, f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]", p, c.verdict or "", mde]


def _compared(result: BenchmarkResult, labels: list[str]) -> list[str]:
    """Each later model against the first, a line per pair (named when there are several),
    and why a pair has no comparison in the verdict's cell."""
    later = labels[1:]
    columns: list[list[str]] = [[] for _ in COMPARED]
    for tuned in later:
        for column, cell in zip(columns, _pair(result, labels[0], tuned), strict=True):
            if cell:
                column.append(f"{tuned}: {cell}" if len(later) > 1 else cell)
    if result.paired_note:
        columns[COMPARED.index("verdict")].append(result.paired_note)
    return ["\n".join(column) for column in columns]


def rows(report: EvalReport, reasons: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and cells; without `reasons` the status stays one word (reasons listed apart).
    A cell comparing several pairs holds a line for each."""
    labels = list(report.models)
    head = ["benchmark", "status", "metric", "shots", "n", *labels]
    head += COMPARED if len(labels) > 1 else []
    body = []
    for r in report.results:
        status = r.status if r.status == "run" or not reasons else f"{r.status}: {r.reason}"
        cells = [r.benchmark, status, r.metric, "" if r.shots is None else str(r.shots)]
        cells += [str(r.samples or ""), *(_cell(r.scores.get(label)) for label in labels)]
        cells += _compared(r, labels) if len(labels) > 1 else []
        body.append(cells)
    return head, body


def how_to_read(report: EvalReport) -> str:
    """What the comparison's columns are, for the Markdown and the terminal."""
    compared = sum(len(r.comparisons) for r in report.results)
    return (
        f"delta: tuned - base in points, on the same items (each later model against the "
        f"first). 95% CI: paired bootstrap over the "
        f"items ({BOOTSTRAP_ITERS:,} resamples, seed {BOOTSTRAP_SEED}), not corrected for "
        f"multiple tests. p (Holm): McNemar's exact test for 0/1 scores (else the "
        f"bootstrap's), Holm-corrected across the {compared} comparisons (every pair and benchmark); verdict better/worse "
        f"where it is below {ALPHA}, else can't tell. The exact test is more conservative than "
        f"the percentile interval: on few items an interval that excludes 0 can still read "
        f"can't tell. detectable: the smallest difference (points) the exact test finds with "
        f"{POWER:.0%} power at {ALPHA}/{max(compared, 1)} (Holm's level for the smallest "
        f"p-value), at this item count and the observed share of items the models disagree "
        f"on; 'n too small': none can be found. It is the design's power, not a reading of "
        f"the delta: a delta below it can still be significant (the p says), and a can't tell "
        f"below it is what the design expects (raise --limit)."
    )


def _other_metrics(report: EvalReport) -> str:
    lines = []
    for r in report.results:
        for label, metrics in r.metrics.items():
            shown = ", ".join(
                f"{k}{' (headline)' if k == r.headline else ''} {100 * v:.1f}"
                for k, v in metrics.items()
            )
            lines.append(f"- {r.benchmark}, {label}: {shown}")
    return "Every metric lm-eval reported (%):\n" + "\n".join(lines) if lines else ""


def rich_table(report: EvalReport):
    from rich.table import Table

    head, body = rows(report, reasons=False)
    notes = [f"{r.benchmark} {r.status}: {r.reason}" for r in report.results if r.reason]
    table = Table(title="glan eval (scores in %)", caption="\n".join(notes), caption_justify="left")
    for i, name in enumerate(head):
        # The benchmark's name whole on a narrow terminal; the figures fold instead.
        table.add_column(name, overflow="fold", no_wrap=i == 0)
    for cells in body:
        table.add_row(*cells)
    return table


def markdown(report: EvalReport) -> str:
    head, body = rows(report)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [
        "| " + " | ".join(c.replace("|", "/").replace("\n", "<br>") for c in cells) + " |"
        for cells in body
    ]
    models = ", ".join(f"{label} = `{path}`" for label, path in report.models.items())
    prompts = "; ".join(f"{r.benchmark}: {r.prompt}" for r in report.results if r.status == "run")
    limit = f"first {report.limit} items" if report.limit else "all items"
    chat = "chat template applied" if report.chat_template else "plain completion prompts"
    notes = [f"Models: {models}.", f"Items: {limit}; {chat}.", f"Prompt formats: {prompts}."]
    notes += [how_to_read(report)] if len(report.models) > 1 else []
    notes += [n for n in (_other_metrics(report),) if n]
    notes += ["Provenance (versions, seeds, models, data sha256s): eval_results.json."]
    return "# glan eval\n\n" + "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def chart_html(report: EvalReport) -> str:
    import plotly.graph_objects as go

    ran = [r for r in report.results if r.status == "run"]
    fig = go.Figure(
        [
            go.Bar(
                name=label, x=[r.benchmark for r in ran], y=[_pct(r.scores.get(label)) for r in ran]
            )
            for label in report.models
        ]
    )
    fig.update_layout(barmode="group", title="Score per benchmark (%)", yaxis_title="%")
    return fig.to_html(include_plotlyjs=True, full_html=True)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def write(report: EvalReport, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "eval_results.json", report.model_dump(mode="json"))
    atomic_write_text(out_dir / "eval_results.md", markdown(report))
    atomic_write_text(out_dir / "eval_report.html", chart_html(report))
