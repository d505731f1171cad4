"""The Python API, mirroring the CLI: everything `glan generate` does is one call here."""

from __future__ import annotations

from pathlib import Path

from glan.config import GenerateConfig
from glan.executors import execute
from glan.pipeline import Pipeline, RunProgress, RunResult
from glan.planner import Plan
from glan.taxonomy import Taxonomy, load_taxonomy


def generate(
    out_dir: str | Path,
    n: int,
    config: GenerateConfig | None = None,
    taxonomy: Taxonomy | None = None,
    progress: RunProgress | None = None,
    update: bool = False,
    shard: tuple[int, int] | None = None,
) -> RunResult:
    """Make `n` instruction pairs into `out_dir`, resuming whatever a previous run left there.

    `update`: the directory was made with another taxonomy or other stage settings; keep what
    still fits and re-make what changed (refused otherwise). `shard=(i, k)`: make only the i-th
    of k disjoint sets of disciplines (merge the shards with `merge_shards`). The config's
    `executor` says where it runs: here, or on a Ray cluster (docs/scale-out.md)."""
    return execute(
        config or GenerateConfig(),
        taxonomy or load_taxonomy(),
        Path(out_dir),
        n,
        progress,
        update=update,
        shard=shard,
    )


def plan(n: int, config: GenerateConfig | None = None, taxonomy: Taxonomy | None = None) -> Plan:
    """What a run of `n` would do, without calling any model."""
    return Pipeline(config or GenerateConfig(), taxonomy or load_taxonomy(), Path("."), n).plan
