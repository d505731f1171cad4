"""An endpoint that fails every request of one shape (a stage's schema its engine cannot serve
any more, every long prompt out of memory, a chat template that breaks on some turns) while it
serves others, told from bodies that break the server (glan.llm.bodyfaults).

Every body of such a shape fails with one error while other requests are served, so judged by
repetition alone each would be given up for its own sake and the run's records changed for
good. So a suspect is judged against its own shape as well:

- When: as it becomes a suspect (once per process), and as its count reaches K.
- Served: a request of the body's exact schema, prompt and reply limit at least as large, was
  served since the body's previous failure (`Witness.served_alike_since`); else a check is
  sent: requests of the body's shape without its text (`shape_check`: the body's own turns,
  each disguised so its words are gone and its density in tokens kept, the same schema,
  reply limit and sampling, another seed; counted as "probe", replies dropped), up to
  `CHECK_TRIES` while they fail. Served: the endpoint serves that shape, and the body's
  failures are its own (at K it is given up).
- All failed with the body's error: one check of the same shape cut to `SMALL_CHECK_CHARS`
  (when the body is larger) is sent. Served: the endpoint fails requests this large now (a
  context or memory limit, one that may pass): the body is deferred at once, its run of
  failures ended (none of them was its own), and counted in `too_large` for the run's last
  line; nothing is given up and the rest of the run goes on. Sent now rather than read from
  requests served earlier: those cannot tell a size limit from a schema that broke since,
  and a resumed run whose last units are the large ones has served nothing of their kind.
- Failed alike too: the check is held, `backoff_base_s` and a request served (a probe's)
  later it runs again (the small one included), up to `HOLD_WAITS` times; failed alike every
  time (a random error does so with p**(CHECK_TRIES * (HOLD_WAITS + 1)), as does a body that
  breaks the server only when each check body is one), the endpoint fails that shape at any
  size: the run stops (EndpointDown, one line naming the error), and every count of that
  error this process's client holds is forgotten (another shard's client keeps its own: it
  costs that one retries, not records), so nothing of the incident is kept and the same
  command resumes once the endpoint serves again.
- Failed otherwise (another error too, nothing served between rounds): nothing told; at K the
  body waits `backoff_base_s` and tries again, up to `HOLD_WAITS` times, then is deferred.

Bodies asking at once for the same check (one body sent twice, or bodies alike but for their
first words, which the check's marker replaces) share it.
"""

from __future__ import annotations

import asyncio
from enum import Enum

from glan.llm.bodyfaults import BodyFaults, FailureRun
from glan.llm.errors import EndpointDown, TransientError
from glan.llm.types import ChatRequest
from glan.llm.witness import Witness, prompt_size, shape_check, shared

#: Check requests sent in a row while each fails with the body's error.
CHECK_TRIES = 3
#: How many times a check failed alike runs again before the run stops, and how many times a
#: body at K waits when a check told nothing.
HOLD_WAITS = 8
#: The prompt of a check of the body's shape, smaller (in characters): sent after each round
#: of checks that failed alike, when the body's prompt is larger.
SMALL_CHECK_CHARS = 200


class Verdict(Enum):
    GO_ON = "go on"  # tested further
    WAIT = "wait"  # undecided: tried again after `backoff_base_s`
    GIVE_UP = "give up"  # for its own sake
    DEFER = "defer"  # undecided for too long: asked again by a later pass
    TOO_LARGE = "too large"  # the endpoint fails requests this large now: asked again later


class Shape(Enum):
    SERVED = "served"  # the endpoint serves the body's shape
    ALIKE = "alike"  # it fails the body's shape with the body's error, at any size
    SMALLER = "smaller"  # it fails the body's shape alike, and serves it smaller
    UNTOLD = "untold"


