"""Sharded export files, written as record batches stream in (never the whole dataset in memory).

The shard size bounds every file's bytes: records go into a file while the file, closed,
would stay within it, and the next record begins the next file. A record too large for the
bound on its own gets a file of its own (the export names it). Parquet and Arrow files are
bounded by measuring: a batch is encoded alone first (its row group or record batch takes the
same bytes in the file) and split where it would not fit; a Parquet file's footer is counted
as it will be written, its growth per row group measured from that same encoding.

Names are settled at the end, when the count is known: `train-00000-of-00003.parquet` (the
layout the hub and `datasets.load_dataset` read as one split), or `train.parquet` /
`train.jsonl` when one shard holds everything (what earlier glan versions wrote). `--format hf`
writes the folder `Dataset.save_to_disk` writes: `dataset/data-00000-of-00003.arrow` with its
state.json and dataset_info.json, readable by `datasets.load_from_disk`.
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from glan.errors import UserError

DEFAULT_SHARD_BYTES = 500 * 10**6
# Rows per row group (and Arrow record batch): about 16-32 MB of text here, a unit that readers
# (trainers, the hub's viewer) can fetch and decode alone.
BATCH_ROWS = 8192

UNITS = "units: B, KB, MB, GB, TB (1000s), KiB, MiB, GiB, TiB (1024s)"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    **{f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgt")},
    **{f"{p}ib": 1024 ** (i + 1) for i, p in enumerate("kmgt")},
}


def parse_size(text: str, flag: str = "--shard-size") -> int:
    """'500MB', '2GB', '1.5KB', '64MiB' -> bytes. A number needs its unit: '20' or '750k'
    could mean several sizes, so they are refused with one line saying which are read."""
    match = _SIZE.match(text)
    if not match:
        raise UserError(f"{flag} {text!r} is not a size: write e.g. 500MB ({UNITS})")
    number, unit = match.group(1), match.group(2).lower()
    if not unit:
        raise UserError(f"{flag} {text} has no unit: {number}KB? {number}MB? ({UNITS})")
    if unit not in _UNITS:
        raise UserError(f"{flag} {text} has no unit glan reads: {number}KB? {number}KiB? ({UNITS})")
    size = int(float(number) * _UNITS[unit])
    if size <= 0:
        raise UserError(f"{flag} must be more than 0 bytes, got {text!r}")
    return size


class ShardWriter:
    """Rows in, files of at most `max_bytes` out. A subclass encodes a batch of rows once
    (`_encode`), says what a slice of it would add to the open file (`_cost`) and writes it
    (`_put`); this class decides where files end."""

    suffix = ""
    # Measurements to find where a file ends within a batch: a few guesses from the rows'
    # sizes, then halving (8,192 rows narrow to a few).
    _TRIES, _SECANT = 14, 3

    def __init__(self, folder: Path, stem: str, max_bytes: int) -> None:
        self.folder, self.stem, self.max_bytes = folder, stem, max_bytes
        self.paths: list[Path] = []
        self.oversized: list[int] = []  # files (indexes) over the bound: one record each
        self._fh: Any = None
        self._rows_in_file = 0
        self.rows = 0

    def _begin(self) -> None:
        path = self.folder / f".{self.stem}-{len(self.paths):05d}.partial{self.suffix}"
        self.paths.append(path)
        self._fh = path.open("wb")
        self._rows_in_file = 0
        self._open(self._fh)

    def write(self, rows: list[dict[str, Any]]) -> None:
        data = self._encode(rows)
        ends: list[int] = []  # the rows' running JSON bytes, made when a search needs them

        def weights() -> list[int]:
            if not ends:
                ends.extend([0, *itertools.accumulate(self._row_bytes(rows, data))])
            return ends

        start, n = 0, len(rows)
        while start < n:
            if self._fh is None:
                self._begin()
            k = self._fitting(data, weights, start, n - start, self.max_bytes - self._size())
            full = start + k < n
            if k == 0:
                if self._rows_in_file:  # this file is full: the next one takes the rest
                    self._finish()
                    continue
                k, full = 1, True  # too large for the bound on its own: a file to itself
            self._put(data, start, k)
            self._rows_in_file += k
            self.rows += k
            start += k
            if full:
                self._finish()

    def _fitting(
        self, data: Any, weights: Callable[[], list[int]], start: int, n: int, room: int
    ) -> int:
        """How many rows from `start` (at most n) fit in `room` bytes; only a count whose cost
        was measured is returned. A batch that fits costs one measurement. Otherwise the next
        counts tried come from a line through the last two measurements against the rows'
        JSON bytes (`weights`: their running total), then from halving what is left open."""
        fits, fails, k = 0, n + 1, n
        last = (0, 0)
        for attempt in range(self._TRIES):
            cost = self._cost(data, start, k)
            if cost <= room:
                fits = k
            else:
                fails = k
            if fails - fits <= 1:
                break
            ends = weights()
            weight = ends[start + k] - ends[start]
            guess = (fits + fails) // 2
            if attempt < self._SECANT and weight != last[0]:
                slope = (cost - last[1]) / (weight - last[0])
                if slope > 0:
                    goal = ends[start] + weight + (room - cost) / slope
                    guess = bisect.bisect_right(ends, goal) - 1 - start
            last = (weight, cost)
            k = min(max(guess, fits + 1), fails - 1)
        return fits

    def _finish(self) -> None:
        self._close()
        size = self._fh.tell()
        self._fh.close()
        self._fh = None
        if size > self.max_bytes:
            if self._rows_in_file > 1:  # what the measurements exist to prevent
                raise RuntimeError(f"{self.paths[-1]}: {size} bytes, over {self.max_bytes}")
            self.oversized.append(len(self.paths) - 1)

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

    def _size(self) -> int:
        """What the open file will weigh once closed, as it stands."""
        return self._fh.tell()

    def _row_bytes(self, rows: list[dict[str, Any]], data: Any) -> Iterable[int]:
        """Each row's JSON bytes: what the search for a file's end weighs rows by."""
        return (len(orjson.dumps(row)) + 1 for row in rows)

    def _open(self, fh: Any) -> None:
        pass

    def _encode(self, rows: list[dict[str, Any]]) -> Any:
        raise NotImplementedError

    def _cost(self, data: Any, start: int, n: int) -> int:
        raise NotImplementedError

    def _put(self, data: Any, start: int, n: int) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class JsonlShards(ShardWriter):
    """Lines, measured exactly: a file ends where the next line would pass the bound."""

    suffix = ".jsonl"

    def _encode(self, rows: list[dict[str, Any]]) -> list[bytes]:
        return [orjson.dumps(row) + b"\n" for row in rows]

    def _row_bytes(self, rows: list[dict[str, Any]], data: Any) -> Iterable[int]:
        return map(len, data)

    def _fitting(
        self, data: Any, weights: Callable[[], list[int]], start: int, n: int, room: int
    ) -> int:
        ends = weights()  # exact here: a line's bytes are its JSON bytes
        return max(0, min(n, bisect.bisect_right(ends, ends[start] + room) - 1 - start))

    def _put(self, data: Any, start: int, n: int) -> None:
        self._fh.write(b"".join(data[start : start + n]))


def _parquet_footer(data: bytes) -> int:
    """The length of a Parquet file's footer, as its last 8 bytes give it."""
    return int.from_bytes(data[-8:-4], "little")


