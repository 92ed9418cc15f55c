"""Sound-event-detection metrics (DCASE) in numpy: sed_eval 0.2.1's numbers without pandas or dcase_util.

Event-based (collar) and segment-based precision / recall / F1 / error rate as sed_eval computes them,
two live-stream helpers (detections per reference event, decision latency) and an events CSV/TSV reader.
tests/test_event_metrics.py checks every count and score against sed_eval itself.

sed_eval's conventions, kept on purpose so that numbers compare with published DCASE results:
precision is NaN when a class has no system events, recall NaN when it has no reference events, and F is
then NaN too (0 only when both are 0); the macro average is numpy.nanmean over the labels, so such
classes drop out of macro F. Rates divide by (Nref + eps). Lists are one file; {file_id: events} dicts
are evaluated file by file and their counts summed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np

from astedge.data.event_table import Event, read_events_csv  # noqa: F401 - the metrics' input types

_EPS = float(np.spacing(1))  # sed_eval's guard in every rate: D / (Nref + eps)


Events = Union[Sequence[Event], Mapping[str, Sequence[Event]]]


def _files(reference: Events, estimated: Events) -> list[tuple[str, list[Event], list[Event]]]:
    """(file_id, reference, estimated) per file; a plain list is one file, a file missing on one side is empty."""
    if isinstance(reference, Mapping) != isinstance(estimated, Mapping):
        raise TypeError("reference and estimated must both be event lists or both {file_id: events} dicts")
    if not isinstance(reference, Mapping):
        return [("", list(reference), list(estimated))]
    ids = list(reference) + [k for k in estimated if k not in reference]
    return [(k, list(reference.get(k, ())), list(estimated.get(k, ()))) for k in ids]


def _prf(ntp: float, nsys: float, nref: float, zero_score: bool) -> dict:
    """sed_eval's metric.precision / recall / f_measure, NaNs included."""
    p = 0.0 if nsys == 0 and zero_score else (math.nan if nsys == 0 else ntp / nsys)
    r = math.nan if nref == 0 else ntp / nref
    f = 0.0 if p == 0 and r == 0 else 2 * p * r / (p + r)
    return {"precision": p, "recall": r, "f1": f}


def _rates(nref: float, d: float, i: float, s: float | None = None) -> dict:
    """sed_eval's error rate: each part over (Nref + eps), ER = S + D + I (class-wise: no substitutions)."""
    out = {} if s is None else {"substitution_rate": float(s / (nref + _EPS))}
    out["deletion_rate"] = float(d / (nref + _EPS))
    out["insertion_rate"] = float(i / (nref + _EPS))
    out["error_rate"] = out.get("substitution_rate", 0.0) + out["deletion_rate"] + out["insertion_rate"]
    return out


def _nanmean(values: list[float]) -> float:
    """numpy.nanmean (sed_eval's macro average) without its all-NaN warning."""
    a = np.asarray(values, dtype=float)
    return float(np.nanmean(a)) if np.any(~np.isnan(a)) else math.nan


def _summary(micro: dict, class_wise: dict, zero_score: bool, subs: str) -> dict:
    """Scores from summed counts: micro from the overall counts, macro as the nanmean of the class-wise scores."""
    for counts in class_wise.values():
        counts.update(_prf(counts["Ntp"], counts["Nsys"], counts["Nref"], zero_score))
        counts.update(_rates(counts["Nref"], counts["Nfn"], counts["Nfp"]))
    micro.update(_prf(micro["Ntp"], micro["Nsys"], micro["Nref"], zero_score))
    if subs == "Nsubs":
        micro.update(_rates(micro["Nref"], micro["Nfn"], micro["Nfp"], micro["Nsubs"]))
    else:
        micro.update(_rates(micro["Nref"], micro["D"], micro["I"], micro["S"]))
    keys = ("f1", "precision", "recall", "error_rate", "deletion_rate", "insertion_rate")
    macro = {k: _nanmean([c[k] for c in class_wise.values()]) for k in keys}
    return {"micro": micro, "macro": macro, "class_wise": class_wise}


