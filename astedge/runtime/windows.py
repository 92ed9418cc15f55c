"""Windows over audio, the one result type, and classifying files window by window.

`classify` (files) and `listen` (:mod:`astedge.runtime.stream`) share :class:`WindowResult`, :class:`Windowing`
and :func:`window_starts`, so a window means the same thing everywhere: `window` samples of audio every
`hop` samples, starting at 0; audio left after the last full window is classified in one more, padded
window. No torch here: the runtime runs on a Jetson with TensorRT alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from astedge.features import fbank as feats
from astedge.errors import UserError
from astedge.features.fbank import FbankConfig
from astedge.runtime.scores import Score, activate, rank


@dataclass
class WindowResult:
    """One classified window: where it lies in the audio, how long its features + inference took, the top labels.

    ``file`` names the file (classify); ``aggregate`` ("mean" or "max") marks a clip-level record over
    ``windows`` windows; ``dropped``/``overflows`` (listen) count windows skipped and capture overflows
    since the previous result. ``logits`` (raw model output) and ``events`` (the event records of
    :mod:`astedge.runtime.events` this window completed) are for programs and are not serialized here.
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
    events: list[dict] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The JSON record: start, end, latency_ms, top, plus the optional fields that are set."""
        data = {"start": round(self.start, 6), "end": round(self.end, 6), "latency_ms": round(self.latency_ms, 3),
                "top": [{**asdict(s), "score": round(s.score, 6)} for s in self.top]}
        if self.file is not None:
            data = {"file": self.file, **data}
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
class FileResult:
    """Every window of one file, and the clip-level mean and max over windows."""

    file: str
    seconds: float
    windows: list[WindowResult]
    mean: WindowResult
    max: WindowResult
    events: list[dict] = field(default_factory=list)  # start/end records in order (with a detector)

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


def window_logits(backend, wave: np.ndarray, starts: list[int], windowing: Windowing, extractor=None) -> np.ndarray:
    """Logits of the windows at `starts`. A backend with ``run_audio`` (TensorRT with the CUDA fbank) takes the
    windows' audio and computes features on its device, into the engine's input: no feature round trip.
    Others get host features (:func:`window_inputs`) through ``run``."""
    run_audio = getattr(backend, "run_audio", None)
    if run_audio is not None:
        return run_audio([wave[s:s + windowing.window] for s in starts])
    return backend.run(window_inputs(wave, starts, windowing, extractor))


def classify_waveform(backend, wave: np.ndarray, windowing: Windowing, *, k: int = 5, threshold: float | None = None,
                      mask: np.ndarray | None = None, batch_size: int = 8, extractor=None, name: str | None = None,
                      smoother=None, detector=None) -> FileResult:
    """Classify mono audio at the model's rate in sliding windows, `batch_size` windows per backend call.

    A `smoother` (:class:`astedge.runtime.scores.Smoother`) smooths the scores windows report; a `detector`
    (:class:`astedge.runtime.events.EventDetector`) turns them into events (``FileResult.events``, and each window's
    ``events``). The clip-level mean and max aggregate the model's own scores.
    """
    cfg, rate = windowing.config, windowing.config.sample_rate
    feats.frames_or_error(len(wave), cfg, name)
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    starts = window_starts(len(wave), windowing.window, windowing.hop, tail=True, min_tail=cfg.window_shift)
    results, all_scores = [], []
    for b in range(0, len(starts), batch_size):
        batch = starts[b:b + batch_size]
        t0 = time.perf_counter()
        logits = window_logits(backend, wave, batch, windowing, extractor)
        share = (time.perf_counter() - t0) * 1e3 / len(batch)
        scores = activate(logits, backend.task)
        for s, row, score in zip(batch, logits, scores, strict=True):
            end = min(len(wave), s + windowing.window)
            shown = smoother(score) if smoother is not None else score
            result = WindowResult(s / rate, end / rate, share, rank(shown, backend.labels, k, threshold, mask),
                                  file=name, logits=row)
            if detector is not None:
                result.events = detector.update(s / rate, end / rate, shown)
            results.append(result)
            all_scores.append(score)
    events = [record for r in results for record in r.events]
    if detector is not None:
        events += detector.finish(len(wave) / rate)
    stacked = np.stack(all_scores)
    total = sum(r.latency_ms for r in results)
    seconds = len(wave) / rate
    aggregates = {}
    for how, values in (("mean", stacked.mean(axis=0)), ("max", stacked.max(axis=0))):
        aggregates[how] = WindowResult(0.0, seconds, total, rank(values, backend.labels, k, threshold, mask),
                                       file=name, aggregate=how, windows=len(results))
    return FileResult(name or "", seconds, results, aggregates["mean"], aggregates["max"], events)


def classify_file(backend, path: str | Path, windowing: Windowing, *, max_seconds: float | None = 3600.0,
                  **options) -> FileResult:
    """:func:`classify_waveform` of an audio file (any format soundfile reads, any rate and channel count)."""
    from astedge.audio.decode import load_audio

    wave = load_audio(path, windowing.config.sample_rate, max_seconds=max_seconds)
    return classify_waveform(backend, wave, windowing, name=str(path), **options)


def clip_scores(backend, waves, windowing: Windowing, *, batch_size: int = 16) -> np.ndarray:
    """Clip-level probabilities ``[clips, classes]``: each clip's windows through `backend`, the maximum over them
    (a clip shorter than the window is one padded window). What calibration and accuracy on labelled clips use."""
    cfg = windowing.config
    segments, rows, owners = [], [], []
    for clip, wave in enumerate(waves):
        if len(wave) < cfg.window_size:
            wave = np.pad(wave, (0, cfg.window_size - len(wave)))
        starts = window_starts(len(wave), windowing.window, windowing.hop, tail=True, min_tail=cfg.window_shift)
        if hasattr(backend, "run_audio"):  # features on the backend's device (see window_logits)
            segments += [wave[s:s + windowing.window] for s in starts]
        else:
            rows.append(window_inputs(wave, starts, windowing))
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
