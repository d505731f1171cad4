"""The CI entry point runs the README's test command as CI: with CI set, a test whose optional
dependency is missing fails instead of skipping (glan.testing.deps)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_test_command_with_ci_set(tmp_path):
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "scripts").mkdir()
    stand_in = tmp_path / "scripts" / "test"  # prints what the real test command would see
    stand_in.write_text('#!/usr/bin/env bash\necho "CI=${CI:-}"\n')
    stand_in.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    proc = subprocess.run(
        ["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "CI=true"
