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
import contextvars
import math
import secrets
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from glan.evaluate.sandbox import code_execution_allowed, run_program

CODE_EVAL = "code_eval"
DEFAULT_TIMEOUT_S = 3.0  # code_eval's own default, per program
STARTUP_S = 1.0  # a fresh interpreter under the sandbox's launcher, on top of the program's time

# How Hugging Face's code_eval runs a program (its execute.py): exec() in globals of its own, so
# `if __name__ == "__main__":` blocks do not run; exit() and quit() disabled; any exception,
# SystemExit included, fails it. A program that ends the process early (os._exit) never reports
# and fails too: here, the run passes only if a token unknown to the program is written after it,
# and after what it printed (flushed first: the sandbox keeps only the end of a long output).
HARNESS = """import builtins, contextlib, os, sys
builtins.exit = builtins.quit = None
try:
    exec(compile({program!r}, "<program>", "exec"), {{}})
except BaseException as error:
    print(f"failed: {{type(error).__name__}}: {{error}}"[:300], file=sys.stderr, flush=True)
    os._exit(1)
for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(Exception):
        stream.flush()
os.write(1, {token!r}.encode())
"""


def pass_at_k(total: int, correct: int, k: int) -> float:
    """The unbiased estimator of the Codex paper: 1 - C(n-c, k) / C(n, k)."""
    if total - correct < k:
        return 1.0
    return 1.0 - math.comb(total - correct, k) / math.comb(total, k)


def run_candidate(program: str, timeout_s: float) -> tuple[bool, str]:
    """One program as code_eval runs it, in glan's sandbox: (passed, code_eval's result text)."""
    token = f"glan-passed-{secrets.token_hex(16)}"
    outcome = run_program(HARNESS.format(program=program, token=token), timeout_s=timeout_s)
    if outcome.passed:  # exit status 0: it passed only if it ran to the end
        finished = token in outcome.output
        return finished, "passed" if finished else "failed: the program ended before its tests"
    if outcome.reason == "failed":
        said = [line for line in outcome.output.splitlines() if line.startswith("failed: ")]
        return False, said[-1] if said else "failed"
    return False, outcome.reason  # timed out, wrote too much, program too long


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
                "code_eval runs model-written code: set HF_ALLOW_CODE_EVAL=1 "
                "(glan eval: --allow-code-execution)"
            )
        ks = [k] if isinstance(k, int) else list(k)
        results: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        totals, corrects = [], []
        for task_id, (candidates, test) in enumerate(zip(predictions, references, strict=True)):
            passed = 0
            for completion_id, candidate in enumerate(candidates):
                ok, said = run_candidate(candidate + "\n" + test, timeout + STARTUP_S)
                passed += ok
                result = {"task_id": task_id, "passed": ok, "result": said}
                results[task_id].append((completion_id, {**result, "completion_id": completion_id}))
            totals.append(len(candidates))
            corrects.append(passed)
        scores = {
            f"pass@{n}": (
                sum(pass_at_k(t, c, n) for t, c in zip(totals, corrects, strict=True)) / len(totals)
                if totals
                else math.nan
            )
            for n in ks
            if all(t >= n for t in totals)
        }
        return scores, results


_allowed: contextvars.ContextVar[bool | None] = contextvars.ContextVar("code_eval", default=None)
_patch_lock = threading.Lock()
_patch_users = 0
_hubs_load: Any = None


@contextlib.contextmanager
def sandboxed_code_eval(allowed: bool = False) -> Iterator[None]:
    """While inside, `evaluate.load("code_eval")` gives SandboxedCodeEval (no hub, no in-process
    execution); any other metric, and any caller outside, loads as usual. Uses may overlap
    (threads, nested runs): Hugging Face's `load` is back once the last one ends."""
    import evaluate

    global _patch_users, _hubs_load
    with _patch_lock:
        if _patch_users == 0:
            _hubs_load = original = evaluate.load

            def load(path: str, *args: Any, **kwargs: Any) -> Any:
                inside = _allowed.get()
                if path == CODE_EVAL and inside is not None:
                    return SandboxedCodeEval(inside)
                return original(path, *args, **kwargs)

            evaluate.load = load
        _patch_users += 1
    token = _allowed.set(allowed)
    try:
        yield
    finally:
        _allowed.reset(token)
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                evaluate.load = _hubs_load
