"""The runtime object: ClassifierOptions checks, the Classifier against hand-wired references (the tiny export of
test_runtime), the default hops, the backend capability contract, and the commands' shared options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from astedge.audio import capture
from astedge.audio import decode as audio_io
from astedge.errors import UserError
from astedge.features import fbank as F
from astedge.runtime.backends import OpensStreams, RunsAudio
from astedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from astedge.runtime.classifier import DEFAULT_STREAM_HOP, Classifier, ClassifierOptions, as_classifier
from astedge.runtime.events import EventConfig, EventDetector
from astedge.runtime.scores import activate
from astedge.runtime.windows import window_starts
from test_runtime import KWS, LABELS, model, wav  # noqa: F401 - module fixtures: the tiny export and a 6 s scene

RATE = KWS.sample_rate


# --- options ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"top_k": 0}, "--top-k must be >= 1"),
    ({"batch_size": 0}, "--batch-size must be >= 1"),
    ({"threads": 0}, "--threads must be >= 1"),
    ({"max_seconds": 0.0}, "--max-seconds must be > 0"),
    ({"duration": -1.0}, "--duration must be > 0"),
    ({"allow": ["Dog"], "deny": ["Speech"]}, "--allow and --deny are mutually exclusive"),
    ({"partial": "grow"}, "--partial must be one of wait, pad, got 'grow'"),
    ({"smoothing": "mean"}, "--smoothing must be one of none, ema, median, max"),
    ({"smoothing_windows": 0}, "--smoothing-windows must be >= 1"),
    ({"events": True, "event_threshold": 1.5}, "threshold must be in \\[0, 1\\], got 1.5"),
    ({"events": True, "off_ratio": 0.0}, "the off-threshold ratio must be in \\(0, 1\\]"),
    ({"events": True, "confirm": "3/2"}, "--confirm N/M needs 1 <= N <= M, got 3/2"),
    ({"events": True, "confirm": "x"}, "--confirm expects N/M such as 2/3, got 'x'"),
    ({"events": True, "min_duration": -0.1}, "--min-duration, --merge-gap and --trim must be >= 0"),
])
def test_options_name_the_option_that_is_wrong(changes, message):
    with pytest.raises(UserError, match=message):
        ClassifierOptions(**changes)


def test_options_check_event_settings_only_with_events_and_normalize_lists():
    quiet = ClassifierOptions(confirm="x", off_ratio=0.0, event_threshold=2.0)  # the decision layer does not run
    assert quiet.events is False
    options = ClassifierOptions(allow=["Dog", "Siren"], events=True, confirm=(2, 3), event_threshold=0.6)
    assert options.allow == ("Dog", "Siren") and hash(options.allow)
    config = options.event_config({"Dog": 0.7})
    assert (config.threshold, config.confirm, config.confirm_window, config.thresholds) == (0.6, 2, 3, {"Dog": 0.7})
    assert ClassifierOptions(events=True, confirm="2/4").event_config().confirm_window == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.hop = 1.0


def test_labels_and_thresholds_are_checked_against_the_model(model):  # noqa: F811
    backend = OnnxRuntimeBackend(model[1])
    with pytest.raises(UserError, match="'Dgo' is not a label of this model \\(did you mean 'Dog'"):
        Classifier(backend, ClassifierOptions(deny=("Dgo",)))
    with pytest.raises(UserError, match="threshold for 'Cat', which is not a label of this model"):
        Classifier(backend, ClassifierOptions(events=True, thresholds={"Cat": 0.5}))
    with pytest.raises(UserError, match="threshold for 'Dog' is 2"):
        Classifier(backend, ClassifierOptions(events=True, thresholds={"Dog": 2}))
    classifier = Classifier(backend, ClassifierOptions(events=True, thresholds={"Dog": 0.25}))
    assert classifier.event_config.thresholds == {"Dog": 0.25} and classifier.mask is None
    with pytest.raises(UserError, match="--window 5 s is longer than the model's input"):
        Classifier.from_options(model[1], ClassifierOptions(window=5.0))


# --- the Classifier against hand wiring ------------------------------------------------------------------------


def _median3(rows: list[np.ndarray]) -> list[np.ndarray]:
    """A per-class median over the last three score vectors (fewer at the start), as a reference."""
    return [np.median(np.stack(rows[max(0, i - 2):i + 1]), axis=0) for i in range(len(rows))]


def test_classify_file_gives_exactly_the_hand_wired_results(model, wav):  # noqa: F811
    """Windows cut by hand, features by F.model_input per window, the backend on each, probabilities, a median over 3
    windows, the top 3 among the allowed classes, and an EventDetector fed those scores with the smoother's lag."""
    options = ClassifierOptions(hop=0.25, top_k=3, deny=("Speech",), smoothing="median", smoothing_windows=3,
                                events=True, event_threshold=0.75, confirm="2/3", batch_size=3)
    with Classifier.from_options(model[1], options) as classifier:
        result = classifier.classify_file(wav)
        backend = classifier.backend
        assert not isinstance(backend, RunsAudio) and classifier.windowing().hop == 4000
        wave = audio_io.load_audio(wav)
        starts = window_starts(len(wave), 16000, 4000, tail=True, min_tail=KWS.window_shift)
        logits = [backend.run(F.model_input(wave[s:s + 16000], KWS)[None])[0] for s in starts]
    raw = [activate(row, "multilabel") for row in logits]
    smoothed = _median3(raw)
    allowed = [i for i, label in enumerate(LABELS) if label != "Speech"]
    detector = EventDetector(LABELS, "multilabel", EventConfig(threshold=0.75, confirm=2, confirm_window=3),
                             np.array([label != "Speech" for label in LABELS]), file=str(wav), lag=1 * 0.25)
    records = []
    assert len(result.windows) == len(starts) == 21
    for s, window, row, scores in zip(starts, result.windows, logits, smoothed, strict=True):
        end = min(len(wave), s + 16000) / RATE
        assert (window.start, window.end, window.file) == (s / RATE, end, str(wav))
        np.testing.assert_allclose(window.logits, row, atol=1e-5)
        best = sorted(allowed, key=lambda i: -scores[i])[:3]
        assert [t.index for t in window.top] == best
        np.testing.assert_allclose([t.score for t in window.top], scores[best], atol=1e-6)
        records += detector.update(s / RATE, end, scores)
    records += detector.finish(len(wave) / RATE)
    assert records, "the reference finds events: the comparison below is not empty"
    strip = lambda rs: [{k: v for k, v in r.items() if k != "first_detected_wall"} for r in rs]  # noqa: E731
    assert strip(result.events) == strip(records)
    assert [(e.onset, e.offset, e.label) for e in result.detected] == [(e.onset, e.offset, e.label)
                                                                       for e in detector.events]
    mean, peak = np.mean(raw, axis=0), np.max(raw, axis=0)  # the clip aggregates: the model's own scores
    np.testing.assert_allclose([t.score for t in result.mean.top], mean[[t.index for t in result.mean.top]], atol=1e-6)
    assert [t.index for t in result.max.top] == sorted(allowed, key=lambda i: -peak[i])[:3]


