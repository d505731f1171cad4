"""Dry-run estimates: calls, tokens and cost per stage before anything is spent.

Token counts are rough (about 4 characters a token, replies at typical lengths for the
configured sizes, never above max_tokens); they are for budgeting, not billing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel

from glan.config import STAGES, GenerateConfig
from glan.llm.settings import BATCH_KINDS
from glan.llm.usage import Price
from glan.planner import Plan

CHARS_PER_TOKEN = 4


class StageEstimate(BaseModel):
    stage: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    batch: bool = False  # priced at the batch price (Price.batch_factor)


def text_tokens(chars: int) -> int:
    """The tokens of a text of this many characters, at about 4 characters a token."""
    return math.ceil(chars / CHARS_PER_TOKEN)


def typical_tokens(
    cfg: GenerateConfig,
    subjects: float | None = None,
    sessions: float | None = None,
    concepts: float | None = None,
) -> dict[str, tuple[float, float]]:
    """(prompt, completion) tokens of one call of each stage, at typical lengths for the
    configured sizes (or these: subjects a listing names, sessions of a syllabus, concepts of a
    session); the completion never above the stage's max_tokens."""
    syl = cfg.syllabus
    if sessions is None:
        sessions = (syl.min_sessions + syl.max_sessions) / 2
    if concepts is None:
        concepts = (syl.min_concepts + syl.max_concepts) / 2
    syllabus_tokens = 150 + sessions * (25 + concepts * 6)
    per_call = {
        "subjects": (130, (subjects or cfg.plan.subjects_per_call) * 70),
        "syllabus": (160, syllabus_tokens),
        "questions": (syllabus_tokens + 200, 120),
        "answers": (120, cfg.sampling_for("answers")["max_tokens"] * 0.6),
    }
    return {
        stage: (prompt, min(completion, cfg.sampling_for(stage)["max_tokens"]))
        for stage, (prompt, completion) in per_call.items()
    }


def priced(
    cfg: GenerateConfig, stage: str, calls: int, prompt_tokens: int, completion_tokens: int
) -> StageEstimate:
    """One stage's row: its model, and the cost of these tokens at its price (the batch
    price for a batch backend; nothing for a model on your own hardware)."""
    settings = cfg.backend_for(stage)
    model = settings.model_name
    batch = settings.backend in BATCH_KINDS
    price = cfg.prices.get(model)
    if price is None and (settings.backend in ("local", "vllm") or not calls):
        price = Price()  # a model on your own hardware (or not asked) costs nothing
    return StageEstimate(
        stage=stage,
        model=model,
        calls=calls,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=price.cost(prompt_tokens, completion_tokens, batch) if price else None,
        batch=batch,
    )


def estimate(plan: Plan, cfg: GenerateConfig) -> list[StageEstimate]:
    calls = plan.calls(cfg.subjects_mode == "two_turn")
    per_call = typical_tokens(cfg)
    out = []
    for stage in STAGES:
        prompt, completion = per_call[stage]
        n = calls[stage]
        out.append(priced(cfg, stage, n, int(n * prompt), int(n * completion)))
    return out


def batch_turnarounds(
    cfg: GenerateConfig, rows: list[StageEstimate], waiting: Mapping[str, int] | None = None
) -> list[str]:
    """The levels of the tree a run waits a batch turnaround for: each stage sent by batch
    that has calls to make (or lines in live batches to collect: `waiting`), in tree order,
    the listing twice in two_turn mode (a free-text turn, then the formatting turn). A level
    answers only once the level above it has, so these add up."""
    waiting = waiting or {}
    levels = []
    for row in rows:
        if row.batch and (row.calls or waiting.get(row.stage)):
            levels.append(row.stage)
            if row.stage == "subjects" and cfg.subjects_mode == "two_turn":
                levels.append("subjects formatting")
    return levels
