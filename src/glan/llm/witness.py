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

A probe shows only that the endpoint serves a few tokens without a schema. What it cannot
show (an endpoint that fails every request of a stage's schema, or every long prompt) is told
by the client's own requests served, kept per exact schema (`served_alike_since`), or by a
check: a request of the body's shape without its text (`shape_check`, sent by `check`;
glan.llm.outage). A request waiting for another to be served is woken when one is, or when
nothing of the client is in flight any more; it never polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple, TypeVar

import orjson

from glan.llm.admission import Admission
from glan.llm.backend import Backend
from glan.llm.disguise import disguise
from glan.llm.errors import BadRequest, RateLimited, RequestFailed, TransientError
from glan.llm.memo import IdentityMemo
from glan.llm.types import ChatRequest, Message, user
from glan.llm.usage import UsageLedger

#: Probe bodies tried in a row while each fails.
PROBE_BODIES = 3
#: A probe's reply limit, hidden reasoning included (no reasoning headroom is added to it).
PROBE_TOKENS = 8
#: The seed of every check (a body's own seed may be what breaks the server).
CHECK_SEED = 0x5EED

T = TypeVar("T")

# A schema, as the key its requests are kept under (the stage schemas are a few long-lived
# dicts, so this is one lookup per request served).
_schema_key = IdentityMemo(lambda schema: orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))


def prompt_size(request: ChatRequest) -> int:
    """How large a request's prompt is, in characters."""
    return sum(len(message.content) for message in request.messages)


def schema_key(request: ChatRequest) -> bytes | None:
    return None if request.json_schema is None else _schema_key(request.json_schema)


def shape_check(body: ChatRequest, n: int, at_most: int | None = None) -> ChatRequest:
    """The `n`-th request of `body`'s shape without its text: the same messages and roles,
    each disguised (glan.llm.disguise: its words replaced, its density in tokens kept), the
    same schema, reply limit and sampling, another seed. It fails wherever `body`'s failure
    is the endpoint's (a stage's schema the engine cannot serve, out of memory on long
    prompts, a chat template that breaks on its turns), and is served where the failure is
    the body's own text's. `at_most`: each message cut so the prompt holds about that many
    characters (the same shape, smaller)."""
    head = f"Reply briefly. (check {n}) "
    texts = [disguise(message.content) for message in body.messages]
    if at_most is not None:
        share = max(at_most // len(texts), 1)
        texts = [text[:share] for text in texts]
    texts[-1] = head + texts[-1][len(head) :]  # as long as the body's, and each check differs
    return ChatRequest(
        messages=tuple(
            Message.model_construct(role=message.role, content=text)
            for message, text in zip(body.messages, texts, strict=True)
        ),
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens,
        seed=CHECK_SEED,
        sample_index=n,
        json_schema=body.json_schema,
        schema_name=body.schema_name,
        tag=body.tag,
        reasoning_headroom=body.reasoning_headroom,
    )


class _Served(NamedTuple):
    size: int  # the prompt's characters
    max_tokens: int
    at: int  # Witness.real_served once it was served

    def as_large(self, request: ChatRequest, since: int) -> bool:
        return (
            self.at > since
            and self.size >= prompt_size(request)
            and (self.max_tokens >= request.max_tokens)
        )


async def shared(
    table: dict[object, asyncio.Future[T]],
    key: object,
    work: Callable[[], Awaitable[T]],
    cancelled: T,
) -> T:
    """`work()`, or its run under `key` still out, awaited: every caller asking at once shares
    one. A run cancelled (its caller was) answers `cancelled` to the others; an error raised
    there is raised in its own task at once and heard by the others a moment later."""
    out = table.get(key)
    if out is not None and not out.done():
        return await asyncio.shield(out)
    out = table[key] = asyncio.get_running_loop().create_future()
    out.add_done_callback(lambda done: done.exception())  # heard, or nobody waits
    try:
        result = await work()
    except asyncio.CancelledError:
        out.set_result(cancelled)
        raise
    except BaseException as exc:
        out.set_exception(exc)
        raise
    finally:
        if table.get(key) is out:
            del table[key]
    out.set_result(result)
    return result


class Witness:
    """One client's attempts in flight, its requests served, and its probes (one round out at
    a time, shared by every request waiting for one)."""

    def __init__(self, backend: Backend, admission: Admission, usage: UsageLedger) -> None:
        self.backend = backend
        self.admission = admission
        self.usage = usage
        self.in_flight = 0  # this client's attempts out now, probes included
        self.real_served = 0  # this client's requests served, probes left out
        self._rounds: dict[object, asyncio.Future[bool | None]] = {}  # one round out at a time
        # Per exact schema (None: none): the last request served and the largest.
        self._served: dict[bytes | None, tuple[_Served, _Served]] = {}
        self._checks: dict[object, asyncio.Future[Exception | None]] = {}
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
        if request is not None:
            self.real_served += 1
            key = schema_key(request)
            last = _Served(prompt_size(request), request.max_tokens, self.real_served)
            kept = self._served.get(key)
            largest = last if kept is None or last.size >= kept[1].size else kept[1]
            self._served[key] = (last, largest)
        self._wake()

    def _wake(self) -> None:
        waiting = self._next
        if waiting is not None:
            self._next = None
            waiting.set_result(None)

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
        return await shared(self._rounds, "probes", self._probe_round, None)

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

    def served_alike_since(self, request: ChatRequest, since: int) -> bool:
        """Whether a request of `request`'s exact schema, its prompt and reply limit at least
        as large, was served since `real_served` was `since` (the last one served of that
        schema or the largest): the endpoint serves that shape. Sizes are in characters,
        which stand for tokens only between texts of one density: a body and its own checks
        (`shape_check` keeps its density), or bodies of one stage."""
        kept = self._served.get(schema_key(request))
        return kept is not None and any(served.as_large(request, since) for served in kept)

    async def check(self, request: ChatRequest) -> Exception | None:
        """`request` (a `shape_check`) sent once, its reply dropped: None when it was served
        (counted in `real_served`), else the failure. Requests asking for the same one at
        once share it."""
        key = request.cache_key(self.backend.endpoint_id)
        cancelled = TransientError("the check was cancelled")  # nothing told
        return await shared(self._checks, key, lambda: self._attempt(request, own=True), cancelled)

    async def _attempt(self, request: ChatRequest, own: bool = False) -> Exception | None:
        """Send `request` (a probe, or `own`: a check of the run's own shape), its rate limits waited out as any request's (the breaker's rate-limit
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
