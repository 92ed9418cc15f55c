"""What makes a measured number reproducible: the machine, the libraries, the threads.

Shared by `astedge bench`, `astedge models` and the scripts in benchmarks/.
"""

from __future__ import annotations

import datetime
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("numpy", "scipy", "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "transformers",
            "kaldi-native-fbank")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_header(packages: tuple[str, ...] = PACKAGES) -> dict:
    """Date, CPU, cores, Python, thread settings and package versions (GPU details come from astedge.doctor)."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE") if k in os.environ},
        "packages": {name: v for name in packages if (v := _version(name))},
    }
