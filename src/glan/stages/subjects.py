"""Stage 1: the subjects (courses) of a discipline, listed by the model acting as an educator."""

from __future__ import annotations

import re
from typing import Any

from glan.config import GenerateConfig
from glan.llm import ChatRequest, LLMClient, Message, user
from glan.prompts import render
from glan.records import Subject
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
                        "introduction": {"type": "string", "maxLength": 400},
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


async def list_subjects(
    client: LLMClient, d: DisciplineRef, sample_index: int, cfg: GenerateConfig
) -> list[Subject]:
    """One listing call (or the paper's two turns: free text, then formatting)."""
    sampling = cfg.sampling_for("subjects")
    shape = schema(cfg.plan.subjects_per_call)
    common = {"seed": cfg.seed, "sample_index": sample_index, "tag": "subjects", **sampling}
    if cfg.subjects_mode == "two_turn":
        free = await client.chat(ChatRequest(messages=user(prompt(d)), **common))
        messages = (
            *user(prompt(d)),
            Message(role="assistant", content=free.text),
            Message(role="user", content=render("subjects_format")),
        )
        reply = await client.chat(ChatRequest(messages=messages, json_schema=shape, **common))
    else:
        reply = await client.chat(
            ChatRequest(messages=user(prompt(d)), json_schema=shape, **common)
        )
    return [
        Subject(
            field=d.field,
            subfield=d.subfield,
            discipline=d.name,
            name=clean(item["name"]),
            level=item["level"],
            introduction=clean(item.get("introduction", "")),
            subtopics=[clean(t) for t in item.get("subtopics", []) if re.search(r"\w{2}", t)],
            sample_index=sample_index,
        )
        for item in reply.parsed["subjects"]
        if re.search(r"\w{2}", item["name"])
    ]


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
