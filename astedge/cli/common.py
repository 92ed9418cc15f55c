"""Options and helpers several commands share (one definition each)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from astedge.errors import UserError
from astedge.cli.app import log_line


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


def model_path(model: Optional[Path]) -> Path:
    """--model, else $ASTEDGE_MODEL."""
    import os

    if model is None:
        if not os.environ.get("ASTEDGE_MODEL"):
            raise UserError("no model: pass --model PATH (an export folder or a .safetensors checkpoint) or set "
                            "ASTEDGE_MODEL")
        model = Path(os.environ["ASTEDGE_MODEL"])
    return model


def load_backend(model: Path, backend: str, precision: str):
    """The backend for a model path; says on stderr which one runs and why."""
    from astedge.runtime.backends import choose_backend

    choice = choose_backend(model, backend, precision)
    log_line(f"{model}: {choice.describe()}", style="dim")
    return choice.backend


def window_line(result) -> str:
    labels = ", ".join(f"{s.label} {s.score:.3f}" for s in result.top) or "-"
    notes = "".join(f"  [{n} {k}]" for k, n in (("dropped", result.dropped), ("overflows", result.overflows)) if n)
    return f"{result.start:8.2f}-{result.end:8.2f} s  {result.latency_ms:7.1f} ms  {labels}{notes}"


MODEL_HELP = "Export folder, its astedge.json or model.onnx, or a .safetensors checkpoint (default: $ASTEDGE_MODEL)."
BACKEND_HELP = ("auto (tensorrt > onnxruntime-cuda > onnxruntime-cpu > torch), tensorrt, onnxruntime, onnxruntime-cpu, "
                 "onnxruntime-cuda, onnxruntime-tensorrt, torch.")
PRECISION_HELP = ("auto, fp32, fp16 or int8 (ONNX Runtime: which ONNX file, int8 = model.int8.onnx from export --int8; "
                  "TensorRT: must match the engine).")


# The decision layer's options, shared by listen, classify and evaluate (one definition each).
EVENTS = typer.Option(False, "--events", help="Print one JSON line when an event starts and one when it ends "
                       "(smoothing, thresholds with hysteresis, N-of-M confirmation, merging).")
EVENTS_CSV = typer.Option(None, "--events-csv", help="Also write the ended events to this CSV (onset,offset,label,...).")
ON_EVENT = typer.Option(None, "--on-event", help="Run this shell command per event, the event JSON on its stdin "
                         "(its own worker: capture never waits; failures and drops are counted).")
THRESHOLDS = typer.Option(None, "--thresholds", help="Per-class thresholds (JSON from astedge calibrate; default: "
                           "those exported into the model's astedge.json, else --threshold for every class).")
OFF_RATIO = typer.Option(0.8, "--off-ratio", help="Hysteresis: an event ends below threshold x this.")
CONFIRM = typer.Option(None, "--confirm", help="N/M: an event starts when its class is on in N of the last M "
                        "windows (default 1/1).")
MIN_DURATION = typer.Option(0.0, "--min-duration", help="Seconds an event must last before it is reported.")
MERGE_GAP = typer.Option(0.0, "--merge-gap", help="Seconds of silence that still continue an event.")
TRIM = typer.Option(0.0, "--trim", help="Seconds to move each onset later and offset earlier: a window fires before "
                    "its sound fills half of it (choose it on a labelled stream with astedge evaluate).")
SMOOTHING = typer.Option("none", "--smoothing", help="Across windows: none, ema, median or max.")
SMOOTHING_WINDOWS = typer.Option(3, "--smoothing-windows", min=1,
                                  help="ema: alpha = 2/(N+1); median, max: over the last N windows.")


def event_config(model: Path, labels, threshold, thresholds, off_ratio, confirm, min_duration, merge_gap, trim=0.0):
    """The decision layer's settings: thresholds from --thresholds, else the export's calibrated ones."""
    from astedge.runtime.backends import export_thresholds
    from astedge.runtime.events import EventConfig, parse_confirm, read_thresholds

    per_class = read_thresholds(thresholds, labels) if thresholds is not None else export_thresholds(model)
    n, m = parse_confirm(confirm)
    return EventConfig(threshold=0.5 if threshold is None else threshold, off_ratio=off_ratio,
                       thresholds=per_class or {}, confirm=n, confirm_window=m, min_duration=min_duration,
                       merge_gap=merge_gap, trim=trim)


class EventOutput:
    """Where event records go: JSON lines on stdout, the --on-event command, the --events-csv file."""

    def __init__(self, detector, print_lines: bool, csv_path: Optional[Path], command: Optional[str]):
        from astedge.runtime.events import EventHook

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
        from astedge.runtime.events import write_events_csv

        if self.csv_path is not None:
            write_events_csv(self.csv_path, [e for d in self.detectors for e in d.events])
        return {"on_event": self.hook.close()} if self.hook is not None else {}

