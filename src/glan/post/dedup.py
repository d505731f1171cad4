"""Duplicate removal over questions: exact (after normalisation), then MinHash-LSH near-duplicates.

This is the in-memory index (about 2.4 KB per kept record): `glan clean` uses the bounded-memory
path in glan.post.dedup_disk, which removes exactly the same records (a test compares them); this
one stays as its reference and for small interactive use.

rensa was chosen over datasketch by measurement (BENCHMARKS.md: ~37x the throughput with better
recall at the same threshold). Records are seen in file order and the first copy stays, so the
choice of survivor is deterministic. Shingles are word trigrams of the normalised text; the LSH
band layout puts the S-curve's midpoint at the threshold, and band collisions decide (storing
every signature for a verification pass would cost ~0.5 KB per record).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from rensa import RMinHash, RMinHashLSH

from glan.post.normalize import words


def shingles(tokens: list[str], n: int) -> list[str]:
    """Word n-grams of the normalised tokens (the whole text when it is shorter)."""
    if len(tokens) <= n:
        return [" ".join(tokens)]
    return list(map(" ".join, zip(*(tokens[i:] for i in range(n)), strict=False)))


def exact_key(tokens: list[str]) -> bytes:
    return hashlib.blake2b(" ".join(tokens).encode(), digest_size=16).digest()


def band_layout(threshold: float, num_perm: int) -> int:
    """The number of bands b (b * r = num_perm) whose threshold (1/b)**(1/r) is nearest."""
    options = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
    return min(options, key=lambda b: abs((1 / b) ** (b / num_perm) - threshold))


@dataclass(frozen=True)
class Duplicate:
    of: str  # id of the record that stays
    kind: str  # "exact" or "near"


class Deduplicator:
    def __init__(
        self, threshold: float = 0.7, num_perm: int = 128, shingle: int = 3, near: bool = True
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.num_perm = num_perm
        self.shingle = shingle
        self.near = near
        self._exact: dict[bytes, str] = {}
        self._lsh = RMinHashLSH(
            threshold=threshold, num_perm=num_perm, num_bands=band_layout(threshold, num_perm)
        )
        self._ids: list[str] = []

    def check(self, record_id: str, text: str) -> Duplicate | None:
        """Is this a duplicate of a record seen before? If not, remember it."""
        tokens = words(text)
        digest = exact_key(tokens)
        first = self._exact.get(digest)
        if first is not None:
            return Duplicate(first, "exact")
        self._exact[digest] = record_id
        if not self.near or not tokens:
            return None
        sig = RMinHash(num_perm=self.num_perm, seed=1)
        sig.update(shingles(tokens, self.shingle))
        candidates = self._lsh.query(sig)
        if candidates:
            return Duplicate(self._ids[min(candidates)], "near")
        self._lsh.insert(len(self._ids), sig)
        self._ids.append(record_id)
        return None


def expected_jaccard_after_edit(n_words: int, shingle: int = 3) -> float:
    """Jaccard of word-shingle sets after one word changes (for choosing a threshold)."""
    shingles = max(1, n_words - shingle + 1)
    changed = min(shingle, shingles)
    return (shingles - changed) / (shingles + changed) if shingles > changed else 0.0
