"""The CUDA fbank kernel (``libastedge_fbank``, built by the repository's CMakeLists.txt) through ctypes.

No PyTorch: the binding takes numpy arrays (:class:`CudaFbank` copies them to the GPU and back on the
plan's own non-blocking stream, in chunks whose device staging stays under a limit) or raw device pointers
(:meth:`CudaFbank.run_device`, e.g. ``tensor.data_ptr()`` of a torch or cupy array, or the buffers of
:mod:`astedge.features.device_pipeline`, on the caller's stream, capturable in a CUDA graph). :func:`load_fbank`
returns the CUDA extractor when the library and a GPU are there, and otherwise the numpy reference, with a
one-time warning saying why.

Three outputs (`model_input`, `normalize`): the model input (normalized, padded/cropped to
``target_length``), raw log-mel frames, or normalized frames without padding (what the device stream ring
of :mod:`astedge.features.device_pipeline` holds: each hop's new frames, already as the model sees them).

The window and mel weights are passed to the library from :mod:`astedge.features.fbank`, so the feature
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

from astedge.features import fbank as features
from astedge.errors import UserError
from astedge.features.fbank import DEFAULT, FbankConfig

LIBRARY_NAME = "libastedge_fbank.so"
HOST_LIBRARY_NAME = "libastedge_fbank_host.so"
#: Set to the library's full path to override the search.
ENV_VAR = "ASTEDGE_FBANK_LIBRARY"
HOST_ENV_VAR = "ASTEDGE_FBANK_HOST_LIBRARY"
#: Must equal ASTEDGE_FBANK_ABI_VERSION in csrc/astedge_fbank.h (the layout of _Config below).
ABI_VERSION = 2

_ENV_VARS = {LIBRARY_NAME: ENV_VAR, HOST_LIBRARY_NAME: HOST_ENV_VAR}
_STATUS_INVALID_ARGUMENT = 1


def library_candidates(name: str = LIBRARY_NAME) -> list[Path]:
    """Where a library is looked for, in order: its environment variable, the package, a CMake build tree."""
    here = Path(__file__).resolve().parents[1]  # the package: astedge/lib, then the repository's build/
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

    def __init__(self, config: FbankConfig, model_input: bool, normalize: bool | None = None):
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
            target_length=config.target_length if model_input else 0,
            normalize=int(model_input if normalize is None else normalize),
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
        lib.astedge_fbank_host_run_staged.argtypes = [ctypes.POINTER(_Config), ptr, ptr, i32, i64, i64,
                                                      ctypes.POINTER(i64), ctypes.POINTER(i32)]
    else:
        lib.astedge_fbank_create.argtypes = [ctypes.POINTER(_Config), ctypes.POINTER(ptr)]
        lib.astedge_fbank_destroy.argtypes = [ptr]
        lib.astedge_fbank_output_rows.argtypes = [ptr, i64, ctypes.POINTER(i32)]
        lib.astedge_fbank_run_device.argtypes = [ptr, ptr, ptr, i32, i64, ptr]
        lib.astedge_fbank_run_host.argtypes = [ptr, ptr, ptr, i32, i64, ptr]
        lib.astedge_fbank_set_staging_limit.argtypes = [ptr, i64]
        lib.astedge_fbank_staging_bytes.argtypes = [ptr, ctypes.POINTER(i64)]
    return lib


def _check(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        detail = lib.astedge_fbank_last_error().decode(errors="replace")
        summary = lib.astedge_fbank_error_string(status).decode()
        raise FbankLibraryError(status, f"{what}: {summary}" + (f" ({detail})" if detail else ""))


class _Extractor:
    """What every extractor offers: `__call__(wave [..., samples]) -> [..., rows, num_mel_bins]` float32.

    `model_input`: padded/cropped to target_length and normalized; else every frame, normalized when
    `normalize` is True (default: as `model_input`).
    """

    #: "cuda", "cpu-native" or "numpy".
    device = ""

    def __init__(self, config: FbankConfig, model_input: bool, normalize: bool | None = None):
        self.config = config
        self.model_input = model_input
        self.normalize = model_input if normalize is None else bool(normalize)
        if model_input and not self.normalize:
            raise ValueError("a model input is always normalized")

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

    def close(self) -> None:
        """Release what the extractor holds on a device (nothing here)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, model_input={self.model_input})"