def test_listen_over_a_file_gives_the_window_scores_of_classify_file(model, wav):  # noqa: F811
    options = ClassifierOptions(hop=0.4, top_k=10, smoothing="ema", events=True, event_threshold=0.75)
    with Classifier.from_options(model[1], options) as classifier:
        assert classifier.windowing(stream=True) == classifier.windowing()  # an explicit hop: the same windows
        batch = classifier.classify_file(wav)
        with classifier.listen(capture.FileSource(wav)) as listener:
            results = list(listener.results())
        ended = listener.finish_events()
    assert [(r.start, r.end) for r in results] == [(w.start, w.end) for w in batch.windows] and len(results) == 14
    assert max(np.abs(r.logits - w.logits).max() for r, w in zip(results, batch.windows)) <= 1e-5
    for r, w in zip(results, batch.windows):  # the same smoothed top-10
        assert [t.index for t in r.top] == [t.index for t in w.top]
        np.testing.assert_allclose([t.score for t in r.top], [t.score for t in w.top], atol=1e-5)
    heard = [record for r in results for record in r.events] + ended
    key = lambda records: [(r["event"], r["label"], r["onset"], r.get("offset")) for r in records]  # noqa: E731
    assert key(heard) == key(batch.events) and heard


# --- the default hop ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profiled(model, tmp_path_factory):  # noqa: F811
    """The tiny model exported for a device profile with a 0.3 s stream hop, with calibrated thresholds."""
    import json

    from astedge.deploy import export as exp
    from astedge.deploy.profiles import load_profile

    root = tmp_path_factory.mktemp("profiled")
    (root / "thresholds.json").write_text(json.dumps({"thresholds": {"Dog": 0.3, "Siren": 0.9}}))
    profile = dataclasses.replace(load_profile("workstation"), hop_seconds=0.3)
    exp.export(model[0], root / "export", profile=profile, engine=False, fp16=False,
               thresholds=root / "thresholds.json", log=lambda m: None)
    return root / "export"


