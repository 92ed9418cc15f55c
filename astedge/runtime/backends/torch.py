"""PyTorch backend: an astedge ``.safetensors`` checkpoint in eager mode (CUDA when available, else the CPU).

Given an export folder, it runs the checkpoint the folder was exported from when that file is still
where ``astedge.json`` recorded it and unchanged (same SHA-256). FP16 runs under CUDA autocast only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astedge.runtime.backends import SplitOutputs, check_input, check_precision
from astedge.runtime.model_path import frame_layout, resolve_model
from astedge.errors import UserError
from astedge.files import sha256_file


def checkpoint_of(path: str | Path) -> Path:
    """The .safetensors behind a model path: the file itself, or an export's recorded, unchanged source."""
    ref = resolve_model(path)
    if ref.kind == "checkpoint":
        return ref.path
    from astedge import artefact as art

    source = art.read_metadata(ref.path).get("source") or {}
    recorded = Path(source.get("checkpoint", ""))
    if not source.get("checkpoint") or not recorded.is_file():
        raise UserError("PyTorch runs a .safetensors checkpoint, and the checkpoint this folder was exported from "
                        f"({source.get('checkpoint', 'not recorded')}) is not there; pass the checkpoint", ref.path)
    if source.get("sha256") and sha256_file(recorded) != source["sha256"]:
        raise UserError(f"the checkpoint this folder was exported from ({recorded}) has changed since; pass a "
                        "checkpoint explicitly", ref.path)
    return recorded


class TorchBackend(SplitOutputs):
    """An :class:`astedge.model.ast_model.ASTModel` in inference mode."""

    name = "torch"

    def __init__(self, path: str | Path, precision: str = "auto", device: str | None = None):
        check_precision(precision)
        checkpoint_path = checkpoint_of(path)
        try:
            import torch
        except ImportError as err:
            raise UserError(f"PyTorch is not installed ({err}): pip install 'astedge[train]'") from None
        from astedge.model.checkpoint import load_checkpoint

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if precision == "int8":
            raise UserError("the torch backend has no INT8: export with --int8 and run the ONNX Runtime or TensorRT backend")
        if precision == "fp16" and self.device != "cuda":
            raise UserError("the torch backend runs FP16 only on a CUDA GPU")
        self.precision = "fp16" if precision == "fp16" else "fp32"
        checkpoint = load_checkpoint(checkpoint_path)
        ref = resolve_model(path)
        if ref.kind == "export":  # an export of a class subset runs the same subset of the checkpoint's head
            from astedge import artefact as art

            subset = (art.read_metadata(ref.path).get("classes") or {}).get("indices")
            if subset is not None:
                checkpoint = checkpoint.with_classes(subset)
        self.checkpoint = checkpoint_path
        self.labels, self.task, self.feature_config = checkpoint.labels, checkpoint.task, checkpoint.feature_config
        self.frame_layout = frame_layout(checkpoint.model_config, checkpoint.feature_config)
        self.net = checkpoint.build_model().to(self.device)
        self.frames, self.bins = self.feature_config.target_length, self.feature_config.num_mel_bins

    def _raw(self, fbank: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(check_input(fbank, self.frames, self.bins)).to(self.device)
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=self.precision == "fp16"):
            return self.net.forward_flat(x).float().cpu().numpy()

    def close(self) -> None:
        self.net = None