class ParquetShards(ShardWriter):
    """One row group per batch (or per part of a batch that ends a file). A file is its
    4-byte header, its row groups, its footer (the schema, then per row group its columns'
    offsets and statistics) and 8 closing bytes."""

    suffix = ".parquet"
    # Footer bytes a row group's metadata can take in a file beyond what it took alone: per
    # leaf column, four offsets written as varints, up to 9 bytes longer deep in a file.
    _SLACK_PER_LEAF = 40
    _SLACK = 64

    def __init__(self, folder: Path, stem: str, max_bytes: int, schema: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(folder, stem, max_bytes)
        self.schema = schema
        self._writer: Any = None
        empty = self._alone(None)
        self._empty_footer = _parquet_footer(empty)
        self._leaves = len(pq.ParquetFile(pa.BufferReader(empty)).schema)
        self._footer = 0  # the open file's footer, as it will be written
        self._growth: dict[tuple[int, int], int] = {}  # (start, n) measured -> footer growth

    def _alone(self, table: Any) -> bytes:
        """`table` written as a Parquet file of its own, in memory (None: an empty file)."""
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        with pq.ParquetWriter(buffer, self.schema) as writer:
            if table is not None:
                writer.write_table(table)
        return buffer.getvalue()

    def _open(self, fh: Any) -> None:
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(fh, self.schema)
        self._footer = self._empty_footer + 8 + self._SLACK

    def _size(self) -> int:
        return self._fh.tell() + self._footer

    def _encode(self, rows: list[dict[str, Any]]) -> Any:
        import pyarrow as pa

        self._growth = {}
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _cost(self, data: Any, start: int, n: int) -> int:
        """The row group's bytes and its footer's growth, from the slice written alone."""
        alone = self._alone(data.slice(start, n))
        footer = _parquet_footer(alone)
        grows = footer - self._empty_footer + self._SLACK_PER_LEAF * self._leaves
        self._growth[start, n] = grows
        return len(alone) - 12 - footer + grows

    def _put(self, data: Any, start: int, n: int) -> None:
        if (start, n) not in self._growth:  # a lone record over the bound: never measured
            self._cost(data, start, n)
        self._footer += self._growth[start, n]
        self._writer.write_table(data.slice(start, n))  # one call, one row group

    def _close(self) -> None:
        self._writer.close()


class ArrowShards(ShardWriter):
    """The Arrow IPC stream files of `Dataset.save_to_disk`, under stem `data`: the schema
    message, record batches (their size known exactly before writing) and 8 closing bytes."""

    suffix = ".arrow"

    def __init__(self, folder: Path, stem: str, max_bytes: int, schema: Any) -> None:
        super().__init__(folder, stem, max_bytes)
        self.schema = schema
        self._writer: Any = None
        self._schema_bytes = schema.serialize().size

    def _open(self, fh: Any) -> None:
        import pyarrow as pa

        self._writer = pa.ipc.new_stream(fh, self.schema)

    def _size(self) -> int:
        return (self._fh.tell() or self._schema_bytes) + 8  # the schema goes with the first batch

    def _encode(self, rows: list[dict[str, Any]]) -> Any:
        import pyarrow as pa

        return pa.RecordBatch.from_pylist(rows, schema=self.schema)

    def _cost(self, data: Any, start: int, n: int) -> int:
        import pyarrow as pa

        return pa.ipc.get_record_batch_size(data.slice(start, n))

    def _put(self, data: Any, start: int, n: int) -> None:
        self._writer.write_batch(data.slice(start, n))

    def _close(self) -> None:
        self._writer.close()

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
