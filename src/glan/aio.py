"""Running the async core from sync code, on uvloop where it is installed.

uvloop roughly halves the event loop's CPU per request against plain asyncio (BENCHMARKS.md),
which is the ceiling of a single-process client.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM stops the block as Ctrl-C does: Kubernetes, Slurm, systemd and Ray send it a
    few seconds before a hard kill, and a run must use them to publish what it has. The
    handler passes the signal to whatever handles SIGINT at that moment (asyncio's runner
    cancels the main task; outside it, KeyboardInterrupt). The yielded list holds the signal
    numbers received, so the caller can say "terminated" and exit 143 rather than 130."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


_gc_depth = 0


@contextmanager
def long_run_gc(young_threshold: int = 50_000) -> Iterator[None]:
    """Collect garbage less often for the length of a long run (restored afterwards).

    A run keeps tens of thousands of objects alive (plan, tasks, connections) and allocates a
    few hundred per request; with the default thresholds the collector walked them often enough
    to take a fifth of the client's CPU (py-spy, BENCHMARKS.md). Freezing what exists at the
    start takes it out of every collection; a larger young generation makes full collections
    rare. Cycles are still collected, just in bigger, rarer batches.
    """
    global _gc_depth
    _gc_depth += 1
    # Runs overlapping in one process: the outermost one restores. A host process that froze
    # its own heap (a pre-fork server) keeps it frozen: glan leaves its collector alone.
    if _gc_depth > 1 or gc.get_freeze_count() > 0:
        try:
            yield
        finally:
            _gc_depth -= 1
        return
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(young_threshold, old[0]), *old[1:])
    try:
        yield
    finally:
        _gc_depth -= 1
        gc.set_threshold(*old)
        gc.unfreeze()


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_leaf(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


@asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """A TaskGroup whose first failure is raised as itself, not as an exception group (see
    `gather_all`): tasks are added as they may run, so only those alive cost memory."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as group:
        raise _first_leaf(group) from None


async def gather_all(coros: Iterable[Awaitable[T]]) -> list[T]:
    """Await all, results in order; the first failure cancels the rest and is raised as itself.

    Unlike asyncio.gather, nothing keeps running after a failure (an endpoint declared down
    stops every open subject at once), and unlike a bare TaskGroup, callers see the error, not
    an exception group."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]  # type: ignore[arg-type]
    except BaseExceptionGroup as group:
        raise _first_leaf(group) from None
    return [t.result() for t in tasks]


async def bounded_map(
    func: Callable[[Any], Awaitable[T]], items: Sequence[Any], window: int
) -> list[T]:
    """Apply an async `func` to `items` with at most `window` calls alive; results in order.

    Creating every coroutine up front makes each one's set-up (a cache lookup, say) run in one
    burst before the first reply is handled; a window keeps set-up interleaved with replies.
    """
    results: list[Any] = [None] * len(items)
    it = iter(enumerate(items))

    async def worker() -> None:
        for i, item in it:
            results[i] = await func(item)

    await gather_all(worker() for _ in range(min(window, len(items)) or 1))
    return results
