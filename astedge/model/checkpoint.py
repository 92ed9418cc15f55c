"""Self-describing model files: safetensors weights plus everything needed to run them, in one file.

The safetensors metadata (a string -> string map in the header) holds JSON for the model config,
the feature config, the label names, the task and the provenance, so one path is all a user or
the runtime passes. Nothing is ever unpickled, and reading needs only numpy and safetensors (no
torch), so a Jetson runtime can read labels and configs without PyTorch.

Metadata keys: ``astedge_format`` (``"1"``), ``model_config``, ``feature_config``, ``labels``,
``task`` (``multilabel`` -> sigmoid, ``multiclass`` -> softmax), ``provenance`` and, when training knows them,
``events``: the decision layer's defaults for this model (the background class that is never an event, and the
per-class thresholds, median filter, minimum duration and merge gap calibrated on held-out streams). The file
itself is written and read by :mod:`astedge.model.tensorfile`; this module says what a checkpoint holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astedge import __version__
from astedge.errors import UserError
from astedge.features.fbank import FbankConfig
from astedge.model.labels import default_labels
from astedge.model.config import ModelConfig
from astedge.model.tensorfile import json_entry, read_header, read_tensors, write_tensors
from astedge.timing import utc_now

FORMAT_VERSION = "1"
TASKS = ("multilabel", "multiclass")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's description and (unless read with ``weights=False``) its numpy weights."""

    path: Path
    model_config: ModelConfig
    feature_config: FbankConfig
    labels: tuple[str, ...]
    task: str
    provenance: dict = field(default_factory=dict)
    state_dict: dict[str, np.ndarray] | None = field(default=None, repr=False)
    events: dict = field(default_factory=dict)  # the decision layer's defaults (see the module docstring)

    def with_classes(self, indices: list[int]) -> "Checkpoint":
        """This checkpoint with heads of only the classes at `indices` (their rows of the last Linear of the clip head
        and of the frame head, their labels): the backbone is untouched, so those classes' logits are the full
        model's."""
        from dataclasses import replace

        if self.state_dict is None:
            raise ValueError("checkpoint was read without weights (weights=False)")
        rows = np.asarray(indices, dtype=np.int64)
        state = dict(self.state_dict)
        for head in ("mlp_head", "frame_head") if self.model_config.frame_head else ("mlp_head",):
            state[f"{head}.1.weight"] = state[f"{head}.1.weight"][rows]
            state[f"{head}.1.bias"] = state[f"{head}.1.bias"][rows]
        labels = tuple(self.labels[i] for i in rows)
        events = dict(self.events)
        if "thresholds" in events:
            events["thresholds"] = {k: v for k, v in events["thresholds"].items() if k in labels}
        if events.get("background") not in labels:
            events.pop("background", None)
        return replace(self, model_config=replace(self.model_config, num_classes=len(rows)), labels=labels,
                       state_dict=state, events=events)

    def build_model(self):
        """The torch :class:`astedge.model.ast_model.ASTModel` in eval mode with these weights (imports torch)."""
        if self.state_dict is None:
            raise ValueError("checkpoint was read without weights (weights=False)")
        from astedge.model.ast_model import build_model

        return build_model(self.model_config, self.state_dict)


def _validate(config: ModelConfig, features: FbankConfig, labels, task: str, source) -> None:
    if task not in TASKS:
        raise UserError(f"task must be one of {', '.join(TASKS)}, got {task!r}", source)
    if len(labels) != config.num_classes:
        raise UserError(f"{len(labels)} labels for a head of {config.num_classes} outputs", source)
    if (features.num_mel_bins, features.target_length) != (config.num_mel_bins, config.target_length):
        raise UserError(f"feature config gives {features.target_length} x {features.num_mel_bins} inputs but the "
                        f"model takes {config.target_length} x {config.num_mel_bins}", source)


