"""`glan report DIR`: one self-contained HTML page about a run (works offline, no CDN).

Plots: instruction counts over the taxonomy (sunburst), levels, the sampling-strategy split,
question and answer lengths, what cleaning removed and why, tokens and cost per stage.
Histograms are binned here, so the page's size does not grow with the number of records.
The page names the records it was made from (sha256 of instructions.jsonl) and refuses a
clean.jsonl made from older records.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import plotly.graph_objects as go

from glan.config import STAGES
from glan.errors import UserError
from glan.post.clean import read_records_sized
from glan.post.progress import Steps, begin
from glan.post.provenance import current_clean_summary, records_fingerprint
from glan.run.files import atomic_write_text


def _load_json(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes()) if path.is_file() else {}


class RunStats:
    """Everything the page shows, gathered in one streaming pass. Memory is the taxonomy's and
    the number of distinct lengths', never the number of records."""

    def __init__(self, run_dir: Path, steps: Steps | None = None) -> None:
        src = run_dir / "instructions.jsonl"
        if not src.is_file():
            raise UserError(f"{run_dir} holds no instructions.jsonl: is it a glan run directory?")
        self.tree: Counter[tuple[str, str, str]] = Counter()
        self.levels: Counter[str] = Counter()
        self.strategies: Counter[str] = Counter()
        self.question_words: Counter[int] = Counter()
        self.answer_words: Counter[int] = Counter()
        step = begin(steps, "report: read", src.stat().st_size, "bytes")
        for record, size in read_records_sized(src):
            step.done += size
            meta = record.get("meta") or {}
            self.tree[
                (meta.get("field", "?"), meta.get("subfield", "?"), meta.get("discipline", "?"))
            ] += 1
            self.levels[meta.get("level", "?")] += 1
            self.strategies[meta.get("strategy", "?")] += 1
            turns = {m.get("role"): m.get("content", "") for m in record.get("messages", [])}
            self.question_words[len(turns.get("user", "").split())] += 1
            self.answer_words[len(turns.get("assistant", "").split())] += 1
        self.manifest = _load_json(run_dir / "manifest.json")
        self.cleaning = current_clean_summary(run_dir)
        self.records = records_fingerprint(run_dir, self.cleaning)

    @property
    def count(self) -> int:
        return int(sum(self.tree.values()))


def _layout(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(
        title=title,
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
        height=420,
        template="plotly_white",
    )
    return fig


def taxonomy_sunburst(stats: RunStats) -> go.Figure:
    ids, labels, parents, values = [], [], [], []
    fields: Counter[str] = Counter()
    subfields: Counter[tuple[str, str]] = Counter()
    for (f, s, d), n in stats.tree.items():
        fields[f] += n
        subfields[(f, s)] += n
        ids.append(f"{f}/{s}/{d}")
        labels.append(d)
        parents.append(f"{f}/{s}")
        values.append(n)
    for (f, s), n in subfields.items():
        ids.append(f"{f}/{s}")
        labels.append(s)
        parents.append(f)
        values.append(n)
    for f, n in fields.items():
        ids.append(f)
        labels.append(f)
        parents.append("")
        values.append(n)
    fig = go.Figure(
        go.Sunburst(ids=ids, labels=labels, parents=parents, values=values, branchvalues="total")
    )
    return _layout(fig, "Instructions over the taxonomy (field > sub-field > discipline)")


def _bars(counter: dict[str, float] | Counter[str], title: str, x_title: str = "") -> go.Figure:
    keys = list(counter)
    fig = go.Figure(go.Bar(x=keys, y=[counter[k] for k in keys]))
    fig.update_xaxes(title=x_title)
    return _layout(fig, title)


def length_histograms(stats: RunStats) -> go.Figure:
    fig = go.Figure()
    for name, lengths in (("questions", stats.question_words), ("answers", stats.answer_words)):
        if not lengths:
            continue
        values = np.fromiter(lengths, dtype=np.int64, count=len(lengths))
        weights = np.fromiter(lengths.values(), dtype=np.int64, count=len(lengths))
        # the histogram of every record's length, from one entry per distinct length
        counts, edges = np.histogram(values, bins=min(40, len(values)), weights=weights)
        centres = (edges[:-1] + edges[1:]) / 2
        fig.add_trace(
            go.Bar(x=centres.tolist(), y=counts.astype(np.int64).tolist(), name=name, opacity=0.7)
        )
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="words")
    return _layout(fig, "Question and answer lengths")


