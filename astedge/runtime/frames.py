"""Frames, not windows: one timeline of per-frame scores from overlapping windows, for frame-accurate events.

A model with a frame head scores every time column of its token grid (one column per ``tstride`` input frames,
80 ms for the demo model) besides the clip. Windows overlap, so most frames are scored by several windows:

    window k (starts on the frame grid) --> its columns' sigmoid scores, the valid ones (not over padding)
      -> :class:`FrameTimeline`: per frame slot, the mean over the windows that covered it so far
      -> final `delay` seconds behind the newest audio (later windows no longer change it)
      -> :class:`MedianFilter` per class (causal: it waits (N - 1) / 2 frames for the frames after)
      -> the decision layer (:class:`astedge.runtime.events.EventDetector`), one frame at a time.

The file path (``classify``) feeds its windows through the same objects in the same order as a live stream
(``listen``), so both report the same events for the same audio. numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from astedge.errors import UserError
from astedge.runtime.scores import activate


@dataclass(frozen=True)
class FrameLayout:
    """Where a model's frame columns lie in its input window, in samples at the model's rate.

    Column ``j`` sees input frames ``[j * stride, j * stride + width)``; frame ``i`` sees samples
    ``[i * shift, i * shift + length)``. A column's slot on the timeline is ``step`` samples wide, centred on its
    receptive field: ``[offset + j * step, offset + (j + 1) * step)`` from the window's start.
    """

    columns: int  # time columns of the token grid (T')
    stride: int  # input frames between columns (the patch time stride)
    width: int  # input frames a column sees (the patch's time size)
    shift: int  # samples between input frames (160 at 16 kHz)
    length: int  # samples in an input frame (400 at 16 kHz)
    sample_rate: int

    @classmethod
    def of(cls, model_config, feature_config) -> "FrameLayout":
        """The layout of a :class:`~astedge.model.config.ModelConfig` with a frame head under its fbank config."""
        return cls(model_config.grid[1], model_config.tstride, model_config.patch_size[1],
                   feature_config.window_shift, feature_config.window_size, feature_config.sample_rate)

    @classmethod
    def from_dict(cls, data: dict) -> "FrameLayout":
        return cls(**{k: int(data[k]) for k in ("columns", "stride", "width", "shift", "length", "sample_rate")})

    def to_dict(self) -> dict:
        """What ``astedge.json`` records (``frames``), with the frame rate in seconds for readers."""
        return {**asdict(self), "hop_seconds": self.step / self.sample_rate,
                "first_centre_seconds": (self.offset + self.step / 2) / self.sample_rate}

    @property
    def step(self) -> int:
        """Samples between two frame slots."""
        return self.stride * self.shift

    @property
    def offset(self) -> int:
        """Start of column 0's slot relative to the window's start (samples): its receptive field's centre - step / 2."""
        centre2 = self.length + (self.width - 1) * self.shift  # twice the centre of column 0's receptive field
        return (centre2 - self.step) // 2

    def valid_columns(self, samples: int) -> int:
        """How many columns of a window holding `samples` real samples see no padding (at least 1)."""
        return self.columns_seeing(0 if samples < self.length else 1 + (samples - self.length) // self.shift)

    def columns_seeing(self, frames: int) -> int:
        """How many columns of a window of `frames` real input frames see no padding (at least 1)."""
        return int(np.clip((frames - self.width) // self.stride + 1, 1, self.columns))


def frame_activation(task: str, background: str | None) -> str:
    """How a frame head's logits become scores: a softmax over the classes for single-label data with a background
    class (each frame is one class, "nothing" included), else a sigmoid per class (events may overlap). Training
    and the runtime both ask here."""
    return "softmax" if task == "multiclass" and background else "sigmoid"


def split_output(rows: np.ndarray, classes: int, layout: FrameLayout | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A model's one output ``[B, classes * (1 + columns)]`` as (clip logits ``[B, classes]``, frame logits
    ``[B, columns, classes]``, None without a frame head): the exported layout (``ASTModel.forward_flat``)."""
    rows = np.asarray(rows)
    width = classes * (1 + (layout.columns if layout is not None else 0))
    if rows.ndim != 2 or rows.shape[1] != width:
        raise UserError(f"the model's output has shape {list(rows.shape)}, expected [batch, {width}] for {classes} "
                        f"classes{f' and {layout.columns} frame columns' if layout is not None else ''}")
    if layout is None:
        return rows, None
    return rows[:, :classes], rows[:, classes:].reshape(len(rows), layout.columns, classes)


class FrameTimeline:
    """Per-frame mean scores of the windows that covered each frame, released once final.

    Windows must start on the frame grid (their start a multiple of :attr:`FrameLayout.step`): then a column of
    one window and a column of another are the same slot. :meth:`add` takes a window's scores; :meth:`release`
    returns the frames that end at least `delay` samples before the newest audio (no later window is counted for
    them), and :meth:`flush` the rest when the audio ends. Frames no window covered (none before the first
    window's first column) are never released.
    """

    def __init__(self, layout: FrameLayout, classes: int, delay: int):
        if delay < 0:
            raise UserError(f"the frame finalization delay must be >= 0 samples, got {delay}")
        self.layout, self.classes, self.delay = layout, classes, int(delay)
        self._sums: dict[int, np.ndarray] = {}
        self._counts: dict[int, int] = {}
        self._next: int | None = None  # the next slot to release

    def add(self, start: int, scores: np.ndarray, valid: int | None = None) -> None:
        """Scores ``[columns, classes]`` of the window starting at sample `start`; its first `valid` columns count."""
        step = self.layout.step
        if start % step:
            raise UserError(f"a window at sample {start} is not on the {step}-sample frame grid: use a hop that is a "
                            f"multiple of the model's frame step ({step / self.layout.sample_rate:g} s)")
        first = start // step
        if self._next is None:
            self._next = first
        for j in range(self.layout.columns if valid is None else valid):
            slot = first + j
            if slot < self._next:
                continue  # already released: a late window no longer changes it
            if slot in self._sums:
                self._sums[slot] += scores[j]
                self._counts[slot] += 1
            else:
                self._sums[slot] = np.array(scores[j], dtype=np.float64)
                self._counts[slot] = 1

    def slot_span(self, slot: int) -> tuple[float, float]:
        """Start and end (seconds) of a slot."""
        lay = self.layout
        start = lay.offset + slot * lay.step
        return max(0, start) / lay.sample_rate, (start + lay.step) / lay.sample_rate

    def release(self, newest: int) -> list[tuple[float, float, np.ndarray]]:
        """The frames (start s, end s, mean scores) that end at least `delay` samples before sample `newest`."""
        lay, out = self.layout, []
        while self._skip_gap() and lay.offset + (self._next + 1) * lay.step + self.delay <= newest:
            out.append(self._pop())
        return out

    def flush(self) -> list[tuple[float, float, np.ndarray]]:
        """Every frame still held, in order (the audio ended)."""
        out = []
        while self._skip_gap():
            out.append(self._pop())
        return out

    def _skip_gap(self) -> bool:
        """Whether a frame is held; frames no window covered (a live stream dropped windows) are passed over."""
        if self._next is not None and self._next not in self._sums and self._sums:
            self._next = min(self._sums)
        return self._next is not None and self._next in self._sums

    def _pop(self) -> tuple[float, float, np.ndarray]:
        slot = self._next
        mean = self._sums.pop(slot) / self._counts.pop(slot)
        self._next = slot + 1
        return (*self.slot_span(slot), mean)


class MedianFilter:
    """Per-class median over `size` consecutive frames, centred, for a stream: frame ``i`` leaves once frame
    ``i + (size - 1) // 2`` came in; at the end the edges repeat (as ``scipy.ndimage.median_filter(mode="nearest")``
    over the whole sequence, exactly). `size` 1 passes frames through."""

    def __init__(self, size: int = 1):
        if size < 1 or size % 2 == 0:
            raise UserError(f"the median filter's length must be an odd number of frames >= 1, got {size}")
        self.size, self.half = size, size // 2
        self._frames: list[tuple[float, float, np.ndarray]] = []
        self._emitted = 0

    def _median(self, index: int) -> np.ndarray:
        n = len(self._frames)
        rows = [self._frames[min(max(k, 0), n - 1)][2] for k in range(index - self.half, index + self.half + 1)]
        return np.median(np.stack(rows), axis=0)

    def _emit(self, upto: int) -> list[tuple[float, float, np.ndarray]]:
        out = []
        while self._emitted < upto:
            start, end, _ = self._frames[self._emitted]
            out.append((start, end, self._median(self._emitted)))
            self._emitted += 1
        keep = max(0, self._emitted - self.half)  # what later medians still read
        if keep > 0:
            del self._frames[:keep]
            self._emitted -= keep
        return out

    def push(self, frames: list[tuple[float, float, np.ndarray]]) -> list[tuple[float, float, np.ndarray]]:
        """Take frames in order; return the filtered frames that are complete."""
        self._frames += frames
        return self._emit(max(self._emitted, len(self._frames) - self.half))

    def flush(self) -> list[tuple[float, float, np.ndarray]]:
        return self._emit(len(self._frames))


def median_filtered(frames: list[tuple[float, float, np.ndarray]], size: int) -> list[tuple[float, float, np.ndarray]]:
    """A whole recorded sequence of frames through a :class:`MedianFilter` of `size`: what a stream's filter emits."""
    median = MedianFilter(size)
    return median.push(list(frames)) + median.flush()


class FramePath:
    """A frame head's route from windows to events, for one file or stream: each window's frame scores (`activation`:
    :func:`frame_activation`) into the :class:`FrameTimeline`, final frames through the :class:`MedianFilter`, then the decision layer (an
    :class:`~astedge.runtime.events.EventDetector` whose events span whole frames). Windows come in order; an
    event's ``first_detected_at`` is the newest audio when its frame was final."""

    def __init__(self, layout: FrameLayout, detector, *, median: int = 1, delay: float = 0.0,
                 activation: str = "sigmoid"):
        self.layout, self.detector, self.activation = layout, detector, activation
        self.timeline = FrameTimeline(layout, len(detector.labels), int(round(delay * layout.sample_rate)))
        self.median = MedianFilter(median)
        self._end = 0.0  # the newest window's end
        self.record: list | None = None  # a list to keep every final frame in, before the median (calibration)

    def add(self, start: float, end: float, frame_logits: np.ndarray) -> list[dict]:
        """The window [start, end) (seconds)'s frame logits ``[columns, classes]``; returns the event records of the
        frames it made final."""
        rate = self.layout.sample_rate
        first, last = int(round(start * rate)), int(round(end * rate))
        self._end = end
        scores = activate(frame_logits, "multiclass" if self.activation == "softmax" else "multilabel")
        self.timeline.add(first, scores, self.layout.valid_columns(last - first))
        return self._decide(self.median.push(self._kept(self.timeline.release(last))), end)

    def finish(self, end: float | None = None) -> list[dict]:
        """The audio ended at `end` seconds (default: the last window's end): the frames still held, then the end
        records of open events."""
        end = self._end if end is None else end
        frames = self.median.push(self._kept(self.timeline.flush())) + self.median.flush()
        return self._decide(frames, end) + self.detector.finish(end)

    def _kept(self, frames: list) -> list:
        if self.record is not None:
            self.record.extend(frames)
        return frames

    def _decide(self, frames, decided_at: float) -> list[dict]:
        out = []
        for start, end, scores in frames:
            out += self.detector.update(start, end, scores, decided_at)
        return out
