"""What this machine can run: versions, GPUs, the fbank library, microphones and usable backends.

Every probe is guarded: a missing or broken piece is reported, never raised.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import platform
import sys

from astedge import __version__, cuda_fbank

#: Distributions whose versions the report lists (PyPI names).
PACKAGES = ("numpy", "scipy", "soundfile", "soxr", "torch", "timm", "onnx", "onnxruntime", "onnxruntime-gpu",
            "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "sounddevice")


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cuda_devices() -> dict:
    """GPUs seen by the CUDA driver API (libcuda), without PyTorch; {"error": ...} when there is no driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return {"driver": None, "devices": [], "error": "no CUDA driver (libcuda.so.1 not found)"}
    if cuda.cuInit(0) != 0:
        return {"driver": None, "devices": [], "error": "cuInit failed (no usable GPU)"}
    version, count = ctypes.c_int(), ctypes.c_int()
    cuda.cuDriverGetVersion(ctypes.byref(version))
    cuda.cuDeviceGetCount(ctypes.byref(count))
    devices = []
    for index in range(count.value):
        name = ctypes.create_string_buffer(256)
        major, minor = ctypes.c_int(), ctypes.c_int()
        cuda.cuDeviceGetName(name, 256, index)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, index)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, index)  # ..._MINOR
        devices.append({"index": index, "name": name.value.decode(), "compute_capability": f"{major.value}.{minor.value}"})
    driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    return {"driver": driver, "devices": devices, "error": None}


def audio_inputs() -> dict:
    """Capture devices through sounddevice/PortAudio."""
    try:
        import sounddevice
    except ImportError:
        return {"devices": [], "error": "sounddevice not installed (pip install 'astedge[mic]')"}
    except OSError as err:  # the PortAudio shared library is missing
        return {"devices": [], "error": f"PortAudio not available ({err})"}
    try:
        devices = sounddevice.query_devices()
    except Exception as err:  # noqa: BLE001 - PortAudio reports host-API failures many ways
        return {"devices": [], "error": str(err)}
    inputs = [{"index": d["index"], "name": d["name"], "channels": d["max_input_channels"],
               "default_rate": d["default_samplerate"]} for d in devices if d["max_input_channels"] > 0]
    return {"devices": inputs, "error": None if inputs else "no input devices found"}


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
    gpus = cuda_devices()
    return {
        "astedge": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "cuda": gpus,
        "fbank_library": fbank_library(),
        "audio_inputs": audio_inputs(),
        "backends": backends(gpus["devices"]),
    }
