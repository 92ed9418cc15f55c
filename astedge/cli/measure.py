"""Commands that measure: models (costs), frontier, bench."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from astedge.errors import UserError
from astedge.cli.app import app, log_line, print_json, progress, to_json
from astedge.cli.common import PRECISION_HELP, SMOOTHING, SMOOTHING_WINDOWS, model_path


@app.command(epilog="Example: astedge models --size base -o benchmarks/results/models-cpu.md   (--no-latency: counts only)")
def models(
    size: str = typer.Option("base", "--size", help="Model width/depth for the paper's configurations: tiny, small, base."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML with [[config]] tables (name, patch_size, "
                                          "fstride, tstride, target_length, size) instead of the paper's."),
    latency: bool = typer.Option(True, "--latency/--no-latency", help="Measure ONNX Runtime CPU latency (exports each)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="ONNX Runtime intra-op threads (default: all)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also write the table (.md) or data (.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """The cost of each configuration (the paper's Tables 5 and 6 by default): patches, params, FLOPs, memory, latency."""
    import os

    from astedge.measure import costs
    from astedge.files import atomic_write

    configs = costs.configs_from_toml(config, size) if config is not None else costs.paper_configs(size)
    with progress("counting, then timing" if latency else "counting", len(configs)) as advance:
        results = costs.costs(configs, latency=latency, threads=threads, progress=advance)
    from astedge.measure.machine import machine_header

    header = machine_header()
    title = (f"AST configurations at {size} size, batch 1 — CPU latency: ONNX Runtime FP32 on {header['cpu']}, "
             f"{threads or os.cpu_count()} threads, {header['date'][:10]}")
    data = {"machine": header, "threads": threads or os.cpu_count(), "flops_tool": "torch.utils.flop_counter",
            "configs": [r.to_dict() for r in results]}
    if output is not None:
        with atomic_write(output, "w") as handle:
            handle.write(to_json(data, indent=2) + "\n" if output.suffix == ".json"
                         else costs.markdown_table(results, f"# {title}"))
    if as_json:
        print_json(data)
        return
    table = Table("config", "patch", "strides", "grid", "patches", "params M", "GFLOPs", "act. MiB", "CPU ms best",
                  title=title)
    for r in results:
        table.add_row(r.name, f"{r.patch_size[0]}x{r.patch_size[1]}", f"{r.strides[0]}/{r.strides[1]}",
                      f"{r.grid[0]}x{r.grid[1]}", str(r.patches), f"{r.params_m:.2f}", f"{r.gflops:.1f}",
                      f"{r.activation_mib:.0f}", "-" if r.cpu_latency_ms is None else f"{r.cpu_latency_ms:.0f}")
    Console().print(table)



@app.command(epilog="Example: astedge frontier -m runs/teacher/best.safetensors -m runs/student/export "
                    "-m runs/student/export/model.int8.onnx --eval speech_commands/ --min-accuracy 0.9 -o frontier.md "
                    "--plot frontier.png   (the models may also be listed without -m)")
def frontier(
    candidates: list[Path] = typer.Argument(None, help="Models to compare, as -m gives them.", show_default=False),
    models: list[Path] = typer.Option([], "-m", "--model", help="A model to compare (repeatable): a checkpoint, an "
                                      "export folder, or one .onnx of an export (model.fp16.onnx, model.int8.onnx); "
                                      "default: $ASTEDGE_MODEL."),
    eval_data: Path = typer.Option(..., "--eval", help="Labelled data to score them on (its test split, else val)."),
    split: Optional[str] = typer.Option(None, "--split", help="Which split to score on (default test, else val)."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Name the fastest candidate at or "
                                                 "above this accuracy (mAP for multi-label data)."),
    rounds: int = typer.Option(10, "--rounds", min=1, help="Timed round-robin rounds on this CPU."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="ONNX Runtime intra-op threads."),
    output: list[Path] = typer.Option([], "-o", "--output", help="Also write the report: .json or .md (repeatable)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write accuracy vs latency (Pareto front) as a PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Accuracy on your data against measured CPU latency (and estimated Jetson latency) for each candidate."""
    from astedge.files import atomic_write
    from astedge.measure import frontier as fr
    from astedge.measure.bench_report import require_matplotlib

    _check_report_suffixes(output)
    if plot is not None:
        require_matplotlib()
    paths = [*(candidates or []), *models] or [model_path(None)]
    report = fr.frontier(paths, eval_data, split=split, rounds=rounds, threads=threads,
                         min_accuracy=min_accuracy, log=log_line)
    _write_reports(output, report, fr.markdown)
    if plot is not None:
        with atomic_write(plot) as handle:
            fr.plot(report, handle)
    if as_json:
        print_json(report)
    else:
        Console().print(fr.markdown(report), markup=False, highlight=False, soft_wrap=True)


@app.command(epilog="Example: astedge bench -m ast-audioset/ --backend all --batch 1,8,32 -o bench.json "
                    "--plot bench.png   (without a model: a random-weight AST of --size, latency only)")
def bench(
    model: Optional[Path] = typer.Option(None, "-m", "--model", help="Export folder, its astedge.json or model.onnx, "
                                         "or a .safetensors checkpoint (default: $ASTEDGE_MODEL, else a "
                                         "random-weight AST of --size, exported to a temp folder: latency only)."),
    size: Optional[str] = typer.Option(None, "--size", help="Without --model: tiny, small or base (default base)."),
    frames: Optional[int] = typer.Option(None, "--frames", min=16, help="Without --model: input frames (default 1024, "
                                         "a 10 s window; 512 = 5 s as ESC-50, 128 = 1 s as Speech Commands)."),
    backend: str = typer.Option("all", "--backend", help="all (every backend that loads here, and the export's INT8 "
                                "model on ONNX Runtime when it has one; the others are listed with why), or "
                                "comma-separated: tensorrt, onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt, "
                                "torch, auto, onnxruntime."),
    batch: str = typer.Option("1", "--batch", help="Batch sizes, comma-separated, e.g. 1,8,32."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed rounds per batch size."),
    iters: Optional[int] = typer.Option(None, "--iters", min=1, help="Timed rounds per batch size (default: as many "
                                        "as fit in --seconds, at least 10)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Time each batch size for at least this long "
                                            "(default 5)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch and ONNX Runtime intra-op threads "
                                          "(default: each library's own)."),
    pause_ms: float = typer.Option(50.0, "--pause-ms", min=0, help="Pause before each backend's turn so the previous "
                                   "runtime's spinning threads go idle; 0 runs calls back to back."),
    profile: str = typer.Option("workstation", "--profile", help="Without --model: the profile the random model is "
                                "exported (and its TensorRT engine built) with."),
    output: list[Path] = typer.Option([], "-o", "--output", help="Also write the report: .json (everything, "
                                      "samples included) or .md (header and table); repeatable."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the latency distributions per backend "
                                        "(violin + box) as a PNG (needs matplotlib)."),
    stream: bool = typer.Option(False, "--stream", help="Also time live windows mic-to-decision (capture buffer + "
                                "features + inference + decision) for --window/--hop/--smoothing."),
    window: Optional[float] = typer.Option(None, "--window", help="--stream: window in seconds (default: the model's)."),
    hop: Optional[float] = typer.Option(None, "--hop", help="--stream: seconds between windows (default 1)."),
    smoothing: str = SMOOTHING,
    smoothing_windows: int = SMOOTHING_WINDOWS,
    block_ms: float = typer.Option(50.0, "--block-ms", help="--stream: audio the capture buffers before delivering it "
                                   "(PortAudio's high latency: about 50 ms)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Time audio -> fbank, fbank -> logits and the whole window on each backend, with what makes it reproducible."""
    from astedge.measure import bench as benchmarks
    from astedge.measure import bench_report

    model = model_path(model, required=False)
    if model is not None and (size is not None or frames is not None):
        raise UserError(f"--size and --frames shape the random model built without a model; they do not apply to "
                        f"the model {model} (-m or $ASTEDGE_MODEL)")
    _check_report_suffixes(output)
    for target in (*output, plot):
        if target is not None and not target.parent.is_dir():
            raise UserError("its folder does not exist", target)
    if plot is not None:
        bench_report.require_matplotlib()
    report = benchmarks.benchmark(
        model, size=size or "base", frames=frames or 1024, backends=backend, batches=batch, precision=precision, warmup=warmup, iters=iters,
        seconds=seconds, threads=threads, pause_ms=pause_ms, profile=profile,
        stream=dict(window=window, hop=hop, smoothing=(smoothing, smoothing_windows), block_ms=block_ms)
        if stream else None, log=lambda message: log_line(message, style="dim"))
    _write_reports(output, report, bench_report.markdown)
    if plot is not None:
        bench_report.plot(report, plot)
    if as_json:
        print_json(report)
    else:
        _print_bench(report)


def _check_report_suffixes(outputs: list[Path]) -> None:
    """--output of frontier and bench: a report is written as .json or .md (refused before anything is measured)."""
    for target in outputs:
        if target.suffix not in (".json", ".md"):
            raise UserError("--output writes .json or .md", target)


def _write_reports(outputs: list[Path], report: dict, markdown) -> None:
    """Each --output: the whole report as .json, or `markdown(report)` as .md; atomically."""
    from astedge.files import atomic_write

    for target in outputs:
        with atomic_write(target, "w") as handle:
            handle.write(to_json(report, indent=2) + "\n" if target.suffix == ".json" else markdown(report))


def _print_bench(report: dict) -> None:
    """`astedge bench`'s terminal view: the header, a table per backend, the stream lines, what was not measured."""
    from rich import box

    from astedge.measure import bench_report

    console = Console()
    for line in bench_report.header_lines(report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for entry in report["backends"]:
        table = Table("batch", "stage", "mean", "p50", "p90", "p99", "min", "max", "clips/s", "x RT",
                      box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, title_justify="left",
                      title=f"{entry['name']} ({entry['precision']}, {entry['device']}; fbank: {entry['fbank']}), ms")
        for r in (r for r in bench_report.rows(report)
                  if (r["backend"], r["precision"]) == (entry["name"], entry["precision"])):
            table.add_row(str(r["batch"]), bench_report.STAGE_SHORT[r["stage"]],
                          *(bench_report.format_ms(r[k]) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms",
                                                                   "max_ms")),
                          bench_report.format_rate(r["throughput_clips_s"]), bench_report.format_rate(r["x_realtime"]))
        console.print(table)
    for entry in report.get("stream", []):
        m = entry["mic_to_decision_ms"]
        console.print(f"stream {entry['backend']}: {entry['window_s']:g} s windows every {entry['hop_s']:g} s, smoothing "
                      f"{entry['smoothing'][0]}: mic-to-decision p50 {m['p50']:.2f} ms, p90 {m['p90']:.2f} ms (capture "
                      f"{entry['capture_buffer_ms']:g} + features {entry['features_ms']['p50']:.2f} + inference "
                      f"{entry['inference_ms']['p50']:.2f} + decision {entry['decision_ms']['p50']:.3f} ms, p50)",
                      markup=False, highlight=False, soft_wrap=True)
    for missing in report["unavailable"]:
        console.print(f"not measured: {missing['backend']}: {missing['reason']}", markup=False, highlight=False,
                      soft_wrap=True, style="dim")
