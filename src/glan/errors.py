"""Errors a user can cause end the CLI with one clear line and exit code 2; anything else is a bug."""

from __future__ import annotations

from collections.abc import Sequence


class UserError(Exception):
    """A problem the user can fix (bad input, unreachable endpoint, wrong key). One line, exit 2."""

    exit_code = 2


def did_you_mean(word: str, choices: Sequence[str], cutoff: float = 0.6) -> str:
    """ " (did you mean X?)" for the closest of `choices` to a mistyped `word`, or "" when none
    is close (the caller lists the choices either way)."""
    from difflib import get_close_matches

    close = get_close_matches(word.lower(), list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]}?)" if close else ""
