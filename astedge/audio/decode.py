"""Audio input: any file soundfile reads, or any array, to float32 mono at the model's rate.

AST was trained on 16 kHz mono float audio in [-1, 1] (`torchaudio.load`, not x32768).
Channels are averaged; other rates are resampled with soxr at its highest quality, chosen here
once (:data:`RESAMPLER_QUALITY`) so that files, microphones and training all hear the same thing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from astedge.audio.c_stderr import quiet_c_stderr
from astedge.errors import UserError

#: File suffixes read as audio when a folder is searched (soundfile's formats, plus mp3/opus through libsndfile).
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".mp3", ".opus", ".w64", ".caf"}

#: soxr quality for every rate conversion in astedge ("VHQ": very high, linear phase).
RESAMPLER_QUALITY = "VHQ"

#: Frames per block when a file is read and mixed to mono: a 1 h 6-channel 48 kHz file is never held
#: as all its channels at once (4 GB as float32), only as mono.
READ_BLOCK_FRAMES = 1 << 16

#: Louder than this (60 dB over full scale) is not float audio in [-1, 1] but a scaling mistake, typically
#: integer sample values stored as float; far louder values would overflow the fbank into inf/NaN.
MAX_PEAK = 1000.0

#: How a refusal of a damaged file in a known format begins.
DAMAGED = "corrupt or truncated"


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
    peak = max(float(mono.max()), -float(mono.min()))  # no temporary the size of the audio
    if peak > MAX_PEAK:
        raise UserError(f"has samples up to {peak:.6g}, far outside [-1, 1] (integer values stored as float?); "
                        "scale the audio to [-1, 1]", source)
    return resample(mono, int(rate), int(target_rate))


def audio_info(path: str | Path):
    """soundfile's header for `path`, with every way a path can be unreadable turned into a UserError."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise UserError("no such file", path)
    if path.is_dir():
        raise UserError("is a directory, not an audio file", path)
    if not path.is_file():
        raise UserError("is not a regular file (a pipe or a device?); save the audio to a file first", path)
    if path.stat().st_size == 0:
        raise UserError("is empty (0 bytes)", path)
    try:
        with quiet_c_stderr():
            info = sf.info(os.fspath(path))
    except (RuntimeError, sf.LibsndfileError) as err:  # libsndfile: bad header, unknown format, truncation
        reason = _decode_failure(err, path)
        if reason.startswith(DAMAGED):  # a known format: converting it with ffmpeg is not the advice
            raise UserError(reason, path) from None
        raise UserError(f"not a readable audio file ({reason}); astedge reads WAV, FLAC, OGG, Opus, MP3 and the "
                        "other formats of libsndfile; convert others first, e.g. ffmpeg -i IN -ar 16000 OUT.wav",
                        path) from None
    if info.frames == 0 or info.samplerate <= 0:
        raise UserError("contains no audio samples", path)
    return info


def _decode_failure(err: Exception, path: Path) -> str:
    """libsndfile's reason for refusing `path`, or a truthful one where its own misleads.

    For a damaged MP3 libsndfile says "File does not exist or is not a regular file (possibly a pipe?)"
    about a file that exists: its MP3 decoder found no frame it could decode.
    """
    reason = str(err).split(":")[-1].strip().rstrip(".") or "unreadable"
    if "does not exist or is not a regular file" not in reason:
        return reason
    if _looks_like_mp3(path):
        return f"{DAMAGED} MP3 data (no decodable MPEG audio frame)"
    return f"{DAMAGED} audio data"


def _looks_like_mp3(path: Path) -> bool:
    """An .mp3 name, an ID3 tag or an MPEG audio frame sync at the start."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(3)
    except OSError:
        head = b""
    return Path(path).suffix.lower() == ".mp3" or head == b"ID3" or (
        len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


def load_audio(path: str | Path, sample_rate: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Read an audio file as float32 mono at `sample_rate`, in [-1, 1] for integer formats.

    `max_seconds` rejects longer files before they are read (say what the limit is for).
    """
    import soundfile as sf

    info = audio_info(path)
    seconds = info.frames / info.samplerate
    if max_seconds is not None and seconds > max_seconds:
        raise UserError(f"is {seconds:.1f} s long, over the {max_seconds:g} s limit for this operation", path)
    blocks = []
    # Mixed to mono block by block: only the mono signal is ever held whole. read(), not blocks(): some codecs
    # (GSM 6.10) cannot seek.
    try:
        with quiet_c_stderr(), sf.SoundFile(os.fspath(path)) as handle:
            rate = handle.samplerate
            while len(block := handle.read(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)):
                blocks.append(to_mono(block))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise UserError(f"could not be decoded ({_decode_failure(err, path)})", path) from None
    mono = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return prepare(mono, rate, sample_rate, source=path)


def find_audio_files(folder: str | Path) -> list[Path]:
    """Audio files (by :data:`AUDIO_SUFFIXES`) under `folder`, recursively, sorted; nothing is checked."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def audio_files(folder: str | Path, role: str = "audio folder") -> list[Path]:
    """The audio files under `folder` (:func:`find_audio_files`); a missing folder, a file, an unreadable folder or
    one without audio is a :class:`UserError` naming it, with `role` saying what the folder is for."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{role} does not exist", folder)
    if not folder.is_dir():
        raise UserError(f"is not a folder: the {role} must be a folder of audio files", folder)
    try:
        files = find_audio_files(folder)
    except OSError as err:
        raise UserError(f"{role} cannot be read ({err.strerror or err})", folder) from None
    if not files:
        raise UserError(f"{role} has no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in it or its sub-folders",
                        folder)
    return files
