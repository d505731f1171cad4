"""Checks that turn a small model's unusable replies into re-asks instead of records.

A schema-valid reply can still be junk: strings that are JSON debris (`"] ,"`), a question
that repeats the prompt's own instructions, one that points at "Session 5" of a syllabus the
student never sees, or an answer stuck in a loop. Each check returns the reason to tell the
model in the re-ask, or None. They are pure functions of text, cheap enough for every reply.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]{2,}")
# What a course is cut into. A small model cites them by number ("in sessions 2 and 4",
# "lectures 1-3", "Chapter 5") or by position ("the previous lesson"). Not "week": a question
# may well say "in week 12 of a pregnancy".
_PART = r"(?:session|lecture|class|lesson|unit|module|chapter|topic)(?:e?s)?"
_NUMBERS = r"\d+(?:\s*(?:,|-|–|to|and|&|or)\s*\d+)*"
# Numbered names that are the subject matter, not a course's parts.
_NAMED = r"(?!\s*(?:bankruptcy|lever|felony|misdemeanou?r|medical devices?))"
# "this class" or "this module" is a coding question's own object, so only the parts no
# program has are matched after this/that/our/your.
_TAUGHT = r"(?:session|lecture|lesson|chapter)s?"
# "the 4th unit", "the third lecture"; a word ordinal only before parts no book has ("the
# first chapter" of a novel is fine).
_ORDINAL = r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth)"
# A syllabus-bound question: the student sees only the question, never the course material.
_NOT_STANDALONE = re.compile(
    rf"\b{_PART}\s+{_NUMBERS}\b{_NAMED}"
    rf"|\b(?:previous|preceding|last|next|earlier|upcoming|today's)\s+{_PART}\b"
    rf"|\b(?:this|that|these|those|our|your)\s+{_TAUGHT}\b"
    rf"|\b\d+(?:st|nd|rd|th)\s+{_PART}\b|\b{_ORDINAL}\s+(?:session|lecture|lesson)s?\b"
    r"|\b(?:the|this|our|your)\s+(?:syllabus|course"
    r"|curriculum|key concepts? (?:above|listed|given))\b"
    r"|\b(?:above|listed) (?:concepts|sessions|topics)\b",
    re.IGNORECASE,
)


def is_debris(text: str) -> bool:
    """True for a string with no real word in it: brackets, commas, quotes, lone letters."""
    return _WORD.search(text) is None


def tidy(text: str) -> str:
    """Whitespace collapsed and stray punctuation trimmed from the ends: `"Optics ,"` is
    `"Optics"` (small models leave JSON separators inside strings)."""
    return " ".join(text.split()).strip(" ,;:.-\"'`[]{}")


ECHO_WORDS = 7  # this many words in a row copied from the prompt's instructions is an echo


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+(?:'[^\W_]+)?", text.casefold())


def instruction_ngrams(template_text: str) -> frozenset[tuple[str, ...]]:
    """The word 7-grams of a prompt template's fixed text (placeholders split it into pieces
    that are never joined, so nothing a placeholder filled in can count as an echo)."""
    grams: set[tuple[str, ...]] = set()
    for piece in re.split(r"\{[^}]*\}", template_text):
        words = _words(piece)
        grams.update(tuple(words[i : i + ECHO_WORDS]) for i in range(len(words) - ECHO_WORDS + 1))
    return frozenset(grams)


def echoed_instruction(reply: str, instructions: frozenset[tuple[str, ...]]) -> str | None:
    """The first run of instruction words the reply copies (a model repeating its prompt)."""
    words = _words(reply)
    for i in range(len(words) - ECHO_WORDS + 1):
        gram = tuple(words[i : i + ECHO_WORDS])
        if gram in instructions:
            return " ".join(gram)
    return None


def not_standalone(question: str) -> str | None:
    match = _NOT_STANDALONE.search(question)
    if match:
        return (
            f"the question mentions {match.group(0)!r}: the student sees only the question, "
            "so it must not refer to sessions, the course or the syllabus"
        )
    return None


# A leading clause that only says where the material came from: "Based on the information
# provided in sessions 2 and 4,", "According to session 3,", "Using the concepts from lectures
# 1 and 2,". The question after it usually stands alone, so it is cut rather than re-asked.
_LEAD = re.compile(
    r"^\s*(?:based on|according to|using|drawing (?:on|from|upon)|building on|in light of"
    r"|with reference to|referring to|as \w+(?: \w+)? (?:in|during|on|from|throughout)"
    r"|recalling|reflecting on|considering|applying|following|given|having \w+"
    r"|in|during|from|after|with|for|by)\b[^,.;:?!]{0,160},\s*",
    re.IGNORECASE,
)
_MIN_REST_WORDS = 4  # what is left must still be a question, not a stub


def strip_reference(question: str) -> str:
    """The question without a leading clause that points at the course, re-capitalised; the
    question unchanged when it has no such clause or nothing standalone would be left."""
    lead = _LEAD.match(question)
    if lead is None or not _NOT_STANDALONE.search(lead.group(0)):
        return question
    rest = question[lead.end() :].strip()
    if len(rest.split()) < _MIN_REST_WORDS or _NOT_STANDALONE.search(rest):
        return question
    if rest[0].islower() and not rest[1:2].isupper():  # "how can" -> "How can", "pH" stays
        rest = rest[0].upper() + rest[1:]
    return rest


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
