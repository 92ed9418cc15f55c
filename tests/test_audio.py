"""Audio input: every format and layout soundfile reads becomes float32 mono 16 kHz; bad files fail in one line."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from astedge.audio import decode as audio
from astedge.errors import UserError
from conftest import tone


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_integer_and_float_wav_read_into_unit_range(tmp_path, subtype):
    wave = tone(440, 1.0, amplitude=0.8)
    path = tmp_path / f"tone_{subtype}.wav"
    sf.write(path, wave, 16000, subtype=subtype)
    out = audio.load_audio(path)
    assert out.dtype == np.float32 and out.shape == wave.shape
    quantum = {"PCM_16": 2.0**-15, "PCM_24": 2.0**-23}.get(subtype, 1e-7)
    assert np.abs(out - wave).max() <= quantum


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_resampling_is_band_limited_and_accurate(tmp_path, rate):
    """A 1 kHz tone at any rate becomes the analytic 1 kHz tone at 16 kHz (linear interpolation fails this)."""
    path = tmp_path / f"tone_{rate}.flac"
    sf.write(path, tone(1000, 2.0, rate=rate, amplitude=0.5), rate, subtype="PCM_24")
    out = audio.load_audio(path)
    assert len(out) == 32000
    expected = tone(1000, 2.0, amplitude=0.5)
    interior = slice(1000, -1000)
    assert np.abs(out[interior] - expected[interior]).max() < 2e-4


def test_channels_are_averaged(tmp_path):
    left, right = tone(300, 0.5), tone(1200, 0.5, amplitude=0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(audio.load_audio(path), (left + right) / 2, atol=1e-7)
    six = np.stack([left] * 5 + [right], axis=1)
    sf.write(tmp_path / "six.wav", six, 16000, subtype="FLOAT")
    np.testing.assert_allclose(audio.load_audio(tmp_path / "six.wav"), (5 * left + right) / 6, atol=1e-6)


def test_many_channels_are_mixed_block_by_block(tmp_path, monkeypatch):
    """A long multichannel file is mixed to mono as it is read: never held as all its channels (an hour of
    6-channel 48 kHz audio is 4 GB as float32), and the result equals mixing the whole array at once."""
    rate, channels = 48000, 8
    wave = np.stack([tone(300 + 100 * c, 4.0, rate=rate, amplitude=0.1) for c in range(channels)], axis=1)
    path = tmp_path / "eight.wav"
    sf.write(path, wave, rate, subtype="FLOAT")
    monkeypatch.setattr(audio, "READ_BLOCK_FRAMES", 4096)  # 47 blocks, as a long file has thousands
    tracemalloc.start()
    try:
        out = audio.load_audio(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(out, audio.prepare(wave, rate))
    assert peak < 0.4 * wave.nbytes, f"peak {peak / wave.nbytes:.2f}x the [frames, channels] array"


def test_codecs_that_cannot_seek_are_read(tmp_path):
    """GSM 6.10 WAV (telephony) is not seekable in libsndfile: it must still be read to the end."""
    path = tmp_path / "call.wav"
    sf.write(path, tone(440, 2.0, rate=8000), 8000, subtype="GSM610")
    out = audio.load_audio(path)
    assert abs(len(out) - 32000) <= 320
    expected = tone(440, 2.0)[:len(out)]
    assert np.corrcoef(out[1000:-1000], expected[1000:-1000])[0, 1] > 0.95


def test_loud_float_audio_is_accepted():
    """Float files may run over full scale (hot masters, decoded MP3 overshoot): kept as they are."""
    hot = 4.0 * tone(440, 0.5)
    np.testing.assert_array_equal(audio.prepare(hot, 16000), hot)


def test_ogg_vorbis_is_read(tmp_path):
    path = tmp_path / "tone.ogg"
    sf.write(path, tone(500, 1.0, rate=44100), 44100, format="OGG", subtype="VORBIS")
    out = audio.load_audio(path)
    assert abs(len(out) - 16000) <= 2
    expected = tone(500, 1.0)[: len(out)]
    assert np.corrcoef(out[2000:-2000], expected[2000:-2000])[0, 1] > 0.99


def test_arrays_take_the_same_path():
    stereo48k = np.stack([tone(1000, 1.0, rate=48000)] * 2, axis=1)
    out = audio.prepare(stereo48k, 48000)
    assert out.shape == (16000,) and out.dtype == np.float32
    assert np.abs(out[500:-500] - tone(1000, 1.0)[500:-500]).max() < 2e-4


def _write_bad(tmp_path, kind):
    """Each way a user's file can be wrong, as (path, expected message fragment)."""
    path = tmp_path / f"{kind}.wav"
    if kind == "missing":
        return path, "no such file"
    if kind == "directory":
        path.mkdir()
        return path, "is a directory"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "is empty"
    if kind == "zero_samples":
        sf.write(path, np.zeros(0, np.float32), 16000)
        return path, "no audio samples"
    if kind == "truncated_header":
        sf.write(path, tone(440, 0.1), 16000)
        path.write_bytes(path.read_bytes()[:20])
        return path, "not a readable audio file"
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
        return path, "not a readable audio file"
    if kind == "unsupported":
        path = tmp_path / "notes.txt"
        path.write_text("this is not audio\n" * 50)
        return path, "not a readable audio file"
    if kind == "nan":
        wave = tone(440, 0.1)
        wave[100] = np.nan
        wave[200] = np.inf
        sf.write(path, wave, 16000, subtype="FLOAT")
        return path, "2 NaN or infinite"
    if kind == "int_scaled_float":  # integer sample values stored in a float file: would give garbage or NaN
        sf.write(path, np.round(32767 * tone(440, 0.5)), 16000, subtype="FLOAT")
        return path, "far outside [-1, 1]"
    if kind == "pipe":
        os.mkfifo(path)
        return path, "not a regular file"
    if kind == "too_long":
        sf.write(path, np.zeros(16000 * 3, np.float32), 16000)
        return path, "over the 2 s limit"
    raise AssertionError(kind)


BAD = ["missing", "directory", "empty", "zero_samples", "truncated_header", "corrupt", "unsupported", "nan",
       "int_scaled_float", "pipe", "too_long"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_one_clear_error(tmp_path, kind):
    path, fragment = _write_bad(tmp_path, kind)
    with pytest.raises(UserError) as err:
        audio.load_audio(path, max_seconds=2.0)
    message = str(err.value)
    assert message.startswith(str(path)) and fragment in message and "\n" not in message
