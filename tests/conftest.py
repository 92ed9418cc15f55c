"""Shared fixtures: tests make their own audio (nothing is downloaded or shipped)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TORCH_STACK = ("torch", "timm", "torchvision", "transformers")


def run_without_torch(code: str, blocked: tuple[str, ...] = TORCH_STACK) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where the `blocked` packages cannot be imported (by default the
    PyTorch stack, as on a Jetson that has TensorRT and numpy but no PyTorch)."""
    block = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {tuple(blocked)!r}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    return subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True,
                          env={**os.environ}, stdin=subprocess.DEVNULL, timeout=300)


def tone(freq: float, seconds: float, rate: int = 16000, amplitude: float = 0.5, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def signals(length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The parity corpus: noise, tones, silence and full-scale clipping at one length."""
    t = np.arange(length) / 16000
    return {
        "noise": (0.1 * rng.standard_normal(length)).astype(np.float32),
        "sines": (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3150.5 * t)).astype(np.float32),
        "chirp": (0.5 * np.sin(2 * np.pi * (50 + 3000 * t) * t)).astype(np.float32),
        "silence": np.zeros(length, np.float32),
        "clipping": np.clip(4.0 * rng.standard_normal(length), -1.0, 1.0).astype(np.float32),
    }


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Three synthesized classes x 10 half-second clips with their events' boundaries and a 10 s labelled stream
    (read only: tests that write copy it or use their own)."""
    from astedge.data import synth

    root = tmp_path_factory.mktemp("synth")
    synth.write_dataset(root, classes=3, per_class=10, seconds=0.5, seed=3, stream_seconds=10.0)
    return root
