"""Options and helpers several commands share (one definition each)."""

from __future__ import annotations

import json
import sys
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


def model_path(model: Optional[Path]) -> Path:
    """--model, else $ASTEDGE_MODEL."""
    import os

    if model is None:
        if not os.environ.get("ASTEDGE_MODEL"):
            raise UserError("no model: pass --model PATH (an export folder or a .safetensors checkpoint) or set "
                            "ASTEDGE_MODEL")
        model = Path(os.environ["ASTEDGE_MODEL"])
    return model


def window_line(result) -> str:
    labels = ", ".join(f"{s.label} {s.score:.3f}" for s in result.top) or "-"
    notes = "".join(f"  [{n} {k}]" for k, n in (("dropped", result.dropped), ("overflows", result.overflows)) if n)
    return f"{result.start:8.2f}-{result.end:8.2f} s  {result.latency_ms:7.1f} ms  {labels}{notes}"


MODEL_HELP = "Export folder, its astedge.json or model.onnx, or a .safetensors checkpoint (default: $ASTEDGE_MODEL)."
BACKEND_HELP = ("auto (tensorrt > onnxruntime-cuda > onnxruntime-cpu > torch), tensorrt, onnxruntime, onnxruntime-cpu, "
                 "onnxruntime-cuda, onnxruntime-tensorrt, torch.")
PRECISION_HELP = ("auto, fp32, fp16 or int8 (ONNX Runtime: which ONNX file, int8 = model.int8.onnx from export --int8; "
                  "TensorRT: must match the engine).")


# Smoothing across windows: listen, classify, evaluate (astedge.cli.options) and bench --stream.
SMOOTHING = typer.Option("none", "--smoothing", help="Across windows: none, ema, median or max.")
SMOOTHING_WINDOWS = typer.Option(3, "--smoothing-windows", min=1,
                                  help="ema: alpha = 2/(N+1); median, max: over the last N windows.")


class EventOutput:
    """Where event records go: JSON lines on stdout (--events), the --on-event command, the --events-csv file
    (written on :meth:`close` with the events in :attr:`detected`)."""

    def __init__(self, events: bool, events_csv: Optional[Path], on_event: Optional[str]):
        from astedge.runtime.events import EventHook

        if events_csv is not None and not events_csv.parent.is_dir():
            raise UserError("its folder does not exist", events_csv)
        self.print_lines, self.csv_path = events, events_csv
        self.hook = EventHook(on_event) if on_event else None
        self.detected: list = []  # astedge.runtime.events.Event objects, for the CSV

    def emit(self, records: list[dict]) -> None:
        for record in records:
            if self.print_lines:
                sys.stdout.write(json.dumps(record) + "\n")
                sys.stdout.flush()
            if self.hook is not None:
                self.hook.submit(record)

    def close(self) -> dict:
        from astedge.runtime.events import write_events_csv

        if self.csv_path is not None:
            write_events_csv(self.csv_path, self.detected)
        return {"on_event": self.hook.close()} if self.hook is not None else {}
