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
