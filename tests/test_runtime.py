"""The runtime: backends behind one interface, incremental stream features, the listener's threads and
accounting, file classification, and the `listen`/`classify` commands.

References are independent of the code under test: PyTorch for the ONNX Runtime backend, full
recomputation (`features.model_input`) for incremental features, the batch path (`classify_waveform`)
for the streaming path, and hand-computed numbers for smoothing and filters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from astedge.audio import decode as audio_io
from astedge.audio import capture
from astedge.deploy import export as exp
from astedge.features import fbank as F
from astedge.runtime import scores
from astedge.runtime import stream
from astedge.runtime import views
from astedge.runtime import windows
from astedge.runtime.backends import choose_backend
from astedge.runtime.model_path import resolve_model
from astedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from astedge.runtime.backends.torch import TorchBackend
from astedge.model.checkpoint import save_checkpoint
from astedge.errors import UserError
from astedge.features.fbank import FbankConfig
from astedge.model.ast_model import ASTModel, model_config
from astedge.runtime.scores import Score, activate
from conftest import run_without_torch

CFG = model_config("tiny", depth=2, num_classes=10, target_length=128)
LABELS = ["Speech", "Dog", "Child speech, kid speaking", "Music", "Siren", "Rain", "Car", "Bird", "Clapping", "Silence"]
KWS = FbankConfig().with_dataset("speechcommands")  # 128 frames: a 1.295 s window keeps every test fast


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, "-m", "astedge", *args], capture_output=True, timeout=120, **kwargs)


def signal(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Noise, a rising tone and bursts: content that changes from window to window."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    bursts = (np.sin(2 * np.pi * 0.7 * t) > 0.6) * 0.3 * rng.standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * (200 + 150 * t) * t) + 0.03 * rng.standard_normal(t.size) + bursts).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small random-weight AST checkpoint and its export folder (ONNX FP32 + FP16)."""
    torch.manual_seed(0)
    net = ASTModel(CFG).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.05 * torch.randn_like(param))
    root = tmp_path_factory.mktemp("runtime")
    checkpoint = save_checkpoint(root / "tags.safetensors", net, feature_config=KWS, labels=LABELS, task="multilabel")
    exp.export(checkpoint, root / "tags", engine=False, log=lambda m: None)
    return checkpoint, root / "tags"


@pytest.fixture(scope="module")
def ort_backend(model):
    backend = OnnxRuntimeBackend(model[1])
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "scene.wav"
    sf.write(path, signal(6.0), 16000, subtype="FLOAT")
    return path


# --- backends ------------------------------------------------------------------------------------------


def test_onnxruntime_backend_matches_torch_backend_from_every_path_form(model):
    checkpoint, folder = model
    rng = np.random.default_rng(0)
    wave = signal(3.0)
    x = np.stack([F.model_input(wave[:20720], KWS), F.model_input(wave[16000:], KWS),
                  (0.5 * rng.standard_normal((128, 128))).astype(np.float32)])
    reference = TorchBackend(checkpoint)
    expected = reference.run(x)
    assert expected.shape == (3, 10) and reference.device == "cpu" and reference.precision == "fp32"
    for path in (folder, folder / "astedge.json", folder / "model.onnx"):
        backend = OnnxRuntimeBackend(path)
        assert (backend.name, backend.precision, backend.device) == ("onnxruntime-cpu", "fp32", "cpu")
        assert backend.labels == tuple(LABELS) and backend.task == "multilabel" and backend.feature_config == KWS
        assert np.abs(backend.run(x) - expected).max() <= 1e-4
        assert np.abs(backend.run(x[1:2]) - expected[1:2]).max() <= 1e-4  # batch 1 too
    from_folder = TorchBackend(folder)  # runs the checkpoint astedge.json recorded
    assert from_folder.checkpoint.resolve() == checkpoint.resolve()
    np.testing.assert_array_equal(from_folder.run(x), expected)
    fp16 = OnnxRuntimeBackend(folder, precision="fp16")
    assert fp16.file.name == "model.fp16.onnx" and fp16.precision == "fp16"
    assert np.abs(fp16.run(x) - expected).max() <= 1e-2  # FP16-rounded weights (see test_export)
    assert OnnxRuntimeBackend(folder / "model.fp16.onnx").precision == "fp16"


