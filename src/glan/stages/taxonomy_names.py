"""How two wordings of one taxonomy node are told apart from two nodes.

A small model writes "Arts & Humanities", "arts and humanity" and "Arts and Humanities."; all
three are one name. The key is the name's words, case-folded, without punctuation or "and"/"&",
each word in a crude singular form (the same form on both sides is all a key needs).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[^\W_]+")
_JOINERS = frozenset({"and", "the"})


def singular(word: str) -> str:
    """A crude singular: "studies" -> "study", "sciences" -> "science", "physics" stays."""
    if len(word) <= 3 or word.endswith(("ss", "us", "is", "ics")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def words(name: str) -> list[str]:
    return [singular(w) for w in _TOKEN.findall(name.casefold()) if w not in _JOINERS]


def name_key(name: str) -> str:
    return " ".join(words(name))
