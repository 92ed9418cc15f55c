"""Run a TensorRT engine from an export folder: ``TensorRTBackend(folder).run(fbank) -> logits``.

Needs only ``tensorrt`` and numpy (no torch, no cuda-python): device memory, copies and the stream
go through the CUDA runtime library (``libcudart``) with ctypes. That library is on every JetPack
(``/usr/local/cuda/lib64``, part of the CUDA toolkit JetPack installs) and in every CUDA install;
cuda-python is not part of JetPack 6 and would be one more wheel to match to the device's CUDA.
Execution uses TensorRT 10/11's name-based API: ``set_input_shape``, ``set_tensor_address`` and
``execute_async_v3`` on a stream.

Engines are not portable across TensorRT versions or GPU architectures: the folder's
``astedge.json`` records what the engine was built with, and loading it elsewhere raises a
:class:`UserError` that says to rebuild it on the device (``astedge build-engine``).
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
from pathlib import Path

import numpy as np

from astedge import artefact as art
from astedge.errors import UserError

CUDART_ENV_VAR = "ASTEDGE_CUDART"
MIN_TENSORRT_MAJOR = 10
_H2D, _D2H = 1, 2  # cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost

TENSORRT_HINT = ("install TensorRT's Python bindings: on a Jetson they come with JetPack (sudo apt install "
                 "python3-libnvinfer; in a venv use --system-site-packages); on x86 pip install tensorrt "
                 "(its libraries download from pypi.nvidia.com)")


def import_tensorrt():
    """The ``tensorrt`` module, or a :class:`UserError` saying how to get it."""
    try:
        import tensorrt
    except ImportError as err:
        raise UserError(f"TensorRT is not available ({err}); {TENSORRT_HINT}") from None
    except Exception as err:  # noqa: BLE001 - a bindings wheel without libnvinfer fails with OSError etc.
        raise UserError(f"TensorRT does not load ({type(err).__name__}: {err}); {TENSORRT_HINT}") from None
    return tensorrt


_LOGGERS: dict[int, object] = {}


def trt_logger(trt):
    """One warning-level logger per tensorrt module (TensorRT warns when builders and runtimes use different ones)."""
    if id(trt) not in _LOGGERS:
        _LOGGERS[id(trt)] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[id(trt)]


def current_gpu(index: int = 0) -> dict:
    """Name and compute capability of the GPU engines run on (CUDA driver API; honours CUDA_VISIBLE_DEVICES)."""
    from astedge.machine import cuda_devices

    found = cuda_devices()
    if not found["devices"]:
        raise UserError(f"no CUDA GPU visible: {found['error'] or 'no devices'}")
    if index >= len(found["devices"]):
        raise UserError(f"GPU {index} does not exist ({len(found['devices'])} visible)")
    gpu = found["devices"][index]
    return {"name": gpu["name"], "compute_capability": gpu["compute_capability"], "driver": found["driver"]}


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def check_engine_compatible(engine: dict, tensorrt_version: str, gpu: dict) -> list[str]:
    """Raise :class:`UserError` when an engine described by `engine` (astedge.json) cannot run here.

    TensorRT must be the exact version that built it; the GPU must have its compute capability
    (or, for a hardware-compatible engine, any Ampere-or-newer GPU). Returns warnings (a different
    GPU model of the same compute capability runs, but tactics were tuned for the other one).
    """
    built_trt = engine.get("tensorrt", "?")
    built_gpu = engine.get("gpu") or {}
    built_cc = built_gpu.get("compute_capability", "?")
    here = f"this machine has TensorRT {tensorrt_version} and {gpu['name']} (sm {gpu['compute_capability']})"
    there = f"the engine was built with TensorRT {built_trt} for {built_gpu.get('name', '?')} (sm {built_cc})"
    rebuild = "rebuild it on this device: astedge build-engine DIR --force"
    if built_trt != tensorrt_version:
        raise UserError(f"{there}; {here}: TensorRT engines only load in the TensorRT version that built them; {rebuild}")
    compatibility = engine.get("hardware_compatibility", "none")
    try:
        same_cc = _capability(built_cc) == _capability(gpu["compute_capability"])
        ampere_plus = _capability(gpu["compute_capability"]) >= (8, 0)
    except ValueError:
        same_cc = ampere_plus = False
    if not (same_cc or (compatibility == "ampere_plus" and ampere_plus)):
        raise UserError(f"{there}; {here}: engines are specific to a GPU architecture; {rebuild}")
    if built_gpu.get("name") != gpu["name"] and compatibility == "none":
        return [f"{there}; running on {gpu['name']} of the same compute capability (tactics were tuned for the other "
                "GPU; rebuild here for best speed)"]
    return []


def cudart_candidates() -> list[str]:
    """Where libcudart is looked for: $ASTEDGE_CUDART, the loader path, CUDA installs, NVIDIA's pip wheels."""
    candidates = [os.environ[CUDART_ENV_VAR]] if os.environ.get(CUDART_ENV_VAR) else []
    candidates += ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    for root in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/*/lib", "/usr/local/cuda-*/lib64",
                 "/usr/local/cuda-*/lib", "/usr/local/cuda-*/targets/*/lib"):
        candidates += sorted(glob.glob(f"{root}/libcudart.so*"), reverse=True)
    try:
        spec = importlib.util.find_spec("nvidia")  # nvidia-cuda-runtime(-cu12) wheels: nvidia/*/lib
    except (ImportError, ValueError):
        spec = None
    for base in (spec.submodule_search_locations or []) if spec else []:
        candidates += sorted(glob.glob(f"{base}/*/lib/libcudart.so*"), reverse=True)
    return candidates


