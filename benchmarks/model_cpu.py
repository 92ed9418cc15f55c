"""AST on the CPU, one 10 s window (1024 frames), batch 1: Hugging Face transformers vs astedge, in one process.

Run: python benchmarks/model_cpu.py [--sizes tiny,small,base] [--rounds 15] [--base-rounds 5] [--threads N]
Writes benchmarks/results/model-cpu-<date>.{json,md}. Read the ratios, not the absolute numbers: all
contenders run in the same process, round-robin (a burst of other load hits them alike), each
contender's turn after a 50 ms pause (ONNX Runtime's and OpenMP's spinning worker threads would otherwise
slow whichever runtime comes next; see astedge/timing.py). Min and median are reported.

Per size (tiny, small, base; random weights, AudioSet shape 1024 x 128 -> 527 classes):

- Hugging Face ``ASTForAudioClassification`` FP32 from an ``ASTConfig`` with ``attn_implementation``
  "eager" and "sdpa" (transformers 5's default is sdpa), under ``torch.inference_mode``;
- astedge's backends on an exported model: ``torch`` (eager FP32), ``onnxruntime-cpu`` FP32, and
  ONNX Runtime on an INT8 model (``onnxruntime.quantization.quantize_dynamic``: QInt8 weights on
  MatMul/Gemm, activations quantized at run time);
- each model-only (fbank -> logits) and end to end (10 s of audio -> logits): Hugging Face's
  ``ASTFeatureExtractor`` (its numpy path: torchaudio is not installed) before HF's models, astedge's
  numpy fbank before astedge's. HF's end-to-end is feature extractor + model called directly (the
  lean form of ``pipeline("audio-classification")``, which adds decoding and post-processing).

INT8's accuracy cost is measured on the demo model (``astedge demo``: a tiny AST trained on the
synthetic 10-class data, 97.8 % held out): demo/run/best.safetensors or /tmp/demo1/run/best.safetensors,
its held-out split re-created with ``read_dataset(data, val_fraction=0.2, seed=0)``; FP32 vs INT8
accuracy and logit differences through ONNX Runtime. Skipped with a note when the checkpoint is absent.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, write_results  # noqa: E402

from astedge.features import fbank as F  # noqa: E402
from astedge.timing import DEFAULT_PAUSE_MS, round_robin, summarize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WINDOW_S = 10.0
SAMPLES = int(WINDOW_S * 16000)
DEMO_CHECKPOINTS = (ROOT / "demo" / "run" / "best.safetensors", Path("/tmp/demo1/run/best.safetensors"))
HF_EAGER, HF_SDPA = "HF transformers eager FP32", "HF transformers sdpa FP32"
ASTEDGE_TORCH, ASTEDGE_ORT, ASTEDGE_INT8 = "astedge torch FP32", "astedge ONNX Runtime FP32", "astedge ONNX Runtime INT8"
ASTEDGE_QDQ = "astedge ONNX Runtime INT8 static Q/DQ (export --int8)"
ASTEDGE_QDQ_ATTN = "astedge ONNX Runtime INT8 static Q/DQ, attention too"
#: Calibration clips for the static INT8 contenders (random weights: latency only, the ranges do not matter).
STATIC_CALIBRATION_CLIPS = 4
#: The issue's goal: AST-base end to end, astedge's best CPU backend vs Hugging Face's pipeline.
GOAL_RATIO = 4.0
ASTEDGE_ALL = (ASTEDGE_TORCH, ASTEDGE_ORT, ASTEDGE_INT8, ASTEDGE_QDQ, ASTEDGE_QDQ_ATTN)


def quantize(onnx_path: Path, out: Path) -> Path:
    """Dynamic INT8: QInt8 weights on MatMul/Gemm; activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(onnx_path), str(out), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    return out


