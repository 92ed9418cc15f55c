"""Commands that run models on audio: listen, classify (calibrate and evaluate: :mod:`astedge.cli.scoring`).

Each parses its options into :class:`astedge.runtime.classifier.ClassifierOptions` (:mod:`astedge.cli.options`),
runs the :class:`~astedge.runtime.classifier.Classifier` and prints what it returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from astedge.errors import UserError
from astedge.cli.app import app, err_console, log_choice, print_record, progress
from astedge.cli.common import MODEL, model_path
from astedge.cli.options import DECISION, EVENT_OUTPUT, RUNNING, WINDOWS, classifier_options, grouped
from astedge.cli.records import EventOutput, print_file_head, print_file_tail, window_line


@app.command(epilog="Example: astedge listen -m ast-audioset/ --hop 1 --smoothing ema   "
                    "(without a microphone: astedge listen -m ast-audioset/ --source street.wav --realtime --json; "
                    "arecord -f S16_LE -r 16000 -c 1 -t raw | astedge listen -m ast-audioset/ --source - --realtime)")
@grouped
def listen(
    model: Optional[Path] = MODEL,
    mic: Optional[str] = typer.Option(None, "--mic", help="Microphone: index or part of its name (astedge doctor "
                                      "lists them); default: the system's input. CPU or GPU: --backend."),
    device: Optional[str] = typer.Option(None, "--device", hidden=True, help="Old name of --mic."),
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
    as_json: bool = typer.Option(False, "--json", help="JSON Lines: a {\"type\": \"window\"} record per window, "
                                 "with --events the \"event\" records too, and a last \"summary\" record."),
) -> None:
    """Classify live audio in sliding windows: microphone, a file replayed in real time, or raw PCM on stdin;
    with --events, report sound events (start and end) instead of windows."""
    from astedge.runtime.classifier import Classifier

    open_source = _source_opener(source, _microphone(mic, device), realtime, speed, rate, channels, pcm_format)
    options = classifier_options(windows, decision, running, outputs=outputs, partial=partial, duration=duration)
    output = EventOutput(**outputs, as_json=as_json, lines=True)
    with Classifier.from_options(model_path(model), options, log=log_choice) as classifier:
        listener = classifier.listen(open_source(classifier.backend.feature_config.sample_rate))
        interrupted = _run_listener(listener, output, as_json)
    _print_summary({**listener.summary(), **output.close(), "interrupted": interrupted}, as_json)


def _microphone(mic: Optional[str], device: Optional[str]) -> Optional[str]:
    """--mic, or its old name --device (which never chose the CPU or GPU: --backend does)."""
    if device is not None and mic is not None:
        raise UserError("--device is the old name of --mic; give one of them")
    if device is not None and device.lower() in ("cpu", "cuda", "gpu"):
        raise UserError(f"--device names a microphone (now --mic), not {device!r}: the CPU or GPU is chosen with "
                        "--backend (e.g. onnxruntime-cpu, onnxruntime-cuda, tensorrt)")
    return mic if mic is not None else device


def _run_listener(listener, output: EventOutput, as_json: bool) -> bool:
    """Run the stream to its end or Ctrl-C (then True), showing each window as it is ready (JSON lines, the live
    terminal view or text lines) and emitting event records as they come."""
    from astedge.runtime.views import render

    console, name = Console(), listener.source.name
    try:
        listener.start()
        if as_json or output.printing:
            for result in listener.results():
                if as_json:
                    print_record(result.to_dict())
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
        raise UserError("--mic selects a microphone; it cannot be combined with --source")
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
        print_record({"type": "summary", **summary})
        return
    inference = summary["inference_ms"] or {}
    err_console.print(
        f"heard {summary['audio_s']:.1f} s in {summary['wall_s']:.1f} s: {summary['windows']} windows classified, "
        f"{summary['dropped']} dropped, {summary['overflows']} capture overflows"
        + (f", {summary['lost']} lost" if summary["lost"] else "")
        + (f"; inference p50 {inference['p50']:.1f} ms, p99 {inference['p99']:.1f} ms" if inference else "")
        + (f"; real-time factor {summary['real_time_factor']:.3f}" if summary["real_time_factor"] else ""),
        highlight=False, soft_wrap=True)


@app.command(epilog="Example: astedge classify street.wav park.flac -m ast-audioset/ --hop 5 --json > tags.jsonl   "
                    "(a folder: its audio files; --events for a table of sound events)")
@grouped
def classify(
    audio: list[Path] = typer.Argument(..., help="Audio files (WAV, FLAC, OGG, ...; any rate and channel count), or "
                                       "folders of them."),
    model: Optional[Path] = MODEL,
    windows: dict = WINDOWS.but(
        top_k=(int, typer.Option(5, "-k", "--top-k", min=1, help="Labels per window and per file.")),
        hop=(Optional[float], typer.Option(None, "--hop", help="Seconds between windows (default: half the window)."))),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Windows per backend call."),
    outputs: dict = EVENT_OUTPUT,
    decision: dict = DECISION,
    max_seconds: float = typer.Option(3600.0, "--max-seconds", help="Refuse longer files."),
    running: dict = RUNNING,
    as_json: bool = typer.Option(False, "--json", help="JSON Lines, each record as soon as it is ready: a "
                                 "{\"type\": \"window\"} record per window, then the file's \"aggregate\" records "
                                 "(mean, max); with --events the \"event\" records too."),
) -> None:
    """Classify audio files: short ones padded, long ones in sliding windows, plus the clip's mean and max;
    with --events, the sound events in each file (a table of onset, offset, label and peak)."""
    from astedge.runtime.classifier import Classifier

    files = _audio_files(audio)
    options = classifier_options(windows, decision, running, outputs=outputs, batch_size=batch_size,
                                 max_seconds=max_seconds)
    output = EventOutput(**outputs, as_json=as_json)
    with Classifier.from_options(model_path(model), options, log=log_choice) as classifier:
        try:
            for path, seconds in files:
                _classify_one(classifier, path, seconds, output, as_json, events=outputs["events"])
        except BaseException:
            output.close(write=False)  # no --events-csv of a run that did not finish
            raise
    output.close()


def _audio_files(paths: list[Path]) -> list[tuple[Path, float]]:
    """Each file to classify with its length in seconds, a folder's audio files in its place; every file's problem
    is found before any work."""
    from astedge.audio.decode import audio_files, audio_info

    files = [f for p in paths for f in (audio_files(p, "folder to classify") if p.is_dir() else [p])]
    return [(f, (lambda info: info.frames / info.samplerate)(audio_info(f))) for f in files]


def _classify_one(classifier, path: Path, seconds: float, output: EventOutput, as_json: bool, events: bool) -> None:
    """One file: its windows shown as they are ready (records, or text lines when it has several and --events is
    off), progress on stderr while stdout is quiet, then its aggregates (records, or the mean/max table) and its
    events (records, or their table with --events)."""
    console = Console()
    lines = not as_json and not events and seconds > classifier.windowing().seconds[0]
    if not as_json:
        print_file_head(console, str(path), seconds)
    done = 0.0
    with progress(path.name, seconds, show=not (console.is_terminal and (as_json or lines))) as advance:
        def on_window(window) -> None:
            nonlocal done
            advance(window.end - done)
            done = window.end
            if as_json:
                print_record(window.to_dict())
            elif lines:
                typer.echo("  " + window_line(window))
            output.emit(window.events)

        result = classifier.classify_file(path, on_window=on_window)
    output.emit(result.events[sum(len(w.events) for w in result.windows):])  # those still open at the end
    if as_json:
        print_record(result.mean.to_dict())
        print_record(result.max.to_dict())
    else:
        print_file_tail(console, result, result.events if events else None)
