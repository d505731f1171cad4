"""Stage 3: homework questions from sampled class sessions and key concepts.

Both of the paper's strategies run: `single` takes 1-5 concepts of one session (basic
questions); `multi` takes 2-5 concepts from two sessions with at least one from each (harder
ones). No (sessions, concepts) combination is used twice within a subject, so no two question
prompts of a subject are the same. The paper does not say how the number of concepts is drawn:
here it is uniform over the allowed counts, so small and large combinations are equally common.
"""

from __future__ import annotations

import math
import random
from typing import Any

from glan.config import GenerateConfig
from glan.llm import ChatRequest, LLMClient, user
from glan.prompts import render
from glan.records import QuestionPlan, Strategy, Syllabus

MAX_CONCEPTS = 5
_DRAWS = 64  # tries to find an unused combination before giving up on a strategy

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"question": {"type": "string", "minLength": 10, "maxLength": 2000}},
    "required": ["question"],
}


def _draw(
    syllabus: Syllabus, strategy: Strategy, rng: random.Random
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    sessions = syllabus.sessions
    if strategy == "single":
        sid = rng.randrange(len(sessions))
        pool = sessions[sid].concepts
        k = rng.randint(1, min(MAX_CONCEPTS, len(pool)))
        return (sid,), tuple(sorted(rng.sample(pool, k)))
    a, b = sorted(rng.sample(range(len(sessions)), 2))
    first, second = sessions[a].concepts, sessions[b].concepts
    union = [(a, c) for c in first] + [(b, c) for c in second]
    k = rng.randint(2, min(MAX_CONCEPTS, len(union)))
    picked = {(a, rng.choice(first)), (b, rng.choice(second))}
    rest = [item for item in union if item not in picked]
    picked.update(rng.sample(rest, min(k - 2, len(rest))))
    return (a, b), tuple(sorted(c for _, c in picked))


def plan_questions(
    syllabus: Syllabus, count: int, multi_ratio: float, rng: random.Random
) -> list[QuestionPlan]:
    """The first `count` distinct question plans of a subject (fewer if the syllabus runs out).

    Strategies follow a phase-shifted even spread, so each subject holds the configured ratio
    to within one question and the run as a whole holds it closely.
    """
    phase = rng.random()
    used: set[tuple[tuple[int, ...], tuple[str, ...]]] = set()
    plans: list[QuestionPlan] = []
    can_multi = len(syllabus.sessions) >= 2
    j = 0
    while len(plans) < count:
        wants_multi = math.floor((j + 1) * multi_ratio + phase) > math.floor(
            j * multi_ratio + phase
        )
        order: list[Strategy] = (
            ["multi", "single"] if wants_multi and can_multi else ["single", "multi"]
        )
        j += 1
        found = None
        for strategy in order:
            if strategy == "multi" and not can_multi:
                continue
            for _ in range(_DRAWS):
                combo = _draw(syllabus, strategy, rng)
                if combo not in used:
                    found = strategy, combo
                    break
            if found:
                break
        if found is None:
            break  # this syllabus has no unused combination left
        strategy, combo = found
        used.add(combo)
        plans.append(
            QuestionPlan(
                index=len(plans), strategy=strategy, session_ids=combo[0], concepts=combo[1]
            )
        )
    return plans


def syllabus_text(syllabus: Syllabus) -> str:
    lines = [syllabus.introduction] if syllabus.introduction else []
    for i, s in enumerate(syllabus.sessions, 1):
        lines.append(f"Session {i}: {s.title}. Key concepts: {', '.join(s.concepts)}.")
    return "\n".join(lines)


def prompt(syllabus: Syllabus, plan: QuestionPlan, cfg: GenerateConfig) -> str:
    """Carries the whole syllabus, the sampled sessions ("learned up to") and the concepts."""
    upto = max(plan.session_ids)
    knobs = ""
    if cfg.questions.question_type:
        knobs += f"Make it a {cfg.questions.question_type} question. "
    if cfg.questions.difficulty:
        knobs += f"Make it {cfg.questions.difficulty}. "
    sessions = "\n".join(
        f"- Session {i + 1}: {syllabus.sessions[i].title}" for i in plan.session_ids
    )
    return render(
        "question",
        level=syllabus.level,
        subject=syllabus.subject,
        discipline=syllabus.discipline,
        field=syllabus.field,
        subfield=syllabus.subfield,
        syllabus=syllabus_text(syllabus),
        upto=upto + 1,
        upto_title=syllabus.sessions[upto].title,
        concepts="\n".join(f"- {c}" for c in plan.concepts),
        session_phrase="this session" if len(plan.session_ids) == 1 else "these two sessions",
        sessions=sessions,
        knobs=knobs + ("\n" if knobs else ""),
    )


async def ask_question(
    client: LLMClient, syllabus: Syllabus, plan: QuestionPlan, cfg: GenerateConfig
) -> str:
    request = ChatRequest(
        messages=user(prompt(syllabus, plan, cfg)),
        json_schema=SCHEMA,
        schema_name="question",
        seed=cfg.seed,
        sample_index=plan.index,
        tag="questions",
        **cfg.sampling_for("questions"),
    )
    return (await client.chat(request)).parsed["question"].strip()
