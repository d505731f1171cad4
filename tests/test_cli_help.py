"""The CLI's front door: `glan --help` lists the commands in the workflow's order, one whole
sentence on one line each; flags show no `<bool>`; `glan --version` says which glan it is."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from glan import __version__
from glan.cli import app
from glan.cli.help import WORKFLOW, first_sentence

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The commands of the workflow, in its order (the runner may hold more).
CORE = ["taxonomy", "generate", "merge", "clean", "decontaminate", "export", "report", "train"]
CORE += ["eval"]


def invoke(*args: str) -> str:
    """What `glan ARGS` prints on an 80-column terminal, without colour codes."""
    result = CliRunner().invoke(app, list(args), prog_name="glan", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return ANSI.sub("", result.output)


def command_rows(help_text: str) -> list[tuple[str, str]]:
    """(name, summary) per line of the Commands panel; a wrapped summary shows as a line
    whose name is empty."""
    panel = help_text.split("Commands ", 1)[1].split("╰", 1)[0]
    rows = []
    for line in panel.splitlines()[1:]:
        inner = line.strip().strip("│")
        if not inner.strip():
            continue
        if inner.startswith("  "):  # the row above, wrapped
            rows.append(("", inner.strip()))
        else:
            name, _, summary = inner.strip().partition(" ")
            rows.append((name, summary.strip()))
    return rows


def command_paths(group: typer.core.TyperGroup, ctx, prefix: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*prefix, name)
        if hasattr(command, "list_commands"):
            yield from command_paths(command, ctx, (*prefix, name))


def all_command_paths() -> list[tuple[str, ...]]:
    root = typer.main.get_command(app)
    with root.make_context("glan", ["--help"], resilient_parsing=True) as ctx:
        return list(command_paths(root, ctx))


def test_commands_are_listed_in_the_workflow_s_order():
    names = [name for name, _ in command_rows(invoke("--help"))]
    assert [name for name in names if name in CORE] == CORE
    # The known ones in WORKFLOW's order (check before generate, test after eval, ...) and a
    # command WORKFLOW does not name yet after them all.
    known = [name for name in names if name in WORKFLOW]
    assert known == sorted(known, key=WORKFLOW.index)
    assert names[: len(known)] == known
    assert names.index("check") < names.index("generate")


def all_groups() -> list[tuple[str, ...]]:
    """glan and every command of it that has commands of its own (taxonomy, test, ...)."""
    root = typer.main.get_command(app)
    with root.make_context("glan", ["--help"], resilient_parsing=True) as ctx:
        paths = list(command_paths(root, ctx))
        groups = [()]
        for path in paths:
            command = root
            for name in path:
                command = command.get_command(ctx, name)
            if hasattr(command, "list_commands"):
                groups.append(path)
    return groups


@pytest.mark.parametrize("group", all_groups(), ids=lambda path: " ".join(("glan", *path)))
def test_each_command_is_one_whole_sentence_on_one_line(group):
    rows = command_rows(invoke(*group, "--help"))
    assert rows and all(name for name, _ in rows), rows  # no summary wraps onto a second line
    for name, summary in rows:
        assert summary.endswith("."), (name, summary)  # a whole sentence, not cut mid-way
        assert len(summary.split(". ")) == 1, (name, summary)  # and only the first


def test_taxonomy_subcommands_in_the_order_they_are_used():
    names = [name for name, _ in command_rows(invoke("taxonomy", "--help"))]
    assert names[:3] == ["build", "review", "export-review"]


def test_no_command_shows_a_type_beside_its_flags():
    paths = all_command_paths()
    assert ("generate",) in paths and ("taxonomy", "build") in paths
    for path in [(), *paths]:
        text = invoke(*path, "--help")
        assert "<bool>" not in text, (path, text)
        assert "--help" in text  # the option rows were printed, the flags among them


def test_version_prints_glan_and_its_version():
    assert invoke("--version").strip() == f"glan {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_first_sentence_joins_lines_and_stops_at_the_first_full_stop():
    doc = """Tune BASE_MODEL on glan pairs, e.g. a run's
    output. Defaults are the paper's recipe.

    More."""
    assert first_sentence(doc) == "Tune BASE_MODEL on glan pairs, e.g. a run's output."
    assert first_sentence("Write clean.jsonl and removed.jsonl into it") == (
        "Write clean.jsonl and removed.jsonl into it"
    )


def test_bare_glan_shows_the_help_without_an_error():
    proc = subprocess.run(
        [sys.executable, "-m", "glan"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr and "Commands" in proc.stdout
