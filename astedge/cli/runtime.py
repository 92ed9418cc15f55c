"""Commands that run models on audio: listen, classify, calibrate, evaluate."""

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
from astedge.cli.common import BACKEND_HELP, CONFIRM, EVENTS, EVENTS_CSV, EventOutput, MERGE_GAP, MIN_DURATION, TRIM, MODEL_HELP, OFF_RATIO, ON_EVENT, PRECISION_HELP, SMOOTHING, SMOOTHING_WINDOWS, THRESHOLDS, event_config, load_backend, model_path, window_line


@app.command(epilog="Example: astedge listen --model ast-audioset/ --hop 1 --smoothing ema   "
                    "(without a microphone: astedge listen --model ast-audioset/ --source street.wav --realtime --json; "
                    "arecord -f S16_LE -r 16000 -c 1 -t raw | astedge listen -m ast-audioset/ --source - --realtime)")
def listen(
    model: Optional[Path] = typer.Option(None, "-m", "--model", help=MODEL_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="Microphone: index or part of its name "
                                         "(astedge doctor lists them); default: the system's input."),
    window: Optional[float] = typer.Option(None, "--window", help="Window in seconds (default: the model's, e.g. 10 s "
                                           "for AudioSet models)."),
    hop: Optional[float] = typer.Option(None, "--hop", help="Seconds between windows (default 1). Multiples of 10 ms "
                                        "compute only the new frames each hop."),
    top_k: int = typer.Option(5, "-k", "--top-k", min=1, help="Labels per window."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Only report scores >= this (with --events: "
                                              "the on-threshold of classes without their own, default 0.5)."),
    smoothing: str = SMOOTHING,
    smoothing_windows: int = SMOOTHING_WINDOWS,
    allow: list[str] = typer.Option([], "--allow", help="Only these labels (repeatable, or comma-separated)."),
    deny: list[str] = typer.Option([], "--deny", help="Never these labels (repeatable, or comma-separated)."),
    events: bool = EVENTS,
    events_csv: Optional[Path] = EVENTS_CSV,
    on_event: Optional[str] = ON_EVENT,
    thresholds: Optional[Path] = THRESHOLDS,
    off_ratio: float = OFF_RATIO,
    confirm: Optional[str] = CONFIRM,
    min_duration: float = MIN_DURATION,
    merge_gap: float = MERGE_GAP,
    trim: float = TRIM,
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
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per window and a final {\"summary\": ...} "
                                 "(with --events, the event lines too)."),
) -> None:
    """Classify live audio in sliding windows: microphone, a file replayed in real time, or raw PCM on stdin;
    with --events, report sound events (start and end) instead of windows."""
    from astedge.audio import capture
    from astedge.runtime.scores import Smoother, label_mask
    from astedge.runtime.stream import Listener
    from astedge.runtime.views import render
    from astedge.runtime.windows import Windowing

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
    from astedge.runtime.backends import stream_hop

    model = model_path(model)
    net = load_backend(model, backend, precision)
    windowing = Windowing.from_seconds(net.feature_config, window, hop, default_hop=stream_hop(model))
    mask = label_mask(net.labels, allow, deny)
    smoother = Smoother(smoothing, smoothing_windows)
    detector = None
    if events or events_csv is not None or on_event:
        from astedge.runtime.events import EventDetector

        config = event_config(model, net.labels, threshold, thresholds, off_ratio, confirm, min_duration, merge_gap,
                              trim)
        detector = EventDetector(net.labels, net.task, config, mask, lag=smoother.lag_windows * windowing.seconds[1])
    output = EventOutput(detector, events, events_csv, on_event)
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
                typer.echo(window_line(result))
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
    model: Optional[Path] = typer.Option(None, "-m", "--model", help=MODEL_HELP),
    top_k: int = typer.Option(5, "-k", "--top-k", min=1, help="Labels per window and per file."),
    window: Optional[float] = typer.Option(None, "--window", help="Window in seconds (default: the model's, e.g. 10 s for AudioSet models)."),
    hop: Optional[float] = typer.Option(None, "--hop", help="Seconds between windows (default: half the window)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Windows per backend call."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Only report scores >= this (with --events: "
                                              "the on-threshold of classes without their own, default 0.5)."),
    allow: list[str] = typer.Option([], "--allow", help="Only these labels (repeatable, or comma-separated)."),
    deny: list[str] = typer.Option([], "--deny", help="Never these labels (repeatable, or comma-separated)."),
    smoothing: str = SMOOTHING,
    smoothing_windows: int = SMOOTHING_WINDOWS,
    events: bool = EVENTS,
    events_csv: Optional[Path] = EVENTS_CSV,
    on_event: Optional[str] = ON_EVENT,
    thresholds: Optional[Path] = THRESHOLDS,
    off_ratio: float = OFF_RATIO,
    confirm: Optional[str] = CONFIRM,
    min_duration: float = MIN_DURATION,
    merge_gap: float = MERGE_GAP,
    trim: float = TRIM,
    max_seconds: float = typer.Option(3600.0, "--max-seconds", help="Refuse longer files."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    as_json: bool = typer.Option(False, "--json", help="JSON lines: one per window, then the file's mean and max "
                                 "records (\"aggregate\"); with --events, the event lines too."),
) -> None:
    """Classify audio files: short ones padded, long ones in sliding windows, plus the clip's mean and max;
    with --events, the sound events in each file (start and end lines)."""
    from astedge.audio.decode import audio_info
    from astedge.features.cuda_fbank import extractor_for
    from astedge.runtime.events import EventDetector
    from astedge.runtime.scores import Smoother, label_mask
    from astedge.runtime.windows import Windowing, classify_file

    for path in audio:  # every file's problem before any work
        audio_info(path)
    model = model_path(model)
    net = load_backend(model, backend, precision)
    output = None
    try:
        windowing = Windowing.from_seconds(net.feature_config, window, hop)
        mask = label_mask(net.labels, allow, deny)
        extractor = extractor_for(net.device, net.feature_config, model_input=False)
        detect = events or events_csv is not None or on_event
        config = event_config(model, net.labels, threshold, thresholds, off_ratio, confirm, min_duration,
                               merge_gap, trim) if detect else None
        output = EventOutput(None, events, events_csv, on_event)
        console = Console()
        for path in audio:
            smoother = Smoother(smoothing, smoothing_windows)
            detector = EventDetector(net.labels, net.task, config, mask, file=str(path),
                                     lag=smoother.lag_windows * windowing.seconds[1]) if detect else None
            result = classify_file(net, path, windowing, max_seconds=max_seconds, k=top_k,
                                   threshold=None if events else threshold, mask=mask, batch_size=batch_size,
                                   extractor=extractor, smoother=smoother, detector=detector)
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
                    typer.echo("  " + window_line(window_result))
            output.emit(result.events)
    finally:
        net.close()
        if output is not None:
            output.close()


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
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the thresholds and per-class figures as JSON."),
) -> None:
    """Pick per-class event thresholds on labelled clips (max F1, or a target precision) for --events."""
    from astedge.data.datasets import read_dataset
    from astedge.measure.evaluation import calibrate_thresholds
    from astedge.runtime.events import write_thresholds

    if not output.parent.is_dir():
        raise UserError("its folder does not exist", output)
    dataset = read_dataset(data, label_file=label_file)
    net = load_backend(model, backend, "auto")
    try:
        result = calibrate_thresholds(net, dataset, split, target_precision=target_precision, log=log_line)
    finally:
        net.close()
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
def evaluate(
    model: Path = typer.Argument(..., help=MODEL_HELP),
    audio: list[Path] = typer.Argument(..., help="Recordings to detect events in."),
    truth: Path = typer.Option(..., "--truth", help="CSV onset,offset,label (or DCASE TSV filename onset offset "
                               "event_label) of the true events."),
    window: Optional[float] = typer.Option(None, "--window", help="Window in seconds (default: the model's)."),
    hop: Optional[float] = typer.Option(None, "--hop", help="Seconds between windows (default: the export's stream hop, 1 s)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="On-threshold of classes without their own (0.5)."),
    thresholds: Optional[Path] = THRESHOLDS,
    smoothing: str = SMOOTHING,
    smoothing_windows: int = SMOOTHING_WINDOWS,
    off_ratio: float = OFF_RATIO,
    confirm: Optional[str] = CONFIRM,
    min_duration: float = MIN_DURATION,
    merge_gap: float = MERGE_GAP,
    trim: float = TRIM,
    allow: list[str] = typer.Option([], "--allow", help="Only these labels (repeatable, or comma-separated)."),
    deny: list[str] = typer.Option([], "--deny", help="Never these labels (repeatable, or comma-separated)."),
    collar: float = typer.Option(0.2, "--collar", help="Event-based F1: onset collar in seconds (DCASE: 0.2)."),
    offset_percentage: float = typer.Option(0.2, "--offset-percentage", help="Offset collar: max(collar, this x the "
                                            "event's length) (DCASE: 0.2)."),
    segment: float = typer.Option(1.0, "--segment", help="Segment-based F1: segment length in seconds."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    estimated_csv: Optional[Path] = typer.Option(None, "--events-csv", help="Also write the detected events as CSV."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Score the event decision layer against true events: event-based F1 (DCASE collars), segment F1,
    duplicates per true event and decision latency."""
    from astedge.audio.decode import audio_info
    from astedge.runtime.backends import stream_hop
    from astedge.measure.evaluation import evaluate_events, read_truth
    from astedge.runtime.events import write_events_csv
    from astedge.runtime.scores import Smoother, label_mask
    from astedge.runtime.windows import Windowing

    for path in audio:
        audio_info(path)
    table = read_truth(truth, audio)
    net = load_backend(model, backend, "auto")
    try:
        windowing = Windowing.from_seconds(net.feature_config, window, hop, default_hop=stream_hop(model))
        mask = label_mask(net.labels, allow, deny)
        config = event_config(model, net.labels, threshold, thresholds, off_ratio, confirm, min_duration, merge_gap,
                              trim)
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
        from astedge.runtime.events import Event

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


