"""Stand-in replies: what a dry run answers in place of a model (glan.rerun), so the walk goes
on below a request it would send and counts the calls that follow.

Each reply passes its stage's own schema, parser and hygiene checks (a re-ask would be counted
as a call), holds what the planner counts on (a listing lists `subjects_per_call` subjects, a
syllabus the middle of the configured numbers of sessions and concepts), is distinct per request (two
questions with one text would share one answer request, and one cache key), and is about as
long as the estimate's typical reply (glan.estimate.typical_tokens), so the prompts built from
it weigh what real ones would.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from glan.config import GenerateConfig
from glan.estimate import CHARS_PER_TOKEN
from glan.llm import ChatRequest


def reply_text(request: ChatRequest, cfg: GenerateConfig, tokens: float) -> str:
    """The stand-in reply to one of the walk's requests (told apart by its tag and schema),
    of about `tokens` tokens (its stage's typical reply: glan.estimate.typical_tokens)."""
    mark = request.cache_key("stand-in")[:10]
    size = int(tokens * CHARS_PER_TOKEN)
    if request.tag == "subjects":
        listing = _listing(mark, cfg, size)
        if request.json_schema is None:  # two_turn's free-text turn
            return "\n".join(f"- {s['name']}: {s['introduction']}" for s in listing)
        return _json({"subjects": listing})
    if request.tag == "syllabus":
        return _json(_syllabus(mark, cfg, size))
    if request.tag == "questions":
        return _json({"question": f"Stand-in question {mark}: {filler(mark, size)}?"})
    if request.tag == "answers":
        return f"Stand-in answer {mark}."
    raise ValueError(f"no stand-in reply for a {request.tag!r} request")


def _listing(mark: str, cfg: GenerateConfig, size: int) -> list[dict[str, Any]]:
    n = cfg.plan.subjects_per_call
    each = max(40, size // n - 60)
    return [
        {
            "name": f"Stand-in subject {mark}-{i}",
            "level": "intermediate",
            "introduction": filler(f"{mark}{i}", each // 2),
            "subtopics": [filler(f"{mark}{i}.{t}", each // 8) for t in range(4)],
        }
        for i in range(1, n + 1)
    ]


def _syllabus(mark: str, cfg: GenerateConfig, size: int) -> dict[str, Any]:
    s = cfg.syllabus
    sessions = (s.min_sessions + s.max_sessions + 1) // 2  # the middle, rounded up
    concepts = (s.min_concepts + s.max_concepts + 1) // 2
    # The estimate's shape: an introduction of ~150 tokens, then ~25 tokens of title and
    # description and ~6 tokens a concept per session.
    intro = min(1200, max(40, size - sessions * (100 + concepts * 24)))
    return {
        "introduction": filler(mark, intro),
        "objectives": [filler(f"{mark}o", 60)],
        "outcomes": [filler(f"{mark}u", 60)],
        "sessions": [
            {
                "title": f"Part {j} {filler(f'{mark}t{j}', 24)}",
                "description": filler(f"{mark}d{j}", 60),
                "concepts": [
                    f"idea {j}.{c} {filler(f'{mark}c{j}.{c}', 12)}" for c in range(concepts)
                ],
            }
            for j in range(1, sessions + 1)
        ],
    }


# Bytes to letters, about one in six to a space: made-up words of four or five letters.
_LETTERS = bytes(ord("a") + b % 32 if b % 32 < 26 else ord(" ") for b in range(256))


def filler(seed: str, chars: int) -> str:
    """About `chars` characters of made-up words, different for each seed: letters only, which
    no hygiene check takes for debris, a loop or a reference to the course."""
    text = hashlib.shake_256(seed.encode()).digest(chars).translate(_LETTERS).decode()
    return " ".join(text.split()) or "filler"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
