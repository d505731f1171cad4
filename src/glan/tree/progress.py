"""Live counters of a run, updated as replies arrive and read by the CLI's progress display."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from glan.config import STAGES
from glan.llm import UsageLedger


@dataclass
class StageProgress:
    planned: int = 0
    done: int = 0
    failed: int = 0


@dataclass
class RunProgress:
    stages: dict[str, StageProgress] = field(
        default_factory=lambda: {s: StageProgress() for s in STAGES}
    )
    started: float = field(default_factory=time.monotonic)
    usage: UsageLedger | None = None
    strategies: Counter[str] = field(default_factory=Counter)
    # Why schema-valid replies were re-asked, by stage and reason (glan.stages.hygiene).
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    resumed_pairs: int = 0
    target: int = 0
    # Batch transports' state (glan.llm.batch.transport.BatchBackend.summary), when any.
    batches: Callable[[], dict[str, Any]] | None = None
    # Figures an executor adds to the display (a cluster's workers alive, its rate limits).
    notes: dict[str, str] = field(default_factory=dict)

    def pairs(self) -> int:
        return self.resumed_pairs + self.strategies.total()


def merge_batch_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch transports' states (`BatchBackend.summary`) as one: a run's endpoints, or a
    cluster's shards."""
    by_status: dict[str, int] = {}
    for state in states:
        for status, n in state["by_status"].items():
            by_status[status] = by_status.get(status, 0) + n
    return {
        "by_status": by_status,
        "lines_done": sum(s["lines_done"] for s in states),
        "lines_pending": sum(s["lines_pending"] for s in states),
        "oldest_s": max((s["oldest_s"] for s in states), default=0.0),
        "quota_wait_s": max((s.get("quota_wait_s", 0.0) for s in states), default=0.0),
    }
