"""When the next batch may go, once a provider refused one for a quota.

A quota refusal is never the lines' fault: they go again without using a round, and the run
never stops for one (it waits, and says so on the progress line; a user can always stop it).
What the refusal means decides how long:
- the run has a batch of its own out there: the next goes once one of them has finished (that
  frees enqueued tokens and, its files deleted, file slots);
- the provider's answer states its limit (OpenAI: "Limit: 2,000,000 enqueued tokens"; Azure:
  "the configured limit of 30K") and the refused batch alone is larger (its tokens estimated
  from its size): the only evidence a batch is too large by itself. Batches are cut to fit the
  limit from then on and go at once; a single request larger than the limit can never go;
- otherwise the quota is held by work this run cannot see (another run, a colleague, another
  Ray shard of this run): the same lines go again after a pause that doubles from the poll
  interval, at most MAX_PAUSE_S, as Azure and OpenAI ask ("try again once the current jobs
  have finished"). Batches refused together count as one refusal.
From the first refusal on, batches are created one at a time: when a hold clears, one batch
goes and the next only once it is in, not every waiting batch at once with all but one refused
again (each refusal costs an upload and a delete).
"""

from __future__ import annotations

import re
import time

MAX_PAUSE_S = 600.0
#: Bytes of a batch line per token, for the estimate of a batch's tokens (about 4 in English
#: JSON: over the count for the JSON around the prompt, which the providers do not enqueue).
BYTES_PER_TOKEN = 4
#: The share of a stated limit a batch is cut to (the estimate is rough).
FIT = 0.9
_LIMIT = re.compile(r"limit(?:\s+of|:)\s*(\d[\d,]*(?:\.\d+)?)([kmb])?\b", re.IGNORECASE)
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}


def stated_limit(why: str) -> int | None:
    """The enqueued-token limit a quota refusal states, if it states one."""
    if "token" not in why.lower():
        return None
    found = _LIMIT.search(why)
    if found is None:
        return None
    number, scale = found.groups()
    return int(float(number.replace(",", "")) * _SCALE[(scale or "").lower()])


class QuotaGate:
    def __init__(self, max_lines: int, max_bytes: int, first_pause_s: float) -> None:
        self.max_lines = max_lines  # lines per batch
        self.max_bytes = max_bytes  # bytes per batch, cut to a limit a refusal stated
        self.first_pause_s = first_pause_s
        self.held = False  # refused beside the run's own batches: wait until one settles
        self.serial = False  # a refusal was met: batches are created one at a time
        self.waiting_since: float | None = None  # the first refusal since a batch went in
        self._pauses = 0  # pauses in a row (refusals with none of the run's out there)
        self._resume_at = 0.0  # no batch is sent before (monotonic)

    def blocked(self, others_live: bool) -> bool:
        return (self.held and others_live) or time.monotonic() < self._resume_at

    def refused(self, lines: int, size: int, why: str, others_live: bool) -> str | None:
        """A batch of `lines` lines and `size` bytes refused for a quota. None: its lines go
        again; else why its one request never can (larger than the stated limit by itself)."""
        self.serial = True
        if self.waiting_since is None:
            self.waiting_since = time.time()
        limit = stated_limit(why)
        if limit is not None and size / BYTES_PER_TOKEN > limit:
            if lines > 1:
                self.max_bytes = min(self.max_bytes, int(limit * BYTES_PER_TOKEN * FIT))
                return None
            if not others_live:
                return (
                    f"this request alone (~{size // BYTES_PER_TOKEN:,} tokens) is more than "
                    f"the provider's limit of {limit:,} enqueued tokens: {why}"
                )
        if others_live:
            self.held = True
            return None
        now = time.monotonic()
        if now >= self._resume_at:  # a batch refused with it in the same pause is the same
            self._pauses += 1
            pause = min(MAX_PAUSE_S, self.first_pause_s * 2 ** (self._pauses - 1))
            self._resume_at = now + pause
        return None

    def created(self) -> None:
        self._pauses = 0
        self.waiting_since = None

    def settled(self) -> None:
        self.held = False

    def waiting_s(self) -> float:
        """How long batches have been held back by a quota (0: they are not)."""
        return 0.0 if self.waiting_since is None else time.time() - self.waiting_since
