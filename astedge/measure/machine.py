"""What this machine is: CPU, GPUs (CUDA driver, nvidia-smi clocks), Jetson power mode, microphones, versions.

One home for every probe: ``astedge doctor`` reports them, ``astedge bench``/``astedge models`` and the
scripts in benchmarks/ record them in their headers, and the TensorRT backend asks which GPU it runs on.
Every probe is guarded: a missing tool or driver is reported as data, never raised. No torch here.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from astedge.timing import utc_now

#: Distributions whose versions reports list (PyPI names).
PACKAGES = ("numpy", "scipy", "soundfile", "soxr", "torch", "timm", "transformers", "onnx", "onnxruntime",
            "onnxruntime-gpu", "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "sounddevice", "kaldi-native-fbank")
#: Each probe command runs with this timeout; its failure is recorded, never raised.
PROBE_TIMEOUT_S = 10
NVIDIA_SMI_FIELDS = ("index", "name", "driver_version", "pstate", "clocks.sm", "clocks.mem", "clocks.max.sm",
                     "clocks.max.mem", "power.limit")


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """name -> installed version (None when absent)."""
    return {name: package_version(name) for name in packages}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_devices() -> dict:
    """GPUs seen by the CUDA driver API (libcuda), without PyTorch; {"error": ...} when there is no driver.

    Each device carries ``integrated`` (True on a Jetson: the GPU shares the module's memory).
    """
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
        major, minor, integrated = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        cuda.cuDeviceGetName(name, 256, index)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, index)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, index)  # ..._MINOR
        cuda.cuDeviceGetAttribute(ctypes.byref(integrated), 18, index)  # CU_DEVICE_ATTRIBUTE_INTEGRATED
        devices.append({"index": index, "name": name.value.decode(), "compute_capability": f"{major.value}.{minor.value}",
                        "integrated": bool(integrated.value)})
    driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    return {"driver": driver, "devices": devices, "error": None}


def _command(args: list[str]) -> tuple[int | None, str]:
    """(exit status, stdout+stderr stripped) of a probe command; (None, reason) when it cannot run."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"{type(err).__name__}: {err}"
    return done.returncode, (done.stdout + done.stderr).strip()


def nvidia_smi() -> dict | None:
    """GPU clocks and state from ``nvidia-smi --query-gpu`` (None when nvidia-smi is absent)."""
    if not shutil.which("nvidia-smi"):
        return None
    status, text = _command(["nvidia-smi", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader"])
    if status != 0:
        return {"error": text.splitlines()[0] if text else f"exit status {status}"}
    gpus = []
    for line in text.splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) == len(NVIDIA_SMI_FIELDS):
            gpus.append(dict(zip(NVIDIA_SMI_FIELDS, values, strict=True)))
    return {"gpus": gpus} if gpus else {"error": f"unexpected output: {text[:200]}"}


_JETSON_GPU_FREQ = re.compile(r"GPU MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)")


def jetson_info() -> dict | None:
    """L4T release, power mode (``nvpmodel -q``) and clock locking (``jetson_clocks --show``); None off Jetson."""
    release = Path("/etc/nv_tegra_release")
    has_tools = shutil.which("nvpmodel") or shutil.which("jetson_clocks")
    if not release.is_file() and not has_tools:
        return None
    info: dict = {"l4t": None, "power_mode": None, "nvpmodel": None, "clocks_locked": None, "jetson_clocks": None}
    with contextlib.suppress(OSError):
        info["l4t"] = release.read_text(errors="replace").splitlines()[0].strip()
    if shutil.which("nvpmodel"):
        status, text = _command(["nvpmodel", "-q"])
        info["nvpmodel"] = text
        match = re.search(r"NV Power Mode:\s*(\S+)", text)
        info["power_mode"] = match.group(1) if match else None
    if shutil.which("jetson_clocks"):
        status, text = _command(["jetson_clocks", "--show"])
        info["jetson_clocks"] = text
        match = _JETSON_GPU_FREQ.search(text)
        if match:  # jetson_clocks locks the GPU by raising its minimum frequency to the maximum
            low, high, now = (int(v) for v in match.groups())
            info["clocks_locked"] = low == high
            info["gpu_freq_hz"] = {"min": low, "max": high, "current": now}
        elif status != 0:
            info["clocks_locked_note"] = "jetson_clocks --show failed (it needs root: sudo jetson_clocks --show)"
    return info


def gpu_info() -> dict:
    """GPUs seen by the CUDA driver (name, compute capability, driver) plus nvidia-smi clocks where present."""
    found = cuda_devices()
    return {"devices": found["devices"], "driver": found["driver"], "error": found["error"], "nvidia_smi": nvidia_smi()}


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


def threads_info(threads: int | None) -> dict:
    """The thread counts the measured code ran with."""
    info: dict = {"requested": threads, "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count(), "numpy_fbank": "1 (single-threaded numpy/scipy)"}
    if "torch" in sys.modules:
        info["torch"] = sys.modules["torch"].get_num_threads()
    if "onnxruntime" in sys.modules:
        info["onnxruntime_intra_op"] = threads or "default (one per physical core)"
    info["env"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                   if k in os.environ}
    return info


def runtime_versions() -> dict:
    """Versions of the runtimes this process actually loaded (some, like JetPack's tensorrt, have no pip metadata)."""
    found = {}
    for module in ("tensorrt", "onnxruntime", "torch"):
        if module in sys.modules:
            found[module] = getattr(sys.modules[module], "__version__", "?")
    if "onnxruntime" in sys.modules:
        found["onnxruntime_providers"] = sys.modules["onnxruntime"].get_available_providers()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        found["torch_cuda"] = torch.version.cuda
        found["torch_cuda_available"] = bool(torch.cuda.is_available())
    return found


def machine_header(packages: tuple[str, ...] = PACKAGES) -> dict:
    """Date, CPU, cores, Python, thread settings and installed package versions: the head of every report."""
    return {
        "date": utc_now(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE") if k in os.environ},
        "packages": {name: v for name, v in package_versions(packages).items() if v},
    }
