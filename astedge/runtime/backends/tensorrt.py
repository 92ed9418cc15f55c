"""Run a TensorRT engine from an export folder: ``TensorRTBackend(folder).run(fbank) -> logits``, and the
device-resident paths the runtime prefers when present: ``run_audio(waves)`` (files) and ``open_stream``
(live windows), where the CUDA fbank writes the model input straight into the engine's input binding and
only the logits come back (:mod:`astedge.features.device_pipeline`).

Needs only ``tensorrt`` and numpy (no torch, no cuda-python, no libcudart): memory, streams, events and
graphs go through the CUDA driver API (:mod:`astedge.features.cuda_driver`), which always matches the installed
driver; TensorRT and the fbank library carry their own runtime statically and share the driver's primary
context. Execution uses TensorRT 10/11's name-based API: ``set_input_shape``, ``set_tensor_address`` and
``execute_async_v3`` on a stream.

Engines are not portable across TensorRT versions, GPU architectures or platforms (an x86 engine does not
run on a Jetson even at the same compute capability): the folder's ``astedge.json`` records what built the
engine, and loading it elsewhere raises a :class:`UserError` that says to rebuild it on the device.

Not yet run with a real TensorRT (none installs without a GPU): every call is checked against the Python names
of TensorRT 10.3, 10.8, 10.16 and 11.4 by test doubles built from those bindings (tests/trt_double.py).
"""

from __future__ import annotations

import warnings
from typing import Protocol

import numpy as np

from astedge import artefact as art
from astedge.features.cuda_driver import CudaError, CudaUnavailable, Driver, Resources, shared_driver
from astedge.features.device_pipeline import BatchPipeline, StreamPipeline
from astedge.errors import UserError
from astedge.runtime.backends import SplitOutputs, check_precision
from astedge.runtime.model_path import export_metadata, frame_layout, resolve_model

MIN_TENSORRT_MAJOR = 10

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


def gpu_driver(driver: Driver | None = None) -> Driver:
    """The driver of GPU 0 (honours CUDA_VISIBLE_DEVICES), or a UserError saying why there is none."""
    if driver is not None:
        driver.activate()
        return driver
    try:
        return shared_driver()
    except (CudaUnavailable, CudaError) as err:
        raise UserError(f"no CUDA GPU visible: {err}") from None


def current_gpu(driver: Driver | None = None) -> dict:
    """The GPU engines build and run on: name, UUID, compute capability, integrated (Jetson) or not, the
    machine (x86_64 / aarch64) and the driver version; what astedge.json records as an engine's platform."""
    return gpu_driver(driver).describe()


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def check_engine_compatible(engine: dict, tensorrt_version: str, gpu: dict) -> list[str]:
    """Raise :class:`UserError` when an engine described by `engine` (astedge.json) cannot run here.

    TensorRT must be the exact version that built it; the platform (CPU architecture, integrated GPU or
    not) must be the same: engines are not portable across platforms, and a compute-capability match alone
    would accept an x86 engine on a Jetson; the GPU must have its compute capability (or, for an
    ``ampere_plus`` engine, any Ampere-or-newer discrete GPU: hardware compatibility does not exist on
    integrated GPUs). Returns warnings (a different GPU model of the same compute capability runs, but
    tactics were tuned for the other one; an engine built before platforms were recorded).
    """
    built_trt = engine.get("tensorrt", "?")
    built_gpu = engine.get("gpu") or {}
    built_cc = built_gpu.get("compute_capability", "?")
    here = f"this machine has TensorRT {tensorrt_version} and {gpu['name']} (sm {gpu['compute_capability']})"
    there = f"the engine was built with TensorRT {built_trt} for {built_gpu.get('name', '?')} (sm {built_cc})"
    rebuild = "rebuild it on this device: astedge build-engine DIR --force"
    if built_trt != tensorrt_version:
        raise UserError(f"{there}; {here}: TensorRT engines only load in the TensorRT version that built them; {rebuild}")
    warnings = []
    platform_ = engine.get("platform") or {}
    if platform_ and "machine" in gpu:
        built_on = f"{platform_.get('machine')}, {'integrated' if platform_.get('integrated') else 'discrete'} GPU"
        runs_on = f"{gpu['machine']}, {'integrated' if gpu.get('integrated') else 'discrete'} GPU"
        if built_on != runs_on:
            raise UserError(f"{there} on {built_on}; this is {runs_on}: engines are not portable across platforms; "
                            f"{rebuild}")
    elif "machine" in gpu:
        warnings.append(f"{there}; astedge.json does not record its platform (built by an older astedge): rebuild "
                        "it on this device if it fails to load")
    compatibility = engine.get("hardware_compatibility", "none")
    if compatibility != "none" and gpu.get("integrated"):
        raise UserError(f"{there} with hardware compatibility {compatibility!r}, which integrated GPUs (Jetson) do "
                        f"not support; {rebuild}")
    try:
        same_cc = _capability(built_cc) == _capability(gpu["compute_capability"])
        ampere_plus = _capability(gpu["compute_capability"]) >= (8, 0)
    except ValueError:
        same_cc = ampere_plus = False
    if not (same_cc or (compatibility == "ampere_plus" and ampere_plus)):
        raise UserError(f"{there}; {here}: engines are specific to a GPU architecture; {rebuild}")
    if built_gpu.get("name") != gpu["name"] and compatibility == "none":
        warnings.append(f"{there}; running on {gpu['name']} of the same compute capability (tactics were tuned for "
                        "the other GPU; rebuild here for best speed)")
    return warnings


