"""Running the async core from sync code, on uvloop where it is installed.

uvloop roughly halves the event loop's CPU per request against plain asyncio (BENCHMARKS.md),
which is the ceiling of a single-process client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_leaf(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


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
