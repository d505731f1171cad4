"""Stage 4: each question answered in a call of its own (the paper used a cheaper model here)."""

from __future__ import annotations

from glan.config import GenerateConfig
from glan.llm import ChatRequest, ChatResponse, LLMClient, user


async def answer(client: LLMClient, question: str, cfg: GenerateConfig) -> ChatResponse:
    """The answer's prompt is the question alone: the pair is trained on exactly as stored."""
    request = ChatRequest(
        messages=user(question), seed=cfg.seed, tag="answers", **cfg.sampling_for("answers")
    )
    return await client.chat(request)
