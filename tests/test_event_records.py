"""The decision layer's mend and its records: trimmed events keep a length (min_duration after trim, never zero),
the max smoother's lag is at offsets only, the events CSV is the records' own columns and reads back, and a
thresholds file keeps each threshold once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from astedge.data.event_table import Event as TableEvent, read_events_csv
from astedge.errors import UserError
from astedge.features.fbank import FbankConfig
from astedge.runtime.classifier import Classifier, ClassifierOptions
from astedge.runtime.events import EventConfig, EventDetector, calibrate, read_thresholds, write_events_csv, \
    write_thresholds
from astedge.runtime.scores import Smoother
from astedge.runtime.windows import Windowing

LABELS = ["dog", "siren"]


def feed(detector: EventDetector, on: list[bool], hop: float = 0.5, window: float = 1.0) -> list[dict]:
    """Windows [k hop, k hop + window) with dog at 0.9 where `on`, else 0; every record, the final ones included."""
    records = []
    for k, is_on in enumerate(on):
        records += detector.update(k * hop, k * hop + window, np.array([0.9 if is_on else 0.0, 0.0]))
    return records + detector.finish()


def test_a_trimmed_detection_never_becomes_a_zero_length_event():
    one = feed(EventDetector(LABELS, "multilabel", EventConfig(trim=0.2)), [False, True, False, False])
    assert one == []  # one on-window: centre 1.0, trimmed to 1.2 .. 0.8: nothing to report
    assert feed(EventDetector(LABELS, "multilabel"), [False, True, False, False]) == []  # 1.0 .. 1.0: no length
    run = [False, True, True, True, False, False]  # on-window centres 1.0, 1.5, 2.0
    kept = feed(EventDetector(LABELS, "multilabel", EventConfig(trim=0.3, min_duration=0.4)), run)
    assert [(r["event"], r["onset"], r.get("offset")) for r in kept] == [("start", 1.3, None), ("end", 1.3, 1.7)]
    assert kept[0]["first_detected_at"] == 2.5  # confirmed once the trimmed event is 0.4 s long: window 3 ends
    assert feed(EventDetector(LABELS, "multilabel", EventConfig(trim=0.3, min_duration=0.5)), run) == []  # 0.4 s
    for trim in (0.0, 0.1, 0.25, 0.4, 0.6):  # whatever the trim, every event reported has a length
        records = feed(EventDetector(LABELS, "multilabel", EventConfig(trim=trim)), [True, False, True, True, False,
                                                                                       True, True, True, False])
        assert all(r["offset"] > r["onset"] for r in records if r["event"] == "end"), trim


class _Labels:
    """A backend stand-in for the Classifier: labels, task and features (the logits are fed to its decision)."""

    name, task, labels, device, precision = "stand-in", "multilabel", tuple(LABELS), "cpu", "fp32"
    feature_config, frame_layout = FbankConfig(target_length=128), None

    def close(self):
        pass


def test_each_smoothers_lag_is_taken_back_at_onsets_and_offsets():
    """A clean 4-window pulse: a max over 3 windows rises with it and falls 2 windows late, a median answers 1 window
    late at both ends; with the detector's onset and offset lags the events land where the raw scores put them."""
    pulse = np.zeros((12, 2))
    pulse[4:8, 0] = 8.0  # logits: sigmoid(8) = 0.9997 on windows 4..7, sigmoid(0) = 0.5 elsewhere
    pulse[:, 1] = -8.0

    def events(**smoothing) -> list[tuple]:
        classifier = Classifier(_Labels(), ClassifierOptions(events=True, event_threshold=0.9, **smoothing))
        decision = classifier.decision(Windowing.from_seconds(_Labels.feature_config, 1.0, 0.25))
        records = [r for k, row in enumerate(pulse) for r in decision(k * 0.25, k * 0.25 + 1.0, row, 0.0).events]
        return [(r["event"], r["onset"], r.get("offset")) for r in records + decision.finish(3.75)]

    raw = events()
    assert raw == [("start", 1.5, None), ("end", 1.5, 2.25)]  # centres of windows 4 and 7
    assert events(smoothing="max", smoothing_windows=3) == raw  # no onset lag, 2 windows of offset lag
    assert events(smoothing="median", smoothing_windows=3) == raw  # 1 window at both ends
    ema = events(smoothing="ema", smoothing_windows=3)  # an EMA's tail is no pulse: within a window
    assert ema[0][1] == pytest.approx(1.5, abs=0.25) and ema[1][2] == pytest.approx(2.25, abs=0.25)
    assert Smoother("max", 3).lags == (0.0, 2.0) and Smoother("median", 3).lags == (1.0, 1.0)


