"""The run folder's files besides the checkpoints: the folder check at the start, ``recipe.json`` and ``result.json``
(written whole), ``metrics.jsonl`` (a line an epoch, rewritten whole) and ``curves.png`` (redrawn after an epoch
when the drawing is :data:`REDRAW_S` old, and after the last: a drawing costs a quarter of a second, 3 % of a demo
epoch)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from astedge.errors import UserError
from astedge.files import atomic_write


def open_run_folder(run_dir: Path, resume: bool, force: bool) -> None:
    """Make `run_dir`; refuse a file there, or a folder holding a run unless resuming or forced."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError("exists and is not a folder; give the run a folder with -o", run_dir)
    if (run_dir / "last.safetensors").exists() and not (resume or force):
        raise UserError("already holds a training run: pass --resume to continue it or --force to start over",
                        run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def write_json(path: Path, data: dict) -> None:
    """`data` as indented JSON, atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(data, indent=2) + "\n")


#: Seconds between redrawings of ``curves.png`` during a run.
REDRAW_S = 30.0


def log_epoch(run_dir: Path, history: list[dict], metric: str, last: bool = True) -> None:
    """Write ``metrics.jsonl`` (a line an epoch, from the run state's history: a resumed run's file has every
    committed epoch once) and redraw ``curves.png`` when it is `last`, missing or :data:`REDRAW_S` old."""
    with atomic_write(run_dir / "metrics.jsonl", "w") as handle:
        handle.write("".join(json.dumps(record) + "\n" for record in history))
    curves = run_dir / "curves.png"
    if last or not curves.exists() or time.time() - curves.stat().st_mtime >= REDRAW_S:
        plot_curves(history, curves, metric)


def plot_curves(history: list[dict], path: Path, metric: str) -> None:
    """Training loss and validation metric per epoch, as a PNG beside the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(xlabel="epoch", ylabel="train loss", title="loss")
    right.plot(epochs, [h[metric] for h in history], marker="o", color="tab:green")
    right.set(xlabel="epoch", ylabel=f"val {metric}", title=metric)
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=80)
    plt.close(fig)
