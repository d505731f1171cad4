"""What a provider's batch API must offer the transport, and the HTTP plumbing they share.

A provider turns a request into one JSONL line (custom_id = the request's cache key), creates a
batch from lines, reports a batch's status, streams its result lines (output and errors, in any
order: matched by custom_id, never by position), cancels it and deletes its files. It knows
nothing of GLAN. Optional request fields a provider refuses (the files' expiry) are dropped for
the rest of the run and noted in `dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import aiohttp
import orjson

from glan.llm.backend import Completion
from glan.llm.batch.ledger import Job
from glan.llm.errors import EndpointFatal
from glan.llm.refusals import BodyShape, Refusal
from glan.llm.types import ChatRequest

#: ok: a reply. request: the line's own fault (a 400): asking again is pointless. refused: the
#: model refused a parameter or schema keyword (sent again as the endpoint takes it). schema:
#: the provider refused the structured-output form (that schema steps down, ask again).
#: server: the provider failed the line (retried next round). missing: expired, cancelled or
#: absent (sent again). later: the whole batch was refused for a quota (sent again, not
#: counted as a round).
LineKind = Literal["ok", "request", "refused", "schema", "server", "missing", "later"]
CONTROL_ATTEMPTS = 8  # tries of one control-plane call (upload, create, poll, download)
T = TypeVar("T")


@dataclass(slots=True)
class LineResult:
    custom_id: str
    kind: LineKind
    completion: Completion | None = None
    error: str = ""
    refusal: Refusal | None = None  # kind "refused": what the model refused
    # What a failed line's batch did for the others: "served" some, failed them all (an
    # "incident" at the provider, not the line's fault), or held it "alone" (says nothing).
    batch: Literal["served", "incident", "alone"] = "alone"


@dataclass(slots=True)
class Remote:
    """A provider batch as last seen."""

    status: str
    terminal: bool
    done: int = 0
    failed: int = 0
    # Why the whole batch was refused (file validation), as one line; None when it was not.
    refused: str | None = None
    # Refused for a quota (too many tokens enqueued): its lines are sent again later.
    retry_later: bool = False
    # Where its result lines are (output and error files, or a results URL).
    sources: tuple[str, ...] = ()
    # Someone asked to cancel it (glan batches --cancel, the provider's console).
    cancelled: bool = False
    # The provider's files of the finished batch (output, errors), deleted once read.
    files: tuple[str, ...] = ()
    # Prompt and completion tokens the batch was billed for, where the provider says.
    tokens: tuple[int, int] | None = None
    # Why its results can no longer be read (Anthropic: archived); None while they can.
    gone: str | None = None
    # Why its results cannot be read yet: finished with lines done, and no result file or URL
    # offered (seen on OpenAI): tried again at later polls as a download answering 404 is.
    unready: str | None = None


class Refused(Exception):
    """The provider answered a control call with a 4xx other than 429: a definite no."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class OverQuota(Exception):
    """A batch refused at once for a quota: too many tokens enqueued (Azure's "fail fast"
    create), too many files held (the upload), or a create answered 429 every try (Anthropic's
    processing queue full). Nothing was created."""


class GaveUp(EndpointFatal):
    """A control call failed every try (network errors, 429, 5xx): the provider may answer
    later."""


#: A download that failed on the way (a reset, a connection cut mid-stream, a timeout).
DOWNLOAD_ERRORS = (TimeoutError, aiohttp.ClientError, OSError, GaveUp)


def timestamp(value: Any) -> float:
    """Seconds since the epoch from a provider's time: a number, or an ISO 8601 string (as
    Anthropic and some Azure examples give it); 0 when it is neither."""
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value or "")).timestamp()
    except ValueError:
        return 0.0


def normal_status(value: Any) -> str:
    """A batch status in the providers' documented form: "InProgress" and "Completed", as
    some Azure examples write them, become "in_progress" and "completed"."""
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", str(value or "unknown").strip())
    return text.replace(" ", "_").lower()


def read_key(api_key_env: str | None, default_env: str) -> str | None:
    name = api_key_env or default_env
    key = os.environ.get(name)
    if api_key_env and not key:
        raise EndpointFatal(f"environment variable {api_key_env} (the API key) is not set")
    return key or None


