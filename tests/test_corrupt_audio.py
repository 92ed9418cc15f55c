"""Damaged audio files, as users have them: corrupted copies of real WAV, FLAC, OGG and MP3 files.

Every copy either reads (exit 0, finite features) or is refused in one line naming the file (exit 2); never a
traceback, and never the C decoder's own notes (libmpg123 prints ``Note: Illegal Audio-MPEG-Header ...``).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading

import numpy as np
import pytest
import soundfile as sf

from astedge.audio import decode
from astedge.audio.c_stderr import quiet_c_stderr
from astedge.audio.capture import FileSource
from astedge.errors import UserError
from conftest import tone
from test_cli import run

FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
           "mp3": ("MP3", "MPEG_LAYER_III")}
CORRUPTIONS = ("truncated_half", "header_only", "zeroed_head", "flipped_bytes", "garbage_body")


def _clip(seconds: float = 1.0) -> np.ndarray:
    noise = np.random.default_rng(7).standard_normal(int(16000 * seconds)).astype(np.float32)
    return tone(440, seconds) * 0.6 + 0.05 * noise


def write_clip(path, suffix: str) -> None:
    """A real file of each format, made here; MP3 through libsndfile's LAME, else the lame or ffmpeg program."""
    fmt, subtype = FORMATS[suffix]
    try:
        sf.write(path, _clip(), 16000, format=fmt, subtype=subtype)
        return
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        if suffix != "mp3":
            raise
    wav = path.with_suffix(".src.wav")
    sf.write(wav, _clip(), 16000)
    for tool, args in (("lame", ["--quiet", wav, path]), ("ffmpeg", ["-v", "error", "-y", "-i", wav, path])):
        if shutil.which(tool):
            subprocess.run([tool, *map(str, args)], check=True)
            return
    pytest.skip("no MP3 encoder here (libsndfile without LAME, no lame, no ffmpeg)")


def corrupt(data: bytes, kind: str, seed: int) -> bytes:
    """One deterministic corruption of a file's bytes."""
    rnd = random.Random(seed)
    if kind == "truncated_half":
        return data[: len(data) // 2]
    if kind == "header_only":
        return data[:100]
    if kind == "zeroed_head":
        return bytes(64) + data[64:]
    if kind == "flipped_bytes":
        out = bytearray(data)
        for _ in range(24):
            out[rnd.randrange(64, len(out))] = rnd.randrange(256)
        return bytes(out)
    if kind == "garbage_body":
        return data[:16] + rnd.randbytes(len(data) - 16)
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    made = {}
    for suffix in FORMATS:
        path = folder / f"clip.{suffix}"
        try:
            write_clip(path, suffix)
        except pytest.skip.Exception:
            continue
        made[suffix] = path.read_bytes()
    return made


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_file_reads_or_is_refused_in_one_line(tmp_path, originals, suffix, kind):
    if suffix not in originals:
        pytest.skip(f"no {suffix} encoder here")
    path = tmp_path / f"damaged.{suffix}"
    path.write_bytes(corrupt(originals[suffix], kind, seed=len(kind) * 31 + len(suffix)))
    out = tmp_path / "features.npy"
    result = run("features", str(path), "-o", str(out))
    assert result.returncode in (0, 2), result.stderr
    assert "Traceback" not in result.stderr and "Note:" not in result.stderr and "mpg123" not in result.stderr
    if result.returncode == 0:
        assert result.stderr == "", result.stderr
        features = np.load(out)
        assert features.shape == (1024, 128) and np.isfinite(features).all()
        return
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], result.stderr
    assert "does not exist" not in lines[0] and "possibly a pipe" not in lines[0], lines[0]
    assert not out.exists()


def test_an_mp3_without_a_frame_is_called_corrupt(tmp_path, originals, capfd):
    if "mp3" not in originals:
        pytest.skip("no MP3 encoder here")
    path = tmp_path / "cut.mp3"
    path.write_bytes(originals["mp3"][:100])
    with pytest.raises(UserError) as err:
        decode.load_audio(path)
    assert str(err.value) == f"{path}: corrupt or truncated MP3 data (no decodable MPEG audio frame)"
    assert capfd.readouterr().err == ""


def _noisy_mp3(tmp_path, data: bytes, capfd):
    """A damaged MP3 that still decodes and makes libmpg123 print notes while it is read (unquieted), or None."""
    for seed in range(12):
        path = tmp_path / f"noisy{seed}.mp3"
        path.write_bytes(corrupt(data, "flipped_bytes", seed))
        try:
            sf.read(path)
        except (sf.LibsndfileError, RuntimeError):
            continue
        finally:
            noted = "mpg123" in capfd.readouterr().err
        if noted:
            return path
    return None


def test_a_replayed_damaged_mp3_keeps_the_decoders_notes_off_stderr(tmp_path, originals, capfd):
    if "mp3" not in originals:
        pytest.skip("no MP3 encoder here")
    path = _noisy_mp3(tmp_path, originals["mp3"], capfd)
    if path is None:
        pytest.skip("this libmpg123 prints no notes for these corruptions")
    source, blocks, done = FileSource(path), [], threading.Event()
    source.start(lambda block, *rest: blocks.append(block), done.set)
    assert done.wait(30)
    assert sum(map(len, blocks)) > 0
    assert capfd.readouterr().err == ""


def test_quiet_c_stderr_drops_only_the_c_librarys_notes_and_always_restores(capfd):
    def write(text: str) -> None:
        os.write(2, text.encode())

    with pytest.raises(RuntimeError), quiet_c_stderr():
        write("Note: Illegal Audio-MPEG-Header 0x00000000 at offset 2264.\nNote: Trying to resync...\n")
        write("[src/libmpg123/layer3.c:INT123_do_layer3():1804] error: dequantization failed!\n")
        write("a warning from another thread\n")
        raise RuntimeError("the read failed")
    write("after\n")
    assert capfd.readouterr().err == "a warning from another thread\nafter\n"


def test_quiet_c_stderr_is_shared_by_threads_and_restored_by_the_last(capfd):
    inside, release = threading.Barrier(2), threading.Event()

    def reader():
        with quiet_c_stderr():
            inside.wait()
            release.wait(5)
            os.write(2, b"Note: from the reader\n")

    thread = threading.Thread(target=reader)
    thread.start()
    with quiet_c_stderr():
        inside.wait()
        os.write(2, b"Note: from the main thread\n")
    os.write(2, b"main left first\n")  # still captured: the reader is inside; passed on when it leaves
    release.set()
    thread.join()
    os.write(2, b"after both\n")
    assert capfd.readouterr().err == "main left first\nafter both\n"


def test_a_process_forked_during_a_capture_writes_to_the_terminal(capfd):
    with quiet_c_stderr():
        pid = os.fork()
        if pid == 0:  # the child: its stderr is the terminal again, not the parent's capture
            os.write(2, b"Note: the child's own line\n")
            os._exit(0)
        os.waitpid(pid, 0)
    assert capfd.readouterr().err == "Note: the child's own line\n"
