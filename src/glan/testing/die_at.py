"""A process that dies (SIGKILL, no clean-up of any kind) the moment one named function is
called: a crash at exactly that point, for the tests that prove the next run picks up what a
dead process left. A kill from outside can only aim at a moment; this aims at a line.

    python -m glan.testing.die_at glan.llm.batch.ledger:BatchLedger.set_batch glan generate ...

replaces `BatchLedger.set_batch` with a self-kill, then runs `python -m glan generate ...`.
"""

from __future__ import annotations

import importlib
import os
import runpy
import signal
import subprocess
import sys
from typing import Any


def die_when_called(target: str) -> None:
    """`target`: MODULE:QUALNAME, e.g. glan.llm.batch.ledger:BatchLedger.set_batch."""
    module_name, _, qualname = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    getattr(owner, name)  # a misspelt target fails here, not by never dying

    def die(*args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, name, die)


def run_dying_at(target: str, module: str, *args: str, timeout: float = 300) -> int:
    """`python -m MODULE ARGS` in a process of its own that dies when `target` is called;
    returns its exit status (-SIGKILL when it died there)."""
    command = [sys.executable, "-m", __name__, target, module, *args]
    return subprocess.run(command, capture_output=True, timeout=timeout).returncode


def main() -> None:
    target, module, *args = sys.argv[1:]
    die_when_called(target)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
