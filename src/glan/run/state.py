"""The staged records of a run, kept across invocations so a re-run asks only what is missing.

Every unit of work lands here as soon as it is done, keyed by its place in the tree (the
discipline's path, the subject's index in the discipline's listing, the question plan's index),
so a re-run reads what exists and re-derives nothing (no replay through the response cache). A
unit that gave up is stored with a NULL body: it is not asked again, a new unit replaces it.

Writes are group-committed like the response cache's (`glan.store.GroupCommit`): a kill -9
loses at most the units finished in the last few milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from glan.records import Subject, Syllabus
from glan.store import GroupCommit, connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS st_listings (
    d TEXT NOT NULL, i INTEGER NOT NULL, body BLOB, PRIMARY KEY (d, i)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS st_slots (
    d TEXT NOT NULL, slot INTEGER NOT NULL, s INTEGER NOT NULL, extra INTEGER NOT NULL,
    PRIMARY KEY (d, slot)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS st_syllabi (
    d TEXT NOT NULL, s INTEGER NOT NULL, subject BLOB NOT NULL, body BLOB,
    PRIMARY KEY (d, s)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS st_pairs (
    d TEXT NOT NULL, s INTEGER NOT NULL, p INTEGER NOT NULL, body BLOB,
    PRIMARY KEY (d, s, p)) WITHOUT ROWID;
"""
# What each stage's records depend on: invalidating a stage drops it and everything below.
DOWNSTREAM = {
    "subjects": ("st_listings", "st_slots", "st_syllabi", "st_pairs"),
    "syllabus": ("st_slots", "st_syllabi", "st_pairs"),
    "questions": ("st_pairs",),
    "answers": ("st_pairs",),
}


@dataclass
class Slot:
    """One of a discipline's planned subjects: which listed subject fills it (a spare takes
    over when a syllabus fails) and how many pairs it took over from exhausted slots."""

    s: int
    extra: int = 0


@dataclass
class SubjectPairs:
    """A subject's finished (and failed) question plans. The sets are held only while the
    subject is open in the walk; a closed subject keeps its counts (`close`), and its sets
    are read back from the state if it opens again, so memory follows the open subjects,
    not N."""

    done: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    closed: bool = False
    done_count: int = 0
    failed_count: int = 0

    @property
    def n_done(self) -> int:
        return self.done_count if self.closed else len(self.done)

    def close(self) -> None:
        self.done_count, self.failed_count = len(self.done), len(self.failed)
        self.done, self.failed, self.closed = set(), set(), True


@dataclass
class DisciplineState:
    listings: dict[int, list[Subject] | None] = field(default_factory=dict)
    slots: dict[int, Slot] = field(default_factory=dict)
    syllabi: dict[int, Syllabus | None] = field(default_factory=dict)
    pairs: dict[int, SubjectPairs] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def pairs_of(self, s: int) -> SubjectPairs:
        found = self.pairs.get(s)
        if found is None:
            found = self.pairs[s] = SubjectPairs()
        return found


