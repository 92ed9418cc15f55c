"""Dataset layouts -> one index of (audio path, label indices, event boundaries when known), with problems
reported, not hidden.

Readers: a folder with one sub-folder per class; a CSV manifest (path, labels; multi-label with a
label file, as AudioSet is kept); ESC-50 (meta/esc50.csv, 5 folds); Speech Commands v2
(validation_list.txt / testing_list.txt); a strong-label TSV as DCASE ships them (DESED, MAESTRO:
``filename onset offset event_label``). `read_dataset` picks the reader from the layout. Any layout takes
strong labels beside its weak ones: a ``strong.tsv`` in the dataset's folder (``astedge data synth`` writes one)
or ``strong=`` gives the event boundaries of the files it lists; the others keep clip labels only.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from astedge.audio.decode import AUDIO_SUFFIXES, find_audio_files  # noqa: F401 - train.distill reads AUDIO_SUFFIXES here
from astedge.errors import UserError


#: Labels that mean "no event" (AST's Speech Commands setup, the demo's synthetic data): recorded as the model's
#: background class, never reported as an event.
BACKGROUND_NAMES = ("background", "_background_noise_", "_silence_", "silence")
#: The strong-label file a dataset folder may hold (DCASE's TSV: filename, onset, offset, event_label).
STRONG_FILE = "strong.tsv"


@dataclass(frozen=True)
class Item:
    path: Path
    targets: tuple[int, ...]  # label indices (several for multi-label data)
    #: Strong labels: (onset s, offset s, label index) of each event, () for a clip known to hold none;
    #: None when only the clip's labels are known (weak).
    events: tuple[tuple[float, float, int], ...] | None = None
    group: str | None = None  # a subgroup to score apart (a manifest column: speaker, device, room)


@dataclass
class DatasetIndex:
    """Everything a trainer needs to know about the data, before any audio is read."""

    labels: list[str]
    task: str  # "multiclass" (softmax, accuracy) or "multilabel" (sigmoid, mAP)
    splits: dict[str, list[Item]]
    layout: str
    problems: list[str] = field(default_factory=list)
    background: str | None = None  # the label that means "no event" (see BACKGROUND_NAMES), if the data has one

    def __post_init__(self):
        if self.background is None:
            self.background = next((name for name in self.labels if name in BACKGROUND_NAMES), None)

    @property
    def strong(self) -> int:
        """How many clips carry event boundaries."""
        return sum(item.events is not None for items in self.splits.values() for item in items)

    def summary(self) -> str:
        sizes = ", ".join(f"{name} {len(items)}" for name, items in self.splits.items())
        strong = f"; {self.strong} with event boundaries" if self.strong else ""
        return f"{self.layout}: {len(self.labels)} labels ({self.task}); {sizes}{strong}"


def report_problems(problems: list[str], what: str = "files") -> str | None:
    """One summary line for skipped inputs: the count and the first examples."""
    if not problems:
        return None
    shown = "; ".join(problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return f"skipped {len(problems)} {what}: {shown}{more}"


def holdout(items: list[Item], fraction: float, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Deterministic split by a hash of the file name, stable when files are added or removed."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"validation fraction must be between 0 and 1, got {fraction}")

    def bucket(item: Item) -> float:
        digest = hashlib.sha1(f"{seed}:{item.path.name}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    train = [i for i in items if bucket(i) >= fraction]
    val = [i for i in items if bucket(i) < fraction]
    return train, val


def read_folder(root: Path, val_fraction: float = 0.2, seed: int = 0) -> DatasetIndex:
    """`root/<class>/*.wav`: one sub-folder per class (folders without audio are ignored)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))
                     and find_audio_files(d))
    if len(classes) < 2:
        raise UserError("needs at least two class sub-folders containing audio files", root)
    items = [Item(path, (index,)) for index, name in enumerate(classes) for path in find_audio_files(root / name)]
    train, val = holdout(items, val_fraction, seed)
    return DatasetIndex(classes, "multiclass", {"train": train, "val": val}, "folder")


def read_strong(path: Path, labels: list[str]) -> dict[str, tuple[tuple[float, float, int], ...]]:
    """A strong-label table (DCASE TSV or astedge's CSV, :func:`astedge.data.event_table.read_events_csv`):
    filename -> its events as (onset, offset, label index); a label the data does not have is one UserError."""
    from astedge.data.event_table import read_events_csv

    index = {name: i for i, name in enumerate(labels)}
    table = {}
    for name, events in read_events_csv(path, by_file=True).items():
        unknown = sorted({e.label for e in events} - set(index))
        if unknown:
            raise UserError(f"{name}: event label(s) {', '.join(unknown)} are not labels of the data "
                            f"({', '.join(labels[:6])}{' ...' if len(labels) > 6 else ''})", path)
        table[name] = tuple(sorted((e.onset, e.offset, index[e.label]) for e in events))
    return table


