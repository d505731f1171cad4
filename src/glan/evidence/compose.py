"""One evidence page from result folders that exist: the headline, the parts, every source
file with its sha256, the provenance the files record, and the commands that make them again."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from glan import __version__
from glan.errors import UserError
from glan.evaluate.results import EvalReport
from glan.evidence.commands import (
    eval_commands,
    exam_command,
    grading_command,
    leakage_command,
    spec,
)
from glan.evidence.parts import Part, eval_part, exam_dir_of, glantest_part, leakage_part
from glan.evidence.sources import Source, Sources
from glan.glantest.stats import NO_INTERVAL


class Missing(BaseModel):
    """What a part that did not run says instead (one line each: what to pass or run)."""

    eval: str = "Eval: not run. Give --eval DIR (a `glan eval` output), or RUN --base --tuned."
    leakage: str = (
        "Leakage: not run. `glan eval --leakage --model ... --out EVAL_DIR` writes "
        "EVAL_DIR/leakage/leakage.json."
    )
    pairwise: str = "GLAN-Test (pairwise): not run. Pass --judge (or --test RESULTS_DIR)."
    absolute: str = "GLAN-Test (absolute): not run. Pass --absolute with --judge."


class Evidence(BaseModel):
    glan_version: str
    headline: list[str]
    parts: list[Part]
    sources: list[Source]
    provenance: dict[str, Any]
    commands: list[str]


def compose(
    page_dir: Path,
    eval_dir: Path | None = None,
    test_dirs: list[Path] | None = None,
    leakage_file: Path | None = None,
    missing: Missing | None = None,
    invocation: str | None = None,
) -> Evidence:
    """The page's content; the leakage part is `leakage_file`'s alone (default_leakage finds
    the one beside an eval)."""
    missing = missing or Missing()
    sources = Sources(page_dir)
    report = None
    if eval_dir is not None:
        evaluated, report = eval_part(eval_dir, sources, missing.eval)
    else:
        evaluated = Part(name="Eval", shown=False, why=missing.eval)
    leaked = (
        leakage_part(leakage_file, sources, missing.leakage)
        if leakage_file is not None
        else Part(name="Leakage", shown=False, why=missing.leakage)
    )
    graded = [glantest_part(d, sources) for d in test_dirs or []]
    _name_apart([part for part, _ in graded], test_dirs or [], page_dir)
    parts = [evaluated]
    modes = {data.get("mode", "pairwise") for _, data in graded}
    parts += [part for part, _ in graded]
    for mode in ("pairwise", "absolute"):
        if mode not in modes:
            parts.append(Part(name=f"GLAN-Test ({mode})", shown=False, why=getattr(missing, mode)))
    parts.append(leaked)
    leakage_data = _read_leakage(leakage_file) if leaked.shown and leakage_file else None
    if report is not None and leakage_data is not None and leakage_file is not None:
        _same_models(report, leakage_data, leakage_file)
    cautions = [_caution(report, data) for _, data in graded] if report is not None else []
    # The paths in the commands are as given: relative ones to the folder they were run from.
    commands = [shlex.join(["cd", str(Path.cwd())])] + ([invocation] if invocation else [])
    if report is not None and eval_dir is not None:
        commands += eval_commands(report, eval_dir)
    if leakage_data is not None and leakage_file is not None:
        commands.append(leakage_command(leakage_data, leakage_file.parent.parent))
    for (_, data), results_dir in zip(graded, test_dirs or [], strict=True):
        exam = exam_dir_of(data, results_dir)
        manifest = _manifest(exam)
        if exam is not None and manifest is not None:
            commands.append(exam_command(manifest, exam))
        commands.append(grading_command(data, exam or Path(str(data.get("exam"))), results_dir))
    return Evidence(
        glan_version=__version__,
        headline=headline(report, [d for _, d in graded], leakage_data, parts, cautions),
        parts=parts,
        sources=sources.all(),
        provenance=provenance(report, graded, test_dirs or [], leakage_data),
        commands=list(dict.fromkeys(commands)),
    )


def _name_apart(parts: list[Part], folders: list[Path], page_dir: Path) -> None:
    """Gradings of the same labels and mode, named by their folder too: each part, and its
    provenance, its own."""
    names = [p.name for p in parts]
    for part, folder in zip(parts, folders, strict=True):
        if names.count(part.name) > 1:
            where = Path(os.path.relpath(folder.resolve(), page_dir.resolve())).as_posix()
            part.name = f"{part.name} ({where})"
            for table in part.tables:
                table.title = f"{part.name} (per group)"


def _labelled(models: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v if isinstance(v, str) else spec(v)}" for k, v in models.items())


def _same_models(report: EvalReport, leakage: dict[str, Any], path: Path) -> None:
    """A leakage test of other models than the eval's would sit on its page as if of them."""
    if leakage.get("models") != report.models:
        raise UserError(
            f"{path} is a leakage test of {_labelled(leakage.get('models') or {})}, the eval "
            f"one of {_labelled(report.models)}: compose the parts of the same models"
        )


