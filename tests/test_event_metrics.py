"""astedge.measure.event_metrics against sed_eval 0.2.1 (the DCASE reference), plus the reader and live-stream helpers.

sed_eval needs dcase_util, which imports pkg_resources: setuptools<81. Without sed_eval the comparisons
skip; the hand-made cases with known answers run everywhere.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from astedge.errors import UserError
from astedge.measure.event_metrics import (Event, decision_latency, detections_per_event, event_based,
                                   read_events_csv, segment_based)
from conftest import run_without_torch

LABELS = ["dog", "speech", "alarm"]


def sed_eval_module():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dcase_util: "pkg_resources is deprecated"
        return pytest.importorskip("sed_eval")


def as_sed(events: list[Event]) -> list[dict]:
    return [{"onset": e.onset, "offset": e.offset, "event_label": e.label} for e in events]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12


def check_scores(ours: dict, theirs: dict, keys=(("f1", "f_measure"), ("precision", "precision"),
                                                 ("recall", "recall"))) -> None:
    for k_ours, k_theirs in keys:
        assert same(ours[k_ours], theirs[k_theirs]), (k_ours, ours[k_ours], theirs[k_theirs])


def compare(ours: dict, metric, counts: tuple[str, ...], class_counts: tuple[str, ...]) -> None:
    """Every count exactly, every score to 1e-12 (NaN where sed_eval has NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sed_eval's nanmean of all-NaN classes
        results = metric.results()
    assert {k: ours["micro"][k] for k in counts} == {k: metric.overall[k] for k in counts}
    check_scores(ours["micro"], results["overall"]["f_measure"])
    rates = ("error_rate", "substitution_rate", "deletion_rate", "insertion_rate")
    check_scores(ours["micro"], results["overall"]["error_rate"], [(k, k) for k in rates])
    for label, theirs in results["class_wise"].items():
        mine = ours["class_wise"][label]
        assert {k: mine[k] for k in class_counts} == {k: metric.class_wise[label][k] for k in class_counts}
        check_scores(mine, theirs["f_measure"])
        check_scores(mine, theirs["error_rate"], [(k, k) for k in rates[:1] + rates[2:]])
    average = results["class_wise_average"]
    check_scores(ours["macro"], average["f_measure"])
    check_scores(ours["macro"], average["error_rate"], [(k, k) for k in rates[:1] + rates[2:]])


def sed_event_based(reference, estimated, labels, t_collar, percentage, evaluate_offset=True, zero=None):
    sed_eval = sed_eval_module()
    metric = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(labels), t_collar=float(t_collar), percentage_of_length=float(percentage),
        evaluate_offset=evaluate_offset, event_matching_type="optimal", empty_system_output_handling=zero)
    for file_id in list(reference) + [k for k in estimated if k not in reference]:
        metric.evaluate(as_sed(reference.get(file_id, [])), as_sed(estimated.get(file_id, [])))
    return metric


def sed_segment_based(reference, estimated, labels, resolution, duration=None):
    sed_eval = sed_eval_module()
    metric = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(labels), time_resolution=resolution)
    for file_id in list(reference) + [k for k in estimated if k not in reference]:
        length = duration.get(file_id) if isinstance(duration, dict) else duration
        metric.evaluate(as_sed(reference.get(file_id, [])), as_sed(estimated.get(file_id, [])),
                        evaluated_length_seconds=length)
    return metric


EVENT_COUNTS = ("Nref", "Nsys", "Ntp", "Nfp", "Nfn", "Nsubs")
CLASS_COUNTS = ("Nref", "Nsys", "Ntp", "Nfp", "Nfn")
SEGMENT_COUNTS = ("Nref", "Nsys", "Ntp", "Nfp", "Nfn", "S", "D", "I")


