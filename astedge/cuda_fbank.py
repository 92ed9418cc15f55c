"""Locating the CUDA fbank library (``libastedge_fbank``) built by the repository's CMakeLists.txt.

The binding itself lands with the kernel; the finder is here so that `astedge doctor` and the
runtime agree on where the library is looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

LIBRARY_NAME = "libastedge_fbank.so"
#: Set to the library's full path to override the search.
ENV_VAR = "ASTEDGE_FBANK_LIBRARY"


def library_candidates() -> list[Path]:
    """Where the library is looked for, in order: $ASTEDGE_FBANK_LIBRARY, the package, a CMake build tree."""
    here = Path(__file__).resolve().parent
    found = [Path(os.environ[ENV_VAR])] if os.environ.get(ENV_VAR) else []
    return found + [here / "lib" / LIBRARY_NAME, here.parent / "build" / LIBRARY_NAME]


def find_library() -> Path | None:
    """The first existing candidate, or None when the library has not been built."""
    return next((path for path in library_candidates() if path.is_file()), None)