# Endpoints that load the model from the path or hub id they name: the eval's, if the same.
LOADING_KINDS = ("vllm", "local", "hf")


def _caution(report: EvalReport, graded: dict[str, Any]) -> str | None:
    """A warning where a grading's answering models cannot be known to be the eval's: other
    labels, or endpoints (a server's name) that do not name the eval's model paths."""
    answered = graded.get("models") or {}
    known = list(answered) == list(report.models) and all(
        e.get("kind") in LOADING_KINDS and e.get("model") == report.models[label]
        for label, e in answered.items()
    )
    if known:
        return None
    mode = graded.get("mode", "pairwise")
    return (
        f"Caution: GLAN-Test ({mode}) was answered by {_labelled(answered)}; the page cannot "
        f"tell that these are the eval's {_labelled(report.models)}."
    )


def default_leakage(eval_dir: Path) -> Path | None:
    """The leakage.json `glan eval --leakage --out EVAL_DIR` writes, where there is one."""
    path = eval_dir / "leakage" / "leakage.json"
    return path if path.is_file() else None


def _exam_record(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the exam's manifest says of where it came from and how it was held out."""
    source, overlap = manifest.get("source") or {}, manifest.get("overlap") or {}
    return {
        "held out from run": source.get("run_dir"),
        "taxonomy fingerprint": source.get("taxonomy_fingerprint"),
        "questions": (manifest.get("counts") or {}).get("items"),
        "training questions checked against": overlap.get("training_questions"),
        "overlap checks": overlap.get("checks"),
        "overlap with training after filtering": overlap.get("with_training_after_filtering"),
        "built by glan": manifest.get("glan_version"),
    }


def _read_leakage(path: Path) -> dict[str, Any]:
    import orjson

    return orjson.loads(path.read_bytes())


def _manifest(exam: Path | None) -> dict[str, Any] | None:
    import orjson

    if exam is None or not (exam / "manifest.json").is_file():
        return None
    return orjson.loads((exam / "manifest.json").read_bytes())


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def headline(
    report: EvalReport | None,
    graded: list[dict[str, Any]],
    leakage: dict[str, Any] | None,
    parts: list[Part],
    cautions: list[str | None] | None = None,
) -> list[str]:
    """What was compared, on what, and each part's verdicts, in a few lines; a part that did
    not run says so."""
    lines = []
    if report is not None:
        models = ", ".join(f"{label} = {path}" for label, path in report.models.items())
        limit = f"first {report.limit} items" if report.limit else "all items"
        lines.append(f"Compared: {models} (first is the reference).")
        verdicts = []
        for r in report.results:
            if r.status != "run":
                verdicts.append(f"{r.benchmark} {r.status}")
            for c in r.comparisons:
                verdicts.append(
                    f"{r.benchmark} {c.tuned} - {c.base} {_points(c.difference)} points "
                    f"[{_points(c.ci_low)}, {_points(c.ci_high)}], Holm p "
                    f"{c.p_holm:.3g}: {c.verdict}"
                    if c.p_holm is not None
                    else f"{r.benchmark}: {c.tuned} - {c.base} {_points(c.difference)} points"
                )
            if r.paired_note:
                verdicts.append(f"{r.benchmark}: {r.paired_note}")
        lines.append(f"Eval ({limit} of each benchmark): " + "; ".join(verdicts) + ".")
        lines += [c for c in cautions or [] if c]
    for data in graded:
        lines.append(_glantest_headline(data))
    if leakage is not None:
        readings = [
            f"{r['benchmark']} {r['model']}: {r['warning'] or r['reading'] or r['status']}"
            for r in leakage["rows"]
        ]
        lines.append("Leakage: " + "; ".join(readings) + ".")
    lines += [p.why for p in parts if not p.shown]
    return lines


def _glantest_headline(data: dict[str, Any]) -> str:
    judge = data["judge"]["model"]
    overall = data["overall"]
    if data.get("mode") == "absolute":
        base = data["baseline"]
        said = [
            f"{label} - {base} {c['difference']['mean']:+.2f} "
            f"{_interval(c['difference']['ci95'])}, p {c['difference']['p_value']:.3g}"
            for label, c in (overall.get("against_baseline") or {}).items()
        ]
        means = ", ".join(f"{k} {v:.2f}" for k, v in (overall.get("mean") or {}).items())
        return (
            f"GLAN-Test absolute (judge {judge}, {data['scored']} of {data['items']} items): "
            f"means {means}" + (f"; {'; '.join(said)}" if said else "") + "."
        )
    a, b = data["pair"]
    if not overall["items"]:
        return f"GLAN-Test pairwise (judge {judge}): no item scored."
    d, w = overall["difference"], overall["win_rate"]
    return (
        f"GLAN-Test pairwise (judge {judge}, {data['scored']} of {data['items']} items): "
        f"{b} - {a} {d['mean']:+.2f} {_interval(d['ci95'])}, p {d['p_value']:.3g}; "
        f"{b} win rate {w['value']:.2f} {_interval(w['ci95'], signed=False)}."
    )


def _interval(ci: list[float] | None, signed: bool = True) -> str:
    if ci is None:
        return f"({NO_INTERVAL}: no interval)"
    f = "{:+.2f}" if signed else "{:.2f}"
    return f"[{f.format(ci[0])}, {f.format(ci[1])}]"


def provenance(
    report: EvalReport | None,
    graded: list[tuple[Part, dict[str, Any]]],
    test_dirs: list[Path],
    leakage: dict[str, Any] | None,
) -> dict[str, Any]:
    """What the files record of versions, models, data, seeds and settings, by part."""
    found: dict[str, Any] = {}
    if report is not None and report.provenance is not None:
        run = report.provenance
        found["eval"] = {
            "versions": {"glan": run.glan_version, "lm_eval": run.lm_eval_version}
            | run.versions
            | run.machine,
            "finished_utc": run.finished_utc,
            "models": {k: m.model_dump(exclude_none=True) for k, m in run.models.items()},
            "seeds": run.seeds,
            "settings": run.settings,
            "data": {
                r.benchmark: r.provenance.model_dump(exclude_defaults=True)
                for r in report.results
                if r.provenance is not None
            },
        }
    for (part, data), results_dir in zip(graded, test_dirs, strict=True):
        exam = exam_dir_of(data, results_dir)
        manifest = _manifest(exam)
        found[part.name] = {
            "versions": {"glan": data.get("glan_version")},
            "models": data.get("models"),
            "judge": data.get("judge"),
            "settings": data.get("settings"),
            "seeds": {"bootstrap": data["bootstrap"]}
            | ({"exam": manifest.get("seed")} if manifest else {}),
            "exam": {"folder": str(exam) if exam else data.get("exam")}
            | (_exam_record(manifest) if manifest else {}),
        }
    if leakage is not None:
        found["Leakage"] = {
            "models": leakage["models"],
            "scoring": leakage["scoring"],
            "seeds": {"bootstrap": leakage["bootstrap"]},
            "data": {
                r["benchmark"]: {"'train' split": r["train_split"], "from": r["train_source"]}
                for r in leakage["rows"]
            },
        }
    return found
