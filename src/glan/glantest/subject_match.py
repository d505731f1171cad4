"""Is a held-out subject too close to a subject of the run? "Principles of Microeconomics" is
the run's "Introduction to Microeconomics" under another name, and an exam on it is not held
out.

Three checks, in order, against every subject name of the run (in any discipline):
- **name**: the same words after normalising (case, punctuation, hyphens, filler such as "Introduction
  to", "Principles of", "Advanced", level marks such as "II" or "101", stop words, plurals);
- **tokens**: the Jaccard similarity of the two normalised word sets reaches `token_threshold`
  ("Retail Store Operations Management" against "Retail Operations Management": 3/4; two of
  three words are not enough: "American" and "African American Literature");
- **embedding** (with glan[semantic]): the cosine of the normalised names' embeddings reaches
  `subject_threshold`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from glan.glantest.holdout import HoldoutSettings
from glan.post.semantic import Encoder, unit_rows

# Words that name no content. Not here, though they often read as filler: "general",
# "special", "elementary", "survey", "level", "part" name courses of their own ("General" and
# "Special Relativity", "Elementary" and "Special Education", "Survey Research Methods",
# "Level Design", "Part Design").
_FILLER = """introduction intro introductory principle fundamental foundation basic element
    essential advanced intermediate beginning overview topic selected course concept
    to of in and the a an for on with at"""
FILLER = frozenset(_FILLER.split())  # singular: words are stemmed first
LEVEL = re.compile(r"\d+[a-z]?|i|ii|iii|iv|v|vi|vii|viii|ix|x|honor|honour")
_WORD = re.compile(r"[^\W_]+")


def _stem(word: str) -> str:
    """A plural's singular, roughly ("principles", "topics"); applied to both sides alike."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def words(name: str, stem: bool = True) -> tuple[str, ...]:
    """The name's meaningful words, in order: case, filler, levels and (with `stem`) plurals
    removed (all of them, when nothing else is left: "Introduction" stays itself)."""
    every = _WORD.findall(name.casefold().replace("-", ""))  # "Micro-economics" is one word
    kept = [w for w in every if _stem(w) not in FILLER and not LEVEL.fullmatch(w)] or every
    return tuple(dict.fromkeys(map(_stem, kept) if stem else kept))


def embedded(name: str) -> str:
    """What is embedded of a name: its meaningful words as written (a stem embeds badly)."""
    return " ".join(words(name, stem=False))


@dataclass(frozen=True)
class SubjectMatch:
    subject: str  # the exam's (or listed) subject
    close_to: str  # the run's subject
    check: str  # name, tokens or embedding
    score: float  # 1.0 for name; the Jaccard or the cosine

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SubjectScreen:
    """The run's subject names, indexed for the three checks."""

    def __init__(
        self,
        run_names: Iterable[str],
        settings: HoldoutSettings | None = None,
        encode: Encoder | None = None,
    ) -> None:
        self.settings = settings or HoldoutSettings()
        self.encode = encode
        self.names: dict[tuple[str, ...], str] = {}  # sorted stems -> the first run name
        for name in run_names:
            self.names.setdefault(tuple(sorted(words(name))), name)
        self._by_word: dict[str, list[tuple[str, ...]]] = {}
        for key in self.names:
            for w in key:
                self._by_word.setdefault(w, []).append(key)
        self._keys = list(self.names)
        self._vectors = (
            unit_rows(encode([embedded(self.names[k]) for k in self._keys]))
            if encode is not None and self._keys
            else None
        )

    @property
    def checks(self) -> list[str]:
        return ["name", "tokens", *(["embedding"] if self.encode is not None else [])]

    def __len__(self) -> int:
        return len(self.names)

    def match(self, names: list[str]) -> list[SubjectMatch | None]:
        """For each name, the run subject it is too close to (the first check that finds one),
        or None."""
        found: list[SubjectMatch | None] = [self._lexical(n) for n in names]
        if self._vectors is None:
            return found
        todo = [i for i, f in enumerate(found) if f is None]
        if todo:
            queries = unit_rows(self.encode([embedded(names[i]) for i in todo]))
            sims = queries @ self._vectors.T
            best = sims.argmax(axis=1)
            for i, j, q in zip(todo, best.tolist(), range(len(todo)), strict=True):
                score = float(sims[q, j])
                if score >= self.settings.subject_threshold:
                    found[i] = SubjectMatch(
                        names[i], self.names[self._keys[j]], "embedding", round(score, 4)
                    )
        return found

    def _lexical(self, name: str) -> SubjectMatch | None:
        key = tuple(sorted(words(name)))
        if key in self.names:
            return SubjectMatch(name, self.names[key], "name", 1.0)
        mine = set(key)
        best: tuple[float, tuple[str, ...]] | None = None
        for other in {k for w in key for k in self._by_word.get(w, ())}:
            score = len(mine & set(other)) / len(mine | set(other))
            if best is None or (score, other) > best:
                best = (score, other)
        if best is not None and best[0] >= self.settings.token_threshold:
            return SubjectMatch(name, self.names[best[1]], "tokens", round(best[0], 4))
        return None
