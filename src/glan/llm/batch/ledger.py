"""What this run sent to batch APIs, kept in the run directory's SQLite so nothing is paid twice.

A batch ("job") is staged *before* anything is sent: its lines' custom_ids go in with it, in one
transaction, so a kill -9 at any later point leaves a record of what may be live remotely. The
uploaded file's id and the provider's batch id are written the moment they are known (direct
commits, not group commits). Every downloaded result line that carries a reply is kept by
custom_id (the request's cache key), so a reply the run paid for survives a crash between the
download and the response cache. A re-run re-attaches to unsettled jobs, downloads finished
ones, and submits only requests that are in no live job and have no stored reply. A job whose
results were gone for good keeps what its lost lines cost (lines and tokens) beside it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from glan.store import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    local_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    provider TEXT NOT NULL,
    access TEXT NOT NULL,
    file_id TEXT,
    batch_id TEXT,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    lines INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    settled INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    lost_lines INTEGER NOT NULL DEFAULT 0,
    lost_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    lost_completion_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batch_lines (
    custom_id TEXT NOT NULL,
    local_id TEXT NOT NULL,
    PRIMARY KEY (custom_id, local_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batch_lines_job ON batch_lines (local_id);
CREATE TABLE IF NOT EXISTS batch_results (
    custom_id TEXT PRIMARY KEY,
    local_id TEXT NOT NULL,
    body BLOB NOT NULL
) WITHOUT ROWID;
"""

