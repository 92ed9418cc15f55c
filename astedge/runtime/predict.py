"""Tag one audio file with a checkpoint in PyTorch: the minimal inference path.

The model sees the first ``target_length`` frames (10.24 s for AudioSet models), zero-padded when shorter,
exactly as AST's ``inference.py`` (``features.model_input`` computes no features beyond them). Scores come
from :mod:`astedge.runtime.scores`, which the real-time runtime shares.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from astedge.runtime.scores import activate, top_k


def predict_file(audio: str | Path, model: str | Path, k: int = 5, max_seconds: float | None = 3600.0) -> dict:
    """Top-`k` classes of one audio file under the checkpoint `model` (a JSON-ready dict)."""
    import torch

    from astedge.audio.decode import load_audio
    from astedge.model.checkpoint import load_checkpoint
    from astedge.features.fbank import frames_or_error, model_input

    checkpoint = load_checkpoint(model)
    config = checkpoint.feature_config
    wave = load_audio(audio, config.sample_rate, max_seconds=max_seconds)
    frames, seconds = frames_or_error(len(wave), config, audio), len(wave) / config.sample_rate
    net = checkpoint.build_model()
    with torch.inference_mode():
        logits = net(torch.from_numpy(model_input(wave, config))[None])[0].numpy()
    scores = activate(logits, checkpoint.task)
    return {"file": str(audio), "model": str(model), "task": checkpoint.task,
            "seconds": seconds, "frames": frames, "target_length": config.target_length,
            "top": [asdict(s) for s in top_k(scores, checkpoint.labels, k)]}
