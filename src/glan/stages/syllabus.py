"""Stage 2: a syllabus per subject, broken into class sessions with key concepts."""

from __future__ import annotations

from typing import Any

from glan.config import GenerateConfig
from glan.llm import ChatRequest, LLMClient, user
from glan.prompts import render
from glan.records import Session, Subject, Syllabus


def schema(cfg: GenerateConfig) -> dict[str, Any]:
    """minItems on sessions and concepts: a syllabus too short, or a session without concepts,
    fails validation and is re-asked by the client."""
    s = cfg.syllabus
    return {
        "type": "object",
        "properties": {
            "introduction": {"type": "string", "maxLength": 600},
            "objectives": {
                "type": "array",
                "minItems": 1,
                "maxItems": 5,
                "items": {"type": "string", "maxLength": 200},
            },
            "outcomes": {
                "type": "array",
                "minItems": 1,
                "maxItems": 5,
                "items": {"type": "string", "maxLength": 200},
            },
            "sessions": {
                "type": "array",
                "minItems": s.min_sessions,
                "maxItems": s.max_sessions,
                "items": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "minLength": 2, "maxLength": 100},
                        "description": {"type": "string", "maxLength": 300},
                        "concepts": {
                            "type": "array",
                            "minItems": s.min_concepts,
                            "maxItems": s.max_concepts,
                            "items": {"type": "string", "minLength": 2, "maxLength": 80},
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


async def design_syllabus(
    client: LLMClient, subject: Subject, cfg: GenerateConfig, sample_index: int
) -> Syllabus:
    request = ChatRequest(
        messages=user(prompt(subject, cfg)),
        json_schema=schema(cfg),
        schema_name="syllabus",
        seed=cfg.seed,
        sample_index=sample_index,
        tag="syllabus",
        **cfg.sampling_for("syllabus"),
    )
    parsed = (await client.chat(request)).parsed
    sessions = []
    for s in parsed["sessions"]:
        concepts = list(dict.fromkeys(c.strip() for c in s["concepts"] if c.strip()))
        if concepts:
            sessions.append(
                Session(
                    title=s["title"].strip(),
                    description=s["description"].strip(),
                    concepts=concepts,
                )
            )
    return Syllabus(
        field=subject.field,
        subfield=subject.subfield,
        discipline=subject.discipline,
        subject=subject.name,
        level=subject.level,
        introduction=parsed["introduction"].strip(),
        objectives=parsed["objectives"],
        outcomes=parsed["outcomes"],
        sessions=sessions,
    )
