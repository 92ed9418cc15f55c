"""What a frame head learns from: per-column targets from strong labels, crops of two clips, and weak clips' pooling.

- :func:`frame_targets`: a clip's events (onset, offset, label) -> 0/1 targets for each time column of the token
  grid, with the runtime's own slots (:class:`astedge.runtime.frames.FrameLayout`): a column is on for a class when
  the class's events cover at least half of its slot; the background class is on where no other class is.
- :func:`crop_of_two`: a window made of the end of one clip and the start of another (log-mel frames are local, so
  joining frames is joining audio): events cut at the window's edges, two events in one window, a distractor beside
  an event — what a stream's windows hold and single clips do not.
- :func:`pooled`: linear-softmax pooling of frame probabilities into a clip probability, so clips with clip labels
  only still teach the frame head (multiple-instance learning, as DCASE's weakly labelled training).
"""

from __future__ import annotations

import numpy as np

from astedge.runtime.frames import FrameLayout

Events = tuple[tuple[float, float, int], ...]


def frame_targets(events: Events, layout: FrameLayout, num_labels: int, background: int | None = None) -> np.ndarray:
    """Targets ``[columns, num_labels]`` of a window whose events are `events` (seconds from the window's start)."""
    rate, step = layout.sample_rate, layout.step / layout.sample_rate
    starts = (layout.offset + np.arange(layout.columns) * layout.step) / rate
    targets = np.zeros((layout.columns, num_labels), np.float32)
    for onset, offset, label in events:
        cover = np.clip(np.minimum(offset, starts + step) - np.maximum(onset, starts), 0.0, None) / step
        targets[cover >= 0.5, label] = 1.0
    if background is not None:
        others = np.delete(targets, background, axis=1)
        targets[:, background] = (others.max(axis=1) == 0).astype(np.float32)
    return targets


def crop_of_two(first: np.ndarray, first_events: Events, second: np.ndarray, second_events: Events, split: int,
                shift_seconds: float) -> tuple[np.ndarray, Events]:
    """Log-mel frames of the last `split` frames of `first` then the first ``len(first) - split`` of `second`, and
    their events there (cut at the edges; `shift_seconds`: seconds per frame)."""
    n = len(first)
    frames = np.concatenate([first[n - split:], second[:n - split]])
    end = n * shift_seconds
    moved_first = [(on - (n - split) * shift_seconds, off - (n - split) * shift_seconds, label)
                   for on, off, label in first_events]
    moved_second = [(on + split * shift_seconds, off + split * shift_seconds, label) for on, off, label in second_events]
    kept = tuple((max(0.0, on), min(end, off), label) for on, off, label in moved_first + moved_second
                 if off > 0.0 and on < end and min(end, off) > max(0.0, on))
    return frames, kept


def pooled(probabilities, valid):
    """Linear-softmax pooling ``sum p^2 / sum p`` over the valid columns of ``[B, columns, classes]`` probabilities
    (`valid` ``[B, columns]`` 0/1): a clip probability that follows its loudest frames (torch tensors)."""
    weights = valid.unsqueeze(-1)
    return (probabilities.square() * weights).sum(1) / (probabilities * weights).sum(1).clamp_min(1e-7)
