"""The CUDA driver API (``libcuda.so.1``) through ctypes: the one way astedge's GPU runtime touches CUDA.

Why the driver API and not libcudart: the driver library comes with the GPU driver, so it always matches
it. A libcudart found on the system need not (a CUDA 13 runtime beside a 570 driver fails with "driver
insufficient"), while TensorRT and the fbank library link their runtime statically and only need a driver.
Both of those use the runtime's notion of the current context, which is the device's *primary* context:
:class:`Driver` retains that same context and makes it current in every thread that calls it
(:meth:`Driver.activate`, done by each public method of the pipelines), the listener's inference thread
included, so memory, streams, TensorRT and the fbank kernel all live in one context.

Synchronization never spins a CPU core (a Jetson has few): the primary context is asked for
``CU_CTX_SCHED_BLOCKING_SYNC`` and every wait is a ``cuEventSynchronize`` on an event created with
``CU_EVENT_BLOCKING_SYNC``, which blocks the thread whatever the context's flags.

Tests inject `lib`: any object with these functions' names and ctypes-style arguments (out-parameters are
``ctypes.byref`` objects), so the control flow of the device path runs on the CPU (tests/gpu_doubles.py).
Not yet run on a GPU: written against cuda.h's exported symbols without one; ``benchmarks/device/run.sh`` runs
it (``pytest -m cuda``) where a GPU is.
"""

from __future__ import annotations

import ctypes
import platform
import threading

# CUresult values named in messages or handled.
CUDA_SUCCESS = 0
CUDA_ERROR_NOT_INITIALIZED = 3
CUDA_ERROR_NO_DEVICE = 100
CUDA_ERROR_INSUFFICIENT_DRIVER = 35
CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE = 708
# Flags and attributes (cuda.h).
CU_CTX_SCHED_BLOCKING_SYNC = 0x04
CU_STREAM_NON_BLOCKING = 0x1
CU_EVENT_BLOCKING_SYNC = 0x1
CU_EVENT_DISABLE_TIMING = 0x2
CU_MEMHOSTALLOC_PORTABLE = 0x1
CU_MEMHOSTALLOC_DEVICEMAP = 0x2
CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1
ATTRIBUTE_INTEGRATED = 18
ATTRIBUTE_CAN_MAP_HOST_MEMORY = 19
ATTRIBUTE_CC_MAJOR = 75
ATTRIBUTE_CC_MINOR = 76

_P, _U64, _INT, _UINT, _SIZE = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_uint, ctypes.c_size_t
_BYREF = ctypes.c_void_p  # ctypes accepts byref() objects for c_void_p arguments
#: name -> argtypes of every function used (the exported symbol names: `_v2` where cuda.h maps to it).
PROTOTYPES = {
    "cuInit": [_UINT], "cuDriverGetVersion": [_BYREF], "cuDeviceGetCount": [_BYREF],
    "cuDeviceGet": [_BYREF, _INT], "cuDeviceGetName": [ctypes.c_char_p, _INT, _INT],
    "cuDeviceGetAttribute": [_BYREF, _INT, _INT], "cuDeviceGetUuid_v2": [_BYREF, _INT], "cuDeviceGetUuid": [_BYREF, _INT],
    "cuDeviceTotalMem_v2": [_BYREF, _INT],
    "cuDevicePrimaryCtxRetain": [_BYREF, _INT], "cuDevicePrimaryCtxRelease_v2": [_INT],
    "cuDevicePrimaryCtxSetFlags_v2": [_INT, _UINT], "cuCtxSetCurrent": [_P], "cuCtxGetCurrent": [_BYREF],
    "cuMemAlloc_v2": [_BYREF, _SIZE], "cuMemFree_v2": [_U64],
    "cuMemHostAlloc": [_BYREF, _SIZE, _UINT], "cuMemHostGetDevicePointer_v2": [_BYREF, _P, _UINT],
    "cuMemFreeHost": [_P],
    "cuMemcpyHtoDAsync_v2": [_U64, _P, _SIZE, _P], "cuMemcpyDtoHAsync_v2": [_P, _U64, _SIZE, _P],
    "cuMemcpyDtoDAsync_v2": [_U64, _U64, _SIZE, _P], "cuMemsetD32Async": [_U64, _UINT, _SIZE, _P],
    "cuStreamCreate": [_BYREF, _UINT], "cuStreamDestroy_v2": [_P], "cuStreamSynchronize": [_P],
    "cuEventCreate": [_BYREF, _UINT], "cuEventRecord": [_P, _P], "cuEventSynchronize": [_P],
    "cuEventElapsedTime": [_BYREF, _P, _P], "cuEventDestroy_v2": [_P],
    "cuStreamBeginCapture_v2": [_P, _INT], "cuStreamEndCapture": [_P, _BYREF],
    "cuGraphInstantiateWithFlags": [_BYREF, _P, ctypes.c_ulonglong], "cuGraphLaunch": [_P, _P],
    "cuGraphExecDestroy": [_P], "cuGraphDestroy": [_P],
    "cuGetErrorName": [_INT, _BYREF], "cuGetErrorString": [_INT, _BYREF],
}


