"""The frame path's timeline: stitching overlapping windows, finalization, the streaming median filter."""

import numpy as np
import pytest
from scipy.ndimage import median_filter

from astedge.errors import UserError
from astedge.features.fbank import FbankConfig
from astedge.model.config import model_config
from astedge.runtime.frames import FrameLayout, FrameTimeline, MedianFilter


def layout(columns=5, stride=8, width=8):
    return FrameLayout(columns=columns, stride=stride, width=width, shift=160, length=400, sample_rate=16000)


def test_layout_of_a_model_config():
    config = model_config("tiny", depth=1, num_classes=3, target_length=112, patch_size=(16, 16), fstride=16,
                          tstride=8, frame_head=True)
    lay = FrameLayout.of(config, FbankConfig())
    assert (lay.columns, lay.step) == ((112 - 16) // 8 + 1, 1280)  # 13 columns, 80 ms apart
    # column 0 sees frames 0..15 = samples [0, 15 * 160 + 400) = [0, 2800): centre 1400, slot [760, 2040)
    assert lay.offset == 760 and lay.to_dict()["hop_seconds"] == 0.08
    assert lay.to_dict()["first_centre_seconds"] == pytest.approx(1400 / 16000)
    # a 1 s window (16000 samples) has 98 frames: columns 0..10 (j * 8 + 16 <= 98) see no padding
    assert lay.valid_columns(16000) == 11
    assert lay.valid_columns(100) == 1  # shorter than one frame: still one column
    assert FrameLayout.from_dict(lay.to_dict()) == lay


def test_stitching_is_the_mean_of_the_covering_windows():
    lay = layout(columns=4)  # step 1280 samples
    tl = FrameTimeline(lay, classes=2, delay=0)
    a = np.arange(8, dtype=float).reshape(4, 2)  # window at 0: slots 0..3
    b = 10 + np.arange(8, dtype=float).reshape(4, 2)  # window at 2 steps: slots 2..5
    tl.add(0, a)
    tl.add(2 * lay.step, b)
    frames = tl.flush()
    scores = np.stack([f[2] for f in frames])
    expected = np.array([a[0], a[1], (a[2] + b[0]) / 2, (a[3] + b[1]) / 2, b[2], b[3]])
    np.testing.assert_array_equal(scores, expected)
    starts = [f[0] for f in frames]
    assert starts == pytest.approx([(lay.offset + k * lay.step) / 16000 for k in range(6)])


def test_release_waits_for_the_delay_and_late_windows_no_longer_count():
    lay = layout(columns=4)
    tl = FrameTimeline(lay, classes=1, delay=lay.step)
    tl.add(0, np.ones((4, 1)))
    # slot 0 ends at offset + step; with a delay of one step it is final once the audio reaches offset + 2 steps
    assert tl.release(lay.offset + 2 * lay.step - 1) == []
    released = tl.release(lay.offset + 2 * lay.step)
    assert len(released) == 1 and released[0][2][0] == 1.0
    tl.add(lay.step * 0, np.full((4, 1), 5.0))  # a window over slot 0 again: slot 0 is gone, slot 1 averages
    rest = tl.flush()
    assert [r[2][0] for r in rest] == [3.0, 3.0, 3.0]


def test_windows_off_the_frame_grid_are_refused():
    tl = FrameTimeline(layout(), classes=1, delay=0)
    with pytest.raises(UserError, match="multiple of the model's frame step"):
        tl.add(100, np.zeros((5, 1)))


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_streaming_median_equals_scipy_over_the_whole_sequence(size):
    rng = np.random.default_rng(size)
    values = rng.random((23, 3))
    frames = [(k * 0.08, (k + 1) * 0.08, values[k]) for k in range(len(values))]
    med = MedianFilter(size)
    out, received = [], 0
    for chunk in (frames[:4], frames[4:5], [], frames[5:17], frames[17:]):
        out += med.push(chunk)
        received += len(chunk)
        assert len(out) == max(0, received - size // 2)  # a frame leaves once the frames after it came in
    out += med.flush()
    assert [o[0] for o in out] == [f[0] for f in frames]
    np.testing.assert_allclose(np.stack([o[2] for o in out]), median_filter(values, size=(size, 1), mode="nearest"))


def test_streaming_median_waits_for_the_frames_after():
    med = MedianFilter(5)
    frames = [(k, k + 1, np.array([float(k)])) for k in range(4)]
    assert [o[0] for o in med.push(frames)] == [0, 1]  # frame 1 needs frames up to 3
    with pytest.raises(UserError):
        MedianFilter(4)


# --- a frame model end to end ----------------------------------------------------------------------------------

RATE = 16000


def _tone_clip(rng, seconds: float, span: tuple[float, float] | None) -> np.ndarray:
    n = int(seconds * RATE)
    wave = 0.01 * rng.standard_normal(n)
    if span is not None:
        a, b = (int(x * RATE) for x in span)
        t = np.arange(b - a) / RATE
        wave[a:b] += 0.2 * np.sin(2 * np.pi * rng.uniform(700, 1400) * t)
    return wave.astype(np.float32)


TWO_TONES = [(1.05, 1.85), (3.2, 4.6)]


def _two_tones(root) -> list[tuple[float, float]]:
    """root/two-tones.wav: 7 s of noise with two 1 kHz tones at TWO_TONES, and root/two-tones.csv, their truth."""
    import soundfile as sf

    rng = np.random.default_rng(5)
    wave = 0.01 * rng.standard_normal(7 * RATE)
    for a, b in TWO_TONES:
        t = np.arange(int(b * RATE) - int(a * RATE)) / RATE
        wave[int(a * RATE):int(b * RATE)] += 0.2 * np.sin(2 * np.pi * 1000 * t)
    sf.write(root / "two-tones.wav", wave.astype(np.float32), RATE)
    (root / "two-tones.csv").write_text("onset,offset,label\n" + "".join(f"{a},{b},tone\n" for a, b in TWO_TONES))
    return TWO_TONES


@pytest.fixture(scope="module")
def tone_frames(tmp_path_factory):
    """A tiny frame model trained on 1 s clips of a tone (strong labels) or noise, with its export."""
    import soundfile as sf

    from astedge.data.datasets import read_dataset
    from astedge.deploy.export import export
    from astedge.train.loop import train
    from astedge.train.recipes import load_recipe

    root = tmp_path_factory.mktemp("tone-frames")
    rng = np.random.default_rng(0)
    rows = ["filename\tonset\toffset\tevent_label"]
    for label in ("tone", "background"):
        (root / "data" / label).mkdir(parents=True)
        for i in range(48):
            span = None
            if label == "tone":
                onset = rng.uniform(0.0, 0.5)
                span = (onset, min(1.0, onset + rng.uniform(0.25, 0.6)))
            name = f"{label}/{label}_{i:03d}.wav"
            sf.write(root / "data" / name, _tone_clip(rng, 1.0, span), RATE)
            rows.append(f"{name}\t{span[0]:.3f}\t{span[1]:.3f}\ttone" if span else name)
    (root / "data" / "strong.tsv").write_text("\n".join(rows) + "\n")
    data = read_dataset(root / "data", val_fraction=0.25)
    recipe = load_recipe("demo", overrides=dict(depth=1, epochs=8, batch_size=8, lr=1e-3, optimizer="adamw",
                                                warmup_steps=10, schedule="cosine", patch_size=(128, 8), fstride=128,
                                                tstride=8, crop_of_two=0.5, wa_start=0, wa_end=0))
    result = train(data, root / "run", recipe, force=True, log=lambda *a: None, show_progress=False)
    export(result.best, root / "export", precision="fp32", engine=False, log=lambda m: None)
    return root, result


def test_a_frame_model_learns_the_boundaries_of_tones_in_noise(tone_frames):
    """Trained on 1 s clips, it finds two tones in a 7 s recording to within 0.1 s of their true boundaries,
    through the export on ONNX Runtime with the defaults its training calibrated."""
    import soundfile as sf

    from astedge.model.checkpoint import load_checkpoint
    from astedge.runtime.classifier import Classifier, ClassifierOptions

    root, result = tone_frames
    checkpoint = load_checkpoint(result.best, weights=False)
    assert checkpoint.model_config.frame_head and checkpoint.events["background"] == "background"
    assert set(checkpoint.events) >= {"thresholds", "median_frames", "min_duration", "calibration"}
    truth = _two_tones(root)
    with Classifier.from_options(root / "export", ClassifierOptions(backend="onnxruntime-cpu", events=True)) as c:
        found = c.classify_file(root / "two-tones.wav").detected
    assert [e.label for e in found] == ["tone", "tone"], found
    for event, (onset, offset) in zip(found, truth, strict=True):
        assert abs(event.onset - onset) <= 0.1 and abs(event.offset - offset) <= 0.1, (event, onset, offset)


def test_frame_outputs_of_the_export_match_pytorch(tone_frames):
    """ONNX Runtime's frame logits of the export equal the checkpoint's in PyTorch (and the export recorded both)."""
    import json

    import torch

    from astedge.deploy.export import verification_inputs
    from astedge.model.checkpoint import load_checkpoint
    from astedge.runtime.backends.onnxruntime import OnnxRuntimeBackend

    root, result = tone_frames
    checkpoint = load_checkpoint(result.best)
    inputs, _ = verification_inputs(checkpoint.feature_config, 4, seed=3)
    with torch.no_grad():
        clip, frames = checkpoint.build_model().forward_frames(torch.from_numpy(inputs))
    backend = OnnxRuntimeBackend(root / "export")
    onnx_clip, onnx_frames = backend.run_frames(inputs)
    assert onnx_frames.shape == tuple(frames.shape) == (4, checkpoint.model_config.grid[1], 2)
    np.testing.assert_allclose(onnx_frames, frames.numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx_clip, clip.numpy(), atol=1e-4)
    np.testing.assert_array_equal(backend.run(inputs), onnx_clip)
    meta = json.loads((root / "export" / "astedge.json").read_text())
    columns = checkpoint.model_config.grid[1]  # 1 s clips, 98 frames -> 104 on the patch grid: 13 columns 8 apart
    assert (checkpoint.feature_config.target_length, columns) == (104, 13)
    assert meta["frames"]["hop_seconds"] == 0.08
    assert meta["output"]["shape"] == ["batch", 2 * (1 + columns)] == ["batch", 28]
    assert meta["verification"]["onnx_fp32_vs_torch"]["frames_max_abs_diff"] < 1e-3


def test_listen_and_classify_find_the_same_frame_events(tone_frames):
    """A stream (a file read as a source) and the file give the same events: one path, the same finalization."""
    from astedge.audio.capture import FileSource
    from astedge.runtime.classifier import Classifier, ClassifierOptions

    root, _ = tone_frames
    _two_tones(root)
    options = ClassifierOptions(backend="onnxruntime-cpu", events=True)
    with Classifier.from_options(root / "export", options) as c:
        from_file = c.classify_file(root / "two-tones.wav", stream=True)
        with c.listen(FileSource(str(root / "two-tones.wav"))) as listener:
            records = [r for w in listener.results() for r in w.events] + listener.finish_events()
    assert records and [{k: v for k, v in r.items() if k not in ("first_detected_wall", "file")} for r in records] == \
        [{k: v for k, v in r.items() if k not in ("first_detected_wall", "file")} for r in from_file.events]


def test_the_cli_flags_of_the_frame_path_reach_the_decision(tone_frames):
    """evaluate --median/--frame-delay/--background-class/--min-duration are the settings it reports using; without
    them it reports the model's calibrated ones; a label the model lacks is one line and exit 2."""
    import json
    import subprocess
    import sys

    from astedge.model.checkpoint import load_checkpoint

    root, result = tone_frames
    _two_tones(root)

    def evaluate(*flags):
        run = subprocess.run([sys.executable, "-m", "astedge", "evaluate", str(root / "two-tones.wav"), "-m",
                              str(root / "export"), "--truth", str(root / "two-tones.csv"), "--json", *flags],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
        return run.returncode, [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")], run.stderr

    calibrated = load_checkpoint(result.best, weights=False).events
    code, records, _ = evaluate()
    summary = next(r for r in records if r["type"] == "summary")
    assert code == 0 and summary["settings"]["frames"]["median_frames"] == calibrated["median_frames"]
    assert summary["settings"]["merge_gap"] == calibrated["merge_gap"]
    code, records, _ = evaluate("--median", "7", "--frame-delay", "0.4", "--min-duration", "0.25", "--merge-gap", "0.5")
    settings = next(r for r in records if r["type"] == "summary")["settings"]
    assert code == 0 and settings["frames"]["median_frames"] == 7 and settings["min_duration"] == 0.25
    assert settings["merge_gap"] == 0.5
    assert settings["frames"]["delay_s"] == pytest.approx(0.4, abs=0.08)  # whole frames
    code, _, err = evaluate("--background-class", "nothing")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "'nothing' is not a label" in errors[0] and "Traceback" not in err


def test_patches_that_do_not_overlap_train_as_one_product_with_the_convolutions_numbers():
    """The training path's matrix product gives the Conv's outputs and gradients (strips and 16/16); overlapping
    patches keep the Conv."""
    import torch

    from astedge.model.ast_model import ASTModel
    from astedge.model.config import model_config

    for patch, stride in (((128, 8), (128, 8)), ((16, 16), (16, 16)), ((16, 16), (10, 10))):
        torch.manual_seed(0)
        model = ASTModel(model_config("tiny", num_classes=3, target_length=100, num_mel_bins=128, patch_size=patch,
                                      fstride=stride[0], tstride=stride[1], depth=1))
        x = torch.randn(2, 100, 128)
        grads = []
        for training in (True, False):
            model.train(training)
            model.zero_grad()
            out = model(x)
            out.square().sum().backward()
            grads.append((out.detach(), model.v.patch_embed.proj.weight.grad.clone()))
        torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-4, rtol=1e-4)


def test_init_adds_a_frame_head_to_a_checkpoint_without_one(tmp_path):
    """An imported-style checkpoint (no frame head) keeps working as it is; `--init` with strong labels builds the same
    backbone and clip head with a new frame head, which the one output then carries."""
    import torch

    from astedge.features.fbank import FbankConfig
    from astedge.model.ast_model import ASTModel
    from astedge.model.checkpoint import load_checkpoint, save_checkpoint
    from astedge.model.config import model_config
    from astedge.train.loop import initial_model
    from astedge.train.recipes import load_recipe

    torch.manual_seed(0)
    config = model_config("tiny", depth=1, num_classes=3, target_length=112, num_mel_bins=128, patch_size=(128, 8),
                          fstride=128, tstride=8)
    source = ASTModel(config).eval()
    path = save_checkpoint(tmp_path / "clip-only.safetensors", source, labels=["a", "b", "c"], task="multiclass",
                           feature_config=FbankConfig(target_length=112))
    assert not load_checkpoint(path, weights=False).model_config.frame_head
    recipe = load_recipe("demo", overrides={"init": str(path)})
    said = []
    model = initial_model(recipe, 3, ["a", "b", "c"], 112, 128, said.append, frames=True).eval()
    assert model.config.frame_head and "a new frame head" in said[0]
    x = torch.randn(2, 112, 128)
    with torch.no_grad():
        clip, frames = model.forward_frames(x)
        torch.testing.assert_close(clip, source(x))  # the backbone and clip head came over unchanged
    assert frames.shape == (2, 14, 3)


def _replayed_calibration(monkeypatch, **grid):
    """calibrate_events over hand-made frames (80 ms; "tone" on in three events, off for one frame inside two)."""
    from types import SimpleNamespace

    from astedge.data.event_table import Event
    from astedge.measure import calibration

    step, on = 0.08, np.zeros(200)
    spans = [(20, 45), (80, 110), (150, 170)]
    for a, b in spans:
        on[a:b] = 1.0
    on[[30, 95]] = 0.0  # a one-frame dropout inside the first two events
    frames = [(k * step, (k + 1) * step, np.array([on[k], 1.0 - on[k]])) for k in range(len(on))]
    truth = [Event(a * step, b * step, "tone") for a, b in spans]
    monkeypatch.setattr(calibration, "recorded_frames", lambda classifier, streams: [frames])
    stub = SimpleNamespace(frame_layout=SimpleNamespace(step=1280, sample_rate=16000), labels=("tone", "background"),
                           backend=SimpleNamespace(task="multilabel", feature_config=SimpleNamespace(sample_rate=16000)),
                           event_mask=lambda: np.array([True, False]), background="background",
                           windowing=lambda stream: SimpleNamespace(seconds=(1.12, 0.32)))
    return calibration.calibrate_events(stub, [(np.zeros(16000 * 16), truth)], **grid)


def test_calibration_keeps_the_soonest_setting_of_the_best_and_the_merge_gap_that_joins_fragments(monkeypatch):
    """Median 3 fills a one-frame dropout (F1 1), and so do 5, 7, 9 with more look-ahead: calibration keeps 3 and no
    minimum duration. With the median held at 1, the merge gap joins the fragments instead (F1 from 0.25 to 1)."""
    best = _replayed_calibration(monkeypatch)
    assert (best["median_frames"], best["min_duration"], best["merge_gap"]) == (3, 0.0, 0.0)
    assert best["calibration"]["event_f1"] == 1.0
    joined = _replayed_calibration(monkeypatch, medians=(1,), min_durations=(0.0,))
    assert joined["merge_gap"] == 0.16 and joined["calibration"]["event_f1"] == 1.0
    fragmented = _replayed_calibration(monkeypatch, medians=(1,), min_durations=(0.0,), merge_gaps=(0.0,))
    assert fragmented["calibration"]["event_f1"] == 0.25  # 1 of 5 detections matches 1 of 3 events: 2 / (5 + 3)