class BatchAPI(ABC):
    #: Which provider's limits apply: openai, azure or anthropic.
    kind: str
    #: Where batches are listed, read and cancelled.
    batches_path: str
    #: How the reply's JSON schema is sent, to begin with (one of `schema_modes`).
    schema_mode: str
    #: The provider's structured-output forms, strongest first: a schema refused in one form
    #: steps down to the next (that schema only: another stage's schema keeps its form).
    schema_modes: tuple[str, ...]
    #: Base delay of control-call retries (seconds); tests make it tiny.
    backoff_s: float = 1.0

    #: Seconds after which the provider deletes the files it holds for a batch (None: its
    #: default); the transport sets it from the options.
    file_expiry_s: int | None = None

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise EndpointFatal(
                f"invalid base URL {base_url!r}: it must start with http:// or https://"
            )
        self.base_url = base_url.rstrip("/")
        # What the endpoint and model take, learnt from refused lines (glan.llm.refusals).
        self.shape = BodyShape()
        self._schema_steps: dict[str, str] = {}  # schema name -> the form it stepped down to
        self._schema_changes: list[dict[str, Any]] = []
        #: Optional fields the provider refused (name -> its answer): never sent again.
        self.refused_fields: dict[str, str] = {}
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    # ---- what a provider implements --------------------------------------------------------
    @property
    @abstractmethod
    def access(self) -> dict[str, Any]:
        """What rebuilds this API later (`glan batches --cancel`): no secret, only where."""

    @abstractmethod
    def line(self, key: str, request: ChatRequest) -> bytes:
        """The request as one JSONL line (with its newline), custom_id = `key`."""

    @abstractmethod
    async def create(self, job: Job, lines: list[bytes], on_file: Any, known: set[str]) -> str:
        """Send the lines as one batch (with `create_batch`); its id. `on_file(file_id)`
        stages an upload's id; `known`: batch ids other jobs hold."""

    @abstractmethod
    async def find(self, job: Job, known: set[str]) -> str | None:
        """The batch created for this staged job before a crash took its id, if any (`known`:
        ids other jobs hold, never this one's)."""

    @abstractmethod
    async def status(self, batch_id: str) -> Remote: ...

    @abstractmethod
    def parse(self, raw: bytes) -> LineResult:
        """One result line (output or error file)."""

    async def delete_file(self, file_id: str) -> None:  # noqa: B027 - where there are files
        """Delete a file this run uploaded or a batch made, once its contents are kept."""

    async def delete_files(self, *file_ids: str | None) -> None:
        """Best effort: a file that will not go is left to its expiry."""
        for file_id in filter(None, file_ids):
            with contextlib.suppress(EndpointFatal):
                await self.delete_file(file_id)

    async def with_optional(self, name: str, send: Callable[[bool], Awaitable[T]]) -> T:
        """`send(True)` sends the optional field `name`; a 4xx naming it drops it for the rest
        of the run (noted in `refused_fields`) and sends again without: an extra never stops a run."""
        if name not in self.refused_fields:
            try:
                return await send(True)
            except Refused as exc:
                if name not in str(exc):
                    raise
                self.refused_fields[name] = str(exc)
        return await send(False)

    async def cancel(self, batch_id: str) -> None:
        with contextlib.suppress(Refused):  # already ended: nothing left to stop
            await self.call("POST", f"{self.batches_path}/{batch_id}/cancel")

    async def preflight(self) -> None:
        try:
            await self.call("GET", f"{self.batches_path}?limit=1")
        except Refused as exc:
            raise EndpointFatal(f"no batch API at {self.base_url}: {exc}") from None

    # ---- what is sent, learnt from refused lines ------------------------------------------
    def mode_for(self, schema_name: str) -> str:
        """The structured-output form lines with this schema are built with now."""
        return self._schema_steps.get(schema_name, self.schema_mode)

    def sent_as(self, request: ChatRequest) -> tuple[int, str]:
        """What a line built now reflects: the shape's version and its schema's form."""
        return self.shape.version, self.mode_for(request.schema_name)

    def adapt(self, result: LineResult, request: ChatRequest, sent: tuple[int, str] | None) -> bool:
        """A line was refused for a parameter, keyword or structured-output form: whether it
        goes again, built as the endpoint takes it now (`sent`: what it reflected when built;
        None for a line an earlier process built). False: the refusal is the line's own."""
        refusal = result.refusal
        if result.kind == "refused" and refusal is not None:
            if self.shape.adapt(refusal, -1 if sent is None else sent[0]):
                return True
            if refusal.kind != "keyword":
                return False
            # A keyword described already and still refused: the form is what is refused.
        elif result.kind != "schema":
            return False
        if request.json_schema is None:
            return False
        name = request.schema_name
        now = self.mode_for(name)
        if now != (self.schema_mode if sent is None else sent[1]):
            return True  # stepped down already, for another line: this one was built before
        lower = self.schema_modes.index(now) + 1
        if lower >= len(self.schema_modes):
            return False
        self._schema_steps[name] = self.schema_modes[lower]
        self._schema_changes.append(
            {
                "scope": "schema",
                "schema": name,
                "from": now,
                "to": self.schema_modes[lower],
                "at": time.time(),
                "why": result.error[:200],
            }
        )
        return True

    def structured_output_changes(self) -> list[dict[str, Any]]:
        return list(self._schema_changes)

    # ---- HTTP ------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _attempt(
        self, method: str, url: str, stream: bool, **kwargs: Any
    ) -> aiohttp.ClientResponse | bytes | str:
        """One try: the body (or, with `stream`, the open response), or why another try may
        work (a string: a network error, 429 or 5xx). 401/403 are fatal; other 4xx Refused."""
        try:
            resp = await self._client().request(method, url, **kwargs)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return str(exc) or type(exc).__name__
        if resp.status < 400:
            if stream:
                return resp
            async with resp:
                return await resp.read()
        async with resp:
            detail = (await resp.read())[:300].decode("utf-8", "replace")
        if resp.status in (401, 403):
            raise EndpointFatal(
                f"{self.base_url} refused the API key (HTTP {resp.status}): {detail}"
            )
        if resp.status < 500 and resp.status != 429:
            raise Refused(resp.status, detail)
        return f"HTTP {resp.status}: {detail}"

    async def _pause(self, attempt: int) -> None:
        if attempt + 1 < CONTROL_ATTEMPTS:
            delay = min(60.0, self.backoff_s * 2**attempt)
            await asyncio.sleep(random.uniform(delay / 2, delay))

    def _gave_up(self, method: str, url: str, detail: str) -> GaveUp:
        return GaveUp(
            f"{method} {url} failed {CONTROL_ATTEMPTS} times: {detail}. Live batches are kept: "
            "re-run the same command to re-attach to them."
        )

    async def call(
        self, method: str, path: str, *, stream: bool = False, **kwargs: Any
    ) -> aiohttp.ClientResponse | bytes:
        """One control call, retried on network errors, 429 and 5xx; 401/403 are fatal and
        other 4xx raise Refused. With `stream`, the open response (the caller releases it).
        Never for a call that creates a batch: see `create_batch`."""
        url = path if path.startswith("http") else self._url(path)
        for attempt in range(CONTROL_ATTEMPTS):
            got = await self._attempt(method, url, stream, **kwargs)
            if not isinstance(got, str):
                return got
            detail = got
            await self._pause(attempt)
        raise self._gave_up(method, url, detail)

    async def create_batch(self, job: Job, known: set[str], path: str, **kwargs: Any) -> str:
        """The call that creates a batch, never repeated blindly: after a failure that may
        have created it anyway (a timeout, a 5xx), the batch is looked for before another try,
        so a lost answer never pays for the same lines twice."""
        url = self._url(path)
        for attempt in range(CONTROL_ATTEMPTS):
            got = await self._attempt("POST", url, False, **kwargs)
            if isinstance(got, bytes):
                return orjson.loads(got)["id"]
            found = await self.find(job, known)
            if found is not None:
                return found
            detail = str(got)
            await self._pause(attempt)
        if detail.startswith("HTTP 429"):
            # Not a rate limit that passes in minutes: a queue of work that must finish first.
            raise OverQuota(detail)
        raise self._gave_up("POST", url, detail)

    async def lines_of(self, path: str) -> AsyncIterator[bytes]:
        """A JSONL download, line by line (any line length), without holding it whole. A
        large file may take longer than the timeout of a call: the timeout bounds each read."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.total, sock_read=self._timeout.total
        )
        resp = await self.call("GET", path, stream=True, timeout=timeout)
        assert isinstance(resp, aiohttp.ClientResponse)
        async with resp:
            rest = b""
            async for chunk in resp.content.iter_chunked(1 << 20):
                rest += chunk
                *lines, rest = rest.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield line
            if rest.strip():
                yield rest

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self, timeout_s: float = 15.0) -> None:
        """`glan check`: preflight's call tried once, so an address that does not answer, a
        key refused or no batch API is said at once, not after the control calls' retries."""
        url = self._url(f"{self.batches_path}?limit=1")
        try:
            async with asyncio.timeout(timeout_s):
                got = await self._attempt("GET", url, False)
        except TimeoutError:
            raise EndpointFatal(f"no answer from {self.base_url} in {timeout_s:g} s") from None
        except Refused as exc:
            raise EndpointFatal(f"no batch API at {self.base_url}: {exc}") from None
        if isinstance(got, str):
            raise EndpointFatal(f"cannot reach the batch API at {self.base_url}: {got}")