# Columns later versions added: (name, definition), added to an older run's table on open.
_ADDED = (
    ("lost_lines", "INTEGER NOT NULL DEFAULT 0"),
    ("lost_prompt_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("lost_completion_tokens", "INTEGER NOT NULL DEFAULT 0"),
)

#: Statuses after which a provider batch changes no more.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled", "ended"})


@dataclass
class Job:
    local_id: str
    endpoint: str
    provider: str
    access: dict[str, Any]
    file_id: str | None
    batch_id: str | None
    status: str
    created: float
    updated: float
    lines: int
    bytes: int
    done: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    settled: bool
    error: str | None
    # Lines paid for whose results were gone for good, and their tokens (estimated where the
    # provider does not say).
    lost_lines: int = 0
    lost_prompt_tokens: int = 0
    lost_completion_tokens: int = 0

    @property
    def live(self) -> bool:
        return not self.settled


_COLUMNS = (
    "local_id, endpoint, provider, access, file_id, batch_id, status, created, updated, lines, "
    "bytes, done, failed, prompt_tokens, completion_tokens, settled, error, lost_lines, "
    "lost_prompt_tokens, lost_completion_tokens"
)


def _job(row: tuple[Any, ...]) -> Job:
    values = list(row)
    values[3] = orjson.loads(values[3])
    values[15] = bool(values[15])
    return Job(*values)


class BatchLedger:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection = connect(self.path)
        self._conn.executescript(_SCHEMA)
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(batch_jobs)")}
        for name, definition in _ADDED:
            if name not in have:
                self._conn.execute(f"ALTER TABLE batch_jobs ADD COLUMN {name} {definition}")
        self._lock = threading.Lock()

    def _write(self, statements: Iterable[tuple[str, Any]]) -> None:
        """One transaction, committed now: the ledger is what makes a crash cost nothing."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    if isinstance(params, list):
                        self._conn.executemany(sql, params)
                    else:
                        self._conn.execute(sql, params)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # ---- staging ---------------------------------------------------------------------------
    def stage(
        self,
        local_id: str,
        endpoint: str,
        provider: str,
        access: dict[str, Any],
        keys: list[str],
        size: int,
    ) -> Job:
        """The intent to send these lines, before any call that could create a batch."""
        now = time.time()
        self._write(
            [
                (
                    "INSERT INTO batch_jobs (local_id, endpoint, provider, access, status, "
                    "created, updated, lines, bytes) VALUES (?, ?, ?, ?, 'staged', ?, ?, ?, ?)",
                    (local_id, endpoint, provider, orjson.dumps(access), now, now, len(keys), size),
                ),
                (
                    "INSERT OR IGNORE INTO batch_lines (custom_id, local_id) VALUES (?, ?)",
                    [(key, local_id) for key in keys],
                ),
            ]
        )
        return Job(
            local_id=local_id, endpoint=endpoint, provider=provider, access=access,
            file_id=None, batch_id=None, status="staged", created=now, updated=now,
            lines=len(keys), bytes=size, done=0, failed=0, prompt_tokens=0,
            completion_tokens=0, settled=False, error=None,
        )  # fmt: skip

    def set_file(self, local_id: str, file_id: str) -> None:
        self._write(
            [
                (
                    "UPDATE batch_jobs SET file_id = ?, status = 'uploaded', updated = ? "
                    "WHERE local_id = ?",
                    (file_id, time.time(), local_id),
                )
            ]
        )

    def set_batch(self, local_id: str, batch_id: str, status: str) -> None:
        self._write(
            [
                (
                    "UPDATE batch_jobs SET batch_id = ?, status = ?, updated = ? WHERE local_id = ?",
                    (batch_id, status, time.time(), local_id),
                )
            ]
        )

    def set_status(self, local_id: str, status: str, done: int, failed: int) -> None:
        self._write(
            [
                (
                    "UPDATE batch_jobs SET status = ?, done = ?, failed = ?, updated = ? "
                    "WHERE local_id = ?",
                    (status, done, failed, time.time(), local_id),
                )
            ]
        )

    def settle(
        self,
        local_id: str,
        status: str,
        results: list[tuple[str, bytes]],
        failed: int,
        tokens: tuple[int, int] = (0, 0),
        error: str | None = None,
        lost: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        """The job's outcome: its replies kept by custom_id, the job closed, in one commit.
        `lost`: lines paid for whose results were gone, and their prompt and completion
        tokens."""
        self._write(
            [
                (
                    "INSERT OR IGNORE INTO batch_results (custom_id, local_id, body) "
                    "VALUES (?, ?, ?)",
                    [(key, local_id, body) for key, body in results],
                ),
                (
                    "UPDATE batch_jobs SET status = ?, done = ?, failed = ?, prompt_tokens = ?, "
                    "completion_tokens = ?, settled = 1, error = ?, updated = ?, lost_lines = ?, "
                    "lost_prompt_tokens = ?, lost_completion_tokens = ? WHERE local_id = ?",
                    (status, len(results), failed, *tokens, error, time.time(), *lost, local_id),
                ),
            ]
        )

    # ---- reading ---------------------------------------------------------------------------
    def jobs(self, endpoint: str | None = None, live_only: bool = False) -> list[Job]:
        sql = f"SELECT {_COLUMNS} FROM batch_jobs"
        where, params = [], []
        if endpoint is not None:
            where.append("endpoint = ?")
            params.append(endpoint)
        if live_only:
            where.append("settled = 0")
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY created", params).fetchall()
        return [_job(row) for row in rows]

    def keys_of(self, local_id: str) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT custom_id FROM batch_lines WHERE local_id = ?", (local_id,)
            ).fetchall()
        return [key for (key,) in rows]

    def completion_tokens_per_reply(self, endpoint: str) -> float:
        """The mean completion tokens of the replies this endpoint's batches gave (0 without
        any): what a lost reply is estimated to have cost where the provider does not say."""
        with self._lock:
            tokens, replies = self._conn.execute(
                "SELECT sum(completion_tokens), sum(done) FROM batch_jobs "
                "WHERE endpoint = ? AND settled = 1",
                (endpoint,),
            ).fetchone()
        return (tokens or 0) / replies if replies else 0.0

    def result(self, key: str) -> dict[str, Any] | None:
        """The reply a batch gave to this request, if one was downloaded."""
        with self._lock:
            row = self._conn.execute(
                "SELECT body FROM batch_results WHERE custom_id = ?", (key,)
            ).fetchone()
        return None if row is None else orjson.loads(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
