"""CPU doubles of the GPU path: libcuda, the fbank kernel and an engine context, so that the device path's control
flow (which buffers, which stream, what order, what a graph holds, what is freed) runs and is checked here.

`FakeCuda` has libcuda's function names and ctypes-style arguments (out-parameters are ``ctypes.byref``), so
:class:`astedge.features.cuda_driver.Driver` runs against it unchanged. "Device" memory is host memory (ctypes buffers),
so copies really move bytes; work on a stream runs at once unless the stream is being captured, in which
case it is recorded into the graph and runs when the graph is launched. Every piece of device work is logged
in `work` as (label, stream, bytes or detail, "graph" when it ran from a graph replay). Calls are checked: a
context must be current in the calling thread, handles must be live; `fail` injects errors.
"""

from __future__ import annotations

import ctypes
import itertools
import threading

import numpy as np

SUCCESS, INVALID_VALUE, INVALID_CONTEXT, INVALID_HANDLE = 0, 1, 201, 400
NAMES = {0: "CUDA_SUCCESS", 1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY", 201: "CUDA_ERROR_INVALID_CONTEXT",
         400: "CUDA_ERROR_INVALID_HANDLE", 900: "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
         901: "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"}
NO_CONTEXT_NEEDED = {"cuInit", "cuDriverGetVersion", "cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetName",
                     "cuDeviceGetAttribute", "cuDeviceGetUuid_v2", "cuDevicePrimaryCtxSetFlags_v2",
                     "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRelease_v2", "cuCtxSetCurrent", "cuCtxGetCurrent",
                     "cuGetErrorName", "cuGetErrorString"}


def _value(arg):
    return arg.value if isinstance(arg, (ctypes.c_void_p, ctypes.c_uint64)) else arg


