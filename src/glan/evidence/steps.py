"""The steps behind a page, run where their results are missing: the eval, the leakage test,
the exam and its grading, each through the library call its own command makes. A step whose
result is there with the same inputs is not run again; the grading always replays (every
answer and verdict is in the exam's response cache, so a re-run re-asks nothing). A folder
holding a step's result for other inputs is refused, never overwritten: every `reusable_*`
check runs before any step does, so a refusal costs nothing."""

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
ASKED = "evidence-step.json"  # beside leakage.json: the items and batch size the step asked for


def _recorded(path: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _refuse(path: Path, what: str, recorded: Any, now: Any) -> UserError:
    return UserError(
        f"{path} was made with other {what} (recorded {recorded}, now {now}): give another "
        "--out (it is never overwritten)"
    )


def current_identity(given: str, recorded: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """(what, recorded, now) for the first of a model's recorded identities (GGUF sha256, folder
    fingerprint, hub revision) that differs from the model there now; None when all match."""
    from glan.evaluate import provenance
    from glan.train.models import gguf_of

    gguf = gguf_of(given)
    if recorded.get("gguf_sha256") and gguf is not None:
        now = provenance.weights_sha256(gguf)
        if now != recorded["gguf_sha256"]:
            return "GGUF sha256", recorded["gguf_sha256"], now
        return None
    folder = Path(given).expanduser()
    if recorded.get("fingerprint") and folder.is_dir():
        now = provenance.fingerprint(folder)
        if now != recorded["fingerprint"]:
            return "weights (folder fingerprint)", recorded["fingerprint"], now
    elif recorded.get("revision"):
        snapshot = provenance._hub_snapshot(recorded.get("resolved") or given)
        if snapshot is not None and snapshot.name != recorded["revision"]:
            return "hub revision", recorded["revision"], snapshot.name
    return None


def reusable_eval(
    models: dict[str, str], benchmarks: list[Benchmark], settings: EvalSettings, eval_dir: Path
) -> bool:
    """True when eval_dir holds this very eval (same models, weights, benchmarks, settings);
    False when it holds none; refused when it holds another."""
    path = eval_dir / "eval_results.json"
    old = _recorded(path)
    if old is None:
        return False
    recorded = old.get("provenance") or {}
    if old.get("models") != models:
        raise _refuse(path, "models", old.get("models"), models)
    names = [b.name for b in benchmarks]
    if recorded.get("benchmarks") != names:
        raise _refuse(path, "benchmarks", recorded.get("benchmarks"), names)
    was = recorded.get("settings") or {}
    for key, value in asdict(settings).items():
        if was.get(key) != value:
            raise _refuse(path, f"settings ({key})", was.get(key), value)
    for label, given in models.items():
        differs = current_identity(given, (recorded.get("models") or {}).get(label) or {})
        if differs is not None:
            what, then, now = differs
            raise _refuse(path, f"{label} model {what}", then, now)
    return True


def ensure_eval(
    models: dict[str, str],
    benchmarks: list[Benchmark],
    settings: EvalSettings,
    eval_dir: Path,
    say: Say,
) -> None:
    """`glan eval` into eval_dir, unless it holds this very eval already."""
    from glan.evaluate.runner import evaluate

    if reusable_eval(models, benchmarks, settings, eval_dir):
        say(f"eval: reused {eval_dir / 'eval_results.json'}")
        return
    say(f"eval: running {', '.join(models)} on {', '.join(b.name for b in benchmarks)}")
    evaluate(models, benchmarks, eval_dir, settings)


def reusable_leakage(
    models: dict[str, str], benchmarks: list[str], items: int, batch_size: int, eval_dir: Path
) -> bool:
    """True when eval_dir/leakage holds this very leakage test; False when none; refused when
    it holds one of other models, benchmarks, items per split or batch size."""
    path = eval_dir / "leakage" / "leakage.json"
    old = _recorded(path)
    if old is None:
        return False
    if old.get("models") != models:
        raise _refuse(path, "models", old.get("models"), models)
    ran = list(dict.fromkeys(r.get("benchmark") for r in old.get("rows") or []))
    if ran != benchmarks:
        raise _refuse(path, "benchmarks", ran, benchmarks)
    # A split smaller than asked scores fewer items: what this step asked is recorded beside.
    asked = _recorded(path.parent / ASKED) or {}
    scored = max((r.get("items") or 0 for r in old.get("rows") or []), default=0)
    was = asked.get("items", scored)
    if was != items:
        raise _refuse(path, "items per split (--leakage-items)", was, items)
    was = (old.get("scoring") or {}).get("batch_size")
    if was != batch_size:
        raise _refuse(path, "batch size", was, batch_size)
    return True


def ensure_leakage(
    models: dict[str, str],
    benchmarks: list[str],
    items: int,
    batch_size: int,
    eval_dir: Path,
    say: Say,
) -> Path:
    """The leakage test (`glan eval --leakage`) into eval_dir/leakage, unless there already;
    its leakage.json."""
    from glan.evaluate import leakage
    from glan.run.files import atomic_write_json

    path = eval_dir / "leakage" / "leakage.json"
    if reusable_leakage(models, benchmarks, items, batch_size, eval_dir):
        say(f"leakage: reused {path}")
        return path
    say(f"leakage: scoring {items} items of each split per benchmark")
    rows = leakage.check(models, list(benchmarks), items, batch_size=batch_size)
    leakage.write(rows, [], path.parent, models, batch_size)
    atomic_write_json(path.parent / ASKED, {"items": items, "batch_size": batch_size})
    return path


def exam_inputs(run_dir: Path, settings: Any, holdout: Any, seed: Any) -> dict[str, Any]:
    """What an exam's manifest records of the inputs it was built from, as this build would."""
    from glan.glantest.holdout import semantic_installed

    semantic = semantic_installed() if holdout.semantic is None else holdout.semantic
    return {
        "run": str(run_dir),
        "per_discipline": settings.per_discipline,
        "per_subject": settings.per_subject,
        "seed": seed,
        "semantic question threshold": holdout.question_threshold if semantic else None,
        "subject token threshold": holdout.token_threshold,
        "subject embedding threshold": holdout.subject_threshold if semantic else None,
    }


def _manifest_inputs(manifest: dict[str, Any]) -> dict[str, Any]:
    overlap, held = manifest.get("overlap") or {}, manifest.get("held_out") or {}
    thresholds = held.get("subject_thresholds") or {}
    return {
        "run": (manifest.get("source") or {}).get("run_dir"),
        "per_discipline": manifest.get("per_discipline"),
        "per_subject": manifest.get("per_subject"),
        "seed": manifest.get("seed"),
        "semantic question threshold": (overlap.get("semantic") or {}).get("threshold"),
        "subject token threshold": thresholds.get("tokens"),
        "subject embedding threshold": thresholds.get("embedding"),
    }


def reusable_exam(exam_dir: Path, run_dir: Path, settings: Any, holdout: Any, seed: Any) -> bool:
    """True when exam_dir holds an exam built from this run with these settings; False when
    none was finished (a build resumes from its cache); refused when it holds another."""
    path = exam_dir / "manifest.json"
    manifest = _recorded(path) if (exam_dir / "exam.jsonl").is_file() else None
    if manifest is None:
        return False
    wanted = exam_inputs(run_dir, settings, holdout, seed)
    for key, was in _manifest_inputs(manifest).items():
        now = wanted[key]
        if key == "run" and was is not None and Path(was).resolve() == run_dir.resolve():
            continue
        if was != now:
            raise _refuse(path, f"exam inputs ({key})", was, now)
    return True


def ensure_exam(
    cfg: Any,
    taxonomy: Any,
    run_dir: Path,
    exam_dir: Path,
    settings: Any,
    holdout: Any,
    say: Say,
) -> None:
    """`glan test build RUN` into exam_dir, unless this exam is there (its manifest written
    last)."""
    from glan.glantest.build import build_exam

    if reusable_exam(exam_dir, run_dir, settings, holdout, cfg.seed):
        say(f"exam: reused {exam_dir}")
        return
    say(f"exam: building from {run_dir} ({settings.per_discipline} questions per discipline)")
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
