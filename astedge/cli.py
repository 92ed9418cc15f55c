"""The `astedge` command: thin typer wrappers that parse, call the library and print.

User mistakes arrive as :class:`astedge.errors.UserError` and leave as one line on stderr with
exit code 2; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from astedge import __version__
from astedge.errors import UserError

app = typer.Typer(
    name="astedge",
    help="Audio Spectrogram Transformer from PyTorch training to real-time TensorRT on NVIDIA edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True)


def log_line(message: str, style: str | None = None) -> None:
    """A progress line on stderr, as plain text: paths and labels with brackets are not rich markup."""
    err_console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"astedge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Audio Spectrogram Transformer from PyTorch training to real-time TensorRT on NVIDIA edge devices."""


@app.command(epilog="Example: astedge doctor --json > machine.json")
def doctor(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Report versions, GPUs, the CUDA fbank library, microphones and usable backends."""
    from astedge.doctor import report

    data = report()
    if as_json:
        _print_json(data)
        return
    console = Console()
    console.print(f"[bold]astedge {data['astedge']}[/] on Python {data['python']} ({data['platform']})")
    table = Table("package", "version", box=None)
    for name, version in data["packages"].items():
        table.add_row(name, version or "[dim]not installed[/]")
    console.print(table)
    cuda = data["cuda"]
    if cuda["devices"]:
        for gpu in cuda["devices"]:
            console.print(f"GPU {gpu['index']}: {gpu['name']} (sm {gpu['compute_capability']}), driver {cuda['driver']}")
    else:
        console.print(f"GPU: none ({cuda['error']})")
    lib = data["fbank_library"]
    if lib["usable"]:
        console.print(f"CUDA fbank library: {lib['path']} (in use)")
    elif lib["path"]:
        console.print(f"CUDA fbank library: {lib['path']} found but not usable ({lib['reason']}); numpy reference used")
    else:
        console.print("CUDA fbank library: not built (numpy reference used); build with cmake -B build && cmake --build build")
    mics = data["audio_inputs"]
    if mics["devices"]:
        for mic in mics["devices"]:
            console.print(f"mic {mic['index']}: {mic['name']} ({mic['channels']} ch, {mic['default_rate']:g} Hz)")
    else:
        console.print(f"microphones: none ({mics['error']})")
    for name, backend in data["backends"].items():
        mark = "[green]usable[/]" if backend["usable"] else "[red]not usable[/]"
        console.print(f"backend {name}: {mark} {backend['detail']}")


@app.command(epilog="Example: astedge features dog_bark.wav -o dog_bark.npy   (then: --raw for log-mel before padding)")
def features(
    audio: Path = typer.Argument(..., help="Audio file (WAV, FLAC, OGG, ...; any rate and channel count)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the float32 \\[frames, mel] .npy array."),
    raw: bool = typer.Option(False, "--raw", help="Write log-mel energies before padding and normalization."),
    target_length: Optional[int] = typer.Option(None, "--target-length", min=1,
                                                help="Frames to pad/crop to (default: the dataset's, 1024)."),
    dataset: str = typer.Option("audioset", "--dataset", help="Normalization statistics: audioset, esc50, speechcommands."),
    max_seconds: float = typer.Option(3600.0, "--max-seconds", help="Refuse longer files."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
) -> None:
    """Compute the exact features AST was trained on (Kaldi fbank, 128 mel, 25/10 ms) for one file."""
    import dataclasses

    import numpy as np

    from astedge import audio as audio_io
    from astedge import features as feats
    from astedge.files import atomic_write

    config = feats.DEFAULT.with_dataset(dataset)
    if target_length is not None:
        config = dataclasses.replace(config, target_length=target_length)
    if output.exists() and audio.exists() and output.samefile(audio):
        raise UserError("is the input audio; give the features another path with -o", output)
    wave = audio_io.load_audio(audio, config.sample_rate, max_seconds=max_seconds)
    feats.frames_or_error(len(wave), config, audio)
    logmel = feats.fbank(wave, config)
    result = logmel if raw else feats.normalize(feats.pad_or_crop(logmel, config.target_length), config)
    with atomic_write(output) as handle:
        np.save(handle, np.ascontiguousarray(result, dtype=np.float32))
    summary = {"file": str(audio), "output": str(output), "seconds": len(wave) / config.sample_rate,
               "frames": int(logmel.shape[0]), "shape": list(result.shape), "raw": raw,
               "normalization": {"mean": config.mean, "std": config.std}}
    if as_json:
        _print_json(summary)
    else:
        typer.echo(f"{output}: {result.shape[0]} x {result.shape[1]} float32 "
                   f"({summary['seconds']:.2f} s, {summary['frames']} frames{', raw log-mel' if raw else ''})")


@app.command("import", epilog="Example: astedge import audioset_10_10_0.4593.pth -o ast-audioset.safetensors   "
                                "(or a Hugging Face folder: astedge import ast-finetuned-audioset-10-10-0.4593/ -o m.safetensors)")
def import_(
    source: Path = typer.Argument(..., help="AST repository .pth, or a Hugging Face ASTForAudioClassification folder."),
    output: Path = typer.Option(..., "-o", "--output", help="The astedge checkpoint to write (.safetensors)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label CSV (index,mid,display_name) or one name "
                                          "per line (default: HF id2label, AudioSet's for 527 outputs)."),
    fstride: Optional[int] = typer.Option(None, "--fstride", min=1, help="Frequency stride, when it cannot be inferred."),
    tstride: Optional[int] = typer.Option(None, "--tstride", min=1, help="Time stride, when it cannot be inferred."),
    target_length: Optional[int] = typer.Option(None, "--target-length", min=1,
                                                help="Input frames, when the position embedding leaves it open."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Normalization statistics: audioset, esc50, "
                                          "speechcommands (default: from the source or its input length)."),
    task: Optional[str] = typer.Option(None, "--task", help="multilabel (sigmoid) or multiclass (softmax); "
                                       "default multilabel, as AST trains."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
) -> None:
    """Convert a published AST checkpoint into one self-describing astedge .safetensors file."""
    from astedge.checkpoint import save_checkpoint
    from astedge.importer import import_source
    from astedge.labels import read_labels

    names = read_labels(labels) if labels is not None else None
    result = import_source(source, labels=names, fstride=fstride, tstride=tstride, target_length=target_length,
                           dataset=dataset, task=task)
    save_checkpoint(output, result.state, result.model_config, feature_config=result.feature_config,
                    labels=result.labels, task=result.task, provenance=result.provenance)
    cfg = result.model_config
    summary = {"source": str(source), "output": str(output), "source_format": result.provenance["source_format"],
               "model_config": cfg.to_dict(), "feature_config": result.feature_config.to_dict(),
               "num_labels": len(result.labels), "first_labels": result.labels[:3], "task": result.task}
    if as_json:
        _print_json(summary)
    else:
        typer.echo(f"{output}: AST {cfg.embed_dim}-d x {cfg.depth} layers, strides {cfg.fstride}/{cfg.tstride}, "
                   f"input {cfg.target_length} x {cfg.num_mel_bins}, {cfg.num_classes} classes ({result.task}) "
                   f"from {summary['source_format']}")


@app.command(epilog="Example: astedge predict dog_bark.wav --model ast-audioset.safetensors --top-k 5")
def predict(
    audio: Path = typer.Argument(..., help="Audio file (WAV, FLAC, OGG, ...; any rate and channel count)."),
    model: Path = typer.Option(..., "-m", "--model", help="astedge checkpoint (.safetensors) from `astedge import`."),
    top_k: int = typer.Option(5, "-k", "--top-k", min=1, help="How many classes to print."),
    max_seconds: float = typer.Option(3600.0, "--max-seconds", help="Refuse longer files."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Tag one audio file with a model in PyTorch (the first target-length window, as AST's inference.py)."""
    from astedge.predict import predict_file

    result = predict_file(audio, model, k=top_k, max_seconds=max_seconds)
    if as_json:
        _print_json(result)
        return
    table = Table("score", "label", "index", box=None)
    for row in result["top"]:
        table.add_row(f"{row['score']:.4f}", escape(row["label"]), str(row["index"]))
    Console().print(table)


data_app = typer.Typer(help="Datasets: synthesize demo data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth", epilog="Example: astedge data synth demo-data --classes 10 --per-class 200 --seed 0")
def data_synth(
    out: Path = typer.Argument(..., help="Folder to write <class>/<clip>.wav, stream.wav and stream.csv into."),
    classes: int = typer.Option(10, "--classes", help="Number of sound classes (2-10)."),
    per_class: int = typer.Option(200, "--per-class", help="Clips per class."),
    seconds: float = typer.Option(1.0, "--seconds", help="Length of each clip."),
    seed: int = typer.Option(0, "--seed", help="Everything derives from this seed."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Write a deterministic procedural dataset of distinct sound classes, plus a labelled stream."""
    from rich.progress import Progress

    from astedge import synth

    synth.check_classes(classes)
    with Progress(transient=True, console=err_console) as bar:
        job = bar.add_task("synthesizing", total=classes * per_class)
        summary = synth.write_dataset(out, classes, per_class, seconds, seed,
                                      progress=lambda n, total: bar.update(job, advance=n))
    result = {"root": str(summary.root), "classes": summary.classes, "clips": summary.clips,
              "stream": str(summary.stream), "stream_truth": str(summary.stream_truth)}
    if as_json:
        _print_json(result)
    else:
        typer.echo(f"{out}: {summary.clips} clips of {len(summary.classes)} classes, stream {summary.stream.name} "
                   f"with ground truth {summary.stream_truth.name}")


def _parse_sets(values: list[str]) -> dict:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value
    return pairs


@app.command(epilog="Example: astedge train speech_commands/ -o runs/kws --preset speechcommands --model tiny "
                    "--teacher timm:resnet18   (fine-tune: --init runs/other/best.safetensors; any field: --set lr=3e-4)")
def train(
    data: Path = typer.Argument(..., help="Dataset: class folders, a CSV manifest, ESC-50 or Speech Commands v2."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (best.safetensors, metrics.jsonl, curves.png)."),
    preset: str = typer.Option("demo", "--preset", help="Recipe: demo, audioset, esc50, speechcommands."),
    model: Optional[str] = typer.Option(None, "--model", help="Model size: tiny, small, base."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (overrides the preset)."),
    init: Optional[str] = typer.Option(None, "--init", help="random (a preset's from-scratch variant), "
                                       "imagenet:DEIT_FILE, or an astedge checkpoint to fine-tune (its architecture, "
                                       "a new head for new labels)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Distil a teacher through AST's distillation "
                                          "token: timm:NAME (a timm CNN trained here first, e.g. timm:resnet18, "
                                          "timm:mobilenetv3_small_100), or a checkpoint / export folder."),
    patch: Optional[str] = typer.Option(None, "--patch", help="Patch shape FxT, e.g. 16x16, 128x2, 32x32 (paper Table 6)."),
    stride: Optional[str] = typer.Option(None, "--stride", help="Patch strides F/T, e.g. 10/10, 16/16 (paper Table 5)."),
    pos_embed: Optional[str] = typer.Option(None, "--pos-embed", help="Position adaptation: bilinear, nearest, reinit "
                                            "(paper Table 4)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder for a feature cache (raw log-mel per file)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON file of recipe values."),
    set_values: list[str] = typer.Option([], "--set", help="Override any recipe field: --set lr=1e-4 (repeatable)."),
    fold: int = typer.Option(1, "--fold", help="ESC-50: the held-out fold (1-5)."),
    label_file: Optional[Path] = typer.Option(None, "--labels", help="Manifests: label CSV (index,mid,display_name)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUTPUT from its last epoch."),
    force: bool = typer.Option(False, "--force", help="Start over in an OUTPUT that holds a run."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON."),
) -> None:
    """Train an AST on your labelled audio (from scratch, from a checkpoint, or with a CNN teacher) into a
    self-describing checkpoint; says when a run is not learning."""
    from astedge.datasets import read_dataset
    from astedge.recipes import load_recipe, parse_stride
    from astedge.train import train as run_training

    overrides = _parse_sets(set_values)
    overrides.update({k: v for k, v in dict(model=model, epochs=epochs, init=init, patch_size=patch,
                                            pos_embed=pos_embed, teacher=teacher).items() if v is not None})
    if stride is not None:
        overrides["fstride"], overrides["tstride"] = parse_stride(stride)
    recipe = load_recipe(preset, config, overrides)
    dataset = read_dataset(data, fold=fold, label_file=label_file, val_fraction=recipe.val_fraction, seed=recipe.seed)
    result = run_training(dataset, output, recipe, resume=resume, force=force, cache_dir=cache, log=log_line)
    if as_json:
        _print_json(result.summary())
    else:
        test = result.test.get("student", {}).get(result.metric)
        typer.echo(f"{result.best}: val {result.metric} {result.best_value:.4f} (epoch {result.best_epoch})"
                   + (f", test {test:.4f}" if test is not None else ""))


@app.command(epilog="Example: astedge distill ast-audioset/ my_recordings/ -o runs/student --model tiny --depth 4 "
                    "--stride 16/16 --eval labelled_clips/   (resume: --resume)")
def distill(
    teacher: Path = typer.Argument(..., help="The model to learn from: a checkpoint or an export folder (any model "
                                   "astedge runs, e.g. an imported AudioSet AST)."),
    audio: Path = typer.Argument(..., help="Unlabeled audio from your domain (a folder; long recordings are cut into "
                                 "clips of the student's window)."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (best.safetensors, distill.json, ...)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Recipe (default: by the teacher's window: "
                                         "speechcommands up to 2 s, esc50 up to 6 s, else audioset; from scratch)."),
    model: Optional[str] = typer.Option(None, "--model", help="Student size: tiny, small, base."),
    depth: Optional[int] = typer.Option(None, "--depth", min=1, help="Student layers."),
    patch: Optional[str] = typer.Option(None, "--patch", help="Student patch shape FxT, e.g. 16x16, 128x2."),
    stride: Optional[str] = typer.Option(None, "--stride", help="Student strides F/T, e.g. 16/16."),
    target_length: Optional[int] = typer.Option(None, "--target-length", min=16, help="Student input frames "
                                                "(default: the teacher's)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs."),
    labelled: Optional[Path] = typer.Option(None, "--labelled", help="A labelled dataset whose training clips "
                                            "teach the class token the true labels."),
    eval_data: Optional[Path] = typer.Option(None, "--eval", help="A labelled dataset to score teacher and student on."),
    set_values: list[str] = typer.Option([], "--set", help="Override any recipe field: --set lr=5e-4 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUTPUT from its last epoch."),
    force: bool = typer.Option(False, "--force", help="Start over in an OUTPUT that holds a run."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Distil a teacher into a smaller AST on unlabeled audio (label-free), reporting agreement and accuracy."""
    from astedge.backends import model_configs
    from astedge.distill import distill as run_distill
    from astedge.recipes import distill_recipe, parse_stride

    overrides = _parse_sets(set_values)
    overrides.update({k: v for k, v in dict(model=model, depth=depth, patch_size=patch, target_length=target_length,
                                            epochs=epochs).items() if v is not None})
    if stride is not None:
        overrides["fstride"], overrides["tstride"] = parse_stride(stride)
    _, teacher_features = model_configs(teacher)
    recipe = distill_recipe(teacher_features.window_seconds, preset, overrides)
    report = run_distill(teacher, audio, output, recipe, labelled=labelled, eval_data=eval_data, resume=resume,
                         force=force, log=log_line)
    if as_json:
        _print_json(report)
    else:
        a = report["agreement"]
        typer.echo(f"{report['student']}: agrees with the teacher on {a['held_out']:.1%} of {a['clips']} held-out clips "
                   f"({a['metric']})")


@app.command(epilog="Example: astedge demo --out demo")
def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for the data, the run and the exported model."),
    seed: int = typer.Option(0, "--seed", help="Data and training seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Synthesize data, train a tiny AST on the CPU, export it and classify a labelled stream."""
    from astedge.demo import run_demo

    summary = run_demo(out, seed=seed, log=log_line)
    if as_json:
        _print_json(summary)
        return
    t = summary["timings"]
    typer.echo(f"held-out accuracy      {summary['held_out_accuracy']:.1%} on {summary['held_out_clips']} clips")
    typer.echo(f"stream windows correct {summary['stream_window_accuracy']:.1%} of {summary['stream_windows']} "
               f"({summary['window_seconds']:.2f} s windows, hop {summary['hop_seconds']:.2f} s, against stream.csv)")
    typer.echo(f"window latency         p50 {summary['latency_ms_p50']:.1f} ms, p99 {summary['latency_ms_p99']:.1f} ms "
               f"(features + {summary['backend']})")
    events = summary["events"]
    typer.echo(f"stream events          F1 {events['event_f1']:.3f} (DCASE collars; {events['detected_events']} found for "
               f"{events['true_events']} true, thresholds calibrated on the held-out clips)")
    typer.echo(f"time                   {t['total_s']:.0f} s (train {t['train_s']:.0f} s); model {summary['checkpoint']}")


def _print_figures(title: str, figures: dict | None) -> None:
    if figures:
        typer.echo(f"  {title}: max abs diff {figures['max_abs_diff']:.3g}, top-1 agreement "
                   f"{figures['top1_agreement']:.3f}, top-5 agreement {figures['top5_agreement']:.3f} "
                   f"({figures['count']} inputs)")


@app.command("export", epilog="Example: astedge export ast-audioset.safetensors -o ast-audioset/ --profile workstation   "
                              "(then on the Jetson: astedge build-engine ast-audioset/model.onnx --profile jetson-orin-agx)")
def export_(
    model: Path = typer.Argument(..., help="astedge checkpoint (.safetensors) from `astedge import` or training."),
    output: Path = typer.Option(..., "-o", "--output", help="Artefact folder to create (ONNX, astedge.json, ...)."),
    profile: str = typer.Option("workstation", "--profile",
                                help="Device profile: workstation, jetson-orin-agx, jetson-orin-nano, or a .toml file."),
    fp16: Optional[bool] = typer.Option(None, "--fp16/--no-fp16",
                                        help="Write the FP16 ONNX and build FP16 (default: the profile's precision)."),
    engine: Optional[bool] = typer.Option(None, "--engine/--no-engine",
                                          help="Build a TensorRT engine here (default: when TensorRT and a GPU are usable)."),
    triton_repo: Optional[Path] = typer.Option(None, "--triton-repo",
                                               help="Also write a Triton model repository entry DIR/<output name>/."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Keep only these outputs: a file of label names or "
                                           "indices, one per line or comma-separated (e.g. 8 of AudioSet's 527)."),
    thresholds: Optional[Path] = typer.Option(None, "--thresholds", help="Per-class event thresholds (astedge "
                                              "calibrate) to carry in astedge.json; listen and classify use them."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder (and Triton entry)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (files, verification figures) as JSON."),
) -> None:
    """Export a checkpoint to verified ONNX (FP32 + FP16), a TensorRT engine where possible, and Triton."""
    from astedge.export import export as run_export

    summary = run_export(model, output, profile=profile, fp16=fp16, engine=engine, triton_repo=triton_repo,
                         force=force, classes=classes, thresholds=thresholds)
    if as_json:
        _print_json(summary)
        return
    typer.echo(f"{summary['output']}: {', '.join(summary['files'].values())} (profile {summary['profile']}, "
               f"{summary['seconds']:.1f} s)")
    checks = summary["verification"]
    _print_figures("ONNX FP32 vs PyTorch", checks.get("onnx_fp32_vs_torch"))
    _print_figures("ONNX FP16 vs ONNX FP32 (ONNX Runtime CPU)", checks.get("onnx_fp16_vs_onnx_fp32"))
    _print_figures("TensorRT engine vs ONNX FP32", checks.get("engine_vs_onnx_fp32"))
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
    force: bool = typer.Option(False, "--force", help="Replace an existing engine (and Triton entry)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Build and verify the TensorRT engine on this device (needs only tensorrt and numpy, no torch)."""
    from astedge import artefact, triton
    from astedge.engine import build_engine as run_build

    folder = artefact.artefact_dir(onnx_model)
    name = triton.model_name(folder.resolve().name)
    if triton_repo is not None:
        triton.check_destination(triton_repo, name, force)
    summary = run_build(folder, profile, force=force, typing=typing, timing_cache=timing_cache)
    if triton_repo is not None:
        summary["triton"] = str(triton.write_model(triton_repo, name, folder, force=force))
    if as_json:
        _print_json(summary)
        return
    gpu = summary["gpu"]
    typer.echo(f"{summary['engine']}: TensorRT {summary['tensorrt']} {summary['precision']} ({summary['typing']} typing "
               f"from {summary['onnx']}) for {gpu['name']} (sm {gpu['compute_capability']}), "
               f"built in {summary['build_seconds']:.0f} s")
    _print_figures("engine vs ONNX FP32", summary["verification"])
    if summary.get("triton"):
        typer.echo(f"  Triton model: {summary['triton']}")


@app.command(epilog="Example: astedge models --size base -o benchmarks/results/models-cpu.md   (--no-latency: counts only)")
def models(
    size: str = typer.Option("base", "--size", help="Model width/depth for the paper's configurations: tiny, small, base."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML with [[config]] tables (name, patch_size, "
                                          "fstride, tstride, target_length, size) instead of the paper's."),
    latency: bool = typer.Option(True, "--latency/--no-latency", help="Measure ONNX Runtime CPU latency (exports each)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="ONNX Runtime intra-op threads (default: all)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also write the table (.md) or data (.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """The cost of each configuration (the paper's Tables 5 and 6 by default): patches, params, FLOPs, memory, latency."""
    import os

    from rich.progress import Progress

    from astedge import costs
    from astedge.files import atomic_write

    configs = costs.configs_from_toml(config, size) if config is not None else costs.paper_configs(size)
    with Progress(transient=True, console=err_console) as bar:
        job = bar.add_task("counting, then timing" if latency else "counting", total=len(configs))
        results = costs.costs(configs, latency=latency, threads=threads, progress=lambda: bar.update(job, advance=1))
    from astedge.machine import machine_header

    header = machine_header()
    title = (f"AST configurations at {size} size, batch 1 — CPU latency: ONNX Runtime FP32 on {header['cpu']}, "
             f"{threads or os.cpu_count()} threads, {header['date'][:10]}")
    data = {"machine": header, "threads": threads or os.cpu_count(), "flops_tool": "torch.utils.flop_counter",
            "configs": [r.to_dict() for r in results]}
    if output is not None:
        with atomic_write(output, "w") as handle:
            handle.write(json.dumps(data, indent=2) + "\n" if output.suffix == ".json"
                         else costs.markdown_table(results, f"# {title}"))
    if as_json:
        _print_json(data)
        return
    table = Table("config", "patch", "strides", "grid", "patches", "params M", "GFLOPs", "act. MiB", "CPU ms best",
                  title=title)
    for r in results:
        table.add_row(r.name, f"{r.patch_size[0]}x{r.patch_size[1]}", f"{r.strides[0]}/{r.strides[1]}",
                      f"{r.grid[0]}x{r.grid[1]}", str(r.patches), f"{r.params_m:.2f}", f"{r.gflops:.1f}",
                      f"{r.activation_mib:.0f}", "-" if r.cpu_latency_ms is None else f"{r.cpu_latency_ms:.0f}")
    Console().print(table)


def _model_path(model: Optional[Path]) -> Path:
    """--model, else $ASTEDGE_MODEL."""
    import os

    if model is None:
        if not os.environ.get("ASTEDGE_MODEL"):
            raise UserError("no model: pass --model PATH (an export folder or a .safetensors checkpoint) or set "
                            "ASTEDGE_MODEL")
        model = Path(os.environ["ASTEDGE_MODEL"])
    return model


def _load_backend(model: Path, backend: str, precision: str):
    """The backend for a model path; says on stderr which one runs and why."""
    from astedge.backends import choose_backend

    choice = choose_backend(model, backend, precision)
    log_line(f"{model}: {choice.describe()}", style="dim")
    return choice.backend


def _window_line(result) -> str:
    labels = ", ".join(f"{s.label} {s.score:.3f}" for s in result.top) or "-"
    notes = "".join(f"  [{n} {k}]" for k, n in (("dropped", result.dropped), ("overflows", result.overflows)) if n)
    return f"{result.start:8.2f}-{result.end:8.2f} s  {result.latency_ms:7.1f} ms  {labels}{notes}"


_MODEL_HELP = "Export folder, its astedge.json or model.onnx, or a .safetensors checkpoint (default: $ASTEDGE_MODEL)."
_BACKEND_HELP = ("auto (tensorrt > onnxruntime-cuda > onnxruntime-cpu > torch), tensorrt, onnxruntime, onnxruntime-cpu, "
                 "onnxruntime-cuda, onnxruntime-tensorrt, torch.")
_PRECISION_HELP = "auto, fp32 or fp16 (ONNX Runtime: which ONNX file; TensorRT: must match the engine)."


# The decision layer's options, shared by listen, classify and evaluate (one definition each).
_EVENTS = typer.Option(False, "--events", help="Print one JSON line when an event starts and one when it ends "
                       "(smoothing, thresholds with hysteresis, N-of-M confirmation, merging).")
_EVENTS_CSV = typer.Option(None, "--events-csv", help="Also write the ended events to this CSV (onset,offset,label,...).")
_ON_EVENT = typer.Option(None, "--on-event", help="Run this shell command per event, the event JSON on its stdin "
                         "(its own worker: capture never waits; failures and drops are counted).")
_THRESHOLDS = typer.Option(None, "--thresholds", help="Per-class thresholds (JSON from astedge calibrate; default: "
                           "those exported into the model's astedge.json, else --threshold for every class).")
_OFF_RATIO = typer.Option(0.8, "--off-ratio", help="Hysteresis: an event ends below threshold x this.")
_CONFIRM = typer.Option(None, "--confirm", help="N/M: an event starts when its class is on in N of the last M "
                        "windows (default 1/1).")
_MIN_DURATION = typer.Option(0.0, "--min-duration", help="Seconds an event must last before it is reported.")
_MERGE_GAP = typer.Option(0.0, "--merge-gap", help="Seconds of silence that still continue an event.")
_SMOOTHING = typer.Option("none", "--smoothing", help="Across windows: none, ema, median or max.")
_SMOOTHING_WINDOWS = typer.Option(3, "--smoothing-windows", min=1,
                                  help="ema: alpha = 2/(N+1); median, max: over the last N windows.")


def _event_config(model: Path, labels, threshold, thresholds, off_ratio, confirm, min_duration, merge_gap):
    """The decision layer's settings: thresholds from --thresholds, else the export's calibrated ones."""
    from astedge.backends import export_thresholds
    from astedge.events import EventConfig, parse_confirm, read_thresholds

    per_class = read_thresholds(thresholds, labels) if thresholds is not None else export_thresholds(model)
    n, m = parse_confirm(confirm)
    return EventConfig(threshold=0.5 if threshold is None else threshold, off_ratio=off_ratio,
                       thresholds=per_class or {}, confirm=n, confirm_window=m, min_duration=min_duration,
                       merge_gap=merge_gap)


class _EventOutput:
    """Where event records go: JSON lines on stdout, the --on-event command, the --events-csv file."""

    def __init__(self, detector, print_lines: bool, csv_path: Optional[Path], command: Optional[str]):
        from astedge.events import EventHook

        self.detectors = [detector] if detector is not None else []
        self.print_lines, self.csv_path = print_lines, csv_path
        self.hook = EventHook(command) if command else None
        if csv_path is not None and not csv_path.parent.is_dir():
            raise UserError("its folder does not exist", csv_path)

    def emit(self, records: list[dict], printer=None) -> None:
        for record in records:
            if self.print_lines:
                (printer or (lambda line: (sys.stdout.write(line + "\n"), sys.stdout.flush())))(json.dumps(record))
            if self.hook is not None:
                self.hook.submit(record)

    def close(self) -> dict:
        from astedge.events import write_events_csv

        if self.csv_path is not None:
            write_events_csv(self.csv_path, [e for d in self.detectors for e in d.events])
        return {"on_event": self.hook.close()} if self.hook is not None else {}


@app.command(epilog="Example: astedge listen --model ast-audioset/ --hop 1 --smoothing ema   "
                    "(without a microphone: astedge listen --model ast-audioset/ --source street.wav --realtime --json; "
                    "arecord -f S16_LE -r 16000 -c 1 -t raw | astedge listen -m ast-audioset/ --source - --realtime)")
def listen(
    model: Optional[Path] = typer.Option(None, "-m", "--model", help=_MODEL_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="Microphone: index or part of its name "
                                         "(astedge doctor lists them); default: the system's input."),
    window: Optional[float] = typer.Option(None, "--window", help="Window in seconds (default: the model's, e.g. 10 s "
                                           "for AudioSet models)."),
    hop: Optional[float] = typer.Option(None, "--hop", help="Seconds between windows (default 1). Multiples of 10 ms "
                                        "compute only the new frames each hop."),
    top_k: int = typer.Option(5, "-k", "--top-k", min=1, help="Labels per window."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Only report scores >= this (with --events: "
                                              "the on-threshold of classes without their own, default 0.5)."),
    smoothing: str = _SMOOTHING,
    smoothing_windows: int = _SMOOTHING_WINDOWS,
    allow: list[str] = typer.Option([], "--allow", help="Only these labels (repeatable, or comma-separated)."),
    deny: list[str] = typer.Option([], "--deny", help="Never these labels (repeatable, or comma-separated)."),
    events: bool = _EVENTS,
    events_csv: Optional[Path] = _EVENTS_CSV,
    on_event: Optional[str] = _ON_EVENT,
    thresholds: Optional[Path] = _THRESHOLDS,
    off_ratio: float = _OFF_RATIO,
    confirm: Optional[str] = _CONFIRM,
    min_duration: float = _MIN_DURATION,
    merge_gap: float = _MERGE_GAP,
    partial: str = typer.Option("wait", "--partial", help="Before the first full window: wait, or pad (classify the "
                                "growing window every hop)."),
    source: Optional[str] = typer.Option(None, "--source", help="Read an audio file instead of the microphone, "
                                         "or '-' for raw PCM on stdin."),
    realtime: bool = typer.Option(False, "--realtime", help="With --source: a live source (a file is replayed at "
                                  "real-time pace; stdin is produced in real time): windows are dropped, not "
                                  "delayed, when inference falls behind. Without it a source is read as fast as "
                                  "inference goes and nothing is dropped."),
    speed: Optional[float] = typer.Option(None, "--speed", help="With --source FILE --realtime: replay this many "
                                          "times faster than real time."),
    rate: Optional[int] = typer.Option(None, "--rate", help="--source -: sample rate (default 16000)."),
    channels: Optional[int] = typer.Option(None, "--channels", help="--source -: interleaved channels (default 1)."),
    pcm_format: Optional[str] = typer.Option(None, "--format", help="--source -: s16le (default) or f32le."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds of audio."),
    backend: str = typer.Option("auto", "--backend", help=_BACKEND_HELP),
    precision: str = typer.Option("auto", "--precision", help=_PRECISION_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per window and a final {\"summary\": ...} "
                                 "(with --events, the event lines too)."),
) -> None:
    """Classify live audio in sliding windows: microphone, a file replayed in real time, or raw PCM on stdin;
    with --events, report sound events (start and end) instead of windows."""
    from astedge import capture
    from astedge.scores import Smoother, label_mask
    from astedge.stream import Listener
    from astedge.views import render
    from astedge.windows import Windowing

    if source is None and (realtime or speed is not None):
        raise UserError("--realtime and --speed apply to --source (a microphone is always real time)")
    if source != "-" and (rate is not None or channels is not None or pcm_format is not None):
        raise UserError("--rate, --channels and --format describe raw PCM on stdin (--source -)")
    if source is not None and device is not None:
        raise UserError("--device selects a microphone; it cannot be combined with --source")
    if speed is not None and not realtime:
        raise UserError("--speed paces a --realtime replay; add --realtime")
    if duration is not None and duration <= 0:
        raise UserError("--duration must be > 0")
    from astedge.backends import stream_hop

    model = _model_path(model)
    net = _load_backend(model, backend, precision)
    windowing = Windowing.from_seconds(net.feature_config, window, hop, default_hop=stream_hop(model))
    mask = label_mask(net.labels, allow, deny)
    smoother = Smoother(smoothing, smoothing_windows)
    detector = None
    if events or events_csv is not None or on_event:
        from astedge.events import EventDetector

        config = _event_config(model, net.labels, threshold, thresholds, off_ratio, confirm, min_duration, merge_gap)
        detector = EventDetector(net.labels, net.task, config, mask)
    output = _EventOutput(detector, events, events_csv, on_event)
    if source == "-":
        src = capture.PcmSource(rate=rate or 16000, channels=channels or 1, fmt=pcm_format or "s16le", live=realtime)
    elif source is not None:
        src = capture.FileSource(source, realtime=realtime, speed=speed or 1.0)
    else:
        src = capture.MicrophoneSource(device, rate=net.feature_config.sample_rate)
    listener = Listener(net, src, windowing, k=top_k, threshold=None if events else threshold, mask=mask,
                        smoother=smoother, partial=partial, duration=duration, detector=detector)
    console = Console()
    interrupted = False
    try:
        listener.start()
        if as_json or events:
            for result in listener.results():
                if as_json:
                    sys.stdout.write(json.dumps(result.to_dict()) + "\n")
                    sys.stdout.flush()
                output.emit(result.events)
        elif console.is_terminal:
            from rich.live import Live

            with Live(render(None, listener.summary(), src.name), console=console, refresh_per_second=8) as live:
                for result in listener.results():
                    live.update(render(result, listener.summary(), src.name))
                    output.emit(result.events)
        else:
            for result in listener.results():
                typer.echo(_window_line(result))
                output.emit(result.events)
    except KeyboardInterrupt:
        interrupted = True
        listener.stop()
    finally:
        listener.close()
        net.close()
        output.emit(listener.finish_events())
    summary = {**listener.summary(), **output.close(), "interrupted": interrupted}
    if as_json:
        sys.stdout.write(json.dumps({"summary": summary}) + "\n")
        return
    inference = summary["inference_ms"] or {}
    err_console.print(
        f"heard {summary['audio_s']:.1f} s in {summary['wall_s']:.1f} s: {summary['windows']} windows classified, "
        f"{summary['dropped']} dropped, {summary['overflows']} capture overflows"
        + (f", {summary['lost']} lost" if summary["lost"] else "")
        + (f"; inference p50 {inference['p50']:.1f} ms, p99 {inference['p99']:.1f} ms" if inference else "")
        + (f"; real-time factor {summary['real_time_factor']:.3f}" if summary["real_time_factor"] else ""),
        highlight=False, soft_wrap=True)


@app.command(epilog="Example: astedge classify street.wav park.flac --model ast-audioset/ --hop 5 --json > tags.jsonl")
def classify(
    audio: list[Path] = typer.Argument(..., help="Audio files (WAV, FLAC, OGG, ...; any rate and channel count)."),
    model: Optional[Path] = typer.Option(None, "-m", "--model", help=_MODEL_HELP),
    top_k: int = typer.Option(5, "-k", "--top-k", min=1, help="Labels per window and per file."),
    window: Optional[float] = typer.Option(None, "--window", help="Window in seconds (default: the model's, e.g. 10 s for AudioSet models)."),
    hop: Optional[float] = typer.Option(None, "--hop", help="Seconds between windows (default: half the window)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Windows per backend call."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Only report scores >= this (with --events: "
                                              "the on-threshold of classes without their own, default 0.5)."),
    allow: list[str] = typer.Option([], "--allow", help="Only these labels (repeatable, or comma-separated)."),
    deny: list[str] = typer.Option([], "--deny", help="Never these labels (repeatable, or comma-separated)."),
    smoothing: str = _SMOOTHING,
    smoothing_windows: int = _SMOOTHING_WINDOWS,
    events: bool = _EVENTS,
    events_csv: Optional[Path] = _EVENTS_CSV,
    on_event: Optional[str] = _ON_EVENT,
    thresholds: Optional[Path] = _THRESHOLDS,
    off_ratio: float = _OFF_RATIO,
    confirm: Optional[str] = _CONFIRM,
    min_duration: float = _MIN_DURATION,
    merge_gap: float = _MERGE_GAP,
    max_seconds: float = typer.Option(3600.0, "--max-seconds", help="Refuse longer files."),
    backend: str = typer.Option("auto", "--backend", help=_BACKEND_HELP),
    precision: str = typer.Option("auto", "--precision", help=_PRECISION_HELP),
    as_json: bool = typer.Option(False, "--json", help="JSON lines: one per window, then the file's mean and max "
                                 "records (\"aggregate\"); with --events, the event lines too."),
) -> None:
    """Classify audio files: short ones padded, long ones in sliding windows, plus the clip's mean and max;
    with --events, the sound events in each file (start and end lines)."""
    from astedge.audio import audio_info
    from astedge.cuda_fbank import extractor_for
    from astedge.events import EventDetector
    from astedge.scores import Smoother, label_mask
    from astedge.windows import Windowing, classify_file

    for path in audio:  # every file's problem before any work
        audio_info(path)
    model = _model_path(model)
    net = _load_backend(model, backend, precision)
    output = None
    try:
        windowing = Windowing.from_seconds(net.feature_config, window, hop)
        mask = label_mask(net.labels, allow, deny)
        extractor = extractor_for(net.device, net.feature_config, model_input=False)
        detect = events or events_csv is not None or on_event
        config = _event_config(model, net.labels, threshold, thresholds, off_ratio, confirm, min_duration,
                               merge_gap) if detect else None
        output = _EventOutput(None, events, events_csv, on_event)
        console = Console()
        for path in audio:
            detector = EventDetector(net.labels, net.task, config, mask, file=str(path)) if detect else None
            result = classify_file(net, path, windowing, max_seconds=max_seconds, k=top_k,
                                   threshold=None if events else threshold, mask=mask, batch_size=batch_size,
                                   extractor=extractor, smoother=Smoother(smoothing, smoothing_windows),
                                   detector=detector)
            if detector is not None:
                output.detectors.append(detector)
            if as_json or events:
                if as_json:
                    sys.stdout.write("".join(json.dumps(record) + "\n" for record in result.records()))
                output.emit(result.events)
                sys.stdout.flush()
                continue
            console.print(f"[bold]{escape(str(path))}[/]  {result.seconds:.2f} s, {len(result.windows)} window(s)",
                          highlight=False, soft_wrap=True)
            table = Table("mean", "max", "label", box=None)
            peaks = {s.index: s.score for s in result.max.top}
            for score in result.mean.top:
                peak = peaks.get(score.index)
                table.add_row(f"{score.score:.4f}", f"{peak:.4f}" if peak is not None else "", escape(score.label))
            console.print(table)
            if len(result.windows) > 1:
                for window_result in result.windows:
                    typer.echo("  " + _window_line(window_result))
            output.emit(result.events)
    finally:
        net.close()
        if output is not None:
            output.close()


@app.command(epilog="Example: astedge calibrate runs/kws/best.safetensors speech_commands/ -o thresholds.json   "
                    "(then: astedge export MODEL -o DIR --thresholds thresholds.json; --precision 0.95 for fewer false alarms)")
def calibrate(
    model: Path = typer.Argument(..., help=_MODEL_HELP),
    data: Path = typer.Argument(..., help="Labelled audio: class folders, a CSV manifest, ESC-50 or Speech Commands."),
    output: Path = typer.Option(..., "-o", "--output", help="The thresholds file to write (JSON)."),
    split: str = typer.Option("val", "--split", help="Which split to calibrate on: val (held out from training) or test."),
    target_precision: Optional[float] = typer.Option(None, "--precision", help="Per class, the lowest threshold reaching "
                                                     "this precision (the most recall at it); default: maximize F1."),
    label_file: Optional[Path] = typer.Option(None, "--labels", help="Manifests: label CSV (index,mid,display_name)."),
    backend: str = typer.Option("auto", "--backend", help=_BACKEND_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the thresholds and per-class figures as JSON."),
) -> None:
    """Pick per-class event thresholds on labelled clips (max F1, or a target precision) for --events."""
    from astedge.datasets import read_dataset
    from astedge.evaluation import calibrate_thresholds
    from astedge.events import write_thresholds

    if not output.parent.is_dir():
        raise UserError("its folder does not exist", output)
    dataset = read_dataset(data, label_file=label_file)
    net = _load_backend(model, backend, "auto")
    try:
        result = calibrate_thresholds(net, dataset, split, target_precision=target_precision, log=log_line)
    finally:
        net.close()
    write_thresholds(output, result["thresholds"], model=str(model), data=str(data), split=split,
                     method=result["method"], clips=result["clips"], classes=result["classes"])
    if as_json:
        _print_json({"output": str(output), **result})
        return
    table = Table("label", "threshold", "precision", "recall", "F1", "positives", box=None)
    for label, row in result["classes"].items():
        table.add_row(escape(label), f"{row['threshold']:.3f}", f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                      f"{row['f1']:.3f}", str(row["positives"]))
    Console().print(table)
    typer.echo(f"{output}: {len(result['thresholds'])} thresholds ({result['method']}, {result['clips']} {split} clips)")


@app.command(epilog="Example: astedge evaluate demo/export demo/data/stream.wav --truth demo/data/stream.csv "
                    "--hop 0.1 --json   (several files: a truth table with a filename column)")
def evaluate(
    model: Path = typer.Argument(..., help=_MODEL_HELP),
    audio: list[Path] = typer.Argument(..., help="Recordings to detect events in."),
    truth: Path = typer.Option(..., "--truth", help="CSV onset,offset,label (or DCASE TSV filename onset offset "
                               "event_label) of the true events."),
    window: Optional[float] = typer.Option(None, "--window", help="Window in seconds (default: the model's)."),
    hop: Optional[float] = typer.Option(None, "--hop", help="Seconds between windows (default: the export's stream hop, 1 s)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="On-threshold of classes without their own (0.5)."),
    thresholds: Optional[Path] = _THRESHOLDS,
    smoothing: str = _SMOOTHING,
    smoothing_windows: int = _SMOOTHING_WINDOWS,
    off_ratio: float = _OFF_RATIO,
    confirm: Optional[str] = _CONFIRM,
    min_duration: float = _MIN_DURATION,
    merge_gap: float = _MERGE_GAP,
    allow: list[str] = typer.Option([], "--allow", help="Only these labels (repeatable, or comma-separated)."),
    deny: list[str] = typer.Option([], "--deny", help="Never these labels (repeatable, or comma-separated)."),
    collar: float = typer.Option(0.2, "--collar", help="Event-based F1: onset collar in seconds (DCASE: 0.2)."),
    offset_percentage: float = typer.Option(0.2, "--offset-percentage", help="Offset collar: max(collar, this x the "
                                            "event's length) (DCASE: 0.2)."),
    segment: float = typer.Option(1.0, "--segment", help="Segment-based F1: segment length in seconds."),
    backend: str = typer.Option("auto", "--backend", help=_BACKEND_HELP),
    estimated_csv: Optional[Path] = typer.Option(None, "--events-csv", help="Also write the detected events as CSV."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Score the event decision layer against true events: event-based F1 (DCASE collars), segment F1,
    duplicates per true event and decision latency."""
    from astedge.audio import audio_info
    from astedge.backends import stream_hop
    from astedge.evaluation import evaluate_events, read_truth
    from astedge.events import write_events_csv
    from astedge.scores import Smoother, label_mask
    from astedge.windows import Windowing

    for path in audio:
        audio_info(path)
    table = read_truth(truth, audio)
    net = _load_backend(model, backend, "auto")
    try:
        windowing = Windowing.from_seconds(net.feature_config, window, hop, default_hop=stream_hop(model))
        mask = label_mask(net.labels, allow, deny)
        config = _event_config(model, net.labels, threshold, thresholds, off_ratio, confirm, min_duration, merge_gap)
        Smoother(smoothing, smoothing_windows)  # a bad option fails before any work
        report = evaluate_events(net, audio, table, windowing, config, mask=mask,
                                 smoother_factory=lambda: Smoother(smoothing, smoothing_windows), t_collar=collar,
                                 percentage_of_length=offset_percentage, segment=segment)
    finally:
        net.close()
    report["settings"] = {**windowing.describe(), "smoothing": smoothing, "smoothing_windows": smoothing_windows,
                          "threshold": config.threshold, "per_class_thresholds": len(config.thresholds),
                          "off_ratio": off_ratio, "confirm": [config.confirm, config.confirm_window],
                          "min_duration": min_duration, "merge_gap": merge_gap}
    if estimated_csv is not None:
        from astedge.events import Event

        write_events_csv(estimated_csv, [Event(label, 0, onset, onset, "", 0.0, offset=offset, file=name)
                                         for name, rows in report["estimated"].items() for onset, offset, label in rows])
    if as_json:
        _print_json(report)
        return
    e, g, d, lat = (report["event_based"], report["segment_based"], report["detections_per_true_event"],
                    report["decision_latency_s"])
    typer.echo(f"{report['true_events']} true events, {report['detected_events']} detected in "
               f"{report['audio_seconds']:.1f} s of audio ({report['files']} file(s))")
    typer.echo(f"event-based F1 {e['f1']:.3f} (precision {e['precision']:.3f}, recall {e['recall']:.3f}; collars "
               f"{collar:g} s / max({collar:g} s, {offset_percentage:.0%}))")
    typer.echo(f"segment-based F1 {g['f1']:.3f} ({segment:g} s segments), error rate {g['error_rate']:.3f}")
    typer.echo(f"detections per true event {d['mean']:.2f} ({d['duplicated']} true events detected more than once)")
    if lat["p50"] is not None:
        typer.echo(f"decision latency p50 {lat['p50']:.2f} s, p90 {lat['p90']:.2f} s ({lat['missed']} missed)")


@app.command(epilog="Example: astedge frontier runs/teacher/best.safetensors runs/student/export "
                    "runs/student/export/model.int8.onnx --eval speech_commands/ --min-accuracy 0.9 -o frontier.md "
                    "--plot frontier.png")
def frontier(
    candidates: list[Path] = typer.Argument(..., help="Models to compare: checkpoints, export folders, or one .onnx "
                                            "of an export (model.fp16.onnx, model.int8.onnx)."),
    eval_data: Path = typer.Option(..., "--eval", help="Labelled data to score them on (its test split, else val)."),
    split: Optional[str] = typer.Option(None, "--split", help="Which split to score on (default test, else val)."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Name the fastest candidate at or "
                                                 "above this accuracy (mAP for multi-label data)."),
    rounds: int = typer.Option(10, "--rounds", min=1, help="Timed round-robin rounds on this CPU."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="ONNX Runtime intra-op threads."),
    output: list[Path] = typer.Option([], "-o", "--output", help="Also write the report: .json or .md (repeatable)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write accuracy vs latency (Pareto front) as a PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Accuracy on your data against measured CPU latency (and estimated Jetson latency) for each candidate."""
    from astedge import frontier as fr
    from astedge.bench_report import require_matplotlib
    from astedge.files import atomic_write

    for target in output:
        if target.suffix not in (".json", ".md"):
            raise UserError("--output writes .json or .md", target)
    if plot is not None:
        require_matplotlib()
    report = fr.frontier(candidates, eval_data, split=split, rounds=rounds, threads=threads,
                         min_accuracy=min_accuracy, log=log_line)
    for target in output:
        with atomic_write(target, "w") as handle:
            handle.write(json.dumps(report, indent=2) + "\n" if target.suffix == ".json" else fr.markdown(report))
    if plot is not None:
        with atomic_write(plot) as handle:
            fr.plot(report, handle)
    if as_json:
        _print_json(report)
    else:
        Console().print(fr.markdown(report), markup=False, highlight=False, soft_wrap=True)


@app.command(epilog="Example: astedge bench --model ast-audioset/ --backend all --batch 1,8,32 -o bench.json "
                    "--plot bench.png   (without --model: a random-weight AST of --size, latency only)")
def bench(
    model: Optional[Path] = typer.Option(None, "-m", "--model", help="Export folder, its astedge.json or model.onnx, "
                                         "or a .safetensors checkpoint (default: a random-weight AST of --size, "
                                         "exported to a temp folder: latency only)."),
    size: Optional[str] = typer.Option(None, "--size", help="Without --model: tiny, small or base (default base)."),
    frames: Optional[int] = typer.Option(None, "--frames", min=16, help="Without --model: input frames (default 1024, "
                                         "a 10 s window; 512 = 5 s as ESC-50, 128 = 1 s as Speech Commands)."),
    backend: str = typer.Option("all", "--backend", help="all (every backend that loads here; the others are listed "
                                "with why), or comma-separated: tensorrt, onnxruntime-cpu, onnxruntime-cuda, "
                                "onnxruntime-tensorrt, torch, auto, onnxruntime."),
    batch: str = typer.Option("1", "--batch", help="Batch sizes, comma-separated, e.g. 1,8,32."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32 or fp16 (ONNX Runtime: which ONNX file; "
                                  "TensorRT: must match the engine)."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed rounds per batch size."),
    iters: Optional[int] = typer.Option(None, "--iters", min=1, help="Timed rounds per batch size (default: as many "
                                        "as fit in --seconds, at least 10)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Time each batch size for at least this long "
                                            "(default 5)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch and ONNX Runtime intra-op threads "
                                          "(default: each library's own)."),
    pause_ms: float = typer.Option(50.0, "--pause-ms", min=0, help="Pause before each backend's turn so the previous "
                                   "runtime's spinning threads go idle; 0 runs calls back to back."),
    profile: str = typer.Option("workstation", "--profile", help="Without --model: the profile the random model is "
                                "exported (and its TensorRT engine built) with."),
    output: list[Path] = typer.Option([], "-o", "--output", help="Also write the report: .json (everything, "
                                      "samples included) or .md (header and table); repeatable."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the latency distributions per backend "
                                        "(violin + box) as a PNG (needs matplotlib)."),
    stream: bool = typer.Option(False, "--stream", help="Also time live windows mic-to-decision (capture buffer + "
                                "features + inference + decision) for --window/--hop/--smoothing."),
    window: Optional[float] = typer.Option(None, "--window", help="--stream: window in seconds (default: the model's)."),
    hop: Optional[float] = typer.Option(None, "--hop", help="--stream: seconds between windows (default 1)."),
    smoothing: str = _SMOOTHING,
    smoothing_windows: int = _SMOOTHING_WINDOWS,
    block_ms: float = typer.Option(50.0, "--block-ms", help="--stream: audio the capture buffers before delivering it "
                                   "(PortAudio's high latency: about 50 ms)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Time audio -> fbank, fbank -> logits and the whole window on each backend, with what makes it reproducible."""
    from astedge import bench as benchmarks
    from astedge import bench_report
    from astedge.files import atomic_write

    if model is not None and (size is not None or frames is not None):
        raise UserError("--size and --frames shape the random model built without --model; they do not apply to --model")
    for target in output:
        if target.suffix not in (".json", ".md"):
            raise UserError("--output writes .json or .md", target)
    for target in (*output, plot):
        if target is not None and not target.parent.is_dir():
            raise UserError("its folder does not exist", target)
    if plot is not None:
        bench_report.require_matplotlib()
    report = benchmarks.benchmark(
        model, size=size or "base", frames=frames or 1024, backends=backend, batches=batch, precision=precision, warmup=warmup, iters=iters,
        seconds=seconds, threads=threads, pause_ms=pause_ms, profile=profile,
        stream=dict(window=window, hop=hop, smoothing=(smoothing, smoothing_windows), block_ms=block_ms)
        if stream else None, log=lambda message: log_line(message, style="dim"))
    for target in output:
        with atomic_write(target, "w") as handle:
            handle.write(json.dumps(report, indent=2) + "\n" if target.suffix == ".json" else bench_report.markdown(report))
    if plot is not None:
        bench_report.plot(report, plot)
    if as_json:
        _print_json(report)
        return
    from rich import box

    console = Console()
    for line in bench_report.header_lines(report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for entry in report["backends"]:
        table = Table("batch", "stage", "mean", "p50", "p90", "p99", "min", "max", "clips/s", "x RT",
                      box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, title_justify="left",
                      title=f"{entry['name']} ({entry['precision']}, {entry['device']}; fbank: {entry['fbank']}), ms")
        for r in (r for r in bench_report.rows(report) if r["backend"] == entry["name"]):
            table.add_row(str(r["batch"]), bench_report.STAGE_SHORT[r["stage"]],
                          *(bench_report.format_ms(r[k]) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms",
                                                                   "max_ms")),
                          bench_report.format_rate(r["throughput_clips_s"]), bench_report.format_rate(r["x_realtime"]))
        console.print(table)
    for entry in report.get("stream", []):
        m = entry["mic_to_decision_ms"]
        console.print(f"stream {entry['backend']}: {entry['window_s']:g} s windows every {entry['hop_s']:g} s, smoothing "
                      f"{entry['smoothing'][0]}: mic-to-decision p50 {m['p50']:.2f} ms, p90 {m['p90']:.2f} ms (capture "
                      f"{entry['capture_buffer_ms']:g} + features {entry['features_ms']['p50']:.2f} + inference "
                      f"{entry['inference_ms']['p50']:.2f} + decision {entry['decision_ms']['p50']:.3f} ms, p50)",
                      markup=False, highlight=False, soft_wrap=True)
    for missing in report["unavailable"]:
        console.print(f"not measured: {missing['backend']}: {missing['reason']}", markup=False, highlight=False,
                      soft_wrap=True, style="dim")


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        app()
    except UserError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
