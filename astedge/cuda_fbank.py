"""The CUDA fbank kernel (``libastedge_fbank``, built by the repository's CMakeLists.txt) through ctypes.

No PyTorch: the binding takes numpy arrays (:class:`CudaFbank` copies them to the GPU and back) or raw
device pointers (:meth:`CudaFbank.run_device`, e.g. ``tensor.data_ptr()`` of a torch or cupy array, on a
caller-given stream, capturable in a CUDA graph). :func:`load_fbank` returns the CUDA extractor when the
library and a GPU are there, and otherwise the numpy reference, with a one-time warning saying why.

The window and mel weights are passed to the library from :mod:`astedge.features`, so the feature
constants have one home. :class:`HostFbank` runs the kernel's own per-frame source compiled for the CPU
(``libastedge_fbank_host``); the tests use it to check the kernel arithmetic without a GPU.

Where the libraries are looked for, in order: ``$ASTEDGE_FBANK_LIBRARY`` (resp.
``$ASTEDGE_FBANK_HOST_LIBRARY``), the installed package (``astedge/lib/``), a CMake build tree
(``./build`` next to the package, i.e. the repository root in a checkout).
"""

from __future__ import annotations

import ctypes
import os
import threading
import warnings
import weakref
from pathlib import Path

import numpy as np
import scipy.sparse

from astedge import features
from astedge.errors import UserError
from astedge.features import DEFAULT, FbankConfig

LIBRARY_NAME = "libastedge_fbank.so"
HOST_LIBRARY_NAME = "libastedge_fbank_host.so"
#: Set to the library's full path to override the search.
ENV_VAR = "ASTEDGE_FBANK_LIBRARY"
HOST_ENV_VAR = "ASTEDGE_FBANK_HOST_LIBRARY"
#: Must equal ASTEDGE_FBANK_ABI_VERSION in csrc/astedge_fbank.h (the layout of _Config below).
ABI_VERSION = 1

_ENV_VARS = {LIBRARY_NAME: ENV_VAR, HOST_LIBRARY_NAME: HOST_ENV_VAR}
_STATUS_INVALID_ARGUMENT = 1


def library_candidates(name: str = LIBRARY_NAME) -> list[Path]:
    """Where a library is looked for, in order: its environment variable, the package, a CMake build tree."""
    here = Path(__file__).resolve().parent
    env = os.environ.get(_ENV_VARS.get(name, ""))
    return ([Path(env)] if env else []) + [here / "lib" / name, here.parent / "build" / name]


def find_library(name: str = LIBRARY_NAME) -> Path | None:
    """The first existing candidate, or None when the library has not been built."""
    return next((path for path in library_candidates(name) if path.is_file()), None)