def with_strong_labels(data: DatasetIndex, path: Path, root: Path) -> DatasetIndex:
    """`data` whose items listed in the strong-label table `path` carry their events. A row's filename is matched
    as a path under `root`, else by file name when that is unique; a file whose events disagree with its clip
    labels keeps its clip labels only, and is reported."""
    table = read_strong(path, data.labels)
    by_name: dict[str, list[Item]] = {}
    for items in data.splits.values():
        for item in items:
            by_name.setdefault(item.path.name, []).append(item)
    found: dict[Path, tuple] = {}
    for name, events in table.items():
        target = (root / name).resolve()
        matches = [i for i in by_name.get(Path(name).name, []) if i.path.resolve() == target] or \
            (by_name.get(Path(name).name, []) if len(by_name.get(Path(name).name, [])) == 1 else [])
        if not matches:
            data.problems.append(f"{path.name}: {name}: not a file of the data")
            continue
        item = matches[0]
        if not {label for _, _, label in events} <= set(item.targets):
            data.problems.append(f"{path.name}: {name}: events of labels the clip does not have; clip labels kept")
            continue
        found[item.path] = events
    splits = {split: [Item(i.path, i.targets, found[i.path]) if i.path in found else i for i in items]
              for split, items in data.splits.items()}
    return DatasetIndex(data.labels, data.task, splits, data.layout, data.problems, data.background)


def read_strong_manifest(path: Path, val_fraction: float = 0.2, seed: int = 0) -> DatasetIndex:
    """A DCASE strong-label TSV as the dataset (DESED, MAESTRO): every file it lists, its clip labels the labels of
    its events (multi-label: events may overlap), files listed without events holding none. Paths are relative to
    the table's folder."""
    from astedge.data.event_table import read_events_csv

    rows = read_events_csv(path, by_file=True)
    labels = sorted({e.label for events in rows.values() for e in events})
    if not labels:
        raise UserError("lists no events: a strong-label table needs onset, offset and event_label rows", path)
    table, problems, items = read_strong(path, labels), [], []
    for name, events in table.items():
        audio = Path(name) if Path(name).is_absolute() else path.parent / name
        if not audio.is_file():
            problems.append(f"{name}: no such file")
            continue
        items.append(Item(audio, tuple(sorted({label for _, _, label in events})), events))
    if not items:
        raise UserError(f"none of its {len(table)} files exist (paths are relative to its folder)", path)
    train, val = holdout(items, val_fraction, seed)
    return DatasetIndex(labels, "multilabel", {"train": train, "val": val}, "strong labels (DCASE TSV)", problems)


def read_label_file(path: Path) -> tuple[list[str], dict[str, int]]:
    """AudioSet-style `index,mid,display_name` (or a one-name-per-line list): names and a key -> index map."""
    with open(path, newline="") as handle:
        rows = [r for r in csv.reader(handle) if r]
    if rows and [c.strip().lower() for c in rows[0][:3]] == ["index", "mid", "display_name"]:
        names = [r[2] for r in rows[1:]]
        keys = {r[1]: i for i, r in enumerate(rows[1:])}
    else:
        names = [r[0] for r in rows]
        keys = {}
    keys.update({name: i for i, name in enumerate(names)})
    return names, keys


