"""Exam questions against training questions by embedding: a paraphrase shares few word
trigrams with its original (MinHash misses it) but lies close to it in embedding space.

The training questions are encoded once (glan.post.semantic's encoder) and kept in
glan.post.semantic_store's bounded store (beyond half the memory budget, in a temporary
file); each batch of exam questions is compared with all of them, block by block, and a
question whose best cosine reaches the threshold is reported with that training question.
Unlike `glan clean --semantic`, nothing is added as it goes: exam questions are checked only
against the training ones.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from glan.post.semantic import DEFAULT_MEMORY, Encoder, unit_rows
from glan.post.semantic_store import KeptIds, KeptVectors

BATCH = 256  # texts encoded at once


class SemanticOverlap:
    def __init__(
        self, encode: Encoder, threshold: float, memory_bytes: int = DEFAULT_MEMORY
    ) -> None:
        self.encode = encode
        self.threshold = threshold
        # Kept vectors beyond half the budget, and the ids, go to files here.
        self._work = tempfile.TemporaryDirectory(prefix="glan-test-semantic-")
        self._folder = Path(self._work.name)
        self._memory = memory_bytes
        self._vectors: KeptVectors | None = None  # made at the first batch: its width known
        self._ids = KeptIds(self._folder)
        self.training = 0

    def add_training(self, pairs: Iterable[tuple[str, str]]) -> None:
        """(id, question) pairs, encoded BATCH at a time."""
        ids: list[str] = []
        texts: list[str] = []
        for record_id, text in pairs:
            ids.append(record_id)
            texts.append(text)
            if len(texts) == BATCH:
                self._add(ids, texts)
                ids, texts = [], []
        if texts:
            self._add(ids, texts)

    def _add(self, ids: list[str], texts: list[str]) -> None:
        vectors = unit_rows(self.encode(texts))
        if self._vectors is None:
            self._vectors = KeptVectors(vectors.shape[1], self._memory, self._folder)
        self._vectors.append(vectors)
        self._ids.extend(ids)
        self.training += len(ids)

    def check(self, texts: list[str]) -> list[tuple[str, float] | None]:
        """For each text, (the closest training question's id, the cosine) when the cosine
        reaches the threshold, else None."""
        if not texts or self._vectors is None:
            return [None] * len(texts)
        queries = np.concatenate(
            [unit_rows(self.encode(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]
        )
        best = np.full(len(queries), -np.inf)
        of = np.full(len(queries), -1, dtype=np.int64)
        rows = self._vectors.block_rows(len(queries))
        for start, block in self._vectors.blocks(rows):
            sims = queries @ block.T
            at = sims.argmax(axis=1)
            top = sims[np.arange(len(queries)), at]
            better = top > best  # an equal cosine keeps the earlier training question
            best[better], of[better] = top[better], start + at[better]
        return [
            (self._ids.get(o), round(float(s), 4)) if s >= self.threshold else None
            for o, s in zip(of.tolist(), best.tolist(), strict=True)
        ]

    def close(self) -> None:
        if self._vectors is not None:
            self._vectors.close()
        self._ids.close()
        self._work.cleanup()
