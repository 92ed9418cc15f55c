"""Live streams: classify a microphone, a replayed file or stdin in sliding windows while it plays.

Windows and results are :mod:`astedge.runtime.windows`'; scores :mod:`astedge.runtime.scores`'. No torch here.

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
import queue
import threading
import time

import numpy as np

from astedge.features import fbank as feats
from astedge.audio.decode import MAX_PEAK, to_mono
from astedge.errors import UserError
from astedge.runtime.backends import OpensStreams
from astedge.runtime.frames import split_output
from astedge.runtime.scores import Smoother
from astedge.timing import percentiles
from astedge.runtime.windows import Decision, Windowing

PARTIAL = ("wait", "pad")


def check_partial(partial: str) -> str:
    """Before a stream's first full window: "wait" for it, or "pad" (classify the growing window every hop)."""
    if partial not in PARTIAL:
        raise UserError(f"--partial must be one of {', '.join(PARTIAL)}, got {partial!r}")
    return partial


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

    Aligned (hop a multiple of the frame shift): a :class:`~astedge.features.fbank.StreamingFbank` is fed only
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
            return self.extractor(audio) if self.extractor is not None else feats.fbank(audio, cfg)
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
        return feats.window_input(frames, self.config)


_DONE = object()


class Listener:
    """Classify a source's audio in sliding windows while it plays (see the module docstring).

    ``with Listener(backend, source, windowing) as listener: for result in listener.results(): ...``
    then ``listener.summary()``. `partial="pad"` classifies the growing, padded first window every hop
    until it is full; `duration` stops after that many seconds of audio.
    """

    def __init__(self, backend, source, windowing: Windowing, *, k: int = 5, threshold: float | None = None,
                 mask: np.ndarray | None = None, smoother: Smoother | None = None, partial: str = "wait",
                 duration: float | None = None, buffer_seconds: float = 30.0, extractor=None, detector=None,
                 decision: Decision | None = None):
        check_partial(partial)
        self.backend, self.source, self.windowing = backend, source, windowing
        self.config = windowing.config
        # what each window becomes (a Classifier's decision; else one from the parts: the detector,
        # astedge.runtime.events.EventDetector, is fed the smoothed scores of each window)
        self.decision = decision or Decision(backend.labels, backend.task, k, threshold, mask, smoother or Smoother(),
                                             detector)
        self.partial = partial
        rate = self.config.sample_rate
        self.limit = None if duration is None else int(round(duration * rate))
        self.ring = AudioRing(windowing.window + max(4 * windowing.hop, int(buffer_seconds * rate)))
        # A backend that keeps windows on its device (TensorRT + CUDA fbank) computes each hop's frames there
        # and takes audio, not features (astedge.features.device_pipeline); None: features on the host, with
        # `extractor` (numpy when None) where windows are not frame-aligned.
        self.device_stream = backend.open_stream(windowing) if isinstance(backend, OpensStreams) else None
        self.features = WindowFeatures(windowing, extractor)
        self._resampler = None
        if int(source.rate) != rate:
            import soxr

            from astedge.audio.decode import RESAMPLER_QUALITY

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
        frames = None
        if self.device_stream is not None:  # audio in, logits out: features never leave the device
            row = self.device_stream.classify(self.ring.read, start, end)
            if row is None:
                self.lost_windows += 1
                return
            t1 = t0
            logits, frames = (part[0] if part is not None else None for part in
                              split_output(row[None], len(self.backend.labels), self.backend.frame_layout))
        else:
            x = self.features.model_input(self.ring, start, end)
            if x is None:
                self.lost_windows += 1
                return
            t1 = time.perf_counter()
            if self.decision.wants_frames:
                logits, frames = (part[0] for part in self.backend.run_frames(x[None]))
            else:
                logits = self.backend.run(x[None])[0]
        t2 = time.perf_counter()
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
        result = self.decision(start / rate, end / rate, logits, (t2 - t0) * 1e3, frame_logits=frames,
                               dropped=self._unreported_dropped, overflows=overflows)
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

    def finish_events(self) -> list[dict]:
        """The end records of the events still open when the stream stopped (call after :meth:`results`)."""
        return self.decision.finish()

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
        if self.device_stream is not None and not self._thread.is_alive():
            self.device_stream.close()

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
            "inference_ms": percentiles(self.inference_ms), "window_ms": percentiles(self.window_ms),
            "delay_ms": percentiles(self.delay_ms),
            "real_time_factor": round(self._busy_s / heard, 5) if heard else None,
            # mean features + inference time per window over the hop: above 1, a live source loses windows
            "hop_load": round(float(np.mean(self.window_ms)) / (1e3 * self.windowing.hop / rate), 4)
            if self.window_ms else None,
            "frames_computed": (self.device_stream.frames_computed if self.device_stream is not None
                                else self.features.frames_computed if self.features.incremental else None),
            **({"events": len(self.decision.detected)} if self.decision.detects else {}),
        }
