"""An endpoint that fails every request of the run's own while it serves the client's probes,
told from bodies that break the server (glan.llm.bodyfaults).

A probe shows only that the endpoint serves a few tokens without a schema. An endpoint out of
memory on any long prompt, or whose structured-output engine broke (every stage request
carries a schema, a probe does not), fails every real body with one error while the probes
are served: judged by the probes alone, every body would be given up for its own sake, and
the run's records would change for good. So where only probes speak for the endpoint, a
request of the run's own is asked too:

- When: a body's count reaches K with no request of the run's own as large (see below)
  served since it became a suspect (the last requests of a run may all be bodies that break
  the server; a broken structured-output engine still serves the stages without a schema); or
  `OUTAGE_BODIES` distinct bodies began failing with the same error since the client last
  served a request of its own, each failed with it again, and a probe was served since.
- A check: a request the endpoint served before, with a schema if the body has one, at least
  as large (prompt and reply limit) when one is, the largest of the body's stage first, is
  sent again, up to 3 times while it fails (`Witness.reference`, `Witness.check`; its reply
  dropped, its tokens counted as "probe"). Failed with the body's error at the last time: the
  endpoint fails every request with it (a random error does so with p**3), and the run stops
  (EndpointDown, one line naming the error); every run of failures with that error is
  forgotten, so nothing of the incident is kept and the same command resumes once the
  endpoint serves again. Failed otherwise: nothing told; a body at K waits `backoff_base_s`
  and tries again, up to `HOLD_WAITS` times, then is deferred. Served, and as large: the
  endpoint serves the run's own, and the body's failures are its own.
- Served but smaller, or nothing to check with (the first requests of a run): judged by
  numbers. Those bodies failing alike stop the run as above; a body whose count reaches K
  while that many began so and some have not tried again yet (a first failure is retried
  after a backoff, a suspect's tries follow the probes at once) waits `backoff_base_s` for
  their next tries, up to `HOLD_WAITS` times; fewer bodies cannot be told from bodies that
  break the server (the first requests of a run may all be such bodies) and are judged by
  the probes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from glan.llm.bodyfaults import BodyFaults, FailureRun
from glan.llm.errors import EndpointDown, TransientError
from glan.llm.types import ChatRequest
from glan.llm.witness import Witness

#: Distinct bodies failing alike while only probes are served: the endpoint's error.
OUTAGE_BODIES = 4
#: How many times a body whose count reached K waits for what decides its fate.
HOLD_WAITS = 8


class Verdict(Enum):
    GO_ON = "go on"  # tested further
    WAIT = "wait"  # undecided: tried again after `backoff_base_s`
    GIVE_UP = "give up"  # for its own sake
    DEFER = "defer"  # undecided for too long: asked again by a later pass


@dataclass(slots=True)
class _Fresh:
    """The bodies that began failing with one error while the client's requests served were
    `real`, and those of them that failed with it again."""

    real: int
    began: set[str] = field(default_factory=set)
    again: set[str] = field(default_factory=set)


class OutageWatch:
    """One client's judge of bodies that fail while only probes are served."""

    def __init__(self, bodies: BodyFaults, witness: Witness, endpoint: str) -> None:
        self.bodies = bodies
        self.witness = witness
        self.endpoint = endpoint
        #: Once set, the endpoint fails every request of the run's own: each stops the run.
        self.down: str | None = None
        self._fresh: dict[str, _Fresh] = {}

    async def judge(
        self, key: str, run: FailureRun, request: ChatRequest, exc: TransientError
    ) -> Verdict:
        """What becomes of the body `key` (sent as `request`) after this hard error `exc`,
        its run of failures counted already; raises EndpointDown when the error is the
        endpoint's for every request."""
        witness = self.witness
        self._note(key, run, witness.real_served)
        if run.suspect and run.suspect_real is None:
            run.suspect_real = witness.real_served
        fresh = self._now(run.signature)
        alike = fresh is not None and len(fresh.again) >= OUTAGE_BODIES
        at_k = run.count >= self.bodies.repeats
        if not alike and (not at_k or witness.served_alike_since(request, run.suspect_real or 0)):
            # Tested further, or given up: a request of the run's own as large was served
            # since it became a suspect.
            return Verdict.GIVE_UP if at_k else Verdict.GO_ON
        found = witness.reference(request)
        if found is not None:
            reference, as_large = found
            failed = await witness.check(reference)
            if failed is not None:
                if failed.signature == run.signature:
                    self._stop(run.signature, exc, "a request served before failed so too")
                return self._hold(run, Verdict.DEFER) if at_k else Verdict.GO_ON
            if as_large:  # the run's own are served: the body's failures are its own
                return Verdict.GIVE_UP if at_k else Verdict.GO_ON
        return self._judge_by_numbers(run, fresh, at_k, exc)

    def _judge_by_numbers(
        self, run: FailureRun, fresh: _Fresh | None, at_k: bool, exc: TransientError
    ) -> Verdict:
        """Nothing as large was served to check with: judged by how many bodies fail alike
        while only probes are served (`fresh`, as it was before any check)."""
        if fresh is not None and len(fresh.again) >= OUTAGE_BODIES:
            self._stop(run.signature, exc, f"{len(fresh.again)} requests, each twice")
        if not at_k:
            return Verdict.GO_ON
        if fresh is not None and len(fresh.began) >= OUTAGE_BODIES and self._pending(fresh):
            return self._hold(run, Verdict.GIVE_UP)
        return Verdict.GIVE_UP

    def _hold(self, run: FailureRun, then: Verdict) -> Verdict:
        if run.held >= HOLD_WAITS:
            return then
        run.held += 1
        return Verdict.WAIT

    def _note(self, key: str, run: FailureRun, real: int) -> None:
        fresh = self._fresh.get(run.signature)
        if run.tries == 1:
            if fresh is None or fresh.real != real:
                fresh = self._fresh[run.signature] = _Fresh(real)
            fresh.began.add(key)
        elif fresh is not None and fresh.real == real and key in fresh.began:
            fresh.again.add(key)

    def _now(self, signature: str) -> _Fresh | None:
        """The bodies failing with `signature` while only probes were served since the
        client's last request of its own; None when one of its own was served since, or no
        probe was."""
        fresh = self._fresh.get(signature)
        witness = self.witness
        if fresh is None or fresh.real != witness.real_served or not witness.only_probes_served:
            return None
        return fresh

    def _pending(self, fresh: _Fresh) -> bool:
        """Whether some of these bodies, failing still, have not tried again yet."""
        for key in fresh.began - fresh.again:
            run = self.bodies.run(key)
            if run is not None and run.tries == 1:
                return True
        return False

    def _stop(self, signature: str, exc: TransientError, why: str) -> None:
        """The endpoint fails every request of the run's own with this error: no failure with
        it tells anything of a body, so every run of them ends, kept nowhere; the run stops."""
        self.bodies.forget(signature)
        self._fresh.pop(signature, None)
        self.down = (
            f"{self.endpoint}: every request fails with {str(exc)[:200]!r} while only short "
            f"probes are served ({why}). Finished work is kept; re-run the same command once "
            "the endpoint serves them."
        )
        raise EndpointDown(self.down)
