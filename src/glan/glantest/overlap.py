"""The exam's disjointness check: no exam question may be an exact or near duplicate of a
training question, nor of another exam question.

It is `glan clean`'s dedup (glan.post.dedup: exact after normalisation, then MinHash-LSH over
word trigrams, same defaults), with the training questions seen first: an exam question that
dedup would drop is one the run already holds (or one the exam already asked).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from glan.post.clean import CleanSettings, read_records
from glan.post.dedup import Deduplicator

_EXAM = "exam:"  # exam ids live beside training ids in one index: never mistaken for them


@dataclass(frozen=True)
class Overlap:
    exam_id: str
    of: str  # the training record's id, or the earlier exam item's
    kind: str  # exact or near
    source: str  # training or exam

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_questions(path: Path) -> Iterator[tuple[str, str]]:
    """(id, question) of each record of an instructions.jsonl: its user turns."""
    for number, record in enumerate(read_records(path)):
        text = "\n".join(
            m.get("content", "") for m in record.get("messages", []) if m.get("role") == "user"
        )
        yield str(record.get("id", f"line-{number + 1}")), text


class OverlapChecker:
    def __init__(
        self, training: Iterable[tuple[str, str]], settings: CleanSettings | None = None
    ) -> None:
        s = settings or CleanSettings()
        self.settings = s
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


def overlaps(training: Iterable[tuple[str, str]], items: list[dict[str, Any]]) -> list[Overlap]:
    """Every exam item that repeats a training question or an earlier exam item."""
    checker = OverlapChecker(training)
    found = (checker.check(item["id"], item["question"]) for item in items)
    return [o for o in found if o is not None]
