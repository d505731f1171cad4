"""A fake GLAN-Test judge whose scores are known: each answer says its own quality ("an answer
of quality 7") and the judge scores it that, alone or side by side (with an optional bonus for
the answer shown first, a planted position bias)."""

from __future__ import annotations

import re
from typing import Any


def quality(answer: str) -> int:
    found = re.search(r"of quality (\d+)", answer)
    return int(found.group(1)) if found else 1  # "(no answer)"


def between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def judge_reply(prompt: str, first_bonus: int = 0) -> dict[str, Any]:
    """The judge's reply to an absolute or a pairwise prompt, scoring each answer its quality."""
    if "[The start of the answer]" in prompt:
        answer = between(prompt, "[The start of the answer]", "[The end of the answer]")
        return {"explanation": "known score", "score": quality(answer)}
    first = between(prompt, "[The start of Assistant 1's answer]", "[The end of Assistant 1's")
    second = between(prompt, "[The start of Assistant 2's answer]", "[The end of Assistant 2's")
    return {
        "explanation": "known",
        "score_1": quality(first) + first_bonus,
        "score_2": quality(second),
    }
