"""Stage 1: the subjects (courses) of a discipline, listed by the model acting as an educator.

A request builder and a reply parser: one schema-constrained call (`structured`), or the
paper's two turns (`two_turn`: a free-text list, then a formatting turn built from it).
"""

from __future__ import annotations

import re
from typing import Any

from glan.config import GenerateConfig
from glan.llm import ChatRequest, ChatResponse, Message, user
from glan.prompts import render
from glan.records import Subject
from glan.stages import hygiene
from glan.stages.errors import Rejected
from glan.taxonomy import DisciplineRef

LEVELS = ["introductory", "intermediate", "advanced"]


def schema(subjects_per_call: int) -> dict[str, Any]:
    """Bounded everywhere: unbounded arrays make small models loop until max_tokens."""
    return {
        "type": "object",
        "properties": {
            "subjects": {
                "type": "array",
                "minItems": 1,
                "maxItems": subjects_per_call,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "minLength": 2, "maxLength": 100},
                        "level": {"enum": LEVELS},
                        "introduction": {"type": "string"},
                        "subtopics": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 6,
                            "items": {"type": "string", "minLength": 2, "maxLength": 80},
                        },
                    },
                    "required": ["name", "level", "introduction", "subtopics"],
                },
            }
        },
        "required": ["subjects"],
    }


def prompt(d: DisciplineRef) -> str:
    description = f" ({d.description})" if d.description else ""
    return render(
        "subjects", discipline=d.name, subfield=d.subfield, field=d.field, description=description
    )


def clean(text: str) -> str:
    """Collapse whitespace: replies may carry raw newlines inside strings."""
    return re.sub(r"\s+", " ", text).strip()


def normalise(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().casefold()


def _common(cfg: GenerateConfig, sample_index: int) -> dict[str, Any]:
    return {
        "seed": cfg.seed,
        "sample_index": sample_index,
        "tag": "subjects",
        **cfg.sampling_for("subjects"),
    }


def build(d: DisciplineRef, sample_index: int, cfg: GenerateConfig) -> ChatRequest:
    """The listing request: structured, or the first (free-text) turn of two_turn."""
    if cfg.subjects_mode == "two_turn":
        return ChatRequest(messages=user(prompt(d)), **_common(cfg, sample_index))
    return ChatRequest(
        messages=user(prompt(d)),
        json_schema=schema(cfg.plan.subjects_per_call),
        schema_name="subjects",
        **_common(cfg, sample_index),
    )


def build_format(
    d: DisciplineRef, sample_index: int, cfg: GenerateConfig, free_text: str
) -> ChatRequest:
    """two_turn's second turn: the free-text list rewritten as JSON."""
    messages = (
        *user(prompt(d)),
        Message(role="assistant", content=free_text),
        Message(role="user", content=render("subjects_format")),
    )
    return ChatRequest(
        messages=messages,
        json_schema=schema(cfg.plan.subjects_per_call),
        schema_name="subjects",
        **_common(cfg, sample_index),
    )


_LEVEL_WORDS = {*LEVELS, "beginner", "basic", "elementary", "expert", "graduate", "undergraduate"}


def _usable_name(name: str) -> bool:
    """A subject needs a name of its own: 'Advanced' alone is a level, `"] ,"` is debris."""
    return not hygiene.is_debris(name) and normalise(name).strip(" .:-") not in _LEVEL_WORDS


def parse(d: DisciplineRef, sample_index: int, reply: ChatResponse) -> list[Subject]:
    subjects = [
        Subject(
            field=d.field,
            subfield=d.subfield,
            discipline=d.name,
            name=clean(item["name"])[:100],
            level=item["level"],
            introduction=clean(item.get("introduction", ""))[:600],
            subtopics=[clean(t) for t in item.get("subtopics", []) if not hygiene.is_debris(t)],
            sample_index=sample_index,
        )
        for item in reply.parsed["subjects"]
        if _usable_name(clean(item["name"]))
    ]
    if not subjects:
        raise Rejected(
            "no_subjects", "no subject had a real name: give each subject a descriptive course name"
        )
    return subjects


def unique_subjects(samples: list[list[Subject]]) -> list[Subject]:
    """Exact duplicates (by normalised name) dropped within one discipline, first kept."""
    seen: set[str] = set()
    out = []
    for sample in samples:
        for subject in sample:
            key = normalise(subject.name)
            if key not in seen:
                seen.add(key)
                out.append(subject)
    return out
