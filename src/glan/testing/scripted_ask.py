"""A scripted `Ask` for driving the tree walk directly, with no LLM and no HTTP: each reply
depends only on its unit, and chosen units give up (for their own sake or the endpoint's) on
chosen calls. For proving that the walk's records depend on the replies alone."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from glan.config import GenerateConfig
from glan.llm import ChatRequest
from glan.planner import DisciplinePlan, Plan
from glan.records import Session, Subject, Syllabus
from glan.run.state import RunState
from glan.taxonomy import DisciplineRef
from glan.tree.progress import RunProgress
from glan.tree.walk import GaveUp, TreeWalk

DISCIPLINE = DisciplineRef(field="F", subfield="S", name="D")
_NAME = re.compile(r"Subj[A-Z]\w*")
Outcome = str  # "perm" (gave up for its own sake), "trans" (the endpoint's), "ok"


class ScriptedAsk:
    """`listings`: listing index -> subject names (all named Subj<Letter>...). `fail`: a unit
    key -> the outcomes of its successive calls. `sessions`: sessions per syllabus, or per
    subject name (fewer sessions: fewer combinations, so a subject runs out)."""

    def __init__(
        self,
        listings: dict[int, list[str]],
        fail: dict[tuple[Any, ...], list[Outcome]] | None = None,
        sessions: int | dict[str, int] = 4,
    ) -> None:
        self.listings = listings
        self.fail = fail or {}
        self.sessions = sessions
        self.calls: Counter[tuple[Any, ...]] = Counter()

    def key(self, stage: str, request: ChatRequest) -> tuple[Any, ...]:
        text = request.messages[0].content
        if stage == "subjects":
            return ("subjects", request.sample_index)
        if stage == "syllabus":
            return ("syllabus", _NAME.search(text).group(0))  # type: ignore[union-attr]
        if stage == "questions":
            return ("questions", _NAME.search(text).group(0), request.sample_index)  # type: ignore[union-attr]
        return ("answers", text)

    async def __call__(self, stage: str, request: ChatRequest, parse: Any) -> Any:
        await asyncio.sleep(0)  # let other units interleave, as replies would
        key = self.key(stage, request)
        n = self.calls[key]
        self.calls[key] += 1
        outcomes = self.fail.get(key, [])
        if n < len(outcomes) and outcomes[n] != "ok":
            return GaveUp(outcomes[n] == "perm")
        if stage == "subjects":
            return [
                Subject(
                    field="F",
                    subfield="S",
                    discipline="D",
                    name=name,
                    level="introductory",
                    sample_index=request.sample_index,
                )
                for name in self.listings.get(request.sample_index, [])
            ]
        if stage == "syllabus":
            name = key[1]
            count = self.sessions if isinstance(self.sessions, int) else self.sessions.get(name, 4)
            return Syllabus(
                field="F",
                subfield="S",
                discipline="D",
                subject=name,
                level="introductory",
                sessions=[
                    Session(title=f"{name} s{j}", concepts=[f"{name}c{j}a", f"{name}c{j}b"])
                    for j in range(count)
                ],
            )
        if stage == "questions":
            return f"Q {key[1]} #{key[2]}"
        return (f"A to {request.messages[0].content}", "stop")


def one_discipline_plan(quota: int, subjects: int, samples: int) -> Plan:
    return Plan(
        target=quota,
        disciplines=[
            DisciplinePlan(
                index=0,
                discipline=DISCIPLINE,
                quota=quota,
                subjects=subjects,
                subject_samples=samples,
            )
        ],
    )


def walk_once(state_path: Path, plan: Plan, ask: ScriptedAsk, window: int | None = None) -> int:
    """One invocation of the walk over a state file; the units it deferred."""
    state = RunState(state_path)
    walk = TreeWalk(
        plan,
        GenerateConfig(),
        state,
        ask,
        {"questions": "m", "answers": "m"},
        RunProgress(),
        window,
    )
    try:
        asyncio.run(walk.run())
    finally:
        state.close()
    return walk.deferred


def published(state_path: Path, plan: Plan) -> list[tuple[str, str]]:
    """(subject, question) of the pairs a publish would write, in tree order."""
    state = RunState(state_path)
    try:
        return [
            (record["meta"]["subject"], record["messages"][0]["content"])
            for d in plan.disciplines
            for record in map(orjson.loads, state.pair_bodies(d.discipline.path, d.quota))
        ]
    finally:
        state.close()


def walk_until_settled(state_path: Path, plan: Plan, ask: ScriptedAsk, tries: int = 10) -> list:
    """The same invocation again until nothing is deferred; what it publishes."""
    for _ in range(tries):
        if walk_once(state_path, plan, ask) == 0:
            return published(state_path, plan)
    raise AssertionError(f"still deferring after {tries} invocations")
