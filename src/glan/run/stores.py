"""Where a run directory keeps what it was told (staged records, replies, batches, spend), and
how that follows the run from one executor to the other.

A store is an SQLite file holding a run's staged state (glan.run.state), response cache
(glan.store), batch ledger (glan.llm.batch.ledger) and spend (glan.run.spend). A local run has
one, RUN/glan.sqlite. A Ray run has one per shard, RUN/shards/NNN/glan.sqlite: each file has a
single writer, whichever node runs the shard (SQLite written by processes on several nodes is not
safe on a network filesystem), and a shard, not a worker, is what the driver re-issues when a
worker dies, so its store, its live batches included, goes with it to the next worker.

The executor changes nothing of what is kept: before a run asks anything, under the directory's
lock, what the other executor left is re-homed.
- local after ray (`fold_shards`): every shard store's rows go into RUN/glan.sqlite (live batches
  included: the local run re-attaches to them), then the shard's directory goes;
- ray after local (`spread_state`): each discipline's staged records go to its shard's store.
  Replies and settled batches stay in RUN/glan.sqlite, which every shard reads too
  (`RunReplies`; nothing writes it while the Ray run holds the lock): cached replies through
  its response cache, replies batches delivered that no request used through its batch
  transport, which counts them in the usage as a local run resumed does. Batches a local run
  left live are refused: their lines belong to disciplines of many shards, and only the process
  that sent them collects them without paying twice.
Each move copies and commits, then deletes the source: a kill in between leaves the same rows in
both places, and the next run of either executor finishes the move.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from glan.errors import UserError
from glan.run.rundir import INPUTS_FILE, STAGE_ORDER, STATE_FILE
from glan.run.state import DOWNSTREAM
from glan.store import FAILING_BODIES_OF, connect

SHARDS = "shards"
# Rows whose later copy is the truth (a job's status moves on, a spend row grows, a staged unit
# is replaced, a body's run of failures goes on or ends: a tombstone, count 0); any other row is
# written once and the first copy stands.
_NEWER_WINS = ("batch_jobs", "spend", "failing_bodies")
_ALL_FAILING_BODIES = "SELECT key, signature, count FROM failing_bodies"


def shard_dir(out_dir: Path, shard: int) -> Path:
    return out_dir / SHARDS / f"{shard:03d}"


def shard_stores(out_dir: Path) -> list[Path]:
    """The shard stores a Ray run left in this directory, in shard order."""
    return sorted((out_dir / SHARDS).glob(f"[0-9][0-9][0-9]/{STATE_FILE}"))


def run_stores(out_dir: Path) -> list[Path]:
    """Every store of the run: RUN/glan.sqlite (when there is one) and the shards'."""
    main = out_dir / STATE_FILE
    return [*([main] if main.is_file() else []), *shard_stores(out_dir)]


# ---- local after ray -------------------------------------------------------------------------
def fold_shards(out_dir: Path) -> int:
    """Move every shard store into RUN/glan.sqlite and remove the shard directories (the
    layout stays: a later Ray run puts each discipline back where it was). The shards folded."""
    stores = shard_stores(out_dir)
    now = _inputs(out_dir)
    for store in stores:
        _checkpoint(store)
        skipped = _stale_tables(_inputs(store.parent), now)
        with _attached(out_dir / STATE_FILE, store) as conn:
            tables = _copy_schema(conn, "other", "main")
            conn.execute("BEGIN IMMEDIATE")
            for table in tables:
                if table not in skipped:
                    _copy_rows(conn, table, "other", "main")
            conn.execute("COMMIT")
        store.unlink()  # first: once it is gone, nothing of this shard is folded again
        shutil.rmtree(store.parent)
    return len(stores)


def _stale_tables(made_with: dict[str, Any] | None, now: dict[str, Any] | None) -> set[str]:
    """State tables a shard made with inputs the run no longer records (a Ray run with
    --update stopped before it reached this shard): dropped as the shard would have."""
    if made_with is None or now is None:
        return set()
    stale = [stage for stage in STAGE_ORDER if made_with.get(stage) != now.get(stage)]
    return set(DOWNSTREAM[stale[0]]) if stale else set()


# ---- ray after local -------------------------------------------------------------------------
def spread_state(out_dir: Path, shards: dict[int, list[str]]) -> int:
    """Move each discipline's staged records from RUN/glan.sqlite to its shard's store, and
    leave RUN/glan.sqlite whole on disk for the shards to read. The disciplines moved."""
    main = out_dir / STATE_FILE
    if not main.is_file():
        return 0
    refuse_live_batches(out_dir)
    conn = connect(main)
    try:
        tables = [t for t in _tables(conn, "main") if t.startswith("st_")]
        staged = {d for t in tables for (d,) in conn.execute(f"SELECT DISTINCT d FROM {t}")}
    finally:
        conn.close()
    moved = 0
    for shard, paths in shards.items():
        mine = [d for d in paths if d in staged]
        if not mine:
            continue
        target = shard_dir(out_dir, shard)
        target.mkdir(parents=True, exist_ok=True)
        inputs = out_dir / INPUTS_FILE
        if inputs.is_file() and not (target / INPUTS_FILE).exists():
            # The shard compares its inputs with these (--update drops what they changed).
            shutil.copyfile(inputs, target / INPUTS_FILE)
        having = ("d IN (SELECT value FROM json_each(?))", (orjson.dumps(mine).decode(),))
        with _attached(main, target / STATE_FILE) as conn:
            _copy_schema(conn, "main", "other", tables)
            conn.execute("BEGIN IMMEDIATE")
            for table in tables:
                _copy_rows(conn, table, "main", "other", *having)
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            for table in tables:
                conn.execute(f"DELETE FROM main.{table} WHERE {having[0]}", having[1])
            conn.execute("COMMIT")
        moved += len(mine)
    _checkpoint(main)  # the shards read it without its write-ahead log
    return moved


