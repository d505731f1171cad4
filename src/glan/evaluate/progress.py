"""What `glan eval` is doing: each model's loading and each (model, benchmark) step in turn, the
requests (lm-eval) or items (leakage test) the running step has scored, and an ETA for all.

The library only counts (glan.post.progress.Steps); glan.cli.progress draws it. The ETA of a step
not yet begun is the time the same step took for an earlier model (same-size models take about
the same time), else the mean of the steps finished so far, else the running step's projection:
a guess at first, close once the first model is through. `listeners` are called as each step
begins and ends (bench/eval_cost.py times and measures each step through them).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from glan.post.progress import Step, Steps

LOADING = "loading"  # the benchmark name of a model's loading step

Listener = Callable[[str, str, str, str], None]  # (event, phase, model, benchmark)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


class EvalSteps(Steps):
    """Steps named "PHASE MODEL: BENCHMARK"; `plan` says which are to come, for the ETA."""

    def __init__(self, listeners: tuple[Listener, ...] = ()) -> None:
        super().__init__()
        self.listeners = listeners
        self.planned: list[tuple[str, str, str]] = []
        self.seconds: dict[tuple[str, str, str], float] = {}  # finished steps
        self._running: tuple[str, str, str] | None = None

    def plan(self, phase: str, models: list[str], benchmarks: list[str]) -> None:
        for model in models:
            self.planned.append((phase, model, LOADING))
            self.planned += [(phase, model, bench) for bench in benchmarks]

    @contextlib.contextmanager
    def step(
        self,
        phase: str,
        model: str,
        benchmark: str,
        total: int | None = None,
        unit: str = "requests",
    ) -> Iterator[Step]:
        """One step, timed; listeners hear "begin" and "end" (also when the step fails). A step
        with no unit (a model's loading) counts nothing."""
        key = (phase, model, benchmark)
        self._tell("begin", key)
        self._running = key
        step = self.begin(f"{phase} {model}: {benchmark}", total, unit)
        try:
            yield step
        finally:
            self.seconds[key] = time.monotonic() - step.started
            self._running = None
            self._tell("end", key)

    def _tell(self, event: str, key: tuple[str, str, str]) -> None:
        for listener in self.listeners:
            listener(event, *key)

    def _guess(self, key: tuple[str, str, str], running: float | None) -> float | None:
        earlier = [s for (ph, _, b), s in self.seconds.items() if (ph, b) == (key[0], key[2])]
        if earlier:
            return earlier[-1]
        finished = [s for (_, _, b), s in self.seconds.items() if b != LOADING]
        if key[2] == LOADING or not finished:
            return running if key[2] != LOADING else None
        return sum(finished) / len(finished)

    def eta_s(self) -> float | None:
        """Seconds until every planned step is done, or None while nothing says."""
        step, left, running = self.current, 0.0, None
        if self._running is not None and step is not None:
            elapsed = time.monotonic() - step.started
            if step.total and step.done:
                running = elapsed * step.total / step.done
                left += running - elapsed
            else:
                guess = self._guess(self._running, None)
                left += max(0.0, guess - elapsed) if guess is not None else 0.0
        todo = [k for k in self.planned if k not in self.seconds and k != self._running]
        for key in todo:
            guess = self._guess(key, running)
            if guess is None and key[2] != LOADING:
                return None
            left += guess or 0.0
        return left if (todo or running is not None) else None

    def outlook(self) -> str:
        if not self.planned:
            return ""
        done = len(self.seconds)
        eta = self.eta_s()
        return f"step {min(done + 1, len(self.planned))}/{len(self.planned)}, " + (
            f"all done in ~{_duration(eta)}" if eta is not None else "ETA estimating"
        )


def count_requests(step: Step) -> Any:
    """A stand-in for lm-eval's tqdm (Hugging Face backend) that draws nothing and counts its
    requests into `step`: glan's display replaces lm-eval's bars."""
    from tqdm import tqdm

    class Counted(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.counts = str(kwargs.get("desc", "")).startswith("Running")
            if self.counts:
                step.total = (step.total or 0) + int(kwargs.get("total") or 0)

        def update(self, n: float | None = 1) -> bool | None:
            if self.counts:
                step.done += int(n or 0)
            return super().update(n)

    return Counted


@contextlib.contextmanager
def lm_eval_counted(step: Step) -> Iterator[None]:
    """lm-eval's Hugging Face request bars counted into `step`, and its other bars (the
    documents of each task, one per MMLU subject; tokenizing) hidden, while the block runs."""
    import lm_eval.api.model as model
    import lm_eval.api.task as task
    import lm_eval.models.huggingface as hf

    modules = (hf, task, model)
    own = [m.tqdm for m in modules]
    for module in modules:
        module.tqdm = count_requests(step)
    try:
        yield
    finally:
        for module, bar in zip(modules, own, strict=True):
            module.tqdm = bar