def test_the_default_hop_is_the_export_profiles_for_streams_and_half_the_window_for_files(model, profiled, wav):  # noqa: F811
    with Classifier.from_options(profiled) as classifier:
        assert classifier.stream_hop == 0.3 != DEFAULT_STREAM_HOP
        assert classifier.windowing(stream=True).hop == 4800 and classifier.windowing().hop == 8000
        assert classifier.listen(capture.FileSource(wav)).windowing.hop == 4800
        stream = classifier.classify_file(wav, stream=True)  # what evaluate scores: the stream's windows
        assert [w.start for w in stream.windows[:3]] == [0.0, 0.3, 0.6]
        assert [w.start for w in classifier.classify_file(wav).windows[:3]] == [0.0, 0.5, 1.0]
        events = classifier.replace(events=True)  # the decision layer defaults to the export's thresholds
        assert events.event_config.thresholds == {"Dog": 0.3, "Siren": 0.9} and events.backend is classifier.backend
        assert events.replace(thresholds={"Dog": 0.5}).event_config.thresholds == {"Dog": 0.5}
        assert classifier.replace(hop=0.5).windowing(stream=True).hop == 8000  # an explicit hop wins
    for plain in (Classifier.from_options(model[0], ClassifierOptions(backend="torch")),  # a checkpoint: no profile
                  as_classifier(OnnxRuntimeBackend(profiled))):  # a bare backend: no model path
        assert plain.windowing(stream=True).hop == 16000 and plain.windowing().hop == 8000
        plain.close()


# --- the backend contract -------------------------------------------------------------------------------------


class FeaturesOnly:
    """A stand-in backend: logits are a fixed projection of its input features; it records what it was given."""

    name, precision, device, task = "features", "fp32", "cpu", "multilabel"
    labels, feature_config, frame_layout = tuple(LABELS), KWS, None

    def __init__(self):
        self.inputs, self.waves = [], []
        self.weights = np.random.default_rng(0).standard_normal((KWS.num_mel_bins, len(LABELS)))

    def run(self, x):
        self.inputs.append(np.asarray(x))
        return (np.asarray(x).mean(axis=1) @ self.weights).astype(np.float32)

    def close(self):
        pass


class AudioToo(FeaturesOnly):
    """Also RunsAudio: takes windows of audio (and computes their features itself)."""

    def run_audio(self, waves):
        self.waves.append([np.array(w) for w in waves])
        return FeaturesOnly.run(self, np.stack([F.model_input(np.asarray(w), KWS) for w in waves]))

    def run_audio_frames(self, waves):
        raise AssertionError("a model without a frame head is never asked for frames")


class StreamsToo(FeaturesOnly):
    """Also OpensStreams: a session that takes the ring's audio for each window."""

    def open_stream(self, windowing):
        backend = self

        class Session:
            frames_computed, calls, closed = 0, [], False

            def classify(self, read, start, end):
                self.calls.append((start, end))
                return FeaturesOnly.run(backend, F.model_input(read(start, end), KWS)[None])[0]

            def close(self):
                self.closed = True

        self.session = Session()
        return self.session


