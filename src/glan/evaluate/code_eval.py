"""HumanEval's and MBPP's own lm-eval metrics, with the code run in glan's sandbox.

lm-eval's humaneval and mbpp tasks score through Hugging Face evaluate's `code_eval` metric,
which `evaluate.load("code_eval")` fetches from the hub when their utils module is imported, and
which runs model-written code in a thread of a forked process with only a timeout. glan serves
that one name itself while lm-eval runs: the same call, arguments and result shape (pass@k per k,
then each program's outcome), with each program run by glan.evaluate.sandbox. Everything else
(prompts, stop sequences, the filter that builds the program, the pass@1 function) stays
lm-eval's own.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from math import comb
from typing import Any

from glan.evaluate.sandbox import code_execution_allowed, run_program

CODE_EVAL = "code_eval"
DEFAULT_TIMEOUT_S = 3.0  # code_eval's own default, per program
STARTUP_S = 1.0  # a fresh interpreter under the sandbox's launcher, on top of the program's time


def pass_at_k(total: int, correct: int, k: int) -> float:
    """The unbiased estimator of the Codex paper: 1 - C(n-c, k) / C(n, k)."""
    if total - correct < k:
        return 1.0
    return 1.0 - comb(total - correct, k) / comb(total, k)


class SandboxedCodeEval:
    """Stands in for the module `evaluate.load("code_eval")` returns."""

    name = CODE_EVAL

    def __init__(self, allowed: bool = False) -> None:
        self.allowed = allowed  # --allow-code-execution; HF_ALLOW_CODE_EVAL=1 allows it too

    def compute(
        self,
        predictions: list[list[str]],
        references: list[str],
        k: list[int] | int = (1, 10, 100),  # type: ignore[assignment]
        num_workers: int = 4,  # unused: one program at a time, each bounded by the sandbox
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> tuple[dict[str, float], dict[int, list[tuple[int, dict[str, Any]]]]]:
        if not code_execution_allowed(self.allowed):
            raise ValueError(
                "code_eval runs model-written code: pass --allow-code-execution "
                "(or set HF_ALLOW_CODE_EVAL=1)"
            )
        ks = [k] if isinstance(k, int) else list(k)
        results: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        totals, corrects = [], []
        for task_id, (candidates, test) in enumerate(zip(predictions, references, strict=True)):
            passed = 0
            for candidate_id, candidate in enumerate(candidates):
                outcome = run_program(candidate + "\n" + test, timeout_s=timeout + STARTUP_S)
                passed += outcome.passed
                result = {"task_id": task_id, "passed": outcome.passed, "result": outcome.reason}
                results[task_id].append((candidate_id, result))
            totals.append(len(candidates))
            corrects.append(passed)
        scores = {
            f"pass@{n}": sum(pass_at_k(t, c, n) for t, c in zip(totals, corrects, strict=True))
            / len(totals)
            for n in ks
            if all(t >= n for t in totals)
        }
        return scores, results


@contextlib.contextmanager
def sandboxed_code_eval(allowed: bool = False) -> Iterator[None]:
    """While inside, `evaluate.load("code_eval")` gives SandboxedCodeEval (no hub, no in-process
    execution); any other metric loads as usual."""
    import evaluate

    original = evaluate.load

    def load(path: str, *args: Any, **kwargs: Any) -> Any:
        if path == CODE_EVAL:
            return SandboxedCodeEval(allowed)
        return original(path, *args, **kwargs)

    evaluate.load = load
    try:
        yield
    finally:
        evaluate.load = original
