"""Windows over audio, the one result type, and the two ways of classifying: files and live streams.

`classify` (files) and `listen` (microphone, replayed file, stdin) share :class:`WindowResult`,
:class:`Windowing` and :func:`window_starts`, so a window means the same thing everywhere: `window`
samples of audio every `hop` samples, starting at 0; audio left after the last full window is
classified in one more, padded window. Scores come from :mod:`astedge.predict` (`activate`, `top_k`,
`Score`). No torch here: the runtime runs on a Jetson with TensorRT alone.

Streaming (:class:`Listener`)::

    source thread / PortAudio callback          inference thread                  caller (main thread)
    ─────────────────────────────────          ────────────────                  ────────────────────
    callback(block, status)                     wait until the next window's
      count status.input_overflow               last sample is in the ring
      mix to mono, resample (soxr stream)  ──►  live source behind? skip to the  ──► results() yields
      AudioRing.write (never waits for          newest complete window (count     WindowResult, then
      inference when the source is live)        the skipped ones as dropped)       summary()
                                                features (incremental) → backend

A live source (a microphone, ``--realtime``) is never slowed down by inference: when inference falls
behind, windows are dropped (newest wins) and counted, and the ring (30 s beyond the window) only
overwrites audio when inference stalls that long (counted as lost audio). A file or pipe read as fast
as possible is lossless instead: its reader waits for ring space, and every window is classified.
"""

from __future__ import annotations

import collections
import difflib
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from astedge import features as feats
from astedge.audio import MAX_PEAK, to_mono
from astedge.errors import UserError
from astedge.features import FbankConfig
from astedge.predict import Score, activate, top_k

SMOOTHING = ("none", "ema", "max")
PARTIAL = ("wait", "pad")