class CudaError(RuntimeError):
    """A driver call failed: `call` is the function, `status` its CUresult."""

    def __init__(self, call: str, status: int, name: str, text: str):
        self.call, self.status = call, status
        super().__init__(f"{call} failed: {name} ({status}): {text}")


class CudaUnavailable(RuntimeError):
    """No usable driver or device; the message says why (shown to users as is)."""


def load_library():
    """``libcuda.so.1`` with its prototypes declared; CudaUnavailable when there is no NVIDIA driver."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as err:
        raise CudaUnavailable(f"no NVIDIA driver (libcuda.so.1 not found: {err})") from None
    for name, argtypes in PROTOTYPES.items():
        function = getattr(lib, name, None)
        if function is not None:  # a missing symbol fails when called, naming it
            function.argtypes = argtypes
            function.restype = ctypes.c_int
    return lib


class Resources:
    """Cleanups run in reverse order by :meth:`close`, every one of them even when some fail.

    What EngineRunner and the pipelines use so that neither a failed free in ``close`` nor a construction
    that fails part-way leaks a stream, a buffer or a graph: each acquisition registers its release right
    after it succeeds, and a constructor that raises closes what it had.
    """

    def __init__(self):
        self._cleanups: list[tuple[object, tuple]] = []

    def add(self, release, *args):
        """Register ``release(*args)``; returns ``args[0]`` (the handle) for convenience."""
        self._cleanups.append((release, args))
        return args[0] if args else None

    def close(self) -> None:
        """Run every cleanup (newest first); re-raise the first failure after all have run."""
        first = None
        while self._cleanups:
            release, args = self._cleanups.pop()
            try:
                release(*args)
            except Exception as err:  # noqa: BLE001 - keep releasing; report the first problem
                first = first or err
        if first is not None:
            raise first

    def __len__(self) -> int:
        return len(self._cleanups)


class Driver:
    """One device's primary context and the driver calls the device path makes.

    `lib` defaults to the real ``libcuda.so.1``; tests pass a double. Construction retains the primary
    context (asking for blocking synchronization) and reads the device's name, UUID, compute capability,
    whether it is integrated (a Jetson) and can map host memory. :meth:`close` releases the context.
    """

    def __init__(self, device: int = 0, lib=None, blocking_sync: bool = True):
        self.lib = lib if lib is not None else load_library()
        self._tls = threading.local()
        self.context = None
        status = self.lib.cuInit(0)
        if status != CUDA_SUCCESS:
            raise CudaUnavailable(f"cuInit failed: {self._describe(status)} (no usable GPU or driver)")
        version, count = ctypes.c_int(), ctypes.c_int()
        self.call("cuDriverGetVersion", ctypes.byref(version))
        self.call("cuDeviceGetCount", ctypes.byref(count))
        if not 0 <= device < count.value:
            raise CudaUnavailable(f"GPU {device} does not exist ({count.value} visible)")
        handle = ctypes.c_int()
        self.call("cuDeviceGet", ctypes.byref(handle), device)
        self.device, self.ordinal = handle.value, device
        self.driver_version = f"{version.value // 1000}.{version.value % 1000 // 10}"
        name = ctypes.create_string_buffer(256)
        self.call("cuDeviceGetName", name, 256, self.device)
        self.name = name.value.decode(errors="replace")
        self.compute_capability = f"{self.attribute(ATTRIBUTE_CC_MAJOR)}.{self.attribute(ATTRIBUTE_CC_MINOR)}"
        self.integrated = bool(self.attribute(ATTRIBUTE_INTEGRATED))
        self.can_map_host_memory = bool(self.attribute(ATTRIBUTE_CAN_MAP_HOST_MEMORY))
        self.uuid = self._uuid()
        # Blocking sync for the primary context (waits then sleep instead of spinning). Settable while the
        # context is active since CUDA 11 (_v2); if another library made it active with other flags, our
        # waits still block: they use blocking-sync events.
        self.scheduling = "default"
        if blocking_sync:
            status = self.lib.cuDevicePrimaryCtxSetFlags_v2(self.device, CU_CTX_SCHED_BLOCKING_SYNC)
            self.scheduling = "blocking-sync" if status == CUDA_SUCCESS else f"default ({self._describe(status)})"
        context = ctypes.c_void_p()
        self.call("cuDevicePrimaryCtxRetain", ctypes.byref(context), self.device)
        self.context = context.value
        try:
            self.activate()
        except CudaError:
            self.close()
            raise

    def _uuid(self) -> str | None:
        """nvidia-smi's form of the device UUID ("GPU-xxxxxxxx-..."); None from a driver without the call."""
        uuid = (ctypes.c_ubyte * 16)()
        for name in ("cuDeviceGetUuid_v2", "cuDeviceGetUuid"):  # _v2 since CUDA 11.4
            try:
                self.call(name, ctypes.byref(uuid), self.device)
            except (AttributeError, CudaError):
                continue
            hexed = bytes(uuid).hex()
            return f"GPU-{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"
        return None

    # -- errors and plumbing --

    def _describe(self, status: int) -> str:
        name, text = ctypes.c_char_p(), ctypes.c_char_p()
        if self.lib.cuGetErrorName(status, ctypes.byref(name)) != CUDA_SUCCESS or not name.value:
            return f"CUDA error {status}"
        self.lib.cuGetErrorString(status, ctypes.byref(text))
        return f"{name.value.decode()}: {(text.value or b'').decode()}"

    def call(self, name: str, *args) -> None:
        """``lib.<name>(*args)``, raising :class:`CudaError` unless it returns CUDA_SUCCESS."""
        status = getattr(self.lib, name)(*args)
        if status != CUDA_SUCCESS:
            error_name, text = ctypes.c_char_p(), ctypes.c_char_p()
            self.lib.cuGetErrorName(status, ctypes.byref(error_name))
            self.lib.cuGetErrorString(status, ctypes.byref(text))
            raise CudaError(name, status, (error_name.value or b"?").decode(), (text.value or b"?").decode())

    def attribute(self, attribute: int) -> int:
        value = ctypes.c_int()
        self.call("cuDeviceGetAttribute", ctypes.byref(value), attribute, self.device)
        return value.value

    def activate(self) -> None:
        """Make the primary context current in the calling thread (every thread that issues CUDA work must)."""
        if self.context is None:
            raise RuntimeError("the CUDA driver context was released (Driver.close())")
        current = ctypes.c_void_p()
        self.call("cuCtxGetCurrent", ctypes.byref(current))
        if current.value != self.context:
            self.call("cuCtxSetCurrent", ctypes.c_void_p(self.context))

    def describe(self) -> dict:
        """The device as astedge.json records an engine's platform."""
        return {"name": self.name, "uuid": self.uuid, "compute_capability": self.compute_capability,
                "integrated": self.integrated, "machine": platform.machine(), "driver": self.driver_version}

    def close(self) -> None:
        """Release the primary context (it lives on while TensorRT or another library still holds it)."""
        if self.context is not None:
            self.context = None
            self.call("cuDevicePrimaryCtxRelease_v2", self.device)

    # -- memory --

    def alloc(self, nbytes: int) -> int:
        pointer = ctypes.c_uint64()
        self.call("cuMemAlloc_v2", ctypes.byref(pointer), max(1, int(nbytes)))
        return pointer.value

    def free(self, pointer: int) -> None:
        self.call("cuMemFree_v2", pointer)

    def host_alloc(self, nbytes: int, mapped: bool = False) -> tuple[int, int | None]:
        """Pinned host memory: (host pointer, device pointer when `mapped`, else None). Mapped memory is
        what an integrated GPU (Jetson) reads and writes in place: no copy at all."""
        flags = CU_MEMHOSTALLOC_PORTABLE | (CU_MEMHOSTALLOC_DEVICEMAP if mapped else 0)
        host = ctypes.c_void_p()
        self.call("cuMemHostAlloc", ctypes.byref(host), max(1, int(nbytes)), flags)
        if not mapped:
            return host.value, None
        device = ctypes.c_uint64()
        try:
            self.call("cuMemHostGetDevicePointer_v2", ctypes.byref(device), ctypes.c_void_p(host.value), 0)
        except CudaError:
            self.call("cuMemFreeHost", ctypes.c_void_p(host.value))
            raise
        return host.value, device.value

    def free_host(self, pointer: int) -> None:
        self.call("cuMemFreeHost", ctypes.c_void_p(pointer))

    # -- copies (asynchronous on `stream`) --

    def copy_to_device(self, device: int, host: int, nbytes: int, stream: int) -> None:
        self.call("cuMemcpyHtoDAsync_v2", device, ctypes.c_void_p(host), nbytes, ctypes.c_void_p(stream))

    def copy_to_host(self, host: int, device: int, nbytes: int, stream: int) -> None:
        self.call("cuMemcpyDtoHAsync_v2", ctypes.c_void_p(host), device, nbytes, ctypes.c_void_p(stream))

    def copy_device(self, destination: int, source: int, nbytes: int, stream: int) -> None:
        self.call("cuMemcpyDtoDAsync_v2", destination, source, nbytes, ctypes.c_void_p(stream))

    def fill32(self, device: int, bits: int, count: int, stream: int) -> None:
        """`count` 32-bit words of `bits` (a float's bit pattern: the pad value of a model input)."""
        self.call("cuMemsetD32Async", device, bits, count, ctypes.c_void_p(stream))

    # -- streams and events --

    def stream(self) -> int:
        """A non-blocking stream: it never synchronizes with the legacy default stream."""
        stream = ctypes.c_void_p()
        self.call("cuStreamCreate", ctypes.byref(stream), CU_STREAM_NON_BLOCKING)
        return stream.value

    def destroy_stream(self, stream: int) -> None:
        self.call("cuStreamDestroy_v2", ctypes.c_void_p(stream))

    def event(self, timing: bool = False) -> int:
        """A blocking-sync event (waiting on it sleeps); without `timing` it is also the cheapest kind."""
        event = ctypes.c_void_p()
        self.call("cuEventCreate", ctypes.byref(event), CU_EVENT_BLOCKING_SYNC | (0 if timing else CU_EVENT_DISABLE_TIMING))
        return event.value

    def destroy_event(self, event: int) -> None:
        self.call("cuEventDestroy_v2", ctypes.c_void_p(event))

    def record(self, event: int, stream: int) -> None:
        self.call("cuEventRecord", ctypes.c_void_p(event), ctypes.c_void_p(stream))

    def wait(self, event: int) -> None:
        """Block (sleeping, not spinning) until the work before `event` is done."""
        self.call("cuEventSynchronize", ctypes.c_void_p(event))

    def elapsed_ms(self, start: int, end: int) -> float:
        value = ctypes.c_float()
        self.call("cuEventElapsedTime", ctypes.byref(value), ctypes.c_void_p(start), ctypes.c_void_p(end))
        return value.value

    def synchronize(self, stream: int) -> None:
        self.call("cuStreamSynchronize", ctypes.c_void_p(stream))

    # -- graphs --

    def begin_capture(self, stream: int) -> None:
        """Start capturing `stream` (thread-local mode: other threads may keep using CUDA meanwhile)."""
        self.call("cuStreamBeginCapture_v2", ctypes.c_void_p(stream), CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)

    def end_capture(self, stream: int) -> int:
        graph = ctypes.c_void_p()
        self.call("cuStreamEndCapture", ctypes.c_void_p(stream), ctypes.byref(graph))
        return graph.value

    def instantiate(self, graph: int) -> int:
        executable = ctypes.c_void_p()
        self.call("cuGraphInstantiateWithFlags", ctypes.byref(executable), ctypes.c_void_p(graph), 0)
        return executable.value

    def launch(self, executable: int, stream: int) -> None:
        self.call("cuGraphLaunch", ctypes.c_void_p(executable), ctypes.c_void_p(stream))

    def destroy_graph(self, graph: int) -> None:
        self.call("cuGraphDestroy", ctypes.c_void_p(graph))

    def destroy_executable(self, executable: int) -> None:
        self.call("cuGraphExecDestroy", ctypes.c_void_p(executable))


_SHARED: dict[int, Driver] = {}
_SHARED_LOCK = threading.Lock()


def shared_driver(device: int = 0) -> Driver:
    """The process's one :class:`Driver` for `device` (a primary context is per device, not per user)."""
    with _SHARED_LOCK:
        if device not in _SHARED:
            _SHARED[device] = Driver(device)
        driver = _SHARED[device]
    driver.activate()
    return driver


class HostArray:
    """A numpy view of pinned host memory (mapped into the device's address space when `mapped`).

    ``array`` is what the host reads and writes; ``device`` is the pointer a kernel or TensorRT uses when
    the memory is mapped (None otherwise: copy with the driver). Freed by the Resources it was made with.
    """

    def __init__(self, driver: Driver, resources: Resources, shape: tuple[int, ...], dtype=None, mapped: bool = False):
        import numpy as np

        dtype = np.dtype(dtype or np.float32)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        self.host, self.device = driver.host_alloc(nbytes, mapped)
        resources.add(driver.free_host, self.host)
        self.nbytes = nbytes
        buffer = (ctypes.c_ubyte * max(1, nbytes)).from_address(self.host)
        self.array = np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
