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


def some(names, limit: int = 8) -> str:
    """Up to `limit` names for a one-line message: ``a, b, c and 12 more``."""
    names = [str(name) for name in names]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_fields(cls, data: dict, what: str, source=None) -> dict:
    """`data` when every key is a field of the dataclass `cls`; else a UserError naming the unknown ones (a typo
    in a config must never fall back to a default silently)."""
    unknown = sorted(set(data) - set(cls.__dataclass_fields__))
    if unknown:
        raise UserError(f"unknown {what} fields: {', '.join(map(str, unknown))}", source)
    return data
