"""Progress of clean, export and upload: bars on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from glan.cli.progress import show_steps, step_line
from glan.post.progress import Steps


def test_a_plain_line_says_the_step_its_share_and_what_is_left():
    steps = Steps()
    assert step_line(steps) == "glan: starting"
    step = steps.begin("dedup: signatures", 4_000_000_000, "bytes")
    step.done = 1_000_000_000
    line = step_line(steps)
    assert line.startswith("glan: dedup: signatures: 1,000/4,000 MB (25%), ")
    assert "MB/s, ETA " in line
    steps.begin("upload", None, "files").done = 3
    assert step_line(steps).startswith("glan: upload: 3 files, ")


def test_a_terminal_gets_one_bar_per_step_with_its_final_count():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    steps = Steps()
    with show_steps(steps, console):
        steps.begin("export: read", 10).done = 10
        steps.begin("export: write parquet", 7).done = 7
    text = buffer.getvalue()
    assert "export: read" in text and "10/10 records" in text
    assert "export: write parquet" in text and "7/7 records" in text


def test_quiet_shows_nothing():
    buffer = io.StringIO()
    steps = Steps()
    with show_steps(steps, Console(file=buffer, force_terminal=True), quiet=True):
        steps.begin("clean", 3).done = 3
    assert buffer.getvalue() == ""


def test_a_bar_shows_its_step_as_written():
    """A step's name and amount are shown as text: never read as Rich markup or emoji codes."""
    from glan.cli.app import plain_console

    buffer = io.StringIO()
    steps = Steps()
    with show_steps(steps, plain_console(file=buffer, force_terminal=True, width=160)):
        steps.begin("export: [bold]my:question:", 2).done = 2
    assert "export: [bold]my:question:" in buffer.getvalue()
