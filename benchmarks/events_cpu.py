"""The decision layer's cost per window: smoothing + thresholds + hysteresis + N-of-M + events, on this CPU.

Run: python benchmarks/events_cpu.py [--windows 20000]
Writes benchmarks/results/events-cpu-<date>.{json,md}. The goal (issue: events) is <= 0.1 ms per window.
Scores are realistic sequences: a few classes rise and fall as events (others stay low), with noise, for a
10-class model and AudioSet's 527 classes, multi-label and single-label, with EMA or median smoothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, write_results  # noqa: E402

from astedge.runtime.events import EventConfig, EventDetector  # noqa: E402
from astedge.runtime.scores import Smoother  # noqa: E402


def scores(classes: int, windows: int, seed: int = 0) -> np.ndarray:
    """Low background scores with events: every ~30 windows one class rises for 5-40 windows."""
    rng = np.random.default_rng(seed)
    out = rng.random((windows, classes)) * 0.2
    k = 0
    while k < windows:
        length = int(rng.integers(5, 40))
        out[k:k + length, int(rng.integers(classes))] += 0.7
        k += length + int(rng.integers(5, 40))
    return np.clip(out, 0, 1)


def time_layer(classes: int, task: str, smoothing: tuple[str, int], windows: int) -> dict:
    labels = [f"class_{i}" for i in range(classes)]
    detector = EventDetector(labels, task, EventConfig(threshold=0.5, confirm=2, confirm_window=3, merge_gap=0.3))
    smoother = Smoother(*smoothing)
    rows = scores(classes, windows)
    samples = np.empty(windows)
    events = 0
    for k, row in enumerate(rows):
        t0 = time.perf_counter()
        events += len(detector.update(0.1 * k, 0.1 * k + 1.0, smoother(row)))
        samples[k] = time.perf_counter() - t0
    ms = samples[100:] * 1e3  # after warm-up
    return {"classes": classes, "task": task, "smoothing": list(smoothing), "windows": windows,
            "records": events, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20000)
    args = parser.parse_args()
    rows = [time_layer(classes, task, smoothing, args.windows)
            for classes in (10, 527) for task in ("multilabel", "multiclass")
            for smoothing in (("ema", 3), ("median", 5))]
    data = {"benchmark": "events-cpu", "machine": machine_header(), "rows": rows, "goal_ms": 0.1}
    lines = [f"# Decision layer per window — {data['machine']['cpu']}, {data['machine']['date'][:10]}", "",
             "Smoothing + per-class thresholds with hysteresis + 2-of-3 confirmation + merging, per window (after "
             f"100 warm-up windows; {args.windows} windows of synthetic event scores). Goal: <= 0.1 ms.", "",
             "| classes | task | smoothing | p50 ms | p99 ms | mean ms | records |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['classes']} | {r['task']} | {r['smoothing'][0]} {r['smoothing'][1]} | {r['p50_ms']:.4f} | "
              f"{r['p99_ms']:.4f} | {r['mean_ms']:.4f} | {r['records']} |" for r in rows]
    write_results("events-cpu", data, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
