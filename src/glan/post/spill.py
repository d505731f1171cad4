"""Hash partitions on disk: rows too many to sort in memory are split by the top bits of a
uniform 64-bit key into files small enough to sort one at a time (the external-memory group-by
of large dedup pipelines). Rows keep their order of arrival inside a partition, so a stable sort
of one partition keeps record order among equal keys.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SORT_OVERHEAD = (
    4  # bytes sorted per byte of row: rows, sort order, sorted copy, runs (2.6 measured)
)


def partitions_for(rows: int, row_bytes: int, budget_bytes: int) -> int:
    """The fewest partitions (a power of two) whose sort fits the budget."""
    need = rows * row_bytes * SORT_OVERHEAD
    return 1 << max(0, math.ceil(math.log2(max(1, need / max(1, budget_bytes)))))


class Partitions:
    def __init__(self, folder: Path, name: str, parts: int, dtype: np.dtype) -> None:
        self.parts = parts
        self.dtype = np.dtype(dtype)
        self.paths = [folder / f"{name}.{p:04d}.bin" for p in range(parts)]
        self._files = [open(p, "wb") for p in self.paths]  # noqa: SIM115 (closed in close())
        self.rows = 0

    def part_of_key(self, keys: np.ndarray) -> np.ndarray:
        """Top bits of a uniform uint64 key."""
        if self.parts == 1:
            return np.zeros(len(keys), dtype=np.int64)
        return (keys >> np.uint64(64 - int(math.log2(self.parts)))).astype(np.int64)

    def add(self, rows: np.ndarray, part: np.ndarray) -> None:
        self.rows += len(rows)
        if self.parts == 1:
            self._files[0].write(memoryview(rows).cast("B"))  # no copy
            return
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.parts + 1))
        for p in range(self.parts):
            if bounds[p + 1] > bounds[p]:
                self._files[p].write(memoryview(rows[order[bounds[p] : bounds[p + 1]]]).cast("B"))

    def close(self) -> None:
        for fh in self._files:
            fh.close()

    def read(self, p: int) -> np.ndarray:
        return np.fromfile(self.paths[p], dtype=self.dtype)

    def remove(self, p: int) -> None:
        self.paths[p].unlink(missing_ok=True)


def run_starts(sorted_keys: list[np.ndarray]) -> np.ndarray:
    """True where a row starts a new run of equal keys (rows sorted on those key columns)."""
    n = len(sorted_keys[0])
    new = np.ones(n, dtype=bool)
    if n > 1:
        diff = np.zeros(n - 1, dtype=bool)
        for col in sorted_keys:
            diff |= col[1:] != col[:-1]
        new[1:] = diff
    return new
