"""The one way the rest of glan talks to a model: cache, admission, validation, accounting.

`LLMClient.chat` returns a reply from the cache when one exists (never sending it again),
otherwise sends it through the admission it was given (glan.llm.admission: local, or shared by
a cluster) with bounded retries, validates JSON replies against the request's schema, re-asks
with the validation error when they do not fit, and records tokens and cost.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from glan.llm.admission import (
    Admission,
    AdmissionSettings,
    FailureMemory,
    LocalAdmission,
    backoff_delay,
)
from glan.llm.backend import Backend, Completion
from glan.llm.errors import BadRequest, RateLimited, RequestFailed, TransientError
from glan.llm.jsonreply import InvalidReply, parse_reply
from glan.llm.types import ChatRequest, ChatResponse, Message, Usage
from glan.llm.usage import UsageLedger
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
        self.invocation = uuid.uuid4().hex  # tells this run's notes from an earlier run's
        self.usage = usage or UsageLedger()
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
        its own, so which units finish never depends on how the throttling fell."""
        attempt = 0
        admission = self.admission
        memory = FailureMemory(admission.successes, admission.consecutive_failures)
        endpoint = self.backend.endpoint_id
        rate_limited = False
        while True:
            admission.check(endpoint)
            epoch = await admission.acquire()
            started = time.perf_counter()
            try:
                completion = await self.backend.complete(request)
            except RateLimited as exc:
                try:
                    if not rate_limited:
                        # Cut and pause before the permit goes back, so no waiter slips in
                        # unpaused.
                        admission.on_rate_limited(epoch, exc.retry_after, str(exc), endpoint)
                    else:
                        # This request again: a body the endpoint keeps refusing "for now"
                        # must not cut or pause everyone else at each try. It waits alone.
                        admission.on_rate_limited(-1, 0.0, str(exc), endpoint)
                finally:
                    admission.release()
                if rate_limited:
                    await asyncio.sleep(
                        exc.retry_after
                        if exc.retry_after is not None
                        else self.settings.default_retry_after_s
                    )
                rate_limited = True
                continue
            except TransientError as exc:
                admission.release()
                known = self._suspected_earlier(request, exc.signature)
                if not known:  # a body known to break the server says nothing of its health
                    admission.on_failure(str(exc), endpoint)
                if memory.repeats(
                    exc.signature, admission.successes, admission.consecutive_failures, known
                ):
                    # Likely the body itself breaks the server: stop spending backoff on it.
                    # The first time it is deferred to the next run (a flaky endpoint's random
                    # 500s share one text too, and luck must not change the records); given
                    # up for good when a later run sees the same again.
                    if not known:
                        self._suspect(request, exc.signature)
                    raise RequestFailed(
                        f"gave up: the same error twice for this request while others "
                        f"succeeded{' (and in an earlier run)' if known else ''}: {exc}",
                        permanent=known or self.cache is None,
                    ) from None
                if attempt >= self.settings.max_retries:
                    raise RequestFailed(f"gave up after {attempt} retries: {exc}") from None
                admission.stats.retries += 1
                await asyncio.sleep(backoff_delay(attempt, self.settings))
                attempt += 1
                continue
            except BadRequest as exc:
                admission.release()
                raise RequestFailed(str(exc), permanent=True) from None
            except BaseException:
                admission.release()
                raise
            admission.release()
            admission.on_success()
            return completion, time.perf_counter() - started

    def new_invocation(self) -> None:
        """Start a new pass: notes on bodies that break the server made so far count as an
        earlier run's."""
        self.invocation = uuid.uuid4().hex

    def _suspected_earlier(self, request: ChatRequest, signature: str | None) -> bool:
        if self.cache is None or signature is None:
            return False
        key = request.cache_key(self.backend.endpoint_id)
        return self.cache.suspected_earlier(key, signature, self.invocation)

    def _suspect(self, request: ChatRequest, signature: str | None) -> None:
        if self.cache is not None and signature is not None:
            self.cache.suspect(
                request.cache_key(self.backend.endpoint_id), signature, self.invocation
            )

    async def aclose(self) -> None:
        if self.cache is not None:
            self.cache.flush()
        await self.backend.aclose()
