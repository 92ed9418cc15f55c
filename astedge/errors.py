"""The one exception type for user mistakes.

Anything raised as :class:`UserError` is the user's to fix (a bad file, a bad option,
an engine built for another GPU): the CLI prints its message on one line and exits 2.
Every other exception is a bug in astedge and may show a traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input, described in one line."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
