"""Events, not windows: the decision layer on hand-made score sequences, thresholds files, calibration,
class subsets, the --on-event hook, and the commands (listen/classify --events, calibrate, evaluate)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from astedge.measure import event_metrics as em
from astedge.deploy import export as exp
from astedge.model.checkpoint import save_checkpoint
from astedge.errors import UserError
from astedge.runtime.events import EventConfig, EventDetector, EventHook, calibrate, parse_confirm, read_thresholds
from astedge.features.fbank import FbankConfig
from astedge.model.ast_model import ASTModel, model_config

LABELS = ["dog", "siren", "bird"]


def run(detector: EventDetector, rows, hop: float = 0.5, window: float = 1.0) -> list[dict]:
    """Feed score rows as windows [k hop, k hop + window); returns every record, the final ones included."""
    records = []
    for k, row in enumerate(rows):
        records += detector.update(k * hop, k * hop + window, np.asarray(row, float))
    return records + detector.finish()


def kinds(records):
    return [(r["event"], r["label"]) for r in records]


# --- the decision layer ----------------------------------------------------------------------------------

def test_one_event_per_sound_with_hysteresis_and_centre_times():
    detector = EventDetector(LABELS, "multilabel", EventConfig(threshold=0.5, off_ratio=0.6))
    dog = [0.1, 0.7, 0.9, 0.4, 0.35, 0.1, 0.1]  # 0.4 and 0.35 are above the off-threshold 0.3: still the same bark
    records = run(detector, [[s, 0.0, 0.0] for s in dog])
    assert kinds(records) == [("start", "dog"), ("end", "dog")]
    start, end = records
    assert start["onset"] == 1.0 and start["first_detected_at"] == 2.0  # centre of window 1; confirmed at the end
    # of window 2, the first that gives it a length (centres 1.0 .. 1.5): an event is never zero-length
    assert end["offset"] == 2.5 and end["duration"] == 1.5 and end["peak_score"] == 0.9  # centre of window 4
    assert start["first_detected_wall"].endswith("+00:00") and "." in start["first_detected_wall"]


def test_stream_edges_smoothing_lag_and_trim():
    """On in the first window: the event starts with the audio; on in the last: it ends with the audio. A smoother's
    lag moves every other timestamp back; trim moves onsets later and offsets earlier (not at the edges)."""
    edges = run(EventDetector(LABELS, "multilabel"), [[0.9, 0, 0]] * 3 + [[0, 0.9, 0]] * 3)
    assert [(r["event"], r["label"], r["onset"], r.get("offset")) for r in edges] == [
        ("start", "dog", 0.0, None), ("end", "dog", 0.0, 1.5), ("start", "siren", 2.0, None),
        ("end", "siren", 2.0, 3.5)]  # windows end at 3.5: the last one's end, the audio's end
    assert run(EventDetector(LABELS, "multilabel"), [[0.9, 0, 0]] * 3)[-1]["offset"] == 2.0
    detector = EventDetector(LABELS, "multilabel", lag=0.25)
    records = [r for k, row in enumerate([[0, 0, 0]] + [[0.9, 0, 0]] * 4 + [[0, 0, 0]] * 2)
               for r in detector.update(k * 0.5, k * 0.5 + 1.0, np.asarray(row, float))]
    assert [(r["onset"], r.get("offset")) for r in records] == [(0.75, None), (0.75, 2.25)]  # centres 1.0 .. 2.5
    assert detector.finish(10.0) == []
    trimmed = run(EventDetector(LABELS, "multilabel", EventConfig(trim=0.3)),
                  [[0, 0, 0]] + [[0.9, 0, 0]] * 4 + [[0, 0, 0]] * 2)
    assert [(r["onset"], r.get("offset")) for r in trimmed] == [(1.3, None), (1.3, 2.2)]
    short = run(EventDetector(LABELS, "multilabel", EventConfig(trim=0.4)), [[0, 0, 0], [0.9, 0, 0], [0, 0, 0]])
    assert short == []  # trimmed to nothing (1.4 .. 0.6): no event, never a zero-length one
    with pytest.raises(UserError, match="--trim"):
        EventConfig(trim=-0.1)


def test_confirmation_min_duration_and_merging():
    rows = [[s, 0, 0] for s in (0.9, 0.1, 0.1, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1)]
    plain = run(EventDetector(LABELS, "multilabel"), rows)
    assert kinds(plain).count(("start", "dog")) == 3
    confirmed = run(EventDetector(LABELS, "multilabel", EventConfig(confirm=2, confirm_window=2)), rows)
    assert [(r["event"], r["onset"], r.get("offset")) for r in confirmed] == [
        ("start", 2.0, None), ("end", 2.0, 2.5), ("start", 3.5, None), ("end", 3.5, 4.5)]  # the lone blip never
    assert confirmed[0]["first_detected_at"] == 3.0  # the second window confirms it
    long_only = run(EventDetector(LABELS, "multilabel", EventConfig(min_duration=0.9)), rows)
    assert [(r["event"], r["onset"], r.get("offset")) for r in long_only] == [("start", 3.5, None), ("end", 3.5, 4.5)]
    assert long_only[0]["first_detected_at"] == 5.0  # reported once it has lasted 0.9 s (window 8)
    merged = run(EventDetector(LABELS, "multilabel", EventConfig(merge_gap=0.6)), rows)
    assert [(r["event"], r["onset"], r.get("offset")) for r in merged] == [
        ("start", 0.0, None), ("end", 0.0, 0.5), ("start", 2.0, None), ("end", 2.0, 4.5)]  # a 1 s gap joins the two


def test_multilabel_overlaps_and_single_label_one_at_a_time():
    rows = [[0.9, 0.8, 0.0], [0.9, 0.8, 0.0], [0.1, 0.8, 0.0], [0.1, 0.8, 0.0], [0.1, 0.1, 0.0]]
    multi = run(EventDetector(LABELS, "multilabel"), rows)
    assert kinds(multi) == [("start", "dog"), ("start", "siren"), ("end", "dog"), ("end", "siren")]
    single = run(EventDetector(LABELS, "multiclass"), rows)
    assert kinds(single) == [("start", "dog"), ("end", "dog"), ("start", "siren"), ("end", "siren")]
    open_events = [e for e in EventDetector(LABELS, "multiclass").events if e.offset is None]
    assert open_events == []


def test_thresholds_per_class_and_the_mask():
    config = EventConfig(threshold=0.5, thresholds={"siren": 0.95})
    rows = [[0.6, 0.9, 0.6]] * 3
    mask = np.array([True, True, False])
    records = run(EventDetector(LABELS, "multilabel", config, mask), rows)
    assert kinds(records) == [("start", "dog"), ("end", "dog")]  # siren under its own 0.95; bird masked out
    assert parse_confirm("2/3") == (2, 3) and parse_confirm("2") == (2, 2) and parse_confirm(None) == (1, 1)
    for bad in (dict(confirm=3, confirm_window=2), dict(threshold=1.5), dict(off_ratio=0.0), dict(merge_gap=-1)):
        with pytest.raises(UserError):
            EventConfig(**bad)
    with pytest.raises(UserError, match="N/M"):
        parse_confirm("two")


def test_thresholds_files_are_checked_entry_by_entry(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"thresholds": {"dog": 0.3, "siren": 1}}))
    assert read_thresholds(path, LABELS) == {"dog": 0.3, "siren": 1.0}
    for body, message in (({"thresholds": {"dgo": 0.3}}, "'dgo', which is not a label of this model \\(did you mean 'dog'"),
                          ({"dog": "high"}, "threshold for 'dog' is 'high'"),
                          ({"dog": 1.5}, "threshold for 'dog' is 1.5"),
                          ({"dog": True}, "threshold for 'dog' is True"),
                          ({}, "holds no thresholds")):
        path.write_text(json.dumps(body))
        with pytest.raises(UserError, match=message) as err:
            read_thresholds(path, LABELS)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_text('{"dog": NaN}')
    with pytest.raises(UserError, match="threshold for 'dog' is nan"):
        read_thresholds(path, LABELS)
    path.write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        read_thresholds(path, LABELS)


def test_calibration_finds_the_best_f1_threshold_by_brute_force():
    rng = np.random.default_rng(0)
    targets = (rng.random((300, 3)) < [0.2, 0.4, 0.0]).astype(float)
    scores = np.clip(targets * 0.4 + rng.random((300, 3)) * 0.7, 0, 1)
    result = calibrate(scores, targets, LABELS)
    assert set(result["thresholds"]) == {"dog", "siren"}  # bird has no positives: the global threshold stays

    def f1(c, t):
        predicted = scores[:, c] >= t
        tp = (predicted & (targets[:, c] > 0)).sum()
        return 2 * tp / (predicted.sum() + (targets[:, c] > 0).sum())

    for c, label in enumerate(LABELS[:2]):
        best = max(f1(c, t) for t in np.unique(scores[:, c]))
        assert f1(c, result["thresholds"][label]) == pytest.approx(best)
        assert result["classes"][label]["f1"] == pytest.approx(best)
    strict = calibrate(scores, targets, LABELS, target_precision=0.95)
    for c, label in enumerate(LABELS[:2]):
        t = strict["thresholds"][label]
        predicted = scores[:, c] >= t
        assert (targets[predicted, c] > 0).mean() >= 0.95
        lower = np.unique(scores[:, c])[np.unique(scores[:, c]) < t]
        if len(lower):  # any lower cut loses the precision
            below = scores[:, c] >= lower[-1]
            assert (targets[below, c] > 0).mean() < 0.95


def test_the_event_hook_never_blocks_and_counts(tmp_path):
    out = tmp_path / "got.jsonl"
    hook = EventHook(f"cat >> {out}")
    for k in range(3):
        hook.submit({"event": "start", "label": "dog", "k": k})
    report = hook.close()
    assert report["run"] == 3 and report["failed"] == 0
    assert [json.loads(line)["k"] for line in out.read_text().splitlines()] == [0, 1, 2]
    gate = tmp_path / "gate"  # each command waits until the test creates this file
    slow, submitted = EventHook(f"while [ ! -e {gate} ]; do sleep 0.02; done", queue_size=1), threading.Event()

    def submit_all():
        for k in range(5):
            slow.submit({"k": k})
        submitted.set()

    threading.Thread(target=submit_all, daemon=True).start()
    assert submitted.wait(60) and slow.run == 0  # every submit returned while the first command still waits
    gate.touch()
    report = slow.close(wait=10)
    assert report["dropped"] >= 3 and report["run"] + report["dropped"] == 5
    failing = EventHook("exit 3")
    failing.submit({"k": 0})
    report = failing.close()
    assert report["failed"] == 1 and "exit status 3" in report["last_error"]


# --- models, subsets and the commands --------------------------------------------------------------------

KWS = FbankConfig().with_dataset("speechcommands")
CLASSES = ["low", "high", "noise"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "astedge", *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def tone_model(tmp_path_factory):
    """A tiny AST that tells low tones, high tones and noise (from near silence to loud) apart: frame tokens (128x2)
    learn it in 20 steps. The tones lie on a faint noise floor, as in any recording: trained on pure tones, it took
    the floor's absence for the high tone and called a high tone over a noise floor "noise"."""
    root = tmp_path_factory.mktemp("events")
    torch.manual_seed(0)
    net = ASTModel(model_config("tiny", depth=1, num_classes=3, target_length=128, patch_size=(128, 2), fstride=128,
                                tstride=2))
    rng = np.random.default_rng(0)
    from astedge.features.fbank import model_input

    def clip(kind):
        t = np.arange(16000) / 16000
        floor = 10 ** rng.uniform(-3.5, -2) * rng.standard_normal(16000)
        if kind == 0:
            return floor + 0.3 * np.sin(2 * np.pi * rng.uniform(300, 500) * t)
        if kind == 1:
            return floor + 0.3 * np.sin(2 * np.pi * rng.uniform(3000, 4000) * t)
        return 10 ** rng.uniform(-3.3, -1) * rng.standard_normal(16000)

    labels = np.arange(96) % 3
    x = torch.from_numpy(np.stack([model_input(clip(k).astype(np.float32), KWS) for k in labels]))
    y = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(20):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    net.eval()
    checkpoint = save_checkpoint(root / "tones.safetensors", net, feature_config=KWS, labels=CLASSES, task="multiclass")
    exp.export(checkpoint, root / "export", engine=False, log=lambda m: None)
    # A stream: 2 s silence, 2 s low tone, 1 s silence, 3 s high tone, 2 s silence (truth in seconds).
    t = np.arange(16000 * 10) / 16000
    wave = 0.001 * rng.standard_normal(t.size)
    wave[32000:64000] += 0.3 * np.sin(2 * np.pi * 400 * t[32000:64000])
    wave[80000:128000] += 0.3 * np.sin(2 * np.pi * 3500 * t[80000:128000])
    sf.write(root / "stream.wav", wave.astype(np.float32), 16000)
    (root / "truth.csv").write_text("onset,offset,label\n2.0,4.0,low\n5.0,8.0,high\n")
    return root


