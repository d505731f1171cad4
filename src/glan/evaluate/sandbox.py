"""Model-written code never runs in glan's process: each program runs in a fresh, isolated Python
(`-I`: no site-packages of the user, no environment paths) in an empty temporary directory,
under a wall-clock timeout and CPU, memory, file-size and process-count limits, with no stdin.
It is not a security boundary against a determined attacker (same user, network reachable);
run untrusted models in a container or VM as well. Opt in with --allow-code-execution or
HF_ALLOW_CODE_EVAL=1, as lm-eval requires."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

MEMORY_BYTES = 1 << 30
CPU_SECONDS = 10


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str  # "passed", "failed", "timed out"


def code_execution_allowed(flag: bool = False) -> bool:
    return flag or os.environ.get("HF_ALLOW_CODE_EVAL") == "1"


def _limit() -> None:  # runs in the child before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
    os.setsid()


def run_program(program: str, timeout_s: float = 10.0) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="glan-sandbox-") as workdir:
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", program],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout_s,
                preexec_fn=_limit,
                env={"PATH": "/usr/bin:/bin", "HOME": workdir},
            )
        except subprocess.TimeoutExpired:
            return Outcome(False, "timed out")
    return Outcome(done.returncode == 0, "passed" if done.returncode == 0 else "failed")
