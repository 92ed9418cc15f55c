"""Output files that appear whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from pathlib import Path

from astedge.errors import UserError


def current_umask() -> int:
    """The process's umask (read by setting and restoring it): new outputs get the permissions it allows."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb"):
    """Yield a temp file beside `path`; rename it over `path` only if the block succeeds.

    A crash, Ctrl-C or error never leaves a half-written output behind. A symlinked `path` keeps its
    link (the file it points to is replaced); a device or pipe (/dev/null, /dev/stdout, a FIFO) is
    written in place, once the block has succeeded, from a memory buffer (it cannot be renamed over, and
    numpy cannot save to a pipe). Failures to write are a UserError naming the output.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file() and not path.is_dir():
        buffer = io.BytesIO() if "b" in mode else io.StringIO()
        yield buffer
        try:
            with open(path, mode) as handle:
                handle.write(buffer.getvalue())
        except OSError as err:
            raise UserError(f"cannot write the output ({err.strerror or err})", path) from None
        return
    if not path.parent.is_dir():
        raise UserError("output directory does not exist", path.parent)
    if path.is_dir():
        raise UserError("output path is a directory", path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write the output ({err.strerror or err})", path) from None
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the output the usual permissions
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in _WRITE_ERRORS:  # a full disk, a read-only file system
            raise UserError(f"cannot write the output ({err.strerror or err})", path) from None
        raise


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB blocks (provenance and cache keys)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_toml(path: str | Path) -> dict:
    """A TOML file as a dict: tomllib (3.11+) or tomli (JetPack 6 ships Python 3.10); errors name the file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("does not exist", path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"is not valid TOML ({err})", path) from None


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's content; a missing or unreadable one is one UserError naming it (``<what> does not
    exist``, ``cannot read <what>: ...``)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} does not exist", path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {what}: {err}", path) from None


def read_json(path: str | Path, what: str = "file"):
    """A JSON file's content (see :func:`read_text`); invalid JSON is one UserError naming the file."""
    import json

    try:
        return json.loads(read_text(path, what))
    except ValueError as err:
        raise UserError(f"is not valid JSON ({err})", path) from None
