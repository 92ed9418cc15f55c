"""Commands that score a model on labelled audio: calibrate (per-class thresholds), evaluate (events vs the truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from astedge.errors import UserError
from astedge.cli.app import app, log_choice, log_line, print_json, print_record, progress
from astedge.cli.common import MODEL, model_path, refuse_positional_model
from astedge.cli.options import DECISION, RUNNING, WINDOWS, classifier_options, grouped
from astedge.cli.records import class_table

CALIBRATE_USAGE = "astedge calibrate DATA -m MODEL -o thresholds.json"
EVALUATE_USAGE = "astedge evaluate AUDIO... -m MODEL --truth CSV  (or: astedge evaluate DATA -m MODEL)"


@app.command(epilog="Example: astedge calibrate speech_commands/ -m runs/kws/best.safetensors -o thresholds.json   "
                    "(then: astedge export -m MODEL -o DIR --thresholds thresholds.json; --target-precision 0.95 for "
                    "fewer false alarms)")
@grouped
def calibrate(
    data: Path = typer.Argument(..., help="Labelled audio: class folders, a CSV manifest, ESC-50 or Speech Commands."),
    extra: Optional[Path] = typer.Argument(None, hidden=True),  # the DATA of the old `calibrate MODEL DATA`
    model: Optional[Path] = MODEL,
    output: Path = typer.Option(..., "-o", "--output", help="The thresholds file to write (JSON)."),
    split: str = typer.Option("val", "--split", help="Which split to calibrate on: val (held out from training) or test."),
    target_precision: Optional[float] = typer.Option(None, "--target-precision", help="Per class, the lowest "
                                                     "threshold reaching this precision (the most recall at it); "
                                                     "default: maximize F1."),
    label_file: Optional[Path] = typer.Option(None, "--labels", help="Manifests: label CSV (index,mid,display_name)."),
    running: dict = RUNNING,
    as_json: bool = typer.Option(False, "--json", help="Print the thresholds and per-class figures as JSON."),
) -> None:
    """Pick per-class event thresholds on labelled clips (max F1, or a target precision) for --events."""
    from astedge.data.datasets import read_dataset
    from astedge.measure.evaluation import calibrate_thresholds, check_target_precision
    from astedge.runtime.classifier import Classifier, ClassifierOptions
    from astedge.runtime.events import write_thresholds

    if extra is not None:
        refuse_positional_model([data], CALIBRATE_USAGE)
        raise UserError(f"calibrate takes one DATA (a dataset folder or manifest), got {data} and {extra}")
    _refuse_score_as_precision(running["precision"])
    check_target_precision(target_precision)
    model = model_path(model)
    if not output.parent.is_dir():
        raise UserError("its folder does not exist", output)
    dataset = read_dataset(data, label_file=label_file)
    with Classifier.from_options(model, ClassifierOptions(**running), log=log_choice) as classifier, \
            progress(f"scoring {split} clips", None) as advance:
        result = calibrate_thresholds(classifier, dataset, split, target_precision=target_precision, log=log_line,
                                      progress=advance)
    write_thresholds(output, result["thresholds"], model=str(model), data=str(data), split=split,
                     method=result["method"], clips=result["clips"], classes=result["classes"])
    if as_json:
        print_json({"output": str(output), **result})
        return
    table = Table("label", "threshold", "precision", "recall", "F1", "positives", box=None)
    for label, row in result["classes"].items():
        table.add_row(escape(label), f"{result['thresholds'][label]:.3f}", f"{row['precision']:.3f}",
                      f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["positives"]))
    Console().print(table)
    typer.echo(f"{output}: {len(result['thresholds'])} thresholds ({result['method']}, {result['clips']} {split} clips)")


def _refuse_score_as_precision(precision: str) -> None:
    """calibrate's --precision was the target precision score before it became the model's precision."""
    try:
        float(precision)
    except ValueError:
        return
    raise UserError(f"--precision is the model's precision (auto, fp32, fp16, int8); for a target precision of "
                    f"{precision} pass --target-precision {precision}")


@app.command(epilog="Example: astedge evaluate demo/data/stream.wav -m demo/export --truth demo/data/stream.csv "
                    "--hop 0.1 --json   (several files: a truth table with a file column)   Clips: astedge evaluate "
                    "clips.csv -m runs/kws/best.safetensors --split test --group-by speaker")
@grouped
def evaluate(
    audio: list[Path] = typer.Argument(..., help="Recordings to detect events in (with --truth), or one labelled "
                                       "dataset (class folders, a CSV manifest, ESC-50, Speech Commands) to score its "
                                       "clips."),
    model: Optional[Path] = MODEL,
    truth: Optional[Path] = typer.Option(None, "--truth", help="CSV [file,]onset,offset,label (what --events-csv "
                                         "writes) or DCASE TSV filename onset offset event_label of the true events."),
    split: str = typer.Option("all", "--split", help="Datasets: the split to score (all, train, val, test)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Datasets: a column of the CSV manifest (speaker, "
                                           "device, room) whose values are scored apart."),
    windows: dict = WINDOWS.but(top_k=None, threshold=(Optional[float], typer.Option(
        None, "--threshold", help="On-threshold of classes without their own (0.5)."))),
    decision: dict = DECISION,
    collar: float = typer.Option(0.2, "--collar", help="Event-based F1: onset collar in seconds (DCASE: 0.2)."),
    offset_percentage: float = typer.Option(0.2, "--offset-percentage", help="Offset collar: max(collar, this x the "
                                            "event's length) (DCASE: 0.2)."),
    segment: float = typer.Option(1.0, "--segment", help="Segment-based F1: segment length in seconds."),
    running: dict = RUNNING,
    estimated_csv: Optional[Path] = typer.Option(None, "--events-csv", help="Also write the detected events as CSV "
                                                 "(it reads back as --truth)."),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines: an \"event\" record per detected event, a "
                                 "\"class\" record per class, then the \"summary\" record (figures and settings); a "
                                 "dataset: one JSON object."),
) -> None:
    """Score the event decision layer against true events: event-based F1 (DCASE collars), segment F1,
    duplicates per true event and decision latency, overall and per class. Given a dataset instead (no --truth):
    its clips' accuracy (mAP for multi-label data), overall, per class and per --group-by subgroup."""
    from astedge.audio.decode import audio_info
    from astedge.measure.evaluation import evaluate_events, read_truth
    from astedge.runtime.classifier import Classifier
    from astedge.runtime.events import write_events_csv

    refuse_positional_model(audio, EVALUATE_USAGE)
    model = model_path(model)
    if truth is None:
        return _evaluate_clips(audio, model, split, group_by, running, as_json)
    if group_by is not None or split != "all":
        raise UserError("--split and --group-by score a dataset's clips; with --truth, evaluate scores events")
    for path in audio:
        audio_info(path)
    table = read_truth(truth, audio)
    if estimated_csv is not None and not estimated_csv.parent.is_dir():
        raise UserError("its folder does not exist", estimated_csv)
    options = classifier_options(windows, decision, running, events=True, top_k=1, max_seconds=None)
    with Classifier.from_options(model, options, log=log_choice) as classifier:
        report = evaluate_events(classifier, audio, table, t_collar=collar, percentage_of_length=offset_percentage,
                                 segment=segment)
    if estimated_csv is not None:
        write_events_csv(estimated_csv, report["events"])
    events, classes = report.pop("events"), report.pop("classes")
    if as_json:
        for record in events:
            print_record(record)
        for label, row in classes.items():
            print_record({"type": "class", "label": label, **row})
        print_record({"type": "summary", **report})
    else:
        _print_report(report, classes)