class FbankLibraryError(RuntimeError):
    """A call into libastedge_fbank failed; `status` is the C status code."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


class CudaFbankUnavailable(RuntimeError):
    """The CUDA extractor cannot run here (no library, no GPU, no code for this GPU); the message says why."""


class _Config(ctypes.Structure):
    """astedge_fbank_config (csrc/astedge_fbank.h)."""

    _fields_ = [
        ("sample_rate", ctypes.c_int32),
        ("window_size", ctypes.c_int32),
        ("window_shift", ctypes.c_int32),
        ("n_fft", ctypes.c_int32),
        ("num_mel_bins", ctypes.c_int32),
        ("target_length", ctypes.c_int32),
        ("normalize", ctypes.c_int32),
        ("preemphasis", ctypes.c_float),
        ("mean", ctypes.c_double),
        ("std", ctypes.c_double),
        ("window", ctypes.c_void_p),
        ("mel_indptr", ctypes.c_void_p),
        ("mel_indices", ctypes.c_void_p),
        ("mel_weights", ctypes.c_void_p),
    ]


class _NativeConfig:
    """The C config for a FbankConfig, with the numpy tables it points into kept alive."""

    def __init__(self, config: FbankConfig, model_input: bool):
        mel = scipy.sparse.csr_matrix(features.mel_filterbank(config))  # as features._mel_sparse: same order
        mel.sort_indices()
        self.tables = (
            np.ascontiguousarray(features.window(config), np.float32),
            np.ascontiguousarray(mel.indptr, np.int32),
            np.ascontiguousarray(mel.indices, np.int32),
            np.ascontiguousarray(mel.data, np.float32),
        )
        window, indptr, indices, weights = self.tables
        self.struct = _Config(
            sample_rate=config.sample_rate, window_size=config.window_size, window_shift=config.window_shift,
            n_fft=config.n_fft, num_mel_bins=config.num_mel_bins,
            target_length=config.target_length if model_input else 0, normalize=int(model_input),
            preemphasis=config.preemphasis, mean=config.mean, std=config.std,
            window=window.ctypes.data, mel_indptr=indptr.ctypes.data,
            mel_indices=indices.ctypes.data, mel_weights=weights.ctypes.data,
        )


def _open(path: Path, host: bool) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.astedge_fbank_abi_version.restype = ctypes.c_int
    lib.astedge_fbank_error_string.restype = ctypes.c_char_p
    lib.astedge_fbank_error_string.argtypes = [ctypes.c_int]
    lib.astedge_fbank_last_error.restype = ctypes.c_char_p
    lib.astedge_fbank_last_error.argtypes = []
    if lib.astedge_fbank_abi_version() != ABI_VERSION:
        raise OSError(f"{path}: ABI version {lib.astedge_fbank_abi_version()}, this astedge needs {ABI_VERSION} "
                      "(rebuild the library)")
    ptr, i32, i64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
    if host:
        lib.astedge_fbank_host_run.argtypes = [ctypes.POINTER(_Config), ptr, ptr, i32, i64]
        lib.astedge_fbank_emulate_run.argtypes = [ctypes.POINTER(_Config), ptr, ptr, i32, i64, i32]
    else:
        lib.astedge_fbank_create.argtypes = [ctypes.POINTER(_Config), ctypes.POINTER(ptr)]
        lib.astedge_fbank_destroy.argtypes = [ptr]
        lib.astedge_fbank_output_rows.argtypes = [ptr, i64, ctypes.POINTER(i32)]
        lib.astedge_fbank_run_device.argtypes = [ptr, ptr, ptr, i32, i64, ptr]
        lib.astedge_fbank_run_host.argtypes = [ptr, ptr, ptr, i32, i64, ptr]
    return lib


def _check(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        detail = lib.astedge_fbank_last_error().decode(errors="replace")
        summary = lib.astedge_fbank_error_string(status).decode()
        raise FbankLibraryError(status, f"{what}: {summary}" + (f" ({detail})" if detail else ""))


class _Extractor:
    """What every extractor offers: `__call__(wave [..., samples]) -> [..., rows, num_mel_bins]` float32."""

    #: "cuda", "cpu-native" or "numpy".
    device = ""

    def __init__(self, config: FbankConfig, model_input: bool):
        self.config = config
        self.model_input = model_input

    def output_shape(self, samples: int) -> tuple[int, int]:
        """(rows, num_mel_bins) of one clip of `samples` samples."""
        frames = self._frames(samples)
        return (self.config.target_length if self.model_input else frames), self.config.num_mel_bins

    def _frames(self, samples: int) -> int:
        return features.frames_or_error(samples, self.config)

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        wave = np.ascontiguousarray(waveform, dtype=np.float32)
        if wave.ndim == 0:
            raise UserError("expected a waveform array, got a scalar")
        rows, bins = self.output_shape(wave.shape[-1])
        flat = wave.reshape(-1, wave.shape[-1])
        out = np.empty((flat.shape[0], rows, bins), np.float32)
        if flat.shape[0]:
            self._run(flat, out)
        return out.reshape(*wave.shape[:-1], rows, bins)

    def _run(self, flat: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError

    @property
    def detail(self) -> str:
        """Which implementation runs, in words (for reports)."""
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, model_input={self.model_input})"


class NumpyFbank(_Extractor):
    """The numpy reference (astedge.features) behind the same interface; `reason` says why it was chosen."""

    device = "numpy"

    def __init__(self, config: FbankConfig = DEFAULT, *, model_input: bool = True, reason: str | None = None):
        super().__init__(config, model_input)
        self.reason = reason

    @property
    def detail(self) -> str:
        return f"numpy reference ({self.reason})" if self.reason else "numpy reference"

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        fn = features.model_input if self.model_input else features.fbank
        return fn(waveform, self.config)


class HostFbank(_Extractor):
    """The CUDA kernel's source compiled for the CPU (libastedge_fbank_host): for tests.

    By default each frame is one thread's work (the per-frame arithmetic). ``emulate_blocks=True`` runs
    the kernel's thread blocks instead: its CTA body and launch geometry, one CPU thread per CUDA thread,
    a barrier for ``__syncthreads`` (slow: about a second per 10 s clip), with gridDim.y capped at
    `max_grid_y` to exercise the grid-stride loop over clips.
    """

    device = "cpu-native"

    def __init__(self, config: FbankConfig = DEFAULT, *, model_input: bool = True, library: str | Path | None = None,
                 emulate_blocks: bool = False, max_grid_y: int = 65535):
        super().__init__(config, model_input)
        path = Path(library) if library else find_library(HOST_LIBRARY_NAME)
        if path is None:
            raise FileNotFoundError(f"{HOST_LIBRARY_NAME} not found in {[str(p) for p in library_candidates(HOST_LIBRARY_NAME)]}")
        self._lib = _open(path, host=True)
        self._native = _NativeConfig(config, model_input)
        self.emulate_blocks = emulate_blocks
        self.max_grid_y = max_grid_y

    def _run(self, flat: np.ndarray, out: np.ndarray) -> None:
        args = (ctypes.byref(self._native.struct), flat.ctypes.data, out.ctypes.data, flat.shape[0], flat.shape[1])
        if self.emulate_blocks:
            _check(self._lib, self._lib.astedge_fbank_emulate_run(*args, self.max_grid_y), "astedge_fbank_emulate_run")
        else:
            _check(self._lib, self._lib.astedge_fbank_host_run(*args), "astedge_fbank_host_run")


class CudaFbank(_Extractor):
    """Log-mel features on the GPU: numpy in and out (`__call__`) or device pointers (`run_device`).

    `model_input=True` gives ``features.model_input`` (padded/cropped to target_length, normalized);
    False gives ``features.fbank`` (raw log-mel, every frame). Raises CudaFbankUnavailable when the
    library is missing or no GPU can run it.
    """

    device = "cuda"

    def __init__(self, config: FbankConfig = DEFAULT, *, model_input: bool = True, library: str | Path | None = None):
        super().__init__(config, model_input)
        path = Path(library) if library else find_library()
        if path is None or not path.is_file():
            searched = [str(library)] if library else [str(p) for p in library_candidates()]
            raise CudaFbankUnavailable(f"{LIBRARY_NAME} not found (searched {', '.join(searched)}; build it with "
                                       "`cmake -S . -B build && cmake --build build`)")
        try:
            self._lib = _open(path, host=False)
        except (OSError, AttributeError) as err:
            raise CudaFbankUnavailable(f"cannot load {path}: {err}") from None
        native = _NativeConfig(config, model_input)
        plan = ctypes.c_void_p()
        status = self._lib.astedge_fbank_create(ctypes.byref(native.struct), ctypes.byref(plan))
        if status != 0:
            detail = self._lib.astedge_fbank_last_error().decode(errors="replace")
            summary = self._lib.astedge_fbank_error_string(status).decode()
            if status == _STATUS_INVALID_ARGUMENT:  # a bug in this binding or the config, not the machine
                raise FbankLibraryError(status, f"astedge_fbank_create: {summary} ({detail})")
            raise CudaFbankUnavailable(f"{summary} ({detail})")
        self.library = path
        self._plan = plan.value
        self._lock = threading.Lock()  # run_host reuses the plan's staging buffers
        self._finalizer = weakref.finalize(self, self._lib.astedge_fbank_destroy, self._plan)

    @property
    def detail(self) -> str:
        return f"CUDA fbank library {self.library}"

    def close(self) -> None:
        """Free the plan's device memory now (otherwise when the object is collected)."""
        self._finalizer()

    def __enter__(self) -> "CudaFbank":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _live_plan(self) -> int:
        if not self._finalizer.alive:
            raise RuntimeError("CudaFbank used after close()")
        return self._plan

    def _run(self, flat: np.ndarray, out: np.ndarray) -> None:
        with self._lock:
            status = self._lib.astedge_fbank_run_host(self._live_plan(), flat.ctypes.data, out.ctypes.data,
                                                      flat.shape[0], flat.shape[1], None)
        _check(self._lib, status, "astedge_fbank_run_host")

    def run_device(self, in_ptr: int, out_ptr: int, batch: int, samples: int, stream=0) -> None:
        """One kernel launch on `stream` from device memory to device memory, without synchronizing.

        `in_ptr`: float32 [batch, samples]; `out_ptr`: float32 [batch, *output_shape(samples)].
        Pointers are ints (``tensor.data_ptr()``); `stream` is a cudaStream_t as an int, or an object
        with ``cuda_stream`` (torch) or ``ptr`` (cupy); 0 is the legacy default stream.
        """
        self._frames(samples)
        handle = getattr(stream, "cuda_stream", getattr(stream, "ptr", stream))
        status = self._lib.astedge_fbank_run_device(self._live_plan(), int(in_ptr), int(out_ptr), int(batch),
                                                    int(samples), int(handle) or None)
        _check(self._lib, status, "astedge_fbank_run_device")


