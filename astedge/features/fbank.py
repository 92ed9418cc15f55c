"""Kaldi-compatible log-mel filter banks exactly as AST computes them, in vectorized numpy.

This is the CPU reference every other feature path (the CUDA kernel, streaming) is tested against.
It reproduces ``torchaudio.compliance.kaldi.fbank`` with AST's arguments (htk_compat, hanning window,
dither 0, 25 ms / 10 ms frames, 512-point FFT, pre-emphasis 0.97, per-frame DC removal, snip_edges,
power spectrum, natural log floored at float32 epsilon), computing in float32 like torchaudio does.

AST's glue around the call is kept as separate steps, in the original order::

    fbank(wave) -> pad_or_crop(..., target_length) -> normalize(...)    # == model_input(wave)

Zero rows are appended *before* normalization, so padded cells read ``(0 - mean) / (2 std)``
(0.46703237 with AudioSet statistics). The AST training dataloader also subtracts the clip's mean
from the waveform first (:func:`subtract_mean`); inference (AST's ``inference.py``, Hugging Face)
does not, and neither does astedge by default: per-frame DC removal makes it a no-op up to float32
rounding (about 1e-3 log-mel), and skipping it keeps overlapping stream windows bit-identical.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import scipy.fft
import scipy.sparse

from astedge.errors import UserError, check_fields

#: The floor before the log: float32 machine epsilon, as torchaudio uses.
LOG_FLOOR = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class FbankConfig:
    """Every constant of the feature pipeline, once. The defaults are AST's AudioSet configuration."""

    sample_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    num_mel_bins: int = 128
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 means an offset from Nyquist, as in Kaldi
    preemphasis: float = 0.97
    # AST's glue: the model's time axis and the dataset statistics used by normalize().
    target_length: int = 1024
    mean: float = -4.2677393
    std: float = 4.5689974
    # The clip length the model was trained on (None: unknown). Windows default to it, so the model
    # sees what it learned: AST's 10 s AudioSet clips are 998 frames plus 26 padded rows.
    clip_seconds: float | None = None

    def __post_init__(self):
        problems = []
        if not (isinstance(self.sample_rate, int) and self.sample_rate > 0):
            problems.append(f"sample_rate must be a positive integer, got {self.sample_rate!r}")
        elif not (self.frame_length_ms > 0 and self.frame_shift_ms > 0 and self.window_size >= 2
                  and self.window_shift >= 1):
            problems.append(f"frames of {self.frame_length_ms} ms every {self.frame_shift_ms} ms are empty at "
                            f"{self.sample_rate} Hz")
        else:
            nyquist = 0.5 * self.sample_rate
            high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
            if not 0.0 <= self.low_freq < high <= nyquist:
                problems.append(f"mel range {self.low_freq}..{high} Hz does not fit 0..{nyquist} Hz")
        if not (isinstance(self.num_mel_bins, int) and self.num_mel_bins >= 1):
            problems.append(f"num_mel_bins must be >= 1, got {self.num_mel_bins!r}")
        if not (isinstance(self.target_length, int) and self.target_length >= 1):
            problems.append(f"target_length must be >= 1, got {self.target_length!r}")
        if not 0.0 <= self.preemphasis <= 1.0:
            problems.append(f"preemphasis must be in [0, 1], got {self.preemphasis}")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            problems.append(f"normalization needs a finite mean and a positive std, got {self.mean}, {self.std}")
        if self.clip_seconds is not None and not (math.isfinite(self.clip_seconds) and self.clip_seconds > 0):
            problems.append(f"clip_seconds must be positive, got {self.clip_seconds}")
        if problems:
            raise UserError("invalid feature config: " + "; ".join(problems))

    @property
    def window_size(self) -> int:
        """Samples per frame (400 at 16 kHz)."""
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def window_shift(self) -> int:
        """Samples between frame starts (160 at 16 kHz)."""
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    @property
    def n_fft(self) -> int:
        """FFT size: the window rounded up to a power of two (512)."""
        return 1 << (self.window_size - 1).bit_length()

    @property
    def model_samples(self) -> int:
        """Samples of audio that make exactly `target_length` frames (164080 = 10.255 s for AudioSet models):
        the most audio the model sees in one window."""
        return (self.target_length - 1) * self.window_shift + self.window_size

    @property
    def window_seconds(self) -> float:
        """The default classification window: the training clip length, else the input's span in whole
        seconds (1024 frames -> 10 s, 512 -> 5 s, 128 -> 1 s, as AST's datasets)."""
        if self.clip_seconds:
            return float(self.clip_seconds)
        span = self.model_samples / self.sample_rate
        return float(math.floor(span)) if span >= 1.0 else span

    @property
    def pad_value(self) -> float:
        """What a padded (all-zero) log-mel cell becomes after normalization: padding rows of a model input."""
        return float(normalize(np.zeros(1, np.float32), self)[0])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FbankConfig":
        """The config a dict describes (a checkpoint's or an artefact's); unknown keys are an error."""
        return cls(**check_fields(cls, data, "feature config"))

    @classmethod
    def for_model(cls, num_mel_bins: int, target_length: int, dataset: str | None = None) -> "FbankConfig":
        """The features a model of this input shape takes, with a dataset's normalization statistics.

        Without `dataset`, the published recipe whose window equals the model's is used (1024 AudioSet,
        512 ESC-50, 128 Speech Commands), AudioSet otherwise.
        """
        if dataset is None:
            dataset = next((name for name, stats in DATASET_STATS.items()
                            if stats["target_length"] == target_length), "audioset")
        return replace(cls(num_mel_bins=num_mel_bins).with_dataset(dataset), target_length=target_length)

    def with_dataset(self, name: str) -> "FbankConfig":
        """This config with a published dataset's statistics and window (see :data:`DATASET_STATS`)."""
        try:
            return replace(self, **DATASET_STATS[name])
        except KeyError:
            raise UserError(f"unknown dataset statistics {name!r}; known: {', '.join(DATASET_STATS)}") from None


