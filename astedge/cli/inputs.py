"""Commands about inputs: the machine (doctor), features, checkpoints (import, predict), data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from astedge.errors import UserError
from astedge.cli.app import app, log_choice, print_json, progress
from astedge.cli.common import MODEL, model_path
from astedge.cli.options import RUNNING, grouped


@app.command(epilog="Example: astedge doctor --json > machine.json")
def doctor(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Report versions, GPUs, the CUDA fbank library, microphones and usable backends."""
    from astedge.measure.doctor import report

    data = report()
    if as_json:
        print_json(data)
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


@app.command(epilog="Example: astedge features dog_bark.wav -o dog_bark.npy   (-m MODEL: the features that model sees; "
                    "--raw: log-mel before padding)")
def features(
    audio: Path = typer.Argument(..., help="Audio file (WAV, FLAC, OGG, ...; any rate and channel count)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the float32 \\[frames, mel] .npy array."),
    model: Optional[Path] = typer.Option(None, "-m", "--model", help="Write the features this model sees: its "
                                         "feature config and input length (default: $ASTEDGE_MODEL; without either: "
                                         "AST's AudioSet features, 1024 frames)."),
    raw: bool = typer.Option(False, "--raw", help="Write log-mel energies before padding and normalization."),
    target_length: Optional[int] = typer.Option(None, "--target-length", min=1, help="Without a model: frames to "
                                                "pad/crop to (default: the dataset's, 1024)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Without a model: normalization statistics: "
                                          "audioset (default), esc50, speechcommands."),
    max_seconds: float = typer.Option(3600.0, "--max-seconds", help="Refuse longer files."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
) -> None:
    """Compute the exact features AST was trained on (Kaldi fbank, 128 mel, 25/10 ms) for one file, or those a
    given model sees."""
    import numpy as np

    from astedge.audio import decode as audio_io
    from astedge.features import fbank as feats
    from astedge.files import atomic_write

    model = model_path(model, required=False)
    config = _feature_config(model, dataset, target_length)
    if output.exists() and audio.exists() and output.samefile(audio):
        raise UserError("is the input audio; give the features another path with -o", output)
    if output.is_file() and not force:
        raise UserError("exists; pass --force to replace it", output)
    wave = audio_io.load_audio(audio, config.sample_rate, max_seconds=max_seconds)
    feats.frames_or_error(len(wave), config, audio)
    logmel = feats.fbank(wave, config)
    result = logmel if raw else feats.normalize(feats.pad_or_crop(logmel, config.target_length), config)
    with atomic_write(output) as handle:
        np.save(handle, np.ascontiguousarray(result, dtype=np.float32))
    summary = {"file": str(audio), "output": str(output), "model": None if model is None else str(model),
               "seconds": len(wave) / config.sample_rate, "frames": int(logmel.shape[0]), "shape": list(result.shape),
               "raw": raw, "target_length": config.target_length,
               "normalization": {"mean": config.mean, "std": config.std}}
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"{output}: {result.shape[0]} x {result.shape[1]} float32 "
                   f"({summary['seconds']:.2f} s, {summary['frames']} frames{', raw log-mel' if raw else ''})")


def _feature_config(model: Optional[Path], dataset: Optional[str], target_length: Optional[int]):
    """The model's feature config (its own dataset statistics and input length), else AST's with --dataset and
    --target-length."""
    import dataclasses

    from astedge.features import fbank as feats

    if model is not None:
        if dataset is not None or target_length is not None:
            raise UserError(f"--dataset and --target-length describe features without a model; the model {model} "
                            "fixes both (unset ASTEDGE_MODEL, or leave them out)")
        from astedge.runtime.model_path import model_configs

        return model_configs(model)[1]
    config = feats.DEFAULT.with_dataset(dataset or "audioset")
    return config if target_length is None else dataclasses.replace(config, target_length=target_length)


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
    from astedge.model.checkpoint import save_checkpoint
    from astedge.model.importer import import_source
    from astedge.model.labels import read_labels

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
        print_json(summary)
    else:
        typer.echo(f"{output}: AST {cfg.embed_dim}-d x {cfg.depth} layers, strides {cfg.fstride}/{cfg.tstride}, "
                   f"input {cfg.target_length} x {cfg.num_mel_bins}, {cfg.num_classes} classes ({result.task}) "
                   f"from {summary['source_format']}")


@app.command(epilog="Example: astedge predict dog_bark.wav -m ast-audioset.safetensors --top-k 5   "
                    "(or an export folder: -m ast-audioset/)")
@grouped
def predict(
    audio: Path = typer.Argument(..., help="Audio file (WAV, FLAC, OGG, ...; any rate and channel count)."),
    model: Optional[Path] = MODEL,
    top_k: int = typer.Option(5, "-k", "--top-k", min=1, help="How many classes to print."),
    max_seconds: float = typer.Option(3600.0, "--max-seconds", help="Refuse longer files."),
    running: dict = RUNNING,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Tag one audio file: the top labels of its first window (the model's input length, as AST's inference.py);
    classify covers a whole file in sliding windows."""
    from astedge.runtime.predict import predict_file

    result = predict_file(audio, model_path(model), k=top_k, max_seconds=max_seconds, log=log_choice, **running)
    if as_json:
        print_json(result)
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
    from astedge.data import synth

    synth.check_classes(classes)
    with progress("synthesizing", classes * per_class) as advance:
        summary = synth.write_dataset(out, classes, per_class, seconds, seed, progress=advance)
    result = {"root": str(summary.root), "classes": summary.classes, "clips": summary.clips,
              "stream": str(summary.stream), "stream_truth": str(summary.stream_truth)}
    if as_json:
        print_json(result)
    else:
        typer.echo(f"{out}: {summary.clips} clips of {len(summary.classes)} classes, stream {summary.stream.name} "
                   f"with ground truth {summary.stream_truth.name}")




@data_app.command("events", epilog="Example: astedge data events long-stream --seconds 300 --rate 44100 --seed 1   "
                                   "(then: astedge evaluate long-stream.wav -m MODEL --truth long-stream.csv --hop 0.1)")
def data_events(
    out: Path = typer.Argument(..., help="Path stem: writes OUT.wav and OUT.csv (onset,offset,label)."),
    seconds: float = typer.Option(300.0, "--seconds", help="Length of the recording."),
    rate: int = typer.Option(48000, "--rate", help="Sample rate it is made at (as a recorder would: 44100, 48000)."),
    seed: int = typer.Option(0, "--seed", help="Everything derives from this seed."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Write a long labelled recording for event detection: the demo classes' events (0.3-5 s) between gaps and
    distractors, over a noise bed; its truth is what `astedge evaluate --truth` reads."""
    from astedge.data import synth

    if not seconds >= 10 or rate < 8000:
        raise UserError(f"--seconds must be >= 10 and --rate >= 8000, got {seconds} and {rate}")
    wav, truth = synth.write_event_stream(out, seconds=seconds, rate=rate, seed=seed)
    events = sum(1 for _ in truth.open()) - 1
    if as_json:
        print_json({"audio": str(wav), "truth": str(truth), "events": events, "seconds": seconds, "rate": rate})
    else:
        typer.echo(f"{wav}: {seconds:g} s at {rate} Hz with {events} events; truth {truth}")