def hf_model(size: str, attention: str):
    from transformers import ASTConfig, ASTForAudioClassification

    from astedge.model.config import SIZES

    dims = SIZES[size]
    config = ASTConfig(hidden_size=dims["embed_dim"], num_hidden_layers=dims["depth"],
                       num_attention_heads=dims["num_heads"], intermediate_size=4 * dims["embed_dim"], num_labels=527,
                       max_length=1024, num_mel_bins=128, frequency_stride=10, time_stride=10)
    return ASTForAudioClassification._from_config(config, attn_implementation=attention).eval()


def hf_default_attention() -> str:
    """The attention implementation ASTForAudioClassification gets when the user asks for none."""
    from transformers import ASTConfig, ASTForAudioClassification

    return ASTForAudioClassification(ASTConfig(num_hidden_layers=1)).config._attn_implementation


def contenders_for(size: str, threads: int) -> tuple[dict, dict, dict]:
    """name -> (model-only call, end-to-end call), plus features-only calls and notes."""
    import torch
    from transformers import ASTFeatureExtractor

    from astedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from astedge.runtime.backends.torch import TorchBackend

    wave = (0.1 * np.random.default_rng(0).standard_normal(SAMPLES)).astype(np.float32)
    extractor = ASTFeatureExtractor()
    hf_input = extractor(wave, sampling_rate=16000, return_tensors="pt")["input_values"]
    ours_input = F.model_input(wave)[None]

    def hf_calls(model):
        def model_only():
            with torch.inference_mode():
                return model(input_values=hf_input).logits

        def end_to_end():
            with torch.inference_mode():
                return model(**extractor(wave, sampling_rate=16000, return_tensors="pt")).logits

        return model_only, end_to_end

    def ours(backend):
        return (lambda: backend.run(ours_input)), (lambda: backend.run(F.model_input(wave)[None]))

    from astedge.measure.random_weights import random_export
    from astedge.model.config import model_config
    from astedge.deploy.quantize import quantize_int8

    with random_export(model_config(size), name=size) as export_dir:  # loaded into memory before it is removed
        int8 = quantize(export_dir / "model.onnx", export_dir / "model.dynamic.onnx")
        calibration = np.stack([F.model_input((0.1 * np.random.default_rng(i).standard_normal(SAMPLES))
                                              .astype(np.float32)) for i in range(STATIC_CALIBRATION_CLIPS)])
        static = {ASTEDGE_QDQ: ("patch_embed", "attention"), ASTEDGE_QDQ_ATTN: ("patch_embed",)}
        for index, (name, keep_float) in enumerate(static.items()):
            quantize_int8(export_dir / "model.onnx", export_dir / f"model.int8-{index}.onnx", calibration,
                          exclude=keep_float, tokens=0, log=lambda m: None)  # tokens=0: quantize attention if asked
        backends = {ASTEDGE_TORCH: TorchBackend(export_dir, device="cpu"),
                    ASTEDGE_ORT: OnnxRuntimeBackend(export_dir, provider="cpu", threads=threads),
                    ASTEDGE_INT8: OnnxRuntimeBackend(int8, provider="cpu", threads=threads)}
        backends.update({name: OnnxRuntimeBackend(export_dir / f"model.int8-{index}.onnx", provider="cpu",
                                                  threads=threads) for index, name in enumerate(static)})
        sizes = {"onnx_bytes": (export_dir / "model.onnx").stat().st_size, "int8_onnx_bytes": int8.stat().st_size}
    calls = {HF_EAGER: hf_calls(hf_model(size, "eager")), HF_SDPA: hf_calls(hf_model(size, "sdpa"))}
    calls.update({name: ours(backend) for name, backend in backends.items()})
    features = {"HF ASTFeatureExtractor (numpy path)": lambda: extractor(wave, sampling_rate=16000,
                                                                         return_tensors="pt"),
                "astedge numpy fbank (model input)": lambda: F.model_input(wave)[None]}
    fp32, q8 = backends[ASTEDGE_ORT].run(ours_input), backends[ASTEDGE_INT8].run(ours_input)
    notes = {"int8_vs_fp32_max_abs_logit_random_weights": float(np.abs(fp32 - q8).max()), **sizes}
    return calls, features, notes


