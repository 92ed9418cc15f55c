"""What a user's model path points at, and what its export says, read without torch or weights.

A model path is an export folder (``astedge export``), its ``astedge.json``, an ``.onnx`` inside it, or an
astedge ``.safetensors`` checkpoint (:func:`resolve_model`). Backends, the :class:`astedge.runtime.classifier.Classifier`
and the commands read a model's configs, labels, stream hop and calibrated thresholds through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from astedge import artefact as art
from astedge.errors import UserError
from astedge.features.fbank import FbankConfig


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


def is_model_path(path: str | Path) -> bool:
    """Whether `path` is a model path :func:`resolve_model` accepts (an audio file or a dataset folder is not)."""
    try:
        resolve_model(path)
    except UserError:
        return False
    return True


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


def _export_entry(path: str | Path, key: str):
    """An entry of the export's astedge.json (None for a checkpoint or when the export has none)."""
    ref = resolve_model(path)
    if ref.kind != "export":
        return None
    return art.read_metadata(ref.path).get(key) or None


def stream_hop(path: str | Path) -> float | None:
    """The stream hop the export's device profile was built for (``[stream] hop_seconds``: the per-window latency
    budget), else None (the runtime's fallback is :data:`astedge.runtime.classifier.DEFAULT_STREAM_HOP`)."""
    hop = (_export_entry(path, "profile") or {}).get("hop_seconds")
    return float(hop) if hop else None


def decision_defaults(path: str | Path) -> dict:
    """The decision layer's defaults a model carries (``events`` in astedge.json or the checkpoint: the background
    class, calibrated per-class thresholds, median filter, minimum duration, merge gap); an export's
    ``--thresholds`` replace the calibrated ones. Empty when it carries none."""
    ref = resolve_model(path)
    if ref.kind == "checkpoint":
        from astedge.model.checkpoint import load_checkpoint

        return dict(load_checkpoint(ref.path, weights=False).events)
    meta = art.read_metadata(ref.path)
    events = dict(meta.get("events") or {})
    if meta.get("thresholds"):  # exports written before the events entry
        events["thresholds"] = meta["thresholds"]
    return events


def export_thresholds(path: str | Path) -> dict[str, float] | None:
    """The per-class event thresholds a model carries (calibrated, or ``astedge export --thresholds``), else None."""
    return decision_defaults(path).get("thresholds") or None


def frame_layout(meta_or_config, feature_config: FbankConfig | None = None):
    """The :class:`~astedge.runtime.frames.FrameLayout` of an export's astedge.json (its ``frames``) or of a
    ModelConfig under `feature_config`; None for a model without a frame head."""
    from astedge.runtime.frames import FrameLayout

    if isinstance(meta_or_config, dict):
        return FrameLayout.from_dict(meta_or_config["frames"]) if meta_or_config.get("frames") else None
    return FrameLayout.of(meta_or_config, feature_config) if meta_or_config.frame_head else None


def export_metadata(folder: Path) -> tuple[dict, tuple[str, ...], str, FbankConfig]:
    """An export folder's astedge.json with its labels, task and feature config."""
    meta = art.read_metadata(folder)
    return meta, tuple(meta["labels"]), meta["task"], FbankConfig.from_dict(meta["feature_config"])
