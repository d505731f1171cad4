"""`glan batches DIR`: a run's provider batches, and `--cancel` for the live ones."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from glan.cli.app import Opt, app, fail, out


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _prices(run_dir: Path) -> dict[str, Any]:
    import orjson

    try:
        manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
        return manifest["config"].get("prices") or {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


def _jobs(store: Path, cancel: bool) -> tuple[list[Any], int]:
    """A store's batches (after cancelling its live ones, with `cancel`) and how many were
    asked to cancel."""
    from glan.llm.batch.ledger import BatchLedger

    ledger = BatchLedger(store)
    try:
        if not cancel:
            return ledger.jobs(), 0
        from glan.aio import run
        from glan.llm.batch.manage import cancel_live

        cancelled = run(cancel_live(ledger))
        return ledger.jobs(), cancelled
    finally:
        ledger.close()


@app.command()
def batches(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (glan generate --out)")],
    cancel: Annotated[
        bool,
        Opt(
            "--cancel",
            help="cancel the live batches (what finished is kept; the same "
            "generate command resumes)",
        ),
    ] = False,
) -> None:
    """List a run's batches. For each: provider, id, status, lines done/failed (and lost, when
    results were gone for good), age, cost (what was lost included), and the shard that sent
    it, for a run made with --executor ray."""
    from rich.table import Table

    from glan.llm.usage import Price
    from glan.run.stores import run_stores

    stores = run_stores(run_dir)
    if not stores:
        fail(f"{run_dir} is not a run directory (no glan.sqlite, no shards/*/glan.sqlite)")
    jobs: list[tuple[str, Any]] = []
    cancelled = 0
    for store in stores:
        where = store.parent.name if store.parent != run_dir else "-"
        found, n = _jobs(store, cancel)
        jobs += [(where, job) for job in found]
        cancelled += n
    if not jobs:
        out.print(f"no batches in {run_dir}", highlight=False)
        return
    sharded = any(where != "-" for where, _ in jobs)
    prices = {model: Price.model_validate(p) for model, p in _prices(run_dir).items()}
    table = Table(box=None, pad_edge=False)
    lost = any(job.lost_lines for _, job in jobs)  # a column only where results were lost
    counts = ("done", "failed", *(("lost",) if lost else ()), "lines")
    for col in (*("shard",) * sharded, "provider", "batch", "status", *counts, "age", "cost"):
        table.add_column(col, justify="right" if col in counts else "left")
    now = time.time()
    for where, job in sorted(jobs, key=lambda item: item[1].created):
        price = prices.get(job.access.get("model", ""))
        cost = "-"
        if price is not None and job.settled:
            prompt = job.prompt_tokens + job.lost_prompt_tokens
            completion = job.completion_tokens + job.lost_completion_tokens
            cost = f"${price.cost(prompt, completion, batch=True):.4f}"
        table.add_row(
            *(where,) * sharded,
            job.access.get("provider", job.provider),
            job.batch_id or f"(staged {job.local_id})",
            job.status + ("" if job.settled else " (live)"),
            f"{job.done:,}",
            f"{job.failed:,}",
            *((f"{job.lost_lines:,}",) if lost else ()),
            f"{job.lines:,}",
            _age(now - job.created),
            cost,
        )
    out.print(table)
    if cancel:
        out.print(
            f"asked {cancelled} live batches to cancel; re-run the same generate command to "
            "resume (what finished is kept)",
            highlight=False,
        )
