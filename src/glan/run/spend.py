"""What a run spent, written down as it is spent, so a process killed mid-run (a Ray worker, a
driver, a local run) still has its requests, tokens and cost in the run's totals.

Each pipeline keeps one row in its store (RUN/glan.sqlite, or a Ray shard's): its usage so far,
keyed by the run's invocation (one command: the local run, or the Ray driver and every shard
attempt it started) and the pipeline's own part. Rows are group-committed like the replies
(`glan.store.GroupCommit`): a kill -9 loses at most the last few milliseconds of them.

The manifest's totals are the previous manifest's plus every row it had not counted yet: this
invocation's (killed shard attempts included) and those of an invocation that died before
writing a manifest. The manifest lists the invocations it counted.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from glan.llm.usage import UsageLedger, merge_usage
from glan.store import GroupCommit, connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    invocation TEXT NOT NULL, part TEXT NOT NULL, usage BLOB NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (invocation, part)) WITHOUT ROWID;
"""


class SpendLog:
    """One pipeline's usage ledger, mirrored into its store as it changes."""

    def __init__(self, path: Path, invocation: str, part: str, ledger: UsageLedger) -> None:
        self._conn = connect(path)
        self._conn.executescript(_SCHEMA)
        self._key = (invocation, part)
        self._ledger = ledger
        self._commits = GroupCommit(self.flush)
        self._dirty = False
        ledger.on_change = self.changed
        if ledger.rows:  # counted before the log began (results lost, read at re-attach)
            self._dirty = True
            self.flush()

    def changed(self) -> None:
        self._dirty = True
        if not self._commits.schedule():
            self.flush()

    def flush(self) -> None:
        self._commits.flushed()
        if not self._dirty:
            return
        self._dirty = False
        self._conn.execute(
            "INSERT OR REPLACE INTO spend VALUES (?, ?, ?, ?)",
            (*self._key, orjson.dumps(self._ledger.as_dict()), time.time()),
        )

    def close(self) -> None:
        self._ledger.on_change = None
        self.flush()
        self._conn.close()


def spend_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(invocation, usage) of every part a store holds (none before glan wrote spend down)."""
    if not path.is_file():
        return []
    conn = connect(path)
    try:
        rows = conn.execute("SELECT invocation, usage FROM spend").fetchall()
    except sqlite3.OperationalError:  # no spend table
        rows = []
    finally:
        conn.close()
    return [(invocation, orjson.loads(body)) for invocation, body in rows]


def spend_totals(
    stores: Iterable[Path], previous: dict[str, Any], invocation: str
) -> dict[str, Any]:
    """The run's usage (everything ever spent), this invocation's, and the invocations counted:
    the manifest's `usage`, `usage_this_invocation` and `usage_invocations`."""
    counted = set(previous.get("usage_invocations") or ())
    usage: dict[str, Any] = previous.get("usage") or {}
    this_run: dict[str, Any] = {}
    seen = set(counted)
    for path in stores:
        for inv, rows in spend_rows(path):
            if inv in counted:
                continue
            usage = merge_usage(usage, rows)
            seen.add(inv)
            if inv == invocation:
                this_run = merge_usage(this_run, rows)
    return {
        "usage": usage,
        "usage_this_invocation": this_run,
        "usage_invocations": sorted(seen),
    }
