"""How good a model is on the user's labelled audio: clip accuracy / mAP, per-class thresholds, and events.

- :func:`score_clips`: every clip of a dataset split through a classifier or any backend (clip score = the
  maximum over its windows), with its targets; :func:`clip_metrics` turns that into accuracy or mAP.
- :func:`evaluate_clips`: a dataset's clips (``astedge evaluate DATA``): the main metric overall, per class and
  per subgroup (a manifest column: speaker, device, room).
- :func:`calibrate_thresholds`: per-class event thresholds on a labelled validation split (``astedge
  calibrate``): F1-maximizing, or the most recall at a target precision.
- :func:`evaluate_events`: a :class:`astedge.runtime.classifier.Classifier`'s decision layer on long
  recordings, with the stream's windows, against a truth table (``astedge evaluate``): DCASE event-based F1
  (0.2 s onset collar, offsets max(0.2 s, 20 %)), segment-based F1 (1 s), detections per true event,
  decision latency.

Torch-free: these run on whatever backend loads (TensorRT, ONNX Runtime, PyTorch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astedge.measure import event_metrics as em
from astedge.measure.psds import psds
from astedge.errors import UserError
from astedge.runtime.classifier import as_classifier
from astedge.timing import percentiles


def score_clips(model, data, split: str = "val", *, batch_size: int = 16, log=None,
                progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(scores ``[clips, classes]`` in the model's label order, 0/1 targets) for a split of `data`
    (a :class:`astedge.data.datasets.DatasetIndex`) through `model` (a Classifier, or a loaded backend with the
    default options); the data's labels are matched to the model's by name. Clips are scored `batch_size` at a
    time as they are read (memory holds one batch of audio, not the split); `progress(clips, total)` hears each."""
    from astedge.audio.decode import load_audio

    classifier = as_classifier(model)
    backend = classifier.backend
    items = data.splits.get(split)
    if not items:
        raise UserError(f"the dataset has no {split!r} split (it has {', '.join(data.splits) or 'none'})")
    index = {label: i for i, label in enumerate(backend.labels)}
    missing = [label for label in data.labels if label not in index]
    if missing:
        from astedge.errors import some

        raise UserError(f"the model has no output for the data's labels {some(missing)}")
    rate = backend.feature_config.sample_rate
    targets = np.zeros((len(items), len(backend.labels)), np.float32)
    scores = np.zeros_like(targets, dtype=np.float64)
    if log:
        log(f"scoring {len(items)} {split} clips with {backend.name}")
    for first in range(0, len(items), batch_size):
        batch = items[first:first + batch_size]
        waves = [load_audio(item.path, rate) for item in batch]
        scores[first:first + len(batch)] = classifier.clip_scores(waves, batch_size=batch_size)
        for row, item in enumerate(batch, start=first):
            targets[row, [index[data.labels[t]] for t in item.targets]] = 1.0
        if progress is not None:
            progress(len(batch), len(items))
    return scores, targets


def evaluate_clips(model, data, split: str = "all", *, log=None, progress=None) -> dict:
    """A model on a labelled dataset's clips (`split`, or every clip with "all"): the main metric overall, per class
    (the clips of each label) and, where the data has subgroups (a manifest's --group-by column: speaker, device,
    room), per subgroup, so that where a model fails shows beside the overall figure."""
    import dataclasses

    from astedge.measure import metrics

    if split == "all":
        data = dataclasses.replace(data, splits={"all": [item for items in data.splits.values() for item in items]})
    scores, targets = score_clips(model, data, split, log=log, progress=progress)
    labels = list(as_classifier(model).labels)
    columns = [labels.index(label) for label in data.labels]
    scores, targets = scores[:, columns], targets[:, columns]
    items = data.splits[split]
    report = {"split": split, "labels": list(data.labels), **clip_metrics(scores, targets, data.task)}
    if data.task == "multiclass":  # a clip's one label is its class
        report["classes"] = metrics.by_group(scores, targets, [data.labels[i.targets[0]] for i in items], data.task)
    if any(item.group is not None for item in items):
        report["groups"] = metrics.by_group(scores, targets, [item.group for item in items], data.task)
    return report


