"""The page's parts, each read from the file `glan eval` or `glan test run` wrote: its table
(cells formatted by the same functions as that command's own report), its notes, and the
numbers themselves as the file holds them. A part whose file is absent says so and what to
run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from glan.errors import UserError
from glan.evaluate.results import EvalReport, how_to_read, rows
from glan.evidence.sources import Sources
from glan.glantest.report import comparison_note, cut_line, table_rows
from glan.glantest.report_absolute import absolute_table


class Table(BaseModel):
    title: str
    source: str  # the file its numbers were read from (as listed in the sources)
    head: list[str]
    body: list[list[str]]


class Part(BaseModel):
    name: str
    shown: bool
    why: str = ""  # not shown: why, and what to run
    lines: list[str] = []  # how to read it
    tables: list[Table] = []
    numbers: Any = None  # the figures as the file holds them


SHAPE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, ValidationError)


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """A file that is not the result it was given as (another command's, another glan
    version's, hand-edited) is the user's one-line error, naming it and what was expected."""
    try:
        yield
    except UserError:
        raise
    except SHAPE_ERRORS as exc:
        found = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
        raise UserError(f"{path} is not {what} as this glan writes it ({found})") from None


def _require(data: Any, *keys: str) -> None:
    """Touch each dotted key, so that a file of another shape fails here, by name."""
    for key in keys:
        value = data
        for part in key.split("."):
            value = value[part]


EVAL_HOLDS = "eval scores, deltas, 95% intervals, McNemar/Holm p, verdicts, detectable"


def eval_part(eval_dir: Path, sources: Sources, why_missing: str) -> tuple[Part, EvalReport | None]:
    path = eval_dir / "eval_results.json"
    if not path.is_file():
        return Part(name="Eval", shown=False, why=why_missing), None
    data, source = sources.read_json(path, EVAL_HOLDS)
    with reading(path, "a `glan eval` eval_results.json"):
        report = EvalReport.model_validate(data)
    for result in report.results:
        for label, name in result.samples_files.items():
            if (eval_dir / name).is_file():
                sources.add(
                    eval_dir / name,
                    f"{result.benchmark}, {label}: lm-eval's per-item records the comparison pairs",
                )
    head, body = rows(report)
    lines = [how_to_read(report)] if len(report.models) > 1 else []
    numbers = [
        {
            "benchmark": r.benchmark,
            "status": r.status,
            "reason": r.reason,
            "metric": r.metric,
            "items": r.samples,
            "scores": r.scores,
            "comparisons": [c.model_dump() for c in r.comparisons],
            "paired_note": r.paired_note,
        }
        for r in report.results
    ]
    table = Table(
        title="glan eval (scores and deltas in points)", source=source.path, head=head, body=body
    )
    return Part(name="Eval", shown=True, lines=lines, tables=[table], numbers=numbers), report


LEAKAGE_HEAD = [
    "benchmark",
    "model",
    "n",
    "'train' split (from)",
    "loss test",
    "loss train",
    "gap [95% CI]",
    "shift [95% CI]",
    "reading",
]
PER_ITEM = ("test_losses", "train_losses")  # the intervals' inputs: in the file, not the page


def _leakage_cells(row: dict[str, Any]) -> list[str]:
    split = row["train_split"] + (f" ({row['train_source']})" if row["train_source"] else "")
    if row["status"] != "run":
        return [
            row["benchmark"],
            row["model"],
            "",
            split,
            "",
            "",
            "",
            "",
            f"skipped: {row['reason']}",
        ]
    return [
        row["benchmark"],
        row["model"],
        str(row["items"]),
        split,
        f"{row['test_loss']:.3f}",
        f"{row['train_loss']:.3f}",
        f"{row['gap']:+.3f} [{row['gap_low']:+.3f}, {row['gap_high']:+.3f}]",
        f"{row['shift']:+.3f} [{row['shift_low']:+.3f}, {row['shift_high']:+.3f}]",
        row["warning"] or row["reading"],
    ]


def leakage_part(path: Path, sources: Sources, why_missing: str) -> Part:
    if not path.is_file():
        return Part(name="Leakage", shown=False, why=why_missing)
    data, source = sources.read_json(path, "leakage losses, gaps, shifts and their intervals")
    with reading(path, "a `glan eval --leakage` leakage.json"):
        _require(data, "models", "rows", "warn_shift", "bootstrap.seed", "scoring.batch_size")
        return _leakage_part(data, source.path)


def _leakage_part(data: dict[str, Any], source: str) -> Part:
    reference = next(iter(data["models"]), "")
    boot = data["bootstrap"]
    lines = [
        "The paper's leakage test: each model's mean loss on the benchmark's test items minus "
        "on as many items of the split that stands in for its training split ('train' split: "
        "which split, and from where). Near 0: not fitted to the task (the paper's GLAN: -0.03 "
        f"ARC-C, +0.02 GSM8K). shift: the gap minus the first model's ({reference}; for it, "
        f"its gap itself); reading: flagged when the shift's whole interval lies past "
        f"±{data['warn_shift']} nats, near when within, else can't tell. Intervals: "
        f"{boot['level']:.0%} bootstrap over items ({boot['iters']:,} resamples, seed "
        f"{boot['seed']}; {boot['resampling']})."
    ]
    table = Table(
        title="leakage test: loss on test items - loss on 'train' items (nats)",
        source=source,
        head=LEAKAGE_HEAD,
        body=[_leakage_cells(r) for r in data["rows"]],
    )
    numbers = [{k: v for k, v in r.items() if k not in PER_ITEM} for r in data["rows"]]
    return Part(name="Leakage", shown=True, lines=lines, tables=[table], numbers=numbers)


def exam_dir_of(report: dict[str, Any], results_dir: Path) -> Path | None:
    """The exam a grading ran on: the folder its default results sit in (EXAM/results/NAME),
    else the path it recorded, where that is absolute (a relative one was relative to a
    folder the report does not name)."""
    recorded = Path(report.get("exam") or "")
    candidates = [results_dir.parent.parent, *([recorded] if recorded.is_absolute() else [])]
    for candidate in candidates:
        if (candidate / "exam.jsonl").is_file():
            return candidate
    return None


def _judge_line(report: dict[str, Any], alone: bool) -> str:
    judge = report["judge"]
    where = f" {judge['address']}" if judge.get("address") else ""
    how = "each answer scored alone" if alone else "both answers side by side, in both orders"
    boot = report["bootstrap"]
    return (
        f"Judge: {judge['model']} ({judge['kind']}{where}); {how}; {report['scored']} of "
        f"{report['items']} items scored"
        + (", with reference answers" if report.get("references") else "")
        + f". Scores 1-10; intervals are {boot['level']:.0%} paired bootstraps over items "
        f"({boot['resamples']} resamples, seed {boot['seed']}); p: two-sided sign-flip "
        "permutation test. Not corrected across rows."
    )


def glantest_part(results_dir: Path, sources: Sources) -> tuple[Part, dict[str, Any]]:
    path = results_dir / "report.json"
    data, source = sources.read_json(path, "GLAN-Test means, differences, intervals, p, win rates")
    with reading(path, "a `glan test run` report.json"):
        _require(data, "judge.model", "overall", "groups", "bootstrap.seed", "items", "scored")
        return _glantest_part(data, results_dir, source.path, sources)


def _glantest_part(
    data: dict[str, Any], results_dir: Path, source: str, sources: Sources
) -> tuple[Part, dict[str, Any]]:
    if (results_dir / "judgments.jsonl").is_file():
        sources.add(results_dir / "judgments.jsonl", "the answers and the judge's every verdict")
    alone = data.get("mode") == "absolute"
    rows_shown = {"all items": data["overall"], **data["groups"]}
    head, body = (absolute_table if alone else table_rows)(data, rows_shown)
    lines = [_judge_line(data, alone)]
    if alone:
        base = data["baseline"]
        lines.append(
            f"Each model against the baseline {base}: X - {base} is the mean per-item "
            f"difference; X win rate: the share of items X scores higher, ties counted half."
        )
        name = f"GLAN-Test (absolute): {', '.join(data['labels'])}"
    else:
        a, b = data["pair"]
        lines.append(comparison_note(a, b))
        lines.append(
            f"Position bias: the verdict flipped with the order on "
            f"{data['position_bias']['verdict_flips']} of {data['position_bias']['items']} items."
        )
        name = f"GLAN-Test (pairwise): {a} vs {b}"
    lines += cut_line(data) or ["No answer was cut at the token limit."]
    exam = exam_dir_of(data, results_dir)
    if exam is None:
        lines.append(f"The exam ({data.get('exam')}) was not found: its files are not listed.")
    else:
        for file, holds in EXAM_FILES.items():
            if (exam / file).is_file():
                sources.add(exam / file, holds)
    numbers = {
        key: data.get(key)
        for key in ("mode", "pair", "labels", "items", "scored", "overall", "groups")
        if key in data
    } | {"cut_at_token_limit": data.get("cut_at_token_limit"), "unscored": data["unscored"]}
    table = Table(title=f"{name} (per group)", source=source, head=head, body=body)
    return Part(name=name, shown=True, lines=lines, tables=[table], numbers=numbers), data


EXAM_FILES = {
    "exam.jsonl": "the exam's questions",
    "manifest.json": "how the exam was held out (subjects, overlap with the run, seed, config)",
    "references.jsonl": "the reference answers the judge was shown",
}
