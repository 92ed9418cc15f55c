"""astedge: the Audio Spectrogram Transformer from PyTorch training to real-time TensorRT on the edge.

The main entry points, each imported on first use, so that ``import astedge`` stays light (no torch, no ONNX; a
Jetson runtime has neither)::

    from astedge import Classifier, ClassifierOptions, export, import_source, load_checkpoint

Training is :func:`astedge.train.loop.train` (the name ``astedge.train`` is its package).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it (resolved by :func:`__getattr__`, PEP 562).
_ENTRY_POINTS = {
    "Classifier": "astedge.runtime.classifier",  # classify files and streams (any backend)
    "ClassifierOptions": "astedge.runtime.classifier",
    "load_audio": "astedge.audio.decode",  # any audio file -> float32 mono at the model's rate
    "import_source": "astedge.model.importer",  # a published AST (.pth, Hugging Face folder) -> .save(path)
    "load_checkpoint": "astedge.model.checkpoint",
    "save_checkpoint": "astedge.model.checkpoint",
    "export": "astedge.deploy.export",  # checkpoint -> verified ONNX / TensorRT export folder
    "read_dataset": "astedge.data.datasets",
    "load_recipe": "astedge.train.recipes",
    "UserError": "astedge.errors",
}

__all__ = ["__version__", *_ENTRY_POINTS]


def __getattr__(name: str):
    module = _ENTRY_POINTS.get(name)
    if module is None:
        raise AttributeError(f"module 'astedge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ENTRY_POINTS))
