"""End-to-end window latency on a GPU: audio (host) -> logits (host) through astedge's device pipeline, against the
engine alone, with whichever engine exists here: TensorRT (an engine built from a random-weight AST export), or torch
CUDA (the same AST in FP16 eager, driven on the pipeline's stream). ONNX Runtime's CUDA provider is not wired to the
pipeline (it would need its own stream through `user_compute_stream`); the report says which engines were missing.

    python benchmarks/device/e2e_window.py [--size base] [--iters 100] [--out DIR] [--budget-s 150]

Per engine, batch 1, one 10 s window of noise:
- engine only: bind + enqueue + wait (TensorRT replayed from a CUDA graph, as the pipeline does);
- file window: ``BatchPipeline.run_audio`` (pinned audio -> H2D -> CUDA fbank into the input binding -> engine ->
  D2H of the logits -> blocking-sync wait), graphs where the engine allows;
- stream hop: ``StreamPipeline.classify`` at a 1 s hop (100 new frames per window, 898 moved);
each as host wall time per window (p50/p90) and, for the engine, device time from timing events. The check:
end to end within 10 % of engine only.

NOT RUN YET: written without a GPU; benchmarks/device/run.sh runs it where one is.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import RESULTS, machine_header  # noqa: E402

from astedge.features import cuda_driver  # noqa: E402
from astedge.features import cuda_fbank
from astedge.features import device_pipeline as dp
from astedge.features.fbank import FbankConfig  # noqa: E402

HOP = 16000
WINDOW = 160000


def percentiles(values: list[float]) -> dict:
    values = sorted(values)
    return {"p50_ms": values[len(values) // 2], "p90_ms": values[int(0.9 * (len(values) - 1))],
            "min_ms": values[0], "mean_ms": statistics.fmean(values), "count": len(values)}


class _CudaArray:
    """A device buffer as __cuda_array_interface__ (torch.as_tensor wraps it without a copy)."""

    def __init__(self, pointer: int, shape: tuple[int, ...]):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f4", "data": (pointer, False), "version": 3,
                                         "strides": None}


class TorchEngine:
    """AST in torch (FP16 autocast, eager) as a device_pipeline.Engine, on the pipeline's stream (not capturable:
    torch's allocator does not allow a foreign capture)."""

    def __init__(self, torch, size: str, config: FbankConfig, classes: int = 527):
        from astedge.model.ast_model import ASTModel
        from astedge.model.config import model_config

        torch.manual_seed(0)
        self.torch = torch
        self.net = ASTModel(model_config(size, target_length=config.target_length, num_classes=classes)).eval().cuda()
        self.frames, self.bins, self.classes = config.target_length, config.num_mel_bins, classes
        self.min_batch, self.max_batch = 1, 1

    def bind(self, batch, input_ptr, output_ptr, stream):
        torch = self.torch
        self.x = torch.as_tensor(_CudaArray(input_ptr, (batch, self.frames, self.bins)), device="cuda")
        self.y = torch.as_tensor(_CudaArray(output_ptr, (batch, self.classes)), device="cuda")
        self.stream = torch.cuda.ExternalStream(stream)

    def enqueue(self, stream):
        torch = self.torch
        with torch.cuda.stream(self.stream), torch.inference_mode(), torch.autocast("cuda", torch.float16):
            self.y.copy_(self.net(self.x).float())


def time_engine(driver, pipeline, engine, iters: int, graphs: bool) -> dict:
    """Engine alone on the pipeline's stream: host wall per call and device time (timing events)."""
    stream = pipeline.stream
    start, end = driver.event(timing=True), driver.event(timing=True)
    engine.bind(1, pipeline.input, pipeline.output, stream)
    graph = dp.Graphs(driver, stream, enabled=graphs)
    host, device = [], []
    for i in range(iters + 10):
        t0 = time.perf_counter()
        driver.record(start, stream)
        graph.run("engine", lambda: engine.enqueue(stream))
        driver.record(end, stream)
        driver.wait(end)
        if i >= 10:
            host.append((time.perf_counter() - t0) * 1e3)
            device.append(driver.elapsed_ms(start, end))
    graph.close()
    driver.destroy_event(start)
    driver.destroy_event(end)
    return {"host": percentiles(host), "device": percentiles(device), "graph": dict(graph.counts)}


