"""Whether an endpoint serves other requests now: what a body's repeated hard error is judged
against (glan.llm.bodyfaults).

Most of the time the client's other requests show it: one is served within moments. When
nothing else is in flight (the last requests of a run may all be bodies that break the
server), or nothing comes back for a while, the client sends a probe of its own: a few tokens,
counted in the usage as "probe", reported to admission like any request (a probe that fails
counts against the endpoint). A probe body may itself be one that breaks the server, so one
that fails with a hard error is followed at once by another body, up to `PROBE_BODIES`.
"""

from __future__ import annotations

import asyncio
import time

from glan.llm.admission import Admission
from glan.llm.backend import Backend
from glan.llm.errors import BadRequest, RateLimited, RequestFailed, TransientError
from glan.llm.types import ChatRequest, user
from glan.llm.usage import UsageLedger

#: How often a request waiting for the endpoint to serve another one looks again.
POLL_S = 0.01
#: Probe bodies tried in a row while each fails with a hard error.
PROBE_BODIES = 3


class Witness:
    """One client's attempts in flight, and its probes (one round out at a time)."""

    def __init__(self, backend: Backend, admission: Admission, usage: UsageLedger) -> None:
        self.backend = backend
        self.admission = admission
        self.usage = usage
        self.in_flight = 0  # this client's attempts out now, probes included
        self._round: asyncio.Future[bool] | None = None
        self._probes = 0

    async def acquire(self) -> int:
        """A permit from admission (its epoch), counted in flight until `release`."""
        epoch = await self.admission.acquire()
        self.in_flight += 1
        return epoch

    def release(self) -> None:
        self.in_flight -= 1
        self.admission.release()

    async def served_since(self, since: int, patience_s: float) -> bool:
        """Whether the endpoint has served a request since its count of successes was
        `since`: at once when it has; else once a request in flight here is served (waited
        for at most `patience_s`); else after a round of probes, shared by every request
        waiting here. False when no probe was served."""
        admission = self.admission
        patience = time.monotonic() + patience_s
        while admission.successes <= since:
            if self.in_flight and time.monotonic() < patience:
                await asyncio.sleep(POLL_S)
            elif not await self._probe():
                return admission.successes > since
        return True

    async def _probe(self) -> bool:
        """A round of probes sent by this request, or the one out now, awaited. The round runs
        in the task that started it, so an EndpointDown a probe opens is raised there at once
        (the others hear it a moment later, as they would from any request)."""
        shared = self._round
        if shared is not None and not shared.done():
            return await asyncio.shield(shared)
        shared = self._round = asyncio.get_running_loop().create_future()
        shared.add_done_callback(lambda done: done.exception())  # heard, or nobody waits
        try:
            served = await self._probe_round()
        except asyncio.CancelledError:
            shared.set_result(False)  # the others probe again themselves
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
        """Whether a new probe body was served; None when it failed with a hard error (it may
        be the body's own, so another body may tell more)."""
        admission = self.admission
        endpoint = self.backend.endpoint_id
        self._probes += 1
        probe = ChatRequest(
            messages=user(f"Reply with the word OK. (probe {self._probes})"),
            max_tokens=8,
            temperature=0.0,
            tag="probe",
        )
        admission.check(endpoint)
        epoch = await self.acquire()
        try:
            completion = await self.backend.complete(probe)
        except RateLimited as exc:
            self.release()
            admission.on_rate_limited(epoch, exc.retry_after, str(exc), endpoint)
            return False
        except TransientError as exc:
            self.release()
            admission.on_failure(str(exc), endpoint)
            return None if exc.signature is not None else False
        except (BadRequest, RequestFailed):
            self.release()
            return False
        except BaseException:
            self.release()
            raise
        self.release()
        admission.on_success()
        self.usage.record(
            probe.tag,
            self.backend.model,
            completion.prompt_tokens,
            completion.completion_tokens,
            batch=self.backend.batch_pricing,
        )
        return True