def test_the_events_csv_is_the_records_columns_and_reads_back(tmp_path):
    records = [{"type": "event", "event": "end", "file": "a.wav", "label": "dog", "index": 0, "onset": 0.5,
                "offset": 1.75, "duration": 1.25, "peak_score": 0.912345, "first_detected_at": 1.0,
                "first_detected_wall": "2026-01-01T00:00:00.000+00:00"},
               {"type": "event", "event": "end", "file": "b.wav", "label": "siren", "index": 1, "onset": 2.0,
                "offset": 2.5, "duration": 0.5, "peak_score": 0.7, "first_detected_at": 2.25,
                "first_detected_wall": "2026-01-01T00:00:01.000+00:00"}]
    write_events_csv(tmp_path / "e.csv", records)
    assert (tmp_path / "e.csv").read_text().splitlines() == [
        "file,onset,offset,label,peak_score,first_detected_at", "a.wav,0.500,1.750,dog,0.912345,1.000",
        "b.wav,2.000,2.500,siren,0.700000,2.250"]
    assert read_events_csv(tmp_path / "e.csv", by_file=True) == {"a.wav": [TableEvent(0.5, 1.75, "dog")],
                                                                "b.wav": [TableEvent(2.0, 2.5, "siren")]}
    write_events_csv(tmp_path / "one.csv", [{k: v for k, v in records[0].items() if k != "file"}])
    assert read_events_csv(tmp_path / "one.csv") == [TableEvent(0.5, 1.75, "dog")]
    (tmp_path / "d.tsv").write_text("filename\tonset\toffset\tevent_label\na.wav\t0.5\t1.75\tdog\n")
    assert read_events_csv(tmp_path / "d.tsv", by_file=True) == {"a.wav": [TableEvent(0.5, 1.75, "dog")]}


def test_a_thresholds_file_keeps_each_threshold_once_and_old_files_are_checked(tmp_path):
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.7], [0.1, 0.9]])
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    result = calibrate(scores, targets, LABELS)
    assert result["thresholds"] == {"dog": pytest.approx(0.5), "siren": pytest.approx(0.45)}
    assert all("threshold" not in row for row in result["classes"].values())
    write_thresholds(tmp_path / "t.json", result["thresholds"], classes=result["classes"])
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["astedge_thresholds"] == "2" and (tmp_path / "t.json").read_text().count("0.45") == 1
    assert read_thresholds(tmp_path / "t.json", LABELS) == pytest.approx(result["thresholds"])
    old = {"astedge_thresholds": "1", "thresholds": {"dog": 0.5, "siren": 0.45},
           "classes": {"dog": {"threshold": 0.50000004, "f1": 1.0}, "siren": {"threshold": 0.45, "f1": 1.0}}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert read_thresholds(tmp_path / "old.json", LABELS) == {"dog": 0.5, "siren": 0.45}  # rounding: the same value
    old["classes"]["siren"]["threshold"] = 0.9  # an edit to the copy astedge never read
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match="old.json: the threshold of 'siren' is 0.45 in \"thresholds\" but 0.9"):
        read_thresholds(tmp_path / "old.json", LABELS)