class FakeCuda:
    """A recording libcuda (see the module docstring)."""

    CONTEXT = 0xC0DE

    def __init__(self, *, name="NVIDIA H200", cc=(9, 0), integrated=False, can_map=True, flags_status=SUCCESS):
        self.name, self.cc, self.integrated, self.can_map = name, cc, integrated, can_map
        self.flags_status = flags_status
        self.calls: list[tuple] = []  # (function, thread name, args...)
        self.work: list[tuple] = []
        self.fail: dict[str, int] = {}  # function -> status it returns from now on
        self.memory: dict[int, ctypes.Array] = {}  # device allocations
        self.pinned: dict[int, tuple[ctypes.Array, int]] = {}  # host allocations -> (buffer, flags)
        self.streams: set[int] = set()
        self.events: dict[int, int] = {}  # handle -> flags
        self.graphs: dict[int, list] = {}
        self.executables: dict[int, list] = {}
        self.capturing: dict[int, list] = {}
        self.primary_retained = 0
        self.primary_flags = 0
        self._current = threading.local()
        self._ids = itertools.count(0x1000, 0x10)
        self._lock = threading.Lock()

    # -- bookkeeping --

    def live(self) -> dict:
        """What is still allocated (empty after a clean close)."""
        found = {"memory": len(self.memory), "pinned": len(self.pinned), "streams": len(self.streams),
                 "events": len(self.events), "graphs": len(self.graphs), "executables": len(self.executables)}
        return {k: v for k, v in found.items() if v}

    def labels(self, kind=None) -> list:
        return [w for w in self.work if kind is None or w[0] == kind]

    def submit(self, stream: int, label: str, op, detail=None) -> None:
        """Device work on `stream`: recorded into a capture, else run now (also what the fbank and engine doubles use)."""
        stream = _value(stream)
        if stream not in self.streams:
            raise AssertionError(f"{label} on unknown stream {stream:#x}")
        if getattr(self._current, "context", None) != self.CONTEXT:
            raise AssertionError(f"{label} in thread {threading.current_thread().name} without the context current")
        if stream in self.capturing:
            self.capturing[stream].append((label, op, detail))
            return
        op()
        self.work.append((label, stream, detail, None))

    def _enter(self, name: str, args) -> int | None:
        self.calls.append((name, threading.current_thread().name, *[_value(a) for a in args]))
        if name in self.fail:
            return self.fail[name]
        if name not in NO_CONTEXT_NEEDED and getattr(self._current, "context", None) != self.CONTEXT:
            return INVALID_CONTEXT
        return None

    def __getattr__(self, name):
        if not name.startswith("cu"):
            raise AttributeError(name)
        implementation = getattr(self, "_" + name)

        def call(*args):
            status = self._enter(name, args)
            if status is not None:
                return status
            with self._lock:
                return implementation(*args) or SUCCESS

        return call

    def _new(self) -> int:
        return next(self._ids)

    # -- device and context --

    def _cuInit(self, flags):
        pass

    def _cuDriverGetVersion(self, out):
        out._obj.value = 12060

    def _cuDeviceGetCount(self, out):
        out._obj.value = 1

    def _cuDeviceGet(self, out, ordinal):
        out._obj.value = ordinal

    def _cuDeviceGetName(self, buffer, length, device):
        buffer.value = self.name.encode()

    def _cuDeviceGetAttribute(self, out, attribute, device):
        out._obj.value = {75: self.cc[0], 76: self.cc[1], 18: int(self.integrated), 19: int(self.can_map)}[attribute]

    def _cuDeviceGetUuid_v2(self, out, device):
        out._obj[:] = list(range(16))

    def _cuDevicePrimaryCtxSetFlags_v2(self, device, flags):
        self.primary_flags = flags
        return self.flags_status

    def _cuDevicePrimaryCtxRetain(self, out, device):
        self.primary_retained += 1
        out._obj.value = self.CONTEXT

    def _cuDevicePrimaryCtxRelease_v2(self, device):
        self.primary_retained -= 1

    def _cuCtxGetCurrent(self, out):
        out._obj.value = getattr(self._current, "context", None)

    def _cuCtxSetCurrent(self, context):
        self._current.context = _value(context)

    def _cuGetErrorName(self, status, out):
        out._obj.value = NAMES.get(status, "CUDA_ERROR_UNKNOWN").encode()

    def _cuGetErrorString(self, status, out):
        out._obj.value = b"injected by the test double"

    # -- memory --

    def _cuMemAlloc_v2(self, out, size):
        buffer = (ctypes.c_ubyte * size)()
        ctypes.memset(buffer, 0xA5, size)  # uninitialised device memory is garbage, not zeros
        self.memory[ctypes.addressof(buffer)] = buffer
        out._obj.value = ctypes.addressof(buffer)

    def _cuMemFree_v2(self, pointer):
        if self.memory.pop(_value(pointer), None) is None:
            return INVALID_VALUE

    def _cuMemHostAlloc(self, out, size, flags):
        buffer = (ctypes.c_ubyte * size)()
        self.pinned[ctypes.addressof(buffer)] = (buffer, flags)
        out._obj.value = ctypes.addressof(buffer)

    def _cuMemHostGetDevicePointer_v2(self, out, host, flags):
        host = _value(host)
        if host not in self.pinned or not self.pinned[host][1] & 2:
            return INVALID_VALUE
        out._obj.value = host  # unified addressing: the same address

    def _cuMemFreeHost(self, host):
        if self.pinned.pop(_value(host), None) is None:
            return INVALID_VALUE

    def _copy(self, label, destination, source, size, stream):
        destination, source = _value(destination), _value(source)
        self.submit(stream, label, lambda: ctypes.memmove(destination, source, size), size)

    def _cuMemcpyHtoDAsync_v2(self, destination, source, size, stream):
        self._copy("H2D", destination, source, size, stream)

    def _cuMemcpyDtoHAsync_v2(self, destination, source, size, stream):
        self._copy("D2H", destination, source, size, stream)

    def _cuMemcpyDtoDAsync_v2(self, destination, source, size, stream):
        if abs(_value(destination) - _value(source)) < size:
            raise AssertionError("overlapping device-to-device copy")
        self._copy("D2D", destination, source, size, stream)

    def _cuMemsetD32Async(self, destination, bits, count, stream):
        destination = _value(destination)

        def fill():
            words = (ctypes.c_uint32 * count).from_address(destination)
            words[:] = [bits] * count

        self.submit(stream, "fill", fill, count * 4)

    # -- streams, events, graphs --

    def _cuStreamCreate(self, out, flags):
        assert flags == 1, "streams must be non-blocking"
        handle = self._new()
        self.streams.add(handle)
        out._obj.value = handle

    def _cuStreamDestroy_v2(self, stream):
        if _value(stream) not in self.streams:
            return INVALID_HANDLE
        self.streams.discard(_value(stream))

    def _cuStreamSynchronize(self, stream):
        if _value(stream) not in self.streams:
            return INVALID_HANDLE

    def _cuEventCreate(self, out, flags):
        handle = self._new()
        self.events[handle] = flags
        out._obj.value = handle

    def _cuEventDestroy_v2(self, event):
        if self.events.pop(_value(event), None) is None:
            return INVALID_HANDLE

    def _cuEventRecord(self, event, stream):
        if _value(event) not in self.events:
            return INVALID_HANDLE
        self.work.append(("record", _value(stream), _value(event), None))

    def _cuEventSynchronize(self, event):
        if _value(event) not in self.events:
            return INVALID_HANDLE

    def _cuEventElapsedTime(self, out, start, end):
        out._obj.value = 0.25

    def _cuStreamBeginCapture_v2(self, stream, mode):
        self.capturing[_value(stream)] = []

    def _cuStreamEndCapture(self, stream, out):
        ops = self.capturing.pop(_value(stream))
        handle = self._new()
        self.graphs[handle] = ops
        out._obj.value = handle

    def _cuGraphInstantiateWithFlags(self, out, graph, flags):
        handle = self._new()
        self.executables[handle] = list(self.graphs[_value(graph)])
        out._obj.value = handle

    def _cuGraphLaunch(self, executable, stream):
        for label, op, detail in self.executables[_value(executable)]:
            op()
            self.work.append((label, _value(stream), detail, "graph"))

    def _cuGraphExecDestroy(self, executable):
        if self.executables.pop(_value(executable), None) is None:
            return INVALID_HANDLE

    def _cuGraphDestroy(self, graph):
        if self.graphs.pop(_value(graph), None) is None:
            return INVALID_HANDLE


