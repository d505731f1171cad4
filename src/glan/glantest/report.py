"""The GLAN-Test report: report.json (everything), report.md (the tables) and report.html (the
tables and plots, one self-contained page in the style of `glan report`)."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import plotly.graph_objects as go

from glan.glantest.exam import group_of
from glan.glantest.stats import MIN_ITEMS_FOR_INTERVAL, NO_INTERVAL, outcome, summarise
from glan.run.files import atomic_write_json, atomic_write_text


def discipline_of(record: dict[str, Any]) -> str:
    m = record.get("meta") or {}
    return f"{m.get('field', '?')}/{m.get('subfield', '?')}/{m.get('discipline', '?')}"


def _why_unscored(record: dict[str, Any]) -> str:
    for label, a in record.get("answers", {}).items():
        if a.get("retry_later"):
            return f"{label} did not answer (endpoint failing; re-run to resume): {a.get('error')}"
    errors = [
        f"order {j['order']}: {j['error']}" for j in record.get("judgments", []) if j.get("error")
    ]
    return "judge reply not usable: " + "; ".join(errors) if errors else "not judged"


def build_report(
    records: list[dict[str, Any]],
    pair: tuple[str, str],
    info: dict[str, Any],
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    records = sorted(records, key=lambda r: str(r["id"]))  # the resamples index items by order
    scored: list[tuple[dict[str, Any], Any]] = []
    unscored = []
    first_higher = second_higher = judged_orders = 0
    for record in records:
        for j in record.get("judgments", []):
            if j.get("scores"):
                judged_orders += 1
                second = pair[1] if j["first"] == pair[0] else pair[0]
                first_higher += j["scores"][j["first"]] > j["scores"][second]
                second_higher += j["scores"][second] > j["scores"][j["first"]]
        found = outcome(record, pair)
        if found is None:
            unscored.append(
                {
                    "id": record["id"],
                    "discipline": discipline_of(record),
                    "why": _why_unscored(record),
                }
            )
        else:
            scored.append((record, found))

    def rows(key) -> dict[str, Any]:
        names = list(dict.fromkeys(key(r) for r, _ in scored))
        return {
            name: summarise([o for r, o in scored if key(r) == name], pair, name, resamples, seed)
            for name in sorted(names)
        }

    overall = summarise([o for _, o in scored], pair, "(all)", resamples, seed)
    return {
        **info,
        "pair": list(pair),
        "items": len(records),
        "scored": len(scored),
        "unscored": unscored,
        "overall": overall,
        "position_bias": {
            "items": len(scored),
            "verdict_flips": overall["flips"],
            "flip_rate": overall["flip_rate"],
            "judgments": judged_orders,
            "first_shown_scored_higher": first_higher,
            "second_shown_scored_higher": second_higher,
        },
        "groups": rows(group_of),
        "disciplines": rows(discipline_of),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
    }


# ---- Markdown ------------------------------------------------------------------------------
def _cell(row: dict[str, Any], label: str) -> str:
    if not row["items"]:
        return "-"
    return interval_cell(row["mean"][label], (row["ci95"] or {}).get(label))


def interval_cell(value: float, ci95: list[float] | None, signed: bool = False) -> str:
    """`value [lo, hi]`, or `value (n<10)` on a row too small for intervals; signed for a
    difference, so its direction reads at a glance."""
    f = "{:+.2f}" if signed else "{:.2f}"
    if ci95 is None:
        return f"{f.format(value)} ({NO_INTERVAL})"
    return f"{f.format(value)} [{f.format(ci95[0])}, {f.format(ci95[1])}]"


def error_bars(values: list[float], intervals: list[list[float] | None]) -> dict[str, Any]:
    """Plotly error bars of values with their intervals (none where a row has no interval)."""
    return {
        "type": "data",
        "array": [0 if c is None else c[1] - v for v, c in zip(values, intervals, strict=True)],
        "arrayminus": [
            0 if c is None else v - c[0] for v, c in zip(values, intervals, strict=True)
        ],
    }


def p_cell(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def comparison_head(a: str, b: str) -> list[str]:
    return [f"{b} - {a} [95% CI]", "p", f"{b} win rate [95% CI]"]


def comparison_cells(row: dict[str, Any]) -> list[str]:
    """The paired difference B - A, its p-value and B's win rate, each with its interval."""
    if not row["items"]:
        return ["-", "-", "-"]
    d, w = row["difference"], row["win_rate"]
    return [
        interval_cell(d["mean"], d["ci95"], signed=True),
        p_cell(d["p_value"]),
        interval_cell(w["value"], w["ci95"]),
    ]