def _evaluate_clips(paths: list[Path], model: Path, split: str, group_by: Optional[str], running: dict,
                    as_json: bool) -> None:
    """evaluate DATA: a labelled dataset's clips, overall, per class and per subgroup."""
    from astedge.data.datasets import read_dataset
    from astedge.measure.evaluation import evaluate_clips
    from astedge.runtime.classifier import Classifier, ClassifierOptions

    if len(paths) != 1 or not (paths[0].is_dir() or paths[0].suffix.lower() in (".csv", ".tsv")):
        raise UserError("evaluate needs --truth (the true events of the recordings), or one labelled dataset (a "
                        "folder or manifest) to score its clips")
    data = read_dataset(paths[0], group_by=group_by)
    if split != "all" and split not in data.splits:
        raise UserError(f"the dataset has no {split!r} split (it has {', '.join(data.splits)}; or --split all)",
                        paths[0])
    with Classifier.from_options(model, ClassifierOptions(**running), log=log_choice) as classifier, \
            progress(f"scoring {split} clips", None) as advance:
        report = evaluate_clips(classifier, data, split, log=log_line, progress=advance)
    if as_json:
        print_json(report)
        return
    metric = "accuracy" if "mAP" not in report else "mAP"
    typer.echo(f"{paths[0]}: {metric} {report[metric]:.4f} on {report['clips']} {split} clips")
    for title, rows in (("class", report.get("classes")), (group_by, report.get("groups"))):
        if rows:
            table = Table(title, metric, "clips", box=None)
            for name, row in rows.items():
                table.add_row(escape(str(name)), f"{row[metric]:.4f}", str(row["clips"]))
            Console().print(table)


def _print_report(report: dict, classes: dict) -> None:
    """evaluate's human view: the figures, then the per-class table."""
    e, g, d, lat = (report["event_based"], report["segment_based"], report["detections_per_true_event"],
                    report["decision_latency_s"])
    typer.echo(f"{report['true_events']} true events, {report['detected_events']} detected in "
               f"{report['audio_seconds']:.1f} s of audio ({report['files']} file(s))")
    typer.echo(f"event-based F1 {e['f1']:.3f} (precision {e['precision']:.3f}, recall {e['recall']:.3f}; collars "
               f"{e['t_collar']:g} s / max({e['t_collar']:g} s, {e['percentage_of_length']:.0%}))")
    typer.echo(f"segment-based F1 {g['f1']:.3f} ({g['segment_seconds']:g} s segments), error rate "
               f"{g['error_rate']:.3f}")
    typer.echo(f"detections per true event {d['mean']:.2f} ({d['duplicated']} true events detected more than once)")
    if lat["p50"] is not None:
        typer.echo(f"decision latency p50 {lat['p50']:.2f} s, p90 {lat['p90']:.2f} s ({lat['missed']} missed)")
    Console().print(class_table(classes))
