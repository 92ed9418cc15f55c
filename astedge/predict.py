"""Tag one audio file with a checkpoint in PyTorch: the minimal inference path.

Scoring (:func:`activate`, :func:`top_k`) is numpy-only so the real-time runtime can share it;
only :func:`predict_file` runs the torch model. The model sees the first ``target_length`` frames
(10.24 s for AudioSet models), zero-padded when shorter, exactly as AST's ``inference.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np



@dataclass(frozen=True)
class Score:
    """One class of a result: its index in the head, its name and its probability."""

    index: int
    label: str
    score: float


def activate(logits: np.ndarray, task: str) -> np.ndarray:
    """Probabilities from raw logits ``[..., classes]``: sigmoid for multilabel, softmax for multiclass."""
    logits = np.asarray(logits, dtype=np.float64)
    if task == "multilabel":
        return 0.5 * (1.0 + np.tanh(0.5 * logits))  # sigmoid without overflow warnings
    if task == "multiclass":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    raise ValueError(f"unknown task {task!r}")


def top_k(scores: np.ndarray, labels, k: int = 5) -> list[Score]:
    """The `k` best classes of one score vector, best first (ties keep index order)."""
    scores = np.asarray(scores)
    order = np.argsort(-scores, kind="stable")[:max(0, k)]
    return [Score(int(i), labels[i], float(scores[i])) for i in order]


def predict_file(audio: str | Path, model: str | Path, k: int = 5, max_seconds: float | None = 3600.0) -> dict:
    """Top-`k` classes of one audio file under the checkpoint `model` (a JSON-ready dict)."""
    import torch

    from astedge.audio import load_audio
    from astedge.checkpoint import load_checkpoint
    from astedge.features import frames_or_error, model_input

    checkpoint = load_checkpoint(model)
    config = checkpoint.feature_config
    wave = load_audio(audio, config.sample_rate, max_seconds=max_seconds)
    frames, seconds = frames_or_error(len(wave), config, audio), len(wave) / config.sample_rate
    # Only the first target_length frames reach the model: no features for the rest of a long file.
    wave = wave[:(config.target_length - 1) * config.window_shift + config.window_size]
    net = checkpoint.build_model()
    with torch.inference_mode():
        logits = net(torch.from_numpy(model_input(wave, config))[None])[0].numpy()
    scores = activate(logits, checkpoint.task)
    return {"file": str(audio), "model": str(model), "task": checkpoint.task,
            "seconds": seconds, "frames": frames, "target_length": config.target_length,
            "top": [asdict(s) for s in top_k(scores, checkpoint.labels, k)]}
