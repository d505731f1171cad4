"""One admission for a whole cluster: an authority per endpoint that leases permits in blocks.

Why blocks and not a call per request: a permit asked of a remote authority per request costs a
round trip on the hot path (measured: bench/ray_scaling.py, BENCHMARKS.md), and blocking
acquires held in the authority fill its slots and starve the releases that would free them.
Here a worker holds a grant (a number of permits) that it spends and reuses locally, exactly as
`LocalAdmission` does; every `SYNC_S` it sends one report (successes, failures, the rate limits
it met with the epoch each request was admitted in, its demand) and gets back its new grant,
the global epoch and pause, and the breaker's state. The authority never waits: a sync is a few
dictionary updates, answered at once.

The invariants:
- Requests in flight across the cluster never exceed `concurrency`: a worker's reservation is
  the larger of its new grant, the grant it held when it reported (it may have spent that
  during the round trip) and what it reported in flight (a cut leaves requests draining); the
  authority grants only what the others' reservations leave under its limit.
- A 429 (or 503 with Retry-After) seen anywhere pauses and halves admission everywhere: the
  worker cuts its own grant and pauses at once, and reports at once; the authority cuts the
  global limit once per epoch (a rate limit on a request admitted before the last cut says
  nothing new) and every worker gets the pause and its smaller grant at its next sync.
- The limit climbs by one after `limit` successes anywhere in a row, as the local limiter.
- The breaker is global: failure streaks and rate-limit windows are the cluster's.
- A lease lapses: a worker that has not synced for `ttl_s` (killed, partitioned) loses its
  reservation, and a worker that cannot reach the authority for `ttl_s / 2` stops admitting.
- Grants follow demand (requests in flight and waiting): an idle worker holds none, and a busy
  one may hold the whole limit when it is alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from glan.llm.admission import (
    AdaptiveLimiter,
    AdmissionSettings,
    AdmissionStats,
    BreakerBackedAdmission,
    CircuitBreaker,
)
from glan.llm.errors import EndpointDown

SYNC_S = 0.05  # a worker's report interval while it wants more permits or has news
IDLE_SYNC_S = 0.1  # otherwise: a cut or pause reaches every worker within this
LEASE_TTL_S = 10.0

Report = dict[str, Any]
Reply = dict[str, Any]


@dataclass
class _Holder:
    reserved: int = 0
    demand: int = 0
    seen: float = 0.0


@dataclass
class PermitAuthority:
    """The cluster's admission for one endpoint (held by one process: a Ray actor)."""

    settings: AdmissionSettings
    ttl_s: float = LEASE_TTL_S
    limit: float = 0.0
    epoch: int = 0
    paused_until: float = 0.0
    down: str | None = None
    stats: AdmissionStats = field(default_factory=AdmissionStats)
    holders: dict[str, _Holder] = field(default_factory=dict)
    high_water: int = 0  # the largest sum of reservations ever (never above concurrency)
    _successes: int = 0

    def __post_init__(self) -> None:
        self.limit = float(self.settings.concurrency)
        self.breaker = CircuitBreaker(self.settings)

    def sync(self, worker: str, report: Report) -> Reply:
        now = time.monotonic()
        for name in [
            n for n, h in self.holders.items() if n != worker and now - h.seen > self.ttl_s
        ]:
            del self.holders[name]  # a lapsed lease: its worker died or lost the cluster
        self._outcomes(report, now)
        holder = self.holders.setdefault(worker, _Holder())
        holder.seen = now
        holder.demand = int(report.get("demand", 0))
        held = max(int(report.get("granted", 0)), int(report.get("in_flight", 0)))
        others = sum(h.reserved for n, h in self.holders.items() if n != worker)
        demand = sum(h.demand for h in self.holders.values())
        share = math.ceil(self.limit * holder.demand / demand) if demand else 0
        grant = max(0, min(holder.demand, share, int(self.limit) - others))
        holder.reserved = max(grant, held)
        self.high_water = max(self.high_water, others + holder.reserved)
        return {
            "grant": grant,
            # Whether reporting soon can change anything: permits are free, or another worker
            # waits for some this one may hand back.
            "busy": others + holder.reserved < int(self.limit)
            or any(h.demand > h.reserved for n, h in self.holders.items() if n != worker),
            "epoch": self.epoch,
            "pause_s": max(0.0, self.paused_until - now),
            "down": self.down,
            "successes": self.breaker.successes,
            "streak": self.breaker.consecutive_failures,
            "ever_succeeded": self.breaker.ever_succeeded,
            "quiet_s": now - self.breaker.last_success,
            "limited_s": None
            if self.breaker.rate_limited_since is None
            else now - self.breaker.rate_limited_since,
        }

    def _outcomes(self, report: Report, now: float) -> None:
        breaker = self.breaker
        stats = self.stats
        stats.retries += report.get("retries", 0)
        for epoch, retry_after, error, endpoint in report.get("rate_limited", ()):
            stats.rate_limited += 1
            pause = self.settings.default_retry_after_s if retry_after is None else retry_after
            self.paused_until = max(self.paused_until, now + pause)
            if epoch == self.epoch:
                self.epoch += 1
                stats.cuts += 1
                self._successes = 0
                self.limit = max(float(self.settings.min_concurrency), self.limit / 2)
            if breaker.rate_limited_since is None:
                breaker.rate_limited_since = now
            breaker.last_error = error
            self._check(endpoint)
        successes = report.get("successes", 0)
        if successes:
            breaker.on_success()
            breaker.successes += successes - 1
            breaker.consecutive_failures = report.get("tail_failures", 0)
            if report.get("last") == "rate_limited":
                breaker.rate_limited_since = now
            self._successes += successes
            while self._successes >= self.limit and self.limit < self.settings.concurrency:
                self._successes -= int(self.limit)
                self.limit += 1
        else:
            breaker.consecutive_failures += report.get("failures", 0)
        stats.failures += report.get("failures", 0)
        if report.get("failures"):
            breaker.last_error = report.get("last_error", breaker.last_error)
            self._check(report.get("endpoint", "the endpoint"))

    def _check(self, endpoint: str) -> None:
        if self.down is None:
            try:
                self.breaker.check(endpoint)
            except EndpointDown as exc:
                self.down = str(exc)

    def snapshot(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "epoch": self.epoch,
            "reserved": sum(h.reserved for h in self.holders.values()),
            "high_water": self.high_water,
            "workers": len(self.holders),
            "down": self.down,
            **asdict(self.stats),
        }


