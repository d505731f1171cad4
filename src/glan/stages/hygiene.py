"""Checks that turn a small model's unusable replies into re-asks instead of records.

A schema-valid reply can still be junk: strings that are JSON debris (`"] ,"`), a question
that repeats the prompt's own instructions, one that points at "Session 5" of a syllabus the
student never sees, or an answer stuck in a loop. Each check returns the reason to tell the
model in the re-ask, or None. They are pure functions of text, cheap enough for every reply.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]{2,}")
# A syllabus-bound question: the student sees only the question, never the course material.
_NOT_STANDALONE = re.compile(
    r"\b(?:session|lecture|class)\s+\d+\b|\b(?:the|this|our|your)\s+(?:syllabus|course"
    r"|curriculum|key concepts? (?:above|listed|given))\b|\b(?:above|listed) (?:concepts|sessions)\b",
    re.IGNORECASE,
)


def is_debris(text: str) -> bool:
    """True for a string with no real word in it: brackets, commas, quotes, lone letters."""
    return _WORD.search(text) is None


def debris_in(values: list[str]) -> str | None:
    for value in values:
        if is_debris(value):
            return f"{value!r} is not text: every string must be real words"
    return None


def _sentences(text: str) -> list[str]:
    return [s.strip().casefold() for s in re.split(r"(?<=[.!?:])\s+|\n", text) if s.strip()]


def echoed_instruction(reply: str, instructions: list[str]) -> str | None:
    """The first instruction sentence the reply copies (a model repeating its prompt)."""
    folded = " ".join(reply.casefold().split())
    for sentence in instructions:
        words = sentence.split()
        if len(words) >= 6 and " ".join(words) in folded:
            return sentence
    return None


def instruction_sentences(template_text: str) -> list[str]:
    """The fixed sentences of a prompt template (those without a {placeholder})."""
    return [" ".join(s.split()) for s in _sentences(template_text) if "{" not in s]


def not_standalone(question: str) -> str | None:
    match = _NOT_STANDALONE.search(question)
    if match:
        return (
            f"the question mentions {match.group(0)!r}: the student sees only the question, "
            "so it must not refer to sessions, the course or the syllabus"
        )
    return None


def repetitive(text: str, n: int = 6, min_distinct: float = 0.5) -> str | None:
    """A reply whose word n-grams are mostly repeats is a generation loop, not an answer."""
    words = text.split()
    if len(words) < 60:
        return None
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    share = len(set(grams)) / len(grams)
    if share < min_distinct:
        return f"the reply repeats itself ({share:.0%} of its phrases are distinct)"
    return None
