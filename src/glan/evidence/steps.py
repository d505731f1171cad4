"""The steps behind a page, run where their results are missing: the eval, the leakage test,
the exam and its grading, each through the library call its own command makes. A step whose
result is there with the same inputs is not run again; the grading always replays (every
answer and verdict is in the exam's response cache, so a re-run re-asks nothing). A folder
holding a step's result for other inputs is refused, never overwritten."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from glan.aio import run
from glan.errors import UserError
from glan.evaluate.registry import Benchmark
from glan.evaluate.runner import EvalSettings

Say = Callable[[str], None]


def _recorded(path: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def ensure_eval(
    models: dict[str, str],
    benchmarks: list[Benchmark],
    settings: EvalSettings,
    eval_dir: Path,
    say: Say,
) -> None:
    """`glan eval` into eval_dir, unless it holds this very eval already."""
    from glan.evaluate.runner import evaluate

    path = eval_dir / "eval_results.json"
    old = _recorded(path)
    if old is not None:
        recorded = old.get("provenance") or {}
        wanted = asdict(settings)
        same = (
            old.get("models") == models
            and recorded.get("benchmarks") == [b.name for b in benchmarks]
            and all((recorded.get("settings") or {}).get(k) == v for k, v in wanted.items())
        )
        if not same:
            raise UserError(
                f"{path} holds an eval of other models, benchmarks or settings: give another "
                "--out, or compose it as it is (--eval)"
            )
        say(f"eval: reused {path}")
        return
    say(f"eval: running {', '.join(models)} on {', '.join(b.name for b in benchmarks)}")
    evaluate(models, benchmarks, eval_dir, settings)


def ensure_leakage(
    models: dict[str, str],
    benchmarks: list[str],
    items: int,
    batch_size: int,
    eval_dir: Path,
    say: Say,
) -> None:
    """The leakage test (`glan eval --leakage`) into eval_dir/leakage, unless there already."""
    from glan.evaluate import leakage

    path = eval_dir / "leakage" / "leakage.json"
    old = _recorded(path)
    if old is not None:
        ran = list(dict.fromkeys(r["benchmark"] for r in old.get("rows", [])))
        if old.get("models") != models or ran != benchmarks:
            raise UserError(
                f"{path} holds a leakage test of other models or benchmarks: give another --out"
            )
        say(f"leakage: reused {path}")
        return
    say(f"leakage: scoring {items} items of each split per benchmark")
    rows = leakage.check(models, list(benchmarks), items, batch_size=batch_size)
    leakage.write(rows, [], path.parent, models, batch_size)


def ensure_exam(
    cfg: Any,
    run_dir: Path,
    exam_dir: Path,
    per_discipline: int,
    holdout: Any,
    say: Say,
) -> None:
    """`glan test build RUN` into exam_dir, unless an exam is there (its manifest written last)."""
    from glan.glantest.build import build_exam
    from glan.glantest.discipline import ExamSettings
    from glan.taxonomy import load_taxonomy

    if (exam_dir / "manifest.json").is_file() and (exam_dir / "exam.jsonl").is_file():
        say(f"exam: reused {exam_dir}")
        return
    say(f"exam: building from {run_dir} ({per_discipline} questions per discipline)")
    settings = ExamSettings(per_discipline=per_discipline)
    taxonomy = load_taxonomy(run_dir / "taxonomy.yaml")
    run(build_exam(cfg, taxonomy, exam_dir, settings, run_dir, holdout=holdout))


def grade_exam(
    exam_dir: Path,
    endpoints: dict[str, Any],
    judge: Any,
    absolute: bool,
    say: Say,
) -> Path:
    """`glan test run` on the exam into its default results folder; replayed from the cache
    where it ran before."""
    from glan.glantest.grade import GradeSettings, grade, results_name

    target = exam_dir / "results" / results_name(list(endpoints), absolute)
    say(f"GLAN-Test: {'absolute' if absolute else 'pairwise'} grading into {target}")
    run(grade(exam_dir, endpoints, judge, target, GradeSettings(absolute=absolute)))
    return target
