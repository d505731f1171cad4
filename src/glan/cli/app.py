"""The `glan` command: parses, calls the library, prints. Nothing here the API cannot do."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from glan import __version__
from glan.cli.help import TaxonomyGroup, WorkflowGroup
from glan.errors import UserError

app = typer.Typer(
    cls=WorkflowGroup,
    add_completion=False,
    no_args_is_help=True,
    help="GLAN: instruction-tuning data made by walking a taxonomy of human knowledge.",
)
taxonomy_app = typer.Typer(
    cls=TaxonomyGroup, no_args_is_help=True, help="Show, build, review and edit the taxonomy."
)
app.add_typer(taxonomy_app, name="taxonomy")


def plain_console(**options: Any) -> Console:
    """A console that prints text as written. Messages carry what users typed (paths, benchmark
    specs, node names) and hints like `pip install 'glan[hf]'`: Rich markup would swallow
    `[bold]` and emoji codes would turn `my_eval.jsonl:question:` into a picture. Colour is
    given with style= or Text where wanted."""
    return Console(markup=False, emoji=False, **options)


console = plain_console(stderr=True)
out = plain_console()

Opt = typer.Option


def _print_version(value: bool) -> None:
    if value:
        out.print(f"glan {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        Opt("--version", is_eager=True, callback=_print_version, help="print glan's version"),
    ] = False,
) -> None:
    """Options of `glan` itself; its help text is the app's `help`."""


def endpoint_config(
    backend: str | None, model: str | None, base_url: str | None, api_key_env: str | None
):
    """A config whose `llm` block is these endpoint options (None keeps the default; without
    a backend, a base URL or a key variable means openai, as in generate)."""
    from glan.config import load_config

    options = {"backend": backend, "model": model, "base_url": base_url, "api_key_env": api_key_env}
    return load_config(
        None,
        {f"llm.{k}": v for k, v in options.items()},
        {f"llm.{k}": "--" + k.replace("_", "-") for k in options},
    )


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 file', '3 files', '1 syllabus', '2 syllabi' (`many`: an irregular plural)."""
    return f"{count:,} " + (word if count == 1 else many or f"{word}s")


def tagged(tag: str, style: str, message: str) -> Text:
    """'note: ...' with the tag in colour and the message as written."""
    return Text.assemble((tag, style), " ", message)


def error_line(message: str) -> None:
    """One line on stderr, printed as written: no Rich markup (a hint like
    `pip install 'glan[hf]'` keeps its brackets) and no wrapping."""
    console.print(
        f"error: {message}", style="bold red", highlight=False, markup=False, soft_wrap=True
    )


def fail(message: str, code: int = 2) -> None:
    error_line(message)
    raise typer.Exit(code)


def _click_errors() -> tuple[type[Exception], ...]:
    """Usage-error types from whichever click the installed typer parses with: typer 0.2x
    vendors its own (typer._click); older typer uses the click package."""
    found: list[type[Exception]] = []
    with contextlib.suppress(ImportError):
        from typer._click.exceptions import ClickException

        found.append(ClickException)
    with contextlib.suppress(ImportError):
        from click.exceptions import ClickException as PackageClickException

        found.append(PackageClickException)
    return tuple(found)


def _usage_message(exc: Exception) -> str:
    possible = getattr(exc, "possibilities", None)
    if possible and getattr(exc, "option_name", None):
        message = f"no such option {exc.option_name}: did you mean {' or '.join(sorted(possible))}?"
    else:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(message.split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and getattr(ctx, "command_path", None):
        message += f" (see: {ctx.command_path} --help)"
    return message


def main() -> None:
    usage_errors = _click_errors()
    try:
        rc = app(prog_name="glan", standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except UserError as exc:
        error_line(str(exc))
        sys.exit(exc.exit_code)
    except (typer.Exit, typer.Abort) as exc:
        sys.exit(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        console.print(
            "interrupted: finished work is kept; re-run the same command to resume", markup=False
        )
        sys.exit(130)
    except usage_errors as exc:  # a flag typo, a bad value, a missing option, no such command
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `glan`: the help, nothing wrong
            help_text = exc.format_message().strip()  # empty when Rich already printed it
            if help_text:
                out.print(help_text, highlight=False)
            sys.exit(0)
        error_line(_usage_message(exc))
        sys.exit(2)
