"""Small helpers shared by the tests and benches that make runs against the fake server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from glan.config import GenerateConfig
from glan.taxonomy import Taxonomy
from glan.testing.fake_server import FakeServer


def config_for(server: FakeServer, **overrides: Any) -> GenerateConfig:
    """A config whose every stage asks `server` (concurrency 16, patient retries)."""
    data = {
        "llm": {"backend": "openai", "base_url": server.base_url, "model": "fake-model"},
        "concurrency": 16,
        "max_retries": 8,
        **overrides,
    }
    return GenerateConfig.model_validate(data)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def physics_taxonomy(*names: str) -> Taxonomy:
    """A taxonomy holding only Sciences/Physics/NAME for each name."""
    tax = Taxonomy()
    for name in names:
        tax.add(f"Sciences/Physics/{name}")
    return tax


#: Batch options that make a fake batch's turnaround milliseconds.
FAST_BATCH = {"poll_seconds": 0.01, "flush_idle_seconds": 0.05}


def batch_config_for(
    server: Any, backend: str = "openai-batch", **overrides: Any
) -> GenerateConfig:
    """A config whose every stage goes to the fake batch server (glan.testing.fake_batch)."""
    model = "fake-claude" if backend == "anthropic-batch" else "fake-model"
    data = {
        "llm": {"backend": backend, "base_url": server.base_url, "model": model},
        **overrides,
        "batch": {**FAST_BATCH, **overrides.get("batch", {})},
    }
    return GenerateConfig.model_validate(data)


def staged_pairs(run_dir: Path) -> int:
    """Pairs a run (possibly still going, in another thread or process) has staged in its
    state: what a test waits for instead of sleeping. 0 before the table exists."""
    return staged_rows(run_dir, "st_pairs")


def staged_rows(run_dir: Path, table: str) -> int:
    """Rows of one of a run's state tables (glan.run.state), read as staged_pairs reads."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{run_dir / 'glan.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
