"""GPU fbank for 10 s clips: astedge's fused CUDA kernel vs the same math as torch ops on the GPU vs the CPU reference.

Run on a machine with a CUDA GPU, torch with CUDA, and the library built (cmake -S . -B build && cmake --build build):

    python benchmarks/fbank_gpu.py [--iters 200]      # writes benchmarks/results/fbank-gpu-<gpu>-<date>.{json,md}

Measured, all producing the model input [B, 1024, 128] from float32 audio already on the device:
- latency at batch 1 (CUDA events around each call, and host wall time including launch and sync);
- throughput at batch 64 (CUDA events around back-to-back calls);
- astedge kernel: `run_device` (one launch), also replayed from a CUDA graph;
- torch ops: unfold, mean, pre-emphasis, window, torch.fft.rfft (cuFFT), abs().pow(2), dense mel matmul (FP32, TF32 off),
  clamp/log, pad, normalize — the torchaudio recipe without its per-call CPU work;
- the CPU numpy reference (astedge.features.model_input), one clip and 64 clips, for scale.
Parity of each GPU path against the CPU reference is recorded alongside.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cuda_event_times, machine_header, timeit, write_results  # noqa: E402

from astedge import cuda_fbank  # noqa: E402
from astedge import features as F  # noqa: E402

SAMPLES = 160000  # 10 s at 16 kHz


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


def event_stats(torch, fn, *, iters: int, warmup: int = 10) -> dict:
    """Per-call device time (CUDA events, synchronized after each call) and host wall time, in ms."""
    device, host = cuda_event_times(torch, fn, iters=iters, warmup=warmup)
    device.sort()
    host.sort()
    return {"device_p50_ms": device[len(device) // 2], "device_mean_ms": statistics.fmean(device),
            "device_min_ms": device[0], "host_p50_ms": host[len(host) // 2], "iters": iters}


def throughput(torch, fn, batch: int, *, iters: int, warmup: int = 5) -> dict:
    """Back-to-back calls between two events: ms per call and clips per second."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    per_call = start.elapsed_time(end) / iters
    return {"ms_per_batch": per_call, "clips_per_s": batch * 1e3 / per_call, "batch": batch, "iters": iters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU and torch with CUDA")
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 mel matmul (TF32 costs ~1 nat, fbank.md §6.3)
    extractor = cuda_fbank.CudaFbank()  # raises CudaFbankUnavailable with the reason when it cannot run
    gpu = torch.cuda.get_device_name()
    rng = np.random.default_rng(0)
    waves = {b: (0.1 * rng.standard_normal((b, SAMPLES))).astype(np.float32) for b in (1, 64)}
    x = {b: torch.from_numpy(w).cuda() for b, w in waves.items()}
    y = {b: torch.empty((b, 1024, 128), device="cuda") for b in waves}
    window = torch.from_numpy(np.array(F.window())).cuda()
    mel_t = torch.from_numpy(np.array(F.mel_filterbank()).T.copy()).cuda()
    stream = torch.cuda.current_stream()

    def ours(b):
        return lambda: extractor.run_device(x[b].data_ptr(), y[b].data_ptr(), b, SAMPLES, stream)

    def ops(b):
        return lambda: torch_model_input(torch, x[b], window, mel_t)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        extractor.run_device(x[1].data_ptr(), y[1].data_ptr(), 1, SAMPLES, torch.cuda.current_stream())

    results = {
        "astedge kernel": {"batch1": event_stats(torch, ours(1), iters=args.iters),
                           "batch64": throughput(torch, ours(64), 64, iters=args.iters)},
        "astedge kernel, CUDA graph replay": {"batch1": event_stats(torch, graph.replay, iters=args.iters)},
        "astedge numpy in/out (run_host, incl. copies)": {"batch1": event_stats(torch, lambda: extractor(waves[1]),
                                                                                 iters=args.iters // 4)},
        "torch ops (rfft + matmul)": {"batch1": event_stats(torch, ops(1), iters=args.iters),
                                      "batch64": throughput(torch, ops(64), 64, iters=args.iters)},
    }
    cpu1 = timeit(lambda: F.model_input(waves[1][0]), repeats=20)
    cpu64 = timeit(lambda: F.model_input(waves[64]), warmup=1, repeats=3)
    results["CPU numpy reference (astedge.features)"] = {
        "batch1": {"host_p50_ms": cpu1["p50_ms"], "iters": cpu1["repeats"]},
        "batch64": {"ms_per_batch": cpu64["p50_ms"], "clips_per_s": 64e3 / cpu64["p50_ms"], "batch": 64}}

    reference = F.model_input(waves[64][:4])
    ours(64)()
    parity = {"astedge kernel": float(np.abs(y[64][:4].cpu().numpy() - reference).max()),
              "torch ops (rfft + matmul)": float(np.abs(ops(64)()[:4].cpu().numpy() - reference).max())}
    torch.cuda.synchronize()

    machine = machine_header(("torch",))
    machine.update(gpu=gpu, cuda_runtime=torch.version.cuda, fbank_library=str(extractor.library))
    data = {"benchmark": "fbank-gpu", "clip": "10 s, 16 kHz, Gaussian noise -> model input [1024, 128]",
            "machine": machine, "results": results, "max_abs_diff_vs_cpu_reference (normalized)": parity}
    lines = [f"# GPU fbank, 10 s clips — {gpu}, {machine['date'][:10]}", "",
             f"CPU {machine['cpu']}; torch {torch.__version__} (CUDA {torch.version.cuda}).", "",
             "| implementation | batch 1 device p50 ms | batch 1 host p50 ms | batch 64 ms | batch 64 clips/s |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        b1, b64 = r.get("batch1", {}), r.get("batch64", {})
        cell = lambda d, k, f: (f % d[k]) if k in d else "—"  # noqa: E731
        lines.append(f"| {name} | {cell(b1, 'device_p50_ms', '%.4f')} | {cell(b1, 'host_p50_ms', '%.3f')} | "
                     f"{cell(b64, 'ms_per_batch', '%.3f')} | {cell(b64, 'clips_per_s', '%.0f')} |")
    lines += ["", "Max |Δ| vs the CPU reference (normalized model input, 4 clips): "
              + ", ".join(f"{k} {v:.2e}" for k, v in parity.items())]
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    path = write_results(f"fbank-gpu-{slug}", data, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written {path}.json/.md")
    extractor.close()


if __name__ == "__main__":
    main()
