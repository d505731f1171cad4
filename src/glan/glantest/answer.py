"""Each model's answer to each exam question: one call per question, the question alone.

Greedy (temperature 0), so a re-run sends the same request and the response cache answers it.
A model that gives no usable reply even after the client's re-asks has answered nothing, and
the judge sees that; an endpoint that was failing leaves the item unanswered for this run (a
re-run asks again). Nothing is invented in either case.

An answer the endpoint stopped at the token limit (finish_reason "length") is kept as it is,
and counted as cut (`cut_answers`), so a grade given to half an answer is visible.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from glan.llm import BackendSettings, ChatRequest, LLMClient, RequestFailed, user

ANSWER_TAG = "test_answers"
TINY_TOKENS = 384  # the embedded 135M model loops when left to run on
DEFAULT_TOKENS = 1024
REFERENCE_TAG = "test_references"
CUT = "length"  # the finish_reason of a reply stopped at max_tokens


@dataclass(frozen=True)
class Answer:
    text: str  # "" when the model gave no usable reply
    error: str | None = None
    finish_reason: str | None = None
    retry_later: bool = False  # the endpoint failed: neither answered nor judged this run


def max_tokens_for(settings: BackendSettings) -> int:
    return TINY_TOKENS if settings.tiny else DEFAULT_TOKENS


def request(question: str, max_tokens: int, tag: str = ANSWER_TAG) -> ChatRequest:
    return ChatRequest(
        messages=user(question), temperature=0.0, top_p=1.0, max_tokens=max_tokens, tag=tag
    )


async def answer(
    client: LLMClient, question: str, max_tokens: int, tag: str = ANSWER_TAG
) -> Answer:
    try:
        reply = await client.chat(request(question, max_tokens, tag))
    except RequestFailed as exc:
        return Answer("", str(exc)[:300], None, retry_later=not exc.permanent)
    return Answer(reply.text.strip(), None, reply.finish_reason)


def cut_answers(records: Iterable[dict[str, Any]], labels: Iterable[str]) -> dict[str, Any]:
    """Per model, how many of its answers were cut at the token limit, and which items: from
    judgments.jsonl records ({"answers": {label: Answer as a dict}})."""
    records = list(records)
    out: dict[str, Any] = {}
    for label in labels:
        ids = [
            r["id"]
            for r in records
            if (r.get("answers", {}).get(label) or {}).get("finish_reason") == CUT
        ]
        out[label] = {"count": len(ids), "ids": ids}
    return out