def test_auto_backend_picks_onnxruntime_cpu_here_and_says_why(model):
    checkpoint, folder = model
    choice = choose_backend(folder)
    assert choice.backend.name == "onnxruntime-cpu"
    assert [name for name, _ in choice.skipped] == ["tensorrt", "onnxruntime-cuda"]
    assert "no TensorRT engine" in dict(choice.skipped)["tensorrt"]
    assert "CUDAExecutionProvider" in dict(choice.skipped)["onnxruntime-cuda"]
    assert "backend onnxruntime-cpu (fp32, cpu); skipped tensorrt:" in choice.describe()
    from_checkpoint = choose_backend(checkpoint)  # only PyTorch runs a bare checkpoint
    assert from_checkpoint.backend.name == "torch"
    assert [name for name, _ in from_checkpoint.skipped] == ["tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"]
    assert choose_backend(folder, "onnxruntime").backend.name == "onnxruntime-cpu"  # the alias: CUDA first, then CPU
    assert resolve_model(folder / "model.onnx").onnx == folder / "model.onnx"


def test_bad_model_paths_and_options_are_user_errors(model, tmp_path, wav):
    checkpoint, folder = model
    cases = [
        (tmp_path / "missing", "auto", "does not exist"),
        (tmp_path, "auto", "has no astedge.json: not an export folder"),
        (wav, "auto", "is not a model file"),
        (folder, "tflite", "unknown backend 'tflite'"),
        (checkpoint, "tensorrt", "TensorRT runs an export folder"),
        (checkpoint, "onnxruntime-cpu", "ONNX Runtime runs an export folder"),
        (folder, "onnxruntime-cuda", "no CUDAExecutionProvider"),
    ]
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(foreign))
    cases.append((foreign, "torch", "not an astedge checkpoint"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.safetensors").write_bytes(b"")
    cases.append((tmp_path / "run", "auto", "it holds best.safetensors: pass that file"))
    for path, name, message in cases:
        with pytest.raises(UserError, match=message):
            choose_backend(path, name)
    with pytest.raises(UserError, match="precision must be one of"):
        choose_backend(folder, precision="int4")
    with pytest.raises(UserError, match="has no INT8 model"):
        choose_backend(folder, "onnxruntime-cpu", precision="int8")
    with pytest.raises(UserError, match="is the fp32 model but precision fp16"):
        OnnxRuntimeBackend(folder / "model.onnx", precision="fp16")
    with pytest.raises(UserError, match=r"takes input \[batch, 128, 128\], got \[1, 64, 128\]"):
        OnnxRuntimeBackend(folder).run(np.zeros((1, 64, 128), np.float32))


def test_runtime_and_backends_run_without_torch(model, wav):
    """The Jetson path: backends, runtime and capture import and classify with torch blocked."""
    code = (
        "import astedge.runtime.backends, astedge.runtime.backends.onnxruntime, astedge.runtime.backends.tensorrt, astedge.runtime.windows\n"
        "import astedge.audio.capture, astedge.cli, astedge.runtime.scores, astedge.runtime.stream, astedge.runtime.views\n"
        "from astedge.runtime.backends import choose_backend\n"
        "from astedge.runtime import windows\n"
        f"choice = choose_backend({str(model[1])!r})\n"
        "net = choice.backend\n"
        f"result = windows.classify_file(net, {str(wav)!r}, windows.Windowing.from_seconds(net.feature_config, hop=1.0))\n"
        "assert 'torch' not in sys.modules\n"
        "print(net.name, len(result.windows), [n for n, _ in choice.skipped])\n"
    )
    result = run_without_torch(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["onnxruntime-cpu", "6"]  # 1 s windows every 1 s


# --- windows, ring, incremental features -----------------------------------------------------------------


def test_windowing_and_window_starts():
    w = windows.Windowing.from_seconds(F.DEFAULT, default_hop=1.0)  # AudioSet: 10 s = 998 frames + 26 padded rows
    assert (w.window, w.hop, w.incremental, w.describe()["window_frames"]) == (160000, 16000, True, 998)
    assert windows.Windowing.from_seconds(F.DEFAULT, window=10.255).window == 164080  # the whole input, no padding
    assert windows.Windowing.from_seconds(F.DEFAULT).hop == 80000  # half the window
    assert windows.Windowing.from_seconds(F.DEFAULT, window=10.255).hop == 81920  # ... in whole frame shifts
    assert windows.Windowing.from_seconds(KWS, default_hop=1.0).window == 16000  # 1.295 s input -> 1 s window
    assert not windows.Windowing.from_seconds(F.DEFAULT, hop=0.3333).incremental
    for window, hop, message in ((11.0, None, "longer than the model's input"), (0.01, None, "shorter than one"),
                                 (2.0, 3.0, "longer than the window"), (None, 0.0, "shorter than one sample")):
        with pytest.raises(UserError, match=message):
            windows.Windowing.from_seconds(F.DEFAULT, window, hop)
    assert windows.window_starts(100, 40, 25) == [0, 25, 50]
    assert windows.window_starts(100, 40, 25, tail=True) == [0, 25, 50, 75]  # 90..100 was not covered
    assert windows.window_starts(90, 40, 25, tail=True) == [0, 25, 50]
    assert windows.window_starts(30, 40, 25, tail=True) == [0]


def test_audio_ring_wraps_and_reports_overwritten_audio():
    ring = stream.AudioRing(10)
    ring.write(np.arange(7, dtype=np.float32))
    ring.write(np.arange(7, 15, dtype=np.float32))  # wraps
    np.testing.assert_array_equal(ring.read(5, 15), np.arange(5, 15))
    assert ring.read(4, 6) is None  # sample 4 was overwritten
    assert ring.wait(15, 0) and not ring.wait(16, 0.01)
    ring.close()
    assert not ring.wait(16, 5)  # closed: returns at once


def test_streaming_fbank_is_bit_identical_however_the_audio_is_cut(rng):
    wave = signal(5.0, seed=3)
    full = F.fbank(wave)
    cuts = np.unique(np.r_[0, rng.integers(1, wave.size, size=150), wave.size])
    everything, recent = F.StreamingFbank(F.DEFAULT, keep_frames=600), F.StreamingFbank(F.DEFAULT, keep_frames=100)
    for a, b in zip(cuts[:-1], cuts[1:]):
        everything.accept(wave[a:b])
        recent.accept(wave[a:b])
    assert everything.computed == recent.computed == full.shape[0] == 498
    assert np.array_equal(everything.frames(0, 498), full)
    assert recent.first_available == 398 and np.array_equal(recent.frames(398, 498), full[398:])
    with pytest.raises(IndexError):
        recent.frames(397, 498)


@pytest.mark.parametrize("window,hop,incremental", [(None, 1.0, True), (10.255, 1.0, True), (None, 0.3333, False)])
def test_stream_window_features_equal_full_recomputation(window, hop, incremental):
    """40 s fed in microphone-sized blocks; every window's model input == model_input(audio[start:end])."""
    wave = signal(40.0, seed=1)
    windowing = windows.Windowing.from_seconds(F.DEFAULT, window, hop)
    assert windowing.incremental is incremental
    ring = stream.AudioRing(windowing.window + 4 * windowing.hop)
    features = stream.WindowFeatures(windowing)
    block, written, checked = 1234, 0, 0
    for end in range(windowing.window, wave.size + 1, windowing.hop):
        while written < end:  # the capture side runs ahead by up to one block
            ring.write(wave[written:written + block])
            written = min(wave.size, written + block)
        start = end - windowing.window
        got = features.model_input(ring, start, end)
        assert np.array_equal(got, F.model_input(wave[start:end])), (start, end)
        checked += 1
    assert checked == (wave.size - windowing.window) // windowing.hop + 1 == (30 if window else 31 if incremental else 91)
    if incremental:  # each frame computed once: exactly the frames up to the last window's end
        assert features.frames_computed == F.num_frames(end)
        assert checked * F.num_frames(windowing.window) / features.frames_computed > 7.5  # vs recomputing


# --- scores ------------------------------------------------------------------------------------------------


def test_smoothing_against_hand_computed_values():
    ema = scores.Smoother("ema", windows=3)  # alpha = 2 / (3 + 1) = 0.5
    assert ema.alpha == 0.5
    outputs = [ema(np.array(x)) for x in ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0])]
    np.testing.assert_allclose(outputs, [[1, 0], [0.5, 0.5], [0.75, 0.75], [0.375, 0.375]])
    peak = scores.Smoother("max", windows=2)
    outputs = [peak(np.array(x)) for x in ([0.1, 0.9], [0.5, 0.2], [0.3, 0.1], [0.0, 0.0])]
    np.testing.assert_allclose(outputs, [[0.1, 0.9], [0.5, 0.9], [0.5, 0.2], [0.3, 0.1]])
    np.testing.assert_array_equal(scores.Smoother("none")(np.array([0.2, 0.4])), [0.2, 0.4])
    median = scores.Smoother("median", windows=3)  # a one-window spike does not pass
    outputs = [median(np.array(x)) for x in ([0.1, 0.9], [0.9, 0.8], [0.2, 0.7], [0.3, 0.1])]
    np.testing.assert_allclose(outputs, [[0.1, 0.9], [0.5, 0.85], [0.2, 0.8], [0.3, 0.7]])
    assert (median.lags, ema.lags, scores.Smoother("none").lags) == ((1, 1), (1, 1), (0, 0))
    assert peak.lags == (0, 1) and scores.Smoother("max", windows=5).lags == (0, 4)  # rises at once, falls N - 1 late
    with pytest.raises(UserError, match="--smoothing must be one of"):
        scores.Smoother("mean")


def test_label_filters_and_ranking():
    mask = scores.label_mask(LABELS, allow=["Child speech, kid speaking"])  # a label with a comma stays whole
    assert np.flatnonzero(mask).tolist() == [2]
    assert np.flatnonzero(scores.label_mask(LABELS, allow=["dog,music", "Bird"])).tolist() == [1, 3, 7]
    assert np.flatnonzero(scores.label_mask(LABELS, deny=["Speech", "Silence"])).tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert scores.label_mask(LABELS) is None
    with pytest.raises(UserError, match=r"'Sirens' is not a label of this model \(did you mean 'Siren'"):
        scores.label_mask(LABELS, allow=["Sirens"])
    with pytest.raises(UserError, match="mutually exclusive"):
        scores.label_mask(LABELS, allow=["Dog"], deny=["Bird"])
    probs = np.array([0.9, 0.2, 0.4, 0.8, 0.05, 0.3, 0.0, 0.6, 0.1, 0.7])
    assert [s.index for s in scores.rank(probs, LABELS, 3)] == [0, 3, 9]
    assert [(s.label, s.score) for s in scores.rank(probs, LABELS, 5, mask=scores.label_mask(LABELS, allow=["Dog,Siren"]))] \
        == [("Dog", 0.2), ("Siren", 0.05)]  # never more than the allowed classes
    assert [s.index for s in scores.rank(probs, LABELS, 5, threshold=0.65)] == [0, 3, 9]


# --- streaming -----------------------------------------------------------------------------------------------


def _listen(backend, source, windowing, **options):
    listener = stream.Listener(backend, source, windowing, **options)
    with listener:
        results = list(listener.results())
    return results, listener.summary()


def test_stream_silences_and_counts_invalid_samples(ort_backend, tmp_path):
    """NaN/inf and absurd values (int16 numbers in a float file) from a live source are zeroed and counted,
    so the stream goes on with finite scores instead of stopping or printing NaN."""
    wave = signal(2.0)
    bad = wave.copy()
    bad[100:110], bad[5000], bad[9000:9003] = np.nan, np.inf, 32767.0
    path = tmp_path / "bad.wav"
    sf.write(path, bad, 16000, subtype="FLOAT")
    windowing = windows.Windowing.from_seconds(KWS, hop=0.5)
    results, summary = _listen(ort_backend, capture.FileSource(path), windowing, k=3)
    assert summary["invalid_samples"] == 14
    cleaned = tmp_path / "cleaned.wav"
    sf.write(cleaned, np.where(np.isfinite(bad) & (np.abs(bad) <= 1000), bad, 0.0).astype(np.float32), 16000,
             subtype="FLOAT")
    expected, _ = _listen(ort_backend, capture.FileSource(cleaned), windowing, k=3)
    assert len(results) == len(expected) > 0
    assert max(np.abs(r.logits - e.logits).max() for r, e in zip(results, expected)) == 0.0


def test_stream_of_a_file_equals_the_batch_path(ort_backend, wav, tmp_path):
    windowing = windows.Windowing.from_seconds(KWS, hop=0.4)
    batch = windows.classify_waveform(ort_backend, audio_io.load_audio(wav), windowing, k=10, batch_size=4)
    results, summary = _listen(ort_backend, capture.FileSource(wav), windowing, k=10)
    assert [(r.start, r.end) for r in results] == [(w.start, w.end) for w in batch.windows]
    assert len(results) == 14 and (results[-1].start, results[-1].end) == (5.2, 6.0)  # 13 full and a padded tail
    assert max(np.abs(r.logits - w.logits).max() for r, w in zip(results, batch.windows)) <= 1e-5
    assert summary["windows"] == 14 and summary["dropped"] == 0 and summary["audio_s"] == 6.0
    assert summary["incremental_features"] and summary["frames_computed"] == F.num_frames(96000)

    # 44.1 kHz stereo through the streaming resampler vs load_audio's one-shot resampling; real-time pace
    stereo = tmp_path / "stereo44k.wav"
    mono = audio_io.resample(signal(3.0), 16000, 44100)
    sf.write(stereo, np.stack([mono, 0.5 * mono], axis=1), 44100, subtype="FLOAT")
    batch = windows.classify_file(ort_backend, stereo, windowing, k=10)
    started = time.perf_counter()
    results, summary = _listen(ort_backend, capture.FileSource(stereo, realtime=True, speed=3.0), windowing, k=10)
    assert time.perf_counter() - started >= 0.95  # 3 s of audio at 3x real time
    assert summary["live"] and summary["resampled"] and summary["source_rate"] == 44100
    assert summary["dropped"] == 0 and [(r.start, r.end) for r in results] == [(w.start, w.end) for w in batch.windows]
    assert max(np.abs(r.logits - w.logits).max() for r, w in zip(results, batch.windows)) <= 1e-5
    assert summary["delay_ms"]["count"] == len(results)  # from each window's last sample to its result


class SlowBackend:
    """A backend that takes `seconds` per call: inference that cannot keep up."""

    name, precision, device, task = "slow", "fp32", "cpu", "multilabel"
    labels, feature_config, frame_layout = tuple(LABELS), KWS, None

    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def run(self, fbank):
        self.calls += 1
        time.sleep(self.seconds)
        return np.zeros((len(fbank), len(LABELS)), np.float32)

    def close(self):
        pass


def test_live_source_faster_than_inference_drops_windows_and_counts_them(wav):
    windowing = windows.Windowing.from_seconds(KWS, hop=0.25)
    expected = windows.window_starts(96000, windowing.window, windowing.hop, tail=True, min_tail=160)
    backend = SlowBackend(0.1)
    results, summary = _listen(backend, capture.FileSource(wav, realtime=True, speed=15.0), windowing)
    assert len(expected) == 21
    assert summary["dropped"] > 5 and summary["windows"] == len(results) == backend.calls
    assert summary["windows"] + summary["dropped"] == len(expected)  # every window classified or counted
    assert sum(r.dropped for r in results) == summary["dropped"]
    assert all(round(r.start * 16000) in expected for r in results)
    assert summary["inference_ms"]["p50"] >= 100 and summary["audio_s"] == 6.0


def test_lossless_source_waits_for_slow_inference_and_drops_nothing(wav):
    windowing = windows.Windowing.from_seconds(KWS, hop=0.5)
    backend = SlowBackend(0.02)
    listener = stream.Listener(backend, capture.FileSource(wav), windowing, buffer_seconds=0.5)  # a tiny ring
    assert listener.ring.capacity == windowing.window + 4 * windowing.hop
    with listener:
        results = list(listener.results())
    summary = listener.summary()
    assert summary["dropped"] == 0 and summary["lost"] == 0 and summary["windows"] == len(results) == 11


class OverflowingSource:
    """Calls the callback like PortAudio would, flagging input overflow on some blocks."""

    live, rate, channels, name = False, 16000, 1, "overflowing"

    def __init__(self, wave, flagged):
        self.wave, self.flagged = wave, set(flagged)

    def start(self, callback, finished):
        def pump():
            for i, a in enumerate(range(0, self.wave.size, 1600)):
                block = self.wave[a:a + 1600, None]
                callback(block, len(block), None, capture.Flags(input_overflow=i in self.flagged))
            finished()

        threading.Thread(target=pump, daemon=True).start()

    def stop(self):
        pass


def test_capture_overflow_flags_are_counted(ort_backend):
    windowing = windows.Windowing.from_seconds(KWS, hop=0.5)
    results, summary = _listen(ort_backend, OverflowingSource(signal(4.0), flagged=[2, 3, 30]), windowing)
    assert summary["overflows"] == 3 and summary["status_flags"] == {"input_overflow": 3}
    assert sum(r.overflows for r in results) == 3 and summary["windows"] == len(results) == 7


def test_duration_partial_windows_and_smoothing_in_the_stream(ort_backend, wav):
    windowing = windows.Windowing.from_seconds(KWS, hop=0.5)
    results, summary = _listen(ort_backend, capture.FileSource(wav), windowing, k=10, partial="pad", duration=3.0,
                               smoother=scores.Smoother("ema", windows=3))
    assert summary["audio_s"] == 3.0
    ends = [r.end for r in results]
    assert ends == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0] and [r.start for r in results[:3]] == [0, 0, 0.5]  # padded first
    ema = None
    for result in results:  # what was reported is the EMA (alpha 0.5) of the raw scores
        raw = activate(result.logits, "multilabel")
        ema = raw if ema is None else 0.5 * raw + 0.5 * ema
        reported = np.array([s.score for s in sorted(result.top, key=lambda s: s.index)])
        np.testing.assert_allclose(reported, ema, atol=1e-12)


