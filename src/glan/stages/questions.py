"""Stage 3: homework questions from sampled class sessions and key concepts.

Both of the paper's strategies run: `single` takes 1-5 concepts of one session (basic
questions); `multi` takes 2-5 concepts from two sessions with at least one from each (harder
ones). No (sessions, concepts) combination is used twice within a subject, and no combination
holds the same concept twice (two sessions may share a concept's name). The paper does not say
how the number of concepts is drawn: here it is uniform over the allowed counts.

Like every stage, this is a request builder and a reply parser, pure functions of records.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

from glan.config import GenerateConfig
from glan.llm import ChatRequest, ChatResponse, user
from glan.prompts import render, template
from glan.records import QuestionPlan, Strategy, Syllabus
from glan.stages import hygiene
from glan.stages.errors import Rejected

MAX_CONCEPTS = 5
_DRAWS = 64  # tries to find an unused combination before giving up on a strategy

# Long text is bounded by max_tokens and checked here, not by a maxLength that grammar engines
# would unroll into rules (llama.cpp's server crashes on maxLength 2000).
MAX_QUESTION_CHARS = 2000
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"question": {"type": "string", "minLength": 10}},
    "required": ["question"],
}
_INSTRUCTIONS = hygiene.instruction_ngrams(template("question"))


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
    first = sessions[a].concepts
    second = [c for c in sessions[b].concepts if c not in first]
    if not second:
        return (a, b), ()  # b adds nothing new: no valid two-session combination
    union = first + second
    k = rng.randint(2, min(MAX_CONCEPTS, len(union)))
    picked = {rng.choice(first), rng.choice(second)}
    rest = [c for c in union if c not in picked]
    picked.update(rng.sample(rest, min(k - 2, len(rest))))
    return (a, b), tuple(sorted(picked))


def iter_plans(
    syllabus: Syllabus, multi_ratio: float, rng: random.Random
) -> Iterator[QuestionPlan]:
    """A subject's distinct question plans, in a fixed order (prefix-stable: the first k are
    the same however many are drawn), until the syllabus runs out of unused combinations.

    Strategies follow a phase-shifted even spread, so each subject holds the configured ratio
    to within one question and the run as a whole holds it closely.
    """
    phase = rng.random()
    used: set[tuple[tuple[int, ...], tuple[str, ...]]] = set()
    can_multi = len(syllabus.sessions) >= 2
    j = index = 0
    while True:
        wants_multi = math.floor((j + 1) * multi_ratio + phase) > math.floor(
            j * multi_ratio + phase
        )
        order: tuple[Strategy, ...] = (
            ("multi", "single") if wants_multi and can_multi else ("single", "multi")
        )
        j += 1
        found = None
        for strategy in order:
            if strategy == "multi" and not can_multi:
                continue
            for _ in range(_DRAWS):
                combo = _draw(syllabus, strategy, rng)
                if combo[1] and combo not in used:
                    found = strategy, combo
                    break
            if found:
                break
        if found is None:
            return  # this syllabus has no unused combination left
        strategy, combo = found
        used.add(combo)
        yield QuestionPlan(index=index, strategy=strategy, session_ids=combo[0], concepts=combo[1])
        index += 1


def plan_questions(
    syllabus: Syllabus, count: int, multi_ratio: float, rng: random.Random
) -> list[QuestionPlan]:
    """The first `count` plans (fewer if the syllabus runs out)."""
    plans = []
    for plan in iter_plans(syllabus, multi_ratio, rng):
        if len(plans) == count:
            break
        plans.append(plan)
    return plans


def syllabus_text(syllabus: Syllabus) -> str:
    """The syllabus as topics by title, unnumbered: a number in the prompt is what a small
    model cites back ("in session 2"), and the student never sees it."""
    lines = [syllabus.introduction, ""] if syllabus.introduction else []
    lines.append("Its topics, in order, with their key concepts:")
    for s in syllabus.sessions:
        lines.append(f"- {s.title}: {', '.join(s.concepts)}")
    return "\n".join(lines)


def _titles(titles: list[str]) -> str:
    quoted = [f'"{t}"' for t in titles]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def prompt(
    syllabus: Syllabus, plan: QuestionPlan, cfg: GenerateConfig, text: str | None = None
) -> str:
    """Carries the whole syllabus, the sampled sessions ("learned up to") and the concepts.
    `text` is the syllabus as text, when the caller renders it once for many questions."""
    upto = max(plan.session_ids)
    knobs = ""
    if cfg.questions.question_type:
        knobs += f"Make it a {cfg.questions.question_type} question. "
    if cfg.questions.difficulty:
        knobs += f"Make it {cfg.questions.difficulty}. "
    return render(
        "question",
        level=syllabus.level,
        subject=syllabus.subject,
        discipline=syllabus.discipline,
        field=syllabus.field,
        subfield=syllabus.subfield,
        syllabus=text if text is not None else syllabus_text(syllabus),
        upto_title=syllabus.sessions[upto].title,
        concepts="\n".join(f"- {c}" for c in plan.concepts),
        topic_phrase="the topic" if len(plan.session_ids) == 1 else "the topics",
        topics=_titles([syllabus.sessions[i].title for i in plan.session_ids]),
        knobs=knobs + ("\n" if knobs else ""),
    )


def build(
    syllabus: Syllabus, plan: QuestionPlan, cfg: GenerateConfig, text: str | None = None
) -> ChatRequest:
    # model_construct: one per pair on the hot path, from values that are already validated.
    return ChatRequest.model_construct(
        messages=user(prompt(syllabus, plan, cfg, text)),
        json_schema=SCHEMA,
        schema_name="question",
        seed=cfg.seed,
        sample_index=plan.index,
        tag="questions",
        **cfg.sampling_for("questions"),
    )


def parse(reply: ChatResponse) -> str:
    """The question, or Rejected with the reason to re-ask with."""
    question = reply.parsed["question"].strip()
    if len(question) > MAX_QUESTION_CHARS:
        raise Rejected("too_long", f"the question is over {MAX_QUESTION_CHARS} characters")
    if hygiene.is_debris(question):
        raise Rejected("debris", f"{question[:40]!r} is not a question")
    echoed = hygiene.echoed_instruction(question, _INSTRUCTIONS)
    if echoed:
        raise Rejected("echo", f"the question repeats the instructions ({echoed[:60]!r})")
    # A leading "According to session 3," is cut; a reference inside the question is re-asked.
    question = hygiene.strip_reference(question)
    reason = hygiene.not_standalone(question)
    if reason:
        raise Rejected("not_standalone", reason)
    return question