@dataclass
class WindowResult:
    """One classified window: where it lies in the audio, how long its features + inference took, the top labels.

    ``file`` names the file (classify); ``aggregate`` ("mean" or "max") marks a clip-level record over
    ``windows`` windows; ``dropped``/``overflows`` (listen) count windows skipped and capture overflows
    since the previous result. ``logits`` (raw model output) is for programs and is not serialized.
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


def model_samples(config: FbankConfig) -> int:
    """Samples of audio that make exactly `target_length` frames (164080 = 10.255 s for AudioSet models)."""
    return (config.target_length - 1) * config.window_shift + config.window_size


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
        rate, shift, longest = config.sample_rate, config.window_shift, model_samples(config)
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


# --- scores: labels, filters, smoothing -------------------------------------------------------------


def rank(scores: np.ndarray, labels, k: int, threshold: float | None = None,
         mask: np.ndarray | None = None) -> list[Score]:
    """The `k` best classes among those `mask` allows, keeping only scores >= `threshold`."""
    scores = np.asarray(scores, dtype=np.float64)
    if mask is not None:
        k = min(k, int(mask.sum()))
        scores = np.where(mask, scores, -np.inf)
    best = top_k(scores, labels, k)
    return [s for s in best if threshold is None or s.score >= threshold]


def _match_label(name: str, labels, index: dict) -> list[int] | None:
    if name in index:
        return [index[name]]
    folded = [i for i, label in enumerate(labels) if label.casefold() == name.casefold()]
    return folded[:1] or None


def label_mask(labels, allow: list[str] | None = None, deny: list[str] | None = None) -> np.ndarray | None:
    """Which classes may be reported: only `allow`ed ones, or all but `deny`ed ones (None: all).

    Each value is a label name (exact, else case-insensitive); a value that is not a label is split at
    commas, so ``--allow "Speech,Music"`` works while ``"Child speech, kid speaking"`` stays one label.
    """
    if allow and deny:
        raise UserError("--allow and --deny are mutually exclusive (give one list)")
    values = allow or deny
    if not values:
        return None
    index = {label: i for i, label in enumerate(labels)}
    chosen: set[int] = set()
    for value in values:
        found = _match_label(value.strip(), labels, index)
        if found is None:
            found = []
            for part in (p.strip() for p in value.split(",") if p.strip()):
                hit = _match_label(part, labels, index)
                if hit is None:
                    close = difflib.get_close_matches(part, list(labels), n=3)
                    raise UserError(f"{part!r} is not a label of this model" +
                                    (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
                found += hit
        chosen.update(found)
    mask = np.zeros(len(labels), dtype=bool)
    mask[sorted(chosen)] = True
    return mask if allow else ~mask


class Smoother:
    """Score smoothing across consecutive classified windows.

    ``ema``: ``s_t = a * x_t + (1 - a) * s_{t-1}``, ``s_0 = x_0``, with ``a = 2 / (windows + 1)`` (the
    usual span convention); ``max``: per-class maximum over the last `windows` windows; ``none``: as is.
    """

    def __init__(self, method: str = "none", windows: int = 3):
        if method not in SMOOTHING:
            raise UserError(f"--smoothing must be one of {', '.join(SMOOTHING)}, got {method!r}")
        if windows < 1:
            raise UserError("--smoothing-windows must be >= 1")
        self.method, self.windows = method, windows
        self.alpha = 2.0 / (windows + 1)
        self._state: np.ndarray | None = None
        self._recent: collections.deque = collections.deque(maxlen=windows)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        if self.method == "ema":
            self._state = scores if self._state is None else self.alpha * scores + (1 - self.alpha) * self._state
            return self._state
        if self.method == "max":
            self._recent.append(scores)
            return np.max(np.stack(self._recent), axis=0)
        return scores


# --- audio ring and stream features ---------------------------------------------------------------


class AudioRing:
    """Mono float32 audio at the model's rate, addressed by absolute sample index, shared by two threads.

    The writer (capture) appends; the reader (inference) reads ranges that are still held. A live
    writer never waits and overwrites the oldest audio; a lossless writer (``block=True``) waits until
    the reader has released (:meth:`release`) enough. :meth:`arrival` says when a sample was written.
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, np.float32)
        self.total = 0
        self.closed = False
        self._floor = 0
        self._cond = threading.Condition()
        self._arrivals: collections.deque = collections.deque(maxlen=16384)

    def write(self, samples: np.ndarray, block: bool = False) -> int:
        """Append `samples`; returns how many were written (fewer only when the ring is closed meanwhile)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        written, piece = 0, max(1, self.capacity // 4)
        for offset in range(0, samples.size, piece):
            chunk = samples[offset:offset + piece]
            with self._cond:
                if block:
                    while not self.closed and self.total + chunk.size - self._floor > self.capacity:
                        self._cond.wait(0.1)
                if self.closed:
                    return written
                pos = self.total % self.capacity
                first = min(chunk.size, self.capacity - pos)
                self._buf[pos:pos + first] = chunk[:first]
                self._buf[:chunk.size - first] = chunk[first:]
                self.total += chunk.size
                self._arrivals.append((self.total, time.perf_counter()))
                self._cond.notify_all()
            written += chunk.size
        return written

    def read(self, start: int, stop: int) -> np.ndarray | None:
        """A copy of samples ``[start, stop)``, or None when part of it was already overwritten."""
        with self._cond:
            if stop > self.total or start > stop:
                raise ValueError(f"samples {start}..{stop} requested, {self.total} written")
            if start < self.total - self.capacity:
                return None
            pos, count = start % self.capacity, stop - start
            first = min(count, self.capacity - pos)  # a two-segment copy: the lock is held for microseconds
            return np.concatenate([self._buf[pos:pos + first], self._buf[:count - first]])

    def wait(self, total: int, timeout: float) -> bool:
        """Wait until `total` samples were written (True) or the ring closed or `timeout` passed (False)."""
        with self._cond:
            self._cond.wait_for(lambda: self.total >= total or self.closed, timeout)
            return self.total >= total

    def release(self, upto: int) -> None:
        """The reader no longer needs samples before `upto` (lets a lossless writer go on)."""
        with self._cond:
            if upto > self._floor:
                self._floor = upto
                self._cond.notify_all()

    def arrival(self, sample: int) -> float | None:
        """`time.perf_counter()` when sample index `sample - 1` was written (None if no longer known)."""
        found = None
        with self._cond:
            for total, when in reversed(self._arrivals):  # newest first: windows end in recent writes
                if total < sample:
                    break
                found = when
        return found

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class WindowFeatures:
    """Model inputs of stream windows ``[start, end)``, computed incrementally when windows are frame-aligned.

    Aligned (hop a multiple of the frame shift): a :class:`~astedge.features.StreamingFbank` is fed only
    the audio not fed before, so each hop computes only its new frames (100 per 1 s hop), and a window is
    its last frames, padded and normalized: bit-identical to ``model_input(audio[start:end])``. Otherwise
    every window is recomputed from the ring with `extractor` (numpy, or the CUDA fbank library).
    """

    def __init__(self, windowing: Windowing, extractor=None):
        self.windowing = windowing
        self.config = windowing.config
        self.extractor = extractor
        self.incremental = windowing.incremental
        self.frames_computed = 0  # frames the incremental path computed (the cost it saves shows here)
        self._stream: feats.StreamingFbank | None = None
        self._origin = self._fed = 0

    def _restart(self, start: int) -> None:
        keep = feats.num_frames(self.windowing.window, self.config) + self.windowing.hop // self.config.window_shift
        self._stream = feats.StreamingFbank(self.config, keep_frames=keep)
        self._origin = self._fed = start

    def raw(self, ring: AudioRing, start: int, end: int) -> np.ndarray | None:
        """Raw log-mel frames of the window (None when its audio was overwritten)."""
        cfg = self.config
        if not self.incremental:
            audio = ring.read(start, end)
            if audio is None:
                return None
            if self.extractor is not None:
                return self.extractor(audio)
            return feats.fbank(audio, cfg)
        if self._stream is None or start < self._origin or end < self._fed:
            self._restart(start)
        audio = ring.read(self._fed, end)
        if audio is None:  # the ring overwrote audio we had not fed yet: start over at this window
            self._restart(start)
            audio = ring.read(start, end)
            if audio is None:
                return None
        self.frames_computed += self._stream.accept(audio)
        self._fed = end
        first = (start - self._origin) // cfg.window_shift
        return self._stream.frames(first, first + feats.num_frames(end - start, cfg))

    def model_input(self, ring: AudioRing, start: int, end: int) -> np.ndarray | None:
        frames = self.raw(ring, start, end)
        if frames is None:
            return None
        return feats.normalize(feats.pad_or_crop(frames, self.config.target_length), self.config)


def raw_extractor(backend, config: FbankConfig):
    """Raw log-mel frames on the backend's device: the CUDA fbank library beside a GPU backend, else numpy."""
    from astedge.cuda_fbank import NumpyFbank, load_fbank

    if getattr(backend, "device", "cpu") == "cuda":
        return load_fbank(config, model_input=False)
    return NumpyFbank(config, model_input=False)


