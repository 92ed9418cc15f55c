"""Audio in, logits out, on the GPU: features never leave the device.

Files (:class:`BatchPipeline`)::

    pinned audio [B, S] ─H2D─► device audio ─fbank kernel─► engine input [B, T, F]
                                                              ─engine─► logits [B, C] ─D2H─► pinned

one stream, one wait (a blocking-sync event); the kernel writes the model input (normalized, padded or
cropped) straight into the engine's input binding. On an integrated GPU (Jetson) the pinned buffers are
mapped: the kernel reads the audio and the engine writes the logits in place, and both copies disappear.

Streams (:class:`StreamPipeline`): the engine input of a batch-1 context *is* the window. Each hop the
frames kept from the previous window move to the top (two device-to-device copies through a scratch
buffer, so the binding never moves), the kernel computes only the hop's new frames, normalized, into the
rows after them, rows the window no longer covers get the pad value, and the engine runs. Which rows,
which audio and whether anything can be reused is decided by :func:`plan_window`, a pure function.

Every repeated sequence of that work is a CUDA graph (:class:`Graphs`): captured the second time its key
(batch shape, or the window step's sizes) comes up, the first having run it eagerly (TensorRT wants one
``execute_async_v3`` before a capture), then replayed; a capture that fails falls back to eager work for
that key, with the reason kept.

Nothing here knows TensorRT: an :class:`Engine` is anything that binds addresses and enqueues on a stream
(astedge.runtime.backends.tensorrt adapts an execution context). The driver is :class:`astedge.features.cuda_driver.Driver`
or a test double, the fbank a :class:`astedge.features.cuda_fbank.CudaFbank` or a CPU double, so the control flow
(buffers, stream, order, what a graph holds) runs and is tested on the CPU. Not yet run on a GPU (no GPU
where it was written): ``benchmarks/device/run.sh`` runs its GPU tests and measures it.
"""

from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from astedge.features.cuda_driver import CudaError, Driver, HostArray, Resources
from astedge.features.fbank import FbankConfig, num_frames

FLOAT = 4  # bytes per float32


class Engine(Protocol):
    """One execution context of a model with input ``[B, frames, bins]`` and output ``[B, classes]``, float32."""

    frames: int
    bins: int
    classes: int
    min_batch: int
    max_batch: int

    def bind(self, batch: int, input_ptr: int, output_ptr: int, stream: int) -> None:
        """Set the batch and the two addresses (host-side work, done before a capture; `stream` is where the
        context's own setup, e.g. an optimization-profile switch, goes)."""

    def enqueue(self, stream: int) -> None:
        """Enqueue the model on `stream` (inside a capture when graphs are on)."""


def use_mapped_memory(driver: Driver) -> bool:
    """Whether host buffers are mapped and used in place: on integrated GPUs (Jetson), whose memory is the
    host's; a discrete GPU reads mapped memory over PCIe on every access, so there pinned + copies win."""
    return bool(driver.integrated and driver.can_map_host_memory)


class Graphs:
    """CUDA graphs of repeated work, keyed by its shape: eager the first time, captured the second (when
    `ready`), replayed after. At most `limit` graphs are kept (least recently used go)."""

    def __init__(self, driver: Driver, stream: int, *, enabled: bool = True, limit: int = 8):
        self.driver, self.stream, self.enabled, self.limit = driver, stream, enabled, limit
        self.executables: collections.OrderedDict = collections.OrderedDict()
        self.seen: set = set()
        self.failed: dict = {}  # key -> why capturing it failed (then it runs eagerly)
        self.counts = collections.Counter()

    def run(self, key, work: Callable[[], None], ready: bool = True) -> str:
        """Enqueue `work` on the stream for `key`: 'replay', 'capture' (then launched) or 'eager'.

        `ready` says that the last execution on this engine context had the same shape, so its internal
        state is what the graph was captured with (a replay right after another shape runs eagerly first).
        """
        how = "eager"
        if not self.enabled or key in self.failed:
            work()
        elif key in self.executables and ready:
            self.executables.move_to_end(key)
            self.driver.launch(self.executables[key], self.stream)
            how = "replay"
        elif key in self.seen and ready and key not in self.executables:
            how = "capture" if self._capture(key, work) else "eager"
        else:
            work()
        self.seen.add(key)
        self.counts[how] += 1
        return how

    def _capture(self, key, work) -> bool:
        driver, graph = self.driver, None
        try:
            driver.begin_capture(self.stream)
            try:
                work()
            finally:  # always end the capture, also when the work raised (the stream leaves capture mode)
                graph = driver.end_capture(self.stream)
            executable = driver.instantiate(graph)
        except Exception as err:  # noqa: BLE001 - whatever broke the capture, the work still runs eagerly (or raises there)
            self.failed[key] = f"{type(err).__name__}: {err}"
            warnings.warn(f"astedge: CUDA graph capture failed, running eagerly: {self.failed[key]}", RuntimeWarning,
                          stacklevel=3)
            if graph:
                driver.destroy_graph(graph)
            work()  # nothing ran during the failed capture
            return False
        driver.destroy_graph(graph)
        self.executables[key] = executable
        while len(self.executables) > self.limit:
            _, oldest = self.executables.popitem(last=False)
            driver.destroy_executable(oldest)
        driver.launch(executable, self.stream)
        return True

    def close(self) -> None:
        first = None
        while self.executables:
            _, executable = self.executables.popitem()
            try:
                self.driver.destroy_executable(executable)
            except CudaError as err:
                first = first or err
        if first is not None:
            raise first


