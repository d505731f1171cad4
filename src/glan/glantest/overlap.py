"""The exam's disjointness check: no exam question may be an exact or near duplicate of a
training question, nor of another exam question; with glan[semantic], nor a paraphrase of a
training question.

Lexically it is `glan clean`'s dedup (glan.post.dedup: exact after normalisation, then
MinHash-LSH over word trigrams, same defaults), with the training questions seen first: an exam
question that dedup would drop is one the run already holds (or one the exam already asked).
By embedding (glan.glantest.semantic_overlap), a question whose cosine to a training question
reaches the threshold is one too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from glan.glantest.semantic_overlap import SemanticOverlap
from glan.post.clean import CleanSettings, read_records
from glan.post.dedup import Deduplicator

_EXAM = "exam:"  # exam ids live beside training ids in one index: never mistaken for them


@dataclass(frozen=True)
class Overlap:
    exam_id: str
    of: str  # the training record's id, or the earlier exam item's
    kind: str  # exact, near or semantic
    source: str  # training or exam
    score: float | None = None  # semantic: the cosine

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        if self.score is None:
            del found["score"]
        return found


def user_text(messages: Iterable[dict[str, Any]]) -> str:
    return "\n".join(m.get("content") or "" for m in messages if m.get("role") == "user")


def training_questions(path: Path) -> Iterator[tuple[str, str]]:
    """(id, question) of each record of an instructions.jsonl: its user turns."""
    for number, record in enumerate(read_records(path)):
        yield str(record.get("id", f"line-{number + 1}")), user_text(record.get("messages", []))


class OverlapChecker:
    """`semantic`: the training questions already encoded (None: the lexical checks only)."""

    def __init__(
        self,
        training: Iterable[tuple[str, str]],
        settings: CleanSettings | None = None,
        semantic: SemanticOverlap | None = None,
    ) -> None:
        s = settings or CleanSettings()
        self.settings = s
        self.semantic = semantic
        self._dedup = Deduplicator(s.near_threshold, s.num_perm, s.shingle, s.near_dedup)
        self.training = 0
        for record_id, text in training:
            self._dedup.check(record_id, text)
            self.training += 1

    def check(self, exam_id: str, question: str) -> Overlap | None:
        """None when the question is new; else what it repeats (it is then not remembered)."""
        dup = self._dedup.check(_EXAM + exam_id, question)
        if dup is None:
            return None
        if dup.of.startswith(_EXAM):
            return Overlap(exam_id, dup.of.removeprefix(_EXAM), dup.kind, "exam")
        return Overlap(exam_id, dup.of, dup.kind, "training")

    def check_items(self, items: list[dict[str, Any]]) -> list[Overlap | None]:
        """`check` for each item in order, then, for those still new, the embedding check."""
        found = [self.check(item["id"], item["question"]) for item in items]
        if self.semantic is None:
            return found
        todo = [i for i, f in enumerate(found) if f is None]
        close = self.semantic.check([items[i]["question"] for i in todo])
        for i, hit in zip(todo, close, strict=True):
            if hit is not None:
                found[i] = Overlap(items[i]["id"], hit[0], "semantic", "training", hit[1])
        return found


def overlaps(
    training: Iterable[tuple[str, str]],
    items: list[dict[str, Any]],
    semantic: SemanticOverlap | None = None,
) -> list[Overlap]:
    """Every exam item that repeats a training question or an earlier exam item."""
    return [o for o in OverlapChecker(training, semantic=semantic).check_items(items) if o]
