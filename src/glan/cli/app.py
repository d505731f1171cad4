"""The `glan` command: parses, calls the library, prints. Nothing here the API cannot do."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from glan.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="GLAN instruction data.")
taxonomy_app = typer.Typer(no_args_is_help=True, help="Show, check and edit the taxonomy.")
app.add_typer(taxonomy_app, name="taxonomy")
console = Console(stderr=True)
out = Console()

Opt = typer.Option


def endpoint_config(
    backend: str | None, model: str | None, base_url: str | None, api_key_env: str | None
):
    """A config whose `llm` block is these endpoint options (None keeps the default)."""
    from glan.config import load_config

    options = {"backend": backend, "model": model, "base_url": base_url, "api_key_env": api_key_env}
    return load_config(None, {f"llm.{k}": v for k, v in options.items()})


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def main() -> None:
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except UserError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted: finished work is kept; re-run the same command to resume")
        sys.exit(130)
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise
