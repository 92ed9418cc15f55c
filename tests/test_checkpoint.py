"""Checkpoint files (round trip, no torch to read, atomic writes, bad files) and the predict path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.numpy import save_file

from astedge import __version__
from astedge.model.checkpoint import load_checkpoint, save_checkpoint
from astedge.cli import main
from astedge.errors import UserError
from astedge.features.fbank import FbankConfig, model_input
from astedge.model.ast_model import ASTModel, ModelConfig
from astedge.runtime.predict import predict_file
from astedge.runtime.scores import activate

CFG = ModelConfig(num_classes=4, embed_dim=32, depth=2, num_heads=2, target_length=128, norm_eps=1e-12,
                  head_norm_eps=1e-12)
LABELS = ["yes", "no", "up", "down"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = ASTModel(CFG).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return net


@pytest.fixture
def saved(model, tmp_path):
    features = FbankConfig().with_dataset("speechcommands")
    path = save_checkpoint(tmp_path / "kws.safetensors", model, feature_config=features, labels=LABELS,
                           task="multiclass", provenance={"source": "unit test"})
    return path, features


def test_round_trip(model, saved):
    path, features = saved
    checkpoint = load_checkpoint(path)
    assert checkpoint.model_config == CFG and checkpoint.feature_config == features
    assert checkpoint.labels == tuple(LABELS) and checkpoint.task == "multiclass"
    assert checkpoint.provenance["source"] == "unit test" and checkpoint.provenance["astedge"] == __version__
    assert checkpoint.provenance["created"].endswith("+00:00")
    reference = model.state_dict()
    assert set(checkpoint.state_dict) == set(reference)
    for key, value in reference.items():
        assert np.array_equal(checkpoint.state_dict[key], value.numpy()), key
    x = torch.randn(2, 128, 128)
    with torch.no_grad():
        assert torch.equal(checkpoint.build_model()(x), model(x))
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of the temp file it was written as
    header = load_checkpoint(path, weights=False)
    assert header.state_dict is None and header.labels == checkpoint.labels


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_are_stored_as_float32(model, tmp_path, dtype):
    """A bfloat16/float16 Hub checkpoint imports to float32 weights, readable without torch (numpy has no bfloat16)."""
    half = {k: v.to(dtype) for k, v in model.state_dict().items()}
    path = save_checkpoint(tmp_path / "half.safetensors", half, model_config=CFG)
    checkpoint = load_checkpoint(path)
    for key, value in half.items():
        assert checkpoint.state_dict[key].dtype == np.float32, key
        assert np.array_equal(checkpoint.state_dict[key], value.float().numpy()), key


def test_defaults_and_numpy_state(model, tmp_path):
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    path = save_checkpoint(tmp_path / "np.safetensors", state, CFG)
    checkpoint = load_checkpoint(path)
    assert checkpoint.labels == tuple(f"class_{i}" for i in range(4)) and checkpoint.task == "multilabel"
    assert checkpoint.feature_config.target_length == 128  # features follow the model's window


def test_reading_needs_no_torch(saved):
    """The Jetson runtime reads configs, labels and weights with numpy + safetensors only; the CLI
    and the scoring helpers import without torch too."""
    path, _ = saved
    code = ("import sys, json; sys.modules['torch'] = None; sys.modules['timm'] = None\n"
            "import astedge.cli, astedge.runtime.predict\n"
            "from astedge.model.checkpoint import load_checkpoint\n"
            f"c = load_checkpoint({str(path)!r})\n"
            "print(json.dumps([list(c.labels), c.model_config.grid, c.feature_config.mean, "
            "str(c.state_dict['mlp_head.1.weight'].dtype), sys.modules['torch'] is not None]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [LABELS, [12, 12], pytest.approx(-6.845978), "float32", False]


def test_save_is_atomic(model, saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()
    with pytest.raises(UserError, match="3 labels for a head of 4 outputs"):
        save_checkpoint(path, model, labels=LABELS[:3])

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, labels=LABELS)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind


def test_save_validates(model, tmp_path):
    with pytest.raises(UserError, match="task must be one of multilabel, multiclass"):
        save_checkpoint(tmp_path / "a.safetensors", model, task="regression")
    with pytest.raises(UserError, match="feature config gives 1024 x 128 inputs but the model takes 128 x 128"):
        save_checkpoint(tmp_path / "a.safetensors", model, feature_config=FbankConfig())
    assert not list(tmp_path.iterdir())


def test_bad_files_name_the_file(saved, tmp_path):
    path, _ = saved
    cases = {
        "missing.safetensors": None,
        "junk.safetensors": os.urandom(4096),
        "truncated.safetensors": path.read_bytes()[: path.stat().st_size // 2],
        "empty.safetensors": b"",
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError) as err:
            load_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(err.value), name
    torch.save({"w": torch.zeros(2)}, tmp_path / "pickle.safetensors")
    with pytest.raises(UserError, match="pickle.safetensors: is not a readable safetensors file"):
        load_checkpoint(tmp_path / "pickle.safetensors")
    save_file({"w": np.zeros(2, np.float32)}, tmp_path / "foreign.safetensors")
    with pytest.raises(UserError, match="foreign.safetensors: .*not an astedge checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    save_file({"w": np.zeros(2, np.float32)}, tmp_path / "bad.safetensors",
              metadata={"astedge_format": "1", "model_config": "{", "feature_config": "{}", "labels": "[]",
                        "task": "multilabel", "provenance": "{}"})
    with pytest.raises(UserError, match="bad.safetensors: checkpoint metadata 'model_config' is not valid JSON"):
        load_checkpoint(tmp_path / "bad.safetensors")


# --- predict -------------------------------------------------------------------------------------


def test_activate_matches_torch():
    logits = np.array([[-1000.0, -3.0, 0.0, 2.5, 1000.0]], np.float32)
    np.testing.assert_allclose(activate(logits, "multilabel"), torch.sigmoid(torch.from_numpy(logits).double()),
                               rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(activate(logits, "multiclass"), torch.softmax(torch.from_numpy(logits).double(), -1),
                               rtol=1e-12, atol=1e-300)


@pytest.fixture
def wav(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 48000  # 0.5 s at 48 kHz: resampled to 16 kHz, padded to 128 frames
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    path = tmp_path / "tone.wav"
    soundfile.write(path, wave.astype(np.float32), 48000)
    return path


def test_predict_file_matches_model(model, saved, wav):
    from astedge.audio.decode import load_audio

    path, features = saved
    result = predict_file(wav, path, k=3)
    x = torch.from_numpy(model_input(load_audio(wav, 16000), features))[None]
    with torch.no_grad():
        probs = torch.softmax(model(x).double(), dim=-1)[0]
    best = torch.argsort(probs, descending=True)[:3].tolist()
    assert [row["index"] for row in result["top"]] == best
    assert [row["label"] for row in result["top"]] == [LABELS[i] for i in best]
    np.testing.assert_allclose([row["score"] for row in result["top"]], probs[best].numpy(), rtol=1e-5)
    assert result["seconds"] == pytest.approx(0.5) and result["frames"] == 48 and result["task"] == "multiclass"


def test_predict_long_file_uses_its_first_window(model, saved, tmp_path):
    """A 5 s file under a 128-frame model: the first 128 frames decide; seconds/frames describe the whole file."""
    path, features = saved
    wave = (0.1 * np.random.default_rng(1).standard_normal(80000)).astype(np.float32)
    wave[20000:] = 0.0  # what comes after the first window must not matter
    soundfile.write(tmp_path / "long.wav", wave, 16000, subtype="FLOAT")
    result = predict_file(tmp_path / "long.wav", path, k=3)
    x = torch.from_numpy(model_input(wave, features))[None]
    with torch.no_grad():
        probs = torch.softmax(model(x).double(), dim=-1)[0]
    np.testing.assert_allclose([row["score"] for row in result["top"]], probs[[r["index"] for r in result["top"]]],
                               rtol=1e-5)
    assert result["seconds"] == 5.0 and result["frames"] == 498


def test_predict_command(saved, wav, monkeypatch, capsys):
    path, _ = saved
    def run(*args):
        monkeypatch.setattr(sys, "argv", ["astedge", "predict", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        return exit_.value.code

    assert run(str(wav), "--model", str(path), "--top-k", "2", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["label"] for row in result["top"]] == [row["label"] for row in predict_file(wav, path, k=2)["top"]]
    assert run(str(wav), "--model", str(wav)) == 2
    err = capsys.readouterr().err
    assert "tone.wav" in err and "safetensors" in err and len(err.strip().splitlines()) == 1
