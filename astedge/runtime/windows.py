"""Windows over audio, the one result type, and classifying files window by window.

`classify` (files) and `listen` (:mod:`astedge.runtime.stream`) share :class:`WindowResult`, :class:`Windowing`,
:func:`window_starts` and :class:`Decision` (what each window's logits become), so a window means the same
thing everywhere: `window` samples of audio every `hop` samples, starting at 0; audio left after the last
full window is classified in one more, padded window. The :class:`astedge.runtime.classifier.Classifier`
wires these from its options. No torch here: the runtime runs on a Jetson with TensorRT alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from astedge.features import fbank as feats
from astedge.errors import UserError
from astedge.features.fbank import FbankConfig
from astedge.runtime.backends import RunsAudio
from astedge.runtime.events import EventDetector
from astedge.runtime.frames import FramePath
from astedge.runtime.scores import Score, Smoother, activate, rank


@dataclass
class WindowResult:
    """One classified window: where it lies in the audio, how long its features + inference took, the top labels.

    ``file`` names the file (classify); ``aggregate`` ("mean" or "max") marks a clip-level record over
    ``windows`` windows; ``dropped``/``overflows`` (listen) count windows skipped and capture overflows
    since the previous result. ``logits`` (raw model output), ``scores`` (their probabilities, before smoothing)
    and ``events`` (the event records of :mod:`astedge.runtime.events` this window completed) are for programs
    and are not serialized here.
    """

    start: float
    end: float
    latency_ms: float
    top: list[Score] = field(default_factory=list)
    file: str | None = None
    aggregate: str | None = None
    windows: int | None = None
    dropped: int = 0
    overflows: int = 0
    logits: np.ndarray | None = field(default=None, repr=False, compare=False)
    scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    events: list[dict] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The JSON record, ``{"type": "window"}`` (or ``"aggregate"``): start, end, latency_ms, top, plus the
        optional fields that are set."""
        data = {"type": "aggregate" if self.aggregate else "window",
                **({"file": self.file} if self.file is not None else {}),
                "start": round(self.start, 6), "end": round(self.end, 6), "latency_ms": round(self.latency_ms, 3),
                "top": [{**asdict(s), "score": round(s.score, 6)} for s in self.top]}
        for key in ("aggregate", "windows"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        for key in ("dropped", "overflows"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        return data


def window_starts(num_samples: int, window: int, hop: int, tail: bool = False, min_tail: int = 1) -> list[int]:
    """Start samples of full windows; a clip shorter than one window gives one (padded) window at 0.

    With `tail`, audio after the last full window (at least `min_tail` samples of it) gets one more
    window at the next hop, padded at the end.
    """
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if tail and num_samples - (starts[-1] + window) >= min_tail:
        starts.append(starts[-1] + hop)
    return starts


@dataclass(frozen=True)
class Windowing:
    """`window` samples every `hop` samples at the model's rate, under the model's feature config."""

    config: FbankConfig
    window: int
    hop: int

    @classmethod
    def from_seconds(cls, config: FbankConfig, window: float | None = None, hop: float | None = None,
                     default_hop: float | None = None) -> "Windowing":
        """Window and hop in seconds. The window defaults to the model's (``config.window_seconds``: the
        training clip length, else its input span in whole seconds; 10 s for AudioSet models: 998 frames
        + 26 padded rows); the hop to `default_hop` seconds (at most the window), or half the window when
        None. Default hops are whole frame shifts."""
        rate, shift, longest = config.sample_rate, config.window_shift, config.model_samples
        size = min(longest, int(round(config.window_seconds * rate))) if window is None else int(round(window * rate))
        if size < config.window_size:
            raise UserError(f"--window {window:g} s is shorter than one {config.frame_length_ms:g} ms frame")
        if size > longest:
            raise UserError(f"--window {window:g} s is longer than the model's input, {config.target_length} frames = "
                            f"{longest / rate:g} s of audio")
        if hop is None:
            step = size // 2 if default_hop is None else min(size, int(round(default_hop * rate)))
            step = max(shift, step // shift * shift)
        else:
            step = int(round(hop * rate))
            if step < 1:
                raise UserError(f"--hop {hop:g} s is shorter than one sample")
            if step > size:
                raise UserError(f"--hop {hop:g} s is longer than the window ({size / rate:g} s): audio between "
                                "windows would never be classified")
        return cls(config, size, step)

    @property
    def incremental(self) -> bool:
        """Whether windows start on frame boundaries, so stream features can be computed once per frame."""
        return self.hop % self.config.window_shift == 0

    @property
    def seconds(self) -> tuple[float, float]:
        return self.window / self.config.sample_rate, self.hop / self.config.sample_rate

    def describe(self) -> dict:
        window, hop = self.seconds
        return {"window_s": window, "hop_s": hop, "window_frames": feats.num_frames(self.window, self.config),
                "model_frames": self.config.target_length, "incremental_features": self.incremental}



@dataclass
class Decision:
    """What each window's logits become, in window order: probabilities, smoothed across windows (`smoother`), the
    top `k` classes that `mask` allows at or above `threshold`, and the events they complete (`detector`, an
    :class:`astedge.runtime.events.EventDetector` fed the smoothed scores). Files and streams share it."""

    labels: tuple[str, ...]
    task: str
    k: int = 5
    threshold: float | None = None
    mask: np.ndarray | None = None
    smoother: Smoother = field(default_factory=Smoother)
    detector: EventDetector | None = None
    frames: FramePath | None = None  # a frame head's route to events (then `detector` is None)

    def __call__(self, start: float, end: float, logits: np.ndarray, latency_ms: float,
                 frame_logits: np.ndarray | None = None, **fields) -> WindowResult:
        """The result of the window ``[start, end)`` (seconds) whose model output is `logits` (and `frame_logits`
        ``[columns, classes]`` of a model with a frame head)."""
        scores = activate(logits, self.task)
        shown = self.smoother(scores)
        result = WindowResult(start, end, latency_ms, rank(shown, self.labels, self.k, self.threshold, self.mask),
                              logits=logits, scores=scores, **fields)
        if self.frames is not None:
            result.events = self.frames.add(start, end, frame_logits)
        elif self.detector is not None:
            result.events = self.detector.update(start, end, shown)
        return result

    @property
    def detects(self) -> bool:
        """Whether windows become events (a decision layer on windows or on frames)."""
        return self.frames is not None or self.detector is not None

    @property
    def wants_frames(self) -> bool:
        """Whether windows must bring their frame logits."""
        return self.frames is not None

    def finish(self, end: float | None = None) -> list[dict]:
        """The end records of the events still open when the audio ended at `end` seconds."""
        if self.frames is not None:
            return self.frames.finish(end)
        return self.detector.finish(end) if self.detector is not None else []

    @property
    def detected(self) -> list:
        """The decision layer's :class:`astedge.runtime.events.Event` objects so far (none without one)."""
        detector = self.frames.detector if self.frames is not None else self.detector
        return detector.events if detector is not None else []


@dataclass
class FileResult:
    """Every window of one file, and the clip-level mean and max over windows."""

    file: str
    seconds: float
    windows: list[WindowResult]
    mean: WindowResult
    max: WindowResult
    events: list[dict] = field(default_factory=list)  # start/end records in order (with a detector)
    detected: list = field(default_factory=list, repr=False)  # the detector's Event objects (for CSV and scoring)

    @classmethod
    def collect(cls, name: str | None, seconds: float, windows: list[WindowResult], decision: Decision) -> "FileResult":
        """The file's result from its windows: the clip-level mean and max aggregate the model's own (unsmoothed)
        scores; the events are the windows' records and the end records of those still open at the end."""
        stacked = np.stack([w.scores for w in windows])
        total = sum(w.latency_ms for w in windows)
        aggregates = {how: WindowResult(0.0, seconds, total, rank(values, decision.labels, decision.k,
                                                                  decision.threshold, decision.mask),
                                        file=name, aggregate=how, windows=len(windows))
                      for how, values in (("mean", stacked.mean(axis=0)), ("max", stacked.max(axis=0)))}
        events = [record for w in windows for record in w.events] + decision.finish(seconds)
        return cls(name or "", seconds, windows, aggregates["mean"], aggregates["max"], events, list(decision.detected))

    def records(self) -> list[dict]:
        return [w.to_dict() for w in self.windows] + [self.mean.to_dict(), self.max.to_dict()]


def window_inputs(wave: np.ndarray, starts: list[int], windowing: Windowing, extractor=None) -> np.ndarray:
    """Model inputs ``[len(starts), T, F]`` of the windows at `starts` (cut at the end of `wave`, padded).

    Frame-aligned windows are slices of one fbank over the span they cover (each frame computed once,
    bit-identical to per-window computation); other windows are computed one by one.
    """
    cfg, size = windowing.config, windowing.window
    extractor = extractor or (lambda audio: feats.fbank(audio, cfg))
    ends = [min(len(wave), s + size) for s in starts]
    if windowing.incremental or len(starts) == 1:
        first = starts[0]
        span = extractor(wave[first:max(ends)])
        raws = []
        for s, e in zip(starts, ends, strict=True):
            offset = (s - first) // cfg.window_shift
            raws.append(span[offset:offset + feats.num_frames(e - s, cfg)])
    else:
        raws = [extractor(wave[s:e]) for s, e in zip(starts, ends, strict=True)]
    return np.stack([feats.window_input(r, cfg) for r in raws])


def window_logits(backend, wave: np.ndarray, starts: list[int], windowing: Windowing, extractor=None,
                  frames: bool = False):
    """Logits of the windows at `starts`; with `frames`, (clip logits, frame logits) of a model with a frame head. A
    backend that :class:`~astedge.runtime.backends.RunsAudio` (TensorRT with the CUDA fbank) takes the windows' audio
    and computes features on its device, into the engine's input: no feature round trip. Others get host features
    (:func:`window_inputs`) through ``run``."""
    if isinstance(backend, RunsAudio):
        waves = [wave[s:s + windowing.window] for s in starts]
        return backend.run_audio_frames(waves) if frames else backend.run_audio(waves)
    inputs = window_inputs(wave, starts, windowing, extractor)
    return backend.run_frames(inputs) if frames else backend.run(inputs)


def iter_windows(backend, wave: np.ndarray, windowing: Windowing, decision: Decision, *, batch_size: int = 8,
                 extractor=None, name: str | None = None) -> Iterator[WindowResult]:
    """Each window's result of mono audio at the model's rate as soon as its batch (`batch_size` windows per
    backend call) is through; a batch's time is shared equally by its windows."""
    cfg, rate = windowing.config, windowing.config.sample_rate
    feats.frames_or_error(len(wave), cfg, name)
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    starts = window_starts(len(wave), windowing.window, windowing.hop, tail=True, min_tail=cfg.window_shift)
    for b in range(0, len(starts), batch_size):
        batch = starts[b:b + batch_size]
        t0 = time.perf_counter()
        if decision.wants_frames:
            logits, frames = window_logits(backend, wave, batch, windowing, extractor, frames=True)
        else:
            logits, frames = window_logits(backend, wave, batch, windowing, extractor), [None] * len(batch)
        share = (time.perf_counter() - t0) * 1e3 / len(batch)
        for s, row, frame_row in zip(batch, logits, frames, strict=True):
            yield decision(s / rate, min(len(wave), s + windowing.window) / rate, row, share, frame_logits=frame_row,
                           file=name)


def classify_windows(backend, wave: np.ndarray, windowing: Windowing, decision: Decision, *, batch_size: int = 8,
                     extractor=None, name: str | None = None,
                     on_window: Callable[[WindowResult], None] | None = None) -> FileResult:
    """Every window of mono audio at the model's rate through `decision`, collected into the file's result;
    `on_window` hears each window's result as soon as it is ready."""
    results = []
    for result in iter_windows(backend, wave, windowing, decision, batch_size=batch_size, extractor=extractor,
                               name=name):
        results.append(result)
        if on_window is not None:
            on_window(result)
    return FileResult.collect(name, len(wave) / windowing.config.sample_rate, results, decision)


def classify_waveform(backend, wave: np.ndarray, windowing: Windowing, *, k: int = 5, threshold: float | None = None,
                      mask: np.ndarray | None = None, smoother=None, detector=None, **options) -> FileResult:
    """Classify mono audio at the model's rate in sliding windows (:func:`classify_windows`; `options`: batch_size,
    extractor, name, on_window).

    A `smoother` (:class:`astedge.runtime.scores.Smoother`) smooths the scores windows report; a `detector`
    (:class:`astedge.runtime.events.EventDetector`) turns them into events (``FileResult.events``, and each window's
    ``events``). The clip-level mean and max aggregate the model's own scores.
    """
    decision = Decision(backend.labels, backend.task, k, threshold, mask, smoother or Smoother(), detector)
    return classify_windows(backend, wave, windowing, decision, **options)


def classify_file(backend, path: str | Path, windowing: Windowing, *, max_seconds: float | None = 3600.0,
                  **options) -> FileResult:
    """:func:`classify_waveform` of an audio file (any format soundfile reads, any rate and channel count)."""
    from astedge.audio.decode import load_audio

    wave = load_audio(path, windowing.config.sample_rate, max_seconds=max_seconds)
    return classify_waveform(backend, wave, windowing, name=str(path), **options)


def clip_scores(backend, waves, windowing: Windowing, *, batch_size: int = 16, extractor=None) -> np.ndarray:
    """Clip-level probabilities ``[clips, classes]``: each clip's windows through `backend`, the maximum over them
    (a clip shorter than the window is one padded window). What calibration and accuracy on labelled clips use."""
    cfg = windowing.config
    segments, rows, owners = [], [], []
    for clip, wave in enumerate(waves):
        if len(wave) < cfg.window_size:
            wave = np.pad(wave, (0, cfg.window_size - len(wave)))
        starts = window_starts(len(wave), windowing.window, windowing.hop, tail=True, min_tail=cfg.window_shift)
        if isinstance(backend, RunsAudio):  # features on the backend's device (see window_logits)
            segments += [wave[s:s + windowing.window] for s in starts]
        else:
            rows.append(window_inputs(wave, starts, windowing, extractor))
        owners += [clip] * len(starts)
    if segments:
        logits = [backend.run_audio(segments[i:i + batch_size]) for i in range(0, len(segments), batch_size)]
    else:
        inputs = np.concatenate(rows)
        logits = [backend.run(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
    scores = activate(np.concatenate(logits), backend.task)
    out = np.full((len(waves), scores.shape[1]), -np.inf)
    np.maximum.at(out, np.asarray(owners), scores)
    return out
