"""Which records a derived file (clean.jsonl, an export, a report) was made from.

A run's records are `instructions.jsonl`; `glan clean` stores its fingerprint (sha256 and size)
in clean_summary.json, and export and report refuse a clean.jsonl whose fingerprint is not the
current file's, so a re-generated run never ships records cleaned from an older one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from glan.errors import UserError

RECORDS = "instructions.jsonl"


class Fingerprint(BaseModel):
    file: str
    sha256: str
    bytes: int


def fingerprint(path: Path) -> Fingerprint:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return Fingerprint(file=path.name, sha256=digest.hexdigest(), bytes=path.stat().st_size)


def _clean_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "clean_summary.json"
    return orjson.loads(path.read_bytes()) if path.is_file() else {}


def current_clean_summary(run_dir: Path) -> dict[str, Any]:
    """clean_summary.json when clean.jsonl was made from the current instructions.jsonl, {} when
    the run was never cleaned; a UserError when the cleaned records are stale."""
    if not (run_dir / "clean.jsonl").is_file():
        return {}
    summary = _clean_summary(run_dir)
    made_from = summary.get("source")
    rerun = f"re-run glan clean {run_dir}"
    if not made_from:
        raise UserError(f"clean.jsonl does not say which records it was made from: {rerun}")
    records = run_dir / RECORDS
    if not records.is_file():
        raise UserError(f"{run_dir} holds clean.jsonl but no {RECORDS}: re-run glan generate")
    if made_from.get("bytes") != records.stat().st_size or made_from != fingerprint(
        records
    ).model_dump(mode="json"):
        raise UserError(f"clean.jsonl was made from an older {RECORDS}: {rerun}")
    return summary


def records_fingerprint(run_dir: Path, cleaning: dict[str, Any]) -> Fingerprint:
    """The current records' fingerprint: the one a current clean summary was just checked
    against (no second pass over a file that may be gigabytes), else computed."""
    if cleaning:
        return Fingerprint.model_validate(cleaning["source"])
    return fingerprint(run_dir / RECORDS)