def time_pipelines(driver, engine_factory, config, iters: int, graphs: bool) -> dict:
    rng = np.random.default_rng(0)
    stream_audio = (0.1 * rng.standard_normal(WINDOW + HOP * (iters + 12))).astype(np.float32)
    model = cuda_fbank.CudaFbank(config)
    frames = cuda_fbank.CudaFbank(config, model_input=False, normalize=True)
    engine = engine_factory()
    batch = dp.BatchPipeline(driver, engine, model, config, graphs=graphs)
    out = {"engine_only": time_engine(driver, batch, engine, iters, graphs)}
    wave = stream_audio[:WINDOW]
    host = []
    for i in range(iters + 10):
        t0 = time.perf_counter()
        batch.run_audio([wave])
        if i >= 10:
            host.append((time.perf_counter() - t0) * 1e3)
    out["file_window"] = {"host": percentiles(host), "graph": dict(batch.graphs.counts)}
    batch.close()
    stream_engine = engine_factory()
    session = dp.StreamPipeline(driver, stream_engine, frames, config, graphs=graphs)
    host = []
    for i in range(iters + 10):
        start = i * HOP
        t0 = time.perf_counter()
        session.classify(lambda a, b: stream_audio[a:b], start, start + WINDOW)
        if i >= 10:
            host.append((time.perf_counter() - t0) * 1e3)
    out["stream_hop"] = {"host": percentiles(host), "graph": dict(session.graphs.counts),
                         "steps": dict(session.steps), "frames_computed": session.frames_computed}
    session.close()
    model.close()
    frames.close()
    engine_ms = out["engine_only"]["host"]["p50_ms"]
    for key in ("file_window", "stream_hop"):
        out[key]["overhead_vs_engine_only"] = out[key]["host"]["p50_ms"] / engine_ms - 1.0
        out[key]["within_10_percent"] = out[key]["overhead_vs_engine_only"] <= 0.10
    return out


E2E_PROFILE = """name = "e2e"
description = "batch 1 only: the benchmark's engine (one static profile, a short build)"
[engine]
precision = "fp16"
min_batch = 1
opt_batch = 1
max_batch = 1
workspace_mib = 8192
builder_optimization_level = 3
stream_batch_1 = false
"""


def tensorrt_engines(size: str, stack, log) -> tuple:
    """(factory of batch-1 ContextEngines, feature config) of an engine built here from a random-weight AST export,
    or (None, why) when TensorRT or a GPU is missing. Everything it opens is closed by `stack`."""
    from astedge.deploy.engine import tensorrt_status

    ok, why = tensorrt_status()
    if not ok:
        return None, why
    import tempfile

    from astedge.runtime.backends.tensorrt import ContextEngine, TensorRTBackend
    from astedge.measure.random_weights import random_export
    from astedge.model.config import model_config

    profile = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "e2e.toml"
    profile.write_text(E2E_PROFILE)
    folder = stack.enter_context(random_export(model_config(size), fp16=True, engine=True, profile=str(profile),
                                               name=size, log=log))
    backend = TensorRTBackend(folder)
    stack.callback(backend.close)
    runner = backend.runner
    return (lambda: ContextEngine(runner, runner.engine.create_execution_context(), 0, 1, 1)), backend.feature_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="base")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    driver = cuda_driver.shared_driver()
    config = FbankConfig()
    report = {"benchmark": "e2e-window", "window": "10 s noise, batch 1; stream at a 1 s hop", "size": args.size,
              "engines": {}, "missing": {}}
    import contextlib

    with contextlib.ExitStack() as stack:
        factory, detail = tensorrt_engines(args.size, stack, log)
        if factory is None:
            report["missing"]["tensorrt"] = detail
        else:
            report["engines"]["tensorrt"] = time_pipelines(driver, factory, detail, args.iters, graphs=True)
    try:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} has no usable CUDA here")
        report["engines"]["torch-cuda-fp16-eager"] = time_pipelines(
            driver, lambda: TorchEngine(torch, args.size, config), config, args.iters, graphs=False)
    except (ImportError, RuntimeError) as err:
        report["missing"]["torch-cuda"] = str(err)
    report["missing"]["onnxruntime-cuda"] = "not wired to the device pipeline (needs user_compute_stream)"
    header = machine_header(("torch", "tensorrt", "onnxruntime", "onnxruntime-gpu"))
    header["gpu"] = driver.describe()
    report["machine"] = header
    slug = re.sub(r"[^a-z0-9]+", "-", header["gpu"]["name"].lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"e2e-window-{slug}-{header['date'][:10]}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# End-to-end window latency — {header['gpu']['name']}, {header['date'][:10]}", "",
             "| engine | engine only p50 ms (device) | file window p50 ms | stream hop p50 ms | overhead file / stream |",
             "|---|---|---|---|---|"]
    for name, r in report["engines"].items():
        lines.append(f"| {name} | {r['engine_only']['host']['p50_ms']:.3f} ({r['engine_only']['device']['p50_ms']:.3f}) | "
                     f"{r['file_window']['host']['p50_ms']:.3f} | {r['stream_hop']['host']['p50_ms']:.3f} | "
                     f"{100 * r['file_window']['overhead_vs_engine_only']:+.1f} % / "
                     f"{100 * r['stream_hop']['overhead_vs_engine_only']:+.1f} % |")
    lines += [""] + [f"- missing: {k}: {v}" for k, v in report["missing"].items()]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
