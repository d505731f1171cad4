"""`glan clean` and `glan decontaminate`: filters, dedup and decontamination over a JSONL file.

Records stream through in batches in file order (so the first copy of a duplicate stays);
kept records go to the output, removed ones to a side file that says which stage removed each
and why (for decontamination: the benchmark item it matched, and how much of it).
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydantic import BaseModel, Field

from glan.errors import UserError
from glan.post.benchmarks import KNOWN, load_benchmarks
from glan.post.decontam import Decontaminator, ParallelChecker
from glan.post.dedup_disk import DedupParams, DedupPlan, plan_duplicates, work_folder
from glan.post.filters import FilterSettings, record_text, reject_reason
from glan.post.progress import Steps, begin
from glan.post.provenance import Fingerprint, fingerprint
from glan.post.semantic import Encoder, SemanticDeduplicator, minilm_encoder
from glan.run.files import atomic_file

BATCH = 4096


class CleanSettings(BaseModel):
    filters: FilterSettings = Field(default_factory=FilterSettings)
    filter: bool = True
    dedup: bool = True
    near_dedup: bool = True
    near_threshold: float = Field(0.7, gt=0, le=1)
    num_perm: int = Field(128, ge=16)
    shingle: int = Field(3, ge=1)
    benchmarks: list[str] | None = Field(
        None,
        description="None: every known benchmark, each skipped (and said) when it cannot be "
        "loaded; a list names benchmarks that must all load",
    )
    ngram: int = Field(8, ge=2)
    min_overlap: float = Field(0.5, gt=0, le=1)
    check_answers: bool = False
    semantic: bool = Field(False, description="embedding dedup (pip install 'glan[semantic]')")
    semantic_threshold: float = Field(0.92, gt=0, le=1, description="cosine similarity")
    workers: int = Field(default_factory=lambda: min(2, os.cpu_count() or 1), ge=1)
    memory_gb: float = Field(
        2.0,
        gt=0,
        description="memory for duplicate removal's sorts and --semantic's kept embeddings "
        "(more spills less to disk)",
    )

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * (1 << 30))


class CleanSummary(BaseModel):
    input: int = 0
    kept: int = 0
    filtered: dict[str, int] = Field(default_factory=dict)
    duplicates: dict[str, int] = Field(default_factory=dict)
    contaminated: dict[str, int] = Field(default_factory=dict)
    benchmarks_used: dict[str, int] = Field(default_factory=dict, description="items indexed")
    benchmarks_missing: dict[str, str] = Field(default_factory=dict, description="why not loaded")
    source: Fingerprint | None = Field(None, description="the records this was made from")
    settings: CleanSettings


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    for record, _ in read_records_sized(path):
        yield record


def read_records_sized(path: Path) -> Iterator[tuple[dict[str, Any], int]]:
    """Each record with the size of its line in bytes (for progress over a file's size)."""
    if not path.is_file():
        raise UserError(f"input not found: {path}")
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line), len(line)
            except orjson.JSONDecodeError:
                raise UserError(f"{path}:{number}: not a JSON line") from None