def random_files(rng: np.random.Generator, grid: float | None) -> tuple[dict, dict]:
    """Several files of overlapping events; estimates jittered (often by exactly the collar), relabelled
    (substitutions), duplicated, dropped or invented. `grid` snaps times to hit boundaries exactly."""
    def t(x: float) -> float:
        return float(round(x / grid) * grid) if grid else float(x)

    reference, estimated = {}, {}
    for f in range(int(rng.integers(1, 4))):
        ref, est = [], []
        for _ in range(int(rng.integers(0, 9))):
            onset = t(rng.uniform(0, 8))
            ref.append(Event(onset, max(t(onset + rng.uniform(0.05, 3)), onset + (grid or 0.05)),
                             str(rng.choice(LABELS))))
        for r in ref:
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                jitter = rng.choice([0.0, 0.2, -0.2, 0.5, -0.5, 0.1, 0.3, rng.normal(0, 0.3)], size=2)
                onset = max(0.0, t(r.onset + jitter[0]))
                offset = max(t(r.offset + jitter[1]), onset + (grid or 0.01))
                label = str(rng.choice(LABELS)) if rng.random() < 0.2 else r.label
                est.append(Event(onset, offset, label))
        for _ in range(int(rng.integers(0, 3))):
            onset = t(rng.uniform(0, 9))
            est.append(Event(onset, onset + (grid or 0.01) + t(rng.uniform(0, 2)), str(rng.choice(LABELS))))
        rng.shuffle(est)
        reference[f"f{f}"], estimated[f"f{f}"] = ref, est
    return reference, estimated


@pytest.mark.parametrize("t_collar,percentage", [(0.2, 0.2), (0.2, 0.5), (0.5, 0.2), (0.5, 0.5)])
def test_event_based_matches_sed_eval_on_random_files(t_collar, percentage):
    rng = np.random.default_rng(int(t_collar * 10 + percentage * 100))
    for case in range(40):
        reference, estimated = random_files(rng, grid=[None, 0.1, 0.05, 0.25][case % 4])
        for evaluate_offset in (True, False):
            ours = event_based(reference, estimated, LABELS, t_collar=t_collar, percentage_of_length=percentage,
                               evaluate_offset=evaluate_offset)
            metric = sed_event_based(reference, estimated, LABELS, t_collar, percentage, evaluate_offset)
            compare(ours, metric, EVENT_COUNTS, CLASS_COUNTS)
            assert ours["files"] == metric.evaluated_files


@pytest.mark.parametrize("resolution", [1.0, 0.5])
def test_segment_based_matches_sed_eval_on_random_files(resolution):
    rng = np.random.default_rng(int(resolution * 10))
    for case in range(60):
        reference, estimated = random_files(rng, grid=[None, 0.25, 0.5, 1.0][case % 4])
        duration = [None, 6.0, 12.3, {"f0": 4.5}][case % 4 if case % 8 < 4 else 0]
        ours = segment_based(reference, estimated, LABELS, time_resolution=resolution, duration=duration)
        metric = sed_segment_based(reference, estimated, LABELS, resolution, duration)
        compare(ours, metric, SEGMENT_COUNTS, CLASS_COUNTS)
        assert ours["duration"] == metric.evaluated_length_seconds


