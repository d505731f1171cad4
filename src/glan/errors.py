"""Errors a user can cause end the CLI with one clear line and exit code 2; anything else is a bug."""


class UserError(Exception):
    """A problem the user can fix (bad input, unreachable endpoint, wrong key). One line, exit 2."""

    exit_code = 2
