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
  refused as a whole (file validation) stops the run with one clear line; one refused for a
  quota goes again (glan.llm.batch.quota);
- finished batches are read by glan.llm.batch.results (downloads retried; results gone for
  good counted as lost, their lines sent again); their files are deleted once read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from glan.llm.backend import Backend, Completion
from glan.llm.batch.api import BatchAPI, LineKind, LineResult, OverQuota, Refused, Remote
from glan.llm.batch.ledger import BatchLedger, Job
from glan.llm.batch.options import BatchOptions
from glan.llm.batch.quota import QuotaGate
from glan.llm.batch.results import Loss, ResultReader, ledger_rows, loss_event
from glan.llm.errors import BadRequest, EndpointFatal, RequestFailed
from glan.llm.types import ChatRequest

POLL_AT_ONCE = 8  # live batches polled concurrently


class BatchBackend(Backend):
    batch_pricing = True

    def __init__(self, api: BatchAPI, ledger_path: Path | str, options: BatchOptions) -> None:
        self.api = api
        self.options = options
        api.file_expiry_s = options.file_expiry_s
        self.max_concurrency = options.max_open_requests
        self._endpoint = f"{api.access['provider']}|{api.base_url}|{api.model}"
        self._ledger_path = Path(ledger_path)
        self._ledger: BatchLedger | None = None
        max_lines, self._max_bytes = options.limits(api.kind)
        self._quota = QuotaGate(api.access["provider"], max_lines, options.poll_seconds)
        self._reader = ResultReader(api, options.download_tries, options.poll_seconds)
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
        self._losses: list[dict[str, Any]] = []  # results gone for good, this run
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

    def faults(self) -> list[dict[str, Any]]:
        """What the provider did that cost the run (for the manifest): results gone for good
        (their lines and tokens, sent again), and optional fields it refused."""
        refused = [
            {"event": "field_refused", "field": name, "why": why[:300]}
            for name, why in self.api.refused_fields.items()
        ]
        return [*self._losses, *refused]

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
        if (
            self._pending
            and (
                len(self._pending) >= self._quota.max_lines
                or self._pending_bytes + len(line) > self._max_bytes
            )
            and not self._blocked()
        ):
            self._flush()
        now = time.monotonic()
        if not self._pending:
            self._oldest = now
        self._last = now
        self._pending.append((key, line))
        self._pending_keys.add(key)
        self._pending_bytes += len(line)
        if len(self._pending) >= self._quota.max_lines and not self._blocked():
            self._flush()

    def _flush(self) -> None:
        """Send what waits, in batches within the limits (more than one batch's worth waits
        after a hold, or once the batches were halved)."""
        items, self._pending, self._pending_bytes = self._pending, [], 0
        self._pending_keys = set()
        batch: list[tuple[str, bytes]] = []
        size = 0
        for key, line in items:
            full = len(batch) >= self._quota.max_lines or size + len(line) > self._max_bytes
            if batch and full:
                self._spawn(self._submit(batch))
                batch, size = [], 0
            batch.append((key, line))
            size += len(line)
        if batch:
            self._spawn(self._submit(batch))

    def _blocked(self) -> bool:
        return self._quota.blocked(self._submitted_live())

    async def _flush_loop(self) -> None:
        """A part-full batch goes when requests stop coming (never a wait for a size that
        cannot come) or when it has waited long enough."""
        options = self.options
        tick = min(1.0, options.flush_idle_seconds / 2)
        while True:
            await asyncio.sleep(tick)
            if not self._pending or self._blocked():
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
        except OverQuota as exc:
            ledger.settle(local_id, "over quota", [], len(keys), error=str(exc))
            self._drop(job, keys)
            await self._delete_files(job)
            self._quota.refused_at_create(len(keys), exc, self._submitted_live())
            self._answer(keys, {}, "later", f"refused for a quota: {exc}")
            return
        except Refused as exc:
            ledger.settle(local_id, "refused", [], len(keys), error=str(exc))
            self._drop(job, keys)
            await self._delete_files(job)
            raise EndpointFatal(
                f"{self.api.access['provider']} refused a batch of {len(keys)} requests: {exc}"
            ) from None
        ledger.set_batch(local_id, batch_id, "submitted")
        self._known.add(batch_id)
        job.batch_id, job.status = batch_id, "submitted"
        self.lines_submitted += len(keys)
        self._quota.created()

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
            why = f"the provider no longer knows the batch: {exc}"
            remote = Remote(status="lost", terminal=True, done=job.done, gone=why)
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
        lines absent from the output (expired, cancelled, dropped, results gone) are answered
        "missing" and go again."""
        assert job.batch_id is not None
        provider = self.api.access["provider"]
        keys = self.ledger.keys_of(job.local_id)
        found: dict[str, LineResult] = {}
        lost, gone = Loss(), None
        if remote.refused and not remote.retry_later:
            self.ledger.settle(job.local_id, remote.status, [], len(keys), error=remote.refused)
            self._drop(job, keys)
            await self._delete_files(job, remote)
            raise EndpointFatal(
                f"{provider} batch {job.batch_id} failed validation: {remote.refused}"
            )
        if remote.retry_later:
            others = any(j.batch_id for j in self._live.values() if j is not job)
            self._quota.refused_once_validated(len(keys), remote.refused, others)
        else:
            per_reply = partial(self.ledger.completion_tokens_per_reply, self._endpoint)
            read = await self._reader.read(job, remote, keys, per_reply)
            if read is None:
                return  # a download failed: tried again at a later poll
            found, lost, gone = read
            self._quota.settled()
            if lost.lines:
                self._losses.append(loss_event(job.batch_id, self.model, lost, gone or ""))
        replies, tokens = ledger_rows(found)
        self.ledger.settle(
            job.local_id,
            remote.status,
            replies,
            len(keys) - len(replies),
            tokens,
            remote.refused,
            (lost.lines, lost.prompt_tokens, lost.completion_tokens),
        )
        self.lines_done += len(replies)
        self._drop(job, keys)
        await self._delete_files(job, remote)
        if remote.cancelled and job.local_id not in self._cancel_known:
            # Cancelled from outside while this run waited: the user means "stop spending".
            # The replies are kept; the same command resumes and sends only what is missing.
            raise EndpointFatal(
                f"{provider} batch {job.batch_id} was cancelled (glan batches --cancel, or the "
                "provider's console): stopping. What finished is kept; re-run the same "
                "command to resume."
            )
        self._answer(
            keys,
            found,
            "later" if remote.retry_later else "missing",
            f"batch {job.batch_id} {remote.status} without this line"
            + (f" (its results are gone: {gone})" if gone else ""),
        )

    def _answer(
        self, keys: list[str], found: dict[str, LineResult], kind: LineKind, error: str
    ) -> None:
        """Resolve the waiters of these lines: their result, else `kind` (sent again)."""
        for key in keys:
            result = found.get(key) or LineResult(key, kind, error=error)
            future = self._waiting.pop(key, None)
            if future is not None and not future.done():
                future.set_result(result)

    async def _delete_files(self, job: Job, remote: Remote | None = None) -> None:
        """The batch's files (input, output, errors), once its replies are in the ledger: a
        long run never fills the provider's file quota."""
        if self.options.delete_files:
            await self.api.delete_files(job.file_id, *(remote.files if remote else ()))


def _observe(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen (no "exception never retrieved" when no waiter is left)."""
    if not future.cancelled():
        future.exception()
