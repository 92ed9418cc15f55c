"""The `astedge` command: thin typer wrappers that parse, call the library and print, one module per group.

User mistakes (a :class:`astedge.errors.UserError`, or a usage mistake typer finds: a missing argument, an option's
bad value) leave as one line on stderr with exit code 2; Ctrl-C exits 130. Anything else is a bug and keeps its
traceback.
"""

import sys

import typer
from rich.markup import escape

# Each module registers its commands; --help lists them in this order (the pipeline's).
from astedge.cli import inputs  # noqa: F401, I001
from astedge.cli import training  # noqa: F401
from astedge.cli import deploy  # noqa: F401
from astedge.cli import runtime  # noqa: F401
from astedge.cli import scoring  # noqa: F401
from astedge.cli import measure  # noqa: F401
from astedge.cli.app import app, err_console
from astedge.errors import UserError

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except UserError as err:
        _error(str(err))
    except _usage_errors() as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `astedge` or a group alone: its help, as typer shows it
            err.show()
            sys.exit(2)
        where = err.ctx.command_path if getattr(err, "ctx", None) is not None else "astedge"
        _error(f"{err.format_message()} (see {where} --help)", err.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted")
        sys.exit(130)
    sys.exit(code or 0)


def _usage_errors() -> tuple[type, ...]:
    """The exceptions of a usage mistake (a missing argument, an option's bad value): typer's own click copy's (typer
    0.29 and later) and click's (earlier typer)."""
    errors: tuple[type, ...] = (typer.TyperException,)
    try:
        import click
    except ImportError:
        return errors
    return (*errors, click.ClickException, click.exceptions.Abort)


def _error(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)