def _bipartite_match(graph: dict[int, list[int]]) -> dict[int, int]:
    """Maximum-cardinality matching {v: u} of graph {u: [v, ...]} (Hopcroft-Karp, D. Eppstein 2002).

    Ported step for step from sed_eval.util.bipartite_match (itself mir_eval's): the number of true
    positives is the same for any maximum matching, but *which* events stay unmatched decides sed_eval's
    substitution count, so the same algorithm with the same dict orders is needed to match it exactly."""
    matching: dict[int, int] = {}
    for u in graph:  # greedy start
        for v in graph[u]:
            if v not in matching:
                matching[v] = u
                break
    while True:
        preds: dict[int, list[int]] = {}
        unmatched: list[int] = []
        pred = {u: unmatched for u in graph}
        for v in matching:
            del pred[matching[v]]
        layer = list(pred)
        while layer and not unmatched:
            new_layer: dict[int, list[int]] = {}
            for u in layer:
                for v in graph[u]:
                    if v not in preds:
                        new_layer.setdefault(v, []).append(u)
            layer = []
            for v in new_layer:
                preds[v] = new_layer[v]
                if v in matching:
                    layer.append(matching[v])
                    pred[matching[v]] = v
                else:
                    unmatched.append(v)
        if not unmatched:
            return matching

        def recurse(v: int) -> bool:
            if v in preds:
                candidates = preds.pop(v)
                for u in candidates:
                    if u in pred:
                        pu = pred.pop(u)
                        if pu is unmatched or recurse(pu):
                            matching[v] = u
                            return True
            return False

        for v in unmatched:
            recurse(v)


def _timing_hits(ref: list[Event], est: list[Event], t_collar: float, percentage_of_length: float,
                 evaluate_offset: bool) -> np.ndarray:
    """[reference, estimated] onset (and offset) validity, with sed_eval's exact float expressions."""
    r_on, r_off = np.array([e.onset for e in ref], float), np.array([e.offset for e in ref], float)
    e_on, e_off = np.array([e.onset for e in est], float), np.array([e.offset for e in est], float)
    hit = np.abs(r_on[:, None] - e_on[None, :]) <= t_collar
    if evaluate_offset:
        tolerance = np.maximum(t_collar, percentage_of_length * (r_off - r_on))
        hit &= np.abs(r_off[:, None] - e_off[None, :]) <= tolerance[:, None]
    return hit


