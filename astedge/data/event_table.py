"""Tables of sound events: one row per event (onset, offset, label), per file when there are several.

The one reader of event tables: ground truth for ``astedge evaluate``, strong labels for ``astedge train``
(DCASE's TSV as DESED and MAESTRO ship it: ``filename onset offset event_label``) and the CSV files astedge
writes (``--events-csv``, ``astedge data``). Standard library only.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from astedge.errors import UserError


@dataclass(frozen=True)
class Event:
    """One sound event, times in seconds of audio. `detected_at` is the audio time at which a live
    detector first reported it (for decision latency); None means at its onset."""

    onset: float
    offset: float
    label: str
    detected_at: float | None = None


def _number(text: str, what: str, row: int, path: Path) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"row {row}: {what} {text!r} is not a number", path) from None
    if not math.isfinite(value):
        raise UserError(f"row {row}: {what} is {text.strip()}, not a finite number", path)
    if value < 0:
        raise UserError(f"row {row}: {what} {text.strip()} is negative", path)
    return value


def read_events_csv(path: str | Path, *, by_file: bool = False) -> list[Event] | dict[str, list[Event]]:
    """Events from a CSV `[file,]onset,offset,label` (what astedge writes) or a DCASE TSV `filename onset offset
    event_label`.

    The header is required (column order free, extra columns ignored; tab-separated when the header has a
    tab); the file column (``file``, or DCASE's ``filename``) is optional. Bad input raises UserError naming the file and row (rows are
    file line numbers, the header is row 1). by_file=True returns {filename: events}, keeping files listed
    with empty onset/offset/label (DCASE's files without events); without it a file may hold one filename only.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise UserError("no such events file", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the events file ({e})", path) from None
    header_line = next((line for line in lines if line.strip()), None)
    if header_line is None:
        raise UserError("empty events file; expected a header onset,offset,label", path)
    reader = csv.reader(lines, delimiter="\t" if "\t" in header_line else ",")
    header = [h.strip().lower() for h in next(r for r in reader if any(f.strip() for f in r))]
    label_col = "event_label" if "event_label" in header else "label"
    if not {"onset", "offset", label_col} <= set(header):
        raise UserError(f"row {reader.line_num}: header {','.join(header)!r} lacks onset, offset and label "
                        "(or event_label) columns", path)
    file_col = "file" if "file" in header else "filename"
    col = {name: header.index(name) for name in ("onset", "offset", label_col) if name in header}
    if file_col in header:
        col["file"] = header.index(file_col)
    files: dict[str, list[Event]] = {}
    for row in reader:
        n = reader.line_num
        if not any(field.strip() for field in row):
            continue
        name = row[col["file"]].strip() if "file" in col and len(row) > col["file"] else ""
        events = files.setdefault(name, [])
        if name and not any(f.strip() for k, f in enumerate(row) if k != col["file"]):
            continue  # a DCASE file without events: its name alone
        if len(row) != len(header):
            raise UserError(f"row {n}: {len(row)} fields, the header has {len(header)}", path)
        onset, offset, label = (row[col[c]] for c in ("onset", "offset", label_col))
        onset_s, offset_s = _number(onset, "onset", n, path), _number(offset, "offset", n, path)
        if offset_s <= onset_s:
            raise UserError(f"row {n}: offset {offset_s:g} is not after onset {onset_s:g}", path)
        if not label.strip():
            raise UserError(f"row {n}: empty label", path)
        events.append(Event(onset_s, offset_s, label.strip()))
    if by_file:
        if "file" not in col:
            raise UserError("no file (or filename) column to group the events by", path)
        return files
    if len(files) > 1:
        raise UserError(f"events of {len(files)} files ({file_col} column); give one file's events", path)
    return next(iter(files.values()), [])
