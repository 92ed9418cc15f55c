"""Presenting an ``astedge bench`` report: header lines, the markdown table, the latency plot.

The report itself (plain data, JSON-ready) comes from :func:`astedge.measure.bench.benchmark`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from astedge.measure.bench import GPU_STAGE, STAGES
from astedge.errors import UserError

STAGE_TITLES = {"fbank": "audio -> fbank", "model": "fbank -> logits", "end_to_end": "audio -> logits",
                GPU_STAGE: "GPU compute (CUDA events)"}
#: Short stage names for narrow tables.
STAGE_SHORT = {"fbank": "fbank", "model": "model", "end_to_end": "e2e", GPU_STAGE: "gpu"}


def machine_lines(h: dict) -> list[str]:
    """The machine part of a header (CPU, GPU and clocks, Jetson power mode, libraries, threads) as short lines."""
    lines = [f"machine: {h['cpu']}, {h['cores']} cores ({h['machine']}), Python {h['python']}, {h['date']}"]
    gpus = h["gpu"]["devices"]
    if gpus:
        smi = {g.get("index"): g for g in ((h["gpu"].get("nvidia_smi") or {}).get("gpus") or [])}
        for gpu in gpus:
            clocks = smi.get(str(gpu["index"]))
            text = f"GPU {gpu['index']}: {gpu['name']} (sm {gpu['compute_capability']}), driver {h['gpu']['driver']}"
            if clocks:
                text += (f"; clocks SM {clocks['clocks.sm']} / max {clocks['clocks.max.sm']}, memory "
                         f"{clocks['clocks.mem']} / max {clocks['clocks.max.mem']}, {clocks['pstate']}")
            lines.append(text)
    else:
        lines.append(f"GPU: none ({h['gpu']['error']})")
    jetson = h.get("jetson")
    if jetson:
        locked = {True: "locked (jetson_clocks)", False: "not locked (DVFS)", None: "unknown"}[jetson["clocks_locked"]]
        lines.append(f"Jetson: {jetson['l4t'] or 'L4T ?'}; power mode {jetson['power_mode'] or '?'}; clocks {locked}")
    versions = {**h["packages"], **{k: v for k, v in h.get("runtimes", {}).items() if isinstance(v, str)}}
    lines.append("libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    t = h["threads"]
    lines.append(f"threads: torch {t.get('torch', '-')}, ONNX Runtime {t.get('onnxruntime_intra_op', '-')}, "
                 "numpy fbank 1; "
                 f"{t['usable_cpus']} usable CPUs" + (f"; env {t['env']}" if t["env"] else ""))
    return lines


def header_lines(report: dict) -> list[str]:
    """The header as short human-readable lines (for the table and the markdown)."""
    m, s = report["model"], report["settings"]
    lines = machine_lines(report["header"])
    params = f", {m['params_m']:.1f} M params, {m['gflops_per_clip']:.1f} GFLOPs/clip" if m["params_m"] else ""
    lines.append(f"model: AST-{m['size']} ({m['embed_dim']}-d x {m['depth']}, patches {m['patches']}, input "
                 f"{m['input'][0]} x {m['input'][1]}, {m['classes']} classes{params}), {m['weights']}; "
                 f"window {m['window_seconds']:g} s")
    rounds = f"{s['iters']} rounds" if s["iters"] else f">= {s['seconds']:g} s and >= {s['min_rounds']} rounds"
    lines.append(f"timing: {s['warmup_rounds']} warm-up round(s) excluded, then {rounds} per batch, "
                 f"{s['order']}, {s['pause_ms']:g} ms pause before each backend's turn; {s['clock']}")
    lines.append("stages: fbank = audio -> model input; model = fbank -> logits (the backend's run); e2e = audio -> "
                 "logits in one call; gpu = engine compute only (CUDA events); clips/s = batch / mean; x RT = audio "
                 "seconds / compute seconds (mean)")
    return lines


def rows(report: dict) -> list[dict]:
    """One display row per backend, batch and stage."""
    out = []
    for result in report["results"]:
        for stage in (*STAGES, GPU_STAGE):
            if stage in result["stages"]:
                out.append({"backend": result["backend"], "precision": result["precision"], "device": result["device"],
                            "fbank": result["fbank"], "batch": result["batch"], "stage": stage,
                            **{k: v for k, v in result["stages"][stage].items() if k != "samples_ms"}})
    return out


def format_rate(value: float) -> str:
    """Clips per second or times real time: 3-4 significant digits."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def format_ms(value: float) -> str:
    """Milliseconds with 3-4 significant digits."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def markdown(report: dict, title: str | None = None) -> str:
    """The report as markdown: header bullets, one table, the backends that did not load."""
    m = report["model"]
    title = title or f"`astedge bench` — AST-{m['size']}, {m['weights']} — {report['header']['cpu']}"
    lines = [f"# {title}", ""] + [f"- {line}" for line in header_lines(report)] + [""]
    lines += ["| backend | precision | device | fbank | batch | stage | mean ms | p50 | p90 | p99 | min | max | n "
              "| clips/s | x real time |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows(report):
        times = " | ".join(format_ms(r[k]) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms"))
        lines.append(f"| {r['backend']} | {r['precision']} | {r['device']} | {r['fbank']} | {r['batch']} | "
                     f"{STAGE_TITLES[r['stage']]} | {times} | {r['count']} | {format_rate(r['throughput_clips_s'])} | "
                     f"{format_rate(r['x_realtime'])} |")
    if report["unavailable"]:
        lines += ["", "Not measured here:", ""]
        lines += [f"- {u['backend']}: {u['reason']}" for u in report["unavailable"]]
    return "\n".join(lines) + "\n"


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("--plot needs matplotlib, which is not installed: pip install matplotlib") from None


def plot(report: dict, path: str | Path) -> Path:
    """Latency distributions per backend (violin + box), one panel per stage and batch size, as a PNG."""
    require_matplotlib()
    from matplotlib.figure import Figure

    path = Path(path)
    batches = list(dict.fromkeys(r["batch"] for r in report["results"]))
    stages = [s for s in (*STAGES, GPU_STAGE) if any(s in r["stages"] for r in report["results"])]
    fig = Figure(figsize=(4.4 * len(stages), 3.4 * len(batches) + 0.8), layout="constrained")
    axes = fig.subplots(len(batches), len(stages), squeeze=False)
    for i, batch in enumerate(batches):
        for j, stage in enumerate(stages):
            ax = axes[i][j]
            chosen = [r for r in report["results"] if r["batch"] == batch and stage in r["stages"]]
            data = [r["stages"][stage]["samples_ms"] for r in chosen]
            ax.set_title(f"{STAGE_TITLES[stage]}, batch {batch}", fontsize=10)
            if not data:
                ax.set_axis_off()
                continue
            positions = list(range(1, len(data) + 1))
            if all(len(d) > 1 and np.ptp(d) > 0 for d in data):
                with contextlib.suppress(ValueError, np.linalg.LinAlgError):
                    ax.violinplot(data, positions, showextrema=False)
            ax.boxplot(data, positions=positions, widths=0.2, showfliers=True)
            ax.set_xticks(positions, [f"{r['backend']}\n{r['precision']}" for r in chosen], fontsize=8)
            low, high = min(min(d) for d in data), max(max(d) for d in data)
            if low > 0 and high / low > 30:
                ax.set_yscale("log")
            ax.set_ylabel("ms per call")
            ax.grid(axis="y", alpha=0.3)
    m, h = report["model"], report["header"]
    gpu = h["gpu"]["devices"][0]["name"] if h["gpu"]["devices"] else "no GPU"
    fig.suptitle(f"astedge bench: AST-{m['size']}, {m['input'][0]} frames, {m['weights']}; {h['cpu']} / {gpu}, "
                 f"{h['date'][:10]}", fontsize=11)
    fig.savefig(path, dpi=110)
    return path
