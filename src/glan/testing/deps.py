"""Optional test dependencies: a missing one skips a test on a developer's machine, and FAILS it
in CI (env CI set), where scripts/test was meant to install it: a silent skip there would hide
that a whole area went untested."""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import pytest


def need(module: str, reason: str, data_only: bool = False) -> ModuleType | None:
    """The module imported; with data_only, only found (data packages installed --no-deps,
    whose imports would fail, are read as files)."""
    try:
        if data_only:
            if importlib.util.find_spec(module) is None:
                raise ImportError(f"no package {module}")
            return None
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{module} did not install in CI ({reason}): {exc}", pytrace=False)
        pytest.skip(f"{module} is not installed: {reason}")