class _Pipeline:
    """A stream, a blocking-sync event, the engine's output and graphs; everything released by close()."""

    def __init__(self, driver: Driver, engine: Engine, *, graphs: bool = True, mapped: bool | None = None):
        self.driver, self.engine = driver, engine
        self.resources = Resources()
        self.closed = False
        try:
            driver.activate()
            self.mapped = use_mapped_memory(driver) if mapped is None else mapped
            self.stream = self.resources.add(driver.destroy_stream, driver.stream())
            self.done = self.resources.add(driver.destroy_event, driver.event())
            self.logits = HostArray(driver, self.resources, (engine.max_batch, engine.classes), mapped=self.mapped)
            self.output = self.logits.device if self.mapped else self._device(engine.max_batch * engine.classes * FLOAT)
            self.graphs = Graphs(driver, self.stream, enabled=graphs)
            self.resources.add(self.graphs.close)
            self._setup()
        except BaseException:
            self.resources.close()
            raise

    def _setup(self) -> None:
        pass

    def _device(self, nbytes: int) -> int:
        return self.resources.add(self.driver.free, self.driver.alloc(nbytes))

    def _fetch(self, rows: int) -> np.ndarray:
        """Wait for the stream (sleeping), then the first `rows` logits, copied out of the pinned buffer."""
        self.driver.record(self.done, self.stream)
        self.driver.wait(self.done)
        return self.logits.array[:rows].copy()

    def _copy_out(self, rows: int) -> None:
        if not self.mapped:
            self.driver.copy_to_host(self.logits.host, self.output, rows * self.engine.classes * FLOAT, self.stream)

    def close(self) -> None:
        """Release every buffer, graph, event and the stream (all of them, even if one release fails)."""
        if not self.closed:
            self.closed = True
            try:
                self.driver.activate()
                self.driver.synchronize(self.stream)  # nothing in flight uses what is freed next
            finally:
                self.resources.close()