def save_checkpoint(path: str | Path, model_or_state_dict, model_config: ModelConfig | None = None, *,
                    feature_config: FbankConfig | None = None, labels=None, task: str = "multilabel",
                    provenance: dict | None = None, events: dict | None = None) -> Path:
    """Write weights and description to `path` atomically (temp file + rename); returns the path.

    `model_or_state_dict` is an ASTModel (its ``config`` is used) or a state dict of torch tensors
    or numpy arrays with `model_config`. Labels default to AudioSet's for 527 outputs, else
    ``class_N``; features default to :meth:`FbankConfig.for_model`.
    """
    path = Path(path)
    if hasattr(model_or_state_dict, "state_dict"):
        model_config = model_config or model_or_state_dict.config
        state = model_or_state_dict.state_dict()
    else:
        state = dict(model_or_state_dict)
    if model_config is None:
        raise ValueError("model_config is required with a bare state dict")
    feature_config = feature_config or FbankConfig.for_model(model_config.num_mel_bins, model_config.target_length)
    labels = list(default_labels(model_config.num_classes) if labels is None else labels)
    _validate(model_config, feature_config, labels, task, path)
    provenance = {"created": utc_now(), "astedge": __version__, **(provenance or {})}
    metadata = {
        "format": "pt",
        "astedge_format": FORMAT_VERSION,
        "model_config": model_config.to_dict(),
        "feature_config": feature_config.to_dict(),
        "labels": labels,
        "task": task,
        "provenance": provenance,
        **({"events": events} if events else {}),
    }
    # Weights are stored in float32 whatever they came in (a bfloat16 or float16 Hub checkpoint): numpy
    # cannot read bfloat16 without torch, and precision is chosen at export.
    if all(isinstance(v, np.ndarray) for v in state.values()):
        tensors = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in state.items()}
    else:
        import torch

        tensors = {k: torch.as_tensor(v) for k, v in state.items()}
        tensors = {k: t.float() if t.is_floating_point() else t for k, t in tensors.items()}
    return write_tensors(path, tensors, metadata)


def set_events(path: str | Path, events: dict) -> Path:
    """Rewrite the checkpoint at `path` (atomically) with `events` as its decision-layer defaults; weights and the
    rest of its description stay as they are."""
    path = Path(path)
    tensors, metadata = read_tensors(path)
    return write_tensors(path, tensors, {**metadata, "events": events})


def load_checkpoint(path: str | Path, weights: bool = True) -> Checkpoint:
    """Read an astedge checkpoint; ``weights=False`` reads only the header (fast, no tensor data).

    Needs no torch. A missing, truncated, foreign or corrupt file raises :class:`UserError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("model file does not exist" if not path.exists() else "model path is not a file", path)
    hint = "" if path.suffix == ".safetensors" else "; convert published checkpoints with `astedge import`"
    metadata = read_header(path, hint)
    if "astedge_format" not in metadata:
        raise UserError("is a safetensors file but not an astedge checkpoint (no astedge metadata); "
                        "convert it with `astedge import`", path)
    state = read_tensors(path, hint=hint)[0] if weights else None

    def entry(key: str):
        return json_entry(metadata, key, path, "checkpoint metadata")

    if metadata["astedge_format"] != FORMAT_VERSION:
        raise UserError(f"checkpoint format {metadata['astedge_format']!r} is not supported by astedge "
                        f"{__version__} (expects {FORMAT_VERSION!r})", path)
    try:
        model_config = ModelConfig.from_dict(entry("model_config"))
        feature_config = FbankConfig.from_dict(entry("feature_config"))
    except TypeError as err:
        raise UserError(f"checkpoint config is malformed ({err})", path) from None
    labels = entry("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise UserError("checkpoint labels are not a list of strings", path)
    task = metadata.get("task", "")
    _validate(model_config, feature_config, labels, task, path)
    head = None if state is None else state.get("mlp_head.1.weight")
    if head is not None and head.shape[0] != model_config.num_classes:
        raise UserError(f"head has {head.shape[0]} outputs but the config says {model_config.num_classes}", path)
    events = entry("events") if "events" in metadata else {}
    if not isinstance(events, dict):
        raise UserError("checkpoint events metadata is not an object", path)
    return Checkpoint(path=path, model_config=model_config, feature_config=feature_config, labels=tuple(labels),
                      task=task, provenance=entry("provenance"), state_dict=state, events=events)
