"""Inference backends behind one small interface: construct from a model path, ``run(fbank [B, T, F]) -> logits``.

A model path is what :func:`astedge.runtime.model_path.resolve_model` accepts. Every backend offers
:class:`Backend`: ``name``, ``precision``, ``labels``, ``task``, ``feature_config``, ``device`` ("cuda" or
"cpu"), ``run`` and ``close``. A backend that keeps features on its device also offers the optional
capabilities :class:`RunsAudio` (windows of audio in, logits out) and :class:`OpensStreams` (a device session
for a live stream's windows); the runtime checks them with ``isinstance`` and prefers them when present.

Each backend lives in its own module and imports only its own runtime, so the Jetson runtime (no torch)
imports just the one it uses. Adding a backend is one module plus one entry in :data:`BACKENDS`
(and in :data:`AUTO_ORDER` if ``--backend auto`` should try it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from astedge import artefact as art
from astedge.errors import UserError
from astedge.features.fbank import FbankConfig
from astedge import precision as precision_table
from astedge.runtime.frames import FrameLayout, split_output
from astedge.runtime.model_path import resolve_model

#: What a user may ask a backend for: "auto", or one of the artefact's precisions (one table: astedge.precision).
PRECISIONS = precision_table.RUNTIME_PRECISIONS


@runtime_checkable
class Backend(Protocol):
    """What the runtime needs from an inference backend."""

    name: str  # registry name, e.g. "onnxruntime-cpu"
    precision: str  # "fp32", "fp16" or "int8"
    labels: tuple[str, ...]
    task: str  # "multilabel" (sigmoid) or "multiclass" (softmax)
    feature_config: FbankConfig
    device: str  # "cuda" or "cpu": where it computes (the runtime puts fbank there too when it can)

    frame_layout: FrameLayout | None  # where the frame head's columns lie (None: a clip-only model)

    def run(self, fbank: np.ndarray) -> np.ndarray:
        """Logits ``[B, classes]`` float32 of normalized features ``[B, target_length, num_mel_bins]`` float32."""

    def run_frames(self, fbank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clip logits ``[B, classes]``, frame logits ``[B, columns, classes]``) of a model with a frame head."""

    def close(self) -> None:
        """Release the runtime's resources (device memory, sessions)."""


class SplitOutputs:
    """``run`` and ``run_frames`` of a backend whose model has one output row (clip logits, then a frame head's;
    :func:`astedge.runtime.frames.split_output`): the backend supplies ``_raw(fbank)``, ``labels`` and
    ``frame_layout``."""

    frame_layout: FrameLayout | None = None

    def _raw(self, fbank: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(clip logits, frame logits or None) of raw output rows."""
        return split_output(rows, len(self.labels), self.frame_layout)

    def run(self, fbank: np.ndarray) -> np.ndarray:
        return self.split(self._raw(fbank))[0]

    def run_frames(self, fbank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.frame_layout is None:
            raise UserError("this model has no frame head: its events come from windows")
        return self.split(self._raw(fbank))


@runtime_checkable
class RunsAudio(Protocol):
    """Optional capability: features computed on the backend's device (TensorRT with the CUDA fbank), so windows of
    audio go in and only logits come back: no feature round trip through the host."""

    def run_audio(self, waves) -> np.ndarray:
        """Logits ``[N, classes]`` of N windows of audio at the model's rate (a list of 1-D float32 arrays)."""

    def run_audio_frames(self, waves) -> tuple[np.ndarray, np.ndarray]:
        """(clip logits, frame logits) of N windows of audio, for a model with a frame head."""


@runtime_checkable
class OpensStreams(Protocol):
    """Optional capability: a device session for a live stream's windows, each hop's frames computed on the device."""

    def open_stream(self, windowing):
        """For a stream's :class:`astedge.runtime.windows.Windowing`: a session with ``classify(read, start, end)
        -> output row | None`` (the model's one output: clip logits, then a frame head's), ``frames_computed`` and
        ``close()``; or None when this backend or machine cannot run
        one here (the runtime then computes features on the host)."""


#: name -> (module, class, constructor keywords). Each class is built as ``cls(path, precision=..., **keywords)``.
BACKENDS: dict[str, tuple[str, str, dict]] = {
    "tensorrt": ("astedge.runtime.backends.tensorrt", "TensorRTBackend", {}),
    "onnxruntime-tensorrt": ("astedge.runtime.backends.onnxruntime", "OnnxRuntimeBackend", {"provider": "tensorrt"}),
    "onnxruntime-cuda": ("astedge.runtime.backends.onnxruntime", "OnnxRuntimeBackend", {"provider": "cuda"}),
    "onnxruntime-cpu": ("astedge.runtime.backends.onnxruntime", "OnnxRuntimeBackend", {"provider": "cpu"}),
    "torch": ("astedge.runtime.backends.torch", "TorchBackend", {}),
}
#: What ``auto`` tries, fastest first. ONNX Runtime's TensorRT provider is left out: it builds an engine
#: on first use (minutes); ask for it by name.
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "torch")
#: Names that stand for several backends, tried in order.
ALIASES = {"auto": AUTO_ORDER, "onnxruntime": ("onnxruntime-cuda", "onnxruntime-cpu")}


