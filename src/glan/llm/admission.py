"""Admission control, once for every backend: how many requests may be in flight, how failures
are retried, and when an endpoint is declared down.

- Concurrency is adaptive (AIMD): a rate limit (HTTP 429, or 503 with Retry-After) halves the
  limit, but only the first of a burst counts (one for a request admitted before the last cut
  says nothing new); Retry-After pauses all admissions; after `limit` successes in a row the
  limit climbs by one.
- A rate limit is the endpoint answering "later", not failing: it never counts toward the
  breaker's failure streak nor toward "never answered", and it is not a retry. A rate-limited
  request waits as long as the endpoint answers anything: it has no patience of its own, so
  which units finish never depends on how the throttling fell (the records are a function of
  the inputs and the replies). Only an endpoint that answers nothing but rate limits for
  `breaker_window_s` stops the run, and the same command resumes it.
- 5xx, timeouts and dropped connections are retried with exponential backoff and full jitter, a
  bounded number of times; a body that keeps failing with the same hard error while others are
  served is tested instead, and given up for its own sake (glan.llm.bodyfaults).
- Admission is something a client is given (`Admission`), one per endpoint: `LocalAdmission`
  in one process, or a cluster-wide one (glan.executors.ray) whose permits are leased in
  blocks from a shared authority, so every worker sees one limit and one breaker.
- The circuit breaker opens (EndpointDown, the run stops, finished work is kept):
  - when the endpoint has failed `breaker_failures` times in a row and nothing succeeded for
    `breaker_window_s` seconds, or at once after `breaker_failures` straight failures if nothing
    ever succeeded (a wrong URL should not take minutes to report);
  - when it has answered nothing but rate limits for `breaker_window_s` seconds (120 s by
    default): an organisation at its limit when a run starts is waited for, one whose key can
    never be served is reported after the window, not in a second.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from glan.llm.errors import EndpointDown


class AdmissionSettings(BaseModel):
    concurrency: int = Field(64, ge=1, description="upper bound on requests in flight")
    min_concurrency: int = Field(1, ge=1)
    max_retries: int = Field(6, ge=0, description="retries per request on 5xx/timeouts/resets")
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    default_retry_after_s: float = Field(
        1.0, ge=0, description="pause after a 429 without Retry-After"
    )
    breaker_failures: int = Field(20, ge=1)
    breaker_window_s: float = Field(
        120.0,
        gt=0,
        description="how long an endpoint may fail (or only rate-limit) before the run stops",
    )
    body_fault_repeats: int = Field(
        16,
        ge=2,
        description="the same hard error this many times in a row, each after the endpoint "
        "served another request, gives a body up for its own sake (glan.llm.bodyfaults)",
    )


@dataclass
class AdmissionStats:
    retries: int = 0
    rate_limited: int = 0
    cuts: int = 0
    failures: int = 0


@dataclass
class AdaptiveLimiter:
    """An awaitable slot pool whose size moves: multiplicative cut, additive climb."""

    settings: AdmissionSettings
    limit: float = 0.0
    in_flight: int = 0
    epoch: int = 0
    paused_until: float = 0.0
    stats: AdmissionStats = field(default_factory=AdmissionStats)
    _waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    _successes: int = 0
    _loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        self.limit = float(self.settings.concurrency)

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch the request was admitted in."""
        while True:
            delay = self.paused_until - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            if self.in_flight < int(self.limit) and not self._waiters:
                self.in_flight += 1
                return self.epoch
            fut: asyncio.Future[None] = self._running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                raise
            # Woken with a slot already reserved for us.
            if time.monotonic() >= self.paused_until:
                return self.epoch
            self.release()  # a Retry-After pause began while we waited: queue again after it

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        # Python 3.11's get_running_loop makes a getpid() system call each time: 2% of the
        # client's CPU when every request waits for a slot. The loop is looked up again only
        # when the one seen last has stopped (a limiter reused by a later asyncio.run).
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def on_success(self) -> None:
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.settings.concurrency:
            self._successes = 0
            self.limit += 1
            self._wake()

    def on_rate_limited(self, admitted_epoch: int, retry_after: float | None) -> None:
        self.stats.rate_limited += 1
        pause = self.settings.default_retry_after_s if retry_after is None else retry_after
        self.paused_until = max(self.paused_until, time.monotonic() + pause)
        if admitted_epoch == self.epoch:
            self.epoch += 1
            self.stats.cuts += 1
            self._successes = 0
            self.limit = max(float(self.settings.min_concurrency), self.limit / 2)