class _Cleaner:
    """One pass over the records: filter, dedup, then decontaminate in batches."""

    def __init__(
        self,
        settings: CleanSettings,
        kept: BinaryIO,
        removed: BinaryIO,
        encoder: Encoder | None = None,
        dedup: DedupPlan | None = None,
        work: Path | None = None,
    ) -> None:
        self.settings = settings
        self.kept, self.removed = kept, removed
        self.summary = CleanSummary(settings=settings)
        self.filtered: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.contaminated: Counter[str] = Counter()
        loaded = load_benchmarks(
            list(KNOWN) if settings.benchmarks is None else settings.benchmarks,
            required=settings.benchmarks is not None,
        )
        self.summary.benchmarks_used = loaded.used
        self.summary.benchmarks_missing = loaded.missing
        self.decon = (
            Decontaminator(loaded.items, settings.ngram, settings.min_overlap)
            if loaded.items
            else None
        )
        self.dedup = dedup
        self.semantic = None
        if settings.semantic:
            self.semantic = SemanticDeduplicator(
                encoder or minilm_encoder(),
                settings.semantic_threshold,
                settings.memory_bytes,
                work,
            )
        self.batch: list[dict[str, Any]] = []
        self.batch_ids: list[str] = []  # the id dedup knows each by (else its number)
        self.checker = ParallelChecker(self.decon, settings.workers) if self.decon else None
        # Batches out at the workers, written back in order as they complete.
        self.pending: deque[tuple[list[dict[str, Any]], Any]] = deque()

    def _remove(self, stage: str, reason: str, record: dict[str, Any], **detail: Any) -> None:
        entry = {"stage": stage, "reason": reason, **detail, "record": record}
        self.removed.write(orjson.dumps(entry) + b"\n")

    def add(self, record: dict[str, Any]) -> None:
        self.summary.input += 1
        record_id = str(record.get("id", self.summary.input))
        if self.settings.filter:
            reason = reject_reason(record, self.settings.filters)
            if reason is not None:
                self.filtered[reason] += 1
                self._remove("filter", reason, record)
                return
        if self.dedup is not None:
            dup = self.dedup.check(record_id, record_text(record))
            if dup is not None:
                self.duplicates[dup.kind] += 1
                self._remove("dedup", f"{dup.kind} duplicate", record, duplicate_of=dup.of)
                return
        self.batch.append(record)
        self.batch_ids.append(record_id)
        if len(self.batch) >= BATCH:
            self.flush()

    def _drop_paraphrases(self) -> None:
        assert self.semantic is not None
        matches = self.semantic.check_batch(self.batch_ids, [record_text(r) for r in self.batch])
        survivors = []
        for record, match in zip(self.batch, matches, strict=True):
            if match is None:
                survivors.append(record)
            else:
                self.duplicates["semantic"] += 1
                self._remove("dedup", "semantic duplicate", record, duplicate_of=match)
        self.batch = survivors

    def flush(self) -> None:
        if self.semantic is not None and self.batch:
            self._drop_paraphrases()
        if self.batch:
            texts = [record_text(r, self.settings.check_answers) for r in self.batch]
            handle = self.checker.submit(texts) if self.checker else [None] * len(texts)
            self.pending.append((self.batch, handle))
            self.batch = []
        self.batch_ids = []
        while len(self.pending) > (self.checker.workers if self.checker else 0):
            self._write(*self.pending.popleft())

    def _write(self, records: list[dict[str, Any]], handle: Any) -> None:
        hits = ParallelChecker.result(handle) if self.checker else handle
        for record, hit in zip(records, hits, strict=True):
            if hit is None:
                self.kept.write(orjson.dumps(record) + b"\n")
                self.summary.kept += 1
                continue
            self.contaminated[hit.benchmark] += 1
            self._remove(
                "decontamination",
                f"matches {hit.benchmark}",
                record,
                benchmark=hit.benchmark,
                item_id=hit.item_id,
                overlap=hit.overlap,
                item_text=hit.item_text,
            )

    def finish(self) -> CleanSummary:
        self.flush()
        while self.pending:
            self._write(*self.pending.popleft())
        if self.checker:
            self.checker.close()
        self.summary.filtered = dict(self.filtered)
        self.summary.duplicates = dict(self.duplicates)
        self.summary.contaminated = dict(self.contaminated)
        return self.summary


def _plan(inp: Path, settings: CleanSettings, work: Path, steps: Steps | None) -> DedupPlan | None:
    if not settings.dedup:
        return None
    params = DedupParams(
        filter=settings.filter,
        filters=settings.filters,
        near=settings.near_dedup,
        threshold=settings.near_threshold,
        num_perm=settings.num_perm,
        shingle=settings.shingle,
    )
    return plan_duplicates(inp, params, work, settings.memory_bytes, settings.workers, steps)


def clean_file(
    inp: Path,
    out: Path,
    removed: Path,
    settings: CleanSettings,
    encoder: Encoder | None = None,
    steps: Steps | None = None,
) -> CleanSummary:
    """Both outputs appear only once complete; the input is never modified. The summary records
    the input's fingerprint, taken before reading (a file replaced meanwhile reads as stale).

    Two passes: duplicates are decided first, in bounded memory (glan.post.dedup_disk), then
    the records stream through filters, that decision, semantic dedup (its kept embeddings in
    the same work folder beyond the memory budget) and decontamination."""
    if not inp.is_file():
        raise UserError(f"input not found: {inp}")
    source = fingerprint(inp)
    with (
        work_folder(out) as work,
        atomic_file(out) as kept_fh,
        atomic_file(removed) as removed_fh,
    ):
        plan = _plan(inp, settings, Path(work), steps)
        cleaner = None
        try:
            cleaner = _Cleaner(settings, kept_fh, removed_fh, encoder, plan, Path(work))
            step = begin(steps, "clean: filter, dedup, decontaminate", plan and plan.records)
            for record in read_records(inp):
                cleaner.add(record)
                step.done += 1
            summary = cleaner.finish()
            if plan is not None:
                plan.finish()
        finally:
            if cleaner is not None and cleaner.semantic is not None:
                cleaner.semantic.close()
            if plan is not None:
                plan.close()
    summary.source = source
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