def table_rows(report: dict[str, Any], rows: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    a, b = report["pair"]
    head = [
        "",
        "items",
        f"{a} mean [95% CI]",
        f"{b} mean [95% CI]",
        f"{a} wins",
        "ties",
        f"{b} wins",
        "order flips",
        *comparison_head(a, b),
    ]
    body = []
    for name, row in rows.items():
        wins = row["wins"] or {a: 0, "tie": 0, b: 0}
        flips = f"{row['flips']} ({row['flip_rate']:.0%})" if row["items"] else "-"
        body.append(
            [
                name,
                str(row["items"]),
                _cell(row, a),
                _cell(row, b),
                str(wins[a]),
                str(wins["tie"]),
                str(wins[b]),
                flips,
                *comparison_cells(row),
            ]
        )
    return head, body


def _md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def _headline(report: dict[str, Any]) -> list[str]:
    a, b = report["pair"]
    bias = report["position_bias"]
    judge = report["judge"]
    lines = [
        f"Judge: {judge['model']} ({judge['kind']}{' ' + judge['address'] if judge['address'] else ''}); "
        f"{report['scored']} of {report['items']} items scored in both orders"
        + (", with reference answers" if report.get("references") else "")
        + ".",
    ]
    if bias["items"]:
        lines.append(
            f"Position bias: the verdict flipped with the order on {bias['verdict_flips']} of "
            f"{bias['items']} items ({bias['flip_rate']:.0%}); the answer shown first scored higher "
            f"in {bias['first_shown_scored_higher']} of {bias['judgments']} judgments, the one "
            f"shown second in {bias['second_shown_scored_higher']}."
        )
    lines.append(
        f"Scores are 1-10, each the mean of both orders; intervals are 95% bootstraps over items "
        f"({report['bootstrap']['resamples']} resamples, seed {report['bootstrap']['seed']}; "
        f"{SMALL_ROWS}). Wins compare {a} with {b} item by item."
    )
    lines.append(comparison_note(a, b))
    return lines + cut_line(report)


CUT_IDS_SHOWN = 10  # per model; report.json lists them all


def cut_line(report: dict[str, Any]) -> list[str]:
    """The answers cut at the token limit, per model with the first item ids, when any was."""
    cut = report.get("cut_at_token_limit") or {}
    if not any(c["count"] for c in cut.values()):
        return []

    def one(label: str, c: dict[str, Any]) -> str:
        if not c["count"]:
            return f"{label} 0"
        ids = ", ".join(c["ids"][:CUT_IDS_SHOWN])
        more = c["count"] - CUT_IDS_SHOWN
        return f"{label} {c['count']} ({ids}{f' and {more} more' if more > 0 else ''})"

    counts = ", ".join(one(label, c) for label, c in cut.items())
    return [
        f"Answers cut at the token limit (graded as given): {counts}. "
        "A low score may be only a cut answer; report.json lists them (cut_at_token_limit)."
    ]


SMALL_ROWS = (
    f"no interval on rows of fewer than {MIN_ITEMS_FOR_INTERVAL} items, marked {NO_INTERVAL}"
)


def comparison_note(a: str, b: str) -> str:
    return (
        f"{b} - {a}: the mean of the per-item differences, with its paired bootstrap interval "
        f"and a two-sided sign-flip permutation p-value (no difference: p is uniform). "
        f"{b} win rate: the share of items {b} wins, ties counted half (0.5: even)."
    )


Table = Callable[[dict[str, Any], dict[str, Any]], tuple[list[str], list[list[str]]]]


def sections(report: dict[str, Any], disciplines: bool = True) -> list[tuple[str, dict[str, Any]]]:
    rows = [("Overall", {"all items": report["overall"]})]
    rows.append(("By GLAN-Test group", report["groups"]))
    if disciplines:
        rows.append(("By discipline", report["disciplines"]))
    return rows


def render_markdown(
    report: dict[str, Any], title: str, headline: list[str], table: Table, disciplines: bool
) -> str:
    """A report's tables under its headline, then the items not scored and why."""
    parts = [f"# GLAN-Test: {title}", "", *headline, ""]
    for name, rows in sections(report, disciplines):
        parts += [f"## {name}", "", _md_table(*table(report, rows)), ""]
    if report["unscored"]:
        parts += ["## Not scored", ""]
        parts += [f"- `{u['id']}` ({u['discipline']}): {u['why']}" for u in report["unscored"]]
        parts.append("")
    return "\n".join(parts)


def markdown(report: dict[str, Any], disciplines: bool = True) -> str:
    """The report's tables; without the per-discipline one for a terminal (it may be long)."""
    a, b = report["pair"]
    return render_markdown(report, f"{a} vs {b}", _headline(report), table_rows, disciplines)


# ---- HTML ----------------------------------------------------------------------------------
def _layout(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    fig.update_layout(
        title=title,
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
        height=height,
        template="plotly_white",
    )
    return fig


def mean_bars(
    report: dict[str, Any], rows: dict[str, Any], title: str, labels: list[str] | None = None
) -> go.Figure:
    names = [n for n, r in rows.items() if r["items"]]
    fig = go.Figure()
    for label in labels or report["pair"]:
        means = [rows[n]["mean"][label] for n in names]
        fig.add_trace(
            go.Bar(
                x=names,
                y=means,
                name=label,
                error_y=error_bars(means, [(rows[n]["ci95"] or {}).get(label) for n in names]),
            )
        )
    fig.update_layout(barmode="group", yaxis={"range": [0, 10.5], "title": "mean score (1-10)"})
    return _layout(fig, title)


def win_bars(report: dict[str, Any]) -> go.Figure:
    a, b = report["pair"]
    rows = {"all": report["overall"], **report["groups"]}
    names = [n for n, r in rows.items() if r["items"]]
    fig = go.Figure(
        [
            go.Bar(x=names, y=[rows[n]["wins"][k] / rows[n]["items"] for n in names], name=name)
            for k, name in ((a, f"{a} wins"), ("tie", "tie"), (b, f"{b} wins"))
        ]
    )
    fig.update_layout(barmode="stack", yaxis={"title": "share of items", "range": [0, 1]})
    return _layout(fig, "Win / tie / loss per group")


def flip_bars(report: dict[str, Any]) -> go.Figure:
    rows = {"all": report["overall"], **report["groups"]}
    names = [n for n, r in rows.items() if r["items"]]
    fig = go.Figure(go.Bar(x=names, y=[rows[n]["flip_rate"] for n in names]))
    fig.update_layout(yaxis={"title": "share of items", "range": [0, 1]})
    return _layout(fig, "Position bias: verdict flips with the order")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GLAN-Test: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }}
