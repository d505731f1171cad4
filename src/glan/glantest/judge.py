"""The judge: both answers to one question scored 1-10 in one call, the pair shown in both
orders (A first, then B first), so that a preference for a position cancels out and can be
measured (how often the verdict flips with the order).

The prompt is package data (glan/prompts/judge.txt, documented in docs/glan-test.md). The
reply is parsed with a JSON schema; the client re-asks with the validation error when it does
not fit, and a reply that still cannot be parsed is recorded as an error: never guessed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from glan.llm import ChatRequest, ChatResponse, LLMClient, RequestFailed, user
from glan.prompts import render

JUDGE_TAG = "test_judge"
NO_ANSWER = "(no answer)"
Order = Literal["AB", "BA"]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        # Bounded (and sent bounded: glan.llm.wire keeps bounds up to 400), so a small judge
        # cannot talk until max_tokens and lose its scores.
        "explanation": {"type": "string", "maxLength": 400},
        "score_1": {"type": "integer", "minimum": 1, "maximum": 10},
        "score_2": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["explanation", "score_1", "score_2"],
}


class Judgment(BaseModel):
    """One order's verdict: `first` was shown as Assistant 1. `scores` by model label, or
    `error` when the judge gave no reply that parses (then the order has no scores)."""

    order: Order
    first: str
    scores: dict[str, int] | None = None
    explanation: str | None = None
    error: str | None = None
    retry_later: bool = False


def question_context(item: dict[str, Any], reference: str | None) -> dict[str, str]:
    """What every judge prompt shows besides the answers: the course, the question and the
    reference answer if any."""
    meta = item.get("meta") or {}
    return {
        "discipline": meta.get("discipline", "?"),
        "field": meta.get("field", "?"),
        "subfield": meta.get("subfield", "?"),
        "question": item["question"],
        "reference": render("judge_reference", reference=reference) + "\n" if reference else "",
    }


def prompt(item: dict[str, Any], answer_1: str, answer_2: str, reference: str | None) -> str:
    return render(
        "judge",
        **question_context(item, reference),
        answer_1=answer_1 or NO_ANSWER,
        answer_2=answer_2 or NO_ANSWER,
    )


def scoring_request(
    text: str, schema: dict[str, Any], schema_name: str, tag: str, max_tokens: int
) -> ChatRequest:
    """A judge's request: greedy, so a re-run sends the same request and the cache answers."""
    return ChatRequest(
        messages=user(text),
        temperature=0.0,
        top_p=1.0,
        max_tokens=max_tokens,
        json_schema=schema,
        schema_name=schema_name,
        tag=tag,
    )


def request(
    item: dict[str, Any], answer_1: str, answer_2: str, reference: str | None, max_tokens: int
) -> ChatRequest:
    text = prompt(item, answer_1, answer_2, reference)
    return scoring_request(text, SCHEMA, "scores", JUDGE_TAG, max_tokens)


def _scores(reply: ChatResponse) -> tuple[int, int, str]:
    parsed = reply.parsed
    return int(parsed["score_1"]), int(parsed["score_2"]), str(parsed["explanation"]).strip()


async def judge_order(
    client: LLMClient,
    item: dict[str, Any],
    pair: tuple[str, str],
    order: Order,
    answers: dict[str, str],
    reference: str | None,
    max_tokens: int,
) -> Judgment:
    """The judge's scores for the pair (A, B) of model labels, A shown first in order "AB"."""
    first, second = pair if order == "AB" else (pair[1], pair[0])
    try:
        reply = await client.chat(
            request(item, answers[first], answers[second], reference, max_tokens)
        )
    except RequestFailed as exc:
        return Judgment(
            order=order, first=first, error=str(exc)[:300], retry_later=not exc.permanent
        )
    s1, s2, why = _scores(reply)
    return Judgment(order=order, first=first, scores={first: s1, second: s2}, explanation=why)
