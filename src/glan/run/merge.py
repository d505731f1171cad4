"""Merging shard runs: each shard made a disjoint set of disciplines with its own state; the
merge publishes them in the whole run's tree order, so the records equal one unsharded run's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson

from glan import __version__
from glan.config import GenerateConfig
from glan.errors import UserError
from glan.llm.usage import merge_usage
from glan.planner import make_plan, shard_of
from glan.run.rundir import INPUTS_FILE, STATE_FILE, RunDir
from glan.run.state import RunState
from glan.taxonomy import load_taxonomy


def _read(shard: Path) -> dict[str, Any]:
    try:
        manifest = orjson.loads((shard / "manifest.json").read_bytes())
        inputs = orjson.loads((shard / INPUTS_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        raise UserError(
            f"{shard} is not a finished glan shard run (no manifest.json/run.json)"
        ) from None
    if not manifest.get("shard"):
        raise UserError(f"{shard} was not made with --shard I/K")
    return {"manifest": manifest, "inputs": inputs}


def merge_shards(out_dir: Path, shards: list[Path]) -> dict[str, int]:
    if not shards:
        raise UserError("name the shard directories to merge")
    runs = [_read(s) for s in shards]
    first = runs[0]["manifest"]
    count = first["shard"][1]
    indices = sorted(r["manifest"]["shard"][0] for r in runs)
    if indices != list(range(count)) or any(r["manifest"]["shard"][1] != count for r in runs):
        raise UserError(
            f"the shards given are {indices} of {count}: give each of 0..{count - 1} once"
        )
    for shard, run in zip(shards, runs, strict=True):
        if run["inputs"] != runs[0]["inputs"] or run["manifest"]["target"] != first["target"]:
            raise UserError(f"{shard} was made with other inputs or -n than {shards[0]}")
    cfg = GenerateConfig.model_validate(first["config"])
    taxonomy = load_taxonomy(shards[0] / "taxonomy.yaml")
    plan = make_plan(first["target"], taxonomy.disciplines(), cfg)
    by_index = {r["manifest"]["shard"][0]: shard for shard, r in zip(shards, runs, strict=True)}
    states = {i: RunState(path / STATE_FILE) for i, path in by_index.items()}
    run_dir = RunDir(out_dir)
    try:
        with run_dir.opened():
            published = run_dir.publish(
                plan,
                {
                    d.discipline.path: states[shard_of(d.discipline.path, count)]
                    for d in plan.disciplines
                },
            )
            shutil.copyfile(shards[0] / "taxonomy.yaml", out_dir / "taxonomy.yaml")
            run_dir.write_manifest(
                {
                    "glan_version": __version__,
                    "status": _merged_status([r["manifest"]["status"] for r in runs]),
                    "target": first["target"],
                    "seed": first["seed"],
                    "merged_from": [str(s) for s in shards],
                    **published,
                    "usage": _sum_usage([r["manifest"].get("usage", {}) for r in runs]),
                    "cost_usd": round(sum(r["manifest"].get("cost_usd", 0.0) for r in runs), 6),
                    "inputs": runs[0]["inputs"],
                    "taxonomy_fingerprint": first.get("taxonomy_fingerprint"),
                    "config": first["config"],
                }
            )
    finally:
        for state in states.values():
            state.close()
    return published["counts"]


def _merged_status(statuses: list[str]) -> str:
    """complete when every shard is; stopped when any stopped; else short."""
    if all(s == "complete" for s in statuses):
        return "complete"
    return "stopped" if "stopped" in statuses else "short"


def _sum_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for usage in usages:
        total = merge_usage(total, usage)
    return total
