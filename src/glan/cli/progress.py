"""Progress while a run works (generate: a live table) or a long step runs (clean, export,
upload, report: bars): on a terminal, live; elsewhere (logs, nohup, CI) a plain line every
~10 s; nothing with --quiet."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import TaskID
from rich.table import Table

from glan.cli.app import plural
from glan.llm.usage import sum_cost
from glan.post.progress import Steps
from glan.tree.progress import RunProgress

PLAIN_EVERY_S = 10.0
FIRST_LINE_S = 2.0


def _tokens(progress: RunProgress) -> int:
    usage = progress.usage.as_dict() if progress.usage else {}
    return sum(
        r["prompt_tokens"] + r["completion_tokens"]
        for rows in usage.values()
        for r in rows.values()
    )


def _eta(left: int, done: int, elapsed: float) -> str:
    if done <= 0 or left <= 0:
        return "-"
    seconds = left * elapsed / done
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _age(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def batch_text(progress: RunProgress) -> str:
    """Batches by status, lines done, the oldest live batch's age, and how long a provider's
    quota has held batches back; "" without batches."""
    if progress.batches is None:
        return ""
    state = progress.batches()
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(state["by_status"].items()))
    waited = state.get("quota_wait_s", 0.0)
    return (
        f"batches: {statuses or 'none live'}; {state['lines_done']:,} lines done, "
        f"{state['lines_pending']:,} waiting to be sent; oldest {_age(state['oldest_s'])}"
        + (f"; held back by the provider's quota for {_age(waited)}" if waited else "")
    )


def progress_table(progress: RunProgress) -> Table:
    elapsed = max(1e-6, time.monotonic() - progress.started)
    table = Table(box=None, pad_edge=False, caption=batch_text(progress) or None)
    for col in ("stage", "done/planned", "failed", "req/s", "tokens", "spend", "ETA"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    usage = progress.usage.as_dict() if progress.usage else {}
    for name, st in progress.stages.items():
        rows = usage.get(name, {}).values()
        tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
        spend = sum(r["cost_usd"] for r in rows)
        table.add_row(
            name,
            f"{st.done:,}/{max(st.planned, st.done):,}",
            str(st.failed),
            f"{st.done / elapsed:.1f}",
            f"{tokens:,}",
            f"${spend:.4f}",
            _eta(max(0, st.planned - st.done), st.done, elapsed),
        )
    if progress.notes:
        table.caption = _notes(progress)
    return table


def _notes(progress: RunProgress) -> str:
    return ", ".join(f"{key} {value}" for key, value in progress.notes.items())


def progress_line(progress: RunProgress) -> str:
    """One plain line: pairs, requests, tokens/s, ETA."""
    elapsed = max(1e-6, time.monotonic() - progress.started)
    pairs = progress.pairs()
    new_pairs = pairs - progress.resumed_pairs
    requests = sum(st.done for st in progress.stages.values())
    tokens = _tokens(progress)
    left = max(0, progress.target - pairs)
    batches = batch_text(progress)
    return (
        f"glan: {pairs:,}/{progress.target:,} pairs, {plural(requests, 'request')} "
        f"({requests / elapsed:.1f}/s), {tokens / elapsed:,.0f} tokens/s, "
        f"ETA {_eta(left, new_pairs, elapsed) if new_pairs else 'estimating'}, {elapsed:.0f} s"
        + (f"; {batches}" if batches else "")
        + (f", {_notes(progress)}" if progress.notes else "")
    )


@contextlib.contextmanager
def _every(seconds: float, tick: Callable[[], None], first: float | None = None) -> Iterator[None]:
    """Call `tick` from a thread every `seconds` (first after `first`) while the block runs,
    and once more at its end when `first` is None (the final state of a live display)."""
    stop = threading.Event()

    def loop() -> None:
        if not stop.wait(seconds if first is None else first):
            tick()
            while not stop.wait(seconds):
                tick()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if first is None:
            tick()


@contextlib.contextmanager
def show_progress(progress: RunProgress, console: Console, quiet: bool) -> Iterator[None]:
    if quiet:
        yield
    elif console.is_terminal:
        live = Live(progress_table(progress), console=console, refresh_per_second=4)
        with live, _every(0.25, lambda: live.update(progress_table(progress))):
            yield
    else:
        with _plain_lines(console, lambda: progress_line(progress)):
            yield


def _plain_lines(console: Console, line: Callable[[], str]) -> contextlib.AbstractContextManager:
    """A first line soon (a command that fails at once prints only its error), then every ~10 s."""

    def tick() -> None:
        console.print(line(), markup=False, highlight=False, soft_wrap=True)

    return _every(PLAIN_EVERY_S, tick, first=FIRST_LINE_S)


def _amount(n: float, unit: str) -> str:
    return f"{n / 1e6:,.0f} MB" if unit == "bytes" else f"{n:,.0f} {unit}"


def _fraction(done: int, total: int | None, unit: str) -> str:
    """'1,200/4,000 MB', '25/30 records', or just the count when the total is unknown."""
    if unit == "bytes":
        scaled = f"{done / 1e6:,.0f}" + (f"/{total / 1e6:,.0f}" if total else "")
        return f"{scaled} MB"
    return f"{done:,}" + (f"/{total:,}" if total else "") + f" {unit}"


def step_line(steps: Steps) -> str:
    """One plain line about the current step of clean, export, upload or eval (and, where the
    steps are known ahead, the whole command's)."""
    step, outlook = steps.current, steps.outlook()
    if step is None:
        return "glan: starting" + (f" ({outlook})" if outlook else "")
    elapsed = max(1e-6, time.monotonic() - step.started)
    rate = step.done / elapsed
    if not step.unit:  # a step that counts nothing, such as loading a model
        line = f"glan: {step.name}"
    elif step.total:
        left = max(0, step.total - step.done)
        line = (
            f"glan: {step.name}: {_fraction(step.done, step.total, step.unit)} "
            f"({100 * step.done / step.total:.0f}%), "
            f"{_amount(rate, step.unit)}/s, ETA {_eta(left, step.done, elapsed)}"
        )
    else:
        line = f"glan: {step.name}: {_fraction(step.done, None, step.unit)}, {_amount(rate, step.unit)}/s"
    return f"{line}; {outlook}" if outlook else line


@contextlib.contextmanager
def show_steps(steps: Steps, console: Console, quiet: bool = False) -> Iterator[None]:
    """Bars on a terminal (one per step, as steps begin), a plain line every ~10 s elsewhere."""
    if quiet:
        yield
    elif console.is_terminal:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bars = Progress(  # text as written: a column would read markup and emoji codes
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[amount]}", markup=False),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        tasks: dict[int, TaskID] = {}
        whole = bars.add_task("", total=None, amount="", visible=False)

        def refresh() -> None:
            outlook = steps.outlook()
            if outlook:  # the whole command: a line above its steps' bars
                bars.update(whole, description=outlook, visible=True)
            for i, step in enumerate(list(steps.steps)):
                amount = _fraction(step.done, step.total, step.unit) if step.unit else ""
                if i not in tasks:
                    tasks[i] = bars.add_task(step.name, total=step.total, amount=amount)
                bars.update(tasks[i], completed=step.done, total=step.total, amount=amount)

        with bars, _every(0.25, refresh):
            yield
    else:
        with _plain_lines(console, lambda: step_line(steps)):
            yield


# ---- closing lines of `glan generate` --------------------------------------------------------


def _made(manifest: dict[str, Any]) -> tuple[int, int]:
    """(pairs published, pairs this run or shard plans): a shard plans its share of -n."""
    made = manifest["counts"]["instructions"]
    return made, made + manifest.get("missing", 0)


def _tree_counts(manifest: dict[str, Any]) -> str:
    counts = manifest["counts"]
    return (
        f"{plural(counts['subjects'], 'subject')}, "
        f"{plural(counts['syllabi'], 'syllabus', 'syllabi')}"
    )


def _spend(usage: dict[str, Any]) -> str:
    tokens = sum(
        r["prompt_tokens"] + r["completion_tokens"]
        for rows in usage.values()
        for r in rows.values()
    )
    return f"{tokens:,} tokens, ${sum_cost(usage):.4f}"


def finished_line(manifest: dict[str, Any], n: int, records: Path) -> str:
    """What a finished `glan generate` made: pairs against what it planned (a shard, its
    share), the tree, and what it spent: this invocation's tokens and cost, and, when earlier
    invocations spent too, the run's in all, each labelled (never one beside the other)."""
    made, planned = _made(manifest)
    pairs = f"{made:,}/{planned:,} pairs"
    shard = manifest.get("shard")
    if shard:
        pairs = f"shard {shard[0]}/{shard[1]}: {pairs} (its share of {n:,}: glan merge joins the shards)"
    resumed = manifest.get("resumed_pairs", 0)
    this_run, in_all = _spend(manifest["usage_this_invocation"]), _spend(manifest["usage"])
    spend = this_run if this_run == in_all else f"this run {this_run} (all runs: {in_all})"
    return (
        f"{pairs}{f' ({resumed:,} from earlier runs)' if resumed else ''}, "
        f"{_tree_counts(manifest)}, {spend}, {manifest['elapsed_s']:.1f} s -> {records}"
    )


def stopped_line(how: str, out_dir: Path, manifest: dict[str, Any] | None) -> str:
    """What a stopped run keeps: its published pairs and tree, and every reply received (each
    cached, so a re-run pays for none of them again), over every invocation."""
    if manifest is None:  # stopped before anything was published
        return f"{how}: nothing published yet in {out_dir}; re-run the same command to resume"
    made, planned = _made(manifest)
    usage = manifest.get("usage") or {}
    replies = sum(r["requests"] for rows in usage.values() for r in rows.values())
    cost = manifest.get("cost_usd") or 0
    spent = f", ${cost:.4f}" if cost else ""
    return (
        f"{how}: {made:,}/{planned:,} pairs so far in {out_dir} ({_tree_counts(manifest)}; "
        f"{plural(replies, 'reply', 'replies')} received{spent}, kept: none is paid for twice); "
        "re-run the same command to resume"
    )
