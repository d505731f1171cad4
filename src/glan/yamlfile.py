"""YAML files people write (configs, taxonomies): parsed with errors that name the file and
line, and the line a key was written on, for errors found after parsing (a wrong type)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from glan.errors import UserError


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; errors name the file and line."""
    if not path.exists():
        raise UserError(f"file not found: {path}")
    if not path.is_file():
        raise UserError(f"not a file: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: malformed YAML: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: malformed YAML: {exc}") from None


def line_of(path: Path, keys: Sequence[str | int]) -> int | None:
    """The line (from 1) where the file writes the value at `keys` (mapping keys and list
    indexes, as in a pydantic error's loc): the line of the deepest of them it holds, or None
    when it holds not even the first (the value came from elsewhere)."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if str(k.value) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            found = node.value[key] if 0 <= key < len(node.value) else None
        else:
            found = None
        if found is None:
            break
        node = found
        line = node.start_mark.line + 1
    return line
