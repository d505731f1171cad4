"""`glan eval --rerun OLD/eval_results.json`: the same evaluation again from its recorded
provenance (models, benchmarks, settings; seeds are glan's fixed ones), on this machine or
another, and what differs from the recorded run: versions, model files, task versions, data
files' sha256, scores."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydantic import ValidationError

from glan.errors import UserError
from glan.evaluate.registry import Benchmark
from glan.evaluate.results import BenchmarkResult, EvalReport
from glan.evaluate.runner import EvalSettings, parse_benchmarks


def read(path: Path) -> EvalReport:
    try:
        report = EvalReport.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        raise UserError(f"cannot read {path} as glan eval's results: {exc}") from None
    if report.provenance is None:
        raise UserError(f"{path} records no provenance (an older glan wrote it): no rerun")
    return report


def inputs(
    report: EvalReport, allow_code_execution: bool
) -> tuple[dict[str, str], list[Benchmark], EvalSettings]:
    """The models (as given then), benchmarks and settings of a recorded run. Consent to run
    model-written code is this machine's (`allow_code_execution`, or HF_ALLOW_CODE_EVAL=1),
    never the file's: a results file can come from anyone."""
    assert report.provenance is not None
    recorded = report.provenance
    known = {f.name for f in dataclasses.fields(EvalSettings)} - {"allow_code_execution"}
    settings = EvalSettings(
        **{k: v for k, v in recorded.settings.items() if k in known},
        allow_code_execution=allow_code_execution,
    )
    models = {label: m.given for label, m in recorded.models.items()}
    return models, parse_benchmarks(",".join(recorded.benchmarks)), settings


def _then_now(what: str, then: object, now: object) -> list[str]:
    return [] if then == now else [f"{what}: {then} then, {now} now"]


def _benchmark(old: BenchmarkResult, new: BenchmarkResult) -> list[str]:
    name = old.benchmark
    lines = _then_now(f"{name} status", old.status, new.status)
    lines = [f"{line} ({new.reason})" for line in lines] if new.reason else lines
    if old.provenance and new.provenance:
        lines += _then_now(
            f"{name} task versions", old.provenance.versions, new.provenance.versions
        )
        lines += _then_now(
            f"{name} lm-eval task files", old.provenance.includes, new.provenance.includes
        )
        changed = [
            path
            for path, digest in old.provenance.data_files.items()
            if new.provenance.data_files.get(path) != digest
        ]
        lines += [f"{name} data files differ: {', '.join(changed[:3])}"] if changed else []
    for label, metrics in old.metrics.items():
        for key, value in metrics.items():
            lines += _then_now(f"{name} {label} {key}", value, new.metrics.get(label, {}).get(key))
    return lines


def differences(old: EvalReport, new: EvalReport) -> list[str]:
    """Everything recorded that came out otherwise, one line each; empty when reproduced."""
    assert old.provenance is not None and new.provenance is not None
    then, now = old.provenance, new.provenance
    lines = _then_now("glan", then.glan_version, now.glan_version)
    lines += _then_now("lm-eval", then.lm_eval_version, now.lm_eval_version)
    lines += _then_now("seeds", then.seeds, now.seeds)
    for label, model in then.models.items():
        current = now.models.get(label)
        if current is None:
            lines.append(f"model {label}: not run now")
            continue
        lines += _then_now(f"model {label} revision", model.revision, current.revision)
        lines += _then_now(f"model {label} fingerprint", model.fingerprint, current.fingerprint)
    by_name = {r.benchmark: r for r in new.results}
    for result in old.results:
        lines += _benchmark(result, by_name[result.benchmark])
    return lines
