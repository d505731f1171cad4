"""`glan eval --rerun OLD/eval_results.json`: the same evaluation again from its recorded
provenance (models, benchmarks, settings; seeds are glan's fixed ones), on this machine or
another, and what differs from the recorded run: versions, model files, task versions, data
files' sha256, scores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Difference:
    what: str  # versions, settings, models, tasks, data, scores
    line: str


SCORES = "scores"


def _then_now(what: str, name: str, then: object, now: object) -> list[Difference]:
    return [] if then == now else [Difference(what, f"{name}: {then} then, {now} now")]


def _each(what: str, name: str, then: dict, now: dict) -> list[Difference]:
    """One difference for each key whose value differs (either side may lack it)."""
    return [
        d
        for key in sorted(then.keys() | now.keys(), key=str)
        for d in _then_now(what, f"{name} {key}", then.get(key), now.get(key))
    ]


COMPARED = ("items", "difference", "ci_low", "ci_high", "p_value", "p_holm", "verdict", "mde")


def _comparisons(old: BenchmarkResult, new: BenchmarkResult) -> list[Difference]:
    now = {(c.base, c.tuned): c for c in new.comparisons}
    lines = []
    for then in old.comparisons:
        pair = f"{old.benchmark} {then.tuned} vs {then.base}"
        current = now.get((then.base, then.tuned))
        if current is None:
            lines.append(Difference(SCORES, f"{pair}: compared then, not now"))
            continue
        lines += _each(
            SCORES,
            pair,
            then.model_dump(include=set(COMPARED)),
            current.model_dump(include=set(COMPARED)),
        )
    return lines


def _benchmark(old: BenchmarkResult, new: BenchmarkResult) -> list[Difference]:
    name = old.benchmark
    lines = _then_now(SCORES, f"{name} status", old.status, new.status)
    lines = [Difference(d.what, f"{d.line} ({new.reason})") for d in lines] if new.reason else lines
    if old.provenance and new.provenance:
        lines += _then_now(
            "tasks", f"{name} task versions", old.provenance.versions, new.provenance.versions
        )
        lines += _then_now(
            "tasks", f"{name} lm-eval task files", old.provenance.includes, new.provenance.includes
        )
        changed = [
            path
            for path, digest in old.provenance.data_files.items()
            if new.provenance.data_files.get(path) != digest
        ]
        lines += [Difference("data", f"{name} data files differ: {', '.join(changed[:3])}")] * bool(
            changed
        )
    for label, metrics in old.metrics.items():
        lines += _each(SCORES, f"{name} {label}", metrics, new.metrics.get(label, {}))
    return lines + _comparisons(old, new)


def differences(old: EvalReport, new: EvalReport) -> list[Difference]:
    """Everything recorded that came out otherwise, one line each; empty when reproduced."""
    assert old.provenance is not None and new.provenance is not None
    then, now = old.provenance, new.provenance
    lines = _then_now("versions", "glan", then.glan_version, now.glan_version)
    lines += _then_now("versions", "lm-eval", then.lm_eval_version, now.lm_eval_version)
    lines += _each("versions", "version of", then.versions, now.versions)
    lines += _each("machine", "machine", then.machine, now.machine)
    lines += _each("settings", "setting", then.settings, now.settings)
    lines += _then_now("settings", "seeds", then.seeds, now.seeds)
    for label, model in then.models.items():
        current = now.models.get(label)
        if current is None:
            lines.append(Difference("models", f"model {label}: not run now"))
            continue
        for field in RUN_AS:
            lines += _then_now(
                "models", f"model {label} {field}", getattr(model, field), getattr(current, field)
            )
    by_name = {r.benchmark: r for r in new.results}
    for result in old.results:
        if result.benchmark in by_name:
            lines += _benchmark(result, by_name[result.benchmark])
        else:
            lines.append(Difference(SCORES, f"{result.benchmark}: not run now"))
    return lines


RUN_AS = (
    "revision",
    "fingerprint",
    "gguf_sha256",
    "backend",
    "device",
    "dtype",
    "chat_template_sha256",
)


def summary(recorded: Path, found: list[Difference]) -> str:
    """The rerun's last line: reproduced, the same scores with what else differs, or not."""
    if not found:
        return f"reproduced {recorded}: same versions, settings, data, models and scores"
    kinds = ", ".join(dict.fromkeys(d.what for d in found if d.what != SCORES))
    if not any(d.what == SCORES for d in found):
        return f"same scores as {recorded}; differs: {kinds} (above)"
    return (
        f"not reproduced: scores differ from {recorded}"
        + (f"; differs too: {kinds}" if kinds else "")
        + " (above)"
    )
