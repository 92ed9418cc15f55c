"""Inference backends behind one small interface: construct from a model path, ``run(fbank [B, T, F]) -> logits``.

A model path is an export folder (``astedge export``), its ``astedge.json``, an ``.onnx`` inside it, or an
astedge ``.safetensors`` checkpoint (:func:`resolve_model`). Every backend offers :class:`Backend`:
``name``, ``precision``, ``labels``, ``task``, ``feature_config``, ``device`` ("cuda" or "cpu"),
``run`` and ``close``.

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

    def run(self, fbank: np.ndarray) -> np.ndarray:
        """Logits ``[B, classes]`` float32 of normalized features ``[B, target_length, num_mel_bins]`` float32."""

    def close(self) -> None:
        """Release the runtime's resources (device memory, sessions)."""


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


@dataclass(frozen=True)
class ModelPath:
    """What a user's model path points at: an export folder (with maybe one chosen .onnx) or a checkpoint."""

    kind: str  # "export" or "checkpoint"
    path: Path  # the export folder, or the .safetensors file
    onnx: Path | None = None  # an .onnx file the user named inside the export folder


def resolve_model(path: str | Path) -> ModelPath:
    """Classify a model path; anything else is a :class:`UserError` that says what is accepted."""
    path = Path(path)
    accepted = ("pass an export folder (astedge export), its astedge.json or model.onnx, or an astedge "
                ".safetensors checkpoint")
    if not path.exists():
        raise UserError(f"does not exist; {accepted}", path)
    if path.is_dir():
        if not (path / art.METADATA_FILE).is_file():
            found = sorted(p.name for p in path.glob("*.safetensors"))
            hint = f" (it holds {', '.join(found)}: pass that file)" if found else ""
            raise UserError(f"has no {art.METADATA_FILE}: not an export folder{hint}; {accepted}", path)
        return ModelPath("export", path)
    if path.suffix == ".safetensors":
        return ModelPath("checkpoint", path)
    if path.name == art.METADATA_FILE or path.suffix in (".onnx", ".plan"):
        folder = art.artefact_dir(path)
        return ModelPath("export", folder, path if path.suffix == ".onnx" else None)
    raise UserError(f"is not a model file; {accepted}", path)


def model_configs(path: str | Path):
    """(ModelConfig, FbankConfig) of the model behind a model path, read without torch or weights."""
    from astedge.model.config import ModelConfig

    ref = resolve_model(path)
    if ref.kind == "export":
        meta = art.read_metadata(ref.path)
        return ModelConfig.from_dict(meta["model_config"]), FbankConfig.from_dict(meta["feature_config"])
    from astedge.model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(ref.path, weights=False)
    return checkpoint.model_config, checkpoint.feature_config


#: Seconds between live windows when neither --hop nor the export's device profile says otherwise.
DEFAULT_HOP_SECONDS = 1.0


def stream_hop(path: str | Path) -> float:
    """The hop a live stream defaults to: the export's device profile ``[stream] hop_seconds`` (the per-window
    latency budget it was built for), else :data:`DEFAULT_HOP_SECONDS`."""
    ref = resolve_model(path)
    if ref.kind == "export":
        profile = art.read_metadata(ref.path).get("profile") or {}
        return float(profile.get("hop_seconds") or DEFAULT_HOP_SECONDS)
    return DEFAULT_HOP_SECONDS


def export_thresholds(path: str | Path) -> dict[str, float] | None:
    """The per-class event thresholds an export carries (``astedge export --thresholds``), else None."""
    ref = resolve_model(path)
    if ref.kind == "export":
        return art.read_metadata(ref.path).get("thresholds") or None
    return None


def check_precision(precision: str) -> str:
    """`precision`, or the one :class:`UserError` every precision door gives: "auto" or a precision of the table."""
    return precision_table.check_precision(precision, auto=True)


def check_input(fbank: np.ndarray, frames: int, bins: int) -> np.ndarray:
    """``fbank`` as a contiguous float32 ``[B, frames, bins]`` array, or a UserError naming the shape."""
    x = np.ascontiguousarray(fbank, dtype=np.float32)
    if x.ndim != 3 or x.shape[1:] != (frames, bins) or x.shape[0] < 1:
        raise UserError(f"the model takes input [batch, {frames}, {bins}], got {list(x.shape)}")
    return x


def export_metadata(folder: Path) -> tuple[dict, tuple[str, ...], str, FbankConfig]:
    """An export folder's astedge.json with its labels, task and feature config."""
    meta = art.read_metadata(folder)
    return meta, tuple(meta["labels"]), meta["task"], FbankConfig.from_dict(meta["feature_config"])


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