.grid {{ display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }}
.card {{ border: 1px solid #ddd; border-radius: 8px; padding: 8px; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ padding: 4px 12px; text-align: left; border-bottom: 1px solid #eee; }}
</style></head><body>
<h1>GLAN-Test: {title}</h1>
{headline}
<div class="grid">{figures}</div>
{tables}
</body></html>
"""


def _html_table(head: list[str], body: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
    )
    return f"<table><tr>{cells}</tr>{rows}</table>"


def render_page(
    report: dict[str, Any],
    title: str,
    headline: list[str],
    figures: list[go.Figure],
    tables: list[tuple[str, dict[str, Any]]],
    table: Table,
) -> str:
    """One self-contained page: the headline, the figures (plotly inline, once), the tables
    and the items not scored."""
    cards = [
        '<div class="card">'
        + fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig{i}")
        + "</div>"
        for i, fig in enumerate(figures)
    ]
    body = "".join(
        f"<h2>{html.escape(name)}</h2>" + _html_table(*table(report, rows)) for name, rows in tables
    )
    if report["unscored"]:
        body += (
            "<h2>Not scored</h2><ul>"
            + "".join(
                f"<li>{html.escape(u['id'])} ({html.escape(u['discipline'])}): {html.escape(u['why'])}</li>"
                for u in report["unscored"]
            )
            + "</ul>"
        )
    return PAGE.format(
        title=html.escape(title),
        headline="".join(f"<p>{html.escape(line)}</p>" for line in headline),
        figures="".join(cards),
        tables=body,
    )


def page(report: dict[str, Any]) -> str:
    figures = [
        mean_bars(
            report,
            {"all": report["overall"], **report["groups"]},
            "Mean score per GLAN-Test group (95% CI)",
        ),
        win_bars(report),
        mean_bars(report, report["disciplines"], "Mean score per discipline (95% CI)"),
        flip_bars(report),
    ]
    a, b = report["pair"]
    tables = sections(report)[1:]  # the overall row is in the plots' "all"
    return render_page(report, f"{a} vs {b}", _headline(report), figures, tables, table_rows)


def write_files(report: dict[str, Any], out_dir: Path, md: str, page_html: str) -> list[Path]:
    paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "report.html"]
    atomic_write_json(paths[0], report)
    atomic_write_text(paths[1], md)
    atomic_write_text(paths[2], page_html)
    return paths


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    return write_files(report, out_dir, markdown(report), page(report))


def read_report(out_dir: Path) -> dict[str, Any]:
    return orjson.loads((out_dir / "report.json").read_bytes())
