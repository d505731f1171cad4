"""The `glan` command as a user runs it (a process of its own), and the shape of its errors."""

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


def assert_one_clear_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, one line on stderr holding every needle; returns the line."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