#: Normalization statistics and window lengths of AST's published recipes.
DATASET_STATS = {
    "audioset": dict(mean=-4.2677393, std=4.5689974, target_length=1024),
    "esc50": dict(mean=-6.6268077, std=5.358466, target_length=512),
    "speechcommands": dict(mean=-6.845978, std=5.5654526, target_length=128),
}

DEFAULT = FbankConfig()


def num_frames(num_samples: int, config: FbankConfig = DEFAULT) -> int:
    """Frames Kaldi's snip_edges framing yields: ``1 + (N - 400) // 160``, 0 below one window."""
    if num_samples < config.window_size:
        return 0
    return 1 + (num_samples - config.window_size) // config.window_shift


def frames_or_error(num_samples: int, config: FbankConfig = DEFAULT, source=None) -> int:
    """num_frames, or the one error every entry point gives for audio shorter than one frame (naming `source`)."""
    count = num_frames(num_samples, config)
    if count == 0:
        raise UserError(f"audio is {1000 * num_samples / config.sample_rate:.3g} ms long ({num_samples} samples at "
                        f"{config.sample_rate} Hz), shorter than one {config.frame_length_ms:g} ms frame", source)
    return count


def _mel(freq):
    return 1127.0 * np.log(1.0 + freq / np.float32(700.0))


@functools.lru_cache(maxsize=16)
def window(config: FbankConfig = DEFAULT) -> np.ndarray:
    """Symmetric Hann window evaluated in float32 the way ``torch.hann_window(periodic=False)`` is."""
    n = config.window_size
    w = np.cos(np.arange(n, dtype=np.float32) * np.float32(2.0 * math.pi / (n - 1)))
    w = w * np.float32(-0.5) + np.float32(0.5)
    w.flags.writeable = False
    return w


