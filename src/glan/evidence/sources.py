"""The result files a page reads, each named by its path relative to the page and its sha256
(of the bytes read: the page's numbers are those of exactly that file)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from glan.errors import UserError
from glan.evaluate.provenance import sha256


class Source(BaseModel):
    path: str  # relative to the page's folder (absolute where no relative path exists)
    sha256: str
    bytes: int
    holds: str  # which of the page's numbers come from it


class Sources:
    """The files read so far, in the order read; each read once."""

    def __init__(self, page_dir: Path) -> None:
        self.page_dir = page_dir
        self.listed: dict[Path, Source] = {}

    def add(self, path: Path, holds: str, content: bytes | None = None) -> Source:
        """List a file; `content`, where given, is the bytes its numbers were read from (so the
        sha256 is theirs even if the file changes meanwhile)."""
        resolved = path.resolve()
        if resolved not in self.listed:
            self.listed[resolved] = Source(
                path=_relative(resolved, self.page_dir),
                sha256=sha256(resolved) if content is None else hashlib.sha256(content).hexdigest(),
                bytes=resolved.stat().st_size if content is None else len(content),
                holds=holds,
            )
        return self.listed[resolved]

    def read_json(self, path: Path, holds: str) -> tuple[dict[str, Any], Source]:
        """The file's JSON and its entry; an unreadable file is the user's one-line error."""
        try:
            content = path.read_bytes()
            data = orjson.loads(content)
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
        except orjson.JSONDecodeError:
            raise UserError(f"{path} is not JSON: is it a glan result file?") from None
        return data, self.add(path, holds, content)

    def all(self) -> list[Source]:
        return list(self.listed.values())


def _relative(path: Path, page_dir: Path) -> str:
    try:
        return Path(os.path.relpath(path, page_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path
        return path.as_posix()
