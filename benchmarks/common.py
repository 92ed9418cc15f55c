"""What every benchmark records so that a number can be reproduced: machine, versions, threads."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine_header(packages: tuple[str, ...] = ()) -> dict:
    from astedge.measure.machine import PACKAGES
    from astedge.measure.machine import machine_header as header

    return header(tuple(dict.fromkeys(PACKAGES + packages)))


def timeit(fn, *, warmup: int = 3, repeats: int = 30) -> dict:
    """Wall-clock statistics of `fn()` in milliseconds, after warm-up."""
    from astedge.timing import wall_times

    samples = sorted(wall_times(fn, warmup=warmup, repeats=repeats))
    return {"mean_ms": statistics.fmean(samples), "p50_ms": samples[len(samples) // 2],
            "min_ms": samples[0], "max_ms": samples[-1], "repeats": repeats}


def cuda_event_times(torch, call, *, iters: int, warmup: int) -> tuple[list[float], list[float]]:
    """Per-call device time (CUDA events around `call()`, synchronized after each) and host wall time, in ms."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    device, host = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        start.record()
        call()
        end.record()
        end.synchronize()
        host.append((time.perf_counter() - t0) * 1e3)
        device.append(start.elapsed_time(end))
    return device, host


def write_results(name: str, data: dict, markdown: str, echo: bool = True) -> Path:
    """benchmarks/results/<name>-<date>.{json,md}; one file per machine and date. `echo` prints the markdown and
    where it went."""
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{name}-{data['machine']['date'][:10]}"
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    if echo:
        print(markdown, end="")
        print(f"written {stem}.json/.md")
    return stem
