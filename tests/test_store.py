"""Group commits of the response cache and the run state, and the run-wide helpers around them."""

from __future__ import annotations

import asyncio
import gc
import sqlite3

import pytest

from glan.aio import long_run_gc
from glan.llm.admission import AdaptiveLimiter, AdmissionSettings
from glan.store import COMMIT_INTERVAL_S, GroupCommit, ResponseCache

BODY = {"text": "hi", "finish_reason": "stop"}


def rows_on_disk(path) -> int:
    """What another process would see: a fresh connection reads only committed rows."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM responses").fetchone()[0]


def test_a_reply_stored_outside_an_event_loop_is_committed_at_once(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put("a" * 64, "answers", "m", BODY)
    assert rows_on_disk(tmp_path / "c.sqlite") == 1
    cache.close()


async def test_a_lone_reply_is_committed_in_the_same_loop_turn(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    await asyncio.sleep(COMMIT_INTERVAL_S * 2)  # long after any earlier commit
    cache.put("a" * 64, "answers", "m", BODY)
    assert rows_on_disk(tmp_path / "c.sqlite") == 0  # queued, not yet committed
    assert cache.get("a" * 64) == BODY  # but already readable by this process
    await asyncio.sleep(0)
    assert rows_on_disk(tmp_path / "c.sqlite") == 1
    cache.close()


async def test_replies_arriving_fast_share_a_commit_and_none_waits_past_the_interval(
    tmp_path, monkeypatch
):
    interval = 0.3  # long enough that a slow machine still fits 40 loop turns in it
    monkeypatch.setattr("glan.store.COMMIT_INTERVAL_S", interval)
    cache = ResponseCache(tmp_path / "c.sqlite")
    for i in range(40):  # 40 replies in 40 loop turns
        cache.put(f"{i:064x}", "answers", "m", BODY)
        await asyncio.sleep(0)
    assert rows_on_disk(tmp_path / "c.sqlite") == 1  # the first at once, the rest wait together
    await asyncio.sleep(interval * 1.5)
    assert rows_on_disk(tmp_path / "c.sqlite") == 40
    cache.close()


async def test_group_commit_runs_once_per_burst():
    flushes = []
    commits: GroupCommit

    def flush() -> None:
        commits.flushed()
        flushes.append(1)

    commits = GroupCommit(flush)
    for _ in range(100):
        assert commits.schedule()
    await asyncio.sleep(0)
    assert len(flushes) == 1


async def test_direct_flushes_do_not_multiply_the_timed_commits(monkeypatch):
    interval = 0.05
    monkeypatch.setattr("glan.store.COMMIT_INTERVAL_S", interval)
    timed = []
    commits: GroupCommit

    def flush() -> None:
        commits.flushed()

    def timed_flush() -> None:
        timed.append(1)
        flush()

    commits = GroupCommit(timed_flush)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(60):  # a write every 5 ms for 0.3 s, and a direct flush every 25 ms
        commits.schedule()
        if i % 5 == 4:
            flush()  # as RunState.load does when the walk opens a discipline
        await asyncio.sleep(0.005)
    elapsed = loop.time() - started
    await asyncio.sleep(interval * 2)
    assert len(timed) <= elapsed / interval + 2


def test_group_commit_outside_a_loop_asks_the_caller_to_commit():
    assert GroupCommit(lambda: None).schedule() is False


def test_the_limiter_serves_one_event_loop_after_another():
    limiter = AdaptiveLimiter(AdmissionSettings(concurrency=1))

    async def contend() -> int:
        async def one() -> None:
            await limiter.acquire()
            await asyncio.sleep(0.001)
            limiter.release()

        await asyncio.gather(*(one() for _ in range(5)))  # four of them wait for the slot
        return limiter.in_flight

    assert asyncio.run(contend()) == 0
    assert asyncio.run(contend()) == 0  # a new loop: the waiters' futures belong to it


def test_long_run_gc_leaves_a_heap_the_host_froze_alone(monkeypatch):
    """A host that froze its heap (a pre-fork server) keeps its collector as it set it. Spied
    rather than counted: another thread's objects may join a real frozen heap meanwhile."""
    calls: list[str] = []
    monkeypatch.setattr(gc, "get_freeze_count", lambda: 1_000)  # the host froze its heap
    for name in ("freeze", "unfreeze", "set_threshold"):
        monkeypatch.setattr(gc, name, lambda *args, name=name: calls.append(name))
    with long_run_gc():
        pass
    assert calls == []


def test_long_run_gc_restores_the_collector_even_when_the_run_fails():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), long_run_gc():
        assert gc.get_threshold()[0] >= 50_000
        assert gc.get_freeze_count() > 0
        raise RuntimeError("the run failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_overlapping_long_runs_leave_the_collector_as_they_found_it():
    before = gc.get_threshold()
    first, second = long_run_gc(), long_run_gc()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second still runs
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
