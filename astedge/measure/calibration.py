"""Calibrating a frame head's decision layer where the model did not train: held-out streams, then the per-class
thresholds, median filter, minimum duration and merge gap with the best DCASE event F1 there (of settings about as
good, the one that reports events soonest).

Clip maxima say little about events (a class can top a clip and still start 0.4 s late), so calibration runs the
runtime's own frame path (:class:`astedge.runtime.frames.FramePath`) over long recordings made of a held-out split's
clips back to back, whose strong labels give the true events. The model runs once per stream; the decision layer is
then replayed over the recorded frames for every setting of the grid (median filter length, minimum duration, one
threshold per class), each class scored on its own; each median length filters the frames once. Torch-free:
any backend that loads runs it (training calibrates with its best checkpoint on the torch backend).
"""

from __future__ import annotations

import numpy as np

from astedge.errors import UserError
from astedge.measure import event_metrics as em
from astedge.runtime.events import EventConfig, EventDetector
from astedge.runtime.frames import median_filtered

#: The settings tried: on-thresholds per class, median filter lengths (frames), minimum durations (seconds), then
#: for the chosen median and minimum duration the merge gaps (seconds: they join fragments of one event and move
#: offsets only, so they cost no onset latency).
THRESHOLDS = tuple(round(x, 2) for x in np.arange(0.1, 0.91, 0.1))
MEDIANS = (1, 3, 5, 7, 9)
MIN_DURATIONS = (0.0, 0.1, 0.2, 0.3)
MERGE_GAPS = (0.0, 0.16, 0.32)
#: Settings within this event F1 of the best are equally good (about one event in a hundred); of those calibration
#: keeps the one that reports events soonest: the median's look-ahead plus the minimum duration.
F1_TOLERANCE = 0.01
#: DCASE's collars: onsets within 0.2 s, offsets within max(0.2 s, 20 % of the event).
T_COLLAR, PERCENTAGE_OF_LENGTH = 0.2, 0.2


#: Held-out audio calibration listens to at most (a seeded sample of the split's clips beyond it is left out).
CALIBRATION_SECONDS = 180.0


def held_out_streams(data, split: str = "val", *, seconds: float = 60.0, total: float = CALIBRATION_SECONDS,
                     seed: int = 0, sample_rate: int = 16000, log=None) -> list[tuple[np.ndarray, list[em.Event]]]:
    """Recordings of about `seconds` each (up to `total` seconds in all), made of a split's clips back to back in a
    seeded order, with the true events their strong labels give (a clip with clip labels only counts as one event
    of its labels over its whole length; the background class is never an event). Raises UserError when the split
    has no clips."""
    from astedge.audio.decode import load_audio

    items = list(data.splits.get(split) or [])
    if not items:
        raise UserError(f"the dataset has no {split!r} split to calibrate events on")
    streams, waves, truth, at, heard = [], [], [], 0, 0
    for item in _in_stream_order(items, data, seed):
        wave = load_audio(item.path, sample_rate)
        start = at / sample_rate
        spans = item.events if item.events is not None else [(0.0, len(wave) / sample_rate, t) for t in item.targets]
        truth += [em.Event(start + on, start + off, data.labels[label]) for on, off, label in spans
                  if data.labels[label] != data.background]
        waves.append(wave)
        at += len(wave)
        heard += len(wave)
        if at >= seconds * sample_rate or heard >= total * sample_rate:
            streams.append((np.concatenate(waves).astype(np.float32), truth))
            waves, truth, at = [], [], 0
        if heard >= total * sample_rate:
            break
    if waves:
        streams.append((np.concatenate(waves).astype(np.float32), truth))
    if log:
        log(f"calibrating events on {len(streams)} held-out stream(s) of {split} clips "
            f"({sum(len(w) for w, _ in streams) / sample_rate:.0f} s, {sum(len(t) for _, t in streams)} events)")
    return streams


def _in_stream_order(items, data, seed: int):
    """The clips in a seeded order; with a background class, each clip with events followed by a background clip
    (cycling through them): events apart, as a recording has them, rather than back to back."""
    rng = np.random.default_rng(seed)
    quiet = [i for i in items if data.background is not None and i.targets == (data.labels.index(data.background),)]
    loud = [i for i in items if i not in quiet] if quiet else items
    for k, index in enumerate(rng.permutation(len(loud))):
        yield loud[int(index)]
        if quiet:
            yield quiet[k % len(quiet)]


def recorded_frames(classifier, streams) -> list[list[tuple[float, float, np.ndarray]]]:
    """Each stream's final frames (start s, end s, stitched scores) through `classifier`'s frame path, as a live
    run would make them (its hop and frame delay), before the median filter."""
    if classifier.frame_layout is None:
        raise UserError("the model has no frame head (or events are off): calibrate its windows with astedge "
                        "calibrate")
    out = []
    for wave, _ in streams:
        decision = classifier.decision(classifier.windowing(stream=True))
        decision.frames.record = frames = []
        classifier.classify_waveform(wave, stream=True, decision=decision)
        out.append(frames)
    return out


