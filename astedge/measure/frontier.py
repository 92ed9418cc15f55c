"""``astedge frontier``: which model to put on which device — accuracy against measured latency, in one run.

Each candidate (a checkpoint, an export folder, or one ONNX file of an export: FP32, FP16 or INT8) is
scored on the user's labelled data (accuracy, or mAP for multi-label data) and timed on this CPU
round-robin (:func:`astedge.timing.round_robin`: batch 1, model input -> logits, all candidates in turn
so outside load hits them alike). Jetson Orin AGX / Nano latencies are **estimated** (never measured
here) from counted FLOPs and the bytes a forward pass moves, with a roofline anchored on a published
measurement (see :data:`DEVICES`); each candidate says whether TensorRT's fused INT8 attention could apply
(it needs <= 512 tokens). The Pareto front (no other candidate both more accurate and faster) is marked,
and the fastest candidate at or above ``--min-accuracy`` is named, per latency column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astedge.errors import UserError

#: Roofline constants for the estimates: effective dense FP16 throughput (FLOP/s) and memory bandwidth
#: (bytes/s), plus a per-layer launch floor. AGX Orin: NanoOWL's OWL-ViT B/16@768 image encoder (about 293
#: GMACs = 586 GFLOP) runs at 25 FPS in TensorRT FP16 on AGX Orin MAXN (NVIDIA-AI-IOT/nanoowl): 14.6
#: TFLOP/s effective; LPDDR5 204.8 GB/s. Orin Nano 8 GB (MAXN SUPER): half the SMs at about 0.8x the clock,
#: 102 GB/s. INT8 doubles the GEMM throughput (attention over more than 512 tokens stays FP16).
DEVICES = {
    "orin_agx": dict(name="Jetson AGX Orin (MAXN)", flops=14.6e12, bandwidth=204.8e9 * 0.7, layer_floor_s=60e-6),
    "orin_nano": dict(name="Jetson Orin Nano 8 GB (MAXN SUPER)", flops=14.6e12 * 0.4, bandwidth=102e9 * 0.7,
                      layer_floor_s=60e-6),
}
ESTIMATE_METHOD = ("roofline: max(FLOPs / effective FP16 FLOP/s, bytes moved / (0.7 x bandwidth)) + 60 us per "
                   "transformer layer; anchored on NanoOWL B/16@768 at 25 FPS on AGX Orin MAXN; INT8 halves the "
                   "GEMM time when attention has <= 512 tokens, else the MLP/projection GEMMs only. An ESTIMATE: "
                   "measure on the device with astedge bench")
#: TensorRT's fused INT8 multi-head attention needs sequences of at most this many tokens.
INT8_MHA_TOKENS = 512


@dataclass
class Candidate:
    """One model to compare, resolved to what is run and how it is described."""

    path: Path
    label: str
    precision: str  # fp32, fp16, int8
    backend: object


def open_candidate(path: str | Path, threads: int | None = None) -> Candidate:
    """A candidate path -> its backend on this CPU: checkpoints run in PyTorch, exports in ONNX Runtime
    (a named .onnx file runs that file: model.fp16.onnx, model.int8.onnx)."""
    from astedge.runtime.backends import choose_backend
    from astedge.runtime.model_path import resolve_model

    path = Path(path)
    ref = resolve_model(path)
    if ref.kind == "checkpoint":
        backend = choose_backend(path, "torch").backend
        return Candidate(path, path.stem, "fp32", backend)
    backend = choose_backend(path, "onnxruntime-cpu", threads=threads).backend
    label = ref.path.name + (f"/{ref.onnx.name}" if ref.onnx is not None else "")
    precision = "int8" if ref.onnx is not None and "int8" in ref.onnx.name else backend.precision
    return Candidate(path, label, precision, backend)


def estimate_ms(gflops: float, params: float, activation_bytes: float, depth: int, tokens: int,
                precision: str, device: str) -> float:
    """Estimated batch-1 latency on a Jetson (see :data:`ESTIMATE_METHOD`)."""
    spec = DEVICES[device]
    weight_bytes = params * (1 if precision == "int8" else 2)
    compute = gflops * 1e9 / spec["flops"]
    if precision == "int8":
        attention_share = 0.25 if tokens > INT8_MHA_TOKENS else 0.0  # unquantized attention keeps its FP16 time
        compute = compute * attention_share + compute * (1 - attention_share) / 2
    memory = (weight_bytes + activation_bytes) / spec["bandwidth"]
    return 1e3 * (max(compute, memory) + depth * spec["layer_floor_s"])


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For (accuracy, latency) points: True where no other point is at least as accurate and at least as fast,
    and strictly better in one."""
    front = []
    for i, (acc, lat) in enumerate(points):
        dominated = any((a >= acc and t <= lat) and (a > acc or t < lat) for j, (a, t) in enumerate(points) if j != i)
        front.append(not dominated)
    return front