def _error_string(lib, status: int) -> str:
    message = lib.cudaGetErrorString(status)
    return f"error {status}: {message.decode(errors='replace') if message else 'unknown'}"


class CudaRuntime:
    """The few CUDA runtime calls an engine needs, through ctypes on libcudart."""

    def __init__(self):
        self.lib = self.path = None
        problems = []
        for candidate in cudart_candidates():
            try:
                lib = ctypes.CDLL(candidate)
            except OSError:
                continue
            self._declare(lib)
            count = ctypes.c_int(0)
            status = lib.cudaGetDeviceCount(ctypes.byref(count))
            if status == 0 and count.value > 0:
                self.lib, self.path = lib, candidate
                return
            problems.append(f"{candidate}: {_error_string(lib, status) if status else 'no devices'}")
        if not problems:
            raise UserError(f"the CUDA runtime library (libcudart) was not found; set {CUDART_ENV_VAR} to its path")
        raise UserError(f"no usable CUDA GPU through the CUDA runtime ({problems[0]})")

    @staticmethod
    def _declare(lib) -> None:
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        lib.cudaGetDeviceCount.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        lib.cudaStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cudaStreamDestroy.argtypes = [ctypes.c_void_p]
        lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        lib.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                        ctypes.c_void_p]

    def check(self, status: int, call: str) -> None:
        if status != 0:
            raise RuntimeError(f"{call} failed with CUDA {_error_string(self.lib, status)}")

    def malloc(self, nbytes: int) -> int:
        pointer = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(pointer), max(1, nbytes)), "cudaMalloc")
        return pointer.value

    def free(self, pointer: int) -> None:
        self.check(self.lib.cudaFree(ctypes.c_void_p(pointer)), "cudaFree")

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        return stream.value or 0

    def stream_destroy(self, stream: int) -> None:
        self.check(self.lib.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")

    def synchronize(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def to_device(self, pointer: int, array: np.ndarray, stream: int) -> None:
        array = np.ascontiguousarray(array)
        self.check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(pointer), array.ctypes.data_as(ctypes.c_void_p),
                                            array.nbytes, _H2D, ctypes.c_void_p(stream)), "cudaMemcpyAsync(H2D)")

    def to_host(self, array: np.ndarray, pointer: int, stream: int) -> None:
        assert array.flags.c_contiguous
        self.check(self.lib.cudaMemcpyAsync(array.ctypes.data_as(ctypes.c_void_p), ctypes.c_void_p(pointer),
                                            array.nbytes, _D2H, ctypes.c_void_p(stream)), "cudaMemcpyAsync(D2H)")


