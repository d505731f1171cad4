"""Running the `glan` command as a user does, and what its failures must look like."""

from __future__ import annotations

import os
import subprocess
import sys


def glan(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m glan ARGS` in a process of its own, with `env` over this one's environment."""
    return subprocess.run(
        [sys.executable, "-m", "glan", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_clear_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """A user error: exit 2 and one line on stderr, no traceback, holding every needle."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