class LeasedAdmission(BreakerBackedAdmission):
    """A worker's admission: a local limiter whose size is the grant leased from the authority
    (the hot path is `LocalAdmission`'s, with no remote call), and a mirror of the global
    breaker. `sync` sends a report to the authority and returns its reply (a Ray actor call in
    glan.executors.ray; a direct call in tests)."""

    def __init__(
        self,
        settings: AdmissionSettings,
        sync: Callable[[Report], Awaitable[Reply]],
        ttl_s: float = LEASE_TTL_S,
    ) -> None:
        self.settings = settings
        self.limiter = AdaptiveLimiter(settings)
        self.limiter.limit = 0.0  # nothing may be sent before the first grant
        self.breaker = CircuitBreaker(settings)
        self.stats = self.limiter.stats
        self._sync = sync
        self._ttl_s = ttl_s
        self._task: asyncio.Task[None] | None = None
        self._urgent: asyncio.Event | None = None
        self._down: str | None = None
        self._busy = True
        self._reset_report()
        self.release = self.limiter.release  # type: ignore[method-assign]

    def _reset_report(self) -> None:
        self._successes = 0
        self._failures = 0
        self._tail_failures = 0
        self._retries_sent = 0
        self._rate_limited: list[tuple[int, float | None, str, str]] = []
        self._last = ""
        self._last_error = ""
        self._endpoint = ""

    # ---- the hot path ------------------------------------------------------------------------
    async def acquire(self) -> int:
        if self._task is None:
            self._start()
        return await self.limiter.acquire()

    def release(self) -> None:  # replaced per instance in __init__
        self.limiter.release()

    def on_success(self) -> None:
        self._successes += 1
        self._tail_failures = 0
        self._last = "success"
        self.breaker.on_success()

    def on_rate_limited(
        self, epoch: int, retry_after: float | None, error: str, endpoint: str
    ) -> None:
        self.limiter.on_rate_limited(epoch, retry_after)  # cut and pause here at once
        self._rate_limited.append((epoch, retry_after, error, endpoint))
        self._last = "rate_limited"
        if self._urgent is not None:
            self._urgent.set()
        self.breaker.on_rate_limited(error, endpoint)

    def on_failure(self, error: str, endpoint: str) -> None:
        self._failures += 1
        self._tail_failures += 1
        self._last = "failure"
        self._last_error = error
        self._endpoint = endpoint
        self.check(endpoint)
        self.breaker.on_failure(error, endpoint)

    def check(self, endpoint: str) -> None:
        if self._down is not None:
            raise EndpointDown(self._down)
        self.breaker.check(endpoint)

    # ---- the lease -----------------------------------------------------------------------------
    def _start(self) -> None:
        self._urgent = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._lease_loop())

    def _take_report(self) -> Report:
        lim = self.limiter
        report = {
            "successes": self._successes,
            "failures": self._failures,
            "tail_failures": self._tail_failures,
            "retries": self.stats.retries - self._retries_sent,
            "rate_limited": self._rate_limited,
            "last": self._last,
            "last_error": self._last_error,
            "endpoint": self._endpoint,
            "granted": int(lim.limit),
            "in_flight": lim.in_flight,
            "demand": lim.in_flight + len(lim._waiters),
        }
        retries = self.stats.retries
        self._reset_report()
        self._retries_sent = retries
        return report

    def _restore(self, report: Report) -> None:
        """A report the authority never got: its outcomes go out with the next one."""
        self._successes += report["successes"]
        self._failures += report["failures"]
        self._rate_limited[:0] = report["rate_limited"]
        self._retries_sent -= report["retries"]

    async def _lease_loop(self) -> None:
        assert self._urgent is not None
        last_ok = time.monotonic()
        while True:  # for the life of the worker process; cancelled with its loop
            report = self._take_report()
            try:
                reply = await asyncio.wait_for(self._sync(report), self._ttl_s / 2)
            except asyncio.CancelledError:
                raise
            except Exception:  # the authority is slow or gone: keep the outcomes, retry
                self._restore(report)
                if time.monotonic() - last_ok > self._ttl_s / 2:
                    self.limiter.limit = 0.0  # the lease lapsed: admit nothing until renewed
            else:
                last_ok = time.monotonic()
                self._apply(reply, last_ok)
            # Report often only while it matters: requests wait and the authority has permits
            # to give or others wait too, or there is news (rate limits, failures) the others
            # must hear. A worker holding all it can get has nothing to ask for.
            pressed = (
                (report["demand"] > report["granted"] and self._busy)
                or report["rate_limited"]
                or report["failures"]
                or self._rate_limited
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), SYNC_S if pressed else IDLE_SYNC_S)
            self._urgent.clear()

    def _apply(self, reply: Reply, now: float) -> None:
        lim = self.limiter
        lim.epoch = max(lim.epoch, reply["epoch"])
        if reply["pause_s"] > 0:
            lim.paused_until = max(lim.paused_until, now + reply["pause_s"])
        lim.limit = float(reply["grant"])
        lim._wake()
        self._down = reply["down"]
        self._busy = reply["busy"]
        # The breaker mirrors the cluster's, plus what happened here since the report left.
        b = self.breaker
        b.successes = reply["successes"] + self._successes
        b.consecutive_failures = (
            self._tail_failures if self._successes else reply["streak"] + self._failures
        )
        b.ever_succeeded = b.ever_succeeded or reply["ever_succeeded"]
        b.last_success = max(b.last_success, now - reply["quiet_s"])
        limited = reply["limited_s"]
        if self._last != "rate_limited":
            b.rate_limited_since = None if limited is None else now - limited
