"""Whether an endpoint serves other requests now: what a body's repeated hard error is judged
against (glan.llm.bodyfaults).

Most of the time the client's other requests show it: one is served within moments. When
nothing else is in flight (the last requests of a run may all be bodies that break the
server), or nothing comes back for a while, the client sends a probe of its own: a few tokens,
counted in the usage as "probe", reported to admission like any request (a probe that fails
counts against the endpoint). A probe body may itself be one that breaks the server, or meet
a gateway's random error, so one that fails is followed at once by another body, up to
`PROBE_BODIES`. A rate-limited probe is no answer: it waits as any rate-limited request does
and goes again.

A probe shows only that the endpoint serves a few tokens without a schema; this client's own
requests served (`real_served`) are counted apart, and the largest of each stage kept to be
sent again (`check`), for what a probe cannot show: an endpoint failing every real request
while it serves probes (glan.llm.outage). A request waiting for another to be served is woken
when one is, or when nothing of the client is in flight any more; it never polls.
"""

from __future__ import annotations

import asyncio
import time

from glan.llm.admission import Admission
from glan.llm.backend import Backend
from glan.llm.errors import BadRequest, RateLimited, RequestFailed, TransientError
from glan.llm.types import ChatRequest, user
from glan.llm.usage import UsageLedger

#: Probe bodies tried in a row while each fails.
PROBE_BODIES = 3
#: How many times a check sends its request again while it fails (glan.llm.outage).
CHECK_TRIES = 3
#: A probe's reply limit, hidden reasoning included (no reasoning headroom is added to it).
PROBE_TOKENS = 8


def prompt_size(request: ChatRequest) -> int:
    """How large a request's prompt is, in characters."""
    return sum(len(message.content) for message in request.messages)


def _as_large(size: int, served: ChatRequest, body_size: int, body: ChatRequest) -> bool:
    """Whether `served` (its prompt `size` characters) is at least as large as `body` and
    has a schema if `body` has one: what fails where `body`'s failure is the endpoint's."""
    return size >= body_size and served.max_tokens >= body.max_tokens and _schema_fits(served, body)


def _schema_fits(served: ChatRequest, body: ChatRequest) -> bool:
    return body.json_schema is None or served.json_schema is not None