def _percentiles(values) -> dict | None:
    if not len(values):
        return None
    data = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(data, 50)), 3), "p99": round(float(np.percentile(data, 99)), 3),
            "mean": round(float(data.mean()), 3), "max": round(float(data.max()), 3), "count": int(data.size)}


# --- streaming ----------------------------------------------------------------------------------------

_DONE = object()


class Listener:
    """Classify a source's audio in sliding windows while it plays (see the module docstring).

    ``with Listener(backend, source, windowing) as listener: for result in listener.results(): ...``
    then ``listener.summary()``. `partial="pad"` classifies the growing, padded first window every hop
    until it is full; `duration` stops after that many seconds of audio.
    """

    def __init__(self, backend, source, windowing: Windowing, *, k: int = 5, threshold: float | None = None,
                 mask: np.ndarray | None = None, smoother: Smoother | None = None, partial: str = "wait",
                 duration: float | None = None, buffer_seconds: float = 30.0, extractor=None):
        if partial not in PARTIAL:
            raise UserError(f"--partial must be one of {', '.join(PARTIAL)}, got {partial!r}")
        self.backend, self.source, self.windowing = backend, source, windowing
        self.config = windowing.config
        self.k, self.threshold, self.mask = k, threshold, mask
        self.smoother = smoother or Smoother()
        self.partial = partial
        rate = self.config.sample_rate
        self.limit = None if duration is None else int(round(duration * rate))
        self.ring = AudioRing(windowing.window + max(4 * windowing.hop, int(buffer_seconds * rate)))
        if not windowing.incremental and extractor is None and getattr(backend, "device", "cpu") == "cuda":
            from astedge.cuda_fbank import load_fbank

            extractor = load_fbank(self.config, model_input=False)
        self.features = WindowFeatures(windowing, extractor)
        self._resampler = None
        if int(source.rate) != rate:
            import soxr

            from astedge.audio import RESAMPLER_QUALITY

            self._resampler = soxr.ResampleStream(int(source.rate), rate, 1, dtype="float32",
                                                  quality=RESAMPLER_QUALITY)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._infer, name="astedge-inference", daemon=True)
        self._stopping = False
        self._capture_done = False
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        # accounting
        self.overflows = self.invalid_samples = 0
        self.flags: collections.Counter = collections.Counter()
        self.classified = self.dropped = self.lost_windows = 0
        self._reported_overflows = self._unreported_dropped = 0
        self.inference_ms: list[float] = []
        self.window_ms: list[float] = []
        self.delay_ms: list[float] = []
        self._busy_s = 0.0
        self._started = self._ended = None

    # -- capture side (PortAudio's thread or the source's thread) --

    def callback(self, indata, frames, time_info, status) -> None:
        """sounddevice's callback signature; every source feeds audio through here."""
        try:
            if status:
                self._count_flags(status)
            if self._capture_done:
                return
            mono = to_mono(np.asarray(indata, dtype=np.float32))
            valid = np.abs(mono) <= MAX_PEAK  # False for NaN/inf and for absurd values (int16 stored as float)
            if not valid.all():  # a broken driver, plugin or file: silence the bad samples, count them
                mono = np.where(valid, mono, np.float32(0.0))
                with self._lock:
                    self.invalid_samples += int(mono.size - np.count_nonzero(valid))
            if self._resampler is not None:
                mono = self._resampler.resample_chunk(mono)
            self._write(mono)
        except BaseException as err:  # noqa: BLE001 - PortAudio would swallow it; stop and report instead
            self._error = self._error or err
            self._finish_capture(flush=False)

    def _count_flags(self, status) -> None:
        names = ("input_overflow", "input_underflow", "output_overflow", "output_underflow", "priming_output")
        hit = [n for n in names if getattr(status, n, False)]
        with self._lock:
            self.flags.update(hit or ["other"])
            if "input_overflow" in hit:
                self.overflows += 1

    def _write(self, mono: np.ndarray) -> None:
        if self.limit is not None:
            mono = mono[:max(0, self.limit - self.ring.total)]
        self.ring.write(mono, block=not self.source.live)
        if self.limit is not None and self.ring.total >= self.limit:
            self._finish_capture(flush=False)
            threading.Thread(target=self.source.stop, daemon=True).start()  # not from inside its own callback

    def finished(self) -> None:
        """The source has no more audio (end of file or pipe)."""
        self._finish_capture(flush=True)

    def _finish_capture(self, flush: bool) -> None:
        with self._lock:
            if self._capture_done:
                return
            self._capture_done = True
        if flush and self._resampler is not None:
            self._write_tail(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self.ring.close()

    def _write_tail(self, mono: np.ndarray) -> None:
        if self.limit is not None:
            mono = mono[:max(0, self.limit - self.ring.total)]
        self.ring.write(mono, block=not self.source.live)

    # -- inference side --

    def _first_end(self) -> int:
        w = self.windowing
        if self.partial == "wait":
            return w.window
        end = w.window
        while end - w.hop >= max(w.hop, self.config.window_size):
            end -= w.hop
        return end

    def _infer(self) -> None:
        w = self.windowing
        end = self._first_end()
        last_end = 0
        try:
            while not self._stopping:
                if not self.ring.wait(end, 0.1):
                    if self.ring.closed:
                        if not self._stopping:
                            self._tail(end, last_end)
                        break
                    continue
                if self.source.live and self.ring.total - end >= w.hop:  # behind: newest window wins
                    skip = (self.ring.total - end) // w.hop
                    self.dropped += skip
                    self._unreported_dropped += skip
                    end += skip * w.hop
                self._classify(max(0, end - w.window), end)
                last_end = end
                end += w.hop
                self.ring.release(max(0, end - w.window))
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread by results()
            self._error = self._error or err
        finally:
            self._ended = time.perf_counter()
            self._queue.put(_DONE)

    def _tail(self, next_end: int, last_end: int) -> None:
        total, w = self.ring.total, self.windowing
        start = max(0, next_end - w.window)
        min_tail = self.config.window_shift
        if total - start >= self.config.window_size and (total - last_end >= min_tail or last_end == 0):
            self._classify(start, total)

    def _classify(self, start: int, end: int) -> None:
        t0 = time.perf_counter()
        x = self.features.model_input(self.ring, start, end)
        if x is None:
            self.lost_windows += 1
            return
        t1 = time.perf_counter()
        logits = self.backend.run(x[None])[0]
        t2 = time.perf_counter()
        scores = self.smoother(activate(logits, self.backend.task))
        top = rank(scores, self.backend.labels, self.k, self.threshold, self.mask)
        arrived = self.ring.arrival(end)
        if self.source.live and arrived is not None:
            self.delay_ms.append((t2 - arrived) * 1e3)
        self.inference_ms.append((t2 - t1) * 1e3)
        self.window_ms.append((t2 - t0) * 1e3)
        self._busy_s += t2 - t0
        self.classified += 1
        with self._lock:
            overflows, self._reported_overflows = self.overflows - self._reported_overflows, self.overflows
        rate = self.config.sample_rate
        result = WindowResult(start / rate, end / rate, (t2 - t0) * 1e3, top, dropped=self._unreported_dropped,
                              overflows=overflows, logits=logits)
        self._unreported_dropped = 0
        self._queue.put(result)

    # -- the caller's side --

    def start(self) -> "Listener":
        self._started = time.perf_counter()
        self._thread.start()
        self.source.start(self.callback, self.finished)
        return self

    def results(self):
        """Yield each WindowResult as it is ready, until the source ends or :meth:`stop` (re-raises errors)."""
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE:
                break
            yield item
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop now (Ctrl-C): capture ends, the window in flight finishes, no tail window."""
        self._stopping = True
        self._finish_capture(flush=False)
        self.source.stop()
        self._thread.join(timeout=30)
        while True:  # drop what the caller will not read
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def close(self) -> None:
        self._finish_capture(flush=False)
        self.source.stop()
        if self._thread.is_alive():
            self._stopping = True
            self._thread.join(timeout=30)

    def __enter__(self) -> "Listener":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def summary(self) -> dict:
        """Accounting of the whole run: audio heard, windows classified/dropped, overflows, latency percentiles."""
        rate = self.config.sample_rate
        heard = self.ring.total / rate
        wall = ((self._ended or time.perf_counter()) - self._started) if self._started else 0.0
        with self._lock:
            flags = dict(self.flags)
            overflows = self.overflows
        return {
            "backend": self.backend.name, "precision": self.backend.precision,
            "source": getattr(self.source, "name", "?"), "live": bool(self.source.live),
            "source_rate": int(self.source.rate), "resampled": self._resampler is not None,
            **self.windowing.describe(),
            "audio_s": round(heard, 3), "wall_s": round(wall, 3),
            "windows": self.classified, "dropped": self.dropped, "lost": self.lost_windows,
            "overflows": overflows, "status_flags": flags, "invalid_samples": self.invalid_samples,
            "inference_ms": _percentiles(self.inference_ms), "window_ms": _percentiles(self.window_ms),
            "delay_ms": _percentiles(self.delay_ms),
            "real_time_factor": round(self._busy_s / heard, 5) if heard else None,
            # mean features + inference time per window over the hop: above 1, a live source loses windows
            "hop_load": round(float(np.mean(self.window_ms)) / (1e3 * self.windowing.hop / rate), 4)
            if self.window_ms else None,
            "frames_computed": self.features.frames_computed if self.features.incremental else None,
        }


# --- files ----------------------------------------------------------------------------------------------


@dataclass
class FileResult:
    """Every window of one file, and the clip-level mean and max over windows."""

    file: str
    seconds: float
    windows: list[WindowResult]
    mean: WindowResult
    max: WindowResult

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
    return np.stack([feats.normalize(feats.pad_or_crop(r, cfg.target_length), cfg) for r in raws])


def classify_waveform(backend, wave: np.ndarray, windowing: Windowing, *, k: int = 5, threshold: float | None = None,
                      mask: np.ndarray | None = None, batch_size: int = 8, extractor=None,
                      name: str | None = None) -> FileResult:
    """Classify mono audio at the model's rate in sliding windows, `batch_size` windows per backend call."""
    cfg, rate = windowing.config, windowing.config.sample_rate
    feats.frames_or_error(len(wave), cfg, name)
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    starts = window_starts(len(wave), windowing.window, windowing.hop, tail=True, min_tail=cfg.window_shift)
    results, all_scores = [], []
    for b in range(0, len(starts), batch_size):
        batch = starts[b:b + batch_size]
        t0 = time.perf_counter()
        logits = backend.run(window_inputs(wave, batch, windowing, extractor))
        share = (time.perf_counter() - t0) * 1e3 / len(batch)
        scores = activate(logits, backend.task)
        for s, row, score in zip(batch, logits, scores, strict=True):
            end = min(len(wave), s + windowing.window)
            results.append(WindowResult(s / rate, end / rate, share, rank(score, backend.labels, k, threshold, mask),
                                        file=name, logits=row))
            all_scores.append(score)
    stacked = np.stack(all_scores)
    total = sum(r.latency_ms for r in results)
    seconds = len(wave) / rate
    aggregates = {}
    for how, values in (("mean", stacked.mean(axis=0)), ("max", stacked.max(axis=0))):
        aggregates[how] = WindowResult(0.0, seconds, total, rank(values, backend.labels, k, threshold, mask),
                                       file=name, aggregate=how, windows=len(results))
    return FileResult(name or "", seconds, results, aggregates["mean"], aggregates["max"])


def classify_file(backend, path: str | Path, windowing: Windowing, *, max_seconds: float | None = 3600.0,
                  **options) -> FileResult:
    """:func:`classify_waveform` of an audio file (any format soundfile reads, any rate and channel count)."""
    from astedge.audio import load_audio

    wave = load_audio(path, windowing.config.sample_rate, max_seconds=max_seconds)
    return classify_waveform(backend, wave, windowing, name=str(path), **options)


# --- terminal view ----------------------------------------------------------------------------------------


def render(result: WindowResult | None, summary: dict, title: str = ""):
    """A rich renderable of the latest window: top labels with score bars, latency, running counts."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_header=False, padding=(0, 1), expand=False)
    table.add_column("label", no_wrap=True, max_width=40)
    table.add_column("bar", no_wrap=True)
    table.add_column("score", justify="right")
    width = 30
    if result is None:
        header = Text(f"{title}  waiting for the first window...", style="dim")
    else:
        header = Text(f"{title}  {result.start:7.2f}-{result.end:7.2f} s  latency {result.latency_ms:6.1f} ms")
        for score in result.top:
            filled = int(round(max(0.0, min(1.0, score.score)) * width))
            table.add_row(escape(score.label), Text("█" * filled + "·" * (width - filled), style="green"),
                          f"{score.score:.3f}")
    p = summary.get("inference_ms") or {}
    footer = Text(f"heard {summary['audio_s']:.1f} s · windows {summary['windows']} · dropped {summary['dropped']} · "
                  f"overflows {summary['overflows']}" + (f" · inference p50 {p['p50']:.1f} ms" if p else "") +
                  " · Ctrl-C stops", style="dim")
    return Group(header, table, footer)
