"""A batch API as a Backend: `complete()` puts the request in the current batch and awaits its line.

Everything above a backend (cache, admission, JSON validation, re-asks, accounting) applies to
batch replies unchanged: a re-ask is a new request, so it goes in a later batch. Here:
- custom_id is the request's cache key: identical requests go once, replies are matched by id;
- a batch is sent when it is full (lines or bytes), when no new request came for
  `flush_idle_seconds`, or when its oldest request waited `flush_max_wait_seconds`;
- every batch is staged in the run's ledger before it is created (glan.llm.batch.ledger), and
  every reply downloaded is kept there, so a re-run re-attaches, never pays twice, never loses
  a reply;
- failed, expired, cancelled or missing lines go again in the next batch, `max_rounds` batches
  at most per request and run; then the unit is replaced when the provider failed the line
  with the same error every round (as online, a body that breaks the model), else left to the
  next run. A line refused for a parameter, schema keyword or structured-output form the
  model does not take goes again, built as the endpoint now takes it (glan.llm.refusals; not a
  round); a line refused for its own sake (any other 400) gives up at once, as online. A batch
  refused as a whole (file validation) stops the run with one clear line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from glan.llm.backend import Backend, Completion
from glan.llm.batch.api import BatchAPI, LineResult, Refused, Remote
from glan.llm.batch.ledger import BatchLedger, Job
from glan.llm.batch.options import BatchOptions
from glan.llm.errors import BadRequest, EndpointFatal, RequestFailed
from glan.llm.types import ChatRequest

POLL_AT_ONCE = 8  # live batches polled concurrently


class BatchBackend(Backend):
    batch_pricing = True

    def __init__(self, api: BatchAPI, ledger_path: Path | str, options: BatchOptions) -> None:
        self.api = api
        self.options = options
        self.max_concurrency = options.max_open_requests
        self._endpoint = f"{api.access['provider']}|{api.base_url}|{api.model}"
        self._ledger_path = Path(ledger_path)
        self._ledger: BatchLedger | None = None
        self._max_lines, self._max_bytes = options.limits(api.kind)
        self._waiting: dict[str, asyncio.Future[LineResult]] = {}
        self._pending: list[tuple[str, bytes]] = []
        self._pending_keys: set[str] = set()  # a batch's custom_ids must be unique
        self._pending_bytes = 0
        self._oldest = self._last = 0.0
        self._in_job: dict[str, str] = {}  # custom_id -> the live job holding it
        self._sent_as: dict[str, tuple[int, str]] = {}  # custom_id -> what its line reflected
        self._live: dict[str, Job] = {}
        self._known: set[str] = set()  # batch ids the ledger holds (never adopted twice)
        self._cancel_known: set[str] = set()  # jobs cancelled before this run began
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._start_lock = asyncio.Lock()
        self._fatal: BaseException | None = None
        self._held = False  # a batch was refused for a quota: send no more until one settles
        self.lines_submitted = 0
        self.lines_done = 0

    # ---- Backend ---------------------------------------------------------------------------
    @property
    def endpoint_id(self) -> str:
        return self._endpoint

    @property
    def model(self) -> str:
        return self.api.model

    @property
    def ledger(self) -> BatchLedger:
        if self._ledger is None:
            self._ledger = BatchLedger(self._ledger_path)
        return self._ledger

    async def preflight(self) -> None:
        await self.api.preflight()
        await self._start()

    async def complete(self, request: ChatRequest) -> Completion:
        await self._start()
        key = request.cache_key(self._endpoint)
        failures: list[tuple[str, str]] = []  # (kind, error) of each round this line failed
        while True:
            if self._fatal is not None:
                raise self._fatal
            stored = self.ledger.result(key)
            if stored is not None:
                return Completion(**stored)
            future = self._waiting.get(key)
            if future is None:
                future = self._waiting[key] = asyncio.get_running_loop().create_future()
                future.add_done_callback(_observe)
                if key not in self._in_job:
                    self._enqueue(key, request)
            # Shielded: one waiter stopping must not cancel a line others (or the ledger) await.
            result = await asyncio.shield(future)
            sent = self._sent_as.pop(key, None)
            if result.kind == "ok":
                assert result.completion is not None
                return result.completion
            if result.kind == "later" or self.api.adapt(result, request, sent):
                # Sent again, not a round: over a quota, or built as the endpoint now takes
                # it (a refused parameter dropped, a schema in a weaker form).
                continue
            if result.kind in ("request", "refused", "schema"):
                raise BadRequest(result.error)
            failures.append((result.kind, result.error))
            if len(failures) >= self.options.max_rounds:
                # The same provider error every round is the line's own (a body that breaks
                # the model, as online): replaced. Expiry or mixed errors: the next run asks.
                permanent = len(set(failures)) == 1 and failures[0][0] == "server"
                raise RequestFailed(
                    f"no reply after {len(failures)} batch rounds: {result.error}",
                    permanent=permanent,
                )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.api.aclose()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        self._started = False

    def structured_output_changes(self) -> list[dict[str, Any]]:
        return self.api.structured_output_changes()

    def parameter_changes(self) -> list[dict[str, Any]]:
        return list(self.api.shape.changes)

    # ---- progress --------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Live batches by status, lines done this run, the oldest live batch's age (s)."""
        # Read from the progress thread: tuple() copies the dict's values without yielding.
        live = [job for job in tuple(self._live.values()) if job.batch_id]
        now = time.time()
        return {
            "by_status": dict(Counter(job.status for job in live)),
            "lines_done": self.lines_done,
            "lines_pending": len(self._pending),
            "oldest_s": max((now - job.created for job in live), default=0.0),
        }

    # ---- starting: re-attach to what an earlier process left -------------------------------
    async def _start(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            ledger = self.ledger
            jobs = ledger.jobs(self._endpoint)
            known = self._known
            known.update(job.batch_id for job in jobs if job.batch_id)
            self._cancel_known = {j.local_id for j in jobs if j.status.startswith("cancel")}
            for job in (job for job in jobs if job.live):
                if job.batch_id is None:
                    # Staged, and the process died before the id was written: find the batch.
                    found = await self.api.find(job, known)
                    if found is None:
                        ledger.settle(job.local_id, "never_created", [], 0)
                        continue
                    ledger.set_batch(job.local_id, found, "re-attached")
                    job.batch_id, job.status = found, "re-attached"
                    known.add(found)
                self._live[job.local_id] = job
                for key in ledger.keys_of(job.local_id):
                    self._in_job[key] = job.local_id
            self._spawn(self._poll_loop())
            self._spawn(self._flush_loop())
            self._started = True

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._fail_all(task.exception())  # type: ignore[arg-type]

    def _fail_all(self, exc: BaseException) -> None:
        """A failure no request can get past (a refused key, a refused batch): every waiter
        gets it, and so does every later request."""
        if not isinstance(exc, EndpointFatal):
            exc = EndpointFatal(f"batch transport failed: {exc!r}")
        self._fatal = self._fatal or exc
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(self._fatal)
        self._waiting.clear()

    # ---- sending ---------------------------------------------------------------------------
    def _enqueue(self, key: str, request: ChatRequest) -> None:
        if key in self._pending_keys:
            return
        line = self.api.line(key, request)
        self._sent_as[key] = self.api.sent_as(request)
        if self._pending and (
            len(self._pending) >= self._max_lines
            or self._pending_bytes + len(line) > self._max_bytes
        ):
            self._flush()
        now = time.monotonic()
        if not self._pending:
            self._oldest = now
        self._last = now
        self._pending.append((key, line))
        self._pending_keys.add(key)
        self._pending_bytes += len(line)
        if len(self._pending) >= self._max_lines:
            self._flush()

    def _flush(self) -> None:
        items, self._pending, self._pending_bytes = self._pending, [], 0
        self._pending_keys = set()
        if items:
            self._spawn(self._submit(items))

    async def _flush_loop(self) -> None:
        """A part-full batch goes when requests stop coming (never a wait for a size that
        cannot come) or when it has waited long enough."""
        options = self.options
        tick = min(1.0, options.flush_idle_seconds / 2)
        while True:
            await asyncio.sleep(tick)
            if not self._pending or (self._held and self._submitted_live()):
                continue
            now = time.monotonic()
            if (
                now - self._last >= options.flush_idle_seconds
                or now - self._oldest >= options.flush_max_wait_seconds
            ):
                self._flush()

    def _submitted_live(self) -> bool:
        return any(job.batch_id for job in self._live.values())

    async def _submit(self, items: list[tuple[str, bytes]]) -> None:
        keys = [key for key, _ in items]
        lines = [line for _, line in items]
        size = sum(map(len, lines))
        local_id = uuid.uuid4().hex[:16]
        ledger = self.ledger
        # The intent first: from here a crash leaves a record a re-run can find the batch by.
        job = ledger.stage(local_id, self._endpoint, self.api.kind, self.api.access, keys, size)
        self._live[local_id] = job
        for key in keys:
            self._in_job[key] = local_id
        try:
            batch_id = await self.api.create(
                job, lines, lambda file_id: ledger.set_file(local_id, file_id), self._known
            )
        except Refused as exc:
            ledger.settle(local_id, "refused", [], len(keys), error=str(exc))
            self._drop(job, keys)
            raise EndpointFatal(
                f"{self.api.access['provider']} refused a batch of {len(keys)} requests: {exc}"
            ) from None
        ledger.set_batch(local_id, batch_id, "submitted")
        self._known.add(batch_id)
        job.batch_id, job.status = batch_id, "submitted"
        self.lines_submitted += len(keys)

    def _drop(self, job: Job, keys: list[str]) -> None:
        self._live.pop(job.local_id, None)
        for key in keys:
            if self._in_job.get(key) == job.local_id:
                del self._in_job[key]

    # ---- polling and settling --------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.poll_seconds)
            await self.poll_once()

    async def poll_once(self) -> None:
        """Poll every submitted live batch once and settle those that finished: their replies
        are kept in the ledger whether or not a request still waits for them."""
        jobs = [job for job in self._live.values() if job.batch_id]
        for start in range(0, len(jobs), POLL_AT_ONCE):
            await asyncio.gather(*(self._poll(job) for job in jobs[start : start + POLL_AT_ONCE]))

    async def _poll(self, job: Job) -> None:
        assert job.batch_id is not None
        try:
            remote = await self.api.status(job.batch_id)
        except Refused as exc:
            # The provider no longer knows the batch (deleted, another account): its lines
            # are answered "missing" and go again.
            remote = Remote(status="lost", terminal=True, refused=None)
            self.ledger.set_status(job.local_id, "lost", job.done, job.failed)
            job.error = str(exc)
        if not remote.terminal:
            if (remote.status, remote.done, remote.failed) != (job.status, job.done, job.failed):
                job.status, job.done, job.failed = remote.status, remote.done, remote.failed
                self.ledger.set_status(job.local_id, remote.status, remote.done, remote.failed)
            return
        await self._settle(job, remote)

    async def _settle(self, job: Job, remote: Remote) -> None:
        """Read every result line of a finished batch, keep the replies, resolve the waiters;
        lines absent from the output (expired, cancelled, dropped) are answered "missing"."""
        assert job.batch_id is not None
        keys = self.ledger.keys_of(job.local_id)
        wanted = set(keys)
        found: dict[str, LineResult] = {}
        if remote.refused and not remote.retry_later:
            self.ledger.settle(job.local_id, remote.status, [], len(keys), error=remote.refused)
            self._drop(job, keys)
            raise EndpointFatal(
                f"{self.api.access['provider']} batch {job.batch_id} failed validation: "
                f"{remote.refused}"
            )
        if remote.retry_later:
            # Over the enqueued-token quota: hold until another batch settles; with none
            # other out there, this batch alone is too large for the quota: halve them.
            self._held = True
            if not any(j.batch_id for j in self._live.values() if j is not job):
                if len(keys) <= 1:
                    raise EndpointFatal(
                        f"{self.api.access['provider']} refused a batch of one request for "
                        f"its quota: {remote.refused}"
                    )
                self._max_lines = min(self._max_lines, max(1, len(keys) // 2))
        else:
            self._held = False
            async for result in self.api.results(job.batch_id, remote):
                seen = found.get(result.custom_id)
                if result.custom_id in wanted and (seen is None or seen.kind != "ok"):
                    found[result.custom_id] = result  # a duplicate never overrides a reply
        replies = []
        prompt = completion = 0
        for key, result in found.items():
            if result.kind == "ok" and result.completion is not None:
                c = result.completion
                prompt += c.prompt_tokens
                completion += c.completion_tokens
                body = {
                    "text": c.text,
                    "finish_reason": c.finish_reason,
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                }
                replies.append((key, orjson.dumps(body)))
        self.ledger.settle(
            job.local_id,
            remote.status,
            replies,
            len(keys) - len(replies),
            (prompt, completion),
            remote.refused,
        )
        self.lines_done += len(replies)
        self._drop(job, keys)
        if remote.cancelled and job.local_id not in self._cancel_known:
            # Cancelled from outside while this run waited: the user means "stop spending".
            # The replies are kept; the same command resumes and sends only what is missing.
            raise EndpointFatal(
                f"{self.api.access['provider']} batch {job.batch_id} was cancelled (glan "
                "batches --cancel, or the provider's console): stopping. What finished is "
                "kept; re-run the same command to resume."
            )
        for key in keys:
            result = found.get(key) or LineResult(
                key,
                "later" if remote.retry_later else "missing",
                error=f"batch {job.batch_id} {remote.status} without this line",
            )
            future = self._waiting.pop(key, None)
            if future is not None and not future.done():
                future.set_result(result)


def _observe(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen (no "exception never retrieved" when no waiter is left)."""
    if not future.cancelled():
        future.exception()
