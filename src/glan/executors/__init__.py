"""Where a run executes: `local` (one asyncio loop in this process, the default) or `ray`
(shards pulled by workers on a Ray cluster, one admission per endpoint for the whole cluster;
glan.executors.ray). The tree walk knows nothing of either: both run the same Pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from glan.config import GenerateConfig
from glan.pipeline import Pipeline, RunResult
from glan.taxonomy import Taxonomy
from glan.tree.progress import RunProgress


def execute(
    config: GenerateConfig,
    taxonomy: Taxonomy,
    out_dir: Path,
    target: int,
    progress: RunProgress | None = None,
    update: bool = False,
    shard: tuple[int, int] | None = None,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Make `target` pairs into `out_dir` with the executor the config names."""
    if config.executor.kind == "ray":
        from glan.errors import UserError
        from glan.executors.ray.driver import RayRun

        if shard is not None:
            raise UserError("--shard and --executor ray do not mix: Ray shards the run itself")
        return RayRun(config, taxonomy, out_dir, target, progress, update, on_poll).run()
    from glan.aio import run

    pipeline = Pipeline(config, taxonomy, out_dir, target, progress, update=update, shard=shard)
    return run(pipeline.run())
