"""Clocks and timing: UTC timestamps, the one round-robin timing loop, and latency statistics.

Every measured number in astedge (``astedge bench``, ``astedge models``, ``listen``'s summary, the scripts in
benchmarks/) comes through here, so warm-up, ordering, pauses and percentiles mean the same everywhere.
Standard library and numpy only.
"""

from __future__ import annotations

import datetime
import time

import numpy as np

#: Pause before each contender's turn: ONNX Runtime's and OpenMP's worker threads spin for a while after a
#: call, and on a few-core CPU the next runtime in the same process then competes with them (measured on
#: 2 vCPUs: torch right after ONNX Runtime 18 % slower, up to 7x under outside load; gone with 50 ms).
DEFAULT_PAUSE_MS = 50.0


def utc_now() -> str:
    """The current time as an ISO 8601 UTC timestamp to the second (checkpoints, artefacts, reports)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def round_robin(calls: dict, rounds: int | None = None, *, warmup: int = 1, pause_ms: float = DEFAULT_PAUSE_MS,
                turn=lambda key: key, seconds: float | None = None, min_rounds: int = 1, after=None) -> dict:
    """key -> per-call ms: every round calls each function once, in order, so outside load hits all alike.

    A pause comes before each contender's turn (``turn(key)`` names the contender; its calls then run
    back to back). `rounds` fixes the number of timed rounds; otherwise rounds go on until `seconds` have
    passed and at least `min_rounds` were run. `warmup` untimed rounds come first. ``after(key)``, when
    given, runs after each call, outside the timing (e.g. to read a GPU timer).
    """
    if (rounds is None) == (seconds is None):
        raise ValueError("give either rounds or seconds")
    for _ in range(warmup):
        for key, fn in calls.items():
            fn()
            if after:
                after(key)
    times = {key: [] for key in calls}
    started, done = time.perf_counter(), 0
    while True:
        previous = object()
        for key, fn in calls.items():
            if turn(key) != previous:
                time.sleep(pause_ms / 1e3)
                previous = turn(key)
            start = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - start) * 1e3)
            if after:
                after(key)
        done += 1
        if rounds is not None and done >= rounds:
            break
        if seconds is not None and done >= min_rounds and time.perf_counter() - started >= seconds:
            break
    return times


def wall_times(fn, *, warmup: int, repeats: int) -> list[float]:
    """Wall-clock milliseconds of each of `repeats` calls of `fn()`, after `warmup` untimed calls."""
    return round_robin({"fn": fn}, repeats, warmup=warmup, pause_ms=0.0)["fn"]


def summarize(samples_ms, *, batch: int, audio_seconds: float) -> dict:
    """Statistics of one stage's per-call times (ms) for calls of `batch` clips of `audio_seconds` each.

    mean, std, min, p50, p90, p95, p99, max (numpy's linear percentiles), throughput in clips per second
    (batch / mean), ``x_realtime`` = audio seconds / compute seconds and ``real_time_factor`` its inverse.
    """
    data = np.asarray(samples_ms, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("summarize needs a non-empty 1-D sequence of times")
    if batch < 1 or audio_seconds <= 0:
        raise ValueError("batch must be >= 1 and audio_seconds > 0")
    mean = float(data.mean())
    p50, p90, p95, p99 = (float(v) for v in np.percentile(data, [50, 90, 95, 99]))
    compute_s = mean / 1e3
    return {
        "count": int(data.size), "mean_ms": mean, "std_ms": float(data.std()), "min_ms": float(data.min()),
        "p50_ms": p50, "p90_ms": p90, "p95_ms": p95, "p99_ms": p99, "max_ms": float(data.max()),
        "throughput_clips_s": batch / compute_s if compute_s > 0 else float("inf"),
        "x_realtime": batch * audio_seconds / compute_s if compute_s > 0 else float("inf"),
        "real_time_factor": compute_s / (batch * audio_seconds),
    }


def percentiles(values, points=(50, 99), *, stats: bool = True) -> dict | None:
    """``p50``, ``p99`` (or the percentiles at `points`, numpy's linear ones) of a list of milliseconds, with its
    mean, max and count unless `stats` is False; rounded to the microsecond for reports (None when empty)."""
    if not len(values):
        return None
    data = np.asarray(values, dtype=np.float64)
    out = {f"p{p:g}": round(float(v), 3) for p, v in zip(points, np.percentile(data, points), strict=True)}
    if stats:
        out.update(mean=round(float(data.mean()), 3), max=round(float(data.max()), 3), count=int(data.size))
    return out
