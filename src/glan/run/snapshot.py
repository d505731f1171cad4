"""A run directory read as it stands, never written nor locked: what a dry run of its re-run
starts from (glan.rerun).

Every store of the run (RUN/glan.sqlite, and those a Ray run left in RUN/shards) is opened
read-only but not immutable: a run in progress may be writing it, and SQLite's write-ahead log
lets readers and that one writer pass each other (a reader never blocks a write, nor reads a
half-written one); the dry run sees what was committed when it read.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glan.run.rundir import STATE_FILE
from glan.run.state import RunState
from glan.run.stores import RunReplies, _inputs, _stale_tables, _tables, run_stores

# What the walk reads of each state table: everything but a pair's text, which only publishing
# reads (a finished pair's row says it is done, a NULL body that it failed).
_DECISIONS = {
    "st_listings": "d, i, body",
    "st_slots": "d, slot, s, extra",
    "st_syllabi": "d, s, subject, body",
    "st_pairs": "d, s, p, CASE WHEN body IS NULL THEN NULL ELSE x'' END",
}


def copy_decisions(out_dir: Path, into: Path) -> None:
    """The run's staged state, as its next run would find it, into a new store at `into`:
    RUN/glan.sqlite's, then each shard's but for what a shard made with stage inputs the run
    no longer records (glan.run.stores.fold_shards does the same). Each store is read in one
    transaction: a consistent view of it even while a run writes it."""
    RunState(into).close()  # the state's tables
    now = _inputs(out_dir)
    main = out_dir / STATE_FILE
    conn = sqlite3.connect(into.resolve().as_uri(), uri=True, isolation_level=None)
    try:
        for store in run_stores(out_dir):
            skipped = set() if store == main else _stale_tables(_inputs(store.parent), now)
            with _attached_read_only(conn, store):
                having = _tables(conn, "run")
                conn.execute("BEGIN")
                for table, columns in _DECISIONS.items():
                    if table in having and table not in skipped:
                        conn.execute(
                            f"INSERT OR REPLACE INTO main.{table} SELECT {columns} FROM run.{table}"
                        )
                conn.execute("COMMIT")
    finally:
        conn.close()


@dataclass(frozen=True)
class ReplySizes:
    """What the run's own replies were like, on average (None: none staged yet): the distinct
    subjects a listing added to its discipline, the sessions of a syllabus, the concepts of a
    session."""

    subjects: float | None
    sessions: float | None
    concepts: float | None


def reply_sizes(store: Path) -> ReplySizes:
    """The averages of the staged listings and syllabi in `store` (names told apart as the
    walk tells them, by their folded text)."""
    conn = sqlite3.connect(store)
    try:
        names, listings = conn.execute(
            "SELECT sum(names), sum(listings) FROM (SELECT count(DISTINCT lower(trim("
            "json_extract(s.value, '$.name')))) AS names, count(DISTINCT l.i) AS listings "
            "FROM st_listings l, json_each(CAST(l.body AS TEXT)) s GROUP BY l.d)"
        ).fetchone()
        (sessions,) = conn.execute(
            "SELECT avg(json_array_length(CAST(body AS TEXT), '$.sessions')) FROM st_syllabi "
            "WHERE body IS NOT NULL"
        ).fetchone()
        (concepts,) = conn.execute(
            "SELECT avg(json_array_length(s.value, '$.concepts')) FROM st_syllabi y, "
            "json_each(CAST(y.body AS TEXT), '$.sessions') s WHERE y.body IS NOT NULL"
        ).fetchone()
    finally:
        conn.close()
    return ReplySizes(names / listings if listings else None, sessions, concepts)


@contextlib.contextmanager
def _attached_read_only(conn: sqlite3.Connection, store: Path) -> Iterator[None]:
    conn.execute("ATTACH DATABASE ? AS run", (f"{store.resolve().as_uri()}?mode=ro",))
    try:
        yield
    finally:
        conn.execute("DETACH DATABASE run")


def live_batch_keys(out_dir: Path) -> set[str]:
    """The cache keys (custom_ids) of the lines in the run's live batches: paid for, and
    collected by its next run, which sends them no more."""
    keys: set[str] = set()
    for store in run_stores(out_dir):
        conn = _read_only(store)
        try:
            if {"batch_jobs", "batch_lines"} <= set(_tables(conn, "main")):
                rows = conn.execute(
                    "SELECT custom_id FROM batch_lines JOIN batch_jobs USING (local_id) "
                    "WHERE settled = 0"
                )
                keys.update(key for (key,) in rows)
        finally:
            conn.close()
    return keys


def _read_only(store: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=30)


class RunStoresReplies:
    """The replies every store of the run holds (glan.run.stores.RunReplies, each opened
    read-only while a run may write it), for a dry run's response cache to read."""

    def __init__(self, out_dir: Path) -> None:
        self._sources = [RunReplies(store, immutable=False) for store in run_stores(out_dir)]

    def keys(self) -> Iterator[str]:
        for source in self._sources:
            yield from source.keys()
            yield from source.delivered_keys()

    def get(self, key: str) -> dict[str, Any] | None:
        """A cached reply, or one a batch delivered that no request used yet: the re-run
        sends neither (the latter is counted at the batch price when used, not priced here)."""
        for source in self._sources:
            found = source.get(key)
            if found is not None:
                return found
            line = source.delivered(key)
            if line is not None:
                return {
                    "text": line["text"],
                    "finish_reason": line["finish_reason"],
                    "usage": {k: line[k] for k in ("prompt_tokens", "completion_tokens")},
                    "latency_s": 0.0,
                    "reasks": 0,
                }
        return None

    def failing_bodies(self, endpoint: str) -> dict[str, tuple[str, int]]:
        counts: dict[str, tuple[str, int]] = {}
        for source in self._sources:
            counts.update(source.failing_bodies(endpoint))
        return counts

    def close(self) -> None:
        for source in self._sources:
            source.close()
