"""The commands that make each result file again, written from what the files record (the
models, benchmarks, settings and seeds they were made with)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from glan.evaluate.results import EvalReport

# EvalSettings field -> `glan eval` option, where the value is not the option's default.
EVAL_OPTIONS = {
    "limit": "--limit",
    "shots": "--shots",
    "max_gen_toks": "--max-gen-toks",
    "batch_size": "--batch-size",
    "backend": "--backend",
}
EVAL_FLAGS = {"chat_template": "--chat-template", "allow_code_execution": "--allow-code-execution"}


def _join(words: list[str]) -> str:
    return shlex.join(words)


def _models(models: dict[str, str]) -> list[str]:
    return [word for label, path in models.items() for word in ("--model", f"{label}={path}")]


def eval_commands(report: EvalReport, eval_dir: Path) -> list[str]:
    """The eval as first run, and the rerun that repeats it from its recorded provenance."""
    words = ["glan", "eval", *_models(report.models)]
    settings = report.provenance.settings if report.provenance else {}
    benchmarks = report.provenance.benchmarks if report.provenance else []
    words += ["--benchmarks", ",".join(benchmarks or [r.benchmark for r in report.results])]
    for field, option in EVAL_OPTIONS.items():
        if settings.get(field) is not None:
            words += [option, str(settings[field])]
    words += [flag for field, flag in EVAL_FLAGS.items() if settings.get(field)]
    words += ["--out", str(eval_dir)]
    rerun = ["glan", "eval", "--rerun", str(eval_dir / "eval_results.json"), "--out", "NEW_DIR"]
    return [_join(words), _join(rerun)]


def leakage_command(leakage: dict[str, Any], eval_dir: Path) -> str:
    rows = leakage["rows"]
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in rows))
    items = max((r["items"] for r in rows), default=0)
    words = ["glan", "eval", "--leakage", *_models(leakage["models"])]
    words += ["--benchmarks", ",".join(benchmarks)]
    words += ["--leakage-items", str(items)] if items else []
    words += ["--batch-size", str(leakage["scoring"]["batch_size"])]
    for r in rows:
        source = r.get("train_source") or ""
        if source.startswith("user file "):
            words += ["--leakage-data", f"{r['benchmark']}={source.removeprefix('user file ')}"]
    words += ["--out", str(eval_dir)]
    return _join(_dedupe_leakage_data(words))


def _dedupe_leakage_data(words: list[str]) -> list[str]:
    """One --leakage-data per benchmark (each model's row names the same file)."""
    kept: list[str] = []
    seen: set[str] = set()
    for i, word in enumerate(words):
        if i and words[i - 1] == "--leakage-data":
            if word in seen:
                kept.pop()
                continue
            seen.add(word)
        kept.append(word)
    return kept


def spec(endpoint: dict[str, str]) -> str:
    """An endpoint spec from what a report records of it (kind, model, address)."""
    text = f"{endpoint['kind']}:{endpoint['model']}"
    return text + (f"@{endpoint['address']}" if endpoint.get("address") else "")


def grading_command(report: dict[str, Any], exam: Path, results_dir: Path) -> str:
    settings = report.get("settings") or {}
    words = ["glan", "test", "run", str(exam)]
    for label, endpoint in (report.get("models") or {}).items():
        words += ["--model", f"{label}={spec(endpoint)}"]
    words += ["--judge", spec(report["judge"])]
    words += ["--absolute"] if settings.get("absolute") else []
    words += [] if settings.get("use_references", True) else ["--no-references"]
    if settings.get("answer_max_tokens") is not None:
        words += ["--answer-max-tokens", str(settings["answer_max_tokens"])]
    for field in ("judge_max_tokens", "bootstrap", "seed"):
        if field in settings:
            words += [f"--{field.replace('_', '-')}", str(settings[field])]
    words += ["--out", str(results_dir)]
    return _join(words)


def exam_command(manifest: dict[str, Any], exam: Path) -> str:
    run_dir = (manifest.get("source") or {}).get("run_dir")
    words = ["glan", "test", "build", *([run_dir] if run_dir else []), "--out", str(exam)]
    words += ["--per-discipline", str(manifest["per_discipline"])]
    words += ["--per-subject", str(manifest["per_subject"])]
    if manifest.get("seed") is not None:
        words += ["--seed", str(manifest["seed"])]
    semantic = (manifest.get("overlap") or {}).get("semantic")
    if semantic:
        words += ["--semantic", "--semantic-threshold", str(semantic["threshold"])]
    elif "overlap" in manifest:  # recorded as off (null): not the default "when installed"
        words += ["--no-semantic"]
    thresholds = (manifest.get("held_out") or {}).get("subject_thresholds") or {}
    for key, option in (
        ("tokens", "--subject-token-threshold"),
        ("embedding", "--subject-semantic-threshold"),
    ):
        if thresholds.get(key) is not None:
            words += [option, str(thresholds[key])]
    reference = (manifest.get("references") or {}).get("endpoint")
    if reference:
        words += ["--reference-model", spec(reference)]
    return _join(words)
