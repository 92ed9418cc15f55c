"""What a script can rely on: strict JSON from every --json, one record shape per concept (JSON Lines with a "type"),
CSV that reads back, human views without --json, records as soon as they are ready, and one way to name a model
(-m/--model, else $ASTEDGE_MODEL) in every command that runs one."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from astedge import artefact as art
from astedge.audio.decode import load_audio
from astedge.cli import main
from astedge.features.fbank import model_input
from conftest import run_without_torch
from test_events import KWS, tone_model  # noqa: F401 - the trained 3-class tone model and its export


def _refuse(constant: str):
    raise ValueError(f"{constant} is not JSON")


def strict(text: str):
    """json.loads that refuses NaN and Infinity, as most JSON parsers do."""
    return json.loads(text, parse_constant=_refuse)


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.err.strip().splitlines()

    def records(self) -> list[dict]:
        """stdout as JSON Lines, every line strict."""
        return [strict(line) for line in self.out.splitlines() if line.strip()]


def astedge(*args) -> Run:
    """The CLI in this process (its entry point, as `astedge` runs it): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["astedge", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    finally:
        sys.argv = argv
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def files(tone_model, tmp_path_factory) -> dict:  # noqa: F811
    """The tone model's files, labelled clips to calibrate on, and a truth table with a silent class."""
    root = tmp_path_factory.mktemp("contract")
    rng = np.random.default_rng(5)
    t = np.arange(16000) / 16000
    for label, make in (("low", lambda: np.sin(2 * np.pi * rng.uniform(300, 500) * t)),
                        ("high", lambda: np.sin(2 * np.pi * rng.uniform(3000, 4000) * t)),
                        ("noise", lambda: rng.standard_normal(t.size))):
        (root / "clips" / label).mkdir(parents=True)
        for k in range(8):
            sf.write(root / "clips" / label / f"{label}{k}.wav", (0.3 * make()).astype(np.float32), 16000)
    return {"export": tone_model / "export", "checkpoint": tone_model / "tones.safetensors",
            "stream": tone_model / "stream.wav", "truth": tone_model / "truth.csv", "clips": root / "clips",
            "root": root}


EVENTS = ("--hop", "0.1", "--smoothing", "median", "--threshold", "0.6")


# --- outputs a script can trust ---------------------------------------------------------------------------------

def test_every_json_output_is_strict_json(files, tmp_path):
    """Each --json output parses with a parser that refuses NaN/Infinity: evaluate's undefined scores (a class never
    true nor detected) are null, and records are JSON Lines."""
    model, stream, truth = files["export"], files["stream"], files["truth"]
    lines = {
        "classify": astedge("classify", stream, "-m", model, "--json", "--events", *EVENTS),
        "listen": astedge("listen", "-m", model, "--source", stream, "--json", "--events", *EVENTS),
        "evaluate": astedge("evaluate", stream, "-m", model, "--truth", truth, "--json", "--hop", "0.1",
                            "--threshold", "0.97", "--min-duration", "60"),  # no events: noise is never true nor detected
    }
    documents = {
        "calibrate": astedge("calibrate", files["clips"], "-m", model, "-o", tmp_path / "t.json", "--json"),
        "features": astedge("features", stream, "-o", tmp_path / "f.npy", "--json"),
        "predict": astedge("predict", stream, "-m", model, "--json"),
        "doctor": astedge("doctor", "--json"),
        "data events": astedge("data", "events", tmp_path / "ev", "--seconds", "10", "--rate", "16000", "--json"),
        "bench": astedge("bench", "-m", model, "--backend", "onnxruntime-cpu", "--iters", "2", "--warmup", "0",
                         "--json"),
    }
    for name, run in {**lines, **documents}.items():
        assert run.code == 0, (name, run.err)
    records = {name: run.records() for name, run in lines.items()}
    for name, run in documents.items():
        strict(run.out)
    classes = {r["label"]: r for r in records["evaluate"] if r["type"] == "class"}
    assert classes["noise"]["true_events"] == classes["noise"]["detected_events"] == 0
    assert classes["noise"]["f1"] is None and classes["noise"]["precision"] is None  # sed_eval's NaN


def test_json_goes_through_the_strict_writer_in_every_command():
    """train, distill, demo, import and build-engine too: no command writes JSON but through astedge.cli.app."""
    cli = Path(__file__).resolve().parents[1] / "astedge" / "cli"
    for source in cli.glob("*.py"):
        if source.name != "app.py":
            text = source.read_text()
            assert "json.dumps" not in text and "sys.stdout.write" not in text, source.name


def test_records_have_one_shape_everywhere(files, tmp_path):
    """Windows, aggregates, events, classes and summaries are objects with a "type"; an event is the same object
    whether classify, listen or evaluate reports it, and its file is "file" in JSON and in CSV."""
    model, stream, truth = files["export"], files["stream"], files["truth"]
    classify = astedge("classify", stream, "-m", model, "--json", "--events", "--events-csv", tmp_path / "c.csv",
                       *EVENTS).records()
    listen = astedge("listen", "-m", model, "--source", stream, "--json", "--events", *EVENTS).records()
    evaluate = astedge("evaluate", stream, "-m", model, "--truth", truth, "--json", *EVENTS).records()
    assert {r["type"] for r in classify} == {"window", "aggregate", "event"}
    assert [r["type"] for r in listen][-1] == "summary" and {r["type"] for r in listen} == {"window", "event",
                                                                                              "summary"}
    assert [r["type"] for r in evaluate][-1] == "summary" and {r["type"] for r in evaluate} == {"event", "class",
                                                                                                  "summary"}
    ends = {name: [r for r in records if r["type"] == "event" and r["event"] == "end"]
            for name, records in (("classify", classify), ("listen", listen), ("evaluate", evaluate))}
    assert len(ends["classify"]) >= 3
    assert {frozenset(r) for r in ends["classify"] + ends["evaluate"]} == {frozenset(ends["listen"][0]) | {"file"}}
    span = lambda r: (r["label"], r["index"], r["onset"], r["offset"], r["duration"])  # noqa: E731
    assert [span(r) for r in ends["classify"]] == [span(r) for r in ends["listen"]]
    assert [r["file"] for r in ends["classify"]] == [r["file"] for r in ends["evaluate"]] == [str(stream)] * len(ends["listen"])
    assert (tmp_path / "c.csv").read_text().splitlines()[0] == "file,onset,offset,label,peak_score,first_detected_at"


def test_evaluate_events_csv_holds_what_was_detected_and_reads_back_as_truth(files, tmp_path):
    model, stream = files["export"], files["stream"]
    first = astedge("evaluate", stream, "-m", model, "--truth", files["truth"], "--json", "--events-csv",
                    tmp_path / "found.csv", *EVENTS)
    assert first.code == 0, first.err
    ends = [r for r in first.records() if r["type"] == "event"]
    rows = (tmp_path / "found.csv").read_text().splitlines()
    assert rows[1:] == [f"{stream},{r['onset']:.3f},{r['offset']:.3f},{r['label']},{r['peak_score']:.6f},"
                        f"{r['first_detected_at']:.3f}" for r in ends]
    assert ends and all(r["peak_score"] >= 0.6 and r["first_detected_at"] > r["onset"] for r in ends)
    again = astedge("evaluate", stream, "-m", model, "--truth", tmp_path / "found.csv", "--json", *EVENTS)
    assert again.code == 0, again.err
    summary = again.records()[-1]
    assert summary["true_events"] == summary["detected_events"] == len(ends)
    assert summary["event_based"]["f1"] == summary["segment_based"]["f1"] == 1.0  # the same events: a perfect match


def test_evaluate_reports_every_decision_setting_it_used(files, tmp_path):
    (tmp_path / "t.json").write_text('{"thresholds": {"low": 0.7}}')
    run = astedge("evaluate", files["stream"], "-m", files["export"], "--truth", files["truth"], "--json", "--hop",
                  "0.25", "--smoothing", "max", "--smoothing-windows", "3", "--threshold", "0.6", "--thresholds",
                  tmp_path / "t.json", "--off-ratio", "0.7", "--confirm", "2/3", "--min-duration", "0.2",
                  "--merge-gap", "0.3", "--trim", "0.1", "--deny", "noise")
    assert run.code == 0, run.err
    settings = run.records()[-1]["settings"]
    assert settings == {**settings, "window_s": 1.0, "hop_s": 0.25, "smoothing": "max", "smoothing_windows": 3,
                        "lag_s": {"onset": 0.0, "offset": 0.5}, "allow": [], "deny": ["noise"], "threshold": 0.6,
                        "thresholds": {"low": 0.7}, "off_ratio": 0.7, "confirm": [2, 3], "min_duration": 0.2,
                        "merge_gap": 0.3, "trim": 0.1}


def test_human_views_events_table_and_per_class_table(files):
    model, stream, truth = files["export"], files["stream"], files["truth"]
    records = astedge("classify", stream, "-m", model, "--json", "--events", *EVENTS).records()
    table = astedge("classify", stream, "-m", model, "--events", *EVENTS)
    assert table.code == 0 and not table.out.lstrip().startswith("{")
    rows = [line.split() for line in table.out.splitlines()[1:]]
    assert rows[0] == ["onset", "offset", "label", "peak"]
    assert rows[1:] == [[f"{r['onset']:.3f}", f"{r['offset']:.3f}", r["label"], f"{r['peak_score']:.3f}"]
                        for r in records if r["type"] == "event" and r["event"] == "end"]
    report = astedge("evaluate", stream, "-m", model, "--truth", truth, *EVENTS)
    classes = {r["label"]: r for r in astedge("evaluate", stream, "-m", model, "--truth", truth, "--json",
                                              *EVENTS).records() if r["type"] == "class"}
    header = next(line.split() for line in report.out.splitlines() if line.split()[:2] == ["label", "true"])
    assert header == ["label", "true", "detected", "matched", "F1", "precision", "recall"]
    for label, row in classes.items():
        line = next(line.split() for line in report.out.splitlines() if line.split()[:1] == [label])
        assert line[1:4] == [str(row["true_events"]), str(row["detected_events"]), str(row["matched"])]


def test_classify_streams_each_window_as_it_is_ready_with_progress_on_stderr(files, monkeypatch):
    """The first record is out before the backend has seen the last window; a progress bar goes to a terminal's
    stderr and never to stdout."""
    import importlib

    from rich.console import Console

    from astedge.runtime.backends.onnxruntime import OnnxRuntimeBackend

    cli_app = importlib.import_module("astedge.cli.app")  # the module (astedge.cli.app is also the Typer app's name)

    calls, written = [], []
    run = OnnxRuntimeBackend.run
    monkeypatch.setattr(OnnxRuntimeBackend, "run", lambda self, x: calls.append(len(x)) or run(self, x))
    terminal = io.StringIO()
    monkeypatch.setattr(cli_app, "err_console", Console(file=terminal, force_terminal=True, width=100))

    class Spy(io.StringIO):
        def write(self, text):
            written.append(len(calls))
            return super().write(text)

    argv, sys.argv = sys.argv, ["astedge", "classify", str(files["stream"]), "-m", str(files["export"]), "--hop",
                                "0.1", "--batch-size", "4", "--json"]
    with contextlib.redirect_stdout(Spy()) as out, pytest.raises(SystemExit) as exit_:
        main()
    sys.argv = argv
    assert exit_.value.code == 0
    assert len(calls) == 23 and written[0] == 1 and written[-1] == 23  # 91 windows, 4 per call: record by record
    assert all(strict(line)["type"] in ("window", "aggregate") for line in out.getvalue().splitlines())
    assert "stream.wav" in terminal.getvalue()  # the progress bar, drawn on the (terminal) stderr


def test_calibration_scores_clips_as_it_reads_them(files):
    from astedge.data.datasets import read_dataset
    from astedge.measure import evaluation
    from astedge.runtime.classifier import Classifier

    events, seen = [], []
    data = read_dataset(files["clips"])
    with Classifier.from_options(files["export"]) as classifier:
        run = classifier.clip_scores
        classifier.clip_scores = lambda waves, **kw: events.append(("score", len(waves))) or run(waves, **kw)
        import astedge.audio.decode as decode

        load = decode.load_audio
        decode.load_audio = lambda *a, **kw: events.append(("read", 1)) or load(*a, **kw)
        try:
            scores, targets = evaluation.score_clips(classifier, data, "train", batch_size=4,
                                                     progress=lambda n, total: seen.append((n, total)))
        finally:
            decode.load_audio = load
    clips = len(data.splits["train"])
    assert events[:5] == [("read", 1)] * 4 + [("score", 4)]  # a batch is scored before the next is read
    assert sum(n for n, _ in seen) == clips and {total for _, total in seen} == {clips}
    assert scores.shape == targets.shape == (clips, 3)


# --- one way to say things ---------------------------------------------------------------------------------------

def test_every_command_that_runs_a_model_takes_it_from_the_environment(files, tmp_path, monkeypatch):
    checkpoint = files["checkpoint"]
    monkeypatch.setenv("ASTEDGE_MODEL", str(checkpoint))
    stream, truth = files["stream"], files["truth"]
    runs = {
        "classify": astedge("classify", stream, "--json"),
        "listen": astedge("listen", "--source", stream, "--json"),
        "predict": astedge("predict", stream, "--json"),
        "evaluate": astedge("evaluate", stream, "--truth", truth, "--json"),
        "calibrate": astedge("calibrate", files["clips"], "-o", tmp_path / "t.json", "--json"),
        "features": astedge("features", stream, "-o", tmp_path / "f.npy", "--json"),
        "bench": astedge("bench", "--backend", "torch", "--iters", "2", "--warmup", "0", "--json"),
        "frontier": astedge("frontier", "--eval", files["clips"], "--rounds", "1", "--json"),
        "export": astedge("export", "-o", tmp_path / "exp", "--no-fp16", "--no-engine", "--json"),
    }
    for name, run in runs.items():
        assert run.code == 0, (name, run.err)
    assert "backend torch" in runs["classify"].err and "backend torch" in runs["listen"].err
    assert strict(runs["predict"].out)["model"] == str(checkpoint)
    assert runs["evaluate"].records()[-1]["true_events"] == 2
    assert strict(runs["calibrate"].out)["thresholds"]
    assert strict(runs["features"].out)["shape"] == [128, 128]  # the model's 128 frames, not AudioSet's 1024
    assert strict(runs["bench"].out)["model"]["path"] == str(checkpoint)
    assert [r["path"] for r in strict(runs["frontier"].out)["rows"]] == [str(checkpoint)]
    assert art.read_metadata(tmp_path / "exp")["source"]["checkpoint"] == str(checkpoint.resolve())


def test_old_spellings_say_the_new_one(files, tmp_path):
    model, stream = files["export"], files["stream"]
    for args, fragment in ((("calibrate", model, files["clips"], "-o", tmp_path / "t.json"),
                            "astedge calibrate DATA -m MODEL -o thresholds.json"),
                           (("evaluate", model, stream, "--truth", files["truth"]),
                            "astedge evaluate AUDIO... -m MODEL --truth CSV"),
                           (("calibrate", files["clips"], "-m", model, "-o", tmp_path / "t.json", "--precision",
                             "0.9"), "--target-precision 0.9"),
                           (("listen", "-m", model, "--device", "cpu"), "--backend")):
        run = astedge(*args)
        assert run.code == 2 and len(run.lines) == 1 and fragment in run.lines[0], run.err
    run = astedge("calibrate", files["clips"], "-m", model, "-o", tmp_path / "t.json", "--target-precision", "0.9",
                  "--json")
    assert run.code == 0 and strict(run.out)["method"] == "precision >= 0.9"
    assert not tmp_path.joinpath("t.json").read_text().count('"threshold":')  # one copy: under "thresholds" only
    old = astedge("export", files["checkpoint"], "-o", tmp_path / "old", "--no-fp16", "--no-engine")
    assert old.code == 0, old.err  # the older `export MODEL -o DIR` still works: it cannot mean anything else


def test_predict_takes_an_export_folder_as_classify_does(files):
    by_checkpoint = strict(astedge("predict", files["stream"], "-m", files["checkpoint"], "--json", "-k", "3").out)
    by_export = strict(astedge("predict", files["stream"], "-m", files["export"], "--json", "-k", "3").out)
    assert (by_checkpoint["backend"], by_export["backend"]) == ("torch", "onnxruntime-cpu")
    assert [r["label"] for r in by_export["top"]] == [r["label"] for r in by_checkpoint["top"]]
    np.testing.assert_allclose([r["score"] for r in by_export["top"]], [r["score"] for r in by_checkpoint["top"]],
                               atol=1e-4)


def test_features_of_a_model_and_no_overwrite_without_force(files, tmp_path):
    out = tmp_path / "f.npy"
    assert astedge("features", files["stream"], "-o", out, "-m", files["export"]).code == 0
    expected = model_input(load_audio(files["stream"]), KWS)  # the model's speechcommands statistics, 128 frames
    np.testing.assert_array_equal(np.load(out), expected)
    before = out.read_bytes()
    again = astedge("features", files["stream"], "-o", out, "--raw")
    assert again.code == 2 and len(again.lines) == 1 and "exists; pass --force" in again.lines[0]
    assert out.read_bytes() == before
    assert astedge("features", files["stream"], "-o", out, "--raw", "--force").code == 0
    assert np.load(out).shape == (998, 128)
    both = astedge("features", files["stream"], "-o", tmp_path / "g.npy", "-m", files["export"], "--dataset", "esc50")
    assert both.code == 2 and "fixes both" in both.err


def test_classify_a_folder_classifies_its_audio_files(files, tmp_path):
    folder = tmp_path / "recordings"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(files["stream"], folder / "a.wav")
    shutil.copy(files["stream"], folder / "day2" / "b.wav")
    (folder / "notes.txt").write_text("not audio\n")
    run = astedge("classify", folder, "-m", files["export"], "--json")
    assert run.code == 0, run.err
    aggregates = [r["file"] for r in run.records() if r["type"] == "aggregate"]
    assert aggregates == [str(folder / "a.wav")] * 2 + [str(folder / "day2" / "b.wav")] * 2


def test_bench_times_the_exports_int8_model_as_its_own_row(files, tmp_path):
    """A stand-in INT8 model (the FP32 graph under model.int8.onnx) is enough to see bench load and time it."""
    folder = tmp_path / "with-int8"
    shutil.copytree(files["export"], folder)
    shutil.copy(folder / art.ONNX_FILE, folder / art.ONNX_INT8_FILE)
    meta = art.read_metadata(folder)
    meta["files"]["onnx_int8"] = art.ONNX_INT8_FILE
    art.write_metadata(folder, meta)
    run = astedge("bench", "-m", folder, "--backend", "onnxruntime-cpu", "--iters", "2", "--warmup", "0", "--json")
    assert run.code == 0, run.err
    report = strict(run.out)
    assert [(r["backend"], r["precision"]) for r in report["results"]] == [("onnxruntime-cpu", "fp32"),
                                                                           ("onnxruntime-cpu", "int8")]
    assert "int8" in astedge("bench", "--help").out


def test_a_softmax_subset_is_refused_unless_renormalized(files, tmp_path):
    (tmp_path / "keep.txt").write_text("low\nhigh\n")
    args = ("export", "-m", files["checkpoint"], "-o", tmp_path / "sub", "--classes", tmp_path / "keep.txt",
            "--no-fp16", "--no-engine", "--json")
    refused = astedge(*args)
    assert refused.code == 2 and len(refused.lines) == 1 and "pass --renormalize" in refused.lines[0]
    assert "(noise)" in refused.lines[0] and not (tmp_path / "sub").exists()
    accepted = astedge(*args, "--renormalize")
    assert accepted.code == 0, accepted.err
    assert any("renormalized" in w for w in strict(accepted.out)["warnings"])
    assert art.read_metadata(tmp_path / "sub")["labels"] == ["low", "high"]


# --- the Jetson's view: no torch ---------------------------------------------------------------------------------

def test_classify_listen_evaluate_run_where_torch_cannot_be_imported(files, tmp_path):
    """An ONNX export through the CLI with torch, timm, transformers and onnx blocked before astedge starts: the
    records equal those of the full install's run (wall-clock fields aside)."""
    model, stream, truth = files["export"], files["stream"], files["truth"]
    commands = {"classify": ["classify", str(stream), "-m", str(model), "--json", "--events", *EVENTS],
                "listen": ["listen", "-m", str(model), "--source", str(stream), "--json", "--events", *EVENTS],
                "evaluate": ["evaluate", str(stream), "-m", str(model), "--truth", str(truth), "--json", *EVENTS]}
    for name, args in commands.items():
        code = f"import sys\nsys.argv = ['astedge', *{args!r}]\nfrom astedge.cli import main\nmain()\n"
        blocked = run_without_torch(code, blocked=("torch", "timm", "torchvision", "transformers", "onnx"))
        assert blocked.returncode == 0, (name, blocked.stderr)
        assert "onnxruntime-cpu" in blocked.stderr
        full = astedge(*args)

        def steady(records):
            drop = {"latency_ms", "first_detected_wall", "wall_s", "inference_ms", "window_ms", "delay_ms",
                    "real_time_factor", "hop_load"}
            return [{k: v for k, v in r.items() if k not in drop} for r in records]

        got = [strict(line) for line in blocked.stdout.splitlines()]
        assert steady(got) == steady(full.records()) and len(got) > 3, name
