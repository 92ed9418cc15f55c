"""Random-weight models for latency measurements (``astedge bench`` without a model, ``costs``, the benchmarks).

Their latency is real, their outputs are not: every report that measures one labels it :data:`RANDOM_WEIGHTS`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

#: How models with random weights are labelled wherever they are measured.
RANDOM_WEIGHTS = "random weights (latency only)"


@contextlib.contextmanager
def random_export(config, *, fp16: bool = False, engine: bool = False, profile: str = "workstation",
                  name: str = "random", log=None):
    """A random-weight AST of `config` (a ModelConfig) exported into a temp folder, for latency measurements.

    Yields the export folder; its checkpoint stays beside it, so the torch backend runs it too.
    Verified like any export (on one input): its latency is real, its outputs are not.
    """
    import tempfile

    from astedge.deploy.export import export, require_export_dependencies

    require_export_dependencies()
    import torch

    from astedge.model.ast_model import ASTModel
    from astedge.model.checkpoint import save_checkpoint

    log = log or (lambda message: None)
    with tempfile.TemporaryDirectory(prefix="astedge-random-") as tmp:
        torch.manual_seed(0)
        checkpoint = save_checkpoint(Path(tmp) / f"{name}.safetensors", ASTModel(config).eval(),
                                     provenance={"source": f"astedge: {RANDOM_WEIGHTS}"})
        log(f"exporting a random-weight AST ({config.embed_dim}-d x {config.depth}, {config.target_length} x "
            f"{config.num_mel_bins}, {config.num_classes} classes) to ONNX{' + FP16' if fp16 else ''}"
            f"{' + TensorRT engine' if engine else ''}")
        folder = Path(tmp) / name
        export(checkpoint, folder, profile=profile, precision="fp16" if fp16 else "fp32", engine=engine, force=True,
               verify_count=1, log=log)
        yield folder
