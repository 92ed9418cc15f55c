"""Events, not windows: the decision layer that turns per-window scores into sound events with timestamps.

One bark heard in ten overlapping 10 s windows is one event here. Per class, window after window:

    smoothed scores (:class:`astedge.runtime.scores.Smoother`: EMA, or a median or max over the last N windows)
      -> on/off thresholds (one global, per class from a file, or calibrated; hysteresis: on >= on, off < off)
      -> N-of-M confirmation (the class must be on in N of the last M windows) and a minimum duration
      -> an event: ``start`` when confirmed, ``end`` once the class stayed off for the merge gap
         (a gap shorter than that joins two detections into one event).

A window's scores describe its audio ``[start, end)``; an event's onset and offset are the centres of its
first and last windows above the threshold (for a sound that fills half a window, that is where it
starts), moved back by the smoothing's lag (a median or EMA over N windows answers (N - 1) / 2 windows
late; a max over N windows rises at once and falls N - 1 windows late: no lag at onsets, that lag at
offsets). An event already on in the stream's first window starts where the audio starts, and one still on
in its last window ends where the audio ends: no window is centred earlier or later than that. A window
classifier fires before a sound fills half of it, so its on-windows' centres reach beyond the sound;
``trim`` (seconds, chosen on a labelled stream with ``astedge evaluate``) moves onsets later and
offsets earlier by that much. ``min_duration`` applies to the trimmed event, and an event without length
(one on-window, or one that trimming leaves empty) is never reported. ``first_detected_at`` is when the
event was confirmed: the end of the confirming window in audio time (what decision latency is measured
from) and the wall clock. Multi-label models may have overlapping events of different classes;
single-label (softmax) models one at a time: a running event holds while its class stays above its
off-threshold, otherwise only the top class can be on. Torch-free and shared by ``listen``, ``classify``
and ``evaluate``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astedge.errors import UserError
from astedge.files import atomic_write, read_json
from astedge.timing import utc_now

#: 2: each class's threshold is kept once, in "thresholds" ("classes" holds what it reaches); 1 kept it in both.
THRESHOLDS_FORMAT = "2"


@dataclass(frozen=True)
class EventConfig:
    """How windows become events (see the module docstring)."""

    threshold: float = 0.5  # on-threshold of every class without its own
    off_ratio: float = 0.8  # off-threshold = on-threshold x this (hysteresis; 1.0: none)
    thresholds: dict = field(default_factory=dict)  # label -> on-threshold
    confirm: int = 1  # N of ...
    confirm_window: int = 1  # ... the last M windows must be on to start an event
    min_duration: float = 0.0  # seconds: shorter detections (after trimming) are not reported
    merge_gap: float = 0.0  # seconds: a class off for less than this continues its event
    trim: float = 0.0  # seconds: onsets later and offsets earlier by this (a window fires before the sound fills half)

    def __post_init__(self):
        problems = []
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"--threshold must be in [0, 1], got {self.threshold:g}")
        if not 0.0 < self.off_ratio <= 1.0:
            problems.append(f"the off-threshold ratio must be in (0, 1], got {self.off_ratio}")
        if not 1 <= self.confirm <= self.confirm_window:
            problems.append(f"--confirm N/M needs 1 <= N <= M, got {self.confirm}/{self.confirm_window}")
        if self.min_duration < 0 or self.merge_gap < 0 or not self.trim >= 0:
            problems.append("--min-duration, --merge-gap and --trim must be >= 0")
        if problems:
            raise UserError("; ".join(problems))

    def on_thresholds(self, labels) -> np.ndarray:
        """Each class's on-threshold, in the head's order."""
        return np.array([float(self.thresholds.get(label, self.threshold)) for label in labels])


def parse_confirm(text: str | None) -> tuple[int, int]:
    """``--confirm 2/3`` -> (2, 3); ``2`` -> (2, 2); None -> (1, 1)."""
    if not text:
        return 1, 1
    n, _, m = str(text).partition("/")
    if not n.isdigit() or (m and not m.isdigit()):
        raise UserError(f"--confirm expects N/M such as 2/3, got {text!r}")
    return int(n), int(m or n)


@dataclass
class Event:
    """One detected event; ``offset`` is None while it lasts."""

    label: str
    index: int
    onset: float
    first_detected_at: float  # audio seconds: the end of the confirming window
    first_detected_wall: str  # ISO UTC time when it was confirmed
    peak_score: float
    offset: float | None = None
    file: str | None = None

    def record(self, kind: str) -> dict:
        """The ``{"type": "event"}`` record printed when the event starts (``kind="start"``) or ends (``"end"``)."""
        data = {"type": "event", "event": kind, **({"file": self.file} if self.file is not None else {}),
                "label": self.label, "index": self.index, "onset": round(self.onset, 3)}
        if kind == "end":
            data["offset"] = round(self.offset, 3)
            data["duration"] = round(self.offset - self.onset, 3)
        data.update(peak_score=round(self.peak_score, 6), first_detected_at=round(self.first_detected_at, 3),
                    first_detected_wall=self.first_detected_wall)
        return data


class _Track:
    """One class's state: its recent on/off history and the event it may be in."""

    def __init__(self, confirm_window: int):
        self.recent: list[bool] = []
        self.centres: list[float] = []  # centres of the recent windows, for the onset of a confirmed run
        self.confirm_window = confirm_window
        self.event: Event | None = None
        self.candidate_peak = 0.0
        self.run_start: float | None = None  # centre of the first on-window of the current run
        self.last_on: float | None = None  # centre of the last window above the off-threshold

    @property
    def idle(self) -> bool:
        """In no event, no run begun, no recent on-window: a window below threshold changes nothing."""
        return self.event is None and not self.recent and self.run_start is None


