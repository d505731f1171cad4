"""Stage 2: a syllabus per subject, broken into class sessions with key concepts.

The parser repairs what is cosmetic (an over-long introduction is trimmed, a repeated session
dropped, a repeated concept dropped) and rejects what is not (too few distinct sessions left,
strings that are JSON debris), so one long sentence never costs a subject.
"""

from __future__ import annotations

from typing import Any

from glan.config import GenerateConfig
from glan.llm import ChatRequest, ChatResponse, user
from glan.prompts import render
from glan.records import Session, Subject, Syllabus
from glan.stages import hygiene
from glan.stages.errors import Rejected

MAX_INTRODUCTION = 1200
MAX_DESCRIPTION = 500
MAX_ITEM = 300


def schema(cfg: GenerateConfig) -> dict[str, Any]:
    """minItems on sessions and concepts: a syllabus too short, or a session without concepts,
    fails validation and is re-asked by the client. Long text has no maxLength (see
    questions.SCHEMA): it is trimmed by the parser."""
    s = cfg.syllabus
    short = {"type": "string", "minLength": 2, "maxLength": 100}
    return {
        "type": "object",
        "properties": {
            "introduction": {"type": "string"},
            "objectives": {
                "type": "array",
                "minItems": 1,
                "maxItems": 5,
                "items": {"type": "string"},
            },
            "outcomes": {
                "type": "array",
                "minItems": 1,
                "maxItems": 5,
                "items": {"type": "string"},
            },
            "sessions": {
                "type": "array",
                "minItems": s.min_sessions,
                "maxItems": s.max_sessions,
                "items": {
                    "type": "object",
                    "properties": {
                        "title": short,
                        "description": {"type": "string"},
                        "concepts": {
                            "type": "array",
                            "minItems": s.min_concepts,
                            "maxItems": s.max_concepts,
                            "items": short,
                        },
                    },
                    "required": ["title", "description", "concepts"],
                },
            },
        },
        "required": ["introduction", "objectives", "outcomes", "sessions"],
    }


def prompt(subject: Subject, cfg: GenerateConfig) -> str:
    return render(
        "syllabus",
        discipline=subject.discipline,
        field=subject.field,
        subfield=subject.subfield,
        level=subject.level,
        subject=subject.name,
        introduction=subject.introduction or "(none given)",
        subtopics="; ".join(subject.subtopics) or "(none given)",
        min_sessions=cfg.syllabus.min_sessions,
        max_sessions=cfg.syllabus.max_sessions,
    )


def build(subject: Subject, cfg: GenerateConfig, sample_index: int = 0) -> ChatRequest:
    return ChatRequest(
        messages=user(prompt(subject, cfg)),
        json_schema=schema(cfg),
        schema_name="syllabus",
        seed=cfg.seed,
        sample_index=sample_index,
        tag="syllabus",
        **cfg.sampling_for("syllabus"),
    )


def _trim(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "..."


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def parse(subject: Subject, reply: ChatResponse, cfg: GenerateConfig) -> Syllabus:
    parsed = reply.parsed
    sessions: list[Session] = []
    titles: set[str] = set()
    for s in parsed["sessions"]:
        title = _trim(hygiene.tidy(s["title"]), 100)
        unique: dict[str, str] = {}  # by folded text: "Optics" and "optics ," are one concept
        for c in s["concepts"]:
            c = _trim(hygiene.tidy(c), 100)
            if c and not hygiene.is_debris(c):
                unique.setdefault(_key(c), c)
        concepts = list(unique.values())
        if hygiene.is_debris(title) or _key(title) in titles or not concepts:
            continue  # a repeated or empty session adds nothing to sample from
        titles.add(_key(title))
        sessions.append(
            Session(
                title=title, description=_trim(s["description"], MAX_DESCRIPTION), concepts=concepts
            )
        )
    if len(sessions) < cfg.syllabus.min_sessions:
        raise Rejected(
            "too_few_sessions",
            f"only {len(sessions)} distinct class sessions with real titles and key concepts; "
            f"give at least {cfg.syllabus.min_sessions}, each with a different title",
        )
    return Syllabus(
        field=subject.field,
        subfield=subject.subfield,
        discipline=subject.discipline,
        subject=subject.name,
        level=subject.level,
        introduction=_trim(parsed["introduction"], MAX_INTRODUCTION),
        objectives=[_trim(o, MAX_ITEM) for o in parsed["objectives"] if not hygiene.is_debris(o)],
        outcomes=[_trim(o, MAX_ITEM) for o in parsed["outcomes"] if not hygiene.is_debris(o)],
        sessions=sessions,
    )