def test_event_based_boundaries_and_empty_classes():
    """Exactly at the collar is a hit; a class without references (alarm) has NaN recall and F and
    one without estimates (speech) NaN precision and F: both drop out of the macro F (sed_eval's nanmean)."""
    ref = [Event(0.0, 1.0, "dog"), Event(3.0, 5.0, "dog"), Event(6.0, 7.0, "speech"), Event(8.0, 9.0, "dog")]
    est = [Event(0.2, 1.2, "dog"),   # onset exactly 0.2 away, offset 0.2 (in floats a hair less): hit
           Event(3.5, 4.0, "dog"),   # onset 0.5 away: outside 0.2, inside a 0.5 collar (offset 1.0 = 0.5 * 2 s)
           Event(8.0, 9.0, "alarm"),  # right time, wrong label: a substitution
           Event(12.0, 13.0, "alarm")]
    checks = []  # (ours, sed_eval arguments): compared last, so the known answers run without sed_eval too
    for t_collar, percentage, ntp in [(0.2, 0.2, 1), (0.5, 0.5, 2), (0.5, 0.2, 1)]:
        ours = event_based(ref, est, LABELS, t_collar=t_collar, percentage_of_length=percentage)
        assert (ours["micro"]["Ntp"], ours["micro"]["Nsubs"]) == (ntp, 1)
        assert ours["class_wise"]["dog"]["Ntp"] == ntp
        assert math.isnan(ours["class_wise"]["alarm"]["recall"]) and ours["class_wise"]["alarm"]["precision"] == 0
        assert math.isnan(ours["class_wise"]["speech"]["precision"]) and math.isnan(ours["class_wise"]["speech"]["f1"])
        dog = ours["class_wise"]["dog"]
        assert ours["macro"]["f1"] == dog["f1"] == pytest.approx(2 * ntp / (3 + 2))
        assert ours["macro"]["precision"] == pytest.approx((dog["precision"] + 0.0) / 2)  # speech NaN, alarm 0
        checks.append((ours, (t_collar, percentage, True, None)))
    zero = event_based(ref, est, LABELS, empty_system_output_handling="zero_score")
    assert zero["class_wise"]["speech"]["precision"] == 0.0 and zero["class_wise"]["speech"]["f1"] == 0.0
    checks.append((zero, (0.2, 0.2, True, "zero_score")))
    # Optimal, not greedy: a greedy pass would give the first estimate to the first reference and lose one.
    ref2, est2 = [Event(1.0, 2.0, "dog"), Event(1.15, 2.1, "dog")], [Event(1.1, 2.05, "dog"), Event(0.9, 1.9, "dog")]
    assert event_based(ref2, est2, ["dog"])["micro"]["Ntp"] == 2
    # An estimated label outside `labels` counts in the micro figures only (as in sed_eval).
    odd = event_based([Event(0, 1, "dog")], [Event(0, 1, "dog"), Event(2, 3, "cat")], ["dog"])
    assert (odd["micro"]["Nsys"], odd["class_wise"]["dog"]["Nsys"]) == (2, 1)
    for ours, args in checks:
        compare(ours, sed_event_based({"a": ref}, {"a": est}, LABELS, *args), EVENT_COUNTS, CLASS_COUNTS)
    compare(odd, sed_event_based({"a": [Event(0, 1, "dog")]}, {"a": [Event(0, 1, "dog"), Event(2, 3, "cat")]},
                                 ["dog"], 0.2, 0.2), EVENT_COUNTS, CLASS_COUNTS)


def test_segment_based_boundaries():
    """An event marks [floor(on/res), ceil(off/res)): an offset on a boundary stops there; the duration
    defaults to the last offset (last partial segment included) and cuts events past it."""
    ref = {"a": [Event(0.5, 1.0, "dog"), Event(1.0, 1.2, "speech"), Event(2.0, 2.3, "dog")]}
    est = {"a": [Event(0.0, 2.0, "dog")]}
    ours = segment_based(ref, est, LABELS, time_resolution=1.0)
    assert ours["segments"] == 3 and ours["duration"] == 2.3
    assert {k: ours["class_wise"]["dog"][k] for k in CLASS_COUNTS} == {"Nref": 2, "Nsys": 2, "Ntp": 1,
                                                                      "Nfp": 1, "Nfn": 1}
    assert (ours["micro"]["S"], ours["micro"]["D"], ours["micro"]["I"]) == (1, 1, 0)
    assert ours["micro"]["error_rate"] == pytest.approx(2 / 3)
    short = segment_based(ref, est, LABELS, time_resolution=0.5, duration=1.0)
    assert short["segments"] == 2 and short["micro"]["Nref"] == 1
    with pytest.raises(ValueError, match="cat"):
        segment_based([Event(0, 1, "cat")], [], LABELS)
    compare(ours, sed_segment_based(ref, est, LABELS, 1.0), SEGMENT_COUNTS, CLASS_COUNTS)
    compare(short, sed_segment_based(ref, est, LABELS, 0.5, 1.0), SEGMENT_COUNTS, CLASS_COUNTS)


