"""Reading a batch's status and a finished batch's results, and telling a batch or results gone
for good from a read that failed on the way.

Every result line is matched by custom_id (a duplicate never overrides a reply). A download that
fails on the way (a reset, a connection cut mid-stream, a 5xx every try) is tried again at later
polls, with waits doubling from the poll interval; a provider that answers "no such file" (a
404: the file lapsed or was deleted; Anthropic: the batch archived), or that counts lines done
and offers no file for them, every time has lost the results for good. Then the lines it had answered were paid for and are gone: how many, and what
they cost, is estimated where the provider does not say.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from glan.llm.batch.api import DOWNLOAD_ERRORS, BatchAPI, LineResult, Refused, Remote
from glan.llm.batch.ledger import Job
from glan.llm.errors import EndpointFatal

MAX_WAIT_S = 600.0  # the longest wait between two tries of one download
NOT_FOUND = (404, 410)  # a batch's status refused so: the provider no longer knows it


@dataclass
class Read:
    found: dict[str, LineResult] = field(default_factory=dict)
    gone: str | None = None  # why the results are not there (a 404, archived)
    failed: str | None = None  # why a download failed on the way


@dataclass(frozen=True)
class Loss:
    """Lines a batch answered (and billed) whose results are gone, and their tokens."""

    lines: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False


class StatusReader:
    """A batch's status. Refused (a gateway's hiccup, a batch not listed yet), it is asked
    again at later polls, `tries` times at most, waits doubling from `first_wait_s`; then a
    "not found" means the provider no longer knows the batch (deleted, another account: its
    results are gone), and any other refusal stops the run (the batch is kept)."""

    def __init__(self, api: BatchAPI, tries: int, first_wait_s: float) -> None:
        self.api = api
        self.retries = Retries(tries, first_wait_s)

    async def read(self, job: Job) -> Remote | None:
        """The batch as the provider has it now; None while a refused read waits to be tried
        again."""
        assert job.batch_id is not None
        if not self.retries.due(job.local_id):
            return None
        try:
            remote = await self.api.status(job.batch_id)
        except Refused as exc:
            if not self.retries.spent(job.local_id):
                return None
            if exc.status not in NOT_FOUND:
                raise EndpointFatal(
                    f"could not read the status of {self.api.access['provider']} batch "
                    f"{job.batch_id} after {self.retries.tries} tries: {exc}. It is kept: "
                    "re-run the same command to ask again."
                ) from None
            why = f"the provider no longer knows the batch: {exc}"
            remote = Remote(status="lost", terminal=True, done=job.done, gone=why)
        self.retries.forget(job.local_id)
        return remote


class ResultReader:
    """Reads finished batches, each download tried `tries` times at most (waits doubling from
    `first_wait_s`, at later polls)."""

    def __init__(self, api: BatchAPI, tries: int, first_wait_s: float) -> None:
        self.api = api
        self.retries = Retries(tries, first_wait_s)

    async def read(
        self, job: Job, remote: Remote, keys: list[str], per_reply: Callable[[], float]
    ) -> tuple[dict[str, LineResult], Loss, str | None] | None:
        """The batch's results by custom_id, what was lost with those gone for good (`per_reply`:
        the mean completion tokens of a reply, for the estimate) and why; None while a failed
        download waits for its next try. A download failing on the way every try stops the run:
        the results are still there, and the next run reads them."""
        if not self.retries.due(job.local_id):
            return None
        read = await read_results(self.api, remote, set(keys))
        if (read.failed or read.gone) and not remote.gone:
            if not self.retries.spent(job.local_id):
                return None
            if read.failed:
                raise EndpointFatal(
                    f"could not download the results of {self.api.access['provider']} batch "
                    f"{job.batch_id} after {self.retries.tries} tries: {read.failed}. They "
                    "are kept at the provider: re-run the same command to try again."
                )
        self.retries.forget(job.local_id)
        lost = loss(job, remote, read.found, per_reply()) if read.gone else Loss()
        return read.found, lost, read.gone


def ledger_rows(found: dict[str, LineResult]) -> tuple[list[tuple[str, bytes]], tuple[int, int]]:
    """The replies among results, as the ledger keeps them, and their prompt and completion
    tokens."""
    rows = []
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
            rows.append((key, orjson.dumps(body)))
    return rows, (prompt, completion)


def loss_event(batch_id: str, model: str, lost: Loss, why: str) -> dict[str, Any]:
    """A loss as the manifest's batch_faults lists it."""
    return {"event": "results_lost", "batch": batch_id, "model": model, **asdict(lost)} | {
        "why": why[:300]
    }


async def read_results(api: BatchAPI, remote: Remote, wanted: set[str]) -> Read:
    """Every result line of a finished batch for the custom_ids `wanted`, from each of its
    sources (output and error files, or a results URL) that can be read."""
    read = Read(gone=remote.gone)
    if read.gone is not None:
        return read
    read.gone = remote.unready  # not offered (yet): counted as a 404 is, the rest read
    for source in remote.sources:
        try:
            async for raw in api.lines_of(source):
                result = api.parse(raw)
                seen = read.found.get(result.custom_id)
                if result.custom_id in wanted and (seen is None or seen.kind != "ok"):
                    read.found[result.custom_id] = result
        except Refused as exc:
            read.gone = str(exc)
        except DOWNLOAD_ERRORS as exc:
            read.failed = str(exc) or type(exc).__name__
    return read


class Retries:
    """When each finished batch's download may be tried again: `tries` at most, the waits
    doubling from `first_wait_s`."""

    def __init__(self, tries: int, first_wait_s: float) -> None:
        self.tries = tries
        self.first_wait_s = first_wait_s
        self._failed: dict[str, tuple[int, float]] = {}  # local_id -> (failures, next try)

    def due(self, local_id: str) -> bool:
        return time.monotonic() >= self._failed.get(local_id, (0, 0.0))[1]

    def spent(self, local_id: str) -> bool:
        """One more failure: True once the tries are spent, else the next is scheduled."""
        failures = self._failed.get(local_id, (0, 0.0))[0] + 1
        wait = min(MAX_WAIT_S, self.first_wait_s * 2 ** (failures - 1))
        self._failed[local_id] = (failures, time.monotonic() + wait)
        return failures >= self.tries

    def forget(self, local_id: str) -> None:
        self._failed.pop(local_id, None)


def loss(job: Job, remote: Remote, found: dict[str, LineResult], per_reply: float) -> Loss:
    """What the results that could not be read had cost: the provider's token count of the
    batch less the replies kept, where it gives one (OpenAI); else estimated, the prompt from
    the lines' size (about 4 bytes a token) and the completion from `per_reply`, the mean of
    the replies this endpoint gave (else of those kept from this batch)."""
    kept = [r.completion for r in found.values() if r.kind == "ok" and r.completion is not None]
    lines = max(0, remote.done - len(kept))
    if lines == 0:
        return Loss()
    if remote.tokens is not None:
        prompt, completion = remote.tokens
        return Loss(
            lines,
            max(0, prompt - sum(c.prompt_tokens for c in kept)),
            max(0, completion - sum(c.completion_tokens for c in kept)),
        )
    if not per_reply and kept:
        per_reply = sum(c.completion_tokens for c in kept) / len(kept)
    prompt = job.bytes / max(1, job.lines) / 4 * lines
    return Loss(lines, round(prompt), round(per_reply * lines), estimated=True)