class BatchPipeline(_Pipeline):
    """Batches through one execution context: audio (`run_audio`) or host features (`run_features`) in,
    logits out. `fbank` is a model-input extractor with ``run_device`` (a CudaFbank), needed for audio."""

    def __init__(self, driver: Driver, engine: Engine, fbank=None, config: FbankConfig | None = None, **options):
        self.fbank, self.config = fbank, config
        self.audio = self.features = None
        self._executed = None  # the batch the context last ran
        super().__init__(driver, engine, **options)

    def _setup(self) -> None:
        e = self.engine
        self.input = self._device(e.max_batch * e.frames * e.bins * FLOAT)  # the engine's input binding

    def run_audio(self, waves) -> np.ndarray:
        """Logits ``[N, classes]`` of N clips (a ``[N, samples]`` array or a list of 1-D arrays of any lengths
        >= one frame): equal-length runs go through the kernel and the engine in batches of up to max_batch."""
        if self.fbank is None or self.config is None:
            raise RuntimeError("this pipeline has no fbank kernel: audio cannot go in")
        self.driver.activate()
        limit = self.config.model_samples  # the kernel never reads past it (frames beyond are cropped)
        clips = [np.asarray(w, np.float32).reshape(-1)[:limit] for w in waves]
        out = np.empty((len(clips), self.engine.classes), np.float32)
        start = 0
        while start < len(clips):
            stop = start + 1
            while stop < len(clips) and stop - start < self.engine.max_batch and len(clips[stop]) == len(clips[start]):
                stop += 1
            out[start:stop] = self._audio_batch(clips[start:stop])
            start = stop
        return out

    def _audio_batch(self, clips: list[np.ndarray]) -> np.ndarray:
        e, rows, samples = self.engine, len(clips), len(clips[0])
        if samples < self.config.window_size:  # no frame at all (a tail shorter than 25 ms): every row is padding
            return self.run_features(np.full((rows, e.frames, e.bins), self.config.pad_value, np.float32))
        batch = max(rows, e.min_batch)
        if self.audio is None:
            shape = (e.max_batch * self.config.model_samples,)
            self.audio = HostArray(self.driver, self.resources, shape, mapped=self.mapped)
            self.audio_device = self.audio.device if self.mapped else self._device(self.audio.nbytes)
        packed = self.audio.array[:batch * samples].reshape(batch, samples)  # the kernel's [batch, samples]
        packed[:rows] = clips
        packed[rows:] = 0.0  # rows below the engine's minimum batch: discarded

        def work() -> None:
            if not self.mapped:
                self.driver.copy_to_device(self.audio_device, self.audio.host, batch * samples * FLOAT, self.stream)
            self.fbank.run_device(self.audio_device, self.input, batch, samples, self.stream)
            e.enqueue(self.stream)
            self._copy_out(batch)

        return self._run(("audio", batch, samples), batch, self.input, work)[:rows]

    def run_features(self, fbank: np.ndarray) -> np.ndarray:
        """Logits of host features ``[N, frames, bins]`` (the backend's plain ``run``): pinned, one copy in."""
        e = self.engine
        x = np.ascontiguousarray(fbank, dtype=np.float32)
        self.driver.activate()
        if self.features is None:
            self.features = HostArray(self.driver, self.resources, (e.max_batch, e.frames, e.bins), mapped=self.mapped)
        out = np.empty((len(x), e.classes), np.float32)
        for start in range(0, len(x), e.max_batch):
            chunk = x[start:start + e.max_batch]
            rows, batch = len(chunk), max(len(chunk), e.min_batch)
            self.features.array[:rows] = chunk
            self.features.array[rows:batch] = 0.0
            source = self.features.device if self.mapped else self.input

            def work(batch=batch) -> None:
                if not self.mapped:
                    self.driver.copy_to_device(self.input, self.features.host, batch * e.frames * e.bins * FLOAT,
                                               self.stream)
                e.enqueue(self.stream)
                self._copy_out(batch)

            out[start:start + rows] = self._run(("features", batch), batch, source, work)[:rows]
        return out

    def _run(self, key, batch: int, source: int, work) -> np.ndarray:
        binding = (batch, source)
        if self._executed != binding:  # the context keeps its shape and addresses between calls
            self.engine.bind(batch, source, self.output, self.stream)
        self.graphs.run(key, work, ready=self._executed == binding)
        self._executed = binding
        return self._fetch(batch)


@dataclass(frozen=True)
class WindowStep:
    """The device work of one stream window (:func:`plan_window`). Rows are engine-input rows.

    `keep`: (first row, rows) of the previous window moved to row 0 (None: nothing moves); `audio`: the stream
    samples [a, b) the kernel reads; it writes `frames` rows from `row`; `pad`: rows [r0, r1) refilled with the
    pad value (real rows of an earlier, longer window). `restart`: nothing of the previous window is used.
    """

    keep: tuple[int, int] | None
    audio: tuple[int, int]
    row: int
    frames: int
    pad: tuple[int, int] | None
    restart: bool

    @property
    def key(self) -> tuple:
        """What the work depends on (not where in the stream it is): its graph's key."""
        return self.keep, self.audio[1] - self.audio[0], self.row, self.frames, self.pad


@dataclass(frozen=True)
class StreamState:
    """Where the engine input stands: frames [first, last) of the stream (frame 0 at sample `origin`) fill its
    rows 0 .. last - first; `rows` real rows are there (the rest is pad)."""

    origin: int = 0
    first: int = 0
    last: int = 0
    rows: int = 0
    started: bool = False


