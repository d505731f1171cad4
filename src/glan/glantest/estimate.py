"""`--dry-run` for GLAN-Test: calls, tokens and cost of building the exam and of grading it.

Rough like the generation estimate (glan.estimate: about 4 characters a token, replies at
typical lengths, never above max_tokens); an upper bound on a resumed run, whose cached calls
cost nothing again.
"""

from __future__ import annotations

import math
from typing import Any

from glan.config import GenerateConfig
from glan.estimate import StageEstimate, estimate
from glan.glantest.discipline import ExamSettings
from glan.llm import BackendSettings, Price
from glan.planner import DisciplinePlan, Plan
from glan.prompts import template
from glan.taxonomy import DisciplineRef

JUDGE_REPLY_TOKENS = 150
REPLY_SHARE = 0.6  # a reply uses about this share of its max_tokens


def _row(
    stage: str,
    settings: BackendSettings,
    calls: int,
    prompt: float,
    completion: float,
    prices: dict[str, Price],
) -> StageEstimate:
    model = settings.model_name
    price = prices.get(model)
    if price is None and settings.backend == "local":
        price = Price()  # the embedded model costs nothing per token
    p, c = int(calls * prompt), int(calls * completion)
    return StageEstimate(
        stage=stage,
        model=model,
        calls=calls,
        prompt_tokens=p,
        completion_tokens=c,
        cost_usd=price.cost(p, c) if price else None,
    )


def exam_plan(disciplines: list[DisciplineRef], cfg: GenerateConfig, s: ExamSettings) -> Plan:
    """The exam as a generation plan: the same stages, one quota per discipline."""
    subjects = math.ceil(s.per_discipline / s.per_subject)
    listings = math.ceil(subjects / cfg.plan.subjects_per_call)
    return Plan(
        target=len(disciplines) * s.per_discipline,
        disciplines=[
            DisciplinePlan(
                index=i,
                discipline=d,
                quota=s.per_discipline,
                subjects=subjects,
                subject_samples=listings,
            )
            for i, d in enumerate(disciplines)
        ],
    )


def build_estimate(
    disciplines: list[DisciplineRef],
    cfg: GenerateConfig,
    settings: ExamSettings,
    reference: BackendSettings | None,
    reference_tokens: int,
) -> list[StageEstimate]:
    cfg = cfg.adapted()
    plan = exam_plan(disciplines, cfg, settings)
    rows = [e for e in estimate(plan, cfg) if e.stage != "answers"]
    if reference is not None:
        rows.append(
            _row(
                "references",
                reference,
                plan.target,
                160,
                reference_tokens * REPLY_SHARE,
                cfg.prices,
            )
        )
    return rows


def grading_estimate(
    items: list[dict[str, Any]],
    models: dict[str, BackendSettings],
    judge: BackendSettings,
    answer_tokens: dict[str, int],
    judge_max_tokens: int,
    references: dict[str, str],
    prices: dict[str, Price],
    absolute: bool = False,
) -> list[StageEstimate]:
    """Pairwise: one judge call per item and order, both answers shown; absolute: one per
    item and model, its answer alone."""
    n = len(items)
    question = sum(len(i["question"]) for i in items) / max(1, n) / 4
    reference = sum(len(r) for r in references.values()) / max(1, len(references)) / 4
    rows = []
    replies = 0.0
    for label, settings in models.items():
        reply = answer_tokens[label] * REPLY_SHARE
        replies += reply
        rows.append(_row(f"answers {label}", settings, n, question + 10, reply, prices))
    if absolute:
        calls = n * len(models)
        shown = replies / max(1, len(models))
        judge_prompt = len(template("judge_absolute")) / 4 + question + shown + reference
    else:
        calls = 2 * n
        judge_prompt = len(template("judge")) / 4 + question + replies + reference
    rows.append(
        _row("judge", judge, calls, judge_prompt, min(JUDGE_REPLY_TOKENS, judge_max_tokens), prices)
    )
    return rows
