"""Commands that make models: train, distill, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from astedge.cli.app import app, log_line, print_json
from astedge.cli.common import parse_sets


@app.command(epilog="Example: astedge train speech_commands/ -o runs/kws --preset speechcommands --model tiny "
                    "--teacher timm:resnet18   (fine-tune: --init runs/other/best.safetensors; your rooms and noise: "
                    "--rir irs/ --noise noises/; any field: --set lr=3e-4 --set augment.snr_db=0,20)")
def train(
    data: Path = typer.Argument(..., help="Dataset: class folders, a CSV manifest, a strong-label TSV, ESC-50 or Speech Commands v2."),
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
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Waveform augmentation (noise, rooms, "
                                           "band, speed, pitch, shift, gain) per epoch; default: the recipe's (on in "
                                           "the from-scratch and fine-tuning variants, off in AST's published ones)."),
    noise: Optional[Path] = typer.Option(None, "--noise", help="Folder of noise recordings to mix in (instead of "
                                         "generated coloured noise); turns augmentation on."),
    rir: Optional[Path] = typer.Option(None, "--rir", help="Folder of room impulse responses (instead of synthesized "
                                       "rooms); turns augmentation on."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder for a feature cache (raw log-mel per file)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON file of recipe values."),
    set_values: list[str] = typer.Option([], "--set", help="Override any recipe field: --set lr=1e-4 (repeatable)."),
    fold: int = typer.Option(1, "--fold", help="ESC-50: the held-out fold (1-5)."),
    label_file: Optional[Path] = typer.Option(None, "--labels", help="Manifests: label CSV (index,mid,display_name)."),
    strong: Optional[Path] = typer.Option(None, "--strong", help="Strong labels: a DCASE TSV (filename, onset, "
                                          "offset, event_label) of the clips' event boundaries (default: DATA's "
                                          "strong.tsv); a frame head trains on them."),
    background: Optional[str] = typer.Option(None, "--background-class", help="The label that means \"nothing\" "
                                             "(never an event; default: background, _background_noise_ or "
                                             "_silence_ when DATA has one)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="A column of the CSV manifest (speaker, device, "
                                           "room) whose groups are scored apart on the test split (else val)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUTPUT from its last epoch."),
    force: bool = typer.Option(False, "--force", help="Start over in an OUTPUT that holds a run."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON."),
) -> None:
    """Train an AST on your labelled audio (from scratch, from a checkpoint, or with a CNN teacher) into a
    self-describing checkpoint; says when a run is not learning."""
    from astedge.data.datasets import read_dataset
    from astedge.train.recipes import augment_options, load_recipe, parse_stride
    from astedge.train.loop import train as run_training

    overrides = parse_sets(set_values)
    overrides.update({k: v for k, v in dict(model=model, epochs=epochs, init=init, patch_size=patch,
                                            pos_embed=pos_embed, teacher=teacher).items() if v is not None})
    overrides.update(augment_options(augment, noise, rir))
    if stride is not None:
        overrides["fstride"], overrides["tstride"] = parse_stride(stride)
    recipe = load_recipe(preset, config, overrides)
    dataset = read_dataset(data, fold=fold, label_file=label_file, val_fraction=recipe.val_fraction, seed=recipe.seed,
                           strong=strong, background=background, group_by=group_by)
    recipe = load_recipe(preset, config, overrides, train_clips=len(dataset.splits.get("train", [])))
    result = run_training(dataset, output, recipe, resume=resume, force=force, cache_dir=cache, log=log_line)
    if as_json:
        print_json(result.summary())
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
    from astedge.runtime.model_path import model_configs
    from astedge.train.distill import distill as run_distill
    from astedge.train.recipes import distill_recipe, parse_stride

    overrides = parse_sets(set_values)
    overrides.update({k: v for k, v in dict(model=model, depth=depth, patch_size=patch, target_length=target_length,
                                            epochs=epochs).items() if v is not None})
    if stride is not None:
        overrides["fstride"], overrides["tstride"] = parse_stride(stride)
    _, teacher_features = model_configs(teacher)
    recipe = distill_recipe(teacher_features.window_seconds, preset, overrides)
    report = run_distill(teacher, audio, output, recipe, labelled=labelled, eval_data=eval_data, resume=resume,
                         force=force, log=log_line)
    if as_json:
        print_json(report)
    else:
        a = report["agreement"]
        typer.echo(f"{report['student']}: agrees with the teacher on {a['held_out']:.1%} of {a['clips']} held-out clips "
                   f"({a['metric']})")


@app.command(epilog="Example: astedge demo --out demo   (a more accurate model in about 4 minutes: --epochs 20)")
def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for the data, the run and the exported model."),
    seed: int = typer.Option(0, "--seed", help="Data and training seed."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Training epochs (default: the demo recipe's "
                                         "12, about 3 minutes in all on 2 CPU cores; each more costs about 10 s)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Synthesize data, train a tiny AST with a frame head on the CPU, export it and find the events of a labelled
    recording it never heard."""
    from astedge.demo import run_demo

    summary = run_demo(out, seed=seed, epochs=epochs, log=log_line)
    if as_json:
        print_json(summary)
        return
    t, events = summary["timings"], summary["events"]
    typer.echo(f"held-out accuracy   {summary['held_out_accuracy']:.1%} on {summary['held_out_clips']} clips")
    typer.echo(f"events              F1 {events['event_f1']:.3f} (DCASE collars; precision {events['precision']:.3f}, "
               f"recall {events['recall']:.3f}; {events['detected_events']} found for {events['true_events']} true) "
               f"in {Path(summary['exported']['folder']).parent / 'data' / 'stream.wav'}, never heard, with the "
               "export's defaults")
    psds1 = events["psds1"]
    typer.echo(f"                    PSDS1 {psds1:.3f}" if psds1 is not None else "                    PSDS1 -")
    latency = events["decision_latency_p50_s"]
    typer.echo(f"decision latency    p50 {'-' if latency is None else f'{latency:.2f}'} s; window {events['window_ms_p50']:.1f} ms "
               f"every {events['hop_seconds']:g} s ({events['backend']})")
    typer.echo(f"time                {t['total_s']:.0f} s (synthesis {t['synthesize_s']:.0f} s, training {t['train_s']:.0f} s); "
               f"model {summary['exported']['folder']}")