def frontier(paths: list[str | Path], eval_data: str | Path, *, split: str | None = None, rounds: int = 10,
             threads: int | None = None, min_accuracy: float | None = None, log=None) -> dict:
    """Measure every candidate (see the module docstring); returns the report (rows, method, choices)."""
    from astedge.runtime.model_path import model_configs
    from astedge.data.datasets import read_dataset
    from astedge.measure.evaluation import clip_metrics, score_clips
    from astedge.measure.machine import machine_header
    from astedge.measure.metrics import main_metric
    from astedge.timing import round_robin

    log = log or (lambda message: None)
    if not paths:
        raise UserError("give at least one candidate model")
    data = read_dataset(eval_data)
    split = split or ("test" if data.splits.get("test") else "val")
    metric = main_metric(data.task)
    candidates = [open_candidate(p, threads) for p in paths]
    rows, calls = [], {}
    try:
        for c in candidates:
            config, features = model_configs(c.path)
            scores, targets = score_clips(c.backend, data, split, log=log)
            columns = [list(c.backend.labels).index(label) for label in data.labels]
            quality = clip_metrics(scores, targets, data.task, columns)
            x = np.random.default_rng(0).standard_normal((1, features.target_length, features.num_mel_bins))
            calls[c.label] = (lambda b=c.backend, x=x.astype(np.float32): b.run(x))
            rows.append({"candidate": c.label, "path": str(c.path), "precision": c.precision,
                         "backend": c.backend.name, metric: quality[metric], "clips": quality["clips"],
                         "embed_dim": config.embed_dim, "depth": config.depth,
                         "strides": [config.fstride, config.tstride], "patch": list(config.patch_size),
                         "tokens": config.num_patches + 2, "fused_int8_attention": config.num_patches + 2
                         <= INT8_MHA_TOKENS, **_counts(config)})
        log(f"timing {len(calls)} candidates round-robin on this CPU ({rounds} rounds, batch 1)")
        times = round_robin(calls, rounds, warmup=2)
    finally:
        for c in candidates:
            c.backend.close()
    for row in rows:
        samples = times[row["candidate"]]
        row["cpu_ms_p50"], row["cpu_ms_min"] = float(np.median(samples)), float(np.min(samples))
        for device in DEVICES:
            row[f"est_{device}_ms"] = (None if row["gflops"] is None else
                                       round(estimate_ms(row["gflops"], row["params_m"] * 1e6, row["activation_bytes"],
                                                         row["depth"], row["tokens"], row["precision"], device), 2))
    for row, front in zip(rows, pareto([(r[metric], r["cpu_ms_p50"]) for r in rows]), strict=True):
        row["pareto"] = front
    report = {"machine": machine_header(), "data": str(eval_data), "split": split, "metric": metric,
              "latency": f"ONNX Runtime / PyTorch on this CPU, batch 1, fbank -> logits, median of {rounds} "
                         "round-robin rounds", "estimate_method": ESTIMATE_METHOD, "rows": rows,
              "min_accuracy": min_accuracy, "choices": _choices(rows, metric, min_accuracy)}
    return report


def _counts(config) -> dict:
    """Parameters, FLOPs and activation bytes (torch on the meta device; None where torch is absent)."""
    try:
        from astedge.measure.costs import count_flops, count_parameters, peak_activation_bytes
    except ImportError:
        return {"params_m": None, "gflops": None, "activation_bytes": None}
    return {"params_m": round(count_parameters(config) / 1e6, 3), "gflops": round(count_flops(config) / 1e9, 3),
            "activation_bytes": peak_activation_bytes(config)}


def _choices(rows: list[dict], metric: str, min_accuracy: float | None) -> dict:
    """The fastest candidate at or above `min_accuracy` for each latency column."""
    eligible = [r for r in rows if min_accuracy is None or r[metric] >= min_accuracy]
    out = {}
    for column in ("cpu_ms_p50", *(f"est_{d}_ms" for d in DEVICES)):
        timed = [r for r in eligible if r.get(column) is not None]
        out[column] = min(timed, key=lambda r: r[column])["candidate"] if timed else None
    return out


def markdown(report: dict) -> str:
    metric = report["metric"]
    lines = [f"# Accuracy vs latency — {report['data']} ({report['split']}), {report['machine']['cpu']}, "
             f"{report['machine']['date'][:10]}", "", f"- latency: {report['latency']}",
             f"- Jetson columns are ESTIMATES ({report['estimate_method']})", "",
             f"| candidate | precision | {metric} | CPU ms p50 | est. AGX Orin ms | est. Orin Nano ms | params M | "
             "GFLOPs | tokens | fused INT8 MHA | Pareto |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        est = [("-" if r[f"est_{d}_ms"] is None else f"{r[f'est_{d}_ms']:.1f}") for d in DEVICES]
        lines.append(f"| {r['candidate']} | {r['precision']} | {r[metric]:.4f} | {r['cpu_ms_p50']:.2f} | {est[0]} | "
                     f"{est[1]} | {r['params_m'] if r['params_m'] is not None else '-'} | "
                     f"{r['gflops'] if r['gflops'] is not None else '-'} | {r['tokens']} | "
                     f"{'yes' if r['fused_int8_attention'] else 'no'} | {'*' if r['pareto'] else ''} |")
    choices = report["choices"]
    floor = f" with {metric} >= {report['min_accuracy']}" if report["min_accuracy"] is not None else ""
    lines += ["", f"Fastest{floor}: CPU {choices['cpu_ms_p50']}; AGX Orin (est.) {choices['est_orin_agx_ms']}; "
              f"Orin Nano (est.) {choices['est_orin_nano_ms']}."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path):
    """Accuracy against CPU latency, the Pareto front joined, as a PNG."""
    from matplotlib.figure import Figure

    metric, rows = report["metric"], report["rows"]
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        ax.scatter(r["cpu_ms_p50"], r[metric], marker="o" if r["pareto"] else "x", color="tab:blue" if r["pareto"]
                   else "tab:gray")
        ax.annotate(r["candidate"], (r["cpu_ms_p50"], r[metric]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = sorted((r["cpu_ms_p50"], r[metric]) for r in rows if r["pareto"])
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), color="tab:blue", alpha=0.5)
    ax.set_xscale("log" if max(r["cpu_ms_p50"] for r in rows) / max(1e-9, min(r["cpu_ms_p50"] for r in rows)) > 20
                  else "linear")
    ax.set_xlabel("CPU latency, batch 1 (ms, median)")
    ax.set_ylabel(metric)
    ax.set_title(f"{Path(report['data']).name} ({report['split']}): Pareto front joined", fontsize=10)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110, format="png")
    return path
