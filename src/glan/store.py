"""The per-request response cache: SQLite in WAL mode, one row per answered request.

Writes are group-committed (`GroupCommit`): every reply that arrives within a few milliseconds
shares one commit, so throughput does not pay a commit per request, and a kill -9 loses at most
those milliseconds of replies. WAL with synchronous=NORMAL survives a process crash (the OS holds
the log); only a power cut may lose the last commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    tag TEXT NOT NULL,
    model TEXT NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failing_bodies (
    key TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    count INTEGER NOT NULL,
    endpoint TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
DROP TABLE IF EXISTS suspects;
"""


#: The most replies a crash can lose: those of the last `COMMIT_INTERVAL_S` seconds.
COMMIT_INTERVAL_S = 0.02


# A client's rows, and those a glan that did not note the endpoint left (endpoint ''): their
# keys name their endpoint all the same (ChatRequest.cache_key), so they match no other's body.
FAILING_BODIES_OF = "SELECT key, signature, count FROM failing_bodies WHERE endpoint IN (?, '')"


def add_endpoint_column(conn: sqlite3.Connection, schema: str = "main") -> None:
    """A store an older glan made: its failing_bodies rows gain an endpoint, '' (unknown)."""
    columns = {row[1] for row in conn.execute(f"PRAGMA {schema}.table_info(failing_bodies)")}
    if "endpoint" not in columns:
        conn.execute(
            f"ALTER TABLE {schema}.failing_bodies ADD COLUMN endpoint TEXT NOT NULL DEFAULT ''"
        )


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class GroupCommit:
    """Runs `flush` once for all writes queued close together, on the event loop.

    A write queued long after the last commit is committed at the end of this loop turn (a slow
    run loses nothing it could keep); writes arriving faster share one commit every
    `COMMIT_INTERVAL_S` seconds (a fast run pays a commit per few dozen replies, not per turn).
    Outside an event loop, `schedule` returns False and the caller commits at once.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._timer: asyncio.Handle | None = None
        self._last = 0.0

    def schedule(self) -> bool:
        if self._timer is not None:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        wait = self._last + COMMIT_INTERVAL_S - time.monotonic()
        if wait > 0:
            self._timer = loop.call_later(wait, self._flush)
        else:
            self._timer = loop.call_soon(self._flush)
        return True

    def flushed(self) -> None:
        """Called by the owner's flush, whoever ran it: the next commit is timed from this one.

        A flush made directly (a discipline's state read back, the end of a run) cancels the
        timer, which would otherwise start a second chain of commits beside the next one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._last = time.monotonic()


class KeyFilter:
    """A Bloom filter over cache keys: "absent" is certain, "present" is checked in SQLite.

    A fresh run asks for millions of keys that are not there; the filter answers those in about
    a microsecond instead of a SELECT (~25 us). 2**27 bits (16 MiB) with 3 probes keep false
    positives under 1% up to ten million keys. The probes come from the key itself (a sha256).
    """

    BITS = 1 << 27

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS // 8)

    def _probes(self, key: str) -> tuple[int, int, int]:
        mask = self.BITS - 1
        return int(key[0:8], 16) & mask, int(key[8:16], 16) & mask, int(key[16:24], 16) & mask

    def add(self, key: str) -> None:
        bits = self._bits
        for p in self._probes(key):
            bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, key: str) -> bool:
        bits = self._bits
        return all(bits[p >> 3] & (1 << (p & 7)) for p in self._probes(key))


class ReplySource(Protocol):
    """Replies a cache reads and never writes (glan.run.stores.RunReplies)."""

    def keys(self) -> Iterable[str]: ...

    def get(self, key: str) -> dict[str, Any] | None: ...

    def failing_bodies(self, endpoint: str) -> dict[str, tuple[str, int]]: ...

    def close(self) -> None: ...


class ResponseCache:
    def __init__(self, path: Path | str, fallback: ReplySource | None = None) -> None:
        """`fallback`: where a reply this cache lacks may still be (a Ray shard reads what
        its run kept before it was cut into shards)."""
        self.path = Path(path)
        self._conn = connect(self.path)
        self._conn.executescript(_SCHEMA)
        add_endpoint_column(self._conn)
        self._pending: list[tuple[str, str, str, bytes, float]] = []
        self._commits = GroupCommit(self.flush)
        self._lock = threading.Lock()
        self._filter = KeyFilter()
        for (key,) in self._conn.execute("SELECT key FROM responses"):
            self._filter.add(key)
        self._fallback = fallback
        for key in fallback.keys() if fallback is not None else ():
            self._filter.add(key)

    def get(self, key: str) -> dict[str, Any] | None:
        if key not in self._filter:
            return None
        row = self._conn.execute("SELECT body FROM responses WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return orjson.loads(row[0])
        for pending in self._pending:  # written this turn, not yet committed
            if pending[0] == key:
                return orjson.loads(pending[3])
        return self._fallback.get(key) if self._fallback is not None else None

    def put(self, key: str, tag: str, model: str, body: dict[str, Any]) -> None:
        """Queue a row; it is group-committed (`GroupCommit`), or committed now outside a loop."""
        self._pending.append((key, tag, model, orjson.dumps(body), time.time()))
        self._filter.add(key)
        if not self._commits.schedule():
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._commits.flushed()
            if not self._pending:
                return
            rows, self._pending = self._pending, []
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO responses (key, tag, model, body, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def failing_bodies(self, endpoint: str) -> dict[str, tuple[str, int]]:
        """Each body sent to `endpoint` suspected of breaking the server (glan.llm.bodyfaults):
        its hard error and how many times in a row it met it, as earlier passes and runs left
        them (with the rows of a glan that did not note the endpoint)."""
        with self._lock:
            rows = self._conn.execute(FAILING_BODIES_OF, (endpoint,))
            mine = {key: (signature, count) for key, signature, count in rows}
        # A Ray shard also counts what its run noted before it was cut into shards, unless
        # its own row (a tombstone, count 0, when the run of failures ended here) says later.
        fallback = self._fallback
        earlier = fallback.failing_bodies(endpoint) if fallback is not None else {}
        return {key: row for key, row in {**earlier, **mine}.items() if row[1] > 0}

    def put_failing_body(self, key: str, signature: str, count: int, endpoint: str) -> None:
        """Note a suspect's run of failures so far. Rare (a path of failures), so written at
        once, outside the group commit."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO failing_bodies (key, signature, count, endpoint) "
                "VALUES (?, ?, ?, ?)",
                (key, signature, count, endpoint),
            )

    def drop_failing_body(self, key: str, endpoint: str) -> None:
        """The suspect's run of failures ended: it succeeded, or failed another way. Where a
        run's older row may stand behind this cache (a Ray shard's `fallback`), a tombstone
        (count 0) hides it, and goes back to the run with the shard's rows
        (glan.run.stores.fold_shards: the newer row wins)."""
        with self._lock:
            if self._fallback is None:
                self._conn.execute("DELETE FROM failing_bodies WHERE key = ?", (key,))
            else:
                self._conn.execute(
                    "INSERT OR REPLACE INTO failing_bodies (key, signature, count, endpoint) "
                    "VALUES (?, '', 0, ?)",
                    (key, endpoint),
                )

    def __len__(self) -> int:
        self.flush()
        return self._conn.execute("SELECT count(*) FROM responses").fetchone()[0]

    def integrity_ok(self) -> bool:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        self.flush()
        self._conn.close()
        if self._fallback is not None:
            self._fallback.close()
