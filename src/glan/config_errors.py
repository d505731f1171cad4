"""What is wrong with a config, in one line blamed on where the user wrote it: the command-line
option that set the value, or the config file and line. A value nobody wrote is never blamed
on an option (`concurrency: lots` in the file is the file's, line and all)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from glan.errors import did_you_mean
from glan.llm.settings import BACKEND_KINDS
from glan.yamlfile import line_of

KINDS = ", ".join(BACKEND_KINDS)


class Sources:
    """Where each value of a config came from: the file at `path`, or an override (dotted key
    -> value, None meaning not given), written as `labels` says (e.g. "--model")."""

    def __init__(
        self, path: Path | None, overrides: dict[str, Any], labels: dict[str, str]
    ) -> None:
        self.path = path
        self.given = {key for key, value in overrides.items() if value is not None}
        self.labels = labels

    def blame(self, keys: Sequence[str | int]) -> str:
        """The option that set the value at `keys` (or a key above it), else the file and line
        that wrote it; "config" for a value that is neither's (an unlabelled override)."""
        for depth in range(len(keys), 0, -1):
            dotted = ".".join(str(k) for k in keys[:depth])
            if dotted in self.given:
                return self.labels.get(dotted, "config")
        if self.path is None:
            return "config"
        line = line_of(self.path, keys)
        return f"{self.path}:{line}" if line else str(self.path)

    @staticmethod
    def fix(source: str, key: str, value: str) -> str:
        """How to set `key` to `value` where the user is writing: on the command line (the
        source is an option) or in the file."""
        if not source.startswith("--"):
            return f"set {key} to {value}"
        return f"add --backend {value}" if key == "llm.backend" else f"add --set {key}={value}"


def first_error(exc: ValidationError, sources: Sources) -> str:
    """One line for the first problem pydantic found."""
    err = exc.errors()[0]
    loc: list[str | int] = list(err["loc"])
    kind = str(loc[1]) if len(loc) >= 2 and loc[0] == "llm" and loc[1] in BACKEND_KINDS else None
    if kind is not None:
        del loc[1]  # the union's tag is not a key the user wrote
    if err["type"] == "union_tag_invalid":
        loc.append("backend")  # the tag is: the backend's kind
    source = sources.blame(loc)
    where = ".".join(str(p) for p in loc) or "(top level)"
    if loc and loc[-1] == "backend" and err["type"] in ("union_tag_invalid", "literal_error"):
        value = str(err["ctx"]["tag"] if err["type"] == "union_tag_invalid" else err["input"])
        hint = did_you_mean(value, list(BACKEND_KINDS))
        return f"{source}: {where}: no backend {value!r}{hint}; the backends are {KINDS}"
    if err["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", str(err["ctx"]["expected"]))
        hint = did_you_mean(str(err["input"]), choices)
        return f"{source}: {where}: {err['input']!r} is not one of {', '.join(choices)}{hint}"
    if err["type"] == "extra_forbidden" and kind is not None:
        return (
            f"{source}: {where} does not apply to the {kind} backend{_takers(loc, sources, source)}"
        )
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{where}'"
    return f"{source}: {where}: {err['msg']}"


def _takers(loc: list[str | int], sources: Sources, source: str) -> str:
    """Which kinds have the setting, and how to choose one (or that none has it)."""
    if len(loc) != 2:
        return ""
    takers = [k for k, model in BACKEND_KINDS.items() if loc[1] in model.model_fields]
    if not takers:
        return f" nor to any other ({KINDS})"
    how = sources.fix(source, "llm.backend", takers[0])
    return f"; it is a setting of {', '.join(takers)}: {how}"
