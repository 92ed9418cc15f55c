"""What the runtime commands print: JSON Lines records with ``--json``, their human views without.

Every record is one object with a ``"type"``: ``window`` and ``aggregate``
(:meth:`astedge.runtime.windows.WindowResult.to_dict`), ``event`` (:meth:`astedge.runtime.events.Event.record`),
``class`` and ``summary``. The README's "Records" section lists their fields. Without ``--json`` the same content is shown as text lines and tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from astedge.cli.app import print_record
from astedge.errors import UserError


def window_line(result) -> str:
    """A window (or a listen result) as one text line: its span, latency and top labels."""
    labels = ", ".join(f"{s.label} {s.score:.3f}" for s in result.top) or "-"
    notes = "".join(f"  [{n} {k}]" for k, n in (("dropped", result.dropped), ("overflows", result.overflows)) if n)
    return f"{result.start:8.2f}-{result.end:8.2f} s  {result.latency_ms:7.1f} ms  {labels}{notes}"


def event_line(record: dict) -> str:
    """An event record as one text line: a start when it is confirmed, an end with its span."""
    if record["event"] == "start":
        return (f"{record['onset']:8.2f} s           start  {record['label']}  (peak {record['peak_score']:.3f}, "
                f"confirmed at {record['first_detected_at']:.2f} s)")
    return (f"{record['onset']:8.2f}-{record['offset']:8.2f} s  end    {record['label']}  "
            f"({record['duration']:.2f} s, peak {record['peak_score']:.3f})")


def events_table(records: list[dict]) -> Table:
    """Ended events (their end records) as a table: onset, offset, label, peak."""
    table = Table("onset", "offset", "label", "peak", box=None)
    for r in records:
        table.add_row(f"{r['onset']:.3f}", f"{r['offset']:.3f}", escape(r["label"]), f"{r['peak_score']:.3f}")
    return table


def class_table(classes: dict) -> Table:
    """Per-class event-based figures (``evaluate``): true, detected and matched events, F1, precision, recall."""
    table = Table("label", "true", "detected", "matched", "F1", "precision", "recall", box=None)
    number = lambda v: "-" if v is None or v != v else f"{v:.3f}"  # noqa: E731 - NaN: sed_eval's undefined score
    for label, row in classes.items():
        table.add_row(escape(label), str(row["true_events"]), str(row["detected_events"]), str(row["matched"]),
                      number(row["f1"]), number(row["precision"]), number(row["recall"]))
    return table


class EventOutput:
    """Where event records go: stdout when --events asks for them (records with --json; text lines as they happen
    with `lines`; else nothing here, the command shows a table), the --on-event command, and the --events-csv file
    (written on :meth:`close` from the end records)."""

    def __init__(self, events: bool, events_csv: Optional[Path], on_event: Optional[str], *, as_json: bool = False,
                 lines: bool = False):
        from astedge.runtime.events import EventHook

        if events_csv is not None and not events_csv.parent.is_dir():
            raise UserError("its folder does not exist", events_csv)
        self.printing = "json" if events and as_json else "lines" if events and lines else None
        self.csv_path = events_csv
        self.hook = EventHook(on_event) if on_event else None
        self.ended: list[dict] = []  # end records, for the CSV

    def emit(self, records: list[dict]) -> None:
        for record in records:
            if self.printing == "json":
                print_record(record)
            elif self.printing == "lines":
                typer.echo(event_line(record))
            if self.hook is not None:
                self.hook.submit(record)
            if record["event"] == "end":
                self.ended.append(record)

    def close(self, write: bool = True) -> dict:
        """Write the CSV (atomically; not when `write` is False: a run that failed) and wait for the hook; returns
        the hook's figures for a summary."""
        from astedge.runtime.events import write_events_csv

        if self.csv_path is not None and write:
            write_events_csv(self.csv_path, self.ended)
        return {"on_event": self.hook.close()} if self.hook is not None else {}


def print_file_head(console: Console, name: str, seconds: float) -> None:
    console.print(f"[bold]{escape(name)}[/]  {seconds:.2f} s", highlight=False, soft_wrap=True)


def print_file_tail(console: Console, result, file_events: list[dict] | None) -> None:
    """A classified file's human view after its windows: its events table (with --events), else the clip's mean and
    max per label."""
    if file_events is not None:
        ended = [r for r in file_events if r["event"] == "end"]
        console.print(events_table(ended) if ended else "  no events", highlight=False)
        return
    table = Table("mean", "max", "label", box=None)
    peaks = {s.index: s.score for s in result.max.top}
    for score in result.mean.top:
        peak = peaks.get(score.index)
        table.add_row(f"{score.score:.4f}", f"{peak:.4f}" if peak is not None else "", escape(score.label))
    console.print(table)
    console.print(f"  {len(result.windows)} window(s)", style="dim", highlight=False)