def plan_window(state: StreamState, start: int, end: int, config: FbankConfig,
                restart: bool = False) -> tuple[WindowStep, StreamState]:
    """The work that turns the engine input holding `state`'s window into window [start, end) of the stream.

    Reuses the previous window's frames when the new window starts on the same frame grid within it (a hop
    that is a multiple of the frame shift): they move up, and only frames past its end are computed. Anything
    else (the first window, a hop off the grid, a jump past the previous window after dropped windows, or
    `restart`) computes every frame of the window. Each frame is bit-identical either way (a frame's
    arithmetic depends only on its own samples), so the engine input equals the window's model input.
    """
    shift, size = config.window_shift, config.window_size
    count = num_frames(end - start, config)
    if count < 1 or count > config.target_length:
        raise ValueError(f"window of {end - start} samples: {count} frames, the engine takes 1..{config.target_length}")
    aligned = state.started and (start - state.origin) % shift == 0 and start >= state.origin
    first = (start - state.origin) // shift if aligned else 0
    if restart or not aligned or not state.first <= first <= state.last:
        new = StreamState(origin=start, first=0, last=count, rows=count, started=True)
        step = WindowStep(None, (start, start + (count - 1) * shift + size), 0, count,
                          (count, state.rows) if count < state.rows else None, True)
        return step, new
    last = first + count
    kept = min(state.last, last) - first  # frames of the previous window that this one keeps
    offset = first - state.first
    keep = (offset, kept) if kept > 0 and offset > 0 else None  # offset 0: already in place
    fresh = max(0, last - state.last)
    audio = (state.origin + state.last * shift, state.origin + (last - 1) * shift + size) if fresh else (start, start)
    pad = (count, state.rows) if count < state.rows else None
    step = WindowStep(keep, audio, kept, fresh, pad, False)
    return step, StreamState(state.origin, first, last, count, True)


class StreamPipeline(_Pipeline):
    """Windows of one stream on a batch-1 engine context (see the module docstring); :meth:`classify`."""

    def __init__(self, driver: Driver, engine: Engine, fbank, config: FbankConfig, **options):
        """`fbank`: an extractor of normalized frames without padding (``model_input=False, normalize=True``)."""
        self.fbank, self.config = fbank, config
        self.state = StreamState()
        self.frames_computed = 0
        self.steps: collections.Counter = collections.Counter()
        _Pipeline.__init__(self, driver, engine, **options)

    def _setup(self) -> None:
        e, cfg = self.engine, self.config
        if e.min_batch > 1 or (e.frames, e.bins) != (cfg.target_length, cfg.num_mel_bins):
            raise ValueError("a stream pipeline needs a batch-1 engine of the feature config's input shape")
        self.row_bytes = e.bins * FLOAT
        self.input = self._device(e.frames * self.row_bytes)  # the window: bound as the engine input, never moved
        self.scratch = self._device(e.frames * self.row_bytes)  # for moving kept rows up (copies must not overlap)
        self.audio = HostArray(self.driver, self.resources, (cfg.model_samples,), mapped=self.mapped)
        self.audio_device = self.audio.device if self.mapped else self._device(self.audio.nbytes)
        self.pad_bits = int(np.array(cfg.pad_value, np.float32).view(np.uint32))
        self.driver.fill32(self.input, self.pad_bits, e.frames * e.bins, self.stream)
        self.engine.bind(1, self.input, self.output, self.stream)

    def classify(self, read: Callable[[int, int], np.ndarray | None], start: int, end: int) -> np.ndarray | None:
        """Logits ``[classes]`` of stream window [start, end); `read(a, b)` gives stream samples (None when
        they are gone, e.g. overwritten in the capture ring: then the window is recomputed from its own
        audio, and None is returned when that is gone too)."""
        self.driver.activate()
        step, state = plan_window(self.state, start, end, self.config)
        audio = read(*step.audio) if step.frames else np.zeros(0, np.float32)
        if audio is None and not step.restart:
            step, state = plan_window(self.state, start, end, self.config, restart=True)
            audio = read(*step.audio)
        if audio is None:
            return None
        length = step.audio[1] - step.audio[0]
        if len(audio) != length:
            raise ValueError(f"read({step.audio[0]}, {step.audio[1]}) gave {len(audio)} samples, not {length}")
        self.audio.array[:length] = audio
        self.graphs.run(step.key, lambda: self._work(step, length))
        self.state = state
        self.frames_computed += step.frames
        self.steps["restart" if step.restart else "slide"] += 1
        return self._fetch(1)[0]

    def _work(self, step: WindowStep, length: int) -> None:
        d, s, row = self.driver, self.stream, self.row_bytes
        if step.keep is not None:
            offset, rows = step.keep
            d.copy_device(self.scratch, self.input + offset * row, rows * row, s)
            d.copy_device(self.input, self.scratch, rows * row, s)
        if step.frames:
            if not self.mapped:
                d.copy_to_device(self.audio_device, self.audio.host, length * FLOAT, s)
            self.fbank.run_device(self.audio_device, self.input + step.row * row, 1, length, s)
        if step.pad is not None:
            first, stop = step.pad
            d.fill32(self.input + first * row, self.pad_bits, (stop - first) * self.engine.bins, s)
        self.engine.enqueue(s)
        self._copy_out(1)
