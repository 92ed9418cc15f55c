"""The C audio libraries' own notes, kept off the user's terminal.

libsndfile's MP3 decoder (libmpg123) writes notes such as ``Note: Illegal Audio-MPEG-Header ... Trying to
resync...`` straight to file descriptor 2 while it reads a damaged file, where astedge reports the problem
itself in one line. :func:`quiet_c_stderr` points descriptor 2 at a temporary file around such calls and
always restores it. Descriptor 2 belongs to the whole process, so the redirection is shared: threads that
enter while it is active join it, the last one out restores the terminal, and whatever else reached
stderr meanwhile (a Python warning or a progress line from another thread) is passed on; only lines shaped
like the C libraries' notes are dropped.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager

#: Lines the C audio libraries print on their own: libmpg123's ``Note:``/``Warning:`` lines and its
#: ``[src/libmpg123/file.c:function():line] error: ...`` diagnostics.
C_LIBRARY_NOTE = re.compile(rb"^(Note: |Warning: |\[[^\]\n]*libmpg123[^\]\n]*\] )")

_lock = threading.Lock()
_depth = 0
_saved_fd: int | None = None
_sink: int | None = None  # one unnamed temporary file for the process (a descriptor), emptied after each use


@contextmanager
def quiet_c_stderr():
    """Run the body with descriptor 2 captured; the C libraries' notes written meanwhile are dropped."""
    _enter()
    try:
        yield
    finally:
        _leave()


def _enter() -> None:
    global _depth, _saved_fd, _sink
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        _flush_python_stderr()
        try:
            _saved_fd = os.dup(2)
        except OSError:  # no descriptor 2 at all: nothing can reach a terminal
            _saved_fd = None
            return
        if _sink is None:
            _sink, name = tempfile.mkstemp(prefix="astedge-stderr-")
            os.unlink(name)
        os.dup2(_sink, 2)


def _leave() -> None:
    global _depth, _saved_fd
    with _lock:
        _depth -= 1
        if _depth > 0 or _saved_fd is None:
            return
        _flush_python_stderr()
        os.dup2(_saved_fd, 2)
        os.close(_saved_fd)
        _saved_fd = None
        _pass_on(_drain())


def _drain() -> bytes:
    """What reached descriptor 2 while it was captured; the sink is emptied for the next use."""
    sink = _sink
    size = os.fstat(sink).st_size
    if not size:
        return b""
    os.lseek(sink, 0, os.SEEK_SET)
    data = os.read(sink, size)
    os.ftruncate(sink, 0)
    os.lseek(sink, 0, os.SEEK_SET)
    return data


def _pass_on(data: bytes) -> None:
    """Write back every captured line that is not a C library's note."""
    kept = b"".join(line for line in data.splitlines(keepends=True) if not C_LIBRARY_NOTE.match(line))
    if kept:
        os.write(2, kept)


def _after_fork_in_child() -> None:
    """A child forked during a capture (a data loader worker) gets the terminal back and its own lock and sink."""
    global _lock, _depth, _saved_fd, _sink
    if _saved_fd is not None:
        os.dup2(_saved_fd, 2)
        os.close(_saved_fd)
    _lock, _depth, _saved_fd, _sink = threading.Lock(), 0, None, None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _flush_python_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # no stderr, or a closed one
        pass
