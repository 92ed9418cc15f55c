"""GPU fbank for 10 s clips: astedge's fused CUDA kernel vs the same math as torch ops on the GPU vs the CPU reference.

Run on a machine with a CUDA GPU and the library built (cmake -S . -B build && cmake --build build); torch with
CUDA is only needed for the torch-ops comparison (skipped, and said so, without it):

    python benchmarks/fbank_gpu.py [--iters 200] [--out DIR]   # writes DIR/fbank-gpu-<gpu>-<date>.{json,md}
                                                              # (default benchmarks/results)

Measured, all producing the model input [B, 1024, 128] from float32 audio already on the device:
- the astedge kernel through the CUDA driver API (astedge.features.cuda_driver), as the runtime runs it: per call, a
  blocking-sync event pair around one launch (device time) and host wall time including the launch and the
  wait, at batch 1 and 64; also replayed from a CUDA graph (astedge.features.device_pipeline.Graphs);
- batch 64 throughput: back-to-back launches between two events (µs per clip);
- torch ops: unfold, mean, pre-emphasis, window, torch.fft.rfft (cuFFT), abs().pow(2), dense mel matmul (FP32, TF32
  off), clamp/log, pad, normalize - the torchaudio recipe without its per-call CPU work (CUDA events);
- the CPU numpy reference (astedge.features.fbank.model_input), one clip and 64 clips, for scale.
Parity against the CPU reference and the host build is recorded, and the targets (<= 25 µs per clip at batch 1
on an H100/H200-class GPU, >= 10x torch ops) are checked in the report.

NOT RUN YET on a GPU in this form (the driver-API version was written without one); benchmarks/device/run.sh runs it.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_header, timeit, write_results  # noqa: E402

from astedge.features import cuda_driver  # noqa: E402
from astedge.features import cuda_fbank
from astedge.features import fbank as F  # noqa: E402
from astedge.features.device_pipeline import Graphs  # noqa: E402

SAMPLES = 160000  # 10 s at 16 kHz
TARGET_US = 25.0
TARGET_SPEEDUP = 10.0


def torch_model_input(torch, wave, window, mel_t, config=F.DEFAULT):
    """features.model_input as torch ops on the GPU: [B, samples] -> [B, target_length, mel]."""
    frames = wave.unfold(-1, config.window_size, config.window_shift)  # [B, T, 400] view
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = (frames - config.preemphasis * previous) * window
    power = torch.fft.rfft(frames, n=config.n_fft).abs().pow(2)
    logmel = torch.matmul(power, mel_t).clamp_min(F.LOG_FLOOR).log()
    pad = config.target_length - logmel.shape[-2]
    logmel = torch.nn.functional.pad(logmel, (0, 0, 0, pad)) if pad > 0 else logmel[..., :config.target_length, :]
    return (logmel - np.float32(config.mean)) / np.float32(config.std * 2)


def _stats(device: list[float], host: list[float], batch: int) -> dict:
    device, host = sorted(device), sorted(host)
    p50 = device[len(device) // 2]
    return {"device_p50_ms": p50, "device_mean_ms": statistics.fmean(device), "device_min_ms": device[0],
            "host_p50_ms": host[len(host) // 2], "us_per_clip_device_p50": 1e3 * p50 / batch, "iters": len(device),
            "batch": batch}


def driver_timings(driver, stream, enqueue, *, iters: int, warmup: int, batch: int) -> dict:
    """Per call: timing events around `enqueue()` on `stream`, a blocking wait; device ms and host wall ms."""
    start, end = driver.event(timing=True), driver.event(timing=True)
    for _ in range(warmup):
        enqueue()
    driver.synchronize(stream)
    device, host = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        driver.record(start, stream)
        enqueue()
        driver.record(end, stream)
        driver.wait(end)
        host.append((time.perf_counter() - t0) * 1e3)
        device.append(driver.elapsed_ms(start, end))
    driver.destroy_event(start)
    driver.destroy_event(end)
    return _stats(device, host, batch)


def driver_throughput(driver, stream, enqueue, *, iters: int, batch: int) -> dict:
    start, end = driver.event(timing=True), driver.event(timing=True)
    enqueue()
    driver.synchronize(stream)
    driver.record(start, stream)
    for _ in range(iters):
        enqueue()
    driver.record(end, stream)
    driver.wait(end)
    per_call = driver.elapsed_ms(start, end) / iters
    driver.destroy_event(start)
    driver.destroy_event(end)
    return {"ms_per_batch": per_call, "us_per_clip": 1e3 * per_call / batch, "clips_per_s": batch * 1e3 / per_call,
            "batch": batch, "iters": iters}


def torch_timings(torch, fn, *, iters: int, batch: int, warmup: int = 10) -> dict:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    device, host = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        end.synchronize()
        host.append((time.perf_counter() - t0) * 1e3)
        device.append(start.elapsed_time(end))
    return _stats(device, host, batch)


def torch_throughput(torch, fn, *, iters: int, batch: int) -> dict:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    per_call = start.elapsed_time(end) / iters
    return {"ms_per_batch": per_call, "us_per_clip": 1e3 * per_call / batch, "clips_per_s": batch * 1e3 / per_call,
            "batch": batch, "iters": iters}


def load_torch_cuda():
    try:
        import torch
    except ImportError as err:
        return None, f"torch not installed ({err})"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} has no usable CUDA here"
    return torch, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    driver = cuda_driver.shared_driver()
    extractor = cuda_fbank.CudaFbank()  # raises CudaFbankUnavailable with the reason when it cannot run
    rng = np.random.default_rng(0)
    waves = {b: (0.1 * rng.standard_normal((b, SAMPLES))).astype(np.float32) for b in (1, 64)}
    stream = driver.stream()
    x = {b: driver.alloc(w.nbytes) for b, w in waves.items()}
    y = {b: driver.alloc(b * 1024 * 128 * 4) for b in waves}
    for b, w in waves.items():
        driver.copy_to_device(x[b], w.ctypes.data, w.nbytes, stream)
    driver.synchronize(stream)

    def ours(b):
        return lambda: extractor.run_device(x[b], y[b], b, SAMPLES, stream)

    graphs = Graphs(driver, stream)
    for _ in range(2):  # eager, then captured
        graphs.run("b1", ours(1))
    results = {
        "astedge kernel (driver API)": {"batch1": driver_timings(driver, stream, ours(1), iters=args.iters, warmup=10, batch=1),
                                        "batch64": driver_timings(driver, stream, ours(64), iters=args.iters // 4,
                                                                  warmup=3, batch=64),
                                        "batch64_throughput": driver_throughput(driver, stream, ours(64),
                                                                                iters=args.iters, batch=64)},
        "astedge kernel, CUDA graph replay": {"batch1": driver_timings(driver, stream, lambda: graphs.run("b1", ours(1)),
                                                                       iters=args.iters, warmup=10, batch=1)},
    }
    ours_host = timeit(lambda: extractor(waves[1]), repeats=max(10, args.iters // 4))
    results["astedge numpy in/out (run_host: copies + chunked staging)"] = {
        "batch1": {"host_p50_ms": ours_host["p50_ms"], "iters": ours_host["repeats"], "batch": 1}}

    # Parity of the device output (one D2H here, for the check only).
    out = np.empty((64, 1024, 128), np.float32)
    extractor.run_device(x[64], y[64], 64, SAMPLES, stream)
    driver.copy_to_host(out.ctypes.data, y[64], out.nbytes, stream)
    driver.synchronize(stream)
    parity = {"astedge kernel": float(np.abs(out[:4] - F.model_input(waves[64][:4])).max())}
    try:
        host = cuda_fbank.HostFbank()
        parity["astedge kernel vs host build (same arithmetic; logf may differ by 1 ulp)"] = float(
            np.abs(out[:4] - host(waves[64][:4])).max())
    except (FileNotFoundError, OSError) as err:
        parity["host build"] = f"unavailable: {err}"

    torch, why_not = load_torch_cuda()
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False  # FP32 mel matmul (TF32 costs ~1 nat, fbank.md §6.3)
        tx = {b: torch.from_numpy(w).cuda() for b, w in waves.items()}
        window = torch.from_numpy(np.array(F.window())).cuda()
        mel_t = torch.from_numpy(np.array(F.mel_filterbank()).T.copy()).cuda()
        ops = {b: (lambda b=b: torch_model_input(torch, tx[b], window, mel_t)) for b in waves}
        results["torch ops (rfft + matmul)"] = {"batch1": torch_timings(torch, ops[1], iters=args.iters, batch=1),
                                                "batch64": torch_timings(torch, ops[64], iters=args.iters // 4, batch=64),
                                                "batch64_throughput": torch_throughput(torch, ops[64], iters=args.iters,
                                                                                       batch=64)}
        parity["torch ops (rfft + matmul)"] = float(np.abs(ops[64]()[:4].cpu().numpy() - F.model_input(waves[64][:4])).max())
    cpu1 = timeit(lambda: F.model_input(waves[1][0]), repeats=20)
    cpu64 = timeit(lambda: F.model_input(waves[64]), warmup=1, repeats=3)
    results["CPU numpy reference (astedge.features.fbank)"] = {
        "batch1": {"host_p50_ms": cpu1["p50_ms"], "iters": cpu1["repeats"], "batch": 1},
        "batch64_throughput": {"ms_per_batch": cpu64["p50_ms"], "us_per_clip": 1e3 * cpu64["p50_ms"] / 64,
                               "clips_per_s": 64e3 / cpu64["p50_ms"], "batch": 64}}

    kernel = results["astedge kernel (driver API)"]
    targets = {"us_per_clip_batch1_device_p50": kernel["batch1"]["us_per_clip_device_p50"],
               "target_us_per_clip_batch1": TARGET_US,
               "met_us": kernel["batch1"]["us_per_clip_device_p50"] <= TARGET_US}
    if torch is not None:
        speed1 = results["torch ops (rfft + matmul)"]["batch1"]["device_p50_ms"] / kernel["batch1"]["device_p50_ms"]
        speed64 = (results["torch ops (rfft + matmul)"]["batch64_throughput"]["ms_per_batch"]
                   / kernel["batch64_throughput"]["ms_per_batch"])
        targets.update(speedup_vs_torch_batch1=speed1, speedup_vs_torch_batch64=speed64,
                       target_speedup=TARGET_SPEEDUP, met_speedup=min(speed1, speed64) >= TARGET_SPEEDUP)
    else:
        targets["torch_ops"] = f"not measured: {why_not}"

    gpu = driver.describe()
    machine = machine_header(("torch",))
    machine.update(gpu=gpu, fbank_library=str(extractor.library), torch_cuda=getattr(getattr(torch, "version", None), "cuda", None))
    data = {"benchmark": "fbank-gpu", "clip": "10 s, 16 kHz, Gaussian noise -> model input [1024, 128]",
            "machine": machine, "results": results, "targets": targets,
            "max_abs_diff_vs_cpu_reference (normalized)": parity}
    lines = [f"# GPU fbank, 10 s clips — {gpu['name']} (sm {gpu['compute_capability']}), {machine['date'][:10]}", "",
             f"CPU {machine['cpu']}; driver {gpu['driver']}; library {extractor.library}; "
             f"torch {getattr(torch, '__version__', '-')}.", "",
             "| implementation | batch 1 device p50 µs | batch 1 host p50 µs | batch 64 device µs/clip | batch 64 back-to-back µs/clip |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        b1, b64, thr = r.get("batch1", {}), r.get("batch64", {}), r.get("batch64_throughput", {})
        cell = lambda d, k: f"{1e3 * d[k]:.1f}" if k in d else "—"  # noqa: E731
        lines.append(f"| {name} | {cell(b1, 'device_p50_ms')} | {cell(b1, 'host_p50_ms')} | "
                     f"{b64.get('us_per_clip_device_p50', float('nan')):.2f} | {thr.get('us_per_clip', float('nan')):.2f} |"
                     .replace("nan", "—"))
    lines += ["", "Targets: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in targets.items()),
              "", "Max |Δ| vs the CPU reference (normalized model input, 4 clips): "
              + ", ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}" for k, v in parity.items())]
    slug = re.sub(r"[^a-z0-9]+", "-", gpu["name"].lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    import common

    common.RESULTS = args.out
    write_results(f"fbank-gpu-{slug}", data, "\n".join(lines) + "\n")
    graphs.close()
    for pointer in (*x.values(), *y.values()):
        driver.free(pointer)
    driver.destroy_stream(stream)
    extractor.close()


if __name__ == "__main__":
    main()
