"""The command line: a thin layer over glan.api and the library."""

from glan.cli import (  # noqa: F401 - registers the commands
    batches,
    evaluate,
    evidence,
    generate,
    glantest,
    glantest_check,
    post,
    review,
    taxonomy,
    train,
)
from glan.cli.app import app, main

__all__ = ["app", "main"]