def stats(samples: list[float]) -> dict:
    return {**summarize(samples, batch=1, audio_seconds=WINDOW_S), "samples_ms": [round(v, 3) for v in samples]}


def measure_size(size: str, rounds: int, threads: int, log) -> dict:
    log(f"{size}: building and exporting")
    calls, features, notes = contenders_for(size, threads)
    flat = {}
    for name, (model_only, end_to_end) in calls.items():
        flat[(name, "model")] = model_only
        flat[(name, "end_to_end")] = end_to_end
    for name, fn in features.items():
        flat[(name, "features")] = fn
    log(f"{size}: {rounds} rounds of {len(flat)} calls")
    started = time.perf_counter()
    times = round_robin(flat, rounds, turn=lambda key: key[0])
    seconds = time.perf_counter() - started
    del calls, features
    gc.collect()
    results: dict = {}
    for (name, stage), samples in times.items():
        results.setdefault(name, {})[stage] = stats(samples)
    return {"size": size, "rounds": rounds, "timed_seconds": round(seconds, 1), "results": results, **notes}


def ratios(entry: dict) -> dict:
    """End-to-end speed-ups of each astedge contender over each HF one (min/min and median/median)."""
    out = {}
    res = entry["results"]
    for ours in (name for name in ASTEDGE_ALL if name in res):
        for hf in (HF_EAGER, HF_SDPA):
            a, b = res[ours]["end_to_end"], res[hf]["end_to_end"]
            out[f"{ours} vs {hf}"] = {"min": b["min_ms"] / a["min_ms"], "p50": b["p50_ms"] / a["p50_ms"]}
    return out


# --- INT8 accuracy on the demo model ---------------------------------------------------------------------

def demo_checkpoint() -> Path | None:
    return next((p for p in DEMO_CHECKPOINTS if p.is_file()), None)


def int8_accuracy(threads: int, log) -> dict:
    checkpoint = demo_checkpoint()
    if checkpoint is None:
        return {"skipped": "no demo checkpoint at " + " or ".join(map(str, DEMO_CHECKPOINTS)) + " (run astedge demo)"}
    data_dir = checkpoint.parent.parent / "data"
    if not data_dir.is_dir():
        return {"skipped": f"the demo's data is not at {data_dir}"}
    from astedge.audio import decode as audio_io
    from astedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from astedge.model.checkpoint import load_checkpoint
    from astedge.data.datasets import read_dataset
    from astedge.deploy.export import export

    described = load_checkpoint(checkpoint, weights=False)
    config = described.feature_config
    data = read_dataset(data_dir, val_fraction=0.2, seed=0)
    index = {label: i for i, label in enumerate(described.labels)}
    items = data.splits["val"]
    log(f"INT8 accuracy: {len(items)} held-out clips of {data_dir}, model {checkpoint}")
    x = np.empty((len(items), config.target_length, config.num_mel_bins), np.float32)
    targets = np.empty(len(items), np.int64)
    for row, item in enumerate(items):
        wave = audio_io.load_audio(item.path, config.sample_rate)
        if len(wave) < config.window_size:
            wave = np.pad(wave, (0, config.window_size - len(wave)))
        x[row] = F.model_input(wave, config)
        targets[row] = index[data.labels[item.targets[0]]]
    with tempfile.TemporaryDirectory(prefix="model-cpu-int8-") as tmp:
        folder = Path(tmp) / "demo"
        export(checkpoint, folder, fp16=False, engine=False, force=True, log=lambda m: None)
        int8 = quantize(folder / "model.onnx", folder / "model.int8.onnx")
        logits = {}
        for name, path in (("fp32", folder), ("int8", int8)):
            backend = OnnxRuntimeBackend(path, provider="cpu", threads=threads)
            logits[name] = np.concatenate([backend.run(x[i:i + 64]) for i in range(0, len(x), 64)])
            backend.close()
        sizes = {"fp32_bytes": (folder / "model.onnx").stat().st_size, "int8_bytes": int8.stat().st_size}
    top1 = {name: value.argmax(1) for name, value in logits.items()}
    return {
        "checkpoint": str(checkpoint), "data": str(data_dir), "held_out_clips": len(items),
        "model": f"AST {described.model_config.embed_dim}-d x {described.model_config.depth}, patches "
                 f"{described.model_config.num_patches}, input {config.target_length} x {config.num_mel_bins}",
        "accuracy_fp32": float((top1["fp32"] == targets).mean()), "accuracy_int8": float((top1["int8"] == targets).mean()),
        "top1_agreement": float((top1["fp32"] == top1["int8"]).mean()),
        "max_abs_logit_diff": float(np.abs(logits["fp32"] - logits["int8"]).max()),
        "mean_abs_logit_diff": float(np.abs(logits["fp32"] - logits["int8"]).mean()), **sizes,
    }