def event_based(reference: Events, estimated: Events, labels: Sequence[str], *, t_collar: float = 0.2,
                percentage_of_length: float = 0.2, evaluate_offset: bool = True,
                empty_system_output_handling: str | None = None) -> dict:
    """Collar-based event F1/ER = sed_eval.sound_event.EventBasedMetrics(event_matching_type='optimal').

    A reference and an estimated event of the same label match when |Δonset| <= t_collar and (with
    evaluate_offset) |Δoffset| <= max(t_collar, percentage_of_length × reference length); true positives
    are a maximum one-to-one matching per file. As in sed_eval, the micro (overall) counts take every event,
    labels outside `labels` too, and its Nfp/Nfn exclude substitutions (leftover reference/estimated
    pairs that match in time but not in label, paired greedily in input order); class-wise counts cover
    `labels` only. empty_system_output_handling='zero_score' makes precision 0 instead of NaN when Nsys is 0.

    Returns {"micro": {precision, recall, f1, error_rate, substitution_rate, deletion_rate,
    insertion_rate, Nref, Nsys, Ntp, Nfp, Nfn, Nsubs}, "macro": {f1, precision, recall, error_rate,
    deletion_rate, insertion_rate}, "class_wise": {label: {..., Nref, Nsys, Ntp, Nfp, Nfn}}, "files": n}.
    """
    zero_score = empty_system_output_handling == "zero_score"
    micro = dict.fromkeys(("Nref", "Nsys", "Ntp", "Nfp", "Nfn", "Nsubs"), 0)
    class_wise = {label: dict.fromkeys(("Nref", "Nsys", "Ntp", "Nfp", "Nfn"), 0) for label in labels}
    files = _files(reference, estimated)
    for _, ref, est in files:
        timing = _timing_hits(ref, est, t_collar, percentage_of_length, evaluate_offset)
        same_label = np.array([[r.label == e.label for e in est] for r in ref], bool).reshape(timing.shape)
        graph: dict[int, list[int]] = {}  # estimated -> [reference], built in sed_eval's order
        for j, i in zip(*np.nonzero(timing & same_label)):
            graph.setdefault(int(i), []).append(int(j))
        matching = _bipartite_match(graph)  # reference -> estimated
        est_matched = set(matching.values())
        ref_left = [j for j in range(len(ref)) if j not in matching]
        est_left = [i for i in range(len(est)) if i not in est_matched]
        counted, n_subs = set(), 0
        for j in ref_left:
            for i in est_left:
                if i not in counted and timing[j, i]:
                    counted.add(i)
                    n_subs += 1
                    break
        ntp = len(matching)
        micro["Nref"] += len(ref)
        micro["Nsys"] += len(est)
        micro["Ntp"] += ntp
        micro["Nsubs"] += n_subs
        micro["Nfp"] += len(est) - ntp - n_subs
        micro["Nfn"] += len(ref) - ntp - n_subs
        matched_labels = Counter(ref[j].label for j in matching)
        for label, c in class_wise.items():
            nref, nsys = sum(r.label == label for r in ref), sum(e.label == label for e in est)
            c["Nref"] += nref
            c["Nsys"] += nsys
            c["Ntp"] += matched_labels[label]
            c["Nfp"] += nsys - matched_labels[label]
            c["Nfn"] += nref - matched_labels[label]
    return {**_summary(micro, class_wise, zero_score, "Nsubs"), "files": len(files)}


def _roll(events: list[Event], index: dict[str, int], n_segments: int, time_resolution: float) -> np.ndarray:
    """sed_eval's event roll: an event marks segments floor(onset/res) .. ceil(offset/res) - 1."""
    roll = np.zeros((n_segments, len(index)), bool)
    for e in events:
        if e.label not in index:
            raise ValueError(f"event label {e.label!r} is not one of the labels")  # sed_eval raises too
        start = max(int(math.floor(e.onset / time_resolution)), 0)
        roll[start:int(math.ceil(e.offset / time_resolution)), index[e.label]] = True
    return roll


def segment_based(reference: Events, estimated: Events, labels: Sequence[str], *, time_resolution: float = 1.0,
                  duration: float | Mapping[str, float] | None = None,
                  empty_system_output_handling: str | None = None) -> dict:
    """Segment-based F1/ER = sed_eval.sound_event.SegmentBasedMetrics.

    Each file is cut into ceil(duration / time_resolution) segments from 0 s (the last one may be
    partial); an event is active in every segment it touches, [floor(onset/res), ceil(offset/res)), so an
    offset exactly on a boundary does not reach the next segment, and events past the duration are cut.
    `duration` (seconds; one number for all files or {file_id: seconds}) defaults per file to the
    largest offset of its reference and estimated events. Micro counts sum over segments and classes;
    per segment S = min(Nref, Nsys) - Ntp, D = max(0, Nref - Nsys), I = max(0, Nsys - Nref), and
    ER = (S + D + I) / Nref. Class-wise ER = (Nfn + Nfp) / Nref. Labels outside `labels` raise ValueError.

    Returns {"micro": {..., Nref, Nsys, Ntp, Nfp, Nfn, S, D, I}, "macro": {...}, "class_wise": {...},
    "files": n, "segments": n, "duration": seconds}, keys as in event_based.
    """
    zero_score = empty_system_output_handling == "zero_score"
    index = {label: k for k, label in enumerate(labels)}
    micro = dict.fromkeys(("Nref", "Nsys", "Ntp", "Nfp", "Nfn", "S", "D", "I"), 0)
    class_wise = {label: dict.fromkeys(("Nref", "Nsys", "Ntp", "Nfp", "Nfn"), 0) for label in labels}
    files, n_segments, seconds = _files(reference, estimated), 0, 0.0
    for file_id, ref, est in files:
        length = duration.get(file_id) if isinstance(duration, Mapping) else duration
        if length is None:
            length = max([0.0] + [e.offset for e in ref] + [e.offset for e in est])
        n = int(math.ceil(length / time_resolution))
        n_segments, seconds = n_segments + n, seconds + length
        a, s = _roll(ref, index, n, time_resolution), _roll(est, index, n, time_resolution)
        nref, nsys, ntp = a.sum(1), s.sum(1), (a & s).sum(1)
        micro["S"] += int((np.minimum(nref, nsys) - ntp).sum())
        micro["D"] += int(np.maximum(0, nref - nsys).sum())
        micro["I"] += int(np.maximum(0, nsys - nref).sum())
        per_class = {"Nref": a.sum(0), "Nsys": s.sum(0), "Ntp": (a & s).sum(0), "Nfp": (s & ~a).sum(0),
                     "Nfn": (a & ~s).sum(0)}
        for key, values in per_class.items():
            micro[key] += int(values.sum())
            for label, k in index.items():
                class_wise[label][key] += int(values[k])
    return {**_summary(micro, class_wise, zero_score, "S"), "files": len(files), "segments": n_segments,
            "duration": seconds}


