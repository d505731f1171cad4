"""`glan clean` and `glan decontaminate`: filters, dedup and decontamination over a JSONL file.

Records stream through in batches in file order (so the first copy of a duplicate stays);
kept records go to the output, removed ones to a side file that says which stage removed each
and why (for decontamination: the benchmark item it matched, and how much of it).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field

from glan.errors import UserError
from glan.post.benchmarks import KNOWN, load_benchmarks
from glan.post.decontam import Decontaminator
from glan.post.dedup import Deduplicator
from glan.post.filters import FilterSettings, reject_reason

BATCH = 4096


class CleanSettings(BaseModel):
    filters: FilterSettings = Field(default_factory=FilterSettings)
    filter: bool = True
    dedup: bool = True
    near_dedup: bool = True
    near_threshold: float = Field(0.7, gt=0, le=1)
    num_perm: int = Field(128, ge=16)
    shingle: int = Field(3, ge=1)
    benchmarks: list[str] = Field(default_factory=lambda: list(KNOWN))
    ngram: int = Field(8, ge=2)
    min_overlap: float = Field(0.5, gt=0, le=1)
    check_answers: bool = False


class CleanSummary(BaseModel):
    input: int = 0
    kept: int = 0
    filtered: dict[str, int] = Field(default_factory=dict)
    duplicates: dict[str, int] = Field(default_factory=dict)
    contaminated: dict[str, int] = Field(default_factory=dict)
    settings: CleanSettings


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"input not found: {path}")
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                raise UserError(f"{path}:{number}: not a JSON line") from None


def _texts(record: dict[str, Any], answers: bool) -> str:
    roles = ("user", "assistant") if answers else ("user",)
    return "\n".join(
        m.get("content", "") for m in record.get("messages", []) if m.get("role") in roles
    )


def _question(record: dict[str, Any]) -> str:
    return _texts(record, answers=False)


class _AtomicJsonl:
    """A JSONL file that appears at its path only once complete."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.fh = os.fdopen(fd, "wb")
        self.path = path

    def write(self, value: dict[str, Any]) -> None:
        self.fh.write(orjson.dumps(value) + b"\n")

    def commit(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def clean_file(inp: Path, out: Path, removed: Path, settings: CleanSettings) -> CleanSummary:
    decon = (
        Decontaminator(load_benchmarks(settings.benchmarks), settings.ngram, settings.min_overlap)
        if settings.benchmarks
        else None
    )
    dedup = (
        Deduplicator(
            settings.near_threshold, settings.num_perm, settings.shingle, settings.near_dedup
        )
        if settings.dedup
        else None
    )
    summary = CleanSummary(settings=settings)
    filtered: Counter[str] = Counter()
    duplicates: Counter[str] = Counter()
    contaminated: Counter[str] = Counter()
    kept_out, removed_out = _AtomicJsonl(out), _AtomicJsonl(removed)
    try:
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            survivors = batch
            if decon is not None and survivors:
                found = decon.check_batch([_texts(r, settings.check_answers) for r in survivors])
                survivors = []
                for record, hit in zip(batch, found, strict=True):
                    if hit is None:
                        survivors.append(record)
                        continue
                    contaminated[hit.benchmark] += 1
                    removed_out.write(
                        {
                            "stage": "decontamination",
                            "reason": f"matches {hit.benchmark}",
                            "benchmark": hit.benchmark,
                            "item_id": hit.item_id,
                            "overlap": hit.overlap,
                            "item_text": hit.item_text,
                            "record": record,
                        }
                    )
            for record in survivors:
                kept_out.write(record)
                summary.kept += 1
            batch.clear()

        for record in read_records(inp):
            summary.input += 1
            if settings.filter:
                reason = reject_reason(record, settings.filters)
                if reason is not None:
                    filtered[reason] += 1
                    removed_out.write({"stage": "filter", "reason": reason, "record": record})
                    continue
            if dedup is not None:
                dup = dedup.check(str(record.get("id", summary.input)), _question(record))
                if dup is not None:
                    duplicates[dup.kind] += 1
                    removed_out.write(
                        {
                            "stage": "dedup",
                            "reason": f"{dup.kind} duplicate",
                            "duplicate_of": dup.of,
                            "record": record,
                        }
                    )
                    continue
            batch.append(record)
            if len(batch) >= BATCH:
                flush()
        flush()
        kept_out.commit()
        removed_out.commit()
    except BaseException:
        kept_out.abort()
        removed_out.abort()
        raise
    summary.filtered, summary.duplicates = dict(filtered), dict(duplicates)
    summary.contaminated = dict(contaminated)
    return summary


def decontaminate_file(
    inp: Path,
    out: Path,
    removed: Path,
    benchmarks: list[str],
    ngram: int = 8,
    min_overlap: float = 0.5,
    check_answers: bool = False,
) -> CleanSummary:
    settings = CleanSettings(
        filter=False,
        dedup=False,
        benchmarks=benchmarks,
        ngram=ngram,
        min_overlap=min_overlap,
        check_answers=check_answers,
    )
    return clean_file(inp, out, removed, settings)
