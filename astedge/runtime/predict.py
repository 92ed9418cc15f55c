"""Tag one audio file with any model path: the minimal inference path.

The model sees the first ``target_length`` frames (10.24 s for AudioSet models), zero-padded when shorter,
exactly as AST's ``inference.py`` (``features.model_input`` computes no features beyond them), on whatever backend
runs the model path (:func:`astedge.runtime.backends.choose_backend`: a checkpoint in PyTorch, an export in
TensorRT or ONNX Runtime). Scores come from :mod:`astedge.runtime.scores`, which the real-time runtime shares.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from astedge.runtime.backends import choose_backend
from astedge.runtime.scores import activate, top_k


def predict_file(audio: str | Path, model: str | Path, k: int = 5, max_seconds: float | None = 3600.0, *,
                 backend: str = "auto", precision: str = "auto", log=None) -> dict:
    """Top-`k` classes of one audio file under `model` (a checkpoint, or an export folder and what classify accepts)
    on `backend` (a JSON-ready dict); `log` hears which backend runs."""
    from astedge.audio.decode import audio_info, load_audio
    from astedge.features.fbank import frames_or_error, model_input

    audio_info(audio)  # a bad file is refused before the model loads
    choice = choose_backend(model, backend, precision)
    if log is not None:
        log(f"{model}: {choice.describe()}")
    runner = choice.backend
    try:
        config = runner.feature_config
        wave = load_audio(audio, config.sample_rate, max_seconds=max_seconds)
        frames, seconds = frames_or_error(len(wave), config, audio), len(wave) / config.sample_rate
        logits = runner.run(model_input(wave, config)[None])[0]
    finally:
        runner.close()
    scores = activate(logits, runner.task)
    return {"file": str(audio), "model": str(model), "backend": runner.name, "precision": runner.precision,
            "task": runner.task, "seconds": seconds, "frames": frames, "target_length": config.target_length,
            "top": [asdict(s) for s in top_k(scores, runner.labels, k)]}
