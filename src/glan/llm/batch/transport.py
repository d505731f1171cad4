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
  quota goes again, when glan.llm.batch.quota says;
- statuses and finished batches are read by glan.llm.batch.results (a status refused and
  downloads retried; results gone for good counted as lost, at once in the run's usage through
  `on_results_lost`, their lines sent again); their files are deleted once read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from glan.llm.backend import Backend, Completion
from glan.llm.batch.api import BatchAPI, LineKind, LineResult, OverQuota, Refused, Remote
from glan.llm.batch.ledger import BatchLedger, Job
from glan.llm.batch.options import BatchOptions
from glan.llm.batch.pending import Pending
from glan.llm.batch.quota import QuotaGate
from glan.llm.batch.results import ResultReader, StatusReader, ledger_rows, loss_event
from glan.llm.errors import BadRequest, EndpointFatal, RequestFailed
from glan.llm.types import ChatRequest

POLL_AT_ONCE = 8  # live batches polled concurrently


class BatchBackend(Backend):
    batch_pricing = True
    #: Told of results lost for good (model, lines, prompt and completion tokens) as they are
    #: settled, so that what they cost is in the run's usage even if the process dies next.
    on_results_lost: Callable[[str, int, int, int], None] | None = None
    #: Replies batches of this run delivered before it was cut into Ray shards, that no request
    #: used (glan.run.stores.RunReplies.delivered): returned as this ledger's, counted as such.
    delivered_before: Callable[[str], dict[str, Any] | None] | None = None

    def __init__(self, api: BatchAPI, ledger_path: Path | str, options: BatchOptions) -> None:
        self.api = api
        self.options = options
        api.file_expiry_s = options.file_expiry_s
        self.max_concurrency = options.max_open_requests
        self._endpoint = f"{api.access['provider']}|{api.base_url}|{api.model}"
        self._ledger_path = Path(ledger_path)
        self._ledger: BatchLedger | None = None
        self._quota = QuotaGate(*options.limits(api.kind), options.poll_seconds)
        self._reader = ResultReader(api, options.download_tries, options.poll_seconds)
        self._status = StatusReader(api, options.download_tries, options.poll_seconds)
        self._waiting: dict[str, asyncio.Future[LineResult]] = {}
        self._pending = Pending()
        self._creating = 0  # creates under way
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
        # (kind, error, what its batch did for the others) of each round this line failed
        failures: list[tuple[str, str, str]] = []
        while True:
            if self._fatal is not None:
                raise self._fatal
            stored = self.ledger.result(key) or (
                self.delivered_before and self.delivered_before(key)
            )
            if stored:
                return Completion(**stored)
            future = self._waiting.get(key)
            if future is None:
                future = self._waiting[key] = asyncio.get_running_loop().create_future()
                future.add_done_callback(_observe)
                if key not in self._in_job:
                    self._enqueue(key, request)
            # What this line was built with, read before the wait: a waiter that wakes first
            # may adapt and send the line again, built anew, before this one wakes.
            sent = self._sent_as.get(key)
            # Shielded: one waiter stopping must not cancel a line others (or the ledger) await.
            result = await asyncio.shield(future)
            if result.kind == "ok":
                assert result.completion is not None
                return result.completion
            if result.kind == "later" or self.api.adapt(result, request, sent):
                # Sent again, not a round: over a quota, or built as the endpoint now takes
                # it (a refused parameter dropped, a schema in a weaker form).
                continue
            if result.kind in ("request", "refused", "schema"):
                raise BadRequest(result.error)
            failures.append((result.kind, result.error, result.batch))
            if len(failures) >= self.options.max_rounds:
                # The same provider error every round while its batches served other lines is
                # the line's own (a body that breaks the model, as online): replaced. A round
                # whose whole batch failed is the provider's incident, and expiry or mixed
                # errors say nothing of the line: the next run asks again. (A round alone in
                # its batch, the tail of a run, is no evidence either way.)
                batches = {batch for _, _, batch in failures}
                permanent = (
                    len({(kind, error) for kind, error, _ in failures}) == 1
                    and failures[0][0] == "server"
                    and "served" in batches
                    and "incident" not in batches
                )
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
        """Live batches by status, lines done this run, the oldest live batch's age and how
        long batches have been held back by a quota (s)."""
        # Read from the progress thread: tuple() copies the dict's values without yielding.
        live = [job for job in tuple(self._live.values()) if job.batch_id]
        now = time.time()
        return {
            "by_status": dict(Counter(job.status for job in live)),
            "lines_done": self.lines_done,
            "lines_pending": len(self._pending),
            "oldest_s": max((now - job.created for job in live), default=0.0),
            "quota_wait_s": self._quota.waiting_s(),
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
        if key in self._pending:
            return
        line = self.api.line(key, request)
        self._sent_as[key] = self.api.sent_as(request)
        quota = self._quota
        if self._pending.full_with(line, quota.max_lines, quota.max_bytes) and not self._blocked():
            self._flush()
        self._pending.add(key, line)
        if len(self._pending) >= quota.max_lines and not self._blocked():
            self._flush()

    def _flush(self) -> None:
        """Send what waits, in batches within the limits: one batch at a time once a quota
        refused one (glan.llm.batch.quota)."""
        quota = self._quota
        for batch in self._pending.take(quota.max_lines, quota.max_bytes, one=quota.serial):
            self._creating += 1
            self._spawn(self._submit(batch))

    def _blocked(self) -> bool:
        quota = self._quota
        return quota.blocked(self._submitted_live()) or (quota.serial and self._creating > 0)

    async def _flush_loop(self) -> None:
        """A part-full batch goes when requests stop coming or when it has waited long
        enough; a full one as soon as nothing holds it back."""
        options = self.options
        tick = min(1.0, options.flush_idle_seconds / 2)
        while True:
            await asyncio.sleep(tick)
            quota = self._quota
            due = self._pending.due(
                options.flush_idle_seconds,
                options.flush_max_wait_seconds,
                quota.max_lines,
                quota.max_bytes,
            )
            if due and not self._blocked():
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
            self._refused(keys, size, str(exc), self._submitted_live())
            return
        except Refused as exc:
            ledger.settle(local_id, "refused", [], len(keys), error=str(exc))
            self._drop(job, keys)
            await self._delete_files(job)
            raise EndpointFatal(
                f"{self.api.access['provider']} refused a batch of {len(keys)} requests: {exc}"
            ) from None
        finally:
            self._creating -= 1
        ledger.set_batch(local_id, batch_id, "submitted")
        self._known.add(batch_id)
        job.batch_id, job.status = batch_id, "submitted"
        self.lines_submitted += len(keys)
        self._quota.created()

    def _refused(self, keys: list[str], size: int, why: str, others_live: bool) -> None:
        """A batch refused for a quota: its lines go again (when the gate says), or a request
        larger than the quota by itself gives up, as a line refused for its own sake."""
        never = self._quota.refused(len(keys), size, why, others_live)
        if never is None:
            self._answer(keys, {}, "later", f"refused for a quota: {why}")
        else:
            self._answer(keys, {}, "request", never)

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
        remote = await self._status.read(job)
        if remote is None:
            return  # its status was refused: asked again at a later poll
        if remote.status == "lost":  # its lines are answered "missing" and go again
            self.ledger.set_status(job.local_id, "lost", job.done, job.failed)
            job.error = remote.gone
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
        if remote.refused:  # failed validation: for its file, or for a quota (never ran)
            self.ledger.settle(job.local_id, remote.status, [], len(keys), error=remote.refused)
            self._drop(job, keys)
            await self._delete_files(job, remote)
            if remote.retry_later:
                self._refused(keys, job.bytes, remote.refused, self._submitted_live())
                return
            raise EndpointFatal(
                f"{provider} batch {job.batch_id} failed validation: {remote.refused}"
            )
        per_reply = partial(self.ledger.completion_tokens_per_reply, self._endpoint)
        read = await self._reader.read(job, remote, keys, per_reply)
        if read is None:
            return  # a download failed: tried again at a later poll
        found, lost, gone = read
        self._quota.settled()
        replies, tokens = ledger_rows(found)
        self.ledger.settle(
            job.local_id,
            remote.status,
            replies,
            len(keys) - len(replies),
            tokens,
            None,
            (lost.lines, lost.prompt_tokens, lost.completion_tokens),
        )
        if lost.lines:
            self._losses.append(loss_event(job.batch_id, self.model, lost, gone or ""))
            if self.on_results_lost is not None:
                self.on_results_lost(
                    self.model, lost.lines, lost.prompt_tokens, lost.completion_tokens
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
        served = any(r.kind == "ok" for r in found.values())
        for failed in (r for r in found.values() if r.kind != "ok"):
            failed.batch = "served" if served else "alone" if len(keys) == 1 else "incident"
        self._answer(
            keys,
            found,
            "missing",
            f"batch {job.batch_id} {remote.status} without this line"
            + (f" (its results are gone: {gone})" if gone else ""),
        )

    def _answer(
        self, keys: list[str], found: dict[str, LineResult], kind: LineKind, error: str
    ) -> None:
        """Resolve the waiters of these lines: their result, else `kind` (sent again)."""
        for key in keys:
            result = found.get(key) or LineResult(key, kind, error=error)
            self._sent_as.pop(key, None)  # its waiters read it before they began to wait
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
