"""Benchmark decontamination by word n-gram overlap.

A record is contaminated by a benchmark item when it contains at least `min_overlap` of the
item's word n-grams (after normalisation: case, punctuation, whitespace, number spelling).
Measuring the share of the *item's* n-grams makes the rule indifferent to context added around a
copied item (a sentence before it, an instruction after it) and tolerant of light edits, while a
look-alike on the same topic shares few n-grams.

Default n = 8: shorter n-grams are shared by chance between unrelated texts ("what is the value
of the"), longer ones leave a 10-15 word benchmark question (common in MMLU) with too few n-grams
for one edit to be survivable. Items shorter than n words (down to `min_words`) are matched on
all of their words as a single n-gram.

Speed: records are processed in batches; word hashes are combined into n-gram hashes and
looked up in the index with numpy, so Python only touches the rare records with a hit.

Word hashes are stable across processes and Python versions (8 bytes of BLAKE2b over the
word's UTF-8), never Python's per-process `hash()`: an index built or pickled in one process
must catch the same items in another. A per-index memo keeps the cost near `hash()`'s, since
words repeat (a vocabulary is far smaller than a corpus).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b

import numpy as np

from glan.post.benchmarks import BenchmarkItem
from glan.post.normalize import words

_PRIME = np.uint64(1_000_003)
_TABLE_SIZE = 1 << 24
_TABLE_MASK = np.uint64(_TABLE_SIZE - 1)


@dataclass(frozen=True)
class Contamination:
    benchmark: str
    item_id: str
    overlap: float
    item_text: str


_MEMO_LIMIT = 2_000_000  # words remembered per process before the memo starts over


def _stable_hash(word: str) -> int:
    return int.from_bytes(blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


class WordHasher:
    """Stable 64-bit word hashes, memoised (the memo is a cache only: never part of a result)."""

    def __init__(self) -> None:
        self._memo: dict[str, int] = {}

    def __call__(self, tokens: list[str]) -> np.ndarray:
        memo = self._memo
        if len(memo) > _MEMO_LIMIT:
            memo.clear()
        for word in set(tokens).difference(memo):
            memo[word] = _stable_hash(word)
        return np.fromiter(map(memo.__getitem__, tokens), dtype=np.uint64, count=len(tokens))


def _gram_hashes(
    word_hashes: np.ndarray, starts: np.ndarray, lengths: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """n-gram hashes of several token sequences laid end to end; returns (hashes, owner index)."""
    total = len(word_hashes)
    if total < n:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    acc = np.zeros(total - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            acc = acc * _PRIME + word_hashes[j : total - n + 1 + j]
        acc ^= np.uint64(n)  # grams of different sizes never collide by construction alone
    owner = np.repeat(np.arange(len(lengths)), lengths)[: total - n + 1]
    # A gram is valid when it does not cross into the next sequence.
    end_of_owner = (starts + lengths)[owner]
    valid = np.arange(total - n + 1) + n <= end_of_owner
    return acc[valid], owner[valid]


class Decontaminator:
    def __init__(
        self,
        items: Iterable[BenchmarkItem],
        n: int = 8,
        min_overlap: float = 0.5,
        min_words: int = 4,
    ) -> None:
        self.n = n
        self._word_hashes = WordHasher()
        self.min_overlap = min_overlap
        self.items: list[BenchmarkItem] = []
        self.sizes: list[int] = []
        postings: dict[int, list[int]] = defaultdict(list)
        self.gram_sizes: set[int] = set()
        for item in items:
            tokens = words(item.text)
            if len(tokens) < min_words:
                continue
            k = min(n, len(tokens))
            hashes, _ = _gram_hashes(
                self._word_hashes(tokens), np.array([0]), np.array([len(tokens)]), k
            )
            grams = set(hashes.tolist())
            idx = len(self.items)
            self.items.append(item)
            self.sizes.append(len(grams))
            self.gram_sizes.add(k)
            for g in grams:
                postings[g].append(idx)
        self.postings = dict(postings)
        self._keys = np.array(sorted(self.postings), dtype=np.uint64)
        # A presence table on the low hash bits answers most lookups with one memory access;
        # only its hits (true ones plus ~3% false) go on to the exact binary search.
        self._present = np.zeros(_TABLE_SIZE, dtype=np.bool_)
        self._present[self._keys & _TABLE_MASK] = True

    def __len__(self) -> int:
        return len(self.items)

    def check_batch(self, texts: list[str]) -> list[Contamination | None]:
        """The best-matching benchmark item for each text, or None."""
        token_lists = [words(t) for t in texts]
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(texts))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(texts) else lengths
        flat = self._word_hashes([tok for toks in token_lists for tok in toks])
        hit_grams: dict[int, list[int]] = defaultdict(list)
        for k in self.gram_sizes:
            hashes, owner = _gram_hashes(flat, starts, lengths, k)
            if not len(hashes) or not len(self._keys):
                continue
            maybe = self._present[hashes & _TABLE_MASK]
            hashes, owner = hashes[maybe], owner[maybe]
            pos = np.searchsorted(self._keys, hashes)
            pos[pos == len(self._keys)] = 0
            hit = self._keys[pos] == hashes
            for g, o in zip(hashes[hit].tolist(), owner[hit].tolist(), strict=True):
                hit_grams[o].append(g)
        out: list[Contamination | None] = [None] * len(texts)
        for record, grams in hit_grams.items():
            counts = Counter(idx for g in set(grams) for idx in self.postings[g])
            idx, shared = max(counts.items(), key=lambda kv: (kv[1] / self.sizes[kv[0]], -kv[0]))
            overlap = shared / self.sizes[idx]
            if overlap >= self.min_overlap:
                item = self.items[idx]
                out[record] = Contamination(
                    item.benchmark, item.item_id, round(overlap, 3), item.text
                )
        return out

    def check(self, text: str) -> Contamination | None:
        return self.check_batch([text])[0]


_WORKER: Decontaminator | None = None


def _check_in_worker(texts: list[str]) -> list[Contamination | None]:
    assert _WORKER is not None
    return _WORKER.check_batch(texts)


class ParallelChecker:
    """Batches checked in forked worker processes, results in submission order.

    The index is built once in the parent and shared copy-on-write (its hashes are stable, so
    any process agrees with it). Where fork is unavailable (or workers <= 1) batches are checked inline.
    """

    def __init__(self, decon: Decontaminator, workers: int) -> None:
        import multiprocessing as mp

        self.decon = decon
        self.pool = None
        if workers > 1 and "fork" in mp.get_all_start_methods():
            global _WORKER
            _WORKER = decon
            self.pool = mp.get_context("fork").Pool(workers)
            _WORKER = None
        self.workers = max(1, workers)

    def submit(self, texts: list[str]):
        if self.pool is None:
            return self.decon.check_batch(texts)
        return self.pool.apply_async(_check_in_worker, (texts,))

    @staticmethod
    def result(handle) -> list[Contamination | None]:
        return handle if isinstance(handle, list) else handle.get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
