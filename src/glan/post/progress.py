"""What a long post-processing command (clean, export, upload, report) is doing now.

The library only counts; glan.cli.progress draws it (a bar on a terminal, a plain line every
~10 s elsewhere). Counters are plain ints read by the display thread: no lock is needed for a
display that may lag by one update.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Step:
    name: str
    total: int | None = None  # None: unknown (a spinner, no ETA)
    unit: str = "records"
    done: int = 0
    started: float = field(default_factory=time.monotonic)


class Steps:
    """The steps of one command, in order; the last one begun is the current one."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def begin(self, name: str, total: int | None = None, unit: str = "records") -> Step:
        step = Step(name, total, unit)
        self.steps.append(step)
        return step

    @property
    def current(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    def outlook(self) -> str:
        """Where the command as a whole stands (e.g. "step 3/8, all done in ~5 min"), "" when
        its steps are not known ahead."""
        return ""


def begin(steps: Steps | None, name: str, total: int | None = None, unit: str = "records") -> Step:
    """A step to count on, shown when `steps` is being displayed (a throwaway one otherwise)."""
    return steps.begin(name, total, unit) if steps is not None else Step(name, total, unit)
