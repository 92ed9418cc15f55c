"""Export artefact folders: the ``astedge.json`` that describes them, whole-folder atomic writes.

An artefact folder (written by ``astedge export``, extended by ``astedge build-engine``) holds

- ``model.onnx``: FP32, opset 18, input ``fbank [batch, frames, mel]`` float32, output ``logits
  [batch, classes]`` float32, dynamic batch, fixed frames;
- ``model.fp16.onnx``: the same network computing in FP16 with FP32 inputs/outputs and LayerNorm
  in FP32 (when exported with FP16);
- ``model.plan``: a TensorRT engine, only after it was built and verified on the GPU it runs on;
- ``verification.npz``: the verification inputs and the reference logits every backend is checked
  against (so a Jetson without torch or ONNX Runtime can verify its engine);
- ``labels.txt``: one label per line, in the head's order;
- ``astedge.json``: everything else (see :func:`new_metadata`).

Which files each precision writes and runs is :mod:`astedge.precision`'s table; the checks a file must pass
before it is kept are :mod:`astedge.verify`'s.

Only numpy and the standard library here: the Jetson side imports this without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np

from astedge import __version__
from astedge.errors import UserError
from astedge.files import atomic_write, current_umask
from astedge.timing import utc_now

METADATA_FILE = "astedge.json"
FORMAT_VERSION = "1"
INPUT_NAME = "fbank"
OUTPUT_NAME = "logits"
ONNX_FILE = "model.onnx"
ONNX_FP16_FILE = "model.fp16.onnx"
#: Explicit INT8 (Q/DQ) graphs: float parts in FP32, and in FP16 for strongly typed TensorRT builds.
ONNX_INT8_FILE = "model.int8.onnx"
ONNX_INT8_FP16_FILE = "model.int8.fp16.onnx"
ENGINE_FILE = "model.plan"
VERIFICATION_FILE = "verification.npz"
LABELS_FILE = "labels.txt"


def new_metadata(*, labels, task: str, model_config: dict, feature_config: dict, profile: dict, source: dict,
                 output_width: int | None = None, frames: dict | None = None, events: dict | None = None) -> dict:
    """The skeleton of ``astedge.json``; export fills ``files``, ``onnx``, ``precisions`` and ``verification``.

    The output holds `output_width` values a row (default: one logit per class): the clip logits, then with a
    frame head (`frames`: its layout, :class:`astedge.runtime.frames.FrameLayout`) each time column's logits.
    `events` are the decision layer's calibrated defaults (thresholds, median filter, minimum duration, the
    background class) that training recorded in the checkpoint."""
    frames_in, mel = model_config["target_length"], model_config["num_mel_bins"]
    width = output_width or model_config["num_classes"]
    return {
        "astedge_artefact": FORMAT_VERSION,
        "astedge": __version__,
        "created": utc_now(),
        "source": source,
        "task": task,
        "labels": list(labels),
        "model_config": model_config,
        "feature_config": feature_config,
        "profile": profile,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", frames_in, mel],
                  "layout": "[batch, frames, mel]: normalized log-mel, time-major"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", width],
                   "activation": "sigmoid" if task == "multilabel" else "softmax",
                   **({"layout": "[batch, classes + columns x classes]: the clip logits, then each frame column's "
                                 f"logits ({frames['activation']})"} if frames else {})},
        "frames": frames,
        "events": events or {},
        "files": {},
        "precisions": {},
        "onnx": {},
        "engine": None,
        "verification": {},
    }


def artefact_dir(path: str | Path) -> Path:
    """The artefact folder of `path`: the folder itself, or the folder holding a file of it (``model.onnx``)."""
    path = Path(path)
    if not path.exists():
        raise UserError("does not exist", path)
    folder = path if path.is_dir() else path.parent
    if not (folder / METADATA_FILE).is_file():
        raise UserError(f"no {METADATA_FILE} in {folder}: not an astedge export folder (make one with "
                        "`astedge export -m MODEL -o DIR`)", path)
    return folder


def read_metadata(folder: str | Path) -> dict:
    """``astedge.json`` of an artefact folder, checked for the fields every consumer relies on."""
    path = Path(folder) / METADATA_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("does not exist: not an astedge export folder", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"is not valid JSON ({err})", path) from None
    if not isinstance(meta, dict) or meta.get("astedge_artefact") != FORMAT_VERSION:
        raise UserError(f"is not an astedge artefact description of format {FORMAT_VERSION!r}", path)
    missing = [k for k in ("labels", "task", "model_config", "feature_config", "input", "output", "files")
               if k not in meta]
    if missing:
        raise UserError(f"lacks {', '.join(missing)}", path)
    return meta


def write_metadata(folder: str | Path, meta: dict) -> Path:
    path = Path(folder) / METADATA_FILE
    with atomic_write(path) as handle:
        handle.write((json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def check_destination(dest: str | Path, force: bool) -> Path:
    """Fail early (before any work) when `dest` cannot receive a new folder."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        raise UserError("output directory's parent does not exist", dest.parent)
    if dest.exists() and not dest.is_dir():
        raise UserError("exists and is not a directory", dest)
    if dest.exists() and not force:
        raise UserError("already exists; pass --force to replace it", dest)
    return dest


@contextlib.contextmanager
def staged_folder(dest: str | Path, force: bool = False):
    """Yield an empty temp folder beside `dest`; if the block succeeds it becomes `dest`, else it vanishes.

    An existing `dest` needs ``force=True``; it is swapped out by renames and deleted only after the
    new folder is in place, so readers see the old folder or the new one, never a mix.
    """
    dest = check_destination(dest, force)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        check_destination(dest, force)
        if dest.exists():
            old = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.old"
            os.rename(dest, old)
            try:
                os.rename(tmp, dest)
            except BaseException:
                os.rename(old, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_arrays(path: str | Path, **arrays: np.ndarray) -> Path:
    """An uncompressed ``.npz``, written atomically."""
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)
    return Path(path)


def load_verification(folder: str | Path) -> dict[str, np.ndarray]:
    path = Path(folder) / VERIFICATION_FILE
    if not path.is_file():
        raise UserError("missing: the export's verification inputs are needed to check an engine", path)
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