class NumpyFbank(_Extractor):
    """The numpy reference (astedge.features.fbank) behind the same interface; `reason` says why it was chosen."""

    device = "numpy"

    def __init__(self, config: FbankConfig = DEFAULT, *, model_input: bool = True, normalize: bool | None = None,
                 reason: str | None = None):
        super().__init__(config, model_input, normalize)
        self.reason = reason

    @property
    def detail(self) -> str:
        return f"numpy reference ({self.reason})" if self.reason else "numpy reference"

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        if self.model_input:
            return features.model_input(waveform, self.config)
        raw = features.fbank(waveform, self.config)
        return features.normalize(raw, self.config) if self.normalize else raw


class HostFbank(_Extractor):
    """The CUDA kernel's source compiled for the CPU (libastedge_fbank_host): for tests.

    By default each frame is one thread's work (the per-frame arithmetic). ``emulate_blocks=True`` runs
    the kernel's thread blocks instead: its CTA body and launch geometry, one CPU thread per CUDA thread,
    a barrier for ``__syncthreads`` (slow: about a second per 10 s clip), with gridDim.y capped at
    `max_grid_y` to exercise the grid-stride loop over clips.
    """

    device = "cpu-native"

    def __init__(self, config: FbankConfig = DEFAULT, *, model_input: bool = True, normalize: bool | None = None,
                 library: str | Path | None = None, emulate_blocks: bool = False, max_grid_y: int = 65535):
        super().__init__(config, model_input, normalize)
        path = Path(library) if library else find_library(HOST_LIBRARY_NAME)
        if path is None:
            raise FileNotFoundError(f"{HOST_LIBRARY_NAME} not found in {[str(p) for p in library_candidates(HOST_LIBRARY_NAME)]}")
        self._lib = _open(path, host=True)
        self._native = _NativeConfig(config, model_input, normalize)
        self.emulate_blocks = emulate_blocks
        self.max_grid_y = max_grid_y

    def _run(self, flat: np.ndarray, out: np.ndarray) -> None:
        args = (ctypes.byref(self._native.struct), flat.ctypes.data, out.ctypes.data, flat.shape[0], flat.shape[1])
        if self.emulate_blocks:
            _check(self._lib, self._lib.astedge_fbank_emulate_run(*args, self.max_grid_y), "astedge_fbank_emulate_run")
        else:
            _check(self._lib, self._lib.astedge_fbank_host_run(*args), "astedge_fbank_host_run")

    def run_pointers(self, in_ptr: int, out_ptr: int, batch: int, samples: int) -> None:
        """The per-frame math on raw host pointers (the shapes of :meth:`CudaFbank.run_device`): what the
        CPU doubles of the device path (tests) run in place of the kernel."""
        _check(self._lib, self._lib.astedge_fbank_host_run(ctypes.byref(self._native.struct), int(in_ptr), int(out_ptr),
                                                           int(batch), int(samples)), "astedge_fbank_host_run")

    def run_staged(self, waveform: np.ndarray, limit_bytes: int) -> tuple[np.ndarray, int, int]:
        """`__call__` through the CUDA library's run_host chunk plan (memcpy for its copies): (output, largest
        staging in bytes, number of chunks)."""
        wave = np.ascontiguousarray(waveform, dtype=np.float32)
        flat = wave.reshape(-1, wave.shape[-1])
        rows, bins = self.output_shape(wave.shape[-1])
        out = np.empty((flat.shape[0], rows, bins), np.float32)
        peak, chunks = ctypes.c_int64(), ctypes.c_int32()
        _check(self._lib, self._lib.astedge_fbank_host_run_staged(
            ctypes.byref(self._native.struct), flat.ctypes.data, out.ctypes.data, flat.shape[0], flat.shape[1],
            int(limit_bytes), ctypes.byref(peak), ctypes.byref(chunks)), "astedge_fbank_host_run_staged")
        return out.reshape(*wave.shape[:-1], rows, bins), peak.value, chunks.value