# --- report ---------------------------------------------------------------------------------------------

def _f(ms: float) -> str:
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def markdown(data: dict) -> str:
    m = data["machine"]
    lines = [f"# AST on the CPU, one 10 s window, batch 1: Hugging Face vs astedge — {m['cpu']}, {m['cores']} cores, "
             f"{m['date'][:10]}", "",
             f"One process; {data['threads']} threads for torch and ONNX Runtime; random weights (latency only); "
             f"contenders round-robin, {data['pause_ms']:g} ms pause before each contender's turn, 1 warm-up round "
             "excluded. "
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ". "
             f"HF's default attention for ASTForAudioClassification here is {data['hf_default_attention']} (what "
             "`from_pretrained` gives without `attn_implementation`). HF end to end = ASTFeatureExtractor + model, "
             "astedge end to end = numpy fbank + backend. Base: few rounds (about 1-2 s per call here).", ""]
    for entry in data["sizes"]:
        res = entry["results"]
        lines += [f"## AST-{entry['size']} ({entry['rounds']} rounds, {entry['timed_seconds']:.0f} s)", "",
                  "| contender | model only: min / p50 ms | end to end: min / p50 ms | x real time (e2e p50) "
                  "| e2e vs HF eager (min / p50) | e2e vs HF sdpa (min / p50) |", "|---|---|---|---|---|---|"]
        for name in (n for n in (HF_EAGER, HF_SDPA, *ASTEDGE_ALL) if n in res):
            mo, e2e = res[name]["model"], res[name]["end_to_end"]
            vs = [(res[hf]["end_to_end"]["min_ms"] / e2e["min_ms"], res[hf]["end_to_end"]["p50_ms"] / e2e["p50_ms"])
                  for hf in (HF_EAGER, HF_SDPA)]
            lines.append(f"| {name} | {_f(mo['min_ms'])} / {_f(mo['p50_ms'])} | {_f(e2e['min_ms'])} / "
                         f"{_f(e2e['p50_ms'])} | {e2e['x_realtime']:.1f} | {vs[0][0]:.2f}x / {vs[0][1]:.2f}x | "
                         f"{vs[1][0]:.2f}x / {vs[1][1]:.2f}x |")
        for name, stages in res.items():
            if "features" in stages:
                s = stages["features"]
                lines.append(f"| features only: {name} | - | {s['min_ms']:.2f} / {s['p50_ms']:.2f} | "
                             f"{s['x_realtime']:.0f} | | |")
        lines += ["", f"INT8 vs FP32 (ONNX Runtime, random weights, one input): max abs logit difference "
                      f"{entry['int8_vs_fp32_max_abs_logit_random_weights']:.3g}; model.onnx "
                      f"{entry['onnx_bytes'] / 2**20:.0f} MiB, INT8 {entry['int8_onnx_bytes'] / 2**20:.0f} MiB.", ""]
    goal = data.get("goal")
    if goal:
        lines += [f"## Goal: AST-base on the CPU, astedge's best backend >= {GOAL_RATIO:g}x faster end to end than the HF "
                  "pipeline",
                  ""]
        for line in goal["lines"]:
            lines.append(f"- {line}")
        lines.append("")
    acc = data["int8_accuracy"]
    lines += ["## INT8 accuracy cost (demo model, held-out split)", ""]
    if "skipped" in acc:
        lines.append(f"Skipped: {acc['skipped']}.")
    else:
        lines += [f"{acc['model']}; {acc['held_out_clips']} held-out clips of {acc['data']}; ONNX Runtime CPU.", "",
                  "| | FP32 | INT8 (dynamic, QInt8 MatMul/Gemm weights) |", "|---|---|---|",
                  f"| held-out accuracy | {acc['accuracy_fp32']:.2%} | {acc['accuracy_int8']:.2%} |",
                  f"| model size | {acc['fp32_bytes'] / 2**20:.2f} MiB | {acc['int8_bytes'] / 2**20:.2f} MiB |", "",
                  f"Top-1 agreement {acc['top1_agreement']:.2%}; max abs logit difference {acc['max_abs_logit_diff']:.3g} "
                  f"(mean {acc['mean_abs_logit_diff']:.3g})."]
    return "\n".join(lines) + "\n"


