"""A test whose dependency is missing skips on a laptop but FAILS in CI (CI=true), where
scripts/test installs everything: a skip there would pass silently."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import require, require_program

ABSENT = "glan_no_such_module_anywhere"


def outcome(call: Callable[[], object]) -> BaseException:
    """What `call` ends the test with: pytest's Failed or Skipped (caught, so that a skip
    where a failure is expected cannot pass as a skipped test)."""
    try:
        call()
    except (pytest.fail.Exception, pytest.skip.Exception) as exc:
        return exc
    raise AssertionError("the test was neither failed nor skipped")


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_module_or_program_fails_in_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    failed = outcome(lambda: require(ABSENT, "for this test"))
    assert isinstance(failed, pytest.fail.Exception), failed
    assert f"{ABSENT} is missing in CI (for this test)" in str(failed)
    failed = outcome(lambda: require_program("no-such-browser", "nor-this", why="for this test"))
    assert isinstance(failed, pytest.fail.Exception), failed
    assert "no-such-browser is missing in CI" in str(failed)


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_a_missing_module_skips_outside_ci(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    skipped = outcome(lambda: require(ABSENT, "for this test"))
    assert isinstance(skipped, pytest.skip.Exception), skipped
    assert f"{ABSENT} is not installed" in str(skipped)


def test_a_present_module_or_program_is_given(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require("json", "stdlib").dumps([1]) == "[1]"
    assert require_program("no-such-program", "sh", why="POSIX").endswith("/sh")
