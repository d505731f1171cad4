"""Record filters: each dropped record says why."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

REFUSAL = re.compile(
    r"^\s*(?:i(?:'m| am) (?:sorry|unable|not able)|i can(?:no|')t (?:help|assist|provide|answer)|"
    r"as an ai(?: language model)?|i apologi[sz]e,? but)",
    re.IGNORECASE,
)


class FilterSettings(BaseModel):
    min_question_chars: int = Field(15, ge=0)
    min_answer_chars: int = Field(20, ge=0)
    drop_refusals: bool = True
    drop_truncated: bool = Field(True, description="answers cut off by the token limit")


def reject_reason(record: dict, settings: FilterSettings) -> str | None:
    """Why this record should go, or None to keep it."""
    messages = record.get("messages") or []
    question = next((m["content"] for m in messages if m.get("role") == "user"), "")
    answer = next((m["content"] for m in messages if m.get("role") == "assistant"), "")
    if not question.strip():
        return "empty question"
    if not answer.strip():
        return "empty answer"
    if len(question.strip()) < settings.min_question_chars:
        return "question too short"
    if len(answer.strip()) < settings.min_answer_chars:
        return "answer too short"
    if (
        settings.drop_truncated
        and (record.get("meta") or {}).get("answer_finish_reason") == "length"
    ):
        return "answer cut off by the token limit"
    if settings.drop_refusals and REFUSAL.search(answer):
        return "refusal"
    return None


def record_text(record: dict, answers: bool = False) -> str:
    """The user turns (and the assistant's, with `answers`) joined: what dedup and
    decontamination compare."""
    roles = ("user", "assistant") if answers else ("user",)
    return "\n".join(
        m.get("content", "") for m in record.get("messages", []) if m.get("role") in roles
    )