class EngineRunner:
    """A deserialized engine with one input and one output, run on numpy batches.

    Device buffers are sized once for the engine's largest batch; larger inputs run in chunks and a
    batch below the engine's minimum is zero-padded (the extra rows are dropped).
    """

    def __init__(self, plan: bytes, trt=None, cuda: CudaRuntime | None = None):
        trt = trt or import_tensorrt()
        self.trt = trt
        self.cuda = cuda or CudaRuntime()
        self._buffers: list[int] = []
        self.stream = None
        self.runtime = trt.Runtime(trt_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise UserError("TensorRT could not load the engine (built by another TensorRT version or for another "
                            "GPU?); rebuild it on this device: astedge build-engine DIR --force")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"expected an engine with one input and one output, got inputs {inputs}, outputs {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        low, _, high = (tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        self.input_shape = tuple(int(d) for d in high[1:])
        self.context = self.engine.create_execution_context()
        self.context.set_input_shape(self.input_name, high)
        out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))
        self.num_outputs = out_shape[1]
        self.stream = self.cuda.stream_create()
        self.d_input = self._alloc(int(np.prod(high)) * self.input_dtype.itemsize)
        self.d_output = self._alloc(int(np.prod(out_shape)) * self.output_dtype.itemsize)

    def _alloc(self, nbytes: int) -> int:
        pointer = self.cuda.malloc(nbytes)
        self._buffers.append(pointer)
        return pointer

    def run(self, fbank: np.ndarray) -> np.ndarray:
        """Logits ``[B, classes]`` of ``[B, frames, mel]`` (any B >= 1)."""
        x = np.ascontiguousarray(fbank, dtype=self.input_dtype)
        if x.ndim != 3 or x.shape[1:] != self.input_shape:
            raise UserError(f"engine expects input [batch, {self.input_shape[0]}, {self.input_shape[1]}], got {list(x.shape)}")
        out = np.empty((x.shape[0], self.num_outputs), self.output_dtype)
        for start in range(0, x.shape[0], self.max_batch):
            chunk = x[start:start + self.max_batch]
            rows = chunk.shape[0]
            if rows < self.min_batch:
                chunk = np.concatenate([chunk, np.zeros((self.min_batch - rows, *self.input_shape), x.dtype)])
            out[start:start + rows] = self._run_batch(chunk)[:rows]
        return out

    def _run_batch(self, chunk: np.ndarray) -> np.ndarray:
        ctx = self.context
        if not ctx.set_input_shape(self.input_name, chunk.shape):
            raise RuntimeError(f"TensorRT rejected input shape {chunk.shape}")
        result = np.empty(tuple(int(d) for d in ctx.get_tensor_shape(self.output_name)), self.output_dtype)
        self.cuda.to_device(self.d_input, chunk, self.stream)
        ctx.set_tensor_address(self.input_name, self.d_input)
        ctx.set_tensor_address(self.output_name, self.d_output)
        if not ctx.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log)")
        self.cuda.to_host(result, self.d_output, self.stream)
        self.cuda.synchronize(self.stream)
        return result

    def close(self) -> None:
        for pointer in self._buffers:
            self.cuda.free(pointer)
        self._buffers = []
        if self.stream is not None:
            self.cuda.stream_destroy(self.stream)
            self.stream = None
        self.context = self.engine = self.runtime = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _TimedContext:
    """A TensorRT execution context whose ``execute_async_v3`` is bracketed by CUDA events."""

    def __init__(self, context, timer: "EngineEventTimer"):
        self._context, self._timer = context, timer

    def __getattr__(self, name):
        return getattr(self._context, name)

    def execute_async_v3(self, stream):
        return self._timer.around(self._context.execute_async_v3, stream)


