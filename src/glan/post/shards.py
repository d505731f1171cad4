"""Sharded export files, written as record batches stream in (never the whole dataset in memory).

A shard is closed once it reaches the shard size and the next one begins; names are settled at
the end, when the count is known: `train-00000-of-00003.parquet` (the layout the hub and
`datasets.load_dataset` read as one split), or `train.parquet` / `train.jsonl` when one shard
holds everything (what earlier glan versions wrote). `--format hf` writes the folder
`Dataset.save_to_disk` writes: `dataset/data-00000-of-00003.arrow` with its state.json and
dataset_info.json, readable by `datasets.load_from_disk`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import orjson

from glan.errors import UserError

DEFAULT_SHARD_BYTES = 500 * 10**6
# Rows per row group (and Arrow record batch): about 16-32 MB of text here, a unit that readers
# (trainers, the hub's viewer) can fetch and decode alone.
BATCH_ROWS = 8192

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """'500MB', '2GB', '750k', '1000000' -> bytes (KiB/MiB/GiB count in 1024s)."""
    match = _SIZE.match(text)
    if not match:
        raise UserError(f"not a size: {text!r} (e.g. 500MB, 2GB)")
    unit = (match.group(2) or "").lower()
    base = 1024 ** "kmgt".index(unit[0]) * 1024 if "i" in unit else _UNITS[unit[:1]]
    size = int(float(match.group(1)) * base)
    if size <= 0:
        raise UserError(f"the shard size must be positive: {text!r}")
    return size


class ShardWriter:
    """Rows in, shards out. Subclasses open, fill and close one file of their format."""

    suffix = ""

    def __init__(self, folder: Path, stem: str, max_bytes: int) -> None:
        self.folder, self.stem, self.max_bytes = folder, stem, max_bytes
        self.paths: list[Path] = []
        self._fh: Any = None
        self.rows = 0

    def _begin(self) -> None:
        path = self.folder / f".{self.stem}-{len(self.paths):05d}.partial{self.suffix}"
        self.paths.append(path)
        self._fh = path.open("wb")
        self._open(self._fh)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self._fh is None:
            self._begin()
        self._write(rows)
        self.rows += len(rows)
        if self._fh.tell() >= self.max_bytes:
            self._finish()

    def _finish(self) -> None:
        self._close()
        self._fh.close()
        self._fh = None

    def close(self) -> list[str]:
        """Finish the last shard and give each its final name; returns the names."""
        if self._fh is None and not self.paths:
            self._begin()  # an empty dataset is still one (empty) file
        if self._fh is not None:
            self._finish()
        n = len(self.paths)
        names = [self.final_name(i, n) for i in range(n)]
        for path, name in zip(self.paths, names, strict=True):
            os.replace(path, self.folder / name)
        return names

    def final_name(self, i: int, n: int) -> str:
        if n == 1:
            return f"{self.stem}{self.suffix}"
        return f"{self.stem}-{i:05d}-of-{n:05d}{self.suffix}"

    def _open(self, fh: Any) -> None:
        pass

    def _write(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class JsonlShards(ShardWriter):
    suffix = ".jsonl"

    def _write(self, rows: list[dict[str, Any]]) -> None:
        self._fh.write(b"".join(orjson.dumps(row) + b"\n" for row in rows))


class ParquetShards(ShardWriter):
    suffix = ".parquet"

    def __init__(self, folder: Path, stem: str, max_bytes: int, schema: Any) -> None:
        super().__init__(folder, stem, max_bytes)
        self.schema = schema
        self._writer: Any = None

    def _open(self, fh: Any) -> None:
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(fh, self.schema)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        # one call, one row group
        self._writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def _close(self) -> None:
        self._writer.close()


class ArrowShards(ParquetShards):
    """The Arrow IPC stream files of `Dataset.save_to_disk`, under stem `data`."""

    suffix = ".arrow"

    def _open(self, fh: Any) -> None:
        import pyarrow as pa

        self._writer = pa.ipc.new_stream(fh, self.schema)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        self._writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=self.schema))

    def final_name(self, i: int, n: int) -> str:
        return f"{self.stem}-{i:05d}-of-{n:05d}{self.suffix}"  # what load_from_disk lists


def write_dataset_state(folder: Path, features: Any, names: list[str], fingerprint: str) -> None:
    """state.json and dataset_info.json beside the Arrow shards, as save_to_disk writes them."""
    from datasets import DatasetInfo

    DatasetInfo(features=features).write_to_directory(str(folder))
    state = {
        "_data_files": [{"filename": name} for name in names],
        "_fingerprint": fingerprint,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))


def unify(schema: Any, rows: list[dict[str, Any]]) -> Any:
    """The schema of everything seen so far: fields missing in some rows or null in some are
    merged (a struct gains the union of its fields), so every batch fits the one schema."""
    import pyarrow as pa

    seen = pa.Table.from_pylist(rows).schema
    if schema is None:
        return seen
    return pa.unify_schemas([schema, seen], promote_options="permissive")
