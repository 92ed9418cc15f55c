"""``astedge bench``: how long a window takes, stage by stage, on every backend that loads here.

Three stages are timed, each on its own and together, for each backend and batch size:

- ``fbank``: audio -> model input ``[B, frames, mel]`` with the extractor the runtime would put beside
  that backend: the CUDA fbank library next to a GPU backend when it loads here, else the numpy
  reference (:mod:`astedge.cuda_fbank`); which one ran is recorded per backend;
- ``model``: model input -> logits, the backend's ``run``. Backends return host arrays, so a GPU
  backend's wall clock includes the copies and the synchronization (trtexec's "host latency");
- ``end_to_end``: a window of audio (10 s for AST's 1024 frames) -> logits, both stages in one timed call;
- ``gpu_compute`` (TensorRT backend only): CUDA events recorded on the engine's stream around each
  ``execute_async_v3`` (trtexec's "GPU Compute Time": no copies, no host overhead).

How it is measured: every backend is loaded first; then, per batch size, warm-up rounds (excluded)
and timed rounds run the backends round-robin (each round: fbank, model, end-to-end of every
backend), so a burst of other load on the machine hits every backend alike. ``iters`` fixes the
number of timed rounds; otherwise rounds continue until ``seconds`` (default 5 s) of timing have
passed and at least :data:`MIN_ROUNDS` were run. Clocks: ``time.perf_counter``. Each backend's turn
starts after a short pause (``pause_ms``, default :data:`DEFAULT_PAUSE_MS`): ONNX Runtime's and
OpenMP's worker threads spin for a while after a call, and on a few-core CPU the next runtime in the
same process then competes with them (measured on 2 vCPUs: torch right after ONNX Runtime 18 %
slower, up to 7x under outside load; gone with a 50 ms pause). Within a turn the three stages run
back to back (a pause before each also idles the CPU, and the first call after it pays a wake-up).

Statistics per stage (:func:`summarize`): mean, std, min, p50, p90, p95, p99, max (numpy's linear
percentiles), throughput in clips per second (batch / mean), ``x_realtime`` = audio seconds /
compute seconds (how many times faster than real time) and ``real_time_factor`` = its inverse
(compute / audio, the convention ``astedge listen`` reports).

The report's header holds what makes a number reproducible: CPU and cores, GPU name, compute
capability and clocks (``nvidia-smi``), Jetson power mode (``nvpmodel -q``) and whether clocks were
locked (``jetson_clocks --show``), library versions, model size/parameters/FLOPs, precision, batch
and threads. Without a model a random-weight AST of the asked size is built, exported into a
temp folder and labelled :data:`RANDOM_WEIGHTS`: its latency is real, its outputs are not.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astedge.errors import UserError

STAGES = ("fbank", "model", "end_to_end")
GPU_STAGE = "gpu_compute"
STAGE_TITLES = {"fbank": "audio -> fbank", "model": "fbank -> logits", "end_to_end": "audio -> logits",
                GPU_STAGE: "GPU compute (CUDA events)"}
#: Short stage names for narrow tables.
STAGE_SHORT = {"fbank": "fbank", "model": "model", "end_to_end": "e2e", GPU_STAGE: "gpu"}
#: Timed rounds run for at least this long (per batch size) when no iteration count is given.
DEFAULT_SECONDS = 5.0
#: ... and at least this many rounds.
MIN_ROUNDS = 10
DEFAULT_WARMUP = 3
#: Pause before each backend's turn, so the previous backend's spinning worker threads are idle (see above).
DEFAULT_PAUSE_MS = 50.0
RANDOM_WEIGHTS = "random weights (latency only)"
#: Header probes: each command is run with this timeout and its failure recorded, never raised.
PROBE_TIMEOUT_S = 10
NVIDIA_SMI_FIELDS = ("index", "name", "driver_version", "pstate", "clocks.sm", "clocks.mem", "clocks.max.sm",
                     "clocks.max.mem", "power.limit")


# --- statistics -----------------------------------------------------------------------------------------

def summarize(samples_ms, *, batch: int, audio_seconds: float) -> dict:
    """Statistics of one stage's per-call times (ms) for calls of `batch` clips of `audio_seconds` each."""
    data = np.asarray(samples_ms, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("summarize needs a non-empty 1-D sequence of times")
    if batch < 1 or audio_seconds <= 0:
        raise ValueError("batch must be >= 1 and audio_seconds > 0")
    mean = float(data.mean())
    p50, p90, p95, p99 = (float(v) for v in np.percentile(data, [50, 90, 95, 99]))
    compute_s = mean / 1e3
    return {
        "count": int(data.size), "mean_ms": mean, "std_ms": float(data.std()), "min_ms": float(data.min()),
        "p50_ms": p50, "p90_ms": p90, "p95_ms": p95, "p99_ms": p99, "max_ms": float(data.max()),
        "throughput_clips_s": batch / compute_s if compute_s > 0 else float("inf"),
        "x_realtime": batch * audio_seconds / compute_s if compute_s > 0 else float("inf"),
        "real_time_factor": compute_s / (batch * audio_seconds),
    }


def round_robin(calls: dict, rounds: int, *, warmup: int = 1, pause_ms: float = DEFAULT_PAUSE_MS,
                turn=lambda key: key) -> dict:
    """key -> per-call ms: every round calls each function once, in order, so outside load hits all alike.

    A pause comes before each contender's turn (``turn(key)`` names the contender; its calls then run
    back to back): ONNX Runtime's and OpenMP's spinning worker threads otherwise slow the next runtime.
    """
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times = {key: [] for key in calls}
    for _ in range(rounds):
        previous = object()
        for key, fn in calls.items():
            if turn(key) != previous:
                time.sleep(pause_ms / 1e3)
                previous = turn(key)
            start = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - start) * 1e3)
    return times