def goal_lines(entry: dict) -> dict:
    res = entry["results"]
    astedge_names = tuple(name for name in ASTEDGE_ALL if name in res)
    best = min(astedge_names, key=lambda n: res[n]["end_to_end"]["p50_ms"])
    best_fp32 = min((ASTEDGE_TORCH, ASTEDGE_ORT), key=lambda n: res[n]["end_to_end"]["p50_ms"])
    out, verdicts = [], {}
    for label, ours in (("best backend", best), ("best FP32 backend", best_fp32)):
        for hf in (HF_EAGER, HF_SDPA):
            p50 = res[hf]["end_to_end"]["p50_ms"] / res[ours]["end_to_end"]["p50_ms"]
            low = res[hf]["end_to_end"]["min_ms"] / res[ours]["end_to_end"]["min_ms"]
            verdicts[f"{label} vs {hf}"] = {"astedge": ours, "ratio_p50": p50, "ratio_min": low, "met": min(p50, low) >= GOAL_RATIO}
            out.append(f"{label} ({ours}) vs {hf} (feature extractor + model): {p50:.2f}x on medians, "
                       f"{low:.2f}x on minima — {'met' if min(p50, low) >= GOAL_RATIO else 'NOT met'}")
    return {"lines": out, "verdicts": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small,base")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds for tiny and small")
    parser.add_argument("--base-rounds", type=int, default=5, help="timed rounds for base (0.7-2 s per call here)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-int8-accuracy", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    sizes = []
    for size in args.sizes.split(","):
        entry = measure_size(size, args.base_rounds if size == "base" else args.rounds, args.threads, log)
        entry["ratios_end_to_end"] = ratios(entry)
        sizes.append(entry)
        gc.collect()
    data = {"benchmark": "model-cpu", "clip": "10 s, 16 kHz, Gaussian noise (std 0.1); batch 1",
            "machine": machine_header(("transformers", "onnx", "timm")), "threads": args.threads,
            "pause_ms": DEFAULT_PAUSE_MS, "weights": "random (latency only)",
            "hf_default_attention": hf_default_attention(),
            "sizes": sizes}
    base = next((e for e in sizes if e["size"] == "base"), None)
    if base:
        data["goal"] = goal_lines(base)
    data["int8_accuracy"] = {"skipped": "--no-int8-accuracy"} if args.no_int8_accuracy else int8_accuracy(args.threads, log)
    text = markdown(data)
    write_results("model-cpu", data, text)


if __name__ == "__main__":
    main()
