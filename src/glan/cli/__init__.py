"""The command line: a thin layer over glan.api and the library."""

from glan.cli import evaluate, generate, post, taxonomy, train  # noqa: F401 - registers the commands
from glan.cli.app import app, main

__all__ = ["app", "main"]
