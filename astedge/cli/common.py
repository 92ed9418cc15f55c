"""Options and helpers several commands share (one definition each)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from astedge.errors import UserError


def parse_sets(values: list[str]) -> dict:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value
    return pairs


def print_figures(title: str, figures: dict | None) -> None:
    if figures:
        typer.echo(f"  {title}: max abs diff {figures['max_abs_diff']:.3g}, top-1 agreement "
                   f"{figures['top1_agreement']:.3f}, top-5 agreement {figures['top5_agreement']:.3f} "
                   f"({figures['count']} inputs)")


def model_path(model: Optional[Path], *, required: bool = True) -> Optional[Path]:
    """-m/--model, else $ASTEDGE_MODEL (every command that runs a model takes it so); None when neither is given
    and the command has a use without a model (`required` False)."""
    import os

    if model is None and os.environ.get("ASTEDGE_MODEL"):
        model = Path(os.environ["ASTEDGE_MODEL"])
    if model is None and required:
        raise UserError("no model: pass -m/--model PATH (an export folder or a .safetensors checkpoint) or set "
                        "ASTEDGE_MODEL")
    return model


def refuse_positional_model(paths: list[Path], usage: str) -> None:
    """Before the model became -m/--model it came first among some commands' positional arguments: when the first
    of `paths` is a model path (never an audio file or a dataset), one line that says the new spelling."""
    from astedge.runtime.model_path import is_model_path

    if paths and is_model_path(paths[0]):
        raise UserError(f"the model is given with -m/--model (or $ASTEDGE_MODEL) now: {usage}", paths[0])


MODEL_HELP = "Export folder, its astedge.json or model.onnx, or a .safetensors checkpoint (default: $ASTEDGE_MODEL)."
MODEL = typer.Option(None, "-m", "--model", help=MODEL_HELP)
BACKEND_HELP = ("Where the model runs, CPU or GPU: auto (tensorrt > onnxruntime-cuda > onnxruntime-cpu > torch), "
                "tensorrt, onnxruntime, onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt, torch.")
PRECISION_HELP = ("auto, fp32, fp16 or int8 (ONNX Runtime: which ONNX file, int8 = model.int8.onnx from export --int8; "
                  "TensorRT: must match the engine).")


# Smoothing across windows: listen, classify, evaluate (astedge.cli.options) and bench --stream.
SMOOTHING = typer.Option("none", "--smoothing", help="Across windows: none, ema, median or max.")
SMOOTHING_WINDOWS = typer.Option(3, "--smoothing-windows", min=1,
                                  help="ema: alpha = 2/(N+1); median, max: over the last N windows.")