class EventDetector:
    """Feed it each window's (smoothed) scores in order; it returns the event records that window completes."""

    def __init__(self, labels, task: str, config: EventConfig | None = None, mask: np.ndarray | None = None,
                 file: str | None = None, lag: float | tuple[float, float] = 0.0, widen: float = 0.0):
        """`lag`: seconds by which the scores fed in answer late, at onsets and at offsets (a pair:
        :attr:`astedge.runtime.scores.Smoother.lags` x the hop; one number: both); timestamps are moved back by it.
        `widen`: seconds an on-window's extent reaches beyond its centre for the event's bounds (frames: half a
        frame, so an event spans its frames whole; windows: 0, their centres)."""
        self.labels, self.task = list(labels), task
        self.onset_lag, self.offset_lag = (float(v) for v in (lag if isinstance(lag, tuple) else (lag, lag)))
        self._first_start: float | None = None  # the stream's first window start
        self._last: tuple[float, float] | None = None  # (offset centre, end) of the latest window
        self.config = config or EventConfig()
        self.trim = self.config.trim - float(widen)  # onsets later and offsets earlier by this (negative: wider)
        self.on = self.config.on_thresholds(self.labels)
        self.off = self.on * self.config.off_ratio
        self.mask = np.ones(len(self.labels), bool) if mask is None else np.asarray(mask, bool)
        self.file = file
        self.tracks = [_Track(self.config.confirm_window) for _ in self.labels]
        self.events: list[Event] = []  # every event started so far, in start order

    def update(self, start: float, end: float, scores: np.ndarray, decided_at: float | None = None) -> list[dict]:
        """The start and end records this window (or frame) [start, end) (seconds of audio) causes; `decided_at`: the
        audio time at which its scores were known (default `end`), an event's ``first_detected_at``."""
        scores = np.asarray(scores, dtype=np.float64)
        first = self._first_start is None
        if first:
            self._first_start = start
        middle = 0.5 * (start + end)
        centres = (max(self._first_start, middle - self.onset_lag), max(self._first_start, middle - self.offset_lag))
        self._last = (centres[1], end)
        above_on = (scores >= self.on) & self.mask
        above_off = (scores >= self.off) & self.mask
        if not above_off.any() and all(track.idle for track in self.tracks):
            return []  # every class idle and staying so (most frames of a quiet stream)
        if self.task == "multiclass":  # one event at a time: the running one while it holds, else the top class
            holder = next((i for i, t in enumerate(self.tracks) if t.event is not None and above_off[i]), None)
            top = np.zeros_like(above_on)
            top[holder if holder is not None else int(np.argmax(np.where(self.mask, scores, -np.inf)))] = True
            above_on &= top
            above_off &= top
        out = []
        for index in range(len(self.labels)):
            track = self.tracks[index]
            if track.idle and not above_on[index]:
                continue  # idle class: nothing to do (the common case for 527 classes)
            out += self._step(index, track, start, end if decided_at is None else decided_at, centres,
                              float(scores[index]), bool(above_on[index]), bool(above_off[index]), first)
        if self.task == "multiclass":  # a new event may only start once the previous one ended
            starts = [r for r in out if r["event"] == "start"]
            ends = [r for r in out if r["event"] == "end"]
            out = ends + starts
        return out

    def _step(self, index: int, track: _Track, start: float, decided_at: float, centres: tuple[float, float],
              score: float, on: bool, still: bool, first: bool) -> list[dict]:
        """One class's window: `centres` are the window's centre moved back by the onset lag and by the offset lag;
        `decided_at`: when its scores were known (an event's first_detected_at)."""
        cfg, out = self.config, []
        if track.event is not None:  # in an event: hysteresis, then the merge gap
            if still:
                track.last_on = centres[1]
                track.event.peak_score = max(track.event.peak_score, score)
            elif centres[1] - track.last_on > cfg.merge_gap:  # no detection within the gap can continue it any more
                out.append(self._close(index, track))
            return out
        track.recent = (track.recent + [on])[-cfg.confirm_window:]
        if on:
            if track.run_start is None:
                track.run_start = start if first else centres[0]  # on from the first window: with the audio
                track.candidate_peak = 0.0
            track.candidate_peak = max(track.candidate_peak, score)
            track.last_on = centres[1]
        elif not any(track.recent):
            track.run_start, track.recent = None, []  # idle again
        if track.run_start is not None and sum(track.recent) >= cfg.confirm:
            onset = round(track.run_start if track.run_start == self._first_start else track.run_start + self.trim, 3)
            offset = round(track.last_on - self.trim, 3)  # milliseconds, as records and CSV files carry them
            if offset > onset and offset - onset >= cfg.min_duration - 1e-9:  # the trimmed event is long enough
                track.event = Event(self.labels[index], index, onset, decided_at, _wall_now(), track.candidate_peak,
                                    file=self.file)
                self.events.append(track.event)
                out.append(track.event.record("start"))
        return out

    def _close(self, index: int, track: _Track, audio_end: float | None = None) -> dict:
        """End the track's event at its last on-window (trimmed), or at `audio_end` when it lasted to the end."""
        event = track.event
        offset = audio_end if audio_end is not None else track.last_on - self.trim
        event.offset = max(round(offset, 3), event.onset)
        track.event, track.run_start, track.recent = None, None, []
        return event.record("end")

    def finish(self, end: float | None = None) -> list[dict]:
        """End every open event (the audio ended at `end`, default the last window's end); returns their end records.
        An event still on in the last window ends with the audio."""
        out = []
        for index, track in enumerate(self.tracks):
            if track.event is None:
                continue
            lasted = self._last is not None and track.last_on == self._last[0]
            out.append(self._close(index, track, (self._last[1] if end is None else end) if lasted else None))
        return out