@functools.lru_cache(maxsize=16)
def mel_filterbank(config: FbankConfig = DEFAULT) -> np.ndarray:
    """Triangular filters linear in Kaldi's mel scale, ``[num_mel_bins, n_fft // 2 + 1]`` float32.

    Evaluated in float32 with torchaudio's operation order, so the weights match its matrix.
    The Nyquist column is zero, as in torchaudio. With 128 bins from 20 Hz, filter 3 covers no FFT
    bin and is empty: its output is the log floor in every frame, as in the original.
    """
    nyquist = 0.5 * config.sample_rate  # the range is checked by FbankConfig
    high = config.high_freq if config.high_freq > 0 else nyquist + config.high_freq
    mel_low, mel_high = 1127.0 * math.log(1.0 + config.low_freq / 700.0), 1127.0 * math.log(1.0 + high / 700.0)
    delta = np.float32((mel_high - mel_low) / (config.num_mel_bins + 1))
    b = np.arange(config.num_mel_bins, dtype=np.float32)[:, None]
    left = np.float32(mel_low) + b * delta
    centre = np.float32(mel_low) + (b + np.float32(1.0)) * delta
    right = np.float32(mel_low) + (b + np.float32(2.0)) * delta
    bin_width = np.float32(config.sample_rate / config.n_fft)
    mel = _mel(np.arange(config.n_fft // 2, dtype=np.float32) * bin_width)[None, :]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    weights = np.maximum(np.float32(0.0), np.minimum(up, down)).astype(np.float32)
    weights = np.pad(weights, ((0, 0), (0, 1)))
    weights.flags.writeable = False
    return weights


@functools.lru_cache(maxsize=16)
def _mel_sparse(config: FbankConfig) -> scipy.sparse.csr_matrix:
    """The filterbank as a sparse matrix (504 of 32896 weights are non-zero at 128 mels).

    Sparse is ~10x cheaper than a dense matmul and, unlike BLAS, gives every frame the same
    arithmetic wherever it sits in a block: a frame's features are bit-identical however the
    audio is chunked, which incremental streaming relies on.
    """
    return scipy.sparse.csr_matrix(mel_filterbank(config))


def _frames_to_logmel(frames: np.ndarray, config: FbankConfig) -> np.ndarray:
    """Per-frame math on a [k, window_size] block; each output row depends only on its own frame."""
    frames = np.array(frames, dtype=np.float32)  # contiguous copy: strided views are slow to work on
    frames -= frames.mean(axis=1, dtype=np.float32, keepdims=True)
    k, size = frames.shape
    padded = np.zeros((k, config.n_fft), np.float32)
    coeff = np.float32(config.preemphasis)
    body = padded[:, 1:size]
    np.multiply(frames[:, :-1], coeff, out=body)  # y[j] = x[j] - c*x[j-1], rounded like torchaudio (no FMA)
    np.subtract(frames[:, 1:], body, out=body)
    padded[:, 0] = frames[:, 0] - coeff * frames[:, 0]
    padded[:, :size] *= window(config)
    # The FFT runs in float64 (scipy's pocketfft; numpy's rfft is several times slower): it halves the
    # worst-case error against a float64 pipeline (9e-4 -> 4.5e-4 log-mel on noise) for ~0.5 ms per 10 s.
    spectrum = scipy.fft.rfft(padded.astype(np.float64), axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    energies = (_mel_sparse(config) @ power.T).T
    return np.log(np.maximum(energies, np.float32(LOG_FLOOR)))


#: Frames per block: small enough to stay in cache and bound memory on long files, large enough
#: that the Python loop over blocks costs little (measured fastest at 128-256 on a 2-vCPU EPYC).
_BLOCK_FRAMES = 256


def fbank(waveform: np.ndarray, config: FbankConfig = DEFAULT) -> np.ndarray:
    """Raw log-mel energies of ``[..., samples]`` float audio in [-1, 1]: ``[..., frames, num_mel_bins]``.

    Leading axes are a batch of equal-length clips. Fewer samples than one 25 ms frame is an error.
    """
    wave = np.asarray(waveform, dtype=np.float32)
    if wave.ndim == 0:
        raise UserError("expected a waveform array, got a scalar")
    count = frames_or_error(wave.shape[-1], config)
    batch_shape = wave.shape[:-1]
    flat = np.ascontiguousarray(wave.reshape(-1, wave.shape[-1]))
    views = np.lib.stride_tricks.sliding_window_view(flat, config.window_size, axis=-1)[:, ::config.window_shift]
    out = np.empty((flat.shape[0], count, config.num_mel_bins), np.float32)
    for clip in range(flat.shape[0]):
        for start in range(0, count, _BLOCK_FRAMES):
            stop = min(start + _BLOCK_FRAMES, count)
            out[clip, start:stop] = _frames_to_logmel(views[clip, start:stop], config)
    return out.reshape(*batch_shape, count, config.num_mel_bins)


def subtract_mean(waveform: np.ndarray) -> np.ndarray:
    """AST's training-dataloader step: remove each clip's mean (optional; see the module docstring)."""
    wave = np.asarray(waveform, dtype=np.float32)
    return wave - wave.mean(axis=-1, keepdims=True, dtype=np.float32)


def pad_or_crop(features: np.ndarray, target_length: int, value: float = 0.0) -> np.ndarray:
    """Append frames of `value` up to `target_length`, or keep the first `target_length` frames (axis -2)."""
    frames = features.shape[-2]
    if frames >= target_length:
        return features[..., :target_length, :]
    pad = [(0, 0)] * features.ndim
    pad[-2] = (0, target_length - frames)
    return np.pad(features, pad, constant_values=np.float32(value))


def normalize(features: np.ndarray, config: FbankConfig = DEFAULT) -> np.ndarray:
    """AST's dataset normalization ``(x - mean) / (2 std)``, in float32 like the original."""
    return (np.asarray(features, np.float32) - np.float32(config.mean)) / np.float32(config.std * 2)


def model_input(waveform: np.ndarray, config: FbankConfig = DEFAULT) -> np.ndarray:
    """The model's input for ``[..., samples]`` audio: ``[..., target_length, num_mel_bins]`` float32.

    Only the audio's own frames are normalized; padding rows get :attr:`FbankConfig.pad_value` directly
    (bit-identical to normalizing zero rows, which is what AST does).
    """
    return window_input(fbank(waveform[..., :config.model_samples], config), config)


def window_input(logmel: np.ndarray, config: FbankConfig = DEFAULT) -> np.ndarray:
    """Raw log-mel frames ``[..., frames, mel]`` -> the model's input: normalized, padded or cropped."""
    return pad_or_crop(normalize(logmel[..., :config.target_length, :], config), config.target_length,
                       config.pad_value)


class StreamingFbank:
    """Incremental :func:`fbank` of a stream fed in pieces of any size: each frame is computed once.

    Frame ``i`` covers stream samples ``[shift * i, shift * i + size)`` (Kaldi's snip_edges framing), so
    frame ``i`` here is bit-identical to ``fbank(stream)[i]`` and to frame ``i - j`` of
    ``fbank(stream[shift * j:])``: per-frame arithmetic does not depend on how the audio is cut (sparse
    mel product, row-wise FFT). Between calls only the samples of the next, incomplete frames are kept
    (fewer than ``size``: 240 + up to 159 at 16 kHz), and the last `keep_frames` frames in a ring.
    """

    def __init__(self, config: FbankConfig = DEFAULT, keep_frames: int = 1024):
        if keep_frames < 1:
            raise ValueError("keep_frames must be >= 1")
        self.config = config
        self.keep = keep_frames
        self.computed = 0  # frames computed so far; frame indices are global from the first sample fed
        self._pending = np.zeros(0, np.float32)  # stream samples from the first sample of frame `computed`
        self._ring = np.zeros((keep_frames, config.num_mel_bins), np.float32)

    @property
    def first_available(self) -> int:
        """The oldest frame still held."""
        return max(0, self.computed - self.keep)

    def accept(self, samples: np.ndarray) -> int:
        """Append samples and compute every frame they complete; returns how many frames were completed."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        buffer = np.concatenate([self._pending, samples]) if self._pending.size else samples
        count = num_frames(buffer.size, self.config)
        shift = self.config.window_shift
        skip = max(0, count - self.keep)  # frames that would be overwritten before anyone could read them
        if count > skip:
            views = np.lib.stride_tricks.sliding_window_view(buffer, self.config.window_size)[::shift]
            for start in range(skip, count, _BLOCK_FRAMES):
                stop = min(start + _BLOCK_FRAMES, count)
                rows = (self.computed + np.arange(start, stop)) % self.keep
                self._ring[rows] = _frames_to_logmel(views[start:stop], self.config)
        self.computed += count
        self._pending = np.array(buffer[count * shift:], dtype=np.float32)  # a copy: never a view of the caller's data
        return count

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` (global indices) as a new ``[stop - start, num_mel_bins]`` array."""
        if not self.first_available <= start <= stop <= self.computed:
            raise IndexError(f"frames {start}..{stop} requested, {self.first_available}..{self.computed} held")
        return self._ring[np.arange(start, stop) % self.keep]
