"""The driver's view of a cluster run: the shards' counters summed into one RunProgress, which
the CLI's display (glan.cli.progress) shows as it shows a local run's, plus the cluster's
figures (workers alive, rate limits, the global limit) as notes."""

from __future__ import annotations

from typing import Any

from glan.llm.usage import merge_usage
from glan.planner import Plan
from glan.tree.progress import RunProgress, merge_batch_states


class SummedUsage:
    """Reads like a UsageLedger for the display: usage rows summed over shards."""

    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}

    def as_dict(self) -> dict[str, Any]:
        return self.rows


class ClusterProgress:
    def __init__(self, progress: RunProgress) -> None:
        self.progress = progress
        self.usage = SummedUsage()
        progress.usage = self.usage  # type: ignore[assignment]
        self.done: dict[int, dict[str, Any]] = {}  # finished shards' last counters
        self.running: dict[int, dict[str, Any]] = {}
        self.lost = 0
        self.workers = 0

    def start(self, plan: Plan, two_turn: bool) -> None:
        self.progress.target = sum(d.quota for d in plan.disciplines)
        for stage, n in plan.calls(two_turn).items():
            self.progress.stages[stage].planned = n
        self.progress.notes["workers"] = "starting"

    def shard_done(self, summary: dict[str, Any]) -> None:
        self.done[summary["shard"]] = summary["progress"]
        self.running.pop(summary["shard"], None)
        self._sum()

    def worker_lost(self) -> None:
        self.lost += 1

    def update(self, snapshots: dict[int, dict[str, Any]], limits: list[dict[str, Any]]) -> None:
        self.running = {
            shard: snap
            for worker in snapshots.values()
            for shard, snap in worker["shards"].items()
            if shard not in self.done
        }
        self._sum()
        notes = self.progress.notes
        lost = f", {self.lost} lost and replaced" if self.lost else ""
        notes["workers"] = f"{len(snapshots)}/{self.workers} alive{lost}"
        notes["429s"] = f"{sum(a['rate_limited'] for a in limits):,}"
        if limits:
            notes["limit"] = " ".join(f"{a['limit']:.0f}" for a in limits)

    def _sum(self) -> None:
        shards = [*self.done.values(), *self.running.values()]
        progress = self.progress
        for name, stage in progress.stages.items():
            stage.done = sum(s["stages"][name][1] for s in shards)
            stage.failed = sum(s["stages"][name][2] for s in shards)
        resumed = sum(s["resumed"] for s in shards)
        progress.resumed_pairs = resumed
        progress.strategies.clear()
        progress.strategies["made"] = sum(s["pairs"] for s in shards) - resumed
        rows: dict[str, Any] = {}
        for s in shards:
            rows = merge_usage(rows, s["usage"])
        self.usage.rows = rows
        batches = [s["batches"] for s in shards if s.get("batches")]
        if batches:  # shards that send batches: their transports' state, summed
            progress.batches = lambda: merge_batch_states(batches)