# --- the commands ---------------------------------------------------------------------------------------------


def test_listen_json_lines_and_summary(model, wav):
    result = cli("listen", "--model", str(model[1]), "--source", str(wav), "--hop", "0.5", "--json", "-k", "2",
                 "--deny", "Speech,Dog")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    records, summary = lines[:-1], lines[-1]
    assert summary["type"] == "summary" and {r["type"] for r in records} == {"window"}
    assert len(records) == summary["windows"] == 11 and summary["dropped"] == 0
    assert summary["backend"] == "onnxruntime-cpu" and summary["audio_s"] == 6.0
    for line in records:
        assert set(line) == {"type", "start", "end", "latency_ms", "top"} and len(line["top"]) == 2
        assert all(set(t) == {"index", "label", "score"} for t in line["top"])
        assert not {t["label"] for t in line["top"]} & {"Speech", "Dog"}
    assert (records[1]["start"], records[1]["end"]) == (0.5, 1.5)
    assert b"backend onnxruntime-cpu" in result.stderr


def test_listen_ctrl_c_stops_cleanly_with_the_summary(model, wav):
    import signal as signals

    process = subprocess.Popen([sys.executable, "-m", "astedge", "listen", "-m", str(model[1]), "--source", str(wav),
                                "--realtime", "--json"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, preexec_fn=lambda: signals.signal(signals.SIGINT, signals.SIG_DFL))
    first = process.stdout.readline()  # the first window (1 s of audio) is out: now press Ctrl-C
    process.send_signal(signals.SIGINT)
    out, err = process.communicate(timeout=60)
    lines = [json.loads(line) for line in [first, *out.splitlines()]]
    summary = lines[-1]
    assert process.returncode == 0 and b"Traceback" not in err and summary["type"] == "summary"
    assert summary["interrupted"] and summary["windows"] == len(lines) - 1 >= 1 and summary["audio_s"] < 6.0


def test_listen_reads_raw_pcm_on_stdin(model, ort_backend):
    rng = np.random.default_rng(5)
    stereo = np.stack([signal(3.0, 48000, seed=2), 0.1 * rng.standard_normal(144000)], axis=1)
    pcm = np.clip(np.round(stereo * 32767), -32768, 32767).astype("<i2")
    result = cli("listen", "-m", str(model[1]), "--source", "-", "--rate", "48000", "--channels", "2", "--format",
                 "s16le", "--hop", "0.5", "-k", "10", "--json", stdin=None, input=pcm.tobytes())
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    expected = windows.classify_waveform(ort_backend, audio_io.prepare(pcm / np.float32(32768), 48000),
                                    windows.Windowing.from_seconds(KWS, hop=0.5), k=10)
    assert len(lines) - 1 == len(expected.windows) == 5
    for line, window in zip(lines, expected.windows):
        assert (line["start"], line["end"]) == (round(window.start, 6), round(window.end, 6))
        got = {t["index"]: t["score"] for t in line["top"]}
        assert max(abs(got[s.index] - s.score) for s in window.top) <= 2e-6  # 6-decimal JSON


def test_classify_json_windows_and_aggregates(model, wav, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, signal(0.5), 16000)
    result = cli("classify", str(wav), str(short), "--model", str(model[0]), "--hop", "1", "-k", "10", "--json",
                 "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    scene = [x for x in lines if x["file"] == str(wav)]
    window_records = [x for x in scene if "aggregate" not in x]
    mean, peak = (next(x for x in scene if x.get("aggregate") == how) for how in ("mean", "max"))
    assert len(window_records) == mean["windows"] == 6 and window_records[-1]["end"] == 6.0
    for label in LABELS:  # the aggregates are the mean and max of the per-window scores
        per_window = [next(t["score"] for t in w["top"] if t["label"] == label) for w in window_records]
        assert next(t["score"] for t in mean["top"] if t["label"] == label) == pytest.approx(np.mean(per_window), abs=2e-6)
        assert next(t["score"] for t in peak["top"] if t["label"] == label) == pytest.approx(max(per_window), abs=2e-6)
    padded = [x for x in lines if x["file"] == str(short)]
    assert [(x["start"], x["end"], x.get("aggregate")) for x in padded] == [(0, 0.5, None), (0, 0.5, "mean"),
                                                                          (0, 0.5, "max")]
    assert b"backend torch" in result.stderr


def test_classify_text_prints_paths_and_labels_as_they_are(model, wav, tmp_path):
    """File names and labels are text, not rich markup: "[live]" stays, "[/" does not crash the table."""
    odd = tmp_path / "Band [live] x[" / "]take [bold]2.wav"
    odd.parent.mkdir()
    odd.write_bytes(wav.read_bytes())
    result = cli("classify", str(odd), "-m", str(model[1]), "--window", "1")
    assert result.returncode == 0, result.stderr.decode()
    assert str(odd) in result.stdout.decode() and b"Traceback" not in result.stderr
    from rich.console import Console

    console = Console(record=True, width=120)
    top = [Score(0, "[noise]", 0.9), Score(1, "Speech [/]", 0.5)]
    console.print(views.render(windows.WindowResult(0.0, 1.0, 1.0, top), {"audio_s": 1.0, "windows": 1, "dropped": 0,
                                                                   "overflows": 0}, str(odd)))
    text = console.export_text()
    assert "[noise]" in text and "Speech [/]" in text


def test_commands_fail_with_one_line(model, wav, tmp_path):
    folder = str(model[1])
    for args, fragment in (
        (("classify", str(tmp_path / "nope.wav"), "-m", folder), "no such file"),
        (("listen", "-m", str(tmp_path), "--source", str(wav)), "not an export folder"),
        (("listen", "-m", folder, "--realtime"), "--realtime and --speed apply to --source"),
        (("listen", "-m", folder, "--source", str(wav), "--rate", "8000"), "describe raw PCM on stdin"),
        (("listen", "-m", folder, "--source", str(wav), "--smoothing", "mean"), "--smoothing must be one of"),
        (("listen", "-m", folder, "--source", str(wav), "--allow", "Dgo"), "did you mean 'Dog'"),
        (("classify", str(wav), "-m", folder, "--window", "5"), "longer than the model's input"),
    ):
        result = cli(*args)
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == 2 and fragment in lines[-1] and "Traceback" not in result.stderr.decode(), args


#: A stand-in for the sounddevice package (on PYTHONPATH before the real one): PortAudio missing, PortAudio without
#: an input device, or one microphone whose stream delivers a 440 Hz tone from its own thread, as PortAudio does.
FAKE_SOUNDDEVICE = {
    "no_portaudio": "raise OSError('PortAudio library not found')\n",
    "no_input": "def query_devices(device=None, kind=None):\n    return [{'index': 0, 'name': 'HDMI out', "
                "'max_input_channels': 0, 'default_samplerate': 48000.0}]\n",
    "microphone": """import threading
import numpy as np
MIC = {'index': 0, 'name': 'USB mic', 'max_input_channels': 1, 'default_samplerate': 48000.0}
def query_devices(device=None, kind=None):
    return MIC if (device is not None or kind) else [MIC]
def check_input_settings(**settings):
    if settings.get('samplerate', 48000) != 48000:
        raise ValueError('Invalid sample rate')
class InputStream:
    def __init__(self, callback, finished_callback, samplerate, **rest):
        self.callback, self.finished, self.rate, self.running = callback, finished_callback, samplerate, True
    def start(self):
        threading.Thread(target=self.run, daemon=True).start()
    def run(self):
        t = np.arange(480) / self.rate
        for k in range(300):  # 3 s at most, in 10 ms blocks
            if not self.running:
                break
            self.callback((0.3 * np.sin(2 * np.pi * 440 * (t + k * 480 / self.rate)))[:, None].astype('float32'),
                          480, None, 0)
        self.finished()
    def stop(self):
        self.running = False
    def close(self):
        pass
""",
}


@pytest.mark.parametrize("case, fragment", [("no_portaudio", "PortAudio is not available"),
                                            ("no_input", "no microphone found"), ("microphone", None)])
def test_listen_on_a_microphone_or_one_line_why_not(model, tmp_path, case, fragment):
    (tmp_path / "sounddevice.py").write_text(FAKE_SOUNDDEVICE[case])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = cli("listen", "-m", str(model[1]), "--duration", "1.5", "--hop", "0.5", "--json", env=env)
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    if fragment is not None:
        assert result.returncode == 2 and fragment in stderr.strip().splitlines()[-1], stderr
        return
    assert result.returncode == 0, stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    summary = records[-1]
    assert summary["type"] == "summary" and summary["source_rate"] == 48000 and summary["resampled"]
    assert summary["audio_s"] == pytest.approx(1.5)
    windows = [(r["type"], r["start"], r["end"]) for r in records[:-1]]
    # a live source: a window the inference could not keep up with is dropped (newest wins) and counted, as on a
    # loaded machine where the stand-in delivers 3 s of audio at once; the newest window is always classified
    assert windows[-1] == ("window", 0.5, 1.5) and set(windows) <= {("window", 0.0, 1.0), ("window", 0.5, 1.5)}
    assert summary["windows"] == len(windows) and summary["windows"] + summary["dropped"] == 2