def test_a_backend_that_runs_audio_gets_audio_and_one_that_does_not_gets_features(rng):
    wave = (0.1 * rng.standard_normal(3 * RATE + 5000)).astype(np.float32)
    plain, audio = FeaturesOnly(), AudioToo()
    assert isinstance(audio, RunsAudio) and not isinstance(plain, RunsAudio) and not isinstance(audio, OpensStreams)
    options = ClassifierOptions(hop=0.5, batch_size=4)
    from_features = Classifier(plain, options).classify_waveform(wave)
    from_audio = Classifier(audio, options).classify_waveform(wave)
    starts = window_starts(len(wave), RATE, RATE // 2, tail=True, min_tail=KWS.window_shift)
    assert [len(batch) for batch in audio.waves] == [4, 2] and len(starts) == 6  # 5 full windows and a tail
    assert all(np.array_equal(w, wave[s:s + RATE]) for w, s in zip(sum(audio.waves, []), starts, strict=True))
    fed = np.concatenate(plain.inputs)
    assert fed.shape == (len(starts), 128, 128) and not plain.waves
    np.testing.assert_allclose(fed, [F.model_input(wave[s:s + RATE], KWS) for s in starts], atol=1e-5)
    assert all(np.allclose(a.logits, b.logits, atol=1e-5) for a, b in zip(from_audio.windows, from_features.windows))
    clips = [wave[:RATE], wave[RATE:3 * RATE]]  # clip scores take the same door
    audio.waves.clear()
    np.testing.assert_allclose(Classifier(audio).clip_scores(clips), Classifier(plain).clip_scores(clips), atol=1e-6)
    assert len(sum(audio.waves, [])) == 1 + 3  # a 1 s clip is one window, a 2 s clip three (hop: half the window)


def test_a_backend_that_opens_streams_classifies_the_stream_on_its_session(wav):  # noqa: F811
    options = ClassifierOptions(hop=0.5)
    device, host = StreamsToo(), FeaturesOnly()
    assert isinstance(device, OpensStreams) and not isinstance(host, OpensStreams)
    outputs = []
    for backend in (device, host):
        with Classifier(backend, options).listen(capture.FileSource(wav)) as listener:
            outputs.append(list(listener.results()))
        assert (listener.device_stream is not None) == (backend is device)
    assert device.session.calls == [(round(r.start * RATE), round(r.end * RATE)) for r in outputs[0]]
    assert device.session.closed and len(outputs[0]) == len(outputs[1]) == 11
    assert all(np.allclose(a.logits, b.logits, atol=1e-5) for a, b in zip(*outputs))


# --- the commands' shared options -----------------------------------------------------------------------------


def test_commands_keep_their_flags_and_defaults():
    import typer

    from astedge.cli.app import app

    commands = typer.main.get_command(app).commands
    flags = {name: {opt: p.default for p in commands[name].params for opt in p.opts}
             for name in ("listen", "classify", "evaluate", "calibrate")}
    shared = {"--window", "--hop", "--threshold", "--smoothing", "--smoothing-windows", "--allow", "--deny",
              "--thresholds", "--off-ratio", "--confirm", "--min-duration", "--merge-gap", "--trim", "--backend", "--json",
              "--median", "--frame-delay", "--background-class"}
    running = {"-m", "--model", "-k", "--top-k", "--events", "--events-csv", "--on-event", "--precision"}
    assert set(flags["listen"]) == shared | running | {"--mic", "--device", "--partial", "--source", "--realtime",
                                                        "--speed", "--rate", "--channels", "--format", "--duration"}
    assert set(flags["classify"]) == shared | running | {"audio", "--batch-size", "--max-seconds"}
    assert set(flags["evaluate"]) == shared | {"-m", "--model", "--precision", "audio", "--truth", "--collar",
                                               "--offset-percentage", "--segment", "--events-csv", "--split",
                                               "--group-by"}
    assert set(flags["calibrate"]) == {"-m", "--model", "data", "extra", "-o", "--output", "--split", "--target-precision",
                                       "--precision", "--labels", "--backend", "--json"}
    assert flags["listen"]["--smoothing-windows"] == flags["classify"]["--smoothing-windows"] == 3
    assert (flags["classify"]["--top-k"], flags["classify"]["--batch-size"], flags["classify"]["--max-seconds"],
            flags["listen"]["--partial"], flags["evaluate"]["--off-ratio"], flags["evaluate"]["--hop"]) == \
        (5, 8, 3600.0, "wait", 0.8, None)
    assert flags["classify"]["--min-duration"] is None and flags["classify"]["--median"] is None  # the model's
    assert flags["classify"]["--merge-gap"] is None and flags["evaluate"]["--split"] == "all"


def test_the_threshold_means_what_the_event_outputs_say():
    from astedge.cli.options import classifier_options

    windows = {"threshold": 0.6, "hop": 0.5}
    printing = classifier_options(windows, outputs={"events": True, "events_csv": None, "on_event": None})
    assert (printing.events, printing.threshold, printing.event_threshold, printing.hop) == (True, None, 0.6, 0.5)
    csv_only = classifier_options(windows, outputs={"events": False, "events_csv": "e.csv", "on_event": None})
    assert (csv_only.events, csv_only.threshold, csv_only.event_threshold) == (True, 0.6, 0.6)
    plain = classifier_options({"threshold": None}, outputs={"events": False, "events_csv": None, "on_event": None})
    assert (plain.events, plain.threshold, plain.event_threshold) == (False, None, 0.5)
    scoring = classifier_options(windows, events=True, top_k=1)  # evaluate: events only, no report threshold
    assert (scoring.events, scoring.threshold, scoring.event_threshold, scoring.top_k) == (True, None, 0.6, 1)
