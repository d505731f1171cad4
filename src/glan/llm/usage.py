"""Token and cost accounting per (stage tag, model)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Price(BaseModel):
    """US dollars per one million tokens."""

    # A mistyped key would price the run at nothing, silently.
    model_config = ConfigDict(extra="forbid")

    input: float = Field(0.0, ge=0, description="USD per 1M prompt tokens")
    output: float = Field(0.0, ge=0, description="USD per 1M completion tokens")
    batch_factor: float = Field(
        0.5, ge=0, description="share of these prices a batch API charges (0.5: half price)"
    )

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        online = (prompt_tokens * self.input + completion_tokens * self.output) / 1e6
        return online * self.batch_factor if batch else online


@dataclass
class UsageRow:
    requests: int = 0
    cached: int = 0
    failed: int = 0
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


#: The usage row of batch replies paid for whose results were gone for good (glan.llm.batch).
LOST_RESULTS = "lost_results"


class UsageLedger:
    """Counts what each stage spent on each model; cached replies cost nothing again."""

    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self.prices = prices or {}
        self.rows: dict[tuple[str, str], UsageRow] = defaultdict(UsageRow)
        # Told of every change (a run writes its spend down as it goes: glan.run.spend).
        self.on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def record(
        self,
        tag: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        reasks: int = 0,
        batch: bool = False,
        requests: int = 1,
    ) -> None:
        row = self.rows[(tag, model)]
        row.requests += requests
        row.reasks += reasks
        row.prompt_tokens += prompt_tokens
        row.completion_tokens += completion_tokens
        price = self.prices.get(model)
        if price is not None:
            row.cost_usd += price.cost(prompt_tokens, completion_tokens, batch)
        self._changed()

    def record_lost(
        self, model: str, lines: int, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Batch lines paid for whose results were gone (sent again): counted apart, under
        LOST_RESULTS, at the batch price."""
        self.record(
            LOST_RESULTS, model, prompt_tokens, completion_tokens, batch=True, requests=lines
        )

    def record_cached(self, tag: str, model: str) -> None:
        self.rows[(tag, model)].cached += 1
        self._changed()

    def record_failed(self, tag: str, model: str) -> None:
        self.rows[(tag, model)].failed += 1
        self._changed()

    def total(self) -> UsageRow:
        out = UsageRow()
        for row in self.rows.values():
            for name, value in asdict(row).items():
                setattr(out, name, getattr(out, name) + value)
        return out

    def as_dict(self) -> dict[str, dict[str, dict[str, float | int]]]:
        out: dict[str, dict[str, dict[str, float | int]]] = {}
        for (tag, model), row in sorted(self.rows.items()):
            out.setdefault(tag, {})[model] = asdict(row)
        return out


def merge_usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per (stage, model) usage rows added up: the manifest counts every invocation's spend."""
    out: dict[str, Any] = {
        stage: {m: dict(r) for m, r in rows.items()} for stage, rows in a.items()
    }
    for stage, rows in b.items():
        for model, row in rows.items():
            into = out.setdefault(stage, {}).setdefault(model, {})
            for key, value in row.items():
                into[key] = into.get(key, 0) + value
    return out


def sum_cost(usage: dict[str, Any]) -> float:
    return sum(row.get("cost_usd", 0.0) for rows in usage.values() for row in rows.values())
