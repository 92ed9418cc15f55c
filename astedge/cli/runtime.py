"""Commands that run models on audio: listen, classify, calibrate, evaluate.

Each parses its options into :class:`astedge.runtime.classifier.ClassifierOptions` (:mod:`astedge.cli.options`),
runs the :class:`~astedge.runtime.classifier.Classifier` and prints what it returns.
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

from astedge.errors import UserError
from astedge.cli.app import app, err_console, log_line, print_json
from astedge.cli.common import MODEL_HELP, EventOutput, model_path, window_line
from astedge.cli.options import BACKEND, DECISION, EVENT_OUTPUT, RUNNING, WINDOWS, classifier_options, grouped


def _log_choice(line: str) -> None:
    log_line(line, style="dim")


@app.command(epilog="Example: astedge listen --model ast-audioset/ --hop 1 --smoothing ema   "
                    "(without a microphone: astedge listen --model ast-audioset/ --source street.wav --realtime --json; "
                    "arecord -f S16_LE -r 16000 -c 1 -t raw | astedge listen -m ast-audioset/ --source - --realtime)")
@grouped
def listen(
    model: Optional[Path] = typer.Option(None, "-m", "--model", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="Microphone: index or part of its name "
                                         "(astedge doctor lists them); default: the system's input."),
    windows: dict = WINDOWS,
    outputs: dict = EVENT_OUTPUT,
    decision: dict = DECISION,
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
    running: dict = RUNNING,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per window and a final {\"summary\": ...} "
                                 "(with --events, the event lines too)."),
) -> None:
    """Classify live audio in sliding windows: microphone, a file replayed in real time, or raw PCM on stdin;
    with --events, report sound events (start and end) instead of windows."""
    from astedge.runtime.classifier import Classifier

    open_source = _source_opener(source, device, realtime, speed, rate, channels, pcm_format)
    options = classifier_options(windows, decision, running, outputs=outputs, partial=partial, duration=duration)
    with Classifier.from_options(model_path(model), options, log=_log_choice) as classifier:
        output = EventOutput(**outputs)
        listener = classifier.listen(open_source(classifier.backend.feature_config.sample_rate))
        interrupted = _run_listener(listener, output, as_json)
    output.detected += listener.decision.detected
    _print_summary({**listener.summary(), **output.close(), "interrupted": interrupted}, as_json)


def _run_listener(listener, output: EventOutput, as_json: bool) -> bool:
    """Run the stream to its end or Ctrl-C (then True), showing each window as it is ready (JSON lines, the live
    terminal view or text lines) and emitting event records as they come."""
    from astedge.runtime.views import render

    console, name = Console(), listener.source.name
    try:
        listener.start()
        if as_json or output.print_lines:
            for result in listener.results():
                if as_json:
                    sys.stdout.write(json.dumps(result.to_dict()) + "\n")
                    sys.stdout.flush()
                output.emit(result.events)
        elif console.is_terminal:
            from rich.live import Live

            with Live(render(None, listener.summary(), name), console=console, refresh_per_second=8) as live:
                for result in listener.results():
                    live.update(render(result, listener.summary(), name))
                    output.emit(result.events)
        else:
            for result in listener.results():
                typer.echo(window_line(result))
                output.emit(result.events)
    except KeyboardInterrupt:
        listener.stop()
        return True
    finally:
        listener.close()
        output.emit(listener.finish_events())
    return False


def _source_opener(source, device, realtime, speed, rate, channels, pcm_format):
    """A function of the model's sample rate that opens the source the flags name (checked now, before any work)."""
    from astedge.audio import capture

    if source is None and (realtime or speed is not None):
        raise UserError("--realtime and --speed apply to --source (a microphone is always real time)")
    if source != "-" and (rate is not None or channels is not None or pcm_format is not None):
        raise UserError("--rate, --channels and --format describe raw PCM on stdin (--source -)")
    if source is not None and device is not None:
        raise UserError("--device selects a microphone; it cannot be combined with --source")
    if speed is not None and not realtime:
        raise UserError("--speed paces a --realtime replay; add --realtime")
    if source == "-":
        return lambda model_rate: capture.PcmSource(rate=rate or 16000, channels=channels or 1,
                                                    fmt=pcm_format or "s16le", live=realtime)
    if source is not None:
        return lambda model_rate: capture.FileSource(source, realtime=realtime, speed=speed or 1.0)
    return lambda model_rate: capture.MicrophoneSource(device, rate=model_rate)


