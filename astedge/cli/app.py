"""The `astedge` typer app, its console and printing helpers; the commands live in the sibling modules.

User mistakes arrive as :class:`astedge.errors.UserError` and leave as one line on stderr with
exit code 2; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
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


def log_choice(line: str) -> None:
    """Which backend runs and why the ones tried before it did not: a dim line on stderr."""
    log_line(line, style="dim")


def to_json(data, indent: int | None = None) -> str:
    """`data` as strict JSON: a non-finite float (a score sed_eval leaves undefined, ...) becomes null, so every JSON
    parser reads what astedge prints."""
    return json.dumps(_finite(data), indent=indent, allow_nan=False)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def print_json(data) -> None:
    """A command's one JSON document (--json of commands that report once)."""
    sys.stdout.write(to_json(data, indent=2) + "\n")


def print_record(record: dict) -> None:
    """One JSON Lines record (``{"type": ...}``) of a command that reports a stream of them, as soon as it is ready."""
    sys.stdout.write(to_json(record) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def progress(description: str, total: float | None, *, show: bool = True, console: Console | None = None):
    """A transient progress bar on stderr while the block runs, shown only when stderr is a terminal (and `show`):
    never on stdout, never in a log. Yields ``advance(amount=1, total=None)`` (a total learnt on the way)."""
    from rich.progress import Progress

    console = console or err_console
    with Progress(transient=True, console=console, disable=not (show and console.is_terminal),
                  redirect_stdout=False, redirect_stderr=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda amount=1, total=None: bar.update(task, advance=amount, total=total)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"astedge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Audio Spectrogram Transformer from PyTorch training to real-time TensorRT on NVIDIA edge devices."""
