"""Text normalisation shared by dedup and decontamination.

Matching must survive case, punctuation, whitespace and number formatting: "1,000" and "1000",
"3.50" and "3.5", "twenty-five" and "25" all become the same tokens.
"""

from __future__ import annotations

import re
import unicodedata

_UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_TRAILING_ZEROS = re.compile(r"(\d+)\.(\d*?)0+\b")
_COMPOUND = re.compile(r"\b(" + "|".join(_TENS) + r")[\s-]+(" + "|".join(_UNITS[1:10]) + r")\b")
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")


def _compound(match: re.Match[str]) -> str:
    return str(NUMBER_WORDS[match.group(1)] + NUMBER_WORDS[match.group(2)])


_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NUMBER_TEXT = {str(v) for v in NUMBER_WORDS.values()}
_HAS_DIGIT = re.compile(r"\d")
_HAS_TENS = re.compile(r"\b(?:" + "|".join(_TENS) + r")\b")
_WORD_TO_NUMBER = {w: str(n) for w, n in NUMBER_WORDS.items()}


def words(text: str) -> list[str]:
    """Lower-case word tokens with numbers in one canonical spelling.

    On the hot path of decontamination (millions of records): each rewrite runs only when the
    text can need it.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    if "," in text:
        text = _THOUSANDS.sub("", text)
    if "." in text and _HAS_DIGIT.search(text):
        text = _TRAILING_ZEROS.sub(
            lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), text
        )
    if "ty" in text and _HAS_TENS.search(text):  # every tens word ends in "ty"
        text = _COMPOUND.sub(_compound, text)
    get = _WORD_TO_NUMBER.get
    out = [get(w, w) for w in _WORD.findall(text)]
    if "hundred" in text or "thousand" in text or "million" in text:
        merged: list[str] = []
        for w in out:
            if w in _SCALES and merged and merged[-1].isdigit():  # "3 thousand" -> "3000"
                merged[-1] = str(int(merged[-1]) * _SCALES[w])
            else:
                merged.append(w)
        out = merged
    return out


def canonical(text: str) -> str:
    return " ".join(words(text))
