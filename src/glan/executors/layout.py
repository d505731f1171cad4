"""How a cluster run is cut into shards: balanced by quota, stable across re-runs.

Shards are many more than workers (so a worker that frees up pulls the next one and the tail is
short), and balanced by quota, not by a hash modulo that can leave one shard with the biggest
disciplines: disciplines go, largest quota first, into the shard with the least quota so far
(ties: the lower shard number). The layout is a function of the plan and the shard count, and it
is written to the run directory: a re-run (after a crash, with more -n, with another --workers)
keeps every discipline in the shard that holds its state, and places only new disciplines.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from glan.planner import Plan
from glan.run.files import atomic_write_json

LAYOUT_FILE = "layout.json"


def balanced(plan: Plan, count: int, fixed: dict[str, int] | None = None) -> dict[str, int]:
    """Discipline path -> shard number in 0..count-1; `fixed` placements are kept as they are."""
    placed = dict(fixed or {})
    load = [0] * count
    quotas = {d.discipline.path: d.quota for d in plan.disciplines}
    for path, shard in placed.items():
        load[shard] += quotas.get(path, 0)
    new = sorted(
        (d for d in plan.disciplines if d.discipline.path not in placed),
        key=lambda d: (-d.quota, d.index),
    )
    for d in new:
        shard = min(range(count), key=lambda i: (load[i], i))
        placed[d.discipline.path] = shard
        load[shard] += d.quota
    return placed


def shard_layout(
    shards_dir: Path, plan: Plan, workers: int, per_worker: int
) -> dict[int, list[str]]:
    """The shards (each a list of discipline paths in tree order) for this run directory: the
    recorded layout extended to the plan's new disciplines, or a fresh one. Shards that hold
    none of the plan's disciplines (a smaller -n) are left out; their numbers stay theirs."""
    file = shards_dir / LAYOUT_FILE
    try:
        recorded = orjson.loads(file.read_bytes())
        count, fixed = int(recorded["count"]), dict(recorded["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        count = max(1, min(workers * per_worker, len(plan.disciplines)))
        fixed = {}
    placed = balanced(plan, count, fixed)
    if placed != fixed:
        shards_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(file, {"count": count, "shards": placed})
    shards: list[list[str]] = [[] for _ in range(count)]
    for d in plan.disciplines:
        shards[placed[d.discipline.path]].append(d.discipline.path)
    return {i: paths for i, paths in enumerate(shards) if paths}
