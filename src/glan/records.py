"""Typed records with provenance: every output says which node, sessions and concepts made it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["single", "multi"]


class Subject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str
    subfield: str
    discipline: str
    name: str
    level: str
    introduction: str = ""
    subtopics: list[str] = Field(default_factory=list)
    sample_index: int = Field(description="which listing call of the discipline produced it")


class Session(BaseModel):
    title: str
    description: str = ""
    concepts: list[str]


class Syllabus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str
    subfield: str
    discipline: str
    subject: str
    level: str
    introduction: str = ""
    objectives: list[str] = Field(default_factory=list)
    outcomes: list[str] = Field(default_factory=list)
    sessions: list[Session]


class QuestionPlan(BaseModel):
    """What one homework question is built from (chosen before any call is made)."""

    model_config = ConfigDict(frozen=True)

    index: int
    strategy: Strategy
    session_ids: tuple[int, ...]
    concepts: tuple[str, ...]


class InstructionMeta(BaseModel):
    field: str
    subfield: str
    discipline: str
    subject: str
    level: str
    sessions: list[str]
    concepts: list[str]
    strategy: Strategy
    question_model: str
    answer_model: str
    answer_finish_reason: str | None = None


class ChatTurn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Instruction(BaseModel):
    """One line of instructions.jsonl: the contract other tools read. Keep it stable."""

    id: str
    messages: list[ChatTurn]
    meta: InstructionMeta
