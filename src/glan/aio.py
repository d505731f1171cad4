"""Running the async core from sync code, on uvloop where it is installed.

uvloop roughly halves the event loop's CPU per request against plain asyncio (BENCHMARKS.md),
which is the ceiling of a single-process client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def bounded_map(func, items, window: int) -> list:
    """Apply an async `func` to `items` with at most `window` calls alive; results in order.

    Creating every coroutine up front makes each one's set-up (a cache lookup, say) run in one
    burst before the first reply is handled; a window keeps set-up interleaved with replies.
    """
    results: list = [None] * len(items)
    it = iter(enumerate(items))

    async def worker() -> None:
        for i, item in it:
            results[i] = await func(item)

    await asyncio.gather(*(worker() for _ in range(min(window, len(items)) or 1)))
    return results
