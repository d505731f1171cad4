"""The kept questions of semantic dedup in bounded memory (10M embeddings of 384 floats are
15 GB): the first ones in memory, up to half the budget, the rest appended to a file in the
clean's work folder and read back block by block for each search; their ids in a file too, read
only to name the question a removed one duplicates. Without a folder everything stays in memory.

float32 on disk, as in memory: float16 would halve the file but move cosines by up to about
1e-4 (measured on near-parallel pairs), which changes removals near the threshold.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

CHUNK_ROWS = 8192  # in-memory rows are allocated this many at a time
SIMILARITY_BYTES = 5  # per query and kept row searched: a float32 cosine and a bool
UNBOUNDED = 1 << 62


class KeptVectors:
    """Kept unit vectors by index (file order of their records)."""

    def __init__(self, dim: int, memory_bytes: int, folder: Path | None) -> None:
        self.dim = dim
        self.count = 0
        self._row_bytes = 4 * dim
        self._half = max(1, memory_bytes // 2)  # kept rows; the other half, one search block
        self.resident = UNBOUNDED if folder is None else max(1, self._half // self._row_bytes)
        self._chunk_rows = min(self.resident, CHUNK_ROWS)
        self._chunks: list[np.ndarray] = []
        self._path = None if folder is None else folder / "semantic-kept.f32"
        self._file: BinaryIO | None = None

    @property
    def on_disk(self) -> int:
        return max(0, self.count - self.resident)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        while len(rows) and self.count < self.resident:
            at = self.count % self._chunk_rows
            if at == 0:
                self._chunks.append(np.empty((self._chunk_rows, self.dim), np.float32))
            take = min(len(rows), self._chunk_rows - at, self.resident - self.count)
            self._chunks[-1][at : at + take] = rows[:take]
            rows = rows[take:]
            self.count += take
        if len(rows):
            assert self._path is not None
            if self._file is None:
                self._file = open(self._path, "wb")  # noqa: SIM115 (closed in close())
            self._file.write(memoryview(rows).cast("B"))
            self._file.flush()  # read back by the next search
            self.count += len(rows)

    def block_rows(self, queries: int) -> int:
        """Kept rows searched at once against `queries` vectors, within half the budget (and
        no more than CHUNK_ROWS: larger products are no faster)."""
        fit = self._half // (SIMILARITY_BYTES * queries + self._row_bytes)
        return max(1, min(CHUNK_ROWS, fit))

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index of its first row, at most `rows` rows), in index order."""
        in_memory = min(self.count, self.resident)
        for c, chunk in enumerate(self._chunks):
            first = c * self._chunk_rows
            filled = min(self._chunk_rows, in_memory - first)
            for at in range(0, filled, rows):
                yield first + at, chunk[at : min(filled, at + rows)]
        for start in range(self.resident, self.count, rows):
            n = min(rows, self.count - start)
            offset = (start - self.resident) * self._row_bytes
            assert self._path is not None
            # read, not mapped: mapped pages would stay resident as the search goes
            flat = np.fromfile(self._path, np.float32, count=n * self.dim, offset=offset)
            yield start, flat.reshape(n, self.dim)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class KeptIds:
    """Kept records' ids by index: their bytes and end offsets, appended."""

    def __init__(self, folder: Path | None) -> None:
        if folder is None:
            self._text: BinaryIO = io.BytesIO()
            self._ends: BinaryIO = io.BytesIO()
        else:
            self._text = open(folder / "semantic-ids.bin", "w+b")  # noqa: SIM115 (close())
            self._ends = open(folder / "semantic-id-ends.bin", "w+b")  # noqa: SIM115
        self._size = 0

    def extend(self, ids: list[str]) -> None:
        encoded = [i.encode() for i in ids]
        ends = self._size + np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)))
        self._text.seek(0, io.SEEK_END)
        self._text.write(b"".join(encoded))
        self._ends.seek(0, io.SEEK_END)
        self._ends.write(ends.astype(np.int64).tobytes())
        if len(encoded):
            self._size = int(ends[-1])

    def get(self, k: int) -> str:
        if k == 0:
            start = 0
            self._ends.seek(0)
            end = int(np.frombuffer(self._ends.read(8), np.int64)[0])
        else:
            self._ends.seek(8 * (k - 1))
            start, end = (int(x) for x in np.frombuffer(self._ends.read(16), np.int64))
        self._text.seek(start)
        return self._text.read(end - start).decode()

    def close(self) -> None:
        self._text.close()
        self._ends.close()
