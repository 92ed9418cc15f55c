"""The install also builds the fbank libraries (CMakeLists.txt) into astedge/lib/ when it can.

With cmake and a C++ compiler: libastedge_fbank_host; with nvcc too (on PATH or /usr/local/cuda/bin, as
JetPack installs it): libastedge_fbank, the CUDA kernel. Without them, or if the build fails, the install
goes on without the libraries and astedge computes features with numpy (`astedge doctor` says why).
ASTEDGE_BUILD_FBANK=0 skips the build; CUDAARCHS (e.g. 87 for a Jetson Orin) picks the GPU architectures;
CMAKE_ARGS adds CMake options (e.g. -DASTEDGE_FBANK_CUDA=OFF).
Everything else about the package is in pyproject.toml.
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def build_fbank_libraries(destination: Path) -> None:
    def say(message: str) -> None:
        print(f"astedge: {message}", file=sys.stderr)

    for stale in destination.glob("libastedge_fbank*.so"):  # what is installed reflects this build
        stale.unlink()
    if os.environ.get("ASTEDGE_BUILD_FBANK", "1") == "0":
        return say("ASTEDGE_BUILD_FBANK=0: fbank libraries not built")
    if shutil.which("cmake") is None or not (ROOT / "CMakeLists.txt").is_file():
        return say("cmake not found: fbank libraries not built (features will use numpy)")
    with tempfile.TemporaryDirectory(prefix="astedge-fbank-") as build:
        steps = [["cmake", "-S", str(ROOT), "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                  *shlex.split(os.environ.get("CMAKE_ARGS", ""))],
                 ["cmake", "--build", build, "-j", str(min(os.cpu_count() or 1, 8))]]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode != 0:
                tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
                return say("fbank library build failed, installing without it:\n  " + "\n  ".join(tail))
        destination.mkdir(parents=True, exist_ok=True)
        for library in sorted(Path(build).glob("libastedge_fbank*.so")):
            shutil.copy2(library, destination / library.name)
            say(f"built {destination / library.name}")


class BuildPyWithFbank(build_py):
    """build_py, then the CMake libraries into the package (the source tree for editable installs)."""

    def run(self) -> None:
        super().run()
        package = ROOT / "astedge" if getattr(self, "editable_mode", False) else Path(self.build_lib) / "astedge"
        build_fbank_libraries(package / "lib")


class PlatformDistribution(Distribution):
    """The wheel may carry native libraries: tag it for this platform, not py3-none-any."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildPyWithFbank}, distclass=PlatformDistribution)
