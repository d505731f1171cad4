"""Bodies that break the server, told from an endpoint's random failures by one rule.

A request body may break the server at every try (a prompt that trips a bug) while every other
body is served: the unit should be given up for its
own sake and replaced. An endpoint may also fail at random, with the very same status and text
(a worker that fell over answers 500 whatever it was asked): no unit may be replaced for that,
or the records would depend on luck. Only repetition tells the two apart, so the rule is:

    A body is given up for its own sake once `repeats` (K, AdmissionSettings.body_fault_repeats)
    of its attempts in a row failed with the same hard error (`TransientError.signature`:
    status and error text, ids left out: glan.llm.signatures), each failure counted only when
    the endpoint has served another request since the body's previous counted failure.

- In a row: a reply or another hard error (another status or text) ends the run. A rate limit,
  and an error that names nothing of the body (a gateway's 502/503/504, a timeout, a dropped
  connection: no signature), is no outcome: the body was not served, and the run goes on.
- The successes in between show the endpoint was serving at each count (a probe's, when
  nothing else is in flight: glan.llm.witness): in an outage, where every body fails alike, a
  body's run of failures does not grow.
- The count belongs to the body, not to one call: it goes on across retries, the pipeline's
  passes and later runs (from two failures on it is kept in the run's response cache), so
  every run of the same command reaches the same decision, whatever the concurrency, the
  timing, the breaker, or where a run was cut. Two requests sending one body at once share its
  count, and once one gives the body up, so does the other.
- A suspect is also judged against its own shape (a request of its turns, schema and size
  without its words): an endpoint that fails every request of a shape with one error while
  it serves others is no set of bodies that break it, and stops the run instead; one that
  fails it only this large defers the body (glan.llm.outage).
- False replacement: a body the endpoint would serve is given up only when K of its tries in a
  row meet a random error with the suspect's text. If each try fails so with probability p
  and with an error that names nothing with probability g (independently; worst case, all
  random hard errors share one text), that is (p / (1 - g))**K per body and at most M times
  that for a run of M bodies; K=16, g=0: p=0.01: 1e-32, p=0.1: 1e-16, p=0.35: 5e-8, p=0.5:
  1.5e-5; p=0.1 and g=0.25: 1e-14.
- What the client does with a suspect (two counted failures or more: no breaker, no backoff,
  a witness before each try) is in glan.llm.client.
"""

from __future__ import annotations

from dataclasses import dataclass

from glan.store import ResponseCache

#: From this many counted failures on, a body is a suspect.
SUSPECT_AT = 2


@dataclass(slots=True)
class FailureRun:
    """A body's run of identical hard failures."""

    signature: str
    count: int  # failures counted (each after another request was served)
    # The endpoint's successes (Admission.successes) when the last failure was counted; 0 for a
    # run an earlier process left, so that any success of this one counts as in between.
    mark: int
    tries: int = 1  # failures, counted or not
    # For glan.llm.outage: the client's own requests served (Witness.real_served) at its last
    # failure, whether its shape was judged in this process, the times it waited at K.
    seen: int = 0
    checked: bool = False
    held: int = 0

    @property
    def suspect(self) -> bool:
        return self.count >= SUSPECT_AT


class BodyFaults:
    """The runs of failures of one client's bodies sent to `endpoint`: in memory, and in the
    response cache from a suspect's second failure on (a single failure is common and
    forgotten with the process)."""

    def __init__(
        self, repeats: int, cache: ResponseCache | None = None, endpoint: str = ""
    ) -> None:
        self.repeats = repeats
        self.cache = cache
        self.endpoint = endpoint
        self._runs: dict[str, FailureRun] = {}
        # Bodies given up here: another request sending the same body at once gives up too.
        self._given_up: dict[str, FailureRun] = {}
        if cache is not None:
            for key, (signature, count) in cache.failing_bodies(endpoint).items():
                self._runs[key] = FailureRun(signature, count, 0, count)

    def failed(self, key: str, signature: str, successes: int) -> FailureRun:
        """Count this hard failure of the body `key` (`successes`: the endpoint's count now)."""
        run = self._given_up.get(key)
        if run is not None:
            return run
        run = self._runs.get(key)
        if run is None or run.signature != signature:
            self.ended(key)
            run = self._runs[key] = FailureRun(signature, 1, successes)
            return run
        run.tries += 1
        if successes > run.mark:
            run.count += 1
            run.mark = successes
            if self.cache is not None and run.suspect:
                self.cache.put_failing_body(key, signature, run.count, self.endpoint)
        return run

    def forget(self, signature: str) -> None:
        """The endpoint fails requests alike with this error: no failure with it says anything
        of a body, so every run of them here ends (kept nowhere)."""
        for key in [k for k, run in self._runs.items() if run.signature == signature]:
            self.ended(key)

    def is_given_up(self, key: str) -> bool:
        """Whether this process gave the body up already (another request sent it too)."""
        return key in self._given_up

    def give_up(self, key: str, run: FailureRun) -> None:
        """The body is given up for its own sake (its unit is recorded as failed in the run's
        state and never asked again): its run is no longer kept in the cache."""
        self.ended(key)
        self._given_up[key] = run

    @property
    def open(self) -> bool:
        """Whether some body's run of failures is open (its next outcome matters here)."""
        return bool(self._runs)

    def run(self, key: str) -> FailureRun | None:
        """The body's open run of failures, if any."""
        return self._runs.get(key)

    def ended(self, key: str) -> None:
        """The body was served, or failed another way: its run of failures is over."""
        run = self._runs.pop(key, None)
        if run is not None and run.suspect and self.cache is not None:
            self.cache.drop_failing_body(key, self.endpoint)
