"""AST on a CUDA GPU, 10 s windows: PyTorch eager FP32/FP16, torch.compile and CUDA graphs, Hugging Face, and
astedge's backends (TensorRT FP16, ONNX Runtime CUDA, torch) end to end with the CUDA fbank, in one process.

NOT RUN YET: written for a machine with an NVIDIA GPU (x86 or Jetson) and torch with CUDA; the machine that
wrote it has no GPU. Needs: torch (CUDA), timm, onnx/onnxruntime/onnxslim (export); optional: tensorrt
(engine + TensorRT backend), onnxruntime-gpu (ONNX Runtime CUDA), transformers (HF reference), the CUDA
fbank library (cmake -S . -B build && cmake --build build; else the numpy fbank is used and said so).

    python benchmarks/model_gpu.py [--sizes base] [--batches 1,8,32] [--iters 200] [--warmup 20]
    # writes benchmarks/results/model-gpu-<gpu>-<date>.{json,md}

Two parts, random weights (latency only), AudioSet shape (1024 x 128 -> 527):

1. PyTorch variants on device-resident input, timed with CUDA events around each call (synchronized per
   call; host wall time beside it): astedge ``ASTModel`` eager FP32 (TF32 matmuls off, PyTorch's default),
   eager FP16 (autocast), ``torch.compile`` FP16 (default mode) and ``torch.compile(mode="reduce-overhead")``
   FP16 (CUDA graphs), HF ``ASTForAudioClassification`` sdpa FP16 (``.half()``). End to end each also runs
   audio (host) -> H2D -> CUDA fbank kernel (``run_device`` on torch's stream) -> model -> logits (host).
2. astedge's backends through ``astedge.measure.bench.benchmark`` on an export of the same-size random model (FP16
   ONNX; a TensorRT FP16 engine built here when TensorRT is installed): fbank / model / end-to-end, plus
   the engine's GPU compute time from CUDA events; calls back to back (``pause_ms=0``, as trtexec).

Before measuring on a Jetson: ``sudo nvpmodel -q`` (and ``-m <mode>``), ``sudo jetson_clocks``; the
header records the power mode and whether clocks were locked (run as root for ``jetson_clocks --show``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cuda_event_times, machine_header, write_results  # noqa: E402

from astedge import timing  # noqa: E402
from astedge.measure import bench
from astedge.measure import bench_report
from astedge.measure import machine

WINDOW_S = 10.0
SAMPLES = int(WINDOW_S * 16000)


def cuda_times(torch, fn, x, *, iters: int, warmup: int) -> dict:
    """Per-call GPU time (CUDA events, synchronized after each call) and host wall time, in ms."""
    with torch.inference_mode():
        device, host = cuda_event_times(torch, lambda: fn(x), iters=iters, warmup=warmup)
    batch = x.shape[0]
    return {"gpu": timing.summarize(device, batch=batch, audio_seconds=WINDOW_S),
            "host": timing.summarize(host, batch=batch, audio_seconds=WINDOW_S)}


def host_times(fn, *, iters: int, warmup: int, batch: int) -> dict:
    samples = timing.wall_times(fn, warmup=warmup, repeats=iters)
    return timing.summarize(samples, batch=batch, audio_seconds=WINDOW_S)


def torch_variants(torch, size: str) -> tuple[dict, dict]:
    """name -> fn(x [B, 1024, 128] float32 on the GPU) -> logits; and name -> why it is missing."""
    from astedge.model.ast_model import ASTModel
    from astedge.model.config import SIZES, model_config

    torch.manual_seed(0)
    net = ASTModel(model_config(size)).eval().cuda()
    variants, missing = {}, {}
    variants["torch eager FP32"] = lambda x: net(x)

    def fp16(model):
        def run(x):
            with torch.autocast("cuda", torch.float16):
                return model(x)
        return run

    variants["torch eager FP16 (autocast)"] = fp16(net)
    for name, mode in (("torch.compile FP16", "default"), ("torch.compile reduce-overhead FP16 (CUDA graphs)",
                                                          "reduce-overhead")):
        try:
            variants[name] = fp16(torch.compile(net, mode=mode))
        except Exception as err:  # noqa: BLE001 - compile backends fail in many ways; recorded
            missing[name] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    try:
        from transformers import ASTConfig, ASTForAudioClassification

        dims = SIZES[size]
        config = ASTConfig(hidden_size=dims["embed_dim"], num_hidden_layers=dims["depth"],
                           num_attention_heads=dims["num_heads"], intermediate_size=4 * dims["embed_dim"],
                           num_labels=527)
        hf = ASTForAudioClassification._from_config(config, attn_implementation="sdpa").eval().half().cuda()
        variants["HF transformers sdpa FP16"] = lambda x: hf(input_values=x.half()).logits
    except ImportError as err:
        missing["HF transformers sdpa FP16"] = str(err)
    return variants, missing


def measure_torch(torch, size: str, batches: list[int], iters: int, warmup: int) -> dict:
    from astedge.features.cuda_fbank import CudaFbank, CudaFbankUnavailable
    from astedge.features.fbank import DEFAULT

    variants, missing = torch_variants(torch, size)
    try:
        fbank = CudaFbank(DEFAULT, model_input=True)
    except CudaFbankUnavailable as err:
        fbank, missing["end to end (CUDA fbank)"] = None, str(err)
    results = {}
    for batch in batches:
        x = torch.randn(batch, 1024, 128, device="cuda")
        wave = (0.1 * np.random.default_rng(0).standard_normal((batch, SAMPLES))).astype(np.float32)
        wave_dev = torch.empty((batch, SAMPLES), device="cuda")
        feats_dev = torch.empty((batch, 1024, 128), device="cuda")
        for name, fn in variants.items():
            row = {}
            try:
                row["model"] = cuda_times(torch, fn, x, iters=iters, warmup=warmup)
                if fbank is not None:
                    def end_to_end(fn=fn, wave=wave, wave_dev=wave_dev, feats_dev=feats_dev, batch=batch):
                        with torch.inference_mode():
                            wave_dev.copy_(torch.from_numpy(wave))  # H2D of the host audio
                            fbank.run_device(wave_dev.data_ptr(), feats_dev.data_ptr(), batch, SAMPLES,
                                             stream=torch.cuda.current_stream())
                            return fn(feats_dev).float().cpu()  # D2H of the logits (synchronizes)
                    row["end_to_end_host"] = host_times(end_to_end, iters=iters, warmup=warmup, batch=batch)
            except Exception as err:  # noqa: BLE001 - e.g. out of memory at a large batch; recorded, others go on
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
                torch.cuda.empty_cache()
            results[f"{name} | batch {batch}"] = row
    return {"results": results, "missing": missing}


def measure_backends(size: str, batches: list[int], iters: int, warmup: int) -> dict:
    """astedge's backends on an export of a random model (engine built here when TensorRT is usable)."""
    from astedge.deploy.engine import tensorrt_status
    from astedge.measure.random_weights import random_export
    from astedge.model.config import model_config

    engine, why_not = tensorrt_status()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    if not engine:
        log(f"no TensorRT engine: {why_not}")
    with random_export(model_config(size), fp16=True, engine=engine, profile="workstation", name=size, log=log) as folder:
        return bench.benchmark(folder, backends="tensorrt,onnxruntime-cuda,torch", batches=batches,
                               iters=iters, warmup=warmup, pause_ms=0.0, log=log)