class RunState:
    def __init__(self, path: Path) -> None:
        self._conn = connect(path)
        self._conn.executescript(_SCHEMA)
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._commits = GroupCommit(self.flush)
        self.writes = 0  # units staged by this process: zero means nothing new to publish

    def invalidate(self, stage: str) -> None:
        """Drop a stage's staged records and everything derived from them."""
        self.flush()
        self.writes += 1
        self._conn.execute("BEGIN")
        for table in DOWNSTREAM[stage]:
            self._conn.execute(f"DELETE FROM {table}")
        self._conn.execute("COMMIT")

    # ---- reading one discipline ----------------------------------------------------------
    def load(self, d: str) -> DisciplineState:
        self.flush()
        state = DisciplineState()
        conn = self._conn
        for i, body in conn.execute("SELECT i, body FROM st_listings WHERE d = ?", (d,)):
            state.listings[i] = (
                None if body is None else [Subject.model_validate(x) for x in orjson.loads(body)]
            )
        for slot, s, extra in conn.execute("SELECT slot, s, extra FROM st_slots WHERE d = ?", (d,)):
            state.slots[slot] = Slot(s, extra)
        for s, body in conn.execute("SELECT s, body FROM st_syllabi WHERE d = ?", (d,)):
            state.syllabi[s] = None if body is None else Syllabus.model_validate_json(body)
        for s, done, failed in conn.execute(
            "SELECT s, count(body), sum(body IS NULL) FROM st_pairs WHERE d = ? GROUP BY s",
            (d,),
        ):
            state.pairs[s] = SubjectPairs(closed=True, done_count=done, failed_count=failed)
        return state

    def subject_pairs(self, d: str, s: int) -> SubjectPairs:
        """A subject's staged plans, done and failed, read back when it opens."""
        self.flush()
        pairs = SubjectPairs()
        for p, failed in self._conn.execute(
            "SELECT p, body IS NULL FROM st_pairs WHERE d = ? AND s = ?", (d, s)
        ):
            (pairs.failed if failed else pairs.done).add(p)
        return pairs

    # ---- writing -------------------------------------------------------------------------
    def _queue(self, sql: str, row: tuple[Any, ...]) -> None:
        self.writes += 1
        self._pending.append((sql, row))
        if not self._commits.schedule():
            self.flush()

    def put_listing(self, d: str, i: int, subjects: list[Subject] | None) -> None:
        body = None if subjects is None else orjson.dumps([s.model_dump() for s in subjects])
        self._queue("INSERT OR REPLACE INTO st_listings VALUES (?, ?, ?)", (d, i, body))

    def put_slot(self, d: str, slot: int, value: Slot) -> None:
        self._queue(
            "INSERT OR REPLACE INTO st_slots VALUES (?, ?, ?, ?)", (d, slot, value.s, value.extra)
        )

    def put_syllabus(self, d: str, s: int, subject: Subject, syllabus: Syllabus | None) -> None:
        body = None if syllabus is None else orjson.dumps(syllabus.model_dump())
        self._queue(
            "INSERT OR REPLACE INTO st_syllabi VALUES (?, ?, ?, ?)",
            (d, s, orjson.dumps(subject.model_dump()), body),
        )

    def put_pair(self, d: str, s: int, p: int, record: dict[str, Any] | None) -> None:
        body = None if record is None else orjson.dumps(record)
        self._queue("INSERT OR REPLACE INTO st_pairs VALUES (?, ?, ?, ?)", (d, s, p, body))

    def flush(self) -> None:
        self._commits.flushed()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._conn.execute("BEGIN")
        by_sql: dict[str, list[tuple[Any, ...]]] = {}
        for sql, row in pending:
            by_sql.setdefault(sql, []).append(row)
        for sql, rows in by_sql.items():
            self._conn.executemany(sql, rows)
        self._conn.execute("COMMIT")

    # ---- publishing ----------------------------------------------------------------------
    def pair_bodies(self, d: str, limit: int) -> Iterator[bytes]:
        """A discipline's finished pairs in tree order, at most `limit` (its quota)."""
        self.flush()
        rows = self._conn.execute(
            "SELECT body FROM st_pairs WHERE d = ? AND body IS NOT NULL ORDER BY s, p LIMIT ?",
            (d, limit),
        )
        for (body,) in rows:
            yield body

    def syllabus_rows(self, d: str) -> Iterator[tuple[bytes, bytes]]:
        """(subject, syllabus) bodies of a discipline's finished syllabi, in tree order."""
        self.flush()
        yield from self._conn.execute(
            "SELECT subject, body FROM st_syllabi WHERE d = ? AND body IS NOT NULL ORDER BY s",
            (d,),
        )

    def close(self) -> None:
        self.flush()
        self._conn.close()