def strategy_pie(stats: RunStats) -> go.Figure:
    keys = list(stats.strategies)
    fig = go.Figure(go.Pie(labels=keys, values=[stats.strategies[k] for k in keys], hole=0.4))
    return _layout(fig, "Sampling strategy: one session (single) or two (multi)")


def cleaning_bars(stats: RunStats) -> go.Figure:
    removed: dict[str, int] = {}
    c = stats.cleaning
    for reason, n in (c.get("filtered") or {}).items():
        removed[f"filter: {reason}"] = n
    for kind, n in (c.get("duplicates") or {}).items():
        removed[f"{kind} duplicate"] = n
    for bench, n in (c.get("contaminated") or {}).items():
        removed[f"contains {bench}"] = n
    title = (
        "What cleaning removed" if c else "What cleaning removed (not cleaned yet: run glan clean)"
    )
    return _bars(removed or {"nothing removed": 0}, title)


def usage_bars(stats: RunStats) -> go.Figure:
    usage = stats.manifest.get("usage") or {}
    order = [*STAGES, "taxonomy"]
    stages = sorted(usage, key=lambda s: order.index(s) if s in order else len(order))
    prompt = [sum(r["prompt_tokens"] for r in usage[s].values()) for s in stages]
    completion = [sum(r["completion_tokens"] for r in usage[s].values()) for s in stages]
    cost = [sum(r["cost_usd"] for r in usage[s].values()) for s in stages]
    fig = go.Figure(
        [
            go.Bar(x=stages, y=prompt, name="prompt tokens"),
            go.Bar(x=stages, y=completion, name="completion tokens"),
            go.Scatter(x=stages, y=cost, name="cost (USD)", yaxis="y2", mode="lines+markers"),
        ]
    )
    fig.update_layout(
        barmode="stack",
        yaxis={"title": "tokens", "rangemode": "tozero"},
        yaxis2={"overlaying": "y", "side": "right", "title": "USD", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.15},
    )
    return _layout(fig, "Tokens and cost per stage")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>glan report: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }}
.grid {{ display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }}
.card {{ border: 1px solid #ddd; border-radius: 8px; padding: 8px; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 4px 12px; text-align: left; }}
</style></head><body>
<h1>glan report</h1>
<p>{subtitle}</p>
<table>{summary}</table>
<div class="grid">{figures}</div>
</body></html>
"""


def build_report(run_dir: Path, out: Path | None = None, steps: Steps | None = None) -> Path:
    stats = RunStats(run_dir, steps)
    figures = [
        taxonomy_sunburst(stats),
        _bars(stats.levels, "Subject levels"),
        strategy_pie(stats),
        length_histograms(stats),
        cleaning_bars(stats),
        usage_bars(stats),
    ]
    parts = []
    for i, fig in enumerate(figures):
        # plotly.js goes in once, inline: the page must work offline.
        parts.append(
            '<div class="card">'
            + fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig{i}")
            + "</div>"
        )
    m = stats.manifest
    rows = {
        "instructions": f"{stats.count:,}",
        "disciplines": f"{len(stats.tree):,}",
        "target": f"{m.get('target', '?')}",
        "status": m.get("status", "?"),
        "cost": f"${m.get('cost_usd', 0):.4f}",
        "kept after cleaning": f"{stats.cleaning['kept']:,}" if stats.cleaning else "not cleaned",
        "made from": f"{stats.records.file} sha256 {stats.records.sha256} "
        f"({stats.records.bytes:,} bytes)",
    }
    summary = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows.items()
    )
    page = PAGE.format(
        title=html.escape(run_dir.name),
        subtitle=html.escape(f"{run_dir.resolve()} (seed {m.get('seed', '?')})"),
        summary=summary,
        figures="".join(parts),
    )
    target = out or run_dir / "report.html"
    atomic_write_text(target, page)
    return target