def test_export_of_a_class_subset_is_verified_against_the_full_model(tone_model, tmp_path):
    (tmp_path / "keep.txt").write_text("high\n0\n")
    summary = exp.export(tone_model / "tones.safetensors", tmp_path / "sub", engine=False, classes=tmp_path / "keep.txt",
                         renormalize=True, log=lambda m: None)  # a softmax subset: renormalized, as asked
    from astedge import artefact as art
    from astedge.runtime.backends import choose_backend

    meta = art.read_metadata(tmp_path / "sub")
    assert meta["labels"] == ["high", "low"] and meta["classes"]["indices"] == [1, 0]
    assert meta["classes"]["max_abs_diff"] <= 1e-4 and summary["files"]["onnx"]
    full = choose_backend(tone_model / "export", "onnxruntime-cpu").backend
    part = choose_backend(tmp_path / "sub", "onnxruntime-cpu").backend
    x = np.random.default_rng(1).standard_normal((3, 128, 128)).astype(np.float32)
    np.testing.assert_allclose(part.run(x), full.run(x)[:, [1, 0]], atol=1e-4)
    torch_part = choose_backend(tmp_path / "sub", "torch").backend  # the checkpoint behind it, the same subset
    np.testing.assert_allclose(torch_part.run(x), part.run(x), atol=1e-4)
    (tmp_path / "bad.txt").write_text("hgih\n")
    with pytest.raises(UserError, match="'hgih' is neither a label of the model nor an index below 3 \\(did you mean"):
        exp.export(tone_model / "tones.safetensors", tmp_path / "bad", engine=False, classes=tmp_path / "bad.txt")
    assert not (tmp_path / "bad").exists()


