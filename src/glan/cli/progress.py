"""Progress while a run works: a live table on a terminal, a plain line every ~10 s elsewhere
(logs, nohup, CI), nothing with --quiet."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.live import Live
from rich.table import Table

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


def batch_text(progress: RunProgress) -> str:
    """Batches by status, lines done, the oldest live batch's age; "" without batches."""
    if progress.batches is None:
        return ""
    state = progress.batches()
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(state["by_status"].items()))
    oldest = state["oldest_s"]
    age = f"{oldest / 60:.0f} min" if oldest >= 120 else f"{oldest:.0f} s"
    return (
        f"batches: {statuses or 'none live'}; {state['lines_done']:,} lines done, "
        f"{state['lines_pending']:,} waiting to be sent; oldest {age}"
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
        f"glan: {pairs:,}/{progress.target:,} pairs, {requests:,} requests "
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
        # A first line soon (a run that fails at once prints only its error), then every ~10 s.
        def line() -> None:
            console.print(progress_line(progress), markup=False, highlight=False, soft_wrap=True)

        with _every(PLAIN_EVERY_S, line, first=FIRST_LINE_S):
            yield