def stream_profile(profiles: list[tuple]) -> int | None:
    """The optimization profile a batch-1 stream context uses: a static (1, 1, 1) profile when the engine has
    one (astedge builds it: ``[engine] stream_batch_1``), else the first that admits batch 1; None if none does."""
    static = [i for i, (low, opt, high) in enumerate(profiles) if low[0] == opt[0] == high[0] == 1]
    if static:
        return static[0]
    return next((i for i, (low, _, _) in enumerate(profiles) if low[0] <= 1), None)


class ExecutionTimer(Protocol):
    """What brackets each engine execution while attached to an :class:`EngineRunner` (:meth:`EngineRunner.set_timer`):
    the hook ``astedge bench`` times GPU compute with (:class:`astedge.measure.gpu_timer.EngineEventTimer`)."""

    def start(self, stream: int) -> None:
        """Called on the engine's stream just before ``execute_async_v3``."""

    def stop(self, stream: int) -> None:
        """Called just after it was enqueued."""

    def close(self) -> None:
        """Release what it holds; called when it is detached or the runner closes."""


class ContextEngine:
    """One TensorRT execution context as a :class:`astedge.features.device_pipeline.Engine`."""

    def __init__(self, runner: "EngineRunner", context, profile: int, min_batch: int, max_batch: int):
        self.runner, self.context, self.profile = runner, context, profile
        self.frames, self.bins = runner.input_shape
        self.classes = runner.num_outputs
        self.min_batch, self.max_batch = min_batch, max_batch
        self._profile_selected = profile == 0  # a new context starts on profile 0

    def bind(self, batch: int, input_ptr: int, output_ptr: int, stream: int) -> None:
        r, ctx = self.runner, self.context
        if not self._profile_selected:
            if not ctx.set_optimization_profile_async(self.profile, stream):
                raise RuntimeError(f"TensorRT rejected optimization profile {self.profile}")
            self._profile_selected = True
        if not ctx.set_input_shape(r.input_name, (batch, self.frames, self.bins)):
            raise RuntimeError(f"TensorRT rejected input shape {(batch, self.frames, self.bins)}")
        ctx.set_tensor_address(r.input_name, input_ptr)
        ctx.set_tensor_address(r.output_name, output_ptr)

    def enqueue(self, stream: int) -> None:
        timer = self.runner.timer
        if timer is not None:
            timer.start(stream)
        ok = self.context.execute_async_v3(stream)
        if timer is not None:
            timer.stop(stream)
        if not ok:
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log)")


class StreamSession:
    """Live windows on the device: a batch-1 context on its own profile and memory, and a StreamPipeline.
    ``classify(read, start, end) -> logits | None``; ``frames_computed``; ``close()``."""

    def __init__(self, runner: "EngineRunner", fbank, config, profile: int):
        self.resources = Resources()
        self.pipeline = None
        trt, engine, driver = runner.trt, runner.engine, runner.driver
        self.context = self.engine = None
        try:
            # User-managed memory sized for this profile alone (a batch-1 window needs far less than the
            # batch profile's worst case, which a STATIC context would allocate). Released last: after the
            # pipeline and the context that use it.
            size = int(engine.get_device_memory_size_for_profile_v2(profile))
            memory = self.resources.add(driver.free, driver.alloc(size))
            context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            self.resources.add(self._drop_context)
            self.context = context
            self.engine = ContextEngine(runner, context, profile, 1, 1)
            self.pipeline = StreamPipeline(driver, self.engine, fbank, config, graphs=runner.graphs)
            self.resources.add(self.pipeline.close)
            context.set_device_memory(memory, size)  # after the profile switch queued by the pipeline's bind
        except BaseException:
            self.resources.close()
            raise

    def _drop_context(self) -> None:  # the last references: TensorRT destroys the context here
        self.context = None
        if self.engine is not None:
            self.engine.context = None

    @property
    def frames_computed(self) -> int:
        return self.pipeline.frames_computed

    def classify(self, read, start: int, end: int):
        return self.pipeline.classify(read, start, end)

    def close(self) -> None:
        self.resources.close()


