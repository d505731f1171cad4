"""The report of absolute grading (`glan test run --absolute`): each model's mean score with
its interval, and each model against the first (the baseline), per row; written as
report.json, report.md and report.html like the pairwise report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from glan.glantest.absolute import item_scores
from glan.glantest.exam import group_of
from glan.glantest.report import (
    SMALL_ROWS,
    _layout,
    cut_line,
    discipline_of,
    error_bars,
    interval_cell,
    mean_bars,
    p_cell,
    render_markdown,
    render_page,
    sections,
    write_files,
)
from glan.glantest.stats import score_rows


def _why_unscored(record: dict[str, Any], labels: list[str]) -> str:
    grades = {g["model"]: g for g in record.get("grades", [])}
    why = []
    for label in labels:
        a = record.get("answers", {}).get(label) or {}
        g = grades.get(label)
        if a.get("retry_later"):
            why.append(
                f"{label} did not answer (endpoint failing; re-run to resume): {a.get('error')}"
            )
        elif g is None:
            why.append(f"{label} not judged")
        elif g.get("score") is None:
            why.append(f"judge reply for {label} not usable: {g.get('error')}")
    return "; ".join(why) or "not judged"


def summarise_absolute(
    scores: list[list[float]], labels: list[str], name: str, resamples: int, seed: int
) -> dict[str, Any]:
    if not scores:
        return {"items": 0, "mean": None, "ci95": None, "against_baseline": None}
    return {
        "items": len(scores),
        **score_rows(np.array(scores), labels, name, resamples, seed),
    }


def build_absolute_report(
    records: list[dict[str, Any]],
    labels: list[str],
    info: dict[str, Any],
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    records = sorted(records, key=lambda r: str(r["id"]))  # the resamples index items by order
    scored: list[tuple[dict[str, Any], list[float]]] = []
    unscored = []
    for record in records:
        found = item_scores(record, labels)
        if found is None:
            unscored.append(
                {
                    "id": record["id"],
                    "discipline": discipline_of(record),
                    "why": _why_unscored(record, labels),
                }
            )
        else:
            scored.append((record, found))

    def rows(key) -> dict[str, Any]:
        names = sorted({key(r) for r, _ in scored})
        return {
            name: summarise_absolute(
                [s for r, s in scored if key(r) == name], labels, name, resamples, seed
            )
            for name in names
        }

    return {
        **info,
        "mode": "absolute",
        "labels": labels,
        "baseline": labels[0],
        "items": len(records),
        "scored": len(scored),
        "unscored": unscored,
        "overall": summarise_absolute([s for _, s in scored], labels, "(all)", resamples, seed),
        "groups": rows(group_of),
        "disciplines": rows(discipline_of),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
    }


# ---- Markdown ------------------------------------------------------------------------------
def absolute_table(
    report: dict[str, Any], rows: dict[str, Any]
) -> tuple[list[str], list[list[str]]]:
    labels = report["labels"]
    base, others = labels[0], labels[1:]
    head = ["", "items", *(f"{k} mean [95% CI]" for k in labels)]
    for k in others:
        head += [f"{k} - {base} [95% CI]", "p", f"{k} win rate [95% CI]"]
    body = []
    for name, row in rows.items():
        cells = [name, str(row["items"])]
        if not row["items"]:
            body.append(cells + ["-"] * (len(head) - 2))
            continue
        cells += [interval_cell(row["mean"][k], (row["ci95"] or {}).get(k)) for k in labels]
        for k in others:
            d, w = (row["against_baseline"][k][x] for x in ("difference", "win_rate"))
            cells += [
                interval_cell(d["mean"], d["ci95"], signed=True),
                p_cell(d["p_value"]),
                interval_cell(w["value"], w["ci95"]),
            ]
        body.append(cells)
    return head, body


def _headline(report: dict[str, Any]) -> list[str]:
    judge = report["judge"]
    base = report["baseline"]
    lines = [
        f"Judge: {judge['model']} ({judge['kind']}{' ' + judge['address'] if judge['address'] else ''}); "
        f"each answer scored alone; {report['scored']} of {report['items']} items scored for "
        f"every model" + (", with reference answers" if report.get("references") else "") + ".",
        f"Scores are 1-10; intervals are 95% bootstraps over items, paired across models "
        f"({report['bootstrap']['resamples']} resamples, seed {report['bootstrap']['seed']}; "
        f"{SMALL_ROWS}).",
    ]
    if len(report["labels"]) > 1:
        lines.append(
            f"Each model is compared with the baseline, {base}: X - {base} is the mean of the "
            f"per-item differences, with its paired bootstrap interval and a two-sided sign-flip "
            f"permutation p-value; X win rate: the share of items X scores higher than {base}, "
            f"ties counted half (0.5: even)."
        )
    return lines + cut_line(report)


def absolute_markdown(report: dict[str, Any], disciplines: bool = True) -> str:
    """The report's tables; without the per-discipline one for a terminal (it may be long)."""
    title = f"{', '.join(report['labels'])} (absolute)"
    return render_markdown(report, title, _headline(report), absolute_table, disciplines)


# ---- HTML ----------------------------------------------------------------------------------
def difference_bars(report: dict[str, Any]) -> go.Figure:
    """Each model's difference from the baseline per group, with its interval."""
    base = report["baseline"]
    rows = {"all": report["overall"], **report["groups"]}
    names = [n for n, r in rows.items() if r["items"]]
    fig = go.Figure()
    for label in report["labels"][1:]:
        diffs = [rows[n]["against_baseline"][label]["difference"] for n in names]
        fig.add_trace(
            go.Bar(
                x=names,
                y=[d["mean"] for d in diffs],
                name=f"{label} - {base}",
                error_y=error_bars([d["mean"] for d in diffs], [d["ci95"] for d in diffs]),
            )
        )
    fig.update_layout(barmode="group", yaxis={"title": f"difference from {base} (95% CI)"})
    return _layout(fig, f"Difference from the baseline ({base}) per group")


def absolute_page(report: dict[str, Any]) -> str:
    labels = report["labels"]
    groups = {"all": report["overall"], **report["groups"]}
    figures = [
        mean_bars(report, groups, "Mean score per GLAN-Test group (95% CI)", labels),
        mean_bars(report, report["disciplines"], "Mean score per discipline (95% CI)", labels),
    ]
    if len(labels) > 1:
        figures.append(difference_bars(report))
    title = f"{', '.join(labels)} (absolute)"
    return render_page(report, title, _headline(report), figures, sections(report), absolute_table)


def write_absolute_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    return write_files(report, out_dir, absolute_markdown(report), absolute_page(report))