@dataclass
class CircuitBreaker:
    settings: AdmissionSettings
    consecutive_failures: int = 0
    ever_succeeded: bool = False
    successes: int = 0
    last_success: float = field(default_factory=time.monotonic)
    last_error: str = ""
    # When the current run of rate limits began (None: the last answer was not a rate limit).
    rate_limited_since: float | None = None

    def on_success(self) -> None:
        self.consecutive_failures = 0
        self.ever_succeeded = True
        self.successes += 1
        self.last_success = time.monotonic()
        self.rate_limited_since = None

    def on_failure(self, error: str, endpoint: str) -> None:
        self.consecutive_failures += 1
        self.last_error = error
        self.check(endpoint)

    def on_rate_limited(self, error: str, endpoint: str) -> None:
        """The endpoint answered "later": no failure, but a clock that the window bounds."""
        if self.rate_limited_since is None:
            self.rate_limited_since = time.monotonic()
        self.last_error = error
        self.check(endpoint)

    def check(self, endpoint: str) -> None:
        if self.rate_limited_since is not None:
            limited = time.monotonic() - self.rate_limited_since
            if limited >= self.settings.breaker_window_s:
                raise EndpointDown(
                    f"{endpoint} answered only rate limits for {limited:.0f} s "
                    f"(breaker_window_s={self.settings.breaker_window_s:g}); last answer: "
                    f"{self.last_error}. Check the key's quota or lower --concurrency; finished "
                    "work is kept: re-run the same command to resume."
                )
        if self.consecutive_failures < self.settings.breaker_failures:
            return
        quiet = time.monotonic() - self.last_success
        if not self.ever_succeeded or quiet >= self.settings.breaker_window_s:
            raise EndpointDown(
                f"{endpoint} failed {self.consecutive_failures} times in a row "
                f"({'never answered' if not self.ever_succeeded else f'no success for {quiet:.0f} s'}); "
                f"last error: {self.last_error}. Finished work is kept; re-run the same command to resume."
            )

    def raise_if_never_answered(self, endpoint: str) -> None:
        if self.consecutive_failures and not self.ever_succeeded:
            raise EndpointDown(
                f"{endpoint} never answered usefully ({self.consecutive_failures} failures); "
                f"last error: {self.last_error}"
            )


class Admission(ABC):
    """What a client is given, one per endpoint: when a request may be sent (a permit, with the
    epoch of the limit it was granted under), what became of it, and whether the endpoint is
    down. The client calls, per attempt: `check`, `acquire`, then `release` and exactly one of
    `on_success`, `on_rate_limited` or `on_failure` (nothing more for a cancelled attempt, a
    request the endpoint refused for its own sake, or a suspected body's hard error)."""

    settings: AdmissionSettings
    stats: AdmissionStats

    @abstractmethod
    async def acquire(self) -> int:
        """Wait for a permit; returns the epoch (limit generation) it was granted in."""

    @abstractmethod
    def release(self) -> None:
        """Give the permit back."""

    @abstractmethod
    def on_success(self) -> None: ...

    @abstractmethod
    def on_rate_limited(
        self, epoch: int, retry_after: float | None, error: str, endpoint: str
    ) -> None:
        """The endpoint said "later": pause and cut (once per cascade), never a failure."""

    @abstractmethod
    def on_failure(self, error: str, endpoint: str) -> None:
        """A transient failure (5xx, timeout, reset); may open the breaker (EndpointDown)."""

    @abstractmethod
    def check(self, endpoint: str) -> None:
        """Raise EndpointDown when the breaker is open."""

    @property
    @abstractmethod
    def successes(self) -> int:
        """Requests the endpoint has served: what tells a body's hard error from the
        endpoint's (glan.llm.bodyfaults)."""

    @abstractmethod
    def raise_if_never_answered(self, endpoint: str) -> None:
        """After a run: an endpoint that failed every request is reported, not a short run."""


class BreakerBackedAdmission(Admission):
    """An admission whose endpoint health is a `CircuitBreaker` it holds as `self.breaker`."""

    breaker: CircuitBreaker

    @property
    def successes(self) -> int:
        return self.breaker.successes

    def raise_if_never_answered(self, endpoint: str) -> None:
        self.breaker.raise_if_never_answered(endpoint)


class LocalAdmission(BreakerBackedAdmission):
    """Admission within one process: an AIMD limiter and a circuit breaker."""

    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        self.limiter = AdaptiveLimiter(settings)
        self.breaker = CircuitBreaker(settings)
        self.stats = self.limiter.stats
        # Bound once: these run per attempt on the hot path.
        self.acquire = self.limiter.acquire  # type: ignore[method-assign]
        self.release = self.limiter.release  # type: ignore[method-assign]
        self.check = self.breaker.check  # type: ignore[method-assign]

    async def acquire(self) -> int:  # replaced per instance in __init__
        return await self.limiter.acquire()

    def release(self) -> None:  # replaced per instance in __init__
        self.limiter.release()

    def check(self, endpoint: str) -> None:  # replaced per instance in __init__
        self.breaker.check(endpoint)

    def on_success(self) -> None:
        self.limiter.on_success()
        self.breaker.on_success()

    def on_rate_limited(
        self, epoch: int, retry_after: float | None, error: str, endpoint: str
    ) -> None:
        if retry_after is not None and retry_after >= self.settings.breaker_window_s:
            # A spent hourly or daily quota: waiting it out would outlast the breaker window
            # while looking at nothing; say so now (finished work is kept).
            raise EndpointDown(
                f"{endpoint} asks to wait {retry_after:.0f} s (Retry-After), longer than "
                f"breaker_window_s={self.settings.breaker_window_s:g}: its quota is spent for "
                f"now; last answer: {error}. Re-run the same command later to resume."
            )
        self.limiter.on_rate_limited(epoch, retry_after)
        self.breaker.on_rate_limited(error, endpoint)

    def on_failure(self, error: str, endpoint: str) -> None:
        self.breaker.on_failure(error, endpoint)


def backoff_delay(attempt: int, settings: AdmissionSettings) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(settings.backoff_max_s, settings.backoff_base_s * 2**attempt))
