"""The Python API, mirroring the CLI: everything `glan generate` does is one call here."""

from __future__ import annotations

from pathlib import Path

from glan.aio import run
from glan.config import GenerateConfig
from glan.pipeline import Pipeline, RunProgress, RunResult
from glan.planner import Plan
from glan.taxonomy import Taxonomy, load_taxonomy


def generate(
    out_dir: str | Path,
    n: int,
    config: GenerateConfig | None = None,
    taxonomy: Taxonomy | None = None,
    progress: RunProgress | None = None,
) -> RunResult:
    """Make `n` instruction pairs into `out_dir` (resuming whatever a previous run left there)."""
    pipeline = Pipeline(
        config or GenerateConfig(), taxonomy or load_taxonomy(), Path(out_dir), n, progress
    )
    return run(pipeline.run())


def plan(n: int, config: GenerateConfig | None = None, taxonomy: Taxonomy | None = None) -> Plan:
    """What a run of `n` would do, without calling any model."""
    return Pipeline(config or GenerateConfig(), taxonomy or load_taxonomy(), Path("."), n).plan
