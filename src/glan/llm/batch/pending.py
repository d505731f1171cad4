"""The lines waiting to be sent, and how they are cut into batches.

A batch's custom_ids must be unique, so a line already waiting is not added twice. Lines are cut
into batches in arrival order, within a batch's limits (lines and bytes); more than one batch's
worth waits after a quota hold, or once the limits were cut.
"""

from __future__ import annotations

import time

Line = tuple[str, bytes]  # custom_id, the JSONL line


class Pending:
    def __init__(self) -> None:
        self._lines: list[Line] = []
        self._keys: set[str] = set()
        self._bytes = 0
        self.oldest = 0.0  # when the oldest line came (monotonic)
        self.last = 0.0  # when the newest came

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def full_with(self, line: bytes, max_lines: int, max_bytes: int) -> bool:
        """Whether what waits makes a batch that `line` would not fit in."""
        return bool(self._lines) and (
            len(self._lines) >= max_lines or self._bytes + len(line) > max_bytes
        )

    def add(self, key: str, line: bytes) -> None:
        now = time.monotonic()
        if not self._lines:
            self.oldest = now
        self.last = now
        self._lines.append((key, line))
        self._keys.add(key)
        self._bytes += len(line)

    def due(self, idle_s: float, max_wait_s: float, max_lines: int, max_bytes: int) -> bool:
        """A batch's worth waits, requests stopped coming (never a wait for a size that cannot
        come), or the oldest has waited long enough."""
        now = time.monotonic()
        return bool(self._lines) and (
            len(self._lines) >= max_lines
            or self._bytes >= max_bytes
            or now - self.last >= idle_s
            or now - self.oldest >= max_wait_s
        )

    def take(self, max_lines: int, max_bytes: int, one: bool = False) -> list[list[Line]]:
        """What waits, as batches within the limits; with `one`, only the first batch (the
        rest waits on, its age kept)."""
        batches: list[list[Line]] = []
        batch: list[Line] = []
        size = 0
        for key, line in self._lines:
            if batch and (len(batch) >= max_lines or size + len(line) > max_bytes):
                batches.append(batch)
                batch, size = [], 0
            batch.append((key, line))
            size += len(line)
        if batch:
            batches.append(batch)
        if one:
            batches = batches[:1]
        taken = sum(len(b) for b in batches)
        rest = self._lines[taken:]
        self._lines = rest
        self._keys = {key for key, _ in rest}
        self._bytes = sum(len(line) for _, line in rest)
        return batches