#: Events of the tone stream: 10 Hz decisions on 1 s windows, noise is not an event.
EVENT_OPTIONS = ["--hop", "0.1", "--smoothing", "median", "--smoothing-windows", "3", "--threshold", "0.6",
                 "--deny", "noise"]


def _events(stdout: str) -> list[dict]:
    """The event records of a command's --json output (JSON Lines)."""
    return [r for r in map(json.loads, stdout.splitlines()) if r["type"] == "event"]


def _ended(stdout: str) -> list[dict]:
    """The end records of an event stream, without the fields that say when or where they were printed."""
    return [{k: v for k, v in r.items() if k not in ("file", "first_detected_wall")} for r in _events(stdout)
            if r["event"] == "end"]


def test_classify_events_are_the_true_events_and_evaluate_scores_them(tone_model, tmp_path):
    model, stream, truth = tone_model / "export", tone_model / "stream.wav", tone_model / "truth.csv"
    result = cli("classify", str(stream), "-m", str(model), "--events", "--json", "--events-csv",
                 str(tmp_path / "ev.csv"), *EVENT_OPTIONS)
    assert result.returncode == 0, result.stderr
    lines = _events(result.stdout)
    assert [r["event"] for r in lines] == ["start", "end"] * 2 and all(r["file"] == str(stream) for r in lines)
    reference = em.read_events_csv(truth)  # low 2-4 s, high 5-8 s
    ends = _ended(result.stdout)
    assert [r["label"] for r in ends] == [e.label for e in reference] == ["low", "high"]
    # An onset is the centre of the first window that fires: not before that window holds any of the sound (half a
    # 1 s window early) and no later than the window half filled with it (one 0.1 s hop of slack); offsets mirror it.
    for found, true in zip(ends, reference):
        assert true.onset - 0.5 <= found["onset"] <= true.onset + 0.1, (found, true)
        assert true.offset - 0.1 <= found["offset"] <= true.offset + 0.5, (found, true)
        assert found["peak_score"] >= 0.6 and true.onset <= found["first_detected_at"] <= true.offset
    detected = em.read_events_csv(tmp_path / "ev.csv", by_file=True)[str(stream)]
    assert [(e.onset, e.offset, e.label) for e in detected] == [(r["onset"], r["offset"], r["label"]) for r in ends]
    report = cli("evaluate", str(stream), "-m", str(model), "--truth", str(truth), "--json", "--collar", "0.5",
                 *EVENT_OPTIONS)
    assert report.returncode == 0, report.stderr
    got = json.loads(report.stdout.splitlines()[-1])
    assert got["true_events"] == got["detected_events"] == 2
    assert got["event_based"]["f1"] == 1.0  # both found, as above, and nothing else
    segment = em.segment_based(reference, detected, CLASSES, duration=10.0)
    assert got["segment_based"]["f1"] == pytest.approx(segment["micro"]["f1"]) and 0.7 < segment["micro"]["f1"] < 1
    text = cli("evaluate", str(stream), "-m", str(model), "--truth", str(truth), *EVENT_OPTIONS)
    assert text.returncode == 0 and "event-based F1" in text.stdout and "decision latency" in text.stdout


