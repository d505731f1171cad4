"""The absolute judge: each model's answer scored alone, 1-10, one call per answer (the
paper's single-answer grading), so any number of models share one scale and one table.

The prompt is package data (glan/prompts/judge_absolute.txt, documented in docs/glan-test.md).
As with the pairwise judge, the reply is parsed with a JSON schema, the client re-asks with the
validation error when it does not fit, and a reply that still cannot be parsed is recorded as
an error: never guessed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from glan.glantest.judge import NO_ANSWER, question_context, scoring_request
from glan.llm import ChatRequest, LLMClient, RequestFailed
from glan.prompts import render

ABSOLUTE_TAG = "test_judge_absolute"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string", "maxLength": 400},  # bounded: see judge.SCHEMA
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["explanation", "score"],
}


class Grade(BaseModel):
    """One model's answer to one item as the judge scored it, or `error` when the judge gave
    no reply that parses (then the answer has no score)."""

    model: str
    score: int | None = None
    explanation: str | None = None
    error: str | None = None
    retry_later: bool = False


def prompt(item: dict[str, Any], answer: str, reference: str | None) -> str:
    return render("judge_absolute", **question_context(item, reference), answer=answer or NO_ANSWER)


def request(
    item: dict[str, Any], answer: str, reference: str | None, max_tokens: int
) -> ChatRequest:
    text = prompt(item, answer, reference)
    return scoring_request(text, SCHEMA, "score", ABSOLUTE_TAG, max_tokens)


async def judge_alone(
    client: LLMClient,
    item: dict[str, Any],
    label: str,
    answer: str,
    reference: str | None,
    max_tokens: int,
) -> Grade:
    """The judge's score for model `label`'s answer to `item`."""
    try:
        reply = await client.chat(request(item, answer, reference, max_tokens))
    except RequestFailed as exc:
        return Grade(model=label, error=str(exc)[:300], retry_later=not exc.permanent)
    parsed = reply.parsed
    return Grade(
        model=label, score=int(parsed["score"]), explanation=str(parsed["explanation"]).strip()
    )


def item_scores(record: dict[str, Any], labels: list[str]) -> list[float] | None:
    """Each model's score on the item, in `labels` order; None unless every model has one
    (the models are compared on the same items: an item one of them lacks is reported, not
    scored)."""
    scores = {g["model"]: g["score"] for g in record.get("grades", []) if g.get("score")}
    if not all(label in scores for label in labels):
        return None
    return [float(scores[label]) for label in labels]