class HostKernel:
    """The fbank kernel's double: `run_device` runs the kernel's own arithmetic (libastedge_fbank_host) on the
    "device" pointers, as work on the stream (so it is captured into graphs like the real launch)."""

    device = "cuda"

    def __init__(self, cuda: FakeCuda, host_fbank):
        self.cuda, self.host = cuda, host_fbank
        self.config, self.model_input, self.normalize = host_fbank.config, host_fbank.model_input, host_fbank.normalize

    def output_shape(self, samples: int):
        return self.host.output_shape(samples)

    def run_device(self, in_ptr, out_ptr, batch, samples, stream) -> None:
        rows = self.host.output_shape(samples)[0]
        self.cuda.submit(stream, "fbank", lambda: self.host.run_pointers(in_ptr, out_ptr, batch, samples),
                         (batch, samples, rows))


def read_floats(address: int, count: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(address)).copy()


class NumpyEngine:
    """An engine context double: logits = a fixed linear map of the input window (so every input cell counts),
    enqueued as stream work; records the input of every execution. Implements astedge.features.device_pipeline.Engine."""

    def __init__(self, cuda: FakeCuda, frames: int, bins: int, classes: int = 5, min_batch: int = 1, max_batch: int = 4,
                 seed: int = 0):
        self.cuda, self.frames, self.bins, self.classes = cuda, frames, bins, classes
        self.min_batch, self.max_batch = min_batch, max_batch
        self.weights = np.random.default_rng(seed).standard_normal((frames * bins, classes)).astype(np.float32)
        self.inputs: list[np.ndarray] = []
        self.bound = None
        self.binds = 0

    def logits(self, x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1).astype(np.float64) @ self.weights).astype(np.float32)

    def bind(self, batch, input_ptr, output_ptr, stream) -> None:
        assert self.min_batch <= batch <= self.max_batch
        self.bound = (batch, input_ptr, output_ptr)
        self.binds += 1

    def enqueue(self, stream) -> None:
        batch, source, target = self.bound

        def run():
            x = read_floats(source, batch * self.frames * self.bins).reshape(batch, self.frames, self.bins)
            self.inputs.append(x)
            y = self.logits(x)
            ctypes.memmove(target, y.ctypes.data, y.nbytes)

        self.cuda.submit(stream, "engine", run, batch)
