"""What a provider's batch API must offer the transport, and the HTTP plumbing they share.

A provider turns a request into one JSONL line (custom_id = the request's cache key), creates a
batch from lines, reports a batch's status, streams its result lines (output and errors, in any
order: matched by custom_id, never by position) and cancels it. It knows nothing of GLAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

from glan.llm.backend import Completion
from glan.llm.batch.ledger import Job
from glan.llm.errors import EndpointFatal
from glan.llm.types import ChatRequest

#: ok: a reply. request: the line's own fault (a 400): asking again is pointless. schema: the
#: provider refused the structured-output form (step down, ask again). server: the provider
#: failed the line (retried next round). missing: expired, cancelled or absent (sent again).
#: later: the whole batch was refused for a quota (sent again, not counted as a round).
LineKind = Literal["ok", "request", "schema", "server", "missing", "later"]
CONTROL_ATTEMPTS = 8  # tries of one control-plane call (upload, create, poll, download)


@dataclass(slots=True)
class LineResult:
    custom_id: str
    kind: LineKind
    completion: Completion | None = None
    error: str = ""


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


class Refused(Exception):
    """The provider answered a control call with a 4xx other than 429: a definite no."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


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
    #: How the reply's JSON schema is sent (providers' own modes).
    schema_mode: str
    #: Base delay of control-call retries (seconds); tests make it tiny.
    backoff_s: float = 1.0

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise EndpointFatal(
                f"invalid base URL {base_url!r}: it must start with http:// or https://"
            )
        self.base_url = base_url.rstrip("/")
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

    async def results(self, batch_id: str, remote: Remote) -> AsyncIterator[LineResult]:
        """Every result line of a finished batch (output and errors), in the provider's order."""
        for source in remote.sources:
            async for raw in self.lines_of(source):
                yield self.parse(raw)

    async def cancel(self, batch_id: str) -> None:
        with contextlib.suppress(Refused):  # already ended: nothing left to stop
            await self.call("POST", f"{self.batches_path}/{batch_id}/cancel")

    async def preflight(self) -> None:
        try:
            await self.call("GET", f"{self.batches_path}?limit=1")
        except Refused as exc:
            raise EndpointFatal(f"no batch API at {self.base_url}: {exc}") from None

    def step_down(self) -> bool:
        """The provider refused the structured-output form: use a weaker one from now on.
        False when there is none weaker."""
        return False

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

    def _gave_up(self, method: str, url: str, detail: str) -> EndpointFatal:
        return EndpointFatal(
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
        raise self._gave_up("POST", url, detail)

    async def lines_of(self, path: str) -> AsyncIterator[bytes]:
        """A JSONL download, line by line (any line length), without holding it whole."""
        resp = await self.call("GET", path, stream=True)
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