def markdown(data: dict) -> str:
    h = data["machine"]
    gpu = h["gpu"]["devices"][0] if h["gpu"]["devices"] else {"name": "?", "compute_capability": "?"}
    lines = [f"# AST on {gpu['name']} (sm {gpu['compute_capability']}), 10 s windows — {h['date'][:10]}", ""]
    lines += [f"- {line}" for line in data["header_lines"]] + [""]
    for size, part in data["torch"].items():
        lines += [f"## PyTorch variants, AST-{size} (CUDA events per call; random weights)", "",
                  "| variant | batch | GPU p50 ms | GPU p90 | GPU min | host p50 | e2e incl. CUDA fbank, host p50 "
                  "| clips/s (GPU mean) |", "|---|---|---|---|---|---|---|---|"]
        for key, row in part["results"].items():
            name, batch = key.split(" | batch ")
            if "error" in row:
                lines.append(f"| {name} | {batch} | {row['error']} | | | | | |")
                continue
            g, host = row["model"]["gpu"], row["model"]["host"]
            e2e = row.get("end_to_end_host")
            lines.append(f"| {name} | {batch} | {g['p50_ms']:.2f} | {g['p90_ms']:.2f} | {g['min_ms']:.2f} | "
                         f"{host['p50_ms']:.2f} | {e2e['p50_ms']:.2f} | {g['throughput_clips_s']:.0f} |" if e2e else
                         f"| {name} | {batch} | {g['p50_ms']:.2f} | {g['p90_ms']:.2f} | {g['min_ms']:.2f} | "
                         f"{host['p50_ms']:.2f} | - | {g['throughput_clips_s']:.0f} |")
        lines += [""] + [f"- missing: {name}: {why}" for name, why in part["missing"].items()] + [""]
    for size, report in data["backends"].items():
        lines += [bench_report.markdown(report, title=f"astedge backends, AST-{size}").replace("# ", "## ", 1), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="base")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--skip-backends", action="store_true", help="only the PyTorch variants")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("model_gpu.py needs torch with a CUDA GPU (torch.cuda.is_available() is False)")
    batches = bench.parse_batches(args.batches)
    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default, made explicit: FP32 means FP32
    data = {"benchmark": "model-gpu", "clip": f"{WINDOW_S:g} s, 16 kHz, Gaussian noise", "weights": "random",
            "torch": {}, "backends": {}, "settings": {"iters": args.iters, "warmup": args.warmup, "batches": batches,
                                                      "tf32_matmul": False}}
    for size in args.sizes.split(","):
        data["torch"][size] = measure_torch(torch, size, batches, args.iters, args.warmup)
        torch.cuda.empty_cache()
        if not args.skip_backends:
            data["backends"][size] = measure_backends(size, batches, args.iters, args.warmup)
    header = machine_header(("transformers", "timm", "tensorrt-cu12", "tensorrt-cu13"))
    header.update(gpu=machine.gpu_info(), jetson=machine.jetson_info(), threads=machine.threads_info(None),
                  runtimes=machine.runtime_versions())
    data["machine"] = header
    data["header_lines"] = bench_report.machine_lines(header) + [
        f"timing: PyTorch variants {args.warmup} warm-up + {args.iters} calls each, CUDA events per call (synchronized); "
        f"backends via astedge.measure.bench, calls back to back; TF32 matmuls off"]
    gpu = header["gpu"]["devices"][0]["name"] if header["gpu"]["devices"] else "gpu"
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    text = markdown(data)
    write_results(f"model-gpu-{slug}", data, text)


if __name__ == "__main__":
    main()
