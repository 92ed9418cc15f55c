"""Seconds per training epoch of two checkouts of astedge, back to back on this machine (the before/after of a change).

Run: python benchmarks/train_speed_compare.py BEFORE_CHECKOUT DEMO_DATA KEYWORD_DATA [--epochs 3]
Each row runs `python -m astedge train` of one checkout (its own code on PYTHONPATH, this venv's packages) for
`--epochs` epochs and reports the mean seconds of every epoch after the first (which warms caches up), as its
metrics.jsonl records them (steps and validation). DEMO_DATA: `astedge data synth` output (e.g. the demo's
`demo/data`); KEYWORD_DATA: a keyword dataset (benchmarks/speech_data.py). Writes
benchmarks/results/train-speed-compare-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, write_results  # noqa: E402

HERE = Path(__file__).resolve().parents[1]


def epoch_seconds(checkout: Path, data: Path, args: list[str], epochs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        subprocess.run([sys.executable, "-m", "astedge", "train", str(data), "-o", str(Path(tmp) / "run"),
                        "--epochs", str(epochs), *args], env=env, check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    return [r["seconds"] for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("demo_data", type=Path)
    parser.add_argument("keyword_data", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    a = parser.parse_args()
    keyword = ["--preset", "speechcommands", "--model", "tiny"]
    rows = [  # (what, checkout, data, arguments)
        ("demo recipe as it was (16x16 patches, 192 wide, no frame head), the earlier code", a.before, a.demo_data,
         ["--preset", "demo"]),
        ("demo recipe now (16x8 patches, 64 wide, 104 frames, frame head), this code", HERE, a.demo_data,
         ["--preset", "demo"]),
        ("the same with a 4x MLP and 112 frames (the demo recipe of 2026-12-07)", HERE, a.demo_data,
         ["--preset", "demo", "--set", "mlp_ratio=4", "--set", "target_length=112"]),
        ("keyword from-scratch variant, the earlier code", a.before, a.keyword_data, keyword),
        ("keyword from-scratch variant now, --no-augment (like for like)", HERE, a.keyword_data,
         [*keyword, "--no-augment"]),
        ("keyword from-scratch variant now (waveform augmentation on)", HERE, a.keyword_data, keyword),
    ]
    results = []
    for what, checkout, data, args in rows:
        seconds = epoch_seconds(checkout, data, args, a.epochs)
        results.append({"configuration": what, "checkout": str(checkout), "data": str(data), "args": args,
                        "epoch_seconds": seconds, "mean_after_first": statistics.fmean(seconds[1:])})
        print(f"{what}: {seconds}", flush=True)
    header = machine_header()
    lines = [f"# Training speed, before and after — {header['cpu']}, {header['cores']} cores, {header['date'][:10]}",
             "", f"One run, back to back; seconds per epoch (steps + validation) after the first of {a.epochs}. "
             f"Earlier code: `{a.before}`.", "", "| configuration | s / epoch | epochs |", "|---|---|---|"]
    lines += [f"| {r['configuration']} | {r['mean_after_first']:.1f} | {', '.join(f'{s:.1f}' for s in r['epoch_seconds'])} |"
              for r in results]
    write_results("train-speed-compare", {"machine": header, "rows": results}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
