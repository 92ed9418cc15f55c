"""Inference backends over an export folder: construct from the folder, ``run(fbank [B, T, F]) -> logits``.

Each backend lives in its own module and imports only its own runtime, so the Jetson runtime
(no torch) imports just the one it uses: :mod:`astedge.backends.tensorrt`.
"""
