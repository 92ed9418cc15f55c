"""The Python API a user meets first: `from astedge import ...` (lazy, torch-free), and the README's snippet run as
written on a Hugging Face folder in the published AudioSet layout (tiny and random, made here)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import astedge
from conftest import TORCH_STACK, run_without_torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_astedge_is_light_and_offers_the_entry_points_on_first_use():
    done = run_without_torch(
        "import sys, astedge\n"
        "assert not [m for m in sys.modules if m.startswith('astedge.')], sorted(sys.modules)\n"
        "from astedge import Classifier, ClassifierOptions, load_audio, load_checkpoint, UserError\n"
        "from astedge.runtime.classifier import Classifier as C\n"
        "assert Classifier is C and astedge.Classifier is C and 'Classifier' in dir(astedge)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in %r))\n" % (TORCH_STACK + ("onnx",),),
        blocked=TORCH_STACK + ("onnx", "onnxruntime"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        astedge.nope  # noqa: B018
    assert set(astedge.__all__) >= {"Classifier", "ClassifierOptions", "export", "import_source", "load_checkpoint"}
    for name in astedge.__all__:  # every name offered exists where it is said to be
        assert getattr(astedge, name) is not None


def readme_python() -> str:
    """The code block of the README's "Python API" section."""
    section = README.read_text().split("\n## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section has one python block"
    return blocks[0]


@pytest.fixture(scope="module")
def published_layout(tmp_path_factory):
    """A working folder holding what the README's snippet names: a Hugging Face folder in the layout of
    MIT/ast-finetuned-audioset-10-10-0.4593 (config with AudioSet's id2label, preprocessor config, weights; tiny
    and random), and a 12 s recording."""
    from transformers import ASTFeatureExtractor

    from astedge.model.labels import audioset_labels
    from hf_reference import random_hf_model

    root = tmp_path_factory.mktemp("first-hour")
    names = audioset_labels()
    model = random_hf_model(3, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                            num_labels=527, id2label=dict(enumerate(names)),
                            label2id={name: i for i, name in enumerate(names)})
    folder = root / "ast-finetuned-audioset-10-10-0.4593"
    model.save_pretrained(folder)
    ASTFeatureExtractor().save_pretrained(folder)
    rng = np.random.default_rng(0)
    t = np.arange(12 * 44100) / 44100
    wave = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 440 * t) * (t > 4)
    sf.write(root / "my_recording.wav", wave.astype(np.float32), 44100)
    return root, model


def test_the_readme_python_snippet_runs_as_written(published_layout):
    import torch
    from transformers import ASTFeatureExtractor

    from astedge.audio.decode import load_audio

    root, hf_model = published_layout
    namespace: dict = {}
    printed = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(root)
        with contextlib.redirect_stdout(printed):
            exec(compile(readme_python(), str(README), "exec"), namespace)
    finally:
        os.chdir(cwd)
    result = namespace["result"]
    assert (root / "ast-audioset.safetensors").is_file() and (root / "ast-audioset" / "model.onnx").is_file()
    assert [(w.start, w.end) for w in result.windows] == [(0.0, 10.0), (5.0, 12.0)]  # AudioSet's 10 s clips, hop 5
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("  0.0- 10.0 s") and lines[2].startswith("whole file (max): ")
    # The first window against Hugging Face's own feature extractor and model: the same probabilities.
    wave = load_audio(root / "my_recording.wav")[:160000]
    features = ASTFeatureExtractor()(wave, sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.no_grad():
        expected = torch.sigmoid(hf_model(features).logits)[0].numpy()
    top = result.windows[0].top
    assert [s.index for s in top] == list(np.argsort(-expected, kind="stable")[:len(top)])
    assert max(abs(s.score - expected[s.index]) for s in top) <= 1e-3
    assert top[0].label == astedge.load_checkpoint(root / "ast-audioset.safetensors", weights=False).labels[top[0].index]


def test_the_readme_first_screen_shows_the_published_model_path():
    head = README.read_text().split("\n## The pipeline", 1)[0]
    for step in ("hf download MIT/ast-finetuned-audioset-10-10-0.4593", "astedge import", "astedge export",
                 "astedge classify", "astedge listen"):
        assert step in head, step
    commands = [line.strip()[2:] for line in head.splitlines() if line.strip().startswith("$ astedge ")]
    assert commands, "the first screen shows commands with their output"
    for command in commands:  # each is a real command of the CLI
        done = subprocess.run([sys.executable, "-m", "astedge", command.split()[1], "--help"], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, (command, done.stderr)
