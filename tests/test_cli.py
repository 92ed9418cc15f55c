"""The CLI as a user meets it: real processes, exit codes, one-line errors, atomic outputs."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

from astedge.features import fbank as F
from astedge.audio import decode as audio_io
from conftest import run_without_torch, tone
from test_audio import BAD, _write_bad


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "astedge", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, **kwargs)


def test_help_and_version():
    result = run("--help")
    assert result.returncode == 0 and "features" in result.stdout and "doctor" in result.stdout
    from astedge import __version__

    assert run("--version").stdout.strip() == f"astedge {__version__}"
    for command in ("features", "doctor"):
        assert "Example: astedge " + command in run(command, "--help").stdout.replace("\n", " ")


def test_doctor_reports_without_crashing():
    result = run("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["packages"]["numpy"] == np.__version__
    assert set(report["backends"]) == {"tensorrt", "onnxruntime", "torch"}
    assert report["backends"]["onnxruntime"]["usable"] is True
    assert isinstance(report["cuda"]["devices"], list)
    assert report["fbank_library"]["searched"]
    text = run("doctor")
    assert text.returncode == 0 and "backend onnxruntime" in text.stdout


def test_features_writes_exactly_the_library_output(tmp_path):
    wav = tmp_path / "clip.wav"
    sf.write(wav, np.stack([tone(440, 3.0, rate=44100), tone(880, 3.0, rate=44100)], axis=1), 44100, subtype="PCM_16")
    out = tmp_path / "clip.npy"
    result = run("features", str(wav), "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames"] == 298 and summary["shape"] == [1024, 128]
    expected = F.model_input(audio_io.load_audio(wav))
    np.testing.assert_array_equal(np.load(out), expected)

    raw = tmp_path / "raw.npy"
    assert run("features", str(wav), "-o", str(raw), "--raw").returncode == 0
    np.testing.assert_array_equal(np.load(raw), F.fbank(audio_io.load_audio(wav)))

    short = tmp_path / "short.npy"
    assert run("features", str(wav), "-o", str(short), "--target-length", "128", "--dataset", "speechcommands").returncode == 0
    config = F.DEFAULT.with_dataset("speechcommands")
    np.testing.assert_array_equal(np.load(short), F.model_input(audio_io.load_audio(wav), config))


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, kind):
    path, fragment = _write_bad(tmp_path, kind)
    out = tmp_path / "out.npy"
    result = run("features", str(path), "-o", str(out), "--max-seconds", "2")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.npy")]


def test_features_output_that_is_not_a_plain_file(tmp_path):
    """-o through a symlink, into a pipe (or /dev/null, /dev/stdout), onto the input, or where nothing can be
    written: the link and the pipe are kept (a temp file renamed over them would replace them), the input is
    never overwritten, and a write error is one line."""
    wav = tmp_path / "clip.wav"
    sf.write(wav, tone(440, 1.0), 16000, subtype="PCM_16")
    expected = F.model_input(audio_io.load_audio(wav))

    (tmp_path / "real").mkdir()
    link = tmp_path / "link.npy"
    link.symlink_to(tmp_path / "real" / "target.npy")
    assert run("features", str(wav), "-o", str(link)).returncode == 0
    assert link.is_symlink()
    np.testing.assert_array_equal(np.load(tmp_path / "real" / "target.npy"), expected)

    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run("features", str(wav), "-o", str(fifo))
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert fifo.is_fifo() and received
    np.testing.assert_array_equal(np.load(io.BytesIO(received[0])), expected)

    before = wav.read_bytes()
    result = run("features", str(wav), "-o", str(wav))
    assert result.returncode == 2 and "is the input audio" in result.stderr and wav.read_bytes() == before

    result = run("features", str(wav), "-o", "/proc/astedge-cannot-write-here.npy")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "cannot write the output" in lines[0], result.stderr


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg to make an M4A file")
def test_m4a_is_refused_in_one_line(tmp_path):
    """AAC in MP4 is not a libsndfile format: one line naming the file and how to convert it, exit 2."""
    wav, m4a = tmp_path / "clip.wav", tmp_path / "clip.m4a"
    sf.write(wav, tone(440, 1.0), 16000, subtype="PCM_16")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True,
                   stdin=subprocess.DEVNULL, timeout=60)
    result = run("features", str(m4a), "-o", str(tmp_path / "out.npy"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert str(m4a) in lines[0] and "not a readable audio file" in lines[0] and "ffmpeg" in lines[0]
    assert not (tmp_path / "out.npy").exists()


def test_too_short_audio_and_missing_output_dir(tmp_path):
    wav = tmp_path / "blip.wav"
    sf.write(wav, np.zeros(300, np.float32), 16000)
    result = run("features", str(wav), "-o", str(tmp_path / "x.npy"))
    assert result.returncode == 2 and "shorter than one 25 ms frame" in result.stderr
    assert f"{wav}: audio is 18.8 ms long (300 samples at 16000 Hz)" in result.stderr
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    result = run("features", str(wav), "-o", str(tmp_path / "nowhere" / "x.npy"))
    assert result.returncode == 2 and "output directory does not exist" in result.stderr


def test_runtime_modules_import_without_torch():
    """The Jetson runtime has no PyTorch: these modules must not import it."""
    code = (
        "import astedge.cli, astedge.audio.decode, astedge.features.fbank, astedge.measure.doctor, astedge.files, astedge.features.cuda_fbank\n"
        "import numpy as np\n"
        "assert astedge.features.fbank.model_input(np.zeros(16000, np.float32)).shape == (1024, 128)\n"
        "print('ok')\n"
    )
    result = run_without_torch(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
