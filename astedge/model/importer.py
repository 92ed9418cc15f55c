"""``astedge import``: read a published AST checkpoint (or an ImageNet backbone) from disk, safely.

Files are read with ``torch.load(weights_only=True)`` or safetensors and never unpickle arbitrary
objects; :mod:`astedge.model.convert` turns what was read into astedge's layout and config, and
:func:`astedge.model.ast_model.check_state` checks it against the model before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from astedge.model.convert import detect_layout, from_hf, from_official, hf_config, hf_features, hf_labels, official_config
from astedge.errors import UserError, some
from astedge.features.fbank import FbankConfig
from astedge.files import sha256_file
from astedge.model.checkpoint import load_checkpoint, save_checkpoint
from astedge.model.config import ModelConfig
from astedge.model.tensorfile import read_header, read_tensors


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch file loaded with ``weights_only=True``.

    A checkpoint wrapping its weights under ``model`` or ``state_dict`` (DeiT, Lightning) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("does not exist" if not path.exists() else "is not a file", path)
    if path.suffix == ".safetensors":
        return read_tensors(path, framework="pt")[0]
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # torch's zip format or a legacy pickle
        raise UserError("is neither a torch checkpoint (.pth/.bin) nor a .safetensors file", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors come in many types; all mean "not a safe weights file"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot be read as a weights-only torch file ({first})", path) from None
    for _ in range(2):
        if isinstance(state, dict):
            inner = next((state[k] for k in ("model", "state_dict") if isinstance(state.get(k), dict)), None)
            if inner is not None:
                state = inner
    if not isinstance(state, dict) or not state:
        raise UserError("holds no state dict", path)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        others = [k for k in state if k not in tensors]
        raise UserError(f"state dict holds non-tensor entries: {some(others)}", path)
    return tensors


_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _read_hf_state(folder: Path) -> tuple[dict, Path]:
    for name in _HF_WEIGHTS:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return read_state_dict(path), path
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"is not a readable shard index ({err})", path) from None
        state = {}
        for shard in shards:
            state.update(read_state_dict(folder / shard))
        return state, path
    raise UserError(f"holds no weights (looked for {', '.join(_HF_WEIGHTS)})", folder)


@dataclass(frozen=True)
class Imported:
    """A converted checkpoint, ready for :func:`astedge.model.checkpoint.save_checkpoint`."""

    state: dict
    model_config: ModelConfig
    feature_config: FbankConfig | None  # None: derive from the model config
    labels: list[str] | None  # None: the default names for the head
    task: str
    provenance: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write it as one self-describing astedge checkpoint (:func:`astedge.model.checkpoint.save_checkpoint`)."""
        return save_checkpoint(path, self.state, self.model_config, feature_config=self.feature_config,
                               labels=self.labels, task=self.task, provenance=self.provenance)


def import_source(source: str | Path, *, labels: list[str] | None = None, fstride: int | None = None,
                  tstride: int | None = None, target_length: int | None = None, dataset: str | None = None,
                  task: str | None = None) -> Imported:
    """Read a published AST checkpoint: an AST repository ``.pth``, a Hugging Face model folder, or an
    astedge checkpoint (re-imported with its own description).

    Strides and length come from the source (HF ``config.json``; the official tensors and file
    name); the options disambiguate or, for HF, must agree. Labels: `labels`, else HF's
    ``id2label``, else AudioSet's for 527 outputs, else ``class_N``. Normalization statistics:
    `dataset`, else HF's ``preprocessor_config.json``, else the recipe matching the input length.
    """
    from astedge.model.labels import default_labels
    from astedge.model.ast_model import check_state

    source = Path(source)
    if not source.exists():
        raise UserError("does not exist", source)
    if source.is_dir():
        got = _import_hf_folder(source, fstride=fstride, tstride=tstride, target_length=target_length)
    elif _is_astedge_checkpoint(source):
        got = _import_astedge(source)
    else:
        got = _import_official(source, fstride=fstride, tstride=tstride, target_length=target_length)
    config = got.model_config
    try:
        check_state(got.state, config)
    except UserError as err:
        raise UserError(str(err), source) from None
    names = list(labels or got.labels or default_labels(config.num_classes))
    if len(names) != config.num_classes:
        raise UserError(f"{len(names)} labels given for a head of {config.num_classes} outputs", source)
    features = got.feature_config if dataset is None and got.feature_config else FbankConfig.for_model(config.num_mel_bins, config.target_length, dataset)
    return replace(got, feature_config=features, labels=names, task=task or got.task)


def _import_hf_folder(folder: Path, **options) -> Imported:
    config_path = folder / "config.json"
    try:
        hf = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("is a folder without config.json (expected a Hugging Face AST model)", folder) from None
    except (OSError, ValueError) as err:
        raise UserError(f"is not readable JSON ({err})", config_path) from None
    raw, weights_path = _read_hf_state(folder)
    layout = detect_layout(raw, weights_path)
    if not layout.startswith("hf"):
        raise UserError(f"weights are in the {layout} layout, not Hugging Face's", weights_path)
    config = hf_config(hf)
    for name, value in options.items():
        if value is not None and value != getattr(config, name):
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {value} disagrees with config.json ({getattr(config, name)})", folder)
    features = None
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        try:
            features = hf_features(json.loads(pre.read_text(encoding="utf-8")), config, pre)
        except (OSError, ValueError) as err:
            raise UserError(f"is not readable JSON ({err})", pre) from None
    single = hf.get("problem_type") == "single_label_classification"
    return Imported(state=from_hf(raw), model_config=config, feature_config=features, labels=hf_labels(hf),
                    task="multiclass" if single else "multilabel",
                    provenance={"source": folder.name, "source_format": layout,
                                "source_sha256": sha256_file(weights_path)})


def _import_astedge(path: Path) -> Imported:
    ckpt = load_checkpoint(path)
    return Imported(state={k: torch.from_numpy(v) for k, v in ckpt.state_dict.items()},
                    model_config=ckpt.model_config, feature_config=ckpt.feature_config, labels=list(ckpt.labels),
                    task=ckpt.task, provenance={**ckpt.provenance, "source": path.name, "source_format": "astedge"})


def _import_official(path: Path, **options) -> Imported:
    raw = read_state_dict(path)
    layout = detect_layout(raw, path)
    if layout == "imagenet":
        raise UserError("is an ImageNet backbone without an audio head; train from it instead of importing", path)
    if layout.startswith("hf"):
        raise UserError("holds Hugging Face weights; import the folder with its config.json instead", path)
    state = from_official(raw)
    try:
        config = official_config(state, name=path.name, **options)
    except UserError as err:
        raise UserError(str(err), path) from None
    return Imported(state=state, model_config=config, feature_config=None, labels=None, task="multilabel",
                    provenance={"source": path.name, "source_format": "ast-official", "source_sha256": sha256_file(path)})


def _is_astedge_checkpoint(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    try:
        return "astedge_format" in read_header(path)
    except UserError:
        return False