_NOTIFIED: set[str] = set()


def load_fbank(config: FbankConfig = DEFAULT, *, model_input: bool = True, library: str | Path | None = None,
               warn: bool = True) -> CudaFbank | NumpyFbank:
    """The CUDA extractor when the library and a GPU are present, else the numpy reference.

    The fallback is announced once per process and reason (a RuntimeWarning, unless `warn` is False);
    the returned NumpyFbank keeps the reason in `.reason`.
    """
    try:
        return CudaFbank(config, model_input=model_input, library=library)
    except CudaFbankUnavailable as err:
        reason = str(err)
    if warn and reason not in _NOTIFIED:
        _NOTIFIED.add(reason)
        warnings.warn(f"astedge: CUDA fbank unavailable, using the numpy reference: {reason}", RuntimeWarning,
                      stacklevel=2)
    return NumpyFbank(config, model_input=model_input, reason=reason)


def extractor_for(device: str, config: FbankConfig = DEFAULT, *, model_input: bool = True,
                  warn: bool = True) -> CudaFbank | NumpyFbank:
    """The runtime's one choice of feature extractor for a backend computing on `device` ("cuda" or "cpu"):
    the CUDA fbank library beside a GPU backend when it loads, else the numpy reference."""
    if device == "cuda":
        return load_fbank(config, model_input=model_input, warn=warn)
    return NumpyFbank(config, model_input=model_input, reason="CPU backend: the runtime uses the numpy reference")