def _print_summary(summary: dict, as_json: bool) -> None:
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
@grouped
def classify(
    audio: list[Path] = typer.Argument(..., help="Audio files (WAV, FLAC, OGG, ...; any rate and channel count)."),
    model: Optional[Path] = typer.Option(None, "-m", "--model", help=MODEL_HELP),
    windows: dict = WINDOWS.but(
        top_k=(int, typer.Option(5, "-k", "--top-k", min=1, help="Labels per window and per file.")),
        hop=(Optional[float], typer.Option(None, "--hop", help="Seconds between windows (default: half the window)."))),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Windows per backend call."),
    outputs: dict = EVENT_OUTPUT,
    decision: dict = DECISION,
    max_seconds: float = typer.Option(3600.0, "--max-seconds", help="Refuse longer files."),
    running: dict = RUNNING,
    as_json: bool = typer.Option(False, "--json", help="JSON lines: one per window, then the file's mean and max "
                                 "records (\"aggregate\"); with --events, the event lines too."),
) -> None:
    """Classify audio files: short ones padded, long ones in sliding windows, plus the clip's mean and max;
    with --events, the sound events in each file (start and end lines)."""
    from astedge.audio.decode import audio_info
    from astedge.runtime.classifier import Classifier

    for path in audio:  # every file's problem before any work
        audio_info(path)
    options = classifier_options(windows, decision, running, outputs=outputs, batch_size=batch_size,
                                 max_seconds=max_seconds)
    with Classifier.from_options(model_path(model), options, log=_log_choice) as classifier:
        output = EventOutput(**outputs)
        try:
            console = Console()
            for path in audio:
                result = classifier.classify_file(path)
                output.detected += result.detected
                _print_file(result, output, as_json, console)
        finally:
            output.close()


def _print_file(result, output: EventOutput, as_json: bool, console: Console) -> None:
    """One file's windows and aggregates (JSON lines, or a table and window lines), then its event records."""
    if as_json or output.print_lines:
        if as_json:
            sys.stdout.write("".join(json.dumps(record) + "\n" for record in result.records()))
        output.emit(result.events)
        sys.stdout.flush()
        return
    console.print(f"[bold]{escape(result.file)}[/]  {result.seconds:.2f} s, {len(result.windows)} window(s)",
                  highlight=False, soft_wrap=True)
    table = Table("mean", "max", "label", box=None)
    peaks = {s.index: s.score for s in result.max.top}
    for score in result.mean.top:
        peak = peaks.get(score.index)
        table.add_row(f"{score.score:.4f}", f"{peak:.4f}" if peak is not None else "", escape(score.label))
    console.print(table)
    if len(result.windows) > 1:
        for window_result in result.windows:
            typer.echo("  " + window_line(window_result))
    output.emit(result.events)


@app.command(epilog="Example: astedge calibrate runs/kws/best.safetensors speech_commands/ -o thresholds.json   "
                    "(then: astedge export MODEL -o DIR --thresholds thresholds.json; --precision 0.95 for fewer false alarms)")