class Witness:
    """One client's attempts in flight, its requests served, and its probes (one round out at
    a time, shared by every request waiting for one)."""

    def __init__(self, backend: Backend, admission: Admission, usage: UsageLedger) -> None:
        self.backend = backend
        self.admission = admission
        self.usage = usage
        self.in_flight = 0  # this client's attempts out now, probes included
        self.real_served = 0  # this client's requests served, probes left out
        self.probe_served_at = -1  # real_served when a probe was last served
        self._round: asyncio.Future[bool | None] | None = None
        # Per stage (tag): the largest request served (its prompt's characters), to check with.
        self._served: dict[str, tuple[int, ChatRequest]] = {}
        # Per stage: the last request served, its prompt's size, and `real_served` then.
        self._last: dict[str, tuple[int, ChatRequest, int]] = {}
        self._checks: dict[str, asyncio.Future[TransientError | None]] = {}
        self._next: asyncio.Future[None] | None = None  # done at this client's next success
        self._probes = 0

    async def acquire(self) -> int:
        """A permit from admission (its epoch), counted in flight until `release`."""
        epoch = await self.admission.acquire()
        self.in_flight += 1
        return epoch

    def release(self) -> None:
        self.in_flight -= 1
        self.admission.release()
        if not self.in_flight:  # a request waiting for another to be served probes now
            self._wake()

    def served(self, request: ChatRequest | None = None) -> None:
        """One of this client's requests was served (after admission heard it): `request`,
        or a probe (None)."""
        if request is None:
            self.probe_served_at = self.real_served
        else:
            self.real_served += 1
            size = prompt_size(request)
            largest = self._served.get(request.tag)
            if largest is None or size >= largest[0]:
                self._served[request.tag] = (size, request)
            self._last[request.tag] = (size, request, self.real_served)
        self._wake()

    def _wake(self) -> None:
        waiting = self._next
        if waiting is not None:
            self._next = None
            waiting.set_result(None)

    @property
    def only_probes_served(self) -> bool:
        """Whether probes were served since this client's last request of its own was (or
        before any was)."""
        return self.probe_served_at == self.real_served

    async def rate_limited(self, epoch: int, exc: RateLimited, again: bool) -> None:
        """An attempt admitted in `epoch` met a rate limit; its permit goes back here. The
        first of a request cuts and pauses admission before the permit goes back, so no waiter
        slips in unpaused; a request refused `again` waits alone (a body the endpoint keeps
        refusing "for now" must not cut or pause everyone else at each try)."""
        admission = self.admission
        endpoint = self.backend.endpoint_id
        try:
            if again:
                admission.on_rate_limited(-1, 0.0, str(exc), endpoint)
            else:
                admission.on_rate_limited(epoch, exc.retry_after, str(exc), endpoint)
        finally:
            self.release()
        if again:
            wait = exc.retry_after
            await asyncio.sleep(admission.settings.default_retry_after_s if wait is None else wait)

    async def served_since(self, since: int, patience_s: float) -> bool:
        """Whether the endpoint has served a request since its count of successes was
        `since`: at once when it has; else once a request in flight here is served (waited
        for at most `patience_s`); else after a round of probes, shared by every request
        waiting here. False when no probe was served."""
        admission = self.admission
        deadline = time.monotonic() + patience_s
        while admission.successes <= since:
            left = deadline - time.monotonic()
            if self.in_flight and left > 0:
                await self._next_success(left)
            elif await self._probe() is False:
                return admission.successes > since
        return True

    async def _next_success(self, timeout_s: float) -> None:
        """Until this client's next request is served, or nothing of it is in flight any
        more, or `timeout_s` (a success elsewhere in a cluster is seen when it returns)."""
        waiting = self._next
        if waiting is None:
            waiting = self._next = asyncio.get_running_loop().create_future()
        await asyncio.wait((waiting,), timeout=timeout_s)

    async def _probe(self) -> bool | None:
        """A round of probes sent by this request, or the one out now, awaited: whether a
        probe was served; None when the round was cancelled before it told (its sender was),
        so the request asks again, at no cost. The round runs in the task that started it, so
        an EndpointDown a probe opens is raised there at once (the others hear it a moment
        later, as they would from any request)."""
        shared = self._round
        if shared is not None and not shared.done():
            return await asyncio.shield(shared)
        shared = self._round = asyncio.get_running_loop().create_future()
        shared.add_done_callback(lambda done: done.exception())  # heard, or nobody waits
        try:
            served = await self._probe_round()
        except asyncio.CancelledError:
            shared.set_result(None)
            raise
        except BaseException as exc:
            shared.set_exception(exc)
            raise
        shared.set_result(served)
        return served

    async def _probe_round(self) -> bool:
        for _ in range(PROBE_BODIES):
            served = await self._send_probe()
            if served is not None:
                return served
        return False

    async def _send_probe(self) -> bool | None:
        """Whether a new probe body was served; None when it failed (a hard error may be the
        body's own, a gateway's error or a timeout chance: another body may tell more)."""
        self._probes += 1
        probe = ChatRequest(
            messages=user(f"Reply with the word OK. (probe {self._probes})"),
            max_tokens=PROBE_TOKENS,
            temperature=0.0,
            tag="probe",
            reasoning_headroom=False,
        )
        outcome = await self._attempt(probe)
        if isinstance(outcome, TransientError):
            return None
        return outcome is None

    def reference(self, request: ChatRequest) -> tuple[ChatRequest, bool] | None:
        """A request of the run's own to `check` the endpoint with before `request` is judged
        on the word of probes, and whether it is as large: one served here with a schema if
        `request` has one, at least as large (prompt, reply limit) when there is such a one,
        so that it fails wherever `request`'s failure is the endpoint's (out of memory on long
        prompts, a broken structured-output engine); the largest of `request`'s stage first.
        A smaller one that fails alike still shows the endpoint's failure; served, it tells
        nothing of a larger body. None when none has a schema where one is needed."""
        size = prompt_size(request)
        tags = (request.tag, *self._served)
        for tag in tags:
            largest = self._served.get(tag)
            if largest is not None and _as_large(largest[0], largest[1], size, request):
                return largest[1], True
        for tag in tags:
            largest = self._served.get(tag)
            if largest is not None and _schema_fits(largest[1], request):
                return largest[1], False
        return None

    def served_alike_since(self, request: ChatRequest, since: int) -> bool:
        """Whether a request as large as `request` (as `reference` has it) was served since
        `real_served` was `since`: the last one served of some stage, when it is so."""
        size = prompt_size(request)
        return any(
            served_at > since and _as_large(last_size, last, size, request)
            for last_size, last, served_at in self._last.values()
        )

    async def check(self, reference: ChatRequest) -> TransientError | None:
        """Whether the endpoint serves requests of the run's own now, which a probe cannot
        show: `reference`, served before, is sent again (up to `CHECK_TRIES` times while it
        fails) and its reply dropped. None when it was served (counted in `real_served`);
        else the last error it met (a refusal says nothing of the endpoint: an error without
        a signature). Requests of one stage asking at once share one check."""
        shared = self._checks.get(reference.tag)
        if shared is not None and not shared.done():
            return await asyncio.shield(shared)
        shared = self._checks[reference.tag] = asyncio.get_running_loop().create_future()
        shared.add_done_callback(lambda done: done.exception())  # heard, or nobody waits
        try:
            for _ in range(CHECK_TRIES):  # a random error must not pass for the endpoint's
                outcome = await self._attempt(reference, own=True)
                if outcome is None:
                    break
        except asyncio.CancelledError:
            shared.set_result(TransientError("the check was cancelled"))  # nothing told
            raise
        except BaseException as exc:
            shared.set_exception(exc)
            raise
        failed = None
        if outcome is not None:
            failed = (
                outcome if isinstance(outcome, TransientError) else TransientError(str(outcome))
            )
        shared.set_result(failed)
        return failed

    async def _attempt(self, request: ChatRequest, own: bool = False) -> Exception | None:
        """Send `request` (a probe, or `own`: one of the run's own sent again to check the
        endpoint), its rate limits waited out as any request's (the breaker's rate-limit
        window bounds them); reported to admission and counted in the usage as "probe".
        None when it was served, else the failure."""
        admission = self.admission
        endpoint = self.backend.endpoint_id
        rate_limited = False
        while True:
            admission.check(endpoint)
            epoch = await self.acquire()
            try:
                completion = await self.backend.complete(request)
            except RateLimited as exc:
                await self.rate_limited(epoch, exc, rate_limited)
                rate_limited = True
                continue
            except TransientError as exc:
                self.release()
                admission.on_failure(str(exc), endpoint)
                return exc
            except (BadRequest, RequestFailed) as exc:
                self.release()
                return exc
            except BaseException:
                self.release()
                raise
            self.release()
            admission.on_success()
            self.served(request if own else None)
            self.usage.record(
                "probe",
                self.backend.model,
                completion.prompt_tokens,
                completion.completion_tokens,
                batch=self.backend.batch_pricing,
            )
            return None
