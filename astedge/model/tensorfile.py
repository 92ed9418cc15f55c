"""One home for safetensors files with JSON metadata: model checkpoints, CNN teachers, training state.

safetensors holds named tensors and a string -> string header, and never runs code when read, so a file
from anywhere is safe to open. Metadata values that are not strings are stored as JSON. Reading needs
numpy and safetensors only (torch is imported to write torch tensors or read with ``framework="pt"``), so
a Jetson runtime can read a checkpoint's header. A missing, pickled, truncated or foreign file is a
:class:`UserError` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from astedge.errors import UserError
from astedge.files import atomic_write


def write_tensors(path: str | Path, tensors: Mapping, metadata: Mapping[str, object]) -> Path:
    """Write `tensors` (all numpy arrays, or torch tensors) and `metadata` to `path` atomically (temp file +
    rename); a string value is stored as it is, any other as JSON. Returns the path."""
    header = {key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
              for key, value in metadata.items()}
    if all(isinstance(value, np.ndarray) for value in tensors.values()):
        from safetensors.numpy import save

        data = save({key: np.ascontiguousarray(value) for key, value in tensors.items()}, metadata=header)
    else:
        import torch
        from safetensors.torch import save

        data = save({key: _own_storage(torch.as_tensor(value)) for key, value in tensors.items()}, metadata=header)
    with atomic_write(path) as handle:
        handle.write(data)
    return Path(path)


def _own_storage(tensor):
    """A contiguous CPU tensor that owns its storage (safetensors refuses views that share one)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.untyped_storage().nbytes() != tensor.nbytes:
        tensor = tensor.clone()
    return tensor


def read_header(path: str | Path, hint: str = "") -> dict[str, str]:
    """`path`'s metadata, read from the header alone (no tensor data); `hint` ends the message of an unreadable file."""
    return _read(path, lambda handle: handle.metadata() or {}, "numpy", hint)


def read_tensors(path: str | Path, framework: str = "numpy", hint: str = "") -> tuple[dict, dict[str, str]]:
    """`path`'s tensors (numpy arrays, or torch tensors with ``framework="pt"``) and its metadata."""
    return _read(path, lambda handle: ({key: handle.get_tensor(key) for key in handle.keys()},
                                       handle.metadata() or {}), framework, hint)


def _read(path: str | Path, take, framework: str, hint: str):
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError("does not exist" if not path.exists() else "is not a file", path)
    try:
        with safe_open(str(path), framework=framework) as handle:
            return take(handle)
    except SafetensorError as err:
        raise UserError(f"is not a readable safetensors file ({err}){hint}", path) from None
    except OSError as err:
        raise UserError(f"cannot be read ({err.strerror or err})", path) from None
    except (TypeError, ValueError) as err:  # e.g. a dtype numpy cannot hold
        raise UserError(f"cannot read the weights ({err})", path) from None


def json_entry(metadata: Mapping[str, str], key: str, path: str | Path, what: str = "metadata"):
    """The JSON value stored under `key`; a UserError naming `path` when it is missing or not JSON."""
    try:
        return json.loads(metadata[key])
    except KeyError:
        raise UserError(f"{what} lacks {key!r}", path) from None
    except json.JSONDecodeError as err:
        raise UserError(f"{what} {key!r} is not valid JSON ({err})", path) from None