def clip_metrics(scores: np.ndarray, targets: np.ndarray, task: str, columns: list[int] | None = None) -> dict:
    """Accuracy (single-label) or mAP and accuracy (multi-label), over `columns` (the data's classes) when given."""
    from astedge.measure import metrics

    if columns is not None:
        scores, targets = scores[:, columns], targets[:, columns]
    return {**metrics.evaluate(scores, targets, task), "clips": int(len(scores))}


def calibrate_thresholds(model, data, split: str = "val", *, target_precision: float | None = None,
                         log=None, progress=None) -> dict:
    """Per-class thresholds from a labelled split, with what each reaches there (see :func:`astedge.runtime.events.calibrate`)."""
    from astedge.runtime.events import calibrate

    check_target_precision(target_precision)
    scores, targets = score_clips(model, data, split, log=log, progress=progress)
    result = calibrate(scores, targets, as_classifier(model).labels, target_precision=target_precision)
    result["method"] = "max F1" if target_precision is None else f"precision >= {target_precision:g}"
    result["clips"] = int(len(scores))
    return result


def check_target_precision(target_precision: float | None) -> None:
    """Calibration's target precision is a score in (0, 1] (None: maximize F1)."""
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise UserError(f"--target-precision must be in (0, 1], got {target_precision:g}")


def read_truth(path: str | Path, audio: list[Path]) -> dict[str, list[em.Event]]:
    """The truth table for `audio` files: ``onset,offset,label`` rows for one file, or with a ``file`` (or DCASE's
    ``filename``) column, matched by file name, for several."""
    try:
        by_name = {Path(name).name: events for name, events in em.read_events_csv(path, by_file=True).items()}
    except UserError as err:
        if "no file (or filename) column" not in str(err):
            raise
        if len(audio) > 1:
            raise UserError("has no file column: with several audio files, say which file each row is of",
                            path) from None
        return {str(audio[0]): em.read_events_csv(path)}
    missing = [a.name for a in audio if a.name not in by_name]
    if missing:
        raise UserError(f"has no rows for {', '.join(missing)} (its file column names "
                        f"{', '.join(sorted(by_name)[:5])})", path)
    return {str(a): by_name[a.name] for a in audio}