def backend_names() -> list[str]:
    return [*ALIASES, *BACKENDS]


def check_precision(precision: str) -> str:
    """`precision`, or the one :class:`UserError` every precision door gives: "auto" or a precision of the table."""
    return precision_table.check_precision(precision, auto=True)


def check_input(fbank: np.ndarray, frames: int, bins: int) -> np.ndarray:
    """``fbank`` as a contiguous float32 ``[B, frames, bins]`` array, or a UserError naming the shape."""
    x = np.ascontiguousarray(fbank, dtype=np.float32)
    if x.ndim != 3 or x.shape[1:] != (frames, bins) or x.shape[0] < 1:
        raise UserError(f"the model takes input [batch, {frames}, {bins}], got {list(x.shape)}")
    return x


def _construct(name: str, path, precision: str, threads: int | None) -> Backend:
    module, cls, keywords = BACKENDS[name]
    try:
        factory = getattr(importlib.import_module(module), cls)
    except ImportError as err:  # a backend module only imports its runtime lazily; this is a broken install
        raise UserError(f"backend {name} cannot be imported ({err})") from None
    if threads and name.startswith("onnxruntime"):  # ONNX Runtime's intra-op pool is per session
        keywords = {**keywords, "threads": threads}
    return factory(path, precision=precision, **keywords)


@dataclass
class Choice:
    """The backend that loaded, and why the ones tried before it did not."""

    backend: Backend
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        b = self.backend
        text = f"backend {b.name} ({b.precision}, {b.device})"
        if self.skipped:
            text += "; skipped " + "; ".join(f"{name}: {reason}" for name, reason in self.skipped)
        return text


def choose_backend(model: str | Path, name: str = "auto", precision: str = "auto",
                   threads: int | None = None) -> Choice:
    """Load `model` on backend `name`; ``auto`` (or an alias) takes the first of its list that loads here.

    `threads` sets ONNX Runtime's intra-op threads (torch's are process-wide: ``torch.set_num_threads``).
    """
    check_precision(precision)
    resolve_model(model)  # a bad path is the user's mistake whatever the backend
    if name in BACKENDS:
        return Choice(_construct(name, model, precision, threads))
    if name not in ALIASES:
        raise UserError(f"unknown backend {name!r}; choose from {', '.join(backend_names())}")
    skipped = []
    for candidate in ALIASES[name]:
        try:
            return Choice(_construct(candidate, model, precision, threads), skipped)
        except UserError as err:
            skipped.append((candidate, _short(str(err))))
    raise UserError(f"no backend could run {model}: " + "; ".join(f"{n}: {r}" for n, r in skipped))


def _short(reason: str) -> str:
    first = reason.split("; ")[0]
    return first if len(first) <= 160 else first[:157] + "..."
