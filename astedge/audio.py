"""Audio input: any file soundfile reads, or any array, to float32 mono at the model's rate.

AST was trained on 16 kHz mono float audio in [-1, 1] (`torchaudio.load`, not x32768).
Channels are averaged; other rates are resampled with soxr at its highest quality, chosen here
once (:data:`RESAMPLER_QUALITY`) so that files, microphones and training all hear the same thing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from astedge.errors import UserError

#: soxr quality for every rate conversion in astedge ("VHQ": very high, linear phase).
RESAMPLER_QUALITY = "VHQ"


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float32 signal (returns the input when rates match)."""
    if rate_in == rate_out:
        return samples
    import soxr

    return soxr.resample(samples, rate_in, rate_out, quality=RESAMPLER_QUALITY).astype(np.float32, copy=False)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels of a [frames, channels] array; 1-D input is already mono."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.ndim != 2:
        raise UserError(f"expected audio shaped [frames] or [frames, channels], got {samples.shape}")
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def prepare(samples: np.ndarray, rate: int, target_rate: int = 16000, source: str | Path | None = None) -> np.ndarray:
    """Turn raw samples (any rate, any channel count, float in [-1, 1]) into float32 mono at `target_rate`."""
    mono = to_mono(samples)
    if mono.size == 0:
        raise UserError("contains no audio samples", source)
    if not np.isfinite(mono).all():
        bad = int(np.count_nonzero(~np.isfinite(mono)))
        raise UserError(f"contains {bad} NaN or infinite sample(s)", source)
    return resample(mono, int(rate), int(target_rate))


def audio_info(path: str | Path):
    """soundfile's header for `path`, with every way a path can be unreadable turned into a UserError."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise UserError("no such file", path)
    if path.is_dir():
        raise UserError("is a directory, not an audio file", path)
    if path.stat().st_size == 0:
        raise UserError("is empty (0 bytes)", path)
    try:
        info = sf.info(os.fspath(path))
    except (RuntimeError, sf.LibsndfileError) as err:  # libsndfile: bad header, unknown format, truncation
        reason = str(err).split(":")[-1].strip().rstrip(".") or "unreadable"
        raise UserError(f"not a readable audio file ({reason}); astedge reads WAV, FLAC, OGG and the other "
                        "formats of libsndfile", path) from None
    if info.frames == 0 or info.samplerate <= 0:
        raise UserError("contains no audio samples", path)
    return info


def load_audio(path: str | Path, sample_rate: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Read an audio file as float32 mono at `sample_rate`, in [-1, 1] for integer formats.

    `max_seconds` rejects longer files before they are read (say what the limit is for).
    """
    import soundfile as sf

    info = audio_info(path)
    seconds = info.frames / info.samplerate
    if max_seconds is not None and seconds > max_seconds:
        raise UserError(f"is {seconds:.1f} s long, over the {max_seconds:g} s limit for this operation", path)
    try:
        samples, rate = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise UserError(f"could not be decoded ({str(err).split(':')[-1].strip()})", path) from None
    return prepare(samples, rate, sample_rate, source=path)