class CudaFbank(_Extractor):
    """Log-mel features on the GPU: numpy in and out (`__call__`) or device pointers (`run_device`).

    `model_input=True` gives ``features.model_input`` (padded/cropped to target_length, normalized);
    False gives ``features.fbank`` (raw log-mel, every frame), normalized with `normalize=True`. Raises
    CudaFbankUnavailable when the library is missing or no GPU can run it.

    `__call__` runs on the plan's own non-blocking stream (never the legacy default stream, which would
    serialize with every other stream and cannot be captured), in chunks whose device staging stays under
    `staging_limit` bytes (default 32 MiB: a 1 h file does not keep ~400 MB on an 8 GB Orin Nano).
    """

    device = "cuda"

    def __init__(self, config: FbankConfig = DEFAULT, *, model_input: bool = True, normalize: bool | None = None,
                 library: str | Path | None = None, staging_limit: int | None = None):
        super().__init__(config, model_input, normalize)
        path = Path(library) if library else find_library()
        if path is None or not path.is_file():
            searched = [str(library)] if library else [str(p) for p in library_candidates()]
            raise CudaFbankUnavailable(f"{LIBRARY_NAME} not found (searched {', '.join(searched)}; build it with "
                                       "`cmake -S . -B build && cmake --build build`)")
        try:
            self._lib = _open(path, host=False)
        except (OSError, AttributeError) as err:
            raise CudaFbankUnavailable(f"cannot load {path}: {err}") from None
        native = _NativeConfig(config, model_input, normalize)
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
        if staging_limit is not None:
            self.set_staging_limit(staging_limit)

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
        with self._lock:  # None: the plan's own non-blocking stream
            status = self._lib.astedge_fbank_run_host(self._live_plan(), flat.ctypes.data, out.ctypes.data,
                                                      flat.shape[0], flat.shape[1], None)
        _check(self._lib, status, "astedge_fbank_run_host")

    def set_staging_limit(self, nbytes: int) -> None:
        """Cap the device staging of `__call__` at `nbytes` (<= 0: the library's default, 32 MiB)."""
        with self._lock:
            _check(self._lib, self._lib.astedge_fbank_set_staging_limit(self._live_plan(), int(nbytes)),
                   "astedge_fbank_set_staging_limit")

    def staging_bytes(self) -> int:
        """Device bytes `__call__`'s staging buffers hold now."""
        held = ctypes.c_int64()
        with self._lock:
            _check(self._lib, self._lib.astedge_fbank_staging_bytes(self._live_plan(), ctypes.byref(held)),
                   "astedge_fbank_staging_bytes")
        return held.value

    def run_device(self, in_ptr: int, out_ptr: int, batch: int, samples: int, stream) -> None:
        """One kernel launch on `stream` from device memory to device memory, without synchronizing.

        `in_ptr`: float32 [batch, samples]; `out_ptr`: float32 [batch, *output_shape(samples)].
        Pointers are ints (``tensor.data_ptr()``); `stream` is the caller's: a cudaStream_t/CUstream as an
        int, or an object with ``cuda_stream`` (torch) or ``ptr`` (cupy). There is no default: 0 means the
        legacy default stream (torch's default stream is that), which the caller has to ask for.
        """
        self._frames(samples)
        if stream is None:
            raise TypeError("run_device needs the caller's stream (0 for the legacy default stream)")
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
