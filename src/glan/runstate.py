"""What a run keeps on disk: the directory lock, staged records, atomic writes.

Records are staged in SQLite keyed by an ordinal that encodes their place in the tree, and the
JSONL files are written from it in ordinal order at the end (temp file, fsync, rename): the
output is the same whatever order replies arrived in, memory stays flat, and a kill -9 never
leaves a truncated line in a published file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from glan.errors import UserError
from glan.store import connect

TABLES = ("subjects", "syllabi", "instructions")


def _file_mode() -> int:
    """What a plainly created file would get (mkstemp alone makes them private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write to a temp file beside `path`; fsync and rename over it only if the block ends well.

    Readers see the old file or the whole new one, never a part (a kill -9 included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """One run per output directory. flock is released by the kernel when a process dies, so a
    lock left by a killed run never blocks the next one."""
    path = out_dir / ".glan.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(
                f"another glan run (pid {holder}) is using {out_dir}; wait for it or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)


class RecordStore:
    """Staged records of the current run, group-committed like the response cache."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path)
        for table in TABLES:
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (ordinal TEXT PRIMARY KEY, body BLOB NOT NULL)"
                " WITHOUT ROWID"
            )
        self._pending: dict[str, list[tuple[str, bytes]]] = {t: [] for t in TABLES}
        self._scheduled = False

    def reset(self) -> None:
        """Staged records are derived state: every run rebuilds them (from the cache, for free)."""
        for table in TABLES:
            self._conn.execute(f"DELETE FROM {table}")

    def add(self, table: str, ordinal: str, record: dict[str, Any]) -> None:
        self._pending[table].append((ordinal, orjson.dumps(record)))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not any(self._pending.values()):
            return
        self._conn.execute("BEGIN")
        for table, rows in self._pending.items():
            if rows:
                self._conn.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", rows)
        self._conn.execute("COMMIT")
        self._pending = {t: [] for t in TABLES}

    def count(self, table: str) -> int:
        self.flush()
        return self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def iter_items(self, table: str) -> Iterator[tuple[str, bytes]]:
        """(ordinal, body) pairs in tree order."""
        self.flush()
        yield from self._conn.execute(f"SELECT ordinal, body FROM {table} ORDER BY ordinal")

    def iter_bodies(self, table: str) -> Iterator[bytes]:
        for _, body in self.iter_items(table):
            yield body

    def export_jsonl(self, table: str, path: Path) -> int:
        """Stream a table in ordinal order to `path`, atomically."""
        n = 0
        with atomic_file(path) as fh:
            for body in self.iter_bodies(table):
                fh.write(body + b"\n")
                n += 1
        return n

    def close(self) -> None:
        self.flush()
        self._conn.close()
