"""What `glan eval` reports: every benchmark as run, skipped (why) or failed (why), with scores
per model, sample counts, shots and prompt format; as JSON, Markdown, a Rich table and a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel

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
    scores: dict[str, float | None] = {}


class EvalReport(BaseModel):
    models: dict[str, str]  # label -> path or id
    limit: int | None
    chat_template: bool
    results: list[BenchmarkResult]


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _delta(result: BenchmarkResult, labels: list[str]) -> str:
    if len(labels) != 2:
        return ""
    a, b = (result.scores.get(label) for label in labels)
    return "" if a is None or b is None else f"{100 * (b - a):+.1f}"


def rows(report: EvalReport, reasons: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and cells; without `reasons` the status stays one word (reasons listed apart)."""
    labels = list(report.models)
    head = ["benchmark", "status", "metric", "shots", "n", *labels]
    head += ["delta"] if len(labels) == 2 else []
    body = []
    for r in report.results:
        status = r.status if r.status == "run" or not reasons else f"{r.status}: {r.reason}"
        cells = [r.benchmark, status, r.metric, "" if r.shots is None else str(r.shots)]
        cells += [str(r.samples or ""), *(_cell(r.scores.get(label)) for label in labels)]
        cells += [_delta(r, labels)] if len(labels) == 2 else []
        body.append(cells)
    return head, body


def rich_table(report: EvalReport):
    from rich.table import Table

    head, body = rows(report, reasons=False)
    notes = [f"{r.benchmark} {r.status}: {r.reason}" for r in report.results if r.reason]
    table = Table(title="glan eval (scores in %)", caption="\n".join(notes), caption_justify="left")
    for name in head:
        table.add_column(name, overflow="fold")
    for cells in body:
        table.add_row(*cells)
    return table


def markdown(report: EvalReport) -> str:
    head, body = rows(report)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in body]
    models = ", ".join(f"{label} = `{path}`" for label, path in report.models.items())
    prompts = "; ".join(f"{r.benchmark}: {r.prompt}" for r in report.results if r.status == "run")
    limit = f"first {report.limit} items" if report.limit else "all items"
    chat = "chat template applied" if report.chat_template else "plain completion prompts"
    notes = [f"Models: {models}.", f"Items: {limit}; {chat}.", f"Prompt formats: {prompts}."]
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
