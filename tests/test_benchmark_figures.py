"""BENCHMARKS.md says what the code does, or when a figure was true: the figures a bench
re-derives in seconds still hold within the bands written beside them (bench/figures.py), and
every other table names the commit and date it was measured at."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from glan.testing.deps import unavailable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import figures  # noqa: E402  (bench/ is no package: its scripts import each other by name)

DOC = (ROOT / "BENCHMARKS.md").read_text()


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_each_figure_ci_checks_is_stated_in_its_section_with_its_band():
    sections = figures.sections(DOC)
    for figure in figures.FIGURES:
        assert figure.section in sections, figure.name
        assert one_line(figure.stated) in one_line(sections[figure.section]), figure.name
        assert (figure.value or figure.band) in figure.stated, figure.name
        if figure.is_range:  # the noise is written beside the figure, and holds the figure
            assert figure.band in figure.stated, figure.name
            assert figure.stated_in_band(), figure.name


def test_a_figure_stated_as_a_range_lies_in_its_band_at_both_ends():
    def poisoned_run(stated: str) -> figures.Figure:
        row = f"| 300 pairs, 5% poisoned | {stated} s | 2.5-6.5 |"
        return figures.Figure("poisoned", "S", row, "2.5-6.5", dict, "run", stated)

    assert poisoned_run("3.3-3.8").stated_in_band()
    assert not poisoned_run("1.2-1.6").stated_in_band()  # issue 27's stale figure
    assert not poisoned_run("6.0-7.0").stated_in_band()  # an end out is out


def test_every_table_says_when_it_was_measured():
    assert figures.unstamped_tables(DOC) == []


def test_a_table_with_no_stamp_above_it_in_its_section_is_found():
    text = (
        "## A\n\n| a |\n|---|\n\nMeasured at `abcdef1` (2026-01-01).\n\n| b |\n|---|\n"
        "\n## B\n\n| c |\n|---|\n\nMeasured at `abcdef1`\n(2026-01-01).\n\n| d |\n\n| e |\n"
        "\n## C\n\nMeasured at some point.\n\n| f |\n"
    )
    assert figures.unstamped_tables(text) == ["| a |", "| c |", "| f |"]


def test_each_stamp_names_a_commit_of_its_date():
    stamped = {pair for block in figures.paragraphs(DOC) for pair in figures.stamps(block)}
    assert len(stamped) >= 25
    shallow = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
    )
    if shallow.returncode != 0 or shallow.stdout.strip() != "false":
        unavailable("the repository's whole history", "to find each stamp's commit")
    for commit, date in sorted(stamped):
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", "-s", "--format=%ad", "--date=short", commit],
            capture_output=True,
            text=True,
        )
        assert shown.returncode == 0, f"{commit}: {shown.stderr}"
        assert shown.stdout.strip() == date, commit


@pytest.mark.slow
def test_the_figures_a_bench_re_derives_in_seconds_still_hold():
    found = figures.rederive(figures.FIGURES)
    assert [f.figure.name for f in found] == [f.name for f in figures.FIGURES]
    moved = [
        f"{f.figure.name}: {', '.join(map(figures.shown, f.values))} (band {f.figure.band})"
        for f in found
        if not f.holds
    ]
    assert moved == []