def evaluate_events(classifier, audio: list[Path], truth: dict[str, list[em.Event]], *, t_collar: float = 0.2,
                    percentage_of_length: float = 0.2, segment: float = 1.0) -> dict:
    """The decision layer of `classifier` (a :class:`~astedge.runtime.classifier.Classifier` with ``events`` on) on
    each file, with the stream's windows, scored against `truth` (``{file: [Event]}``).

    The report holds the figures, ``"classes"`` (each class's event-based counts and scores), ``"events"`` (the
    detected events' end records, as ``classify --events`` prints them), ``"psds"`` (a frame head's PSDS1/PSDS2)
    and ``"settings"`` (every window and decision setting used). Scores sed_eval leaves undefined (a class never
    detected) are NaN."""
    estimated, durations, latencies_ms, records, scores = {}, {}, [], [], {}
    for path in audio:
        decision = classifier.decision(classifier.windowing(stream=True), str(path))
        if decision.frames is not None:
            decision.frames.record = []
        result = classifier.classify_file(path, stream=True, decision=decision)
        estimated[str(path)] = [em.Event(e.onset, e.offset, e.label, e.first_detected_at) for e in result.detected]
        records += [e.record("end") for e in result.detected]
        durations[str(path)] = result.seconds
        latencies_ms += [w.latency_ms for w in result.windows]
        if decision.frames is not None:
            scores[str(path)] = frame_scores(decision.frames)
    mask = classifier.event_mask()
    labels = sorted({e.label for events in truth.values() for e in events} | set(classifier.labels if mask is None else
                    [label for label, keep in zip(classifier.labels, mask, strict=True) if keep]))
    event = em.event_based(truth, estimated, labels, t_collar=t_collar, percentage_of_length=percentage_of_length)
    seg = em.segment_based(truth, estimated, labels, time_resolution=segment, duration=durations)
    duplicates = em.detections_per_event(truth, estimated, t_collar=t_collar)
    latency = em.decision_latency(truth, estimated, t_collar=t_collar)
    return {
        "files": len(audio), "audio_seconds": round(sum(durations.values()), 3),
        "true_events": sum(len(v) for v in truth.values()), "detected_events": sum(len(v) for v in estimated.values()),
        "event_based": {"f1": event["micro"]["f1"], "precision": event["micro"]["precision"],
                        "recall": event["micro"]["recall"], "macro_f1": event["macro"]["f1"],
                        "t_collar": t_collar, "percentage_of_length": percentage_of_length},
        "segment_based": {"f1": seg["micro"]["f1"], "precision": seg["micro"]["precision"],
                          "recall": seg["micro"]["recall"], "error_rate": seg["micro"]["error_rate"],
                          "segment_seconds": segment},
        "detections_per_true_event": {"mean": duplicates["mean"], "mean_detected": duplicates["mean_detected"],
                                      "duplicated": duplicates["duplicated"], "histogram": duplicates["histogram"]},
        "decision_latency_s": {"p50": latency["p50"], "p90": latency["p90"], "mean": latency["mean"],
                               "detected": latency["detected"], "missed": latency["missed"]},
        "window_ms": percentiles(latencies_ms, (50, 90), stats=False),
        "classes": {label: {"true_events": row["Nref"], "detected_events": row["Nsys"], "matched": row["Ntp"],
                            "f1": row["f1"], "precision": row["precision"], "recall": row["recall"]}
                    for label, row in event["class_wise"].items()},
        "psds": psds(scores, truth, durations, list(classifier.labels)) if scores else
        {"psds1": None, "psds2": None, "reason": "PSDS needs frame scores: a model with a frame head"},
        "events": records,
        "settings": _settings(classifier),
    }


def frame_scores(path) -> tuple[np.ndarray, np.ndarray]:
    """(segment boundaries [T + 1] seconds, scores [T, classes]) of a :class:`~astedge.runtime.frames.FramePath`'s
    recorded frames after its median filter: the scores its decision layer thresholded (what PSDS sweeps)."""
    from astedge.runtime.frames import median_filtered

    frames = median_filtered(path.record, path.median.size)
    bounds = np.array([f[0] for f in frames] + [frames[-1][1]]) if frames else np.zeros(1)
    return bounds, np.stack([f[2] for f in frames]) if frames else np.zeros((0, len(path.detector.labels)))


def _settings(classifier) -> dict:
    """Every window and decision-layer setting a report was made with: windows, smoothing and its lags, label
    filters, thresholds (the per-class ones themselves), hysteresis, confirmation, durations and trim."""
    o, config = classifier.options, classifier.event_config
    windowing = classifier.windowing(stream=True)
    decision = classifier.decision(windowing)
    path = decision.frames
    detector = path.detector if path is not None else decision.detector
    frames = {} if path is None else {"frames": {"frame_s": path.layout.step / path.layout.sample_rate,
                                                 "median_frames": path.median.size,
                                                 "delay_s": path.timeline.delay / path.layout.sample_rate,
                                                 "background": classifier.background}}
    return {**windowing.describe(), **frames, "smoothing": o.smoothing, "smoothing_windows": o.smoothing_windows,
            "lag_s": {"onset": detector.onset_lag, "offset": detector.offset_lag}, "allow": list(o.allow), "deny": list(o.deny),
            "threshold": config.threshold, "thresholds": dict(config.thresholds), "off_ratio": config.off_ratio,
            "confirm": [config.confirm, config.confirm_window], "min_duration": config.min_duration,
            "merge_gap": config.merge_gap, "trim": config.trim}
