"""The `astedge` typer app, its console and printing helpers; the commands live in the sibling modules.

User mistakes arrive as :class:`astedge.errors.UserError` and leave as one line on stderr with
exit code 2; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console

from astedge import __version__

app = typer.Typer(
    name="astedge",
    help="Audio Spectrogram Transformer from PyTorch training to real-time TensorRT on NVIDIA edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True)


def log_line(message: str, style: str | None = None) -> None:
    """A progress line on stderr, as plain text: paths and labels with brackets are not rich markup."""
    err_console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"astedge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Audio Spectrogram Transformer from PyTorch training to real-time TensorRT on NVIDIA edge devices."""
