"""The one way the rest of glan talks to a model: cache, admission, validation, accounting.

`LLMClient.chat` returns a reply from the cache when one exists (never sending it again),
otherwise sends it through the admission it was given (glan.llm.admission: local, or shared by
a cluster) with bounded retries, validates JSON replies against the request's schema, re-asks
with the validation error when they do not fit, and records tokens and cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from glan.llm.admission import Admission, AdmissionSettings, LocalAdmission, backoff_delay
from glan.llm.backend import Backend, Completion
from glan.llm.bodyfaults import BodyFaults, FailureRun
from glan.llm.errors import (
    BadRequest,
    EndpointDown,
    RateLimited,
    RequestFailed,
    TransientError,
)
from glan.llm.jsonreply import InvalidReply, parse_reply
from glan.llm.outage import OutageWatch, Verdict
from glan.llm.types import ChatRequest, ChatResponse, Message, Usage
from glan.llm.usage import UsageLedger
from glan.llm.witness import Witness
from glan.store import ResponseCache

REASK_JSON = (
    "That reply could not be used: {error}. Reply again with only the JSON value, "
    "complete and matching the schema."
)
REASK_TEXT = "That reply could not be used: {error}. Reply again."

# A caller's own test of a reply that passed the schema: the reason to re-ask with, or None.
ReplyCheck = Callable[[ChatResponse], str | None]


class LLMClient:
    def __init__(
        self,
        backend: Backend,
        cache: ResponseCache | None = None,
        admission: Admission | AdmissionSettings | None = None,
        usage: UsageLedger | None = None,
        max_reasks: int = 2,
    ) -> None:
        """`admission`: the endpoint's admission (shared by every client of the endpoint, or by
        a cluster), or settings for a local one (default: the backend's own concurrency)."""
        self.backend = backend
        self.cache = cache
        if not isinstance(admission, Admission):
            admission = LocalAdmission(
                admission or AdmissionSettings(concurrency=backend.max_concurrency)
            )
        self.admission = admission
        self.settings = admission.settings
        self.bodies = BodyFaults(self.settings.body_fault_repeats, cache, backend.endpoint_id)
        self.usage = usage or UsageLedger()
        self.witness = Witness(backend, admission, self.usage)
        self.outages = OutageWatch(self.bodies, self.witness, backend.endpoint_id)
        self.max_reasks = max_reasks
        self._preflighted = False
        self._preflight_lock = asyncio.Lock()

    @property
    def stats(self):
        return self.admission.stats

    async def ensure_ready(self) -> None:
        async with self._preflight_lock:
            if not self._preflighted:
                await self.backend.preflight()
                self._preflighted = True

    def cached(
        self, request: ChatRequest, key: str | None = None, check: ReplyCheck | None = None
    ) -> ChatResponse | None:
        """The stored reply for this request, if any (and if it passes `check`); sends nothing."""
        if self.cache is None:
            return None
        body = self.cache.get(key or request.cache_key(self.backend.endpoint_id))
        if body is None:
            return None
        # Only the text is stored (half the bytes written); the JSON is re-derived from it.
        if request.json_schema is not None:
            try:
                body["parsed"] = parse_reply(body["text"], request.json_schema)
            except InvalidReply:
                return None  # the schema changed under the same key: ask again
        hit = ChatResponse(**body, cached=True)
        if check is not None and check(hit) is not None:
            return None  # the caller's checks changed under the same key: ask again
        return hit

    async def chat(self, request: ChatRequest, check: ReplyCheck | None = None) -> ChatResponse:
        """The reply to `request`: from the cache, or asked until it parses, fits the schema and
        passes `check` (each failure is re-asked with its reason, `max_reasks` times)."""
        key = request.cache_key(self.backend.endpoint_id)
        hit = self.cached(request, key, check)
        if hit is not None:
            self.usage.record_cached(request.tag, self.backend.model)
            return hit
        await self.ensure_ready()
        try:
            response = await self._ask_until_valid(request, check)
        except RequestFailed:
            self.usage.record_failed(request.tag, self.backend.model)
            self.admission.stats.failures += 1
            raise
        if self.cache is not None:
            self.cache.put(
                key,
                request.tag,
                self.backend.model,
                {
                    "text": response.text,
                    "finish_reason": response.finish_reason,
                    "usage": {
                        "prompt_tokens": response.usage.prompt_tokens,
                        "completion_tokens": response.usage.completion_tokens,
                    },
                    "latency_s": response.latency_s,
                    "reasks": response.reasks,
                },
            )
        return response

    async def _ask_until_valid(
        self, request: ChatRequest, check: ReplyCheck | None = None
    ) -> ChatResponse:
        asked = request
        prompt_tokens = completion_tokens = 0
        for reask in range(self.max_reasks + 1):
            completion, latency = await self._send(asked)
            prompt_tokens += completion.prompt_tokens
            completion_tokens += completion.completion_tokens
            parsed = None
            error = None
            if not completion.text.strip():
                error = "the reply was empty"
            elif request.json_schema is not None:
                try:
                    parsed = parse_reply(completion.text, request.json_schema)
                except InvalidReply as exc:
                    error = str(exc)
                    if completion.finish_reason == "length":
                        error += " (the reply was cut off by the token limit: be more concise)"
            if error is None:
                response = ChatResponse.model_construct(
                    text=completion.text,
                    parsed=parsed,
                    finish_reason=completion.finish_reason,
                    usage=Usage.model_construct(
                        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
                    ),
                    latency_s=latency,
                    cached=False,
                    reasks=reask,
                )
                error = check(response) if check is not None else None
            if error is None:
                self.usage.record(
                    request.tag,
                    self.backend.model,
                    prompt_tokens,
                    completion_tokens,
                    reask,
                    batch=self.backend.batch_pricing,
                )
                return response
            reask_template = REASK_TEXT if request.json_schema is None else REASK_JSON
            asked = request.model_copy(
                update={
                    "messages": (
                        *request.messages,
                        Message(role="assistant", content=completion.text[:4000]),
                        Message(role="user", content=reask_template.format(error=error)),
                    )
                }
            )
        self.usage.record(
            request.tag,
            self.backend.model,
            prompt_tokens,
            completion_tokens,
            0,
            batch=self.backend.batch_pricing,
        )
        raise RequestFailed(
            f"no usable reply after {self.max_reasks} re-asks: {error}", permanent=True
        )

    async def _send(self, request: ChatRequest) -> tuple[Completion, float]:
        """One request through admission, retried on transient failures. Rate limits are
        waited out for as long as the breaker lets the run go on: a request has no patience of
        its own, so which units finish never depends on how the throttling fell.

        A hard error counts toward the body's run of failures (glan.llm.bodyfaults: K in a
        row, each after another request was served, give it up for its own sake). The first
        is retried after a backoff like any failure; the same error again, once another
        request has been served (glan.llm.witness), so that each failure counts. From the
        second counted failure on the body is a suspect: its errors say nothing of the
        endpoint's health (the breaker never hears them) and its tries are outside
        `max_retries` (a test of the body against an endpoint shown to serve, not a retry
        against a failing one). So a body that breaks the server costs K quick tries, not the
        backoff budget, and never leaves a run short. An error that names nothing of the body
        (a gateway's, a timeout) leaves its run as it was: it is the endpoint's, a retry."""
        attempt = 0
        admission = self.admission
        endpoint = self.backend.endpoint_id
        rate_limited = False
        key: str | None = None  # the body's cache key, once it has failed the hard way
        while True:
            admission.check(endpoint)
            if self.outages.down is not None:  # as an open breaker: every request stops
                raise EndpointDown(self.outages.down)
            epoch = await self.witness.acquire()
            started = time.perf_counter()
            try:
                completion = await self.backend.complete(request)
            except RateLimited as exc:
                await self.witness.rate_limited(epoch, exc, rate_limited)
                rate_limited = True
                continue
            except TransientError as exc:
                self.witness.release()
                run = None
                if exc.signature is not None:
                    key = key or request.cache_key(endpoint)
                    run = await self._failed(key, request, exc)
                    if run is None:  # undecided (glan.llm.outage): tried again in a while
                        await asyncio.sleep(self.settings.backoff_base_s)
                        continue
                elif self.bodies.open:  # no outcome of the body: its run, if any, goes on
                    key = key or request.cache_key(endpoint)
                    run = self.bodies.run(key)
                hard = exc.signature is not None
                suspect = run is not None and run.suspect
                if not (suspect and hard):
                    admission.on_failure(str(exc), endpoint)  # it may be the endpoint's
                if not suspect and (run is None or run.tries == 1 or not hard):
                    attempt = await self._back_off(attempt, exc)
                    continue
                # Tried again once another request has been served (by a probe when nothing
                # else is in flight: the last requests of a run may all be bodies that break
                # the server), so that its next failure counts: the same error again is
                # retried once another request has been served since it was counted, a
                # suspect's failure that names nothing once another has been served since
                # this one. Each round of probes not served spends a retry.
                if not (suspect and hard):
                    attempt = self._spend_retry(attempt, exc)
                assert run is not None
                since = run.mark if hard else admission.successes
                while not await self.witness.served_since(since, self.settings.backoff_base_s):
                    attempt = await self._back_off(attempt, exc)
                continue
            except BadRequest as exc:
                self.witness.release()
                raise RequestFailed(str(exc), permanent=True) from None
            except BaseException:
                self.witness.release()
                raise
            self.witness.release()
            admission.on_success()
            self.witness.served(request)
            if self.bodies.open or self.outages.too_large:  # its failures, if any, are over
                key = key or request.cache_key(endpoint)
                self.bodies.ended(key)
                self.outages.served(key)
            return completion, time.perf_counter() - started

    async def _failed(
        self, key: str, request: ChatRequest, exc: TransientError
    ) -> FailureRun | None:
        """Count a hard error of the body `key`: its run of failures, or None when its fate
        waits (glan.llm.outage). Raises RequestFailed when the body is given up (permanent)
        or deferred (undecided, or too large for the endpoint now), EndpointDown when the endpoint fails every request
        of the body's shape with it."""
        assert exc.signature is not None
        run = self.bodies.failed(key, exc.signature, self.admission.successes)
        if not self.bodies.is_given_up(key):
            verdict = await self.outages.judge(key, run, request, exc)
            if verdict is Verdict.WAIT:
                return None
            if verdict is Verdict.DEFER:
                raise RequestFailed(f"undecided whether the body or the endpoint fails: {exc}")
            if verdict is Verdict.TOO_LARGE:
                raise RequestFailed(
                    f"the endpoint fails requests this large now (it serves them smaller): {exc}"
                )
            if verdict is Verdict.GO_ON:
                return run
        self.bodies.give_up(key, run)
        raise RequestFailed(
            f"gave up: the same error {run.count} times in a row while the endpoint served "
            f"other requests: {exc}",
            permanent=True,
        )

    def _spend_retry(self, attempt: int, exc: TransientError) -> int:
        """Retry number `attempt + 1`, or give up when the retries are spent."""
        if attempt >= self.settings.max_retries:
            raise RequestFailed(f"gave up after {attempt} retries: {exc}") from None
        self.admission.stats.retries += 1
        return attempt + 1

    async def _back_off(self, attempt: int, exc: TransientError) -> int:
        """Retry number `attempt + 1`, after its backoff wait."""
        attempt = self._spend_retry(attempt, exc)
        await asyncio.sleep(backoff_delay(attempt - 1, self.settings))
        return attempt

    async def aclose(self) -> None:
        if self.cache is not None:
            self.cache.flush()
        await self.backend.aclose()