class EngineEventTimer:
    """GPU compute time of a TensorRT backend's engine, from CUDA events on its stream (ctypes, libcudart).

    Attached to a :class:`astedge.backends.tensorrt.TensorRTBackend`: its runner's execution context
    is wrapped so that events are recorded on the runner's stream just before and after each
    ``execute_async_v3``. :meth:`take`, called after ``run`` returned (``run`` synchronizes the
    stream), gives the summed milliseconds of the calls since the last take. Any CUDA error turns
    the timer off (:meth:`take` returns None); the benchmark goes on with wall-clock times.
    """

    def __init__(self, runner, lib):
        self.runner, self.lib = runner, lib
        lib.cudaEventCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cudaEventRecord.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.cudaEventElapsedTime.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_void_p]
        lib.cudaEventDestroy.argtypes = [ctypes.c_void_p]
        self.events: list[int] = []  # every event created, for close()
        self.free: list[int] = []
        self.used: list[tuple[int, int]] = []
        self.error: str | None = None
        self.context = runner.context
        runner.context = _TimedContext(self.context, self)

    @classmethod
    def attach(cls, backend) -> "EngineEventTimer | None":
        """A timer for a backend that runs a TensorRT engine through libcudart, else None."""
        runner = getattr(backend, "runner", None)
        lib = getattr(getattr(runner, "cuda", None), "lib", None)
        if runner is None or lib is None or getattr(runner, "context", None) is None:
            return None
        try:
            return cls(runner, lib)
        except AttributeError:  # a libcudart without the event API
            return None

    def _event(self) -> int:
        if self.free:
            return self.free.pop()
        event = ctypes.c_void_p()
        status = self.lib.cudaEventCreate(ctypes.byref(event))
        if status != 0:
            raise RuntimeError(f"cudaEventCreate failed with CUDA error {status}")
        self.events.append(event.value)
        return event.value

    def around(self, execute, stream):
        if self.error:
            return execute(stream)
        try:
            start, end = self._event(), self._event()
            if self.lib.cudaEventRecord(ctypes.c_void_p(start), ctypes.c_void_p(stream)) != 0:
                raise RuntimeError("cudaEventRecord failed")
        except RuntimeError as err:
            self.error = str(err)
            return execute(stream)
        ok = execute(stream)
        if self.lib.cudaEventRecord(ctypes.c_void_p(end), ctypes.c_void_p(stream)) != 0:
            self.error = "cudaEventRecord failed"
        self.used.append((start, end))
        return ok

    def take(self) -> float | None:
        """Milliseconds of GPU compute since the last take (None if nothing ran or the timer failed)."""
        used, self.used = self.used, []
        total, elapsed = 0.0, ctypes.c_float()
        for start, end in used:
            self.free += [start, end]
            if not self.error:
                status = self.lib.cudaEventElapsedTime(ctypes.byref(elapsed), ctypes.c_void_p(start),
                                                       ctypes.c_void_p(end))
                if status != 0:
                    self.error = f"cudaEventElapsedTime failed with CUDA error {status}"
                total += elapsed.value
        return None if self.error or not used else total

    def close(self) -> None:
        self.runner.context = self.context
        for event in self.events:
            self.lib.cudaEventDestroy(ctypes.c_void_p(event))
        self.events, self.free, self.used = [], [], []


class TensorRTBackend:
    """The engine of an export folder, checked against this machine's TensorRT and GPU before loading.

    The :class:`astedge.backends.Backend` of choice on a Jetson: tensorrt + numpy, no torch; the runtime
    computes features with the CUDA fbank library beside it (:func:`astedge.cuda_fbank.load_fbank`).
    The engine's precision is fixed when it is built; asking for another one is an error.
    """

    name = "tensorrt"
    device = "cuda"

    def __init__(self, path: str | Path, precision: str = "auto"):
        from astedge.backends import check_precision, export_metadata, resolve_model

        check_precision(precision)
        ref = resolve_model(path)
        if ref.kind != "export":
            raise UserError("TensorRT runs an export folder's engine; export the checkpoint and build the engine on "
                            f"this device: astedge export {ref.path} -o DIR && astedge build-engine DIR", ref.path)
        folder = ref.path
        meta, self.labels, self.task, self.feature_config = export_metadata(folder)
        engine = meta.get("engine")
        if not engine or not (folder / art.ENGINE_FILE).is_file():
            raise UserError(f"has no TensorRT engine; build one on this device: astedge build-engine {folder}", folder)
        self.precision = engine.get("precision", "?")
        if precision not in ("auto", self.precision):
            raise UserError(f"the engine was built for {self.precision}, not {precision}; rebuild it: astedge "
                            f"build-engine {folder} --force (with a profile of that precision)", folder)
        trt = import_tensorrt()
        self.warnings = check_engine_compatible(engine, trt.__version__, current_gpu())
        self.runner = EngineRunner((folder / art.ENGINE_FILE).read_bytes(), trt)
        self.folder, self.meta = folder, meta
        self.timer: EngineEventTimer | None = None

    def run(self, fbank: np.ndarray) -> np.ndarray:
        return np.asarray(self.runner.run(fbank), dtype=np.float32)

    def time_gpu(self, enabled: bool = True) -> None:
        """Bracket each ``execute_async_v3`` with CUDA events (``astedge bench``'s GPU compute time)."""
        if enabled and self.timer is None:
            self.timer = EngineEventTimer.attach(self)
        elif not enabled and self.timer is not None:
            self.timer.close()
            self.timer = None

    @property
    def gpu_timing(self) -> bool:
        return self.timer is not None

    def take_gpu_ms(self) -> float | None:
        """GPU compute milliseconds since the last call (None when not timing, or nothing ran)."""
        return self.timer.take() if self.timer is not None else None

    def close(self) -> None:
        self.time_gpu(False)
        self.runner.close()
