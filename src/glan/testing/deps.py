"""Optional test dependencies: a missing one skips a test on a developer's machine, and FAILS it
in CI (env CI set), where scripts/test was meant to install it: a silent skip there would hide
that a whole area went untested."""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

from glan.benchmark_packages import package_dir


def in_ci() -> bool:
    """Whether this is CI (CI=true, as .ci/run and hosted runners set it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str, why: str) -> NoReturn:
    """A test's dependency is absent: skip it here, but FAIL it in CI, where scripts/test
    installs everything the suite needs (a skip there would pass silently)."""
    if in_ci():
        pytest.fail(
            f"{what} is missing in CI ({why}); scripts/test should install it", pytrace=False
        )
    pytest.skip(f"{what} is not installed ({why})", allow_module_level=True)


def unavailable(what: str, why: str) -> NoReturn:
    """This machine cannot give a test what it checks (a kernel feature, a privilege): skip it
    here, but FAIL it in CI, whose machine must let the suite check it."""
    if in_ci():
        pytest.fail(f"{what} is unavailable in CI ({why})", pytrace=False)
    pytest.skip(f"{what} is unavailable here ({why})")


def require(module: str, why: str) -> ModuleType:
    """Import `module` for a test (a module-level call covers the whole file), or `missing`."""
    try:
        return importlib.import_module(module)
    except ImportError:
        missing(module, why)


def need(module: str, why: str, data_only: bool = False) -> ModuleType | None:
    """`require`; with data_only, the package need only be found, installed or fetched into
    glan's cache (data packages are read as files: their imports would fail)."""
    if not data_only:
        return require(module, why)
    if package_dir(module) is None:
        missing(module, why)
    return None


def require_program(*names: str, why: str) -> str:
    """The path of the first of `names` on PATH (one program, several names), or `missing`."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    missing(names[0], why)