def test_detections_per_event_and_latency():
    ref = [Event(1.0, 3.0, "dog"), Event(5.0, 6.0, "dog"), Event(8.0, 9.0, "speech"), Event(10.0, 11.0, "dog")]
    est = [Event(1.1, 1.8, "dog", detected_at=1.5), Event(2.0, 3.0, "dog", detected_at=2.4),  # fragmented
           Event(6.1, 7.0, "dog", detected_at=6.3),  # 0.1 s after the offset: inside the 0.2 s collar
           Event(8.0, 9.0, "dog"),                  # wrong label
           Event(9.5, 12.0, "dog", detected_at=10.2)]
    dup = detections_per_event(ref, est)
    assert dup["counts"] == [2, 1, 0, 1] and dup["histogram"] == {0: 1, 1: 2, 2: 1}
    assert dup["mean"] == 1.0 and dup["mean_detected"] == pytest.approx(4 / 3) and dup["duplicated"] == 1
    assert detections_per_event(ref, est, t_collar=0.0)["counts"] == [2, 0, 0, 1]
    lat = decision_latency(ref, est)
    assert lat["latencies"] == pytest.approx([0.5, 1.3, None, 0.2]) and lat["latencies"][2] is None
    assert (lat["detected"], lat["missed"]) == (3, 1)
    assert lat["p50"] == pytest.approx(0.5) and lat["p90"] == pytest.approx(0.5 + 0.8 * 0.8)
    # Without detected_at the estimated onset is the report time; a detection already running counts as 0.
    early = decision_latency({"x": [Event(2.0, 3.0, "dog")]}, {"x": [Event(0.0, 4.0, "dog")]})
    assert early["latencies"] == {"x": [0.0]} and early["p90"] == 0.0
    none = decision_latency([Event(2.0, 3.0, "dog")], [])
    assert none["latencies"] == [None] and none["p50"] is None


def test_read_events_csv(tmp_path):
    csv_file = tmp_path / "events.csv"
    csv_file.write_text("onset,offset,label\n0.5,1.25,dog\n\n2,3, speech \n")
    assert read_events_csv(csv_file) == [Event(0.5, 1.25, "dog"), Event(2.0, 3.0, "speech")]
    tsv = tmp_path / "gt.tsv"
    tsv.write_text("filename\tonset\toffset\tevent_label\na.wav\t0.0\t1.0\tdog\nb.wav\t\t\t\n"
                   "a.wav\t1.5\t2.0\talarm\nc.wav\n")
    assert read_events_csv(tsv, by_file=True) == {
        "a.wav": [Event(0.0, 1.0, "dog"), Event(1.5, 2.0, "alarm")], "b.wav": [], "c.wav": []}
    with pytest.raises(UserError, match="3 files"):
        read_events_csv(tsv)
    one = tmp_path / "one.tsv"
    one.write_text("filename\tonset\toffset\tevent_label\na.wav\t0.0\t1.0\tdog\n")
    assert read_events_csv(one) == [Event(0.0, 1.0, "dog")]


@pytest.mark.parametrize("body,message", [
    ("0,1,dog\n", "row 1: header"),
    ("onset,offset,label\n0,1,dog\nx,2,dog\n", "row 3: onset 'x' is not a number"),
    ("onset,offset,label\n0,1,dog\n1,nan,dog\n", "row 3: offset is nan"),
    ("onset,offset,label\n2,1,dog\n", "row 2: offset 1 is not after onset 2"),
    ("onset,offset,label\n1,1,dog\n", "row 2: offset 1 is not after onset 1"),
    ("onset,offset,label\n-1,1,dog\n", "row 2: onset -1 is negative"),
    ("onset,offset,label\n0,1, \n", "row 2: empty label"),
    ("onset,offset,label\n0,1\n", "row 2: 2 fields"),
    ("", "empty events file"),
])
def test_read_events_csv_errors(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(UserError) as error:
        read_events_csv(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text
    with pytest.raises(UserError, match="no such events file"):
        read_events_csv(tmp_path / "missing.csv")


def test_imports_without_torch_or_reference_packages():
    result = run_without_torch("import astedge.measure.event_metrics",
                               blocked=("torch", "timm", "torchvision", "transformers", "pandas", "scipy",
                                        "dcase_util", "sed_eval"))
    assert result.returncode == 0, result.stderr
