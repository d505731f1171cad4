"""How `glan --help` reads: commands in the order of the workflow, one clean line each, flags
without a type beside them. Typer lists commands in the order their modules registered them
and shows the command's help as written (line breaks and all) in the list; both are fixed
here, in the group every command is looked up through."""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperGroup

# The order a user meets the commands in. A command not named here (a new one) comes after
# these, in the order it was registered: naming one that does not exist yet is harmless.
WORKFLOW = (
    "taxonomy",
    "check",
    "generate",
    "batches",
    "merge",
    "clean",
    "decontaminate",
    "export",
    "report",
    "train",
    "eval",
    "test",
    "evidence",
)
TAXONOMY_WORKFLOW = ("build", "review", "export-review", "validate", "show", "stats", "add")

# A sentence ends at . ! or ? before a capital, a backquote, a bracket or the end (not "e.g.").
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)[.!?](?=\s+[A-Z(`\[]|\s*$)")


def first_sentence(text: str) -> str:
    """The first sentence of a docstring, on one line (the rest of its paragraph dropped)."""
    paragraph = " ".join(text.strip().split("\n\n", 1)[0].split())
    end = _SENTENCE_END.search(paragraph)
    return paragraph[: end.end()] if end else paragraph


def _tidy(command: Any, ctx: Any) -> None:
    """Give `command` a one-line summary and hide the type Typer shows beside flags (`<bool>`
    beside --quiet says nothing a flag does not); the same for every command under it, so a
    sub-app made with a plain typer.Typer (glan test) reads the same."""
    if not getattr(command, "short_help", None) and getattr(command, "help", None):
        command.short_help = first_sentence(command.help)
    # get_params includes --help, which click builds once per command and keeps.
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub, ctx)


class WorkflowGroup(TyperGroup):
    """A command group that lists its commands in the workflow's order, each on one line."""

    order: tuple[str, ...] = WORKFLOW

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        rank = {name: i for i, name in enumerate(self.order)}
        return sorted(names, key=lambda name: (rank.get(name, len(rank)), names.index(name)))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _tidy(command, ctx)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _tidy(self, ctx)
        super().format_help(ctx, formatter)


class TaxonomyGroup(WorkflowGroup):
    """`glan taxonomy`: draft, review, check, look, edit."""

    order = TAXONOMY_WORKFLOW