def read_manifest(path: Path, label_file: Path | None = None, val_fraction: float = 0.2, seed: int = 0,
                  split_column: str = "split", group_column: str | None = None) -> DatasetIndex:
    """A CSV with columns `path,labels[,split]`; labels separated by ',' or ';' (names or AudioSet mids).

    With a label file the task is multi-label (weak AudioSet-style labels); without one, labels are
    the sorted set of names seen and the task is multi-label only if some row has several labels.
    Rows whose labels are unknown or whose file is missing are skipped and reported.
    """
    base = path.parent
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "labels"} <= set(reader.fieldnames):
            raise UserError("manifest needs the columns path,labels", path)
        if group_column and group_column not in reader.fieldnames:
            raise UserError(f"--group-by {group_column!r}: no such column (columns: {', '.join(reader.fieldnames)})",
                            path)
        rows = list(reader)
    split = lambda text: [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]  # noqa: E731
    if label_file:
        names, keys = read_label_file(label_file)
        multilabel = True
    else:
        names = sorted({t for r in rows for t in split(r["labels"])})
        keys = {n: i for i, n in enumerate(names)}
        multilabel = any(len(split(r["labels"])) > 1 for r in rows)
    problems, splits = [], {"train": [], "val": [], "test": []}
    for row in rows:
        audio = Path(row["path"]) if Path(row["path"]).is_absolute() else base / row["path"]
        tokens = split(row["labels"])
        unknown = [t for t in tokens if t not in keys]
        if unknown or not tokens:
            problems.append(f"{row['path']}: unknown label(s) {unknown}" if unknown else f"{row['path']}: no labels")
        elif not audio.is_file():
            problems.append(f"{row['path']}: no such file")
        elif (part := (row.get(split_column) or "train").strip()) not in splits:
            problems.append(f"{row['path']}: unknown split {part!r} (train, val or test)")
        else:
            splits[part].append(Item(audio, tuple(sorted({keys[t] for t in tokens})),
                                     group=row[group_column].strip() if group_column else None))
    if not splits["val"]:
        splits["train"], splits["val"] = holdout(splits["train"], val_fraction, seed)
    splits = {k: v for k, v in splits.items() if v}
    return DatasetIndex(names, "multilabel" if multilabel else "multiclass", splits, "manifest", problems)


def read_esc50(root: Path, fold: int = 1) -> DatasetIndex:
    """ESC-50: `meta/esc50.csv` (filename, fold, target, category) and `audio/`; fold `fold` validates."""
    if not 1 <= fold <= 5:
        raise UserError(f"ESC-50 has folds 1-5, got --fold {fold}")
    with open(root / "meta" / "esc50.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [""] * (max(int(r["target"]) for r in rows) + 1)
    for r in rows:
        names[int(r["target"])] = r["category"]
    splits, problems = {"train": [], "val": []}, []
    for r in rows:
        audio = root / "audio" / r["filename"]
        if not audio.is_file():
            problems.append(f"{r['filename']}: no such file")
            continue
        splits["val" if int(r["fold"]) == fold else "train"].append(Item(audio, (int(r["target"]),)))
    return DatasetIndex(names, "multiclass", splits, f"esc50 (fold {fold} held out)", problems)


def read_speech_commands(root: Path) -> DatasetIndex:
    """Speech Commands v2: word folders; validation_list.txt and testing_list.txt name the held-out files."""
    listed = {}
    for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        listed.update({line.strip(): split for line in (root / name).read_text().splitlines() if line.strip()})
    words = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    splits = {"train": [], "val": [], "test": []}
    for index, word in enumerate(words):
        for path in sorted((root / word).glob("*.wav")):
            splits[listed.get(f"{word}/{path.name}", "train")].append(Item(path, (index,)))
    return DatasetIndex(words, "multiclass", splits, "speechcommands")


def read_dataset(source: str | Path, *, fold: int = 1, label_file: str | Path | None = None,
                 val_fraction: float = 0.2, seed: int = 0, strong: str | Path | None = None,
                 background: str | None = None, group_by: str | None = None) -> DatasetIndex:
    """Recognise the layout of `source` (a folder, a CSV manifest or a strong-label TSV) and index it; `strong`
    (default: the folder's ``strong.tsv``) adds event boundaries, `background` names the "no event" label,
    `group_by` a manifest column whose values are scored apart (speaker, device)."""
    source = Path(source)
    if not source.exists():
        raise UserError("no such dataset", source)
    if group_by and source.suffix.lower() != ".csv":
        raise UserError("--group-by names a column of a CSV manifest (path,labels[,split],COLUMN)", source)
    if source.is_file():
        if source.suffix.lower() == ".tsv":
            data = read_strong_manifest(source, val_fraction, seed)
        elif source.suffix.lower() == ".csv":
            data = read_manifest(source, Path(label_file) if label_file else None, val_fraction, seed,
                                 group_column=group_by)
        else:
            raise UserError("a dataset is a folder, a .csv manifest or a .tsv strong-label table", source)
    elif (source / "meta" / "esc50.csv").is_file():
        data = read_esc50(source, fold)
    elif (source / "validation_list.txt").is_file() and (source / "testing_list.txt").is_file():
        data = read_speech_commands(source)
    else:
        data = read_folder(source, val_fraction, seed)
    root = source if source.is_dir() else source.parent
    if strong is None and source.is_dir() and (source / STRONG_FILE).is_file():
        strong = source / STRONG_FILE
    if strong is not None:
        data = with_strong_labels(data, Path(strong), root)
    if background is not None:
        if background not in data.labels:
            raise UserError(f"--background-class {background!r} is not a label of the data")
        data.background = background
    return data