def _wall_now() -> str:
    """ISO UTC time to the millisecond: when a detection was made (latency is in milliseconds)."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class EventHook:
    """Runs a shell command per event record (the record as JSON on its stdin), on its own worker thread.

    Never blocks the caller (capture and inference go on): records wait in a bounded queue, and when it is
    full the newest is dropped and counted. A command that fails (non-zero exit, timeout, cannot start) is
    counted and the next one runs.
    """

    def __init__(self, command: str, queue_size: int = 64, timeout: float = 30.0):
        import queue
        import threading

        self.command, self.timeout = command, timeout
        self.run = self.failed = self.dropped = 0
        self.last_error: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._work, name="astedge-on-event", daemon=True)
        self._thread.start()

    def submit(self, record: dict) -> None:
        import queue

        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _work(self) -> None:
        import subprocess

        while True:
            record = self._queue.get()
            if record is None:
                return
            try:
                done = subprocess.run(self.command, shell=True, input=json.dumps(record) + "\n", text=True,
                                      capture_output=True, timeout=self.timeout)
                if done.returncode != 0:
                    self.failed += 1
                    self.last_error = f"exit status {done.returncode}: {done.stderr.strip()[-200:]}"
            except (OSError, subprocess.SubprocessError) as err:
                self.failed += 1
                self.last_error = f"{type(err).__name__}: {err}"
            self.run += 1

    def close(self, wait: float = 10.0) -> dict:
        """Let queued commands finish (up to `wait` seconds), then report what happened."""
        import queue

        try:
            self._queue.put(None, timeout=wait)
        except queue.Full:
            pass
        self._thread.join(timeout=wait)
        return {"command": self.command, "run": self.run, "failed": self.failed, "dropped": self.dropped,
                "last_error": self.last_error}


#: The columns of an events CSV (``file`` before them when the events are of named files) and their formats.
CSV_COLUMNS = {"onset": ".3f", "offset": ".3f", "label": "", "peak_score": ".6f", "first_detected_at": ".3f"}


def write_events_csv(path: str | Path, records: list[dict]) -> Path:
    """Ended events (their ``"end"`` records, :meth:`Event.record`) as ``[file,]onset,offset,label,peak_score,
    first_detected_at`` CSV, atomically: the columns are the records' own fields, and the file reads back as
    ``astedge evaluate --truth``."""
    import csv
    import io

    columns = {**({"file": ""} if any("file" in r for r in records) else {}), **CSV_COLUMNS}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for record in records:
        writer.writerow([format(record[column], spec) for column, spec in columns.items()])
    with atomic_write(path, "w") as handle:
        handle.write(buffer.getvalue())
    return Path(path)


# --- thresholds files ---------------------------------------------------------------------------------------

def read_thresholds(path: str | Path, labels) -> dict[str, float]:
    """Per-class thresholds from ``astedge calibrate``'s JSON (or a plain ``{label: threshold}`` object).

    Every label must be one of the model's and every value a number in [0, 1]: one line naming the file and
    the entry otherwise. A file of format 1 also kept each threshold in its "classes" rows: one that differs from
    "thresholds" (an edit to one copy) is refused rather than ignored.
    """
    path = Path(path)
    data = read_json(path, "thresholds file")
    table = data.get("thresholds", data) if isinstance(data, dict) else None
    if not isinstance(table, dict) or not table:
        raise UserError("holds no thresholds (expected {\"thresholds\": {label: value, ...}})", path)
    rows = data.get("classes") if "thresholds" in data else None
    for label, row in (rows.items() if isinstance(rows, dict) else ()):
        copy, value = row.get("threshold") if isinstance(row, dict) else None, table.get(label)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (copy, value))
        if numbers and not math.isclose(copy, value, abs_tol=1e-6):  # format 1 rounded only "thresholds"
            raise UserError(f"the threshold of {label!r} is {table[label]!r} in \"thresholds\" but {copy!r} in "
                            "\"classes\": keep the one you mean in \"thresholds\" (the only copy astedge reads)", path)
    return check_thresholds(table, labels, path)


def check_thresholds(table: dict, labels, path: str | Path | None = None) -> dict[str, float]:
    """`table` ({label: threshold}) as floats, or a UserError naming the entry (and `path`, where it came from) that
    is not a label of the model or not a number in [0, 1]."""
    known = set(labels)
    out = {}
    for label, value in table.items():
        if label not in known:
            import difflib

            close = difflib.get_close_matches(label, list(labels), n=1)
            raise UserError(f"threshold for {label!r}, which is not a label of this model"
                            + (f" (did you mean {close[0]!r}?)" if close else ""), path)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 <= value <= 1.0:
            raise UserError(f"threshold for {label!r} is {value!r}; thresholds are numbers in [0, 1]", path)
        out[label] = float(value)
    return out


def write_thresholds(path: str | Path, thresholds: dict[str, float], **description) -> Path:
    """``{"format", "thresholds": {label: value}, ...description}`` as JSON, atomically."""
    data = {"astedge_thresholds": THRESHOLDS_FORMAT, "created": utc_now(), **description,
            "thresholds": {k: round(float(v), 6) for k, v in thresholds.items()}}
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return Path(path)


def calibrate(scores: np.ndarray, targets: np.ndarray, labels, *, target_precision: float | None = None) -> dict:
    """Per-class thresholds from clip scores ``[N, C]`` and 0/1 targets: the F1-maximizing threshold, or the
    lowest threshold that reaches `target_precision` (the most recall at that precision).

    Returns ``{"thresholds": {label: t}, "classes": {label: {precision, recall, f1, positives}}}`` (what each class
    reaches at its threshold); classes without positives keep no threshold (the global one applies).
    """
    thresholds, report = {}, {}
    for c, label in enumerate(labels):
        truth = targets[:, c] > 0.5
        positives = int(truth.sum())
        if positives == 0:
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        ranked, hits = scores[order, c], truth[order]
        tp = np.cumsum(hits)
        predicted = np.arange(1, len(ranked) + 1)
        precision, recall = tp / predicted, tp / positives
        f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        distinct = np.r_[ranked[1:] < ranked[:-1], True]  # cut only between different scores
        if target_precision is None:
            candidates = np.flatnonzero(distinct)
            best = candidates[np.argmax(f1[candidates])]
        else:
            ok = np.flatnonzero(distinct & (precision >= target_precision))
            best = ok[-1] if len(ok) else int(np.flatnonzero(distinct)[0])
        value = float(ranked[best]) if best + 1 >= len(ranked) else float(0.5 * (ranked[best] + ranked[best + 1]))
        thresholds[label] = min(1.0, max(0.0, value))
        report[label] = {"precision": float(precision[best]),
                         "recall": float(recall[best]), "f1": float(f1[best]), "positives": positives}
    return {"thresholds": thresholds, "classes": report}
