"""Stand-in replies: what a dry run answers in place of a model (glan.rerun), so the walk goes
on below a request it would send and counts the calls that follow.

Each reply passes its stage's own schema, parser and hygiene checks (a re-ask would be counted
as a call), is of a `Shape` (as many subjects, sessions and concepts as the plan counts on, or
as the run's own replies had), is distinct per request (two questions with one text would share
one answer request, and one cache key), and is about as long as the estimate's typical reply
(glan.estimate.typical_tokens), so the prompts built from it weigh what real ones would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import orjson

from glan.config import GenerateConfig
from glan.estimate import CHARS_PER_TOKEN, typical_tokens
from glan.llm import ChatRequest


@dataclass(frozen=True)
class Shape:
    """How large stand-in replies are: the subjects a listing names, the sessions of a
    syllabus and the concepts of a session, and each stage's reply in tokens."""

    subjects: int
    sessions: int
    concepts: int
    tokens: dict[str, float]

    @classmethod
    def planned(cls, cfg: GenerateConfig) -> Shape:
        """What the plan counts on: full listings, syllabi of the middle of the configured
        numbers of sessions and concepts (rounded up), replies of typical lengths."""
        s = cfg.syllabus
        return cls(
            subjects=cfg.plan.subjects_per_call,
            sessions=(s.min_sessions + s.max_sessions + 1) // 2,
            concepts=(s.min_concepts + s.max_concepts + 1) // 2,
            tokens={stage: reply for stage, (_, reply) in typical_tokens(cfg).items()},
        )

    def like(
        self,
        cfg: GenerateConfig,
        subjects: float | None,
        sessions: float | None,
        concepts: float | None,
    ) -> Shape:
        """This shape with the sizes a run's own replies had (None: not known), kept within
        what the config allows, and replies as long as such sizes make them."""
        s = cfg.syllabus

        def within(value: float | None, low: int, high: int, default: int) -> int:
            return default if value is None else min(high, max(low, round(value)))

        n = within(subjects, 1, cfg.plan.subjects_per_call, self.subjects)
        sessions_n = within(sessions, s.min_sessions, s.max_sessions, self.sessions)
        concepts_n = within(concepts, s.min_concepts, s.max_concepts, self.concepts)
        sizes = (
            n if subjects is not None else None,
            sessions_n if sessions is not None else None,
            concepts_n if concepts is not None else None,
        )
        tokens = {stage: reply for stage, (_, reply) in typical_tokens(cfg, *sizes).items()}
        return replace(self, subjects=n, sessions=sessions_n, concepts=concepts_n, tokens=tokens)


def reply_text(request: ChatRequest, shape: Shape) -> str:
    """The stand-in reply to one of the walk's requests (told apart by its tag and schema)."""
    mark = request.cache_key("stand-in")[:10]
    size = int(shape.tokens[request.tag] * CHARS_PER_TOKEN)
    if request.tag == "subjects":
        listing = _listing(mark, shape.subjects, size)
        if request.json_schema is None:  # two_turn's free-text turn
            return "\n".join(f"- {s['name']}: {s['introduction']}" for s in listing)
        return _json({"subjects": listing})
    if request.tag == "syllabus":
        return _json(_syllabus(mark, shape, size))
    if request.tag == "questions":
        return _json({"question": f"Stand-in question {mark}: {filler(mark, size)}?"})
    if request.tag == "answers":
        return f"Stand-in answer {mark}."
    raise ValueError(f"no stand-in reply for a {request.tag!r} request")


def _listing(mark: str, n: int, size: int) -> list[dict[str, Any]]:
    each = max(40, size // n - 60)
    return [
        {
            "name": f"Stand-in subject {mark}-{i}",
            "level": "intermediate",
            "introduction": filler(f"{mark}{i}", min(each // 2, 600)),  # as the parser trims
            "subtopics": [filler(f"{mark}{i}.{t}", min(each // 8, 60)) for t in range(4)],
        }
        for i in range(1, n + 1)
    ]


def _syllabus(mark: str, shape: Shape, size: int) -> dict[str, Any]:
    sessions, concepts = shape.sessions, shape.concepts
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