def _events(smoothed, labels, task: str, step: float, threshold: float, min_duration: float, merge_gap: float,
            mask) -> list:
    """The decision layer over recorded, median-filtered frames with one setting (every class at `threshold`)."""
    config = EventConfig(threshold=threshold, min_duration=min_duration, merge_gap=merge_gap)
    detector = EventDetector(labels, task, config, mask, widen=step / 2)
    for start, end, scores in smoothed:
        detector.update(start, end, scores)
    detector.finish()
    return [em.Event(e.onset, e.offset, e.label) for e in detector.events if e.offset is not None]


def _class_counts(truth: dict, estimated: dict, labels) -> dict:
    figures = em.event_based(truth, estimated, labels, t_collar=T_COLLAR, percentage_of_length=PERCENTAGE_OF_LENGTH)
    return {label: (c["Ntp"], c["Nsys"], c["Nref"]) for label, c in figures["class_wise"].items()}


def _f1(tp: int, nsys: int, nref: int) -> float:
    """Event F1 from counts; 0 where there are neither detections nor true events (calibration ranks, a NaN cannot)."""
    return 2 * tp / (nsys + nref) if nsys + nref else 0.0


class _Replay:
    """Recorded frames of held-out streams replayed through the decision layer, one setting at a time."""

    def __init__(self, classifier, streams, thresholds):
        self.frames = recorded_frames(classifier, streams)
        layout, self.labels = classifier.frame_layout, list(classifier.labels)
        self.step, self.task, self.thresholds = layout.step / layout.sample_rate, classifier.backend.task, thresholds
        self.mask = classifier.event_mask()
        keep = self.mask if self.mask is not None else [True] * len(self.labels)
        self.scored = [label for label, k in zip(self.labels, keep, strict=True) if k]
        self.truth = {str(k): t for k, (_, t) in enumerate(streams)}

    def best(self, smoothed, min_duration: float, merge_gap: float) -> tuple[float, dict]:
        """The micro event F1 with each class at its best threshold, and those thresholds."""
        per_class = {}  # label -> (f1, threshold, counts)
        for threshold in self.thresholds:
            estimated = {str(k): _events(f, self.labels, self.task, self.step, threshold, min_duration, merge_gap,
                                         self.mask) for k, f in enumerate(smoothed)}
            for label, (tp, nsys, nref) in _class_counts(self.truth, estimated, self.scored).items():
                f1 = _f1(tp, nsys, nref)
                if label not in per_class or f1 > per_class[label][0]:
                    per_class[label] = (f1, threshold, (tp, nsys, nref))
        tp, nsys, nref = (sum(c[2][i] for c in per_class.values()) for i in range(3))
        return _f1(tp, nsys, nref), {k: v[1] for k, v in per_class.items()}


def calibrate_events(classifier, streams, *, thresholds=THRESHOLDS, medians=MEDIANS, min_durations=MIN_DURATIONS,
                     merge_gaps=MERGE_GAPS, log=None) -> dict:
    """The decision layer's settings with the best micro event F1 on `streams` (:func:`held_out_streams`): one
    median length and minimum duration for the model (the soonest-reporting within F1_TOLERANCE of the best), one
    threshold per class (each class's best F1 there), then the merge gap that helps most.
    Returns the ``events`` entry a checkpoint carries: background, thresholds, median_frames, min_duration,
    merge_gap, and what they reached (``calibration``)."""
    replay = _Replay(classifier, streams, thresholds)
    tried, smoothed = [], {}  # (micro F1, look-ahead seconds, median, min duration, thresholds); median -> frames
    for median in medians:
        smoothed[median] = [median_filtered(f, median) for f in replay.frames]
        for min_duration in min_durations:
            micro, chosen = replay.best(smoothed[median], min_duration, 0.0)
            tried.append((micro, (median // 2) * replay.step + min_duration, median, min_duration, chosen))
    top = max(t[0] for t in tried)
    micro, _, median, min_duration, chosen = min((t for t in tried if t[0] >= top - F1_TOLERANCE),
                                                 key=lambda t: (t[1], -t[0]))
    merge_gap = 0.0
    for gap in (g for g in merge_gaps if g > 0):
        f1, picked = replay.best(smoothed[median], min_duration, gap)
        if f1 > micro:
            micro, chosen, merge_gap = f1, picked, gap
    if log:
        log(f"calibrated events: median {median} frames, min duration {min_duration:g} s, merge gap {merge_gap:g} s, "
            f"per-class thresholds; event F1 {micro:.3f} on the held-out streams")
    seconds = sum(len(w) for w, _ in streams) / classifier.backend.feature_config.sample_rate
    return {"background": classifier.background, "thresholds": chosen, "median_frames": median,
            "min_duration": min_duration, "merge_gap": merge_gap,
            "calibration": {"event_f1": round(micro, 4), "best_event_f1": round(top, 4), "streams": len(streams),
                            "seconds": round(seconds, 1), "true_events": sum(len(t) for _, t in streams),
                            "hop_seconds": classifier.windowing(True).seconds[1],
                            "collars": [T_COLLAR, PERCENTAGE_OF_LENGTH], "f1_tolerance": F1_TOLERANCE}}