def refuse_live_batches(out_dir: Path) -> None:
    """A Ray run may not start over batches a local run left live (module docstring)."""
    main = out_dir / STATE_FILE
    if not main.is_file():
        return
    conn = connect(main)
    try:
        live = conn.execute("SELECT count(*) FROM batch_jobs WHERE settled = 0").fetchone()[0]
    except sqlite3.OperationalError:  # no batch ever sent from here
        live = 0
    finally:
        conn.close()
    if live:
        raise UserError(
            f"{out_dir} holds {live} live batches a local run sent: re-run with --executor local "
            f"to collect them (or cancel them: glan batches {out_dir} --cancel), then switch to ray"
        )


# ---- what a shard reads of RUN/glan.sqlite ------------------------------------------------------
class RunReplies:
    """The replies RUN/glan.sqlite holds, for a Ray shard to read (never write): those cached,
    for its response cache, and those batches delivered that no request had used yet, for its
    batch transport (`delivered`: they were never counted in the run's usage, so the transport
    returns them as its own ledger's, counted once, not as free cache hits). Opened read-only
    and immutable (no locks, no write-ahead log: safe from any number of processes, on any
    filesystem), which holds while a Ray run has the directory: nothing writes it then.
    `immutable=False`: read-only only, for a reader beside a run that may be writing it (a dry
    run: glan.run.snapshot)."""

    def __init__(self, path: Path, immutable: bool = True) -> None:
        uri = f"{path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._has = set(_tables(self._conn, "main"))

    def _rows(self, table: str, sql: str, *params: str) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall() if table in self._has else []

    def keys(self) -> Iterator[str]:
        for (key,) in self._rows("responses", "SELECT key FROM responses"):
            yield key

    def get(self, key: str) -> dict[str, Any] | None:
        cached = self._rows("responses", "SELECT body FROM responses WHERE key = ?", key)
        return orjson.loads(cached[0][0]) if cached else None

    def delivered_keys(self) -> Iterator[str]:
        for (key,) in self._rows("batch_results", "SELECT custom_id FROM batch_results"):
            yield key

    def delivered(self, key: str) -> dict[str, Any] | None:
        """A batch line's completion (text, finish_reason, tokens), as the ledger keeps it."""
        sql = "SELECT body FROM batch_results WHERE custom_id = ?"
        rows = self._rows("batch_results", sql, key)
        return orjson.loads(rows[0][0]) if rows else None

    def failing_bodies(self, endpoint: str) -> dict[str, tuple[str, int]]:
        """Bodies sent to `endpoint` suspected of breaking the server, as the run counted them
        (glan.store; a store an older glan made notes no endpoint: all its rows)."""
        if "failing_bodies" not in self._has:
            return {}
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(failing_bodies)")}
        sql = FAILING_BODIES_OF if "endpoint" in columns else _ALL_FAILING_BODIES
        params = (endpoint,) if "endpoint" in columns else ()
        rows = self._conn.execute(sql, params)
        return {key: (sig, count) for key, sig, count in rows}

    def close(self) -> None:
        self._conn.close()


# ---- SQLite plumbing ---------------------------------------------------------------------------
@contextlib.contextmanager
def _attached(main: Path, other: Path) -> Iterator[sqlite3.Connection]:
    other.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(main)
    try:
        conn.execute("ATTACH DATABASE ? AS other", (str(other),))
        conn.execute("PRAGMA other.journal_mode=WAL")
        yield conn
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection, schema: str) -> dict[str, str]:
    """Table name -> its CREATE statement (SQLite's own tables left out)."""
    rows = conn.execute(
        f"SELECT name, sql FROM {schema}.sqlite_master "
        "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    return dict(rows.fetchall())


def _copy_schema(
    conn: sqlite3.Connection, source: str, dest: str, only: list[str] | None = None
) -> list[str]:
    """Create in `dest` the tables of `source` it lacks (their indexes come when the module
    that owns a table opens the store); the tables to copy."""
    have = _tables(conn, dest)
    tables = {t: sql for t, sql in _tables(conn, source).items() if only is None or t in only}
    for name, sql in tables.items():
        if name not in have:
            conn.execute(sql.replace(f"CREATE TABLE {name}", f"CREATE TABLE {dest}.{name}", 1))
    return list(tables)


def _copy_rows(
    conn: sqlite3.Connection,
    table: str,
    source: str,
    dest: str,
    where: str = "1",
    params: tuple[Any, ...] = (),
) -> None:
    """Rows of `source.table` into `dest.table`, by column name (a newer glan may have added
    columns to one of them)."""
    ours = {row[1] for row in conn.execute(f"PRAGMA {dest}.table_info({table})")}
    cols = ", ".join(
        row[1] for row in conn.execute(f"PRAGMA {source}.table_info({table})") if row[1] in ours
    )
    verb = "REPLACE" if table.startswith("st_") or table in _NEWER_WINS else "IGNORE"
    conn.execute(
        f"INSERT OR {verb} INTO {dest}.{table} ({cols}) SELECT {cols} FROM {source}.{table} "
        f"WHERE {where}",
        params,
    )


def _checkpoint(path: Path) -> None:
    """Everything committed to `path` is in the file itself, not in a write-ahead log beside it."""
    conn = connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _inputs(directory: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads((directory / INPUTS_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
