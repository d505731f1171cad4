"""Dry-run estimates: calls, tokens and cost per stage before anything is spent.

Token counts are rough (about 4 characters a token, replies at typical lengths for the
configured sizes, never above max_tokens); they are for budgeting, not billing.
"""

from __future__ import annotations

from pydantic import BaseModel

from glan.config import STAGES, GenerateConfig
from glan.llm.settings import BATCH_KINDS
from glan.llm.usage import Price
from glan.planner import Plan


class StageEstimate(BaseModel):
    stage: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    batch: bool = False  # priced at the batch price (Price.batch_factor)


def estimate(plan: Plan, cfg: GenerateConfig) -> list[StageEstimate]:
    syl = cfg.syllabus
    sessions = (syl.min_sessions + syl.max_sessions) / 2
    concepts = (syl.min_concepts + syl.max_concepts) / 2
    syllabus_tokens = 150 + sessions * (25 + concepts * 6)
    per_call = {
        "subjects": (130, cfg.plan.subjects_per_call * 70),
        "syllabus": (160, syllabus_tokens),
        "questions": (syllabus_tokens + 200, 120),
        "answers": (120, cfg.sampling_for("answers")["max_tokens"] * 0.6),
    }
    calls = plan.calls(cfg.subjects_mode == "two_turn")
    out = []
    for stage in STAGES:
        settings = cfg.backend_for(stage)
        model = settings.model_name
        prompt, completion = per_call[stage]
        completion = min(completion, cfg.sampling_for(stage)["max_tokens"])
        p_tokens, c_tokens = int(calls[stage] * prompt), int(calls[stage] * completion)
        batch = settings.backend in BATCH_KINDS
        price = cfg.prices.get(model)
        if price is None and settings.backend in ("local", "vllm"):
            price = Price()  # a model on your own hardware costs nothing per token
        out.append(
            StageEstimate(
                stage=stage,
                model=model,
                calls=calls[stage],
                prompt_tokens=p_tokens,
                completion_tokens=c_tokens,
                cost_usd=price.cost(p_tokens, c_tokens, batch) if price else None,
                batch=batch,
            )
        )
    return out
