"""Commands that ship models: export, build-engine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from astedge.cli.app import app, print_json
from astedge.cli.common import model_path, print_figures
from astedge.errors import UserError


@app.command("export", epilog="Example: astedge export -m ast-audioset.safetensors -o ast-audioset/ --profile "
                              "workstation   (then on the Jetson: astedge build-engine ast-audioset/model.onnx "
                              "--profile jetson-orin-agx)")
def export_(
    positional: Optional[Path] = typer.Argument(None, hidden=True),  # the older `astedge export MODEL -o DIR`
    model: Optional[Path] = typer.Option(None, "-m", "--model", help="astedge checkpoint (.safetensors) from "
                                         "`astedge import` or training (default: $ASTEDGE_MODEL)."),
    output: Path = typer.Option(..., "-o", "--output", help="Artefact folder to create (ONNX, astedge.json, ...)."),
    profile: str = typer.Option("workstation", "--profile",
                                help="Device profile: workstation, jetson-orin-agx, jetson-orin-nano, or a .toml file."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 or int8: which ONNX files are "
                                            "written and the engine's precision (default: the profile's). int8 needs "
                                            "--calibration."),
    fp16: Optional[bool] = typer.Option(None, "--fp16/--no-fp16", help="Alias of --precision fp16 / --precision fp32."),
    engine: Optional[bool] = typer.Option(None, "--engine/--no-engine",
                                          help="Build a TensorRT engine here (default: when TensorRT and a GPU are usable)."),
    triton_repo: Optional[Path] = typer.Option(None, "--triton-repo",
                                               help="Also write a Triton model repository entry DIR/<output name>/."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Keep only these outputs: a file of label names or "
                                           "indices, one per line or comma-separated (e.g. 8 of AudioSet's 527)."),
    renormalize: bool = typer.Option(False, "--renormalize", help="With --classes on a single-label (softmax) "
                                     "model: accept that the kept classes' scores are renormalized over them, so "
                                     "audio of a dropped class (e.g. background) scores as a kept one."),
    thresholds: Optional[Path] = typer.Option(None, "--thresholds", help="Per-class event thresholds (astedge "
                                              "calibrate) to carry in astedge.json; listen and classify use them."),
    int8: bool = typer.Option(False, "--int8", help="Alias of --precision int8: also write model.int8.onnx (explicit "
                              "Q/DQ INT8 for TensorRT and ONNX Runtime) calibrated on --calibration."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Folder of audio from the model's domain "
                                               "for INT8 (any format; some clips are held out for the check)."),
    int8_min_agreement: Optional[float] = typer.Option(None, "--int8-min-agreement", help="Refuse an INT8 model whose "
                                                       "top-1 agreement with FP32 on held-out clips is below this "
                                                       "(default 0.99)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder (and Triton entry)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (files, verification figures) as JSON."),
) -> None:
    """Export a checkpoint to verified ONNX (FP32, FP16, INT8), a TensorRT engine where possible, and Triton.

    INT8: astedge export -m MODEL -o DIR --precision int8 --calibration AUDIO_DIR
    """
    from astedge.deploy.export import export as run_export

    if positional is not None and model is not None:
        raise UserError("give the model once: astedge export -m MODEL -o DIR", positional)
    summary = run_export(positional or model_path(model), output, profile=profile, precision=precision, fp16=fp16,
                         int8=int8, engine=engine, triton_repo=triton_repo, force=force, classes=classes,
                         renormalize=renormalize, thresholds=thresholds, calibration=calibration,
                         int8_min_agreement=int8_min_agreement)
    if as_json:
        print_json(summary)
        return
    typer.echo(f"{summary['output']}: {', '.join(summary['files'].values())} (profile {summary['profile']}, "
               f"{summary['seconds']:.1f} s)")
    checks = summary["verification"]
    print_figures("ONNX FP32 vs PyTorch", checks.get("onnx_fp32_vs_torch"))
    print_figures("ONNX FP16 vs ONNX FP32 (ONNX Runtime CPU)", checks.get("onnx_fp16_vs_onnx_fp32"))
    print_figures("ONNX INT8 vs ONNX FP32 (held-out calibration clips)", checks.get("onnx_int8_vs_onnx_fp32"))
    print_figures("ONNX INT8 (FP16 float parts) vs ONNX FP32", checks.get("onnx_int8_fp16_vs_onnx_fp32"))
    print_figures("TensorRT engine vs ONNX FP32", checks.get("engine_vs_onnx_fp32"))
    print_figures("TensorRT INT8 engine vs ONNX INT8", checks.get("engine_vs_onnx_int8"))
    if summary["engine"] is None:
        typer.echo(f"  no engine: copy {summary['output']}/ to the device and run "
                   f"astedge build-engine {summary['output']}/model.onnx --profile <device>")
    if summary["triton"]:
        typer.echo(f"  Triton model: {summary['triton']}")


@app.command("build-engine", epilog="Example: astedge build-engine ast-audioset/model.onnx --profile jetson-orin-nano")
def build_engine(
    onnx_model: Path = typer.Argument(..., help="model.onnx (or its folder) written by `astedge export`; "
                                      "astedge.json and verification.npz must be beside it."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Device profile name or .toml file "
                                          "(default: the profile recorded at export)."),
    typing: str = typer.Option("auto", "--typing", help="auto (strong typing from the FP16 ONNX wherever the TensorRT "
                               "version offers it; TensorRT 10 without an FP16 ONNX: weak typing + the FP16 flag), "
                               "strong, or weak (TensorRT 10 only; LayerNorm pinned to FP32 only with the profile's "
                               "pin_layernorm)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file to reuse and update "
                                                "(default: ~/.cache/astedge/tensorrt/timing-<TensorRT>-<GPU name>-"
                                                "<UUID>.cache: one per device, not per compute capability)."),
    triton_repo: Optional[Path] = typer.Option(None, "--triton-repo", help="Also write a Triton entry DIR/<folder name>/."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 or int8 (default: the profile's; "
                                            "int8 needs an export made with --precision int8)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing engine (and Triton entry)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Build and verify the TensorRT engine on this device (needs only tensorrt and numpy, no torch)."""
    from astedge import artefact
    from astedge.deploy import triton
    from astedge.deploy.engine import build_engine as run_build

    folder = artefact.artefact_dir(onnx_model)
    name = triton.model_name(folder.resolve().name)
    if triton_repo is not None:
        triton.check_destination(triton_repo, name, force)
    summary = run_build(folder, profile, force=force, typing=typing, timing_cache=timing_cache, precision=precision)
    if triton_repo is not None:
        summary["triton"] = str(triton.write_model(triton_repo, name, folder, force=force))
    if as_json:
        print_json(summary)
        return
    gpu = summary["gpu"]
    typer.echo(f"{summary['engine']}: TensorRT {summary['tensorrt']} {summary['precision']} ({summary['typing']} typing "
               f"from {summary['onnx']}) for {gpu['name']} (sm {gpu['compute_capability']}), "
               f"built in {summary['build_seconds']:.0f} s")
    print_figures(f"engine vs ONNX {'INT8' if summary['precision'] == 'int8' else 'FP32'}", summary["verification"])
    if summary.get("triton"):
        typer.echo(f"  Triton model: {summary['triton']}")


