"""``astedge doctor``: what this machine can run — versions, GPUs, the fbank library, microphones, backends.

It only reports: the probes live in :mod:`astedge.measure.machine` (and :mod:`astedge.features.cuda_fbank` for the library).
Every probe is guarded: a missing or broken piece is reported, never raised.
"""

from __future__ import annotations

import importlib
import platform
import sys

from astedge import __version__
from astedge.features import cuda_fbank
from astedge.measure import machine


def _try_import(module: str) -> tuple[bool, str]:
    try:
        importlib.import_module(module)
        return True, ""
    except Exception as err:  # noqa: BLE001 - any failure means "not usable", with its reason
        return False, f"{type(err).__name__}: {err}".splitlines()[0]


def backends(gpus: list) -> dict:
    """Which inference backends import here (TensorRT also needs a GPU)."""
    report = {}
    ok, why = _try_import("tensorrt")
    if ok and not gpus:
        ok, why = False, "tensorrt imports but no CUDA GPU is visible"
    report["tensorrt"] = {"usable": ok, "detail": why}
    ok, why = _try_import("onnxruntime")
    if ok:
        import onnxruntime

        why = "providers: " + ", ".join(onnxruntime.get_available_providers())
    report["onnxruntime"] = {"usable": ok, "detail": why}
    ok, why = _try_import("torch")
    if ok:
        import torch

        why = f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
    report["torch"] = {"usable": ok, "detail": why}
    return report


def fbank_library() -> dict:
    """Where the CUDA fbank library is, and whether it runs here (else why the numpy reference is used)."""
    library = cuda_fbank.find_library()
    status = {"path": str(library) if library else None,
              "searched": [str(p) for p in cuda_fbank.library_candidates()], "usable": False, "reason": None}
    try:
        cuda_fbank.CudaFbank()
        status["usable"] = True
    except cuda_fbank.CudaFbankUnavailable as err:
        status["reason"] = str(err)
    except Exception as err:  # noqa: BLE001 - a broken library is reported, not raised
        status["reason"] = f"{type(err).__name__}: {err}"
    return status


def report() -> dict:
    """The whole machine report, as plain data (the CLI prints it as a table or JSON)."""
    gpus = machine.cuda_devices()
    return {
        "astedge": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": machine.package_versions(),
        "cuda": gpus,
        "fbank_library": fbank_library(),
        "audio_inputs": machine.audio_inputs(),
        "backends": backends(gpus["devices"]),
    }
