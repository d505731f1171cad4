"""What the tree walk and its pair maker share: how a unit gives up, how they ask, and one
discipline's work in a run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from glan.config import StageName
from glan.llm import ChatRequest, ChatResponse
from glan.planner import DisciplinePlan
from glan.records import Subject
from glan.run.state import DisciplineState

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GaveUp:
    """A unit's request gave up. `permanent`: the request itself is the problem, so the unit
    is recorded as failed and never asked again; otherwise the endpoint was failing, and only
    this run moves on without it (a later run asks it again)."""

    permanent: bool


class Ask(Protocol):
    def __call__(
        self, stage: StageName, request: ChatRequest, parse: Callable[[ChatResponse], T]
    ) -> Awaitable[T | GaveUp]: ...


@dataclass
class DisciplineWork:
    """One discipline's work in this run."""

    plan: DisciplinePlan
    st: DisciplineState
    listed: list[Subject] = field(default_factory=list)
    # A unit gave up for a transient reason: no decision that depends on the discipline's
    # outcomes as a whole is made in this run (the next run makes it, with the same result).
    deferred: int = 0

    @property
    def path(self) -> str:
        return self.plan.discipline.path
