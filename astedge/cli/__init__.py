"""The `astedge` command: thin typer wrappers that parse, call the library and print, one module per group.

User mistakes arrive as :class:`astedge.errors.UserError` and leave as one line on stderr with exit code 2;
Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

import sys

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
        app()
    except UserError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