class EngineRunner:
    """A deserialized engine with one float32 input ``[B, frames, mel]`` and one float32 output ``[B, classes]``.

    ``run`` takes host features (padded up to the engine's minimum batch, chunked by its maximum),
    ``run_audio`` audio through a CUDA fbank into the input binding, ``open_stream`` a live-window session.
    Everything it acquires is released by :meth:`close`, also when construction fails part-way.
    """

    def __init__(self, plan: bytes, trt=None, driver: Driver | None = None, *, graphs: bool = True):
        self.trt = trt = trt or import_tensorrt()
        self.graphs = graphs
        self.timer: ExecutionTimer | None = None
        self.resources = Resources()
        self._batch: BatchPipeline | None = None
        self.sessions: list[StreamSession] = []
        self.runtime = self.engine = self.context = None
        try:
            self.driver = gpu_driver(driver)
            self.runtime = trt.Runtime(trt_logger(trt))
            self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise UserError("TensorRT could not load the engine (built by another TensorRT version or for another "
                                "GPU?); rebuild it on this device: astedge build-engine DIR --force")
            engine = self.engine
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(inputs) != 1 or len(outputs) != 1:
                raise UserError(f"expected an engine with one input and one output, got inputs {inputs}, outputs {outputs}")
            self.input_name, self.output_name = inputs[0], outputs[0]
            for name in names:
                if np.dtype(trt.nptype(engine.get_tensor_dtype(name))) != np.float32:
                    raise UserError(f"engine tensor {name!r} is not float32 (astedge exports keep FP32 I/O); rebuild it")
            self.profiles = [tuple(tuple(int(d) for d in shape) for shape in engine.get_tensor_profile_shape(self.input_name, i))
                             for i in range(engine.num_optimization_profiles)]
            low, _, high = self.profiles[0]
            self.min_batch, self.max_batch = low[0], high[0]
            self.input_shape = tuple(high[1:])
            self.context = engine.create_execution_context()
            self.resources.add(self._drop_trt)
            if not self.context.set_input_shape(self.input_name, high):
                raise RuntimeError(f"TensorRT rejected input shape {high}")
            self.num_outputs = int(tuple(self.context.get_tensor_shape(self.output_name))[1])
        except BaseException:
            self.close()
            raise

    def _drop_trt(self) -> None:  # context before engine before runtime
        self.context = self.engine = self.runtime = None

    def batch_pipeline(self, fbank=None, config=None) -> BatchPipeline:
        """The pipeline of the batch context (profile 0), made on first use; `fbank` enables audio in."""
        if self._batch is None:
            engine = ContextEngine(self, self.context, 0, self.min_batch, self.max_batch)
            self._batch = BatchPipeline(self.driver, engine, fbank, config, graphs=self.graphs and self.timer is None)
            self.resources.add(self._close_batch)
        if fbank is not None and self._batch.fbank is None:
            self._batch.fbank, self._batch.config = fbank, config
        return self._batch

    def _close_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.close()

    def run(self, fbank: np.ndarray) -> np.ndarray:
        """Logits ``[B, classes]`` of ``[B, frames, mel]`` (any B >= 1)."""
        x = np.ascontiguousarray(fbank, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != self.input_shape:
            raise UserError(f"engine expects input [batch, {self.input_shape[0]}, {self.input_shape[1]}], got {list(x.shape)}")
        return self.batch_pipeline().run_features(x)

    def run_audio(self, waves, fbank, config) -> np.ndarray:
        """Logits of clips (see BatchPipeline.run_audio) with `fbank` (a model-input CudaFbank) on the device."""
        return self.batch_pipeline(fbank, config).run_audio(waves)

    def open_stream(self, fbank, config) -> StreamSession | None:
        """A live-window session (`fbank`: normalized frames without padding), or None when no profile of the
        engine takes batch 1."""
        profile = stream_profile(self.profiles)
        if profile is None:
            return None
        session = StreamSession(self, fbank, config, profile)
        self.sessions.append(session)
        return session

    def set_timer(self, timer: ExecutionTimer | None) -> None:
        """Bracket executions with `timer` (None: stop); the batch pipeline runs without graphs meanwhile."""
        if self.timer is not None and self.timer is not timer:
            self.timer.close()
        self.timer = timer
        if self._batch is not None:
            self._batch.graphs.enabled = self.graphs and timer is None

    def close(self) -> None:
        """Release sessions, pipelines, timer and TensorRT objects; every release runs even if one fails."""
        sessions, self.sessions = self.sessions, []
        for session in sessions:
            self.resources.add(session.close)
        if self.timer is not None:
            self.resources.add(self.set_timer, None)
        self.resources.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TensorRTBackend(SplitOutputs):
    """The engine of an export folder, checked against this machine's TensorRT, GPU and platform before loading.

    The Backend of choice on a Jetson (tensorrt + numpy, no torch), with the device paths the runtime prefers:
    it RunsAudio and OpensStreams (:mod:`astedge.runtime.backends`). Its precision is the engine's; asking for another
    is an error. `trt`, `driver`, `fbank_library` and `extractors` ({"model": ..., "frames": ...}: the fbank kernels
    to use) are for tests and benchmarks (doubles, a chosen library).
    """

    name = "tensorrt"
    device = "cuda"

    def __init__(self, path, precision: str = "auto", *, trt=None, driver: Driver | None = None,
                 fbank_library=None, extractors: dict | None = None, graphs: bool = True):
        check_precision(precision)
        ref = resolve_model(path)
        if ref.kind != "export":
            raise UserError("TensorRT runs an export folder's engine; export the checkpoint and build the engine on "
                            f"this device: astedge export -m {ref.path} -o DIR && astedge build-engine DIR", ref.path)
        folder = ref.path
        meta, self.labels, self.task, self.feature_config = export_metadata(folder)
        self.frame_layout = frame_layout(meta)
        engine = meta.get("engine")
        if not engine or not (folder / art.ENGINE_FILE).is_file():
            raise UserError(f"has no TensorRT engine; build one on this device: astedge build-engine {folder}", folder)
        self.precision = engine.get("precision", "?")
        if precision not in ("auto", self.precision):
            raise UserError(f"the engine was built for {self.precision}, not {precision}; rebuild it: astedge "
                            f"build-engine {folder} --force (with a profile of that precision)", folder)
        trt = trt or import_tensorrt()
        driver = gpu_driver(driver)
        self.warnings = check_engine_compatible(engine, trt.__version__, current_gpu(driver))
        self.runner = EngineRunner((folder / art.ENGINE_FILE).read_bytes(), trt, driver, graphs=graphs)
        self.folder, self.meta = folder, meta
        self._fbank_library = fbank_library
        self._extractors: dict[str, object] = dict(extractors or {})

    def _extractor(self, kind: str):
        """The CUDA fbank for `kind` ("model" input or normalized "frames"), or the numpy reference (with the
        reason, announced once) when the library or the GPU cannot run it."""
        from astedge.features.cuda_fbank import CudaFbank, CudaFbankUnavailable, NumpyFbank

        if kind not in self._extractors:
            model_input = kind == "model"
            try:
                self._extractors[kind] = CudaFbank(self.feature_config, model_input=model_input, normalize=True,
                                                   library=self._fbank_library)
            except CudaFbankUnavailable as err:
                warnings.warn(f"astedge: CUDA fbank unavailable, TensorRT gets features computed on the host ({err})",
                              RuntimeWarning, stacklevel=3)
                self._extractors[kind] = NumpyFbank(self.feature_config, model_input=model_input, normalize=True,
                                                    reason=str(err))
        return self._extractors[kind]

    def _raw(self, fbank: np.ndarray) -> np.ndarray:
        return self.runner.run(fbank)

    def _raw_audio(self, waves) -> np.ndarray:
        """Output rows of N windows of audio (a list of 1-D arrays, equal lengths batched): the CUDA fbank writes
        each batch's model input into the engine's input binding; only the outputs are copied back. Without the
        fbank library the features are computed with numpy and go through the engine's host input."""
        extractor = self._extractor("model")
        if extractor.device != "cuda":
            return self._raw(np.stack([extractor(np.asarray(w, np.float32)) for w in waves]))
        return self.runner.run_audio(waves, extractor, self.feature_config)

    def run_audio(self, waves) -> np.ndarray:
        """Logits ``[N, classes]`` of N windows of audio (see :meth:`_raw_audio`)."""
        return self.split(self._raw_audio(waves))[0]

    def run_audio_frames(self, waves) -> tuple[np.ndarray, np.ndarray]:
        """(clip logits, frame logits) of N windows of audio, for a model with a frame head."""
        return self.split(self._raw_audio(waves))

    def open_stream(self, windowing) -> StreamSession | None:
        """A device session for a live stream's windows (``classify(read, start, end)``), or None when this
        engine or machine cannot run one (no fbank library, no batch-1 profile): the runtime then computes
        features on the host."""
        extractor = self._extractor("frames")
        if extractor.device != "cuda" or windowing.config != self.feature_config:
            return None
        try:
            return self.runner.open_stream(extractor, self.feature_config)
        except (CudaError, RuntimeError) as err:  # e.g. no memory for a second context on an 8 GB module
            warnings.warn(f"astedge: live windows run with host features: the device stream could not start ({err})",
                          RuntimeWarning, stacklevel=2)
            return None

    def close(self) -> None:
        try:
            self.runner.close()
        finally:
            for extractor in self._extractors.values():
                close = getattr(extractor, "close", None)
                if close is not None:
                    close()
            self._extractors = {}
