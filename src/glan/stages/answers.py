"""Stage 4: each question answered in a call of its own (the paper used a cheaper model here)."""

from __future__ import annotations

from glan.config import GenerateConfig
from glan.llm import ChatRequest, ChatResponse, user
from glan.stages import hygiene
from glan.stages.errors import Rejected


def build(question: str, cfg: GenerateConfig) -> ChatRequest:
    """The answer's prompt is the question alone: the pair is trained on exactly as stored."""
    # model_construct: one per pair on the hot path, from values that are already validated.
    return ChatRequest.model_construct(
        messages=user(question), seed=cfg.seed, tag="answers", **cfg.sampling_for("answers")
    )


def parse(reply: ChatResponse) -> str:
    text = reply.text.strip()
    if hygiene.is_debris(text):
        raise Rejected("debris", "the reply holds no words")
    reason = hygiene.repetitive(text)
    if reason:
        raise Rejected("repetitive", reason)
    return text
