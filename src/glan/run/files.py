"""Files a run publishes and the directory lock: atomic writes (temp file, fsync, rename), so
a kill -9 never leaves a truncated line in a published file. The staged records themselves are
in glan.run.state; the directory as a whole is glan.run.rundir.RunDir."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from glan.errors import UserError

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