# --- options --------------------------------------------------------------------------------------------

def parse_batches(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` (order kept, duplicates dropped)."""
    values = []
    for item in str(text).split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise UserError(f"--batch expects positive integers separated by commas (e.g. 1,8,32), got {text!r}")
        values.append(int(item))
    return list(dict.fromkeys(values))


def parse_backends(text: str) -> list[str]:
    """``"all"`` -> every registered backend; else comma-separated names or aliases (checked, order kept)."""
    from astedge.backends import BACKENDS, backend_names

    names = []
    for item in str(text).split(","):
        item = item.strip()
        if item == "all":
            names += list(BACKENDS)
        elif item in backend_names():
            names.append(item)
        else:
            raise UserError(f"unknown backend {item!r}; choose all, or from {', '.join(backend_names())} "
                            "(comma-separated)")
    return list(dict.fromkeys(names))


# --- the header -----------------------------------------------------------------------------------------

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
    from astedge.doctor import cuda_devices

    found = cuda_devices()
    return {"devices": found["devices"], "driver": found["driver"], "error": found["error"], "nvidia_smi": nvidia_smi()}


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


# --- the model ------------------------------------------------------------------------------------------

def _size_name(config) -> str | None:
    from astedge.model_config import SIZES

    for name, dims in SIZES.items():
        if (config.embed_dim, config.depth, config.num_heads) == (dims["embed_dim"], dims["depth"], dims["num_heads"]):
            return name
    return None


def describe_model(path: str | Path, random_size: str | None = None) -> dict:
    """Size, shape, parameters and FLOPs of the model behind a model path (FLOPs/params need torch)."""
    from astedge import artefact as art
    from astedge.backends import resolve_model
    from astedge.features import FbankConfig
    from astedge.model_config import ModelConfig

    ref = resolve_model(path)
    if ref.kind == "export":
        meta = art.read_metadata(ref.path)
        config, features = ModelConfig.from_dict(meta["model_config"]), FbankConfig.from_dict(meta["feature_config"])
    else:
        from astedge.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(ref.path, weights=False)
        config, features = checkpoint.model_config, checkpoint.feature_config
    info = {"path": None if random_size else str(path), "weights": RANDOM_WEIGHTS if random_size else "as given",
            "size": _size_name(config) or "custom", "embed_dim": config.embed_dim, "depth": config.depth,
            "num_heads": config.num_heads, "patch_size": list(config.patch_size),
            "strides": [config.fstride, config.tstride], "patches": config.num_patches,
            "input": [config.target_length, config.num_mel_bins], "classes": config.num_classes,
            "window_seconds": features.window_seconds, "params_m": None, "gflops_per_clip": None}
    try:
        from astedge.costs import count_flops, count_parameters

        info["params_m"] = round(count_parameters(config) / 1e6, 3)
        info["gflops_per_clip"] = round(count_flops(config) / 1e9, 2)
    except ImportError:  # torch/timm absent (a Jetson runtime): the counts are left out
        pass
    return info


@contextlib.contextmanager
def random_model(size: str, *, frames: int = 1024, fp16: bool = False, engine: bool = False,
                 profile: str = "workstation", log=None):
    """A random-weight AST of `size` (AudioSet's head and strides: ``frames`` x 128 input, 527 classes), exported
    into a temp folder. Yields the export folder (the checkpoint stays beside it, so the torch backend runs too).
    """
    from astedge.model_config import model_config

    config = model_config(size, target_length=frames)  # checks the size and shape before any work
    try:
        import torch

        from astedge.model import ASTModel
    except ImportError as err:
        raise UserError(f"building a random model needs PyTorch and timm ({err}); pass --model PATH "
                        "(an export folder) instead") from None
    from astedge.checkpoint import save_checkpoint
    from astedge.export import export

    log = log or (lambda message: None)
    with tempfile.TemporaryDirectory(prefix="astedge-bench-") as tmp:
        torch.manual_seed(0)
        net = ASTModel(config).eval()
        checkpoint = save_checkpoint(Path(tmp) / f"random-{size}-{frames}.safetensors", net,
                                     provenance={"source": f"astedge bench: {RANDOM_WEIGHTS}"})
        del net
        log(f"exporting a random-weight AST-{size} ({config.target_length} x {config.num_mel_bins}, "
            f"{config.num_classes} classes) to ONNX{' + FP16' if fp16 else ''}{' + TensorRT engine' if engine else ''}")
        folder = Path(tmp) / f"random-{size}-{frames}"
        export(checkpoint, folder, profile=profile, fp16=fp16, engine=engine, force=True, verify_count=1, log=log)
        yield folder


# --- GPU compute time of the TensorRT backend -----------------------------------------------------------

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


# --- contenders -----------------------------------------------------------------------------------------

@dataclass
class Contender:
    """A loaded backend with the fbank extractor the runtime would pair with it."""

    backend: object
    extractor: object
    fbank: str  # "numpy" or "cuda"
    fbank_detail: str
    timer: EngineEventTimer | None = None

    @property
    def name(self) -> str:
        return self.backend.name

    def describe(self) -> dict:
        return {"name": self.backend.name, "precision": self.backend.precision, "device": self.backend.device,
                "fbank": self.fbank, "fbank_detail": self.fbank_detail,
                "gpu_timing": "CUDA events around execute_async_v3" if self.timer else None}

    def close(self) -> None:
        if self.timer:
            self.timer.close()
        self.backend.close()


def _open_backend(model, name: str, precision: str, threads: int | None):
    """(backend, skipped aliases) for one name; ONNX Runtime backends get `threads` intra-op threads."""
    from astedge.backends import BACKENDS, choose_backend

    if threads and name in BACKENDS and name.startswith("onnxruntime"):
        module, cls, keywords = BACKENDS[name]
        factory = getattr(importlib.import_module(module), cls)
        return factory(model, precision=precision, threads=threads, **keywords), []
    choice = choose_backend(model, name, precision)
    return choice.backend, choice.skipped


def _extractor(backend, cache: dict):
    """The runtime's choice: the CUDA fbank beside a GPU backend when it loads, else numpy (model input)."""
    from astedge.cuda_fbank import NumpyFbank, load_fbank

    config = backend.feature_config
    key = (backend.device, config)
    if key not in cache:
        if backend.device == "cuda":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the reason is recorded instead
                extractor = load_fbank(config, model_input=True)
        else:
            extractor = NumpyFbank(config, model_input=True, reason="CPU backend: the runtime uses the numpy reference")
        if extractor.device == "cuda":
            cache[key] = (extractor, "cuda", f"CUDA fbank library {extractor.library}")
        else:
            cache[key] = (extractor, "numpy", f"numpy reference ({extractor.reason})")
    return cache[key]


def load_contenders(model, names: list[str], precision: str, threads: int | None,
                    log=None) -> tuple[list[Contender], list[dict]]:
    """Every backend of `names` that loads (one per backend, in order) and, for the others, why not."""
    log = log or (lambda message: None)
    contenders: list[Contender] = []
    unavailable: list[dict] = []
    extractors: dict = {}
    for name in names:
        try:
            backend, skipped = _open_backend(model, name, precision, threads)
        except UserError as err:
            unavailable.append({"backend": name, "reason": str(err)})
            continue
        except Exception as err:  # noqa: BLE001 - a runtime failing in its own way is reported, the others still run
            unavailable.append({"backend": name, "reason": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
            continue
        for skipped_name, reason in skipped:
            if all(u["backend"] != skipped_name for u in unavailable):
                unavailable.append({"backend": skipped_name, "reason": reason})
        if any(c.name == backend.name for c in contenders):  # an alias resolving to one already loaded
            backend.close()
            continue
        extractor, kind, detail = _extractor(backend, extractors)
        contenders.append(Contender(backend, extractor, kind, detail, EngineEventTimer.attach(backend)))
        log(f"loaded {backend.name} ({backend.precision}, {backend.device}); fbank: {detail}")
    return contenders, unavailable


# --- measuring ------------------------------------------------------------------------------------------

def measure(contenders: list[Contender], batch: int, *, warmup: int = DEFAULT_WARMUP, iters: int | None = None,
            seconds: float | None = None, pause_ms: float = DEFAULT_PAUSE_MS, seed: int = 0) -> list[dict]:
    """Round-robin timing of every contender's stages at one batch size; one result row per contender."""
    if not contenders:
        return []
    config = contenders[0].backend.feature_config
    window_s = config.window_seconds
    samples = int(round(window_s * config.sample_rate))
    wave = (0.1 * np.random.default_rng(seed).standard_normal((batch, samples))).astype(np.float32)
    inputs = {c.name: c.extractor(wave) for c in contenders}
    times = {c.name: {stage: [] for stage in (*STAGES, GPU_STAGE)} for c in contenders}

    pause = pause_ms / 1e3
    clock = time.perf_counter

    def one_round(record: bool) -> None:
        for c in contenders:
            run, extract = c.backend.run, c.extractor
            time.sleep(pause)
            t0 = clock()
            extract(wave)
            t1 = clock()
            t2 = clock()
            run(inputs[c.name])
            t3 = clock()
            gpu = c.timer.take() if c.timer else None
            t4 = clock()
            run(extract(wave))
            t5 = clock()
            if c.timer:
                c.timer.take()
            if record:
                stages = times[c.name]
                stages["fbank"].append((t1 - t0) * 1e3)
                stages["model"].append((t3 - t2) * 1e3)
                stages["end_to_end"].append((t5 - t4) * 1e3)
                if gpu is not None:
                    stages[GPU_STAGE].append(gpu)

    for _ in range(warmup):
        one_round(False)
    limit = seconds if seconds is not None else DEFAULT_SECONDS
    started = clock()
    rounds = 0
    while True:
        one_round(True)
        rounds += 1
        if iters is not None:
            if rounds >= iters:
                break
        elif rounds >= MIN_ROUNDS and clock() - started >= limit:
            break
    elapsed = clock() - started
    rows = []
    for c in contenders:
        stages = {}
        for stage, samples_ms in times[c.name].items():
            if samples_ms:
                stages[stage] = {**summarize(samples_ms, batch=batch, audio_seconds=window_s),
                                 "samples_ms": [round(v, 4) for v in samples_ms]}
        rows.append({**c.describe(), "backend": c.name, "batch": batch, "rounds": rounds,
                     "timed_seconds": round(elapsed, 3), "window_seconds": window_s, "stages": stages})
        rows[-1].pop("name")
    return rows


def benchmark(model: str | Path | None = None, *, size: str = "base", frames: int = 1024, backends: str = "all",
              batches: str | list[int] = "1", precision: str = "auto", warmup: int = DEFAULT_WARMUP,
              iters: int | None = None, seconds: float | None = None, threads: int | None = None,
              pause_ms: float = DEFAULT_PAUSE_MS, profile: str = "workstation", log=None) -> dict:
    """Run the benchmark and return the report (see the module docstring; :func:`markdown`, :func:`plot`)."""
    from astedge.backends import check_precision, resolve_model
    from astedge.machine import machine_header
    from astedge.model_config import model_config

    log = log or (lambda message: None)
    names = parse_backends(backends)
    batch_list = parse_batches(batches) if isinstance(batches, str) else list(batches)
    check_precision(precision)
    if iters is not None and seconds is not None:
        raise UserError("give either --iters or --seconds, not both")
    if (iters is not None and iters < 1) or (seconds is not None and seconds <= 0) or warmup < 0 or pause_ms < 0:
        raise UserError("--iters must be >= 1, --seconds > 0, --warmup >= 0 and --pause-ms >= 0")
    if threads is not None and threads < 1:
        raise UserError("--threads must be >= 1")
    if model is not None:
        resolve_model(model)
    else:
        model_config(size, target_length=frames)
    if threads:
        with contextlib.suppress(ImportError):
            import torch

            torch.set_num_threads(threads)

    with contextlib.ExitStack() as stack:
        skipped: list[dict] = []
        if model is None:
            from astedge.doctor import cuda_devices
            from astedge.engine import tensorrt_status

            gpu_here = bool(cuda_devices()["devices"])
            engine = False
            if "tensorrt" in names:  # the random model gets an engine only where one can be built
                engine, why_not = tensorrt_status()
                if not engine:
                    names = [n for n in names if n != "tensorrt"]
                    skipped.append({"backend": "tensorrt", "reason": why_not})
            path = stack.enter_context(random_model(size, frames=frames, fp16=gpu_here, engine=engine, profile=profile,
                                                    log=log))
        else:
            path = Path(model)
        description = describe_model(path, random_size=size if model is None else None)
        contenders, unavailable = load_contenders(path, names, precision, threads, log)
        unavailable = skipped + unavailable
        for contender in contenders:
            stack.callback(contender.close)
        if not contenders:
            raise UserError("no backend could run the model here: "
                            + "; ".join(f"{u['backend']}: {u['reason']}" for u in unavailable))
        results = []
        for batch in batch_list:
            timed = (f"{iters} timed round(s)" if iters
                     else f">= {seconds or DEFAULT_SECONDS:g} s and >= {MIN_ROUNDS} rounds")
            log(f"batch {batch}: {warmup} warm-up round(s), then {timed} of {', '.join(c.name for c in contenders)}")
            results += measure(contenders, batch, warmup=warmup, iters=iters, seconds=seconds, pause_ms=pause_ms)
        header = machine_header()
        header.update(gpu=gpu_info(), jetson=jetson_info(), threads=threads_info(threads), runtimes=runtime_versions())
    return {
        "benchmark": "astedge bench", "format": 1, "header": header, "model": description,
        "settings": {"backends": parse_backends(backends), "batches": batch_list, "precision": precision,
                     "warmup_rounds": warmup, "iters": iters,
                     "seconds": None if iters else (seconds or DEFAULT_SECONDS),
                     "min_rounds": None if iters else MIN_ROUNDS,
                     "audio": f"{description['window_seconds']:g} s of Gaussian noise per clip (std 0.1)",
                     "order": "round-robin over backends; each round times fbank, model, end-to-end in turn",
                     "pause_ms": pause_ms,
                     "clock": "time.perf_counter (host wall clock; GPU backends synchronize before returning)"},
        "backends": [c.describe() for c in contenders], "unavailable": unavailable, "results": results,
    }


# --- presenting -----------------------------------------------------------------------------------------

def machine_lines(h: dict) -> list[str]:
    """The machine part of a header (CPU, GPU and clocks, Jetson power mode, libraries, threads) as short lines."""
    lines = [f"machine: {h['cpu']}, {h['cores']} cores ({h['machine']}), Python {h['python']}, {h['date']}"]
    gpus = h["gpu"]["devices"]
    if gpus:
        smi = {g.get("index"): g for g in ((h["gpu"].get("nvidia_smi") or {}).get("gpus") or [])}
        for gpu in gpus:
            clocks = smi.get(str(gpu["index"]))
            text = f"GPU {gpu['index']}: {gpu['name']} (sm {gpu['compute_capability']}), driver {h['gpu']['driver']}"
            if clocks:
                text += (f"; clocks SM {clocks['clocks.sm']} / max {clocks['clocks.max.sm']}, memory "
                         f"{clocks['clocks.mem']} / max {clocks['clocks.max.mem']}, {clocks['pstate']}")
            lines.append(text)
    else:
        lines.append(f"GPU: none ({h['gpu']['error']})")
    jetson = h.get("jetson")
    if jetson:
        locked = {True: "locked (jetson_clocks)", False: "not locked (DVFS)", None: "unknown"}[jetson["clocks_locked"]]
        lines.append(f"Jetson: {jetson['l4t'] or 'L4T ?'}; power mode {jetson['power_mode'] or '?'}; clocks {locked}")
    versions = {**h["packages"], **{k: v for k, v in h.get("runtimes", {}).items() if isinstance(v, str)}}
    lines.append("libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    t = h["threads"]
    lines.append(f"threads: torch {t.get('torch', '-')}, ONNX Runtime {t.get('onnxruntime_intra_op', '-')}, "
                 "numpy fbank 1; "
                 f"{t['usable_cpus']} usable CPUs" + (f"; env {t['env']}" if t["env"] else ""))
    return lines


def header_lines(report: dict) -> list[str]:
    """The header as short human-readable lines (for the table and the markdown)."""
    m, s = report["model"], report["settings"]
    lines = machine_lines(report["header"])
    params = f", {m['params_m']:.1f} M params, {m['gflops_per_clip']:.1f} GFLOPs/clip" if m["params_m"] else ""
    lines.append(f"model: AST-{m['size']} ({m['embed_dim']}-d x {m['depth']}, patches {m['patches']}, input "
                 f"{m['input'][0]} x {m['input'][1]}, {m['classes']} classes{params}), {m['weights']}; "
                 f"window {m['window_seconds']:g} s")
    rounds = f"{s['iters']} rounds" if s["iters"] else f">= {s['seconds']:g} s and >= {s['min_rounds']} rounds"
    lines.append(f"timing: {s['warmup_rounds']} warm-up round(s) excluded, then {rounds} per batch, "
                 f"{s['order']}, {s['pause_ms']:g} ms pause before each backend's turn; {s['clock']}")
    lines.append("stages: fbank = audio -> model input; model = fbank -> logits (the backend's run); e2e = audio -> "
                 "logits in one call; gpu = engine compute only (CUDA events); clips/s = batch / mean; x RT = audio "
                 "seconds / compute seconds (mean)")
    return lines


def rows(report: dict) -> list[dict]:
    """One display row per backend, batch and stage."""
    out = []
    for result in report["results"]:
        for stage in (*STAGES, GPU_STAGE):
            if stage in result["stages"]:
                out.append({"backend": result["backend"], "precision": result["precision"], "device": result["device"],
                            "fbank": result["fbank"], "batch": result["batch"], "stage": stage,
                            **{k: v for k, v in result["stages"][stage].items() if k != "samples_ms"}})
    return out


def format_rate(value: float) -> str:
    """Clips per second or times real time: 3-4 significant digits."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def format_ms(value: float) -> str:
    """Milliseconds with 3-4 significant digits."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def markdown(report: dict, title: str | None = None) -> str:
    """The report as markdown: header bullets, one table, the backends that did not load."""
    m = report["model"]
    title = title or f"`astedge bench` — AST-{m['size']}, {m['weights']} — {report['header']['cpu']}"
    lines = [f"# {title}", ""] + [f"- {line}" for line in header_lines(report)] + [""]
    lines += ["| backend | precision | device | fbank | batch | stage | mean ms | p50 | p90 | p99 | min | max | n "
              "| clips/s | x real time |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows(report):
        times = " | ".join(format_ms(r[k]) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms"))
        lines.append(f"| {r['backend']} | {r['precision']} | {r['device']} | {r['fbank']} | {r['batch']} | "
                     f"{STAGE_TITLES[r['stage']]} | {times} | {r['count']} | {format_rate(r['throughput_clips_s'])} | "
                     f"{format_rate(r['x_realtime'])} |")
    if report["unavailable"]:
        lines += ["", "Not measured here:", ""]
        lines += [f"- {u['backend']}: {u['reason']}" for u in report["unavailable"]]
    return "\n".join(lines) + "\n"


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("--plot needs matplotlib, which is not installed: pip install matplotlib") from None


def plot(report: dict, path: str | Path) -> Path:
    """Latency distributions per backend (violin + box), one panel per stage and batch size, as a PNG."""
    require_matplotlib()
    from matplotlib.figure import Figure

    path = Path(path)
    batches = list(dict.fromkeys(r["batch"] for r in report["results"]))
    stages = [s for s in (*STAGES, GPU_STAGE) if any(s in r["stages"] for r in report["results"])]
    fig = Figure(figsize=(4.4 * len(stages), 3.4 * len(batches) + 0.8), layout="constrained")
    axes = fig.subplots(len(batches), len(stages), squeeze=False)
    for i, batch in enumerate(batches):
        for j, stage in enumerate(stages):
            ax = axes[i][j]
            chosen = [r for r in report["results"] if r["batch"] == batch and stage in r["stages"]]
            data = [r["stages"][stage]["samples_ms"] for r in chosen]
            ax.set_title(f"{STAGE_TITLES[stage]}, batch {batch}", fontsize=10)
            if not data:
                ax.set_axis_off()
                continue
            positions = list(range(1, len(data) + 1))
            if all(len(d) > 1 and np.ptp(d) > 0 for d in data):
                with contextlib.suppress(ValueError, np.linalg.LinAlgError):
                    ax.violinplot(data, positions, showextrema=False)
            ax.boxplot(data, positions=positions, widths=0.2, showfliers=True)
            ax.set_xticks(positions, [f"{r['backend']}\n{r['precision']}" for r in chosen], fontsize=8)
            low, high = min(min(d) for d in data), max(max(d) for d in data)
            if low > 0 and high / low > 30:
                ax.set_yscale("log")
            ax.set_ylabel("ms per call")
            ax.grid(axis="y", alpha=0.3)
    m, h = report["model"], report["header"]
    gpu = h["gpu"]["devices"][0]["name"] if h["gpu"]["devices"] else "no GPU"
    fig.suptitle(f"astedge bench: AST-{m['size']}, {m['input'][0]} frames, {m['weights']}; {h['cpu']} / {gpu}, "
                 f"{h['date'][:10]}", fontsize=11)
    fig.savefig(path, dpi=110)
    return path