def _overlaps(ref: Event, est: Event, t_collar: float) -> bool:
    """Same label and a positive-length overlap with the reference widened by t_collar on each side."""
    return est.label == ref.label and est.onset < ref.offset + t_collar and est.offset > ref.onset - t_collar


def _per_reference(reference: Events, estimated: Events, value) -> tuple[list | dict, list]:
    """value(ref, est_list) for each reference event, shaped like the input, and flattened."""
    per_file = {k: [value(r, est) for r in ref] for k, ref, est in _files(reference, estimated)}
    flat = [v for values in per_file.values() for v in values]
    return (per_file if isinstance(reference, Mapping) else per_file[""]), flat


def detections_per_event(reference: Events, estimated: Events, *, t_collar: float = 0.2) -> dict:
    """How many estimated events of the same label overlap each reference event (widened by t_collar),
    to see a live detector fragmenting or re-firing on one sound: 1 is clean, >1 duplicated, 0 missed.

    Returns {"counts": per reference event (list, or dict of lists per file), "histogram": {count: number
    of reference events}, "mean": over all reference events, "mean_detected": over those with >= 1,
    "duplicated": number with > 1}."""
    counts, flat = _per_reference(reference, estimated,
                                  lambda r, est: sum(_overlaps(r, e, t_collar) for e in est))
    detected = [c for c in flat if c]
    return {"counts": counts, "histogram": dict(sorted(Counter(flat).items())),
            "mean": float(np.mean(flat)) if flat else math.nan,
            "mean_detected": float(np.mean(detected)) if detected else math.nan,
            "duplicated": sum(c > 1 for c in flat)}


def decision_latency(reference: Events, estimated: Events, *, t_collar: float = 0.2) -> dict:
    """Seconds from each reference onset to the first report of an estimated event that overlaps it
    (same label, reference widened by t_collar): the event's detected_at when given, else its onset.
    A report before the reference onset (a detection already running, or early within the collar)
    counts as 0 latency.

    Returns {"latencies": per reference event, None when missed (list, or dict of lists per file),
    "p50", "p90", "mean": over detected events (None when none is detected), "detected", "missed"}."""

    def latency(r: Event, est: list[Event]) -> float | None:
        times = [e.onset if e.detected_at is None else e.detected_at for e in est if _overlaps(r, e, t_collar)]
        return max(0.0, min(times) - r.onset) if times else None

    latencies, flat = _per_reference(reference, estimated, latency)
    found = [x for x in flat if x is not None]
    p50, p90 = (float(q) for q in np.percentile(found, [50, 90])) if found else (None, None)
    return {"latencies": latencies, "p50": p50, "p90": p90, "mean": float(np.mean(found)) if found else None,
            "detected": len(found), "missed": len(flat) - len(found)}
