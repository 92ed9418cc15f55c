"""``astedge bench``: how long a window takes, stage by stage, on every backend that loads here.

Three stages are timed, each on its own and together, for each backend and batch size:

- ``fbank``: audio -> model input ``[B, frames, mel]`` with the extractor the runtime would put beside
  that backend: the CUDA fbank library next to a GPU backend when it loads here, else the numpy
  reference (:mod:`astedge.features.cuda_fbank`); which one ran is recorded per backend;
- ``model``: model input -> logits, the backend's ``run``. Backends return host arrays, so a GPU
  backend's wall clock includes the copies and the synchronization (trtexec's "host latency");
- ``end_to_end``: a window of audio (10 s for AST's 1024 frames) -> logits, both stages in one timed call;
- ``gpu_compute`` (TensorRT backend only): CUDA events recorded on the engine's stream around each
  ``execute_async_v3`` (trtexec's "GPU Compute Time": no copies, no host overhead).

Contenders are backends at a precision: each backend asked for at ``precision``, and with ``auto`` an export's INT8
model (``export --int8``) on each ONNX Runtime backend too, as its own row (:func:`load_contenders`).

How it is measured: every backend is loaded first; then, per batch size, warm-up rounds (excluded)
and timed rounds run the backends round-robin (:func:`astedge.timing.round_robin`; each round: fbank,
model, end-to-end of every backend), so a burst of other load on the machine hits every backend
alike. ``iters`` fixes the number of timed rounds; otherwise rounds continue until ``seconds``
(default 5 s) of timing have passed and at least :data:`MIN_ROUNDS` were run. Clocks:
``time.perf_counter``. Each backend's turn starts after a short pause (``pause_ms``, default
:data:`astedge.timing.DEFAULT_PAUSE_MS`, which says why); within a turn the three stages run back to back.
Statistics per stage: :func:`astedge.timing.summarize`.

The report's header holds what makes a number reproducible (:mod:`astedge.measure.machine`): CPU and cores, GPU
name, compute capability and clocks, Jetson power mode and clock locking, library versions, model
size/parameters/FLOPs, precision, batch and threads. Without a model a random-weight AST of the asked
size is built, exported into a temp folder and labelled :data:`astedge.measure.random_weights.RANDOM_WEIGHTS`: its
latency is real, its outputs are not. Presenting the report (tables, markdown, plot) is
:mod:`astedge.measure.bench_report`'s job.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astedge.errors import UserError
from astedge.measure.gpu_timer import EngineEventTimer
from astedge.timing import DEFAULT_PAUSE_MS, percentiles, round_robin, summarize

STAGES = ("fbank", "model", "end_to_end")
GPU_STAGE = "gpu_compute"
#: Timed rounds run for at least this long (per batch size) when no iteration count is given.
DEFAULT_SECONDS = 5.0
#: ... and at least this many rounds.
MIN_ROUNDS = 10
DEFAULT_WARMUP = 3


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
    from astedge.runtime.backends import BACKENDS, backend_names

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


# --- the model ------------------------------------------------------------------------------------------

def describe_model(path: str | Path, random: bool = False) -> dict:
    """Size, shape, parameters and FLOPs of the model behind a model path (FLOPs/params need torch)."""
    from astedge.runtime.model_path import model_configs
    from astedge.measure.random_weights import RANDOM_WEIGHTS
    from astedge.model.config import size_name

    config, features = model_configs(path)
    info = {"path": None if random else str(path), "weights": RANDOM_WEIGHTS if random else "as given",
            "size": size_name(config) or "custom", "embed_dim": config.embed_dim, "depth": config.depth,
            "num_heads": config.num_heads, "patch_size": list(config.patch_size),
            "strides": [config.fstride, config.tstride], "patches": config.num_patches,
            "input": [config.target_length, config.num_mel_bins], "classes": config.num_classes,
            "window_seconds": features.window_seconds, "params_m": None, "gflops_per_clip": None}
    try:
        from astedge.measure.costs import count_flops, count_parameters

        info["params_m"] = round(count_parameters(config) / 1e6, 3)
        info["gflops_per_clip"] = round(count_flops(config) / 1e9, 2)
    except ImportError:  # torch/timm absent (a Jetson runtime): the counts are left out
        pass
    return info


# --- contenders -----------------------------------------------------------------------------------------

@dataclass
class Contender:
    """A loaded backend with the fbank extractor the runtime would pair with it, and its GPU timer (TensorRT)."""

    backend: object
    extractor: object
    timer: EngineEventTimer | None = None

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def key(self) -> str:
        """The contender's name in one report: a backend may run twice, at two precisions (an export's INT8 model)."""
        return f"{self.backend.name} {self.backend.precision}"

    @property
    def fbank(self) -> str:
        return "cuda" if self.extractor.device == "cuda" else "numpy"

    def describe(self) -> dict:
        return {"name": self.backend.name, "precision": self.backend.precision, "device": self.backend.device,
                "fbank": self.fbank, "fbank_detail": self.extractor.detail,
                "gpu_timing": "CUDA events around execute_async_v3" if self.timer else None}

    def close(self) -> None:
        self.backend.close()


#: The backends that run an export's INT8 model (model.int8.onnx) beside its float one.
INT8_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda")


def load_contenders(model, names: list[str], precision: str, threads: int | None,
                    log=None) -> tuple[list[Contender], list[dict]]:
    """Every backend of `names` that loads at `precision` (one per backend and precision, in order) and, for the
    others, why not. With precision auto, an export's INT8 model joins as its own contender on each ONNX Runtime
    backend that loaded (what ``export --int8`` made is timed beside what it came from)."""
    log = log or (lambda message: None)
    contenders: list[Contender] = []
    unavailable: list[dict] = []
    for name in names:
        _load(model, name, precision, threads, contenders, unavailable, log)
    if precision == "auto" and _has_int8(model):
        for name in [c.name for c in contenders if c.name in INT8_BACKENDS and c.backend.precision != "int8"]:
            _load(model, name, "int8", threads, contenders, unavailable, log)
    return contenders, unavailable


def _load(model, name: str, precision: str, threads: int | None, contenders: list[Contender], unavailable: list[dict],
          log) -> None:
    """Backend `name` at `precision` into `contenders`, or why not into `unavailable`."""
    from astedge.runtime.backends import choose_backend
    from astedge.features.cuda_fbank import extractor_for

    label = name if precision == "auto" else f"{name} {precision}"
    try:
        choice = choose_backend(model, name, precision, threads)
    except UserError as err:
        unavailable.append({"backend": label, "reason": str(err)})
        return
    except Exception as err:  # noqa: BLE001 - a runtime failing in its own way is reported, the others still run
        unavailable.append({"backend": label, "reason": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
        return
    backend = choice.backend
    for skipped_name, reason in choice.skipped:
        if all(u["backend"] != skipped_name for u in unavailable):
            unavailable.append({"backend": skipped_name, "reason": reason})
    if any((c.name, c.backend.precision) == (backend.name, backend.precision) for c in contenders):
        backend.close()  # an alias resolving to one already loaded
        return
    extractor = extractor_for(backend.device, backend.feature_config, model_input=True, warn=False)
    contenders.append(Contender(backend, extractor, EngineEventTimer.attach(backend)))
    log(f"loaded {backend.name} ({backend.precision}, {backend.device}); fbank: {extractor.detail}")


def _has_int8(model) -> bool:
    """Whether `model` is an export folder with an INT8 model (and no one .onnx of it was named)."""
    from astedge import artefact as art
    from astedge.runtime.model_path import resolve_model

    ref = resolve_model(model)
    return ref.kind == "export" and ref.onnx is None and bool(art.read_metadata(ref.path)["files"].get("onnx_int8"))


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
    inputs = {c.key: c.extractor(wave) for c in contenders}
    calls, by_key = {}, {c.key: c for c in contenders}
    for c in contenders:
        calls[c.key, "fbank"] = lambda c=c: c.extractor(wave)
        calls[c.key, "model"] = lambda c=c: c.backend.run(inputs[c.key])
        calls[c.key, "end_to_end"] = lambda c=c: c.backend.run(c.extractor(wave))
    gpu_ms: dict[str, list[float]] = {c.key: [] for c in contenders}

    def read_gpu_timer(record: bool):  # CUDA events are read after each call, outside its timing
        def after(key) -> None:
            timer = by_key[key[0]].timer
            value = timer.take() if timer is not None else None
            if record and key[1] == "model" and value is not None:
                gpu_ms[key[0]].append(value)
        return after

    turn = lambda key: key[0]  # noqa: E731 - a contender's three stages run back to back after one pause
    if warmup:  # warm-up rounds exactly like the timed ones, pauses included
        round_robin(calls, warmup, warmup=0, pause_ms=pause_ms, turn=turn, after=read_gpu_timer(False))
    limit = None if iters is not None else (seconds if seconds is not None else DEFAULT_SECONDS)
    started = time.perf_counter()
    times = round_robin(calls, iters, warmup=0, pause_ms=pause_ms, turn=turn, seconds=limit, min_rounds=MIN_ROUNDS,
                        after=read_gpu_timer(True))
    elapsed = time.perf_counter() - started
    rounds = len(times[contenders[0].key, "model"])
    rows = []
    for c in contenders:
        series = {stage: times[c.key, stage] for stage in STAGES}
        if gpu_ms[c.key]:
            series[GPU_STAGE] = gpu_ms[c.key]
        stages = {stage: {**summarize(ms, batch=batch, audio_seconds=window_s), "samples_ms": [round(v, 4) for v in ms]}
                  for stage, ms in series.items()}
        row = {**c.describe(), "backend": c.name, "batch": batch, "rounds": rounds,
               "timed_seconds": round(elapsed, 3),
               "window_seconds": window_s, "stages": stages}
        row.pop("name")
        rows.append(row)
    return rows


#: PortAudio's default "high" input latency buffers about this much audio before the callback sees it.
DEFAULT_BLOCK_MS = 50.0


def stream_latency(classifier, *, block_ms: float = DEFAULT_BLOCK_MS, hops: int = 30, warmup: int = 3,
                   seed: int = 0) -> dict:
    """Mic-to-decision latency of live windows, stage by stage, on a
    :class:`~astedge.runtime.classifier.Classifier`'s backend with its stream windows and decision layer.

    Each hop: the hop's audio enters the ring, the window's features are computed (incrementally when the hop
    is frame-aligned), the backend runs, and the decision layer (smoothing, thresholds, events) decides.
    Mic-to-decision = capture buffering (the window's last sample waits for its audio block, `block_ms`) +
    features + inference + decision; a sound also waits on average half a hop for the next window to end.
    """
    from astedge.runtime.stream import AudioRing, WindowFeatures

    if classifier.event_config is None:  # mic-to-decision needs the decision layer
        classifier = classifier.replace(events=True)
    backend, windowing = classifier.backend, classifier.windowing(stream=True)
    decision = classifier.decision(windowing)
    window, hop = windowing.window, windowing.hop
    wave = (0.1 * np.random.default_rng(seed).standard_normal(window + (hops + warmup) * hop)).astype(np.float32)
    ring = AudioRing(window + 4 * hop)
    features = WindowFeatures(windowing)
    ring.write(wave[:window - hop])
    stages = {"features": [], "inference": [], "decision": []}
    rate = windowing.config.sample_rate
    for k in range(hops + warmup):
        end = window + k * hop
        ring.write(wave[end - hop:end])
        t0 = time.perf_counter()
        x = features.model_input(ring, end - window, end)
        t1 = time.perf_counter()
        if decision.wants_frames:
            logits, frames = (part[0] for part in backend.run_frames(x[None]))
        else:
            logits, frames = backend.run(x[None])[0], None
        t2 = time.perf_counter()
        decision((end - window) / rate, end / rate, logits, 0.0, frame_logits=frames)
        t3 = time.perf_counter()
        ring.release(end - window)
        if k >= warmup:
            for stage, ms in zip(stages, ((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3), strict=True):
                stages[stage].append(ms)
    total = block_ms + np.sum([stages[s] for s in stages], axis=0)
    pct = lambda values: percentiles(values, (50, 90), stats=False)  # noqa: E731
    window_s, hop_s = windowing.seconds
    options, path = classifier.options, decision.frames
    frames = {} if path is None else {  # a frame is decided once final and its median's later frames are in
        "frame_path": {"frame_s": path.layout.step / rate, "delay_ms": 1e3 * path.timeline.delay / rate,
                       "median_frames": path.median.size,
                       "median_wait_ms": 1e3 * path.median.half * path.layout.step / rate}}
    return {"backend": backend.name, "window_s": window_s, "hop_s": hop_s, **frames,
            "smoothing": [options.smoothing, options.smoothing_windows],
            "incremental_features": windowing.incremental, "hops": hops, "capture_buffer_ms": block_ms,
            **{f"{stage}_ms": pct(v) for stage, v in stages.items()}, "mic_to_decision_ms": pct(total),
            "mean_wait_for_window_end_ms": 500.0 * hop_s,
            "note": "mic-to-decision = capture buffer + features + inference + decision, per hop; a sound also waits "
                    "for the next window to end (half a hop on average)"}


def benchmark(model: str | Path | None = None, *, size: str = "base", frames: int = 1024, backends: str = "all",
              batches: str | list[int] = "1", precision: str = "auto", warmup: int = DEFAULT_WARMUP,
              iters: int | None = None, seconds: float | None = None, threads: int | None = None,
              pause_ms: float = DEFAULT_PAUSE_MS, profile: str = "workstation", stream: dict | None = None,
              log=None) -> dict:
    """Run the benchmark and return the report (see the module docstring; :mod:`astedge.measure.bench_report`).

    `stream` (keys window, hop, smoothing, block_ms) adds the mic-to-decision latency of live windows on each
    backend (:func:`stream_latency`)."""
    from astedge.measure import machine
    from astedge.runtime.backends import check_precision
    from astedge.runtime.model_path import resolve_model
    from astedge.model.config import model_config

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
        random_config = model_config(size, target_length=frames)  # checks the size and shape before any work
    if threads:
        with contextlib.suppress(ImportError):
            import torch

            torch.set_num_threads(threads)

    with contextlib.ExitStack() as stack:
        skipped: list[dict] = []
        if model is None:
            path = stack.enter_context(_random_model(random_config, names, skipped, profile, log))
            names = [n for n in names if all(s["backend"] != n for s in skipped)]
        else:
            path = Path(model)
        description = describe_model(path, random=model is None)
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
            log(f"batch {batch}: {warmup} warm-up round(s), then {timed} of {', '.join(c.key for c in contenders)}")
            results += measure(contenders, batch, warmup=warmup, iters=iters, seconds=seconds, pause_ms=pause_ms)
        streams = [_stream(path, contender, stream, log) for contender in contenders] if stream is not None else []
        header = machine.machine_header()
        header.update(gpu=machine.gpu_info(), jetson=machine.jetson_info(), threads=machine.threads_info(threads),
                      runtimes=machine.runtime_versions())
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
        **({"stream": streams} if stream is not None else {}),
    }


def _stream(model, contender: Contender, stream: dict, log) -> dict:
    """:func:`stream_latency` of one contender, its windows and decision layer from a Classifier's options."""
    from astedge.runtime.classifier import Classifier, ClassifierOptions

    smoothing, windows = stream.get("smoothing", ("none", 3))
    options = ClassifierOptions(window=stream.get("window"), hop=stream.get("hop"), smoothing=smoothing,
                                smoothing_windows=windows)
    classifier = Classifier(contender.backend, options, model=model)  # the contender's backend: closed by the bench
    window_s, hop_s = classifier.windowing(stream=True).seconds
    log(f"stream: {contender.name}, {window_s:g} s windows every {hop_s:g} s")
    return stream_latency(classifier, block_ms=stream.get("block_ms", DEFAULT_BLOCK_MS))


def _random_model(config, names: list[str], skipped: list[dict], profile: str, log):
    """The random model's export: FP16 where a GPU is, an engine only where one can be built (else TensorRT
    joins `skipped`, with the reason)."""
    from astedge.deploy.engine import tensorrt_status
    from astedge.measure.random_weights import random_export
    from astedge.measure.machine import cuda_devices

    engine = False
    if "tensorrt" in names:
        engine, why_not = tensorrt_status()
        if not engine:
            skipped.append({"backend": "tensorrt", "reason": why_not})
    return random_export(config, fp16=bool(cuda_devices()["devices"]), engine=engine, profile=profile,
                         name=f"random-{config.embed_dim}d-{config.target_length}", log=log)
