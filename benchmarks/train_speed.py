"""Seconds per training epoch on ~2,000 one-second clips, on this CPU: AST's published Speech Commands values on a
12-layer tiny AST, and the from-scratch variant astedge uses when init is random.

Run: python benchmarks/train_speed.py DATA [--epochs 2]   (DATA: a Speech Commands layout, e.g. made by
benchmarks/speech_data.py). Writes benchmarks/results/train-speed-cpu-<date>.{json,md}. Each configuration
trains `--epochs` epochs in one process after a warm-up epoch is excluded; the split of an epoch between
data (features, augmentation, batching) and the model (forward, backward, step) is measured by timing the
data loader alone over the same epoch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, write_results  # noqa: E402

CONFIGS = ("AST's speechcommands values, tiny, 12 layers, 10/10", "from-scratch variant (tiny, 4 layers, 128x2 strips)")


def recipe_for(name: str):
    from astedge.train.recipes import PRESETS, load_recipe

    if name.startswith("AST's"):  # the published values as they are, on a tiny 12-layer model
        return PRESETS["speechcommands"].with_overrides({"model": "tiny", "preset": "speechcommands",
                                                         "variant": "pretrained"})
    return load_recipe("speechcommands", overrides={"model": "tiny"})


def main() -> None:
    import numpy as np
    import torch

    from astedge.data.datasets import read_dataset
    from astedge.train.loop import train
    from astedge.train.clips import ClipDataset, epoch_indices, prepare_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    data = read_dataset(args.data)
    rows = []
    for name in CONFIGS:
        recipe = recipe_for(name).with_overrides({"epochs": args.epochs + 1})
        with tempfile.TemporaryDirectory() as tmp:
            result = train(data, Path(tmp) / "run", recipe, log=lambda *a: None, show_progress=False)
        seconds = [h["seconds"] for h in result.history[1:]]  # the first epoch warms caches up
        run = prepare_data(data, recipe, lambda *a: None)
        dataset = ClipDataset(run.splits["train"], len(data.labels), run.features, recipe, True, run.waves["train"])
        for warm in range(2):  # time the data path alone (features, augmentation, collation), after a warm pass
            dataset.epoch = warm + 1
            loader = torch.utils.data.DataLoader(dataset, batch_size=recipe.batch_size,
                                                 sampler=epoch_indices(len(dataset), warm + 1, recipe.seed, 0, 1))
            started = time.perf_counter()
            for _ in loader:
                pass
            data_s = time.perf_counter() - started
        rows.append({"config": name, "clips": len(run.splits["train"]), "batch": recipe.batch_size,
                     "seconds_per_epoch": float(np.mean(seconds)), "data_seconds_per_epoch": data_s,
                     "val_accuracy_last": result.history[-1]["accuracy"], "torch_threads": torch.get_num_threads()})
        print(rows[-1], flush=True)
    payload = {"benchmark": "train-speed-cpu", "machine": machine_header(), "data": args.data, "rows": rows}
    lines = [f"# Training speed — {payload['machine']['cpu']}, {payload['machine']['cores']} cores, "
             f"{payload['machine']['date'][:10]}", "", f"Data: {args.data}; {args.epochs} timed epoch(s) after one "
             "warm-up epoch; data = the loader alone over one epoch (features from memory, augmentation, batching).",
             "", "| configuration | clips | batch | s / epoch | of which data | torch threads |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['clips']} | {r['batch']} | {r['seconds_per_epoch']:.1f} | "
              f"{r['data_seconds_per_epoch']:.1f} | {r['torch_threads']} |" for r in rows]
    write_results("train-speed-cpu", payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