def test_listen_events_are_the_events_classify_finds(tone_model, tmp_path):
    model, stream, hooked = tone_model / "export", tone_model / "stream.wav", tmp_path / "hook.jsonl"
    result = cli("listen", "-m", str(model), "--source", str(stream), "--events", "--json", "--on-event",
                 f"cat >> {hooked}", "--events-csv", str(tmp_path / "live.csv"), *EVENT_OPTIONS)
    assert result.returncode == 0, result.stderr
    batch = cli("classify", str(stream), "-m", str(model), "--events", "--json", *EVENT_OPTIONS)
    assert batch.returncode == 0, batch.stderr
    assert _ended(result.stdout) == _ended(batch.stdout) and len(_ended(result.stdout)) == 2
    lines = _events(result.stdout)
    assert [r["event"] for r in lines] == ["start", "end"] * 2
    assert sorted(json.loads(x)["event"] for x in hooked.read_text().splitlines()) == sorted(r["event"] for r in lines)
    live = em.read_events_csv(tmp_path / "live.csv")
    assert [(e.onset, e.offset, e.label) for e in live] == [(r["onset"], r["offset"], r["label"])
                                                            for r in _ended(result.stdout)]


def test_calibrate_command_and_its_thresholds_in_an_export(tone_model, tmp_path):
    data = tmp_path / "clips"
    rng = np.random.default_rng(5)
    t = np.arange(16000) / 16000
    for label, make in (("low", lambda: np.sin(2 * np.pi * rng.uniform(300, 500) * t)),
                        ("high", lambda: np.sin(2 * np.pi * rng.uniform(3000, 4000) * t)),
                        ("noise", lambda: 0.3 * rng.standard_normal(t.size))):
        (data / label).mkdir(parents=True)
        for k in range(12):
            sf.write(data / label / f"{label}{k}.wav", (0.3 * make()).astype(np.float32), 16000)
    result = cli("calibrate", str(data), "-m", str(tone_model / "export"), "-o", str(tmp_path / "t.json"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    saved = read_thresholds(tmp_path / "t.json", CLASSES)
    assert saved == pytest.approx(report["thresholds"]) and set(saved) <= set(CLASSES)
    exp.export(tone_model / "tones.safetensors", tmp_path / "calibrated", engine=False,
               thresholds=tmp_path / "t.json", log=lambda m: None)
    from astedge.runtime.model_path import export_thresholds

    assert export_thresholds(tmp_path / "calibrated") == pytest.approx(saved)
    (tmp_path / "bad.json").write_text('{"thresholds": {"loud": 0.5}}')
    bad = cli("listen", "-m", str(tone_model / "export"), "--source", str(tone_model / "stream.wav"), "--events",
              "--thresholds", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "bad.json" in bad.stderr and "'loud'" in bad.stderr and "Traceback" not in bad.stderr


def test_a_truth_table_with_bad_rows_is_one_line(tone_model, tmp_path):
    (tmp_path / "truth.csv").write_text("onset,offset,label\n1.0,2.0,low\n3.0,x,high\n")
    result = cli("evaluate", str(tone_model / "stream.wav"), "-m", str(tone_model / "export"), "--truth",
                 str(tmp_path / "truth.csv"))
    assert result.returncode == 2 and "truth.csv: row 3" in result.stderr and "Traceback" not in result.stderr


def test_a_single_label_event_holds_while_its_class_stays_above_its_off_threshold():
    """Softmax frames of one sound wavering between two confusable classes: the running event (A) holds through
    frames where B tops it but A stays above its off-threshold (0.5 x 0.8), so one A event, not A-B-A; once A falls
    below, B starts."""
    from astedge.runtime.events import EventConfig, EventDetector

    a = [0.0, 0.7, 0.45, 0.42, 0.6, 0.3, 0.1, 0.1, 0.0]
    b = [0.0, 0.2, 0.50, 0.55, 0.3, 0.6, 0.8, 0.7, 0.0]
    detector = EventDetector(["A", "B", "background"], "multiclass", EventConfig(threshold=0.5, off_ratio=0.8),
                             mask=np.array([True, True, False]), widen=0.05)  # frames: each spans its 0.1 s whole
    records = []
    for k, (sa, sb) in enumerate(zip(a, b, strict=True)):
        records += detector.update(k * 0.1, (k + 1) * 0.1, np.array([sa, sb, 1 - sa - sb]))
    records += detector.finish()
    ends = [(r["label"], r["onset"], r["offset"]) for r in records if r["event"] == "end"]
    assert ends == [("A", 0.1, 0.5), ("B", 0.5, 0.8)], ends