class OutageWatch:
    """One client's judge of suspects against their own shape."""

    def __init__(self, bodies: BodyFaults, witness: Witness, endpoint: str) -> None:
        self.bodies = bodies
        self.witness = witness
        self.endpoint = endpoint
        #: Once set, the endpoint fails requests of the run's own: each stops the run.
        self.down: str | None = None
        #: The bodies deferred because the endpoint fails requests that large (by the error's
        #: text), until one is served.
        self.too_large: dict[str, set[str]] = {}
        self._checks: dict[object, asyncio.Future[Shape]] = {}

    async def judge(
        self, key: str, run: FailureRun, request: ChatRequest, exc: TransientError
    ) -> Verdict:
        """What becomes of the body `key` (sent as `request`) after this hard error `exc`,
        its run of failures counted already; raises EndpointDown when the endpoint fails
        every request of its shape with it."""
        since, run.seen = run.seen, self.witness.real_served
        at_k = run.count >= self.bodies.repeats
        if not run.suspect or (run.checked and not at_k):
            return Verdict.GO_ON
        run.checked = True
        shape = Shape.SERVED
        if not self.witness.served_alike_since(request, since):
            first = shape_check(request, 0).cache_key(self.endpoint)
            work = lambda: self._check(request, run.signature)  # noqa: E731
            shape = await shared(self._checks, (first, run.signature), work, Shape.UNTOLD)
        if shape is Shape.ALIKE:
            self._stop(run.signature, request, exc)
        if shape is Shape.SMALLER:
            # Nothing of its failures is the body's: none counts toward K, here or later.
            self.bodies.ended(key)
            self.too_large.setdefault(str(exc)[:200], set()).add(key)
            return Verdict.TOO_LARGE
        if not at_k:
            return Verdict.GO_ON
        if shape is Shape.SERVED:
            return Verdict.GIVE_UP
        if run.held >= HOLD_WAITS:
            return Verdict.DEFER
        run.held += 1
        return Verdict.WAIT

    def served(self, key: str) -> None:
        """The body `key` was served: if it was deferred as too large, it is no longer."""
        for keys in self.too_large.values():
            keys.discard(key)

    def deferred_too_large(self) -> dict[str, int]:
        """How many bodies are deferred because the endpoint fails requests that large now,
        by the error's text."""
        return {error: len(keys) for error, keys in self.too_large.items() if keys}

    async def _check(self, body: ChatRequest, signature: str) -> Shape:
        """Whether the endpoint serves `body`'s shape (module docstring)."""
        witness = self.witness
        backoff_s = witness.admission.settings.backoff_base_s
        sent = 0
        for hold in range(HOLD_WAITS + 1):
            if hold:
                await asyncio.sleep(backoff_s)
                if not await witness.served_since(witness.admission.successes, backoff_s):
                    return Shape.UNTOLD
            alike = True
            for _ in range(CHECK_TRIES):
                failed = await self._send(shape_check(body, sent))
                sent += 1
                if failed is None:
                    return Shape.SERVED
                alike = alike and getattr(failed, "signature", None) == signature
            if not alike:
                return Shape.UNTOLD
            if prompt_size(body) > SMALL_CHECK_CHARS:
                # As large, it fails alike: is it the size? One of the same shape, small.
                failed = await self._send(shape_check(body, sent, SMALL_CHECK_CHARS))
                sent += 1
                if failed is None:
                    return Shape.SMALLER
                if getattr(failed, "signature", None) != signature:
                    return Shape.UNTOLD
        return Shape.ALIKE

    async def _send(self, check: ChatRequest) -> Exception | None:
        if self.down is not None:
            raise EndpointDown(self.down)
        return await self.witness.check(check)

    def _stop(self, signature: str, request: ChatRequest, exc: TransientError) -> None:
        """The endpoint fails every request of this shape with this error: no failure with it
        tells anything of a body, so every run of them ends, kept nowhere; the run stops."""
        self.bodies.forget(signature)
        self.down = (
            f"{self.endpoint}: {request.tag!r} requests fail with {str(exc)[:200]!r} whatever "
            "their text, while other requests are served (one of the same shape without the "
            f"body's text failed alike {CHECK_TRIES * (HOLD_WAITS + 1)} times). Finished work "
            "is kept; re-run the same command once the endpoint serves them."
        )
        raise EndpointDown(self.down)