def calibrate(
    model: Path = typer.Argument(..., help=MODEL_HELP),
    data: Path = typer.Argument(..., help="Labelled audio: class folders, a CSV manifest, ESC-50 or Speech Commands."),
    output: Path = typer.Option(..., "-o", "--output", help="The thresholds file to write (JSON)."),
    split: str = typer.Option("val", "--split", help="Which split to calibrate on: val (held out from training) or test."),
    target_precision: Optional[float] = typer.Option(None, "--precision", help="Per class, the lowest threshold reaching "
                                                     "this precision (the most recall at it); default: maximize F1."),
    label_file: Optional[Path] = typer.Option(None, "--labels", help="Manifests: label CSV (index,mid,display_name)."),
    backend: str = BACKEND[1],
    as_json: bool = typer.Option(False, "--json", help="Print the thresholds and per-class figures as JSON."),
) -> None:
    """Pick per-class event thresholds on labelled clips (max F1, or a target precision) for --events."""
    from astedge.data.datasets import read_dataset
    from astedge.measure.evaluation import calibrate_thresholds
    from astedge.runtime.classifier import Classifier, ClassifierOptions
    from astedge.runtime.events import write_thresholds

    if not output.parent.is_dir():
        raise UserError("its folder does not exist", output)
    dataset = read_dataset(data, label_file=label_file)
    with Classifier.from_options(model, ClassifierOptions(backend=backend), log=_log_choice) as classifier:
        result = calibrate_thresholds(classifier, dataset, split, target_precision=target_precision, log=log_line)
    write_thresholds(output, result["thresholds"], model=str(model), data=str(data), split=split,
                     method=result["method"], clips=result["clips"], classes=result["classes"])
    if as_json:
        print_json({"output": str(output), **result})
        return
    table = Table("label", "threshold", "precision", "recall", "F1", "positives", box=None)
    for label, row in result["classes"].items():
        table.add_row(escape(label), f"{row['threshold']:.3f}", f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                      f"{row['f1']:.3f}", str(row["positives"]))
    Console().print(table)
    typer.echo(f"{output}: {len(result['thresholds'])} thresholds ({result['method']}, {result['clips']} {split} clips)")


@app.command(epilog="Example: astedge evaluate demo/export demo/data/stream.wav --truth demo/data/stream.csv "
                    "--hop 0.1 --json   (several files: a truth table with a filename column)")
@grouped
def evaluate(
    model: Path = typer.Argument(..., help=MODEL_HELP),
    audio: list[Path] = typer.Argument(..., help="Recordings to detect events in."),
    truth: Path = typer.Option(..., "--truth", help="CSV onset,offset,label (or DCASE TSV filename onset offset "
                               "event_label) of the true events."),
    windows: dict = WINDOWS.but(top_k=None, threshold=(Optional[float], typer.Option(
        None, "--threshold", help="On-threshold of classes without their own (0.5)."))),
    decision: dict = DECISION,
    collar: float = typer.Option(0.2, "--collar", help="Event-based F1: onset collar in seconds (DCASE: 0.2)."),
    offset_percentage: float = typer.Option(0.2, "--offset-percentage", help="Offset collar: max(collar, this x the "
                                            "event's length) (DCASE: 0.2)."),
    segment: float = typer.Option(1.0, "--segment", help="Segment-based F1: segment length in seconds."),
    backend: str = BACKEND[1],
    estimated_csv: Optional[Path] = typer.Option(None, "--events-csv", help="Also write the detected events as CSV."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Score the event decision layer against true events: event-based F1 (DCASE collars), segment F1,
    duplicates per true event and decision latency."""
    from astedge.audio.decode import audio_info
    from astedge.measure.evaluation import evaluate_events, read_truth
    from astedge.runtime.classifier import Classifier
    from astedge.runtime.events import Event, write_events_csv

    for path in audio:
        audio_info(path)
    table = read_truth(truth, audio)
    options = classifier_options(windows, decision, backend=backend, events=True, top_k=1, max_seconds=None)
    with Classifier.from_options(model, options, log=_log_choice) as classifier:
        report = evaluate_events(classifier, audio, table, t_collar=collar, percentage_of_length=offset_percentage,
                                 segment=segment)
    if estimated_csv is not None:
        write_events_csv(estimated_csv, [Event(label, 0, onset, onset, "", 0.0, offset=offset, file=name)
                                         for name, rows in report["estimated"].items() for onset, offset, label in rows])
    if as_json:
        print_json(report)
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
