"""INT8 for AST: ONNX Runtime ``quantize_static`` (astedge.deploy.quantize) vs NVIDIA ModelOpt ONNX PTQ vs dynamic INT8,
on trained models, on the CPU; and ModelOpt AutoCast vs astedge's FP16 pass (astedge.deploy.onnx_fp16).

Run (one model at a time is fine; each part is skipped with a note when its input is absent):

    python benchmarks/int8_compare.py --kws /work/runs/int8-kws --demo /work/runs/int8-demo \
        --modelopt-python /work/venv-modelopt/bin/python [--calib 256] [--seconds 20] [--base]

Writes benchmarks/results/int8-cpu-<date>.{json,md}. ModelOpt runs in its own virtual environment
(``python3 -m venv V && V/bin/pip install -c constraints.txt "nvidia-modelopt[onnx]"``): it pins onnx 1.21
and onnxruntime-gpu 1.24, which would replace the product's onnx 1.23 and clash with its onnxruntime. This
script re-runs itself there as a worker (``--modelopt-worker``) that imports only modelopt and numpy.

For each trained model (a run folder with best.safetensors):
- export (astedge.deploy.export.export: model.onnx FP32, model.fp16.onnx);
- calibration clips: --calib clips of the training split (seeded order), features by astedge.features.fbank.model_input;
  held out: the validation split (and `test` where the dataset has one), with labels;
- variants: FP32; dynamic INT8 (quantize_dynamic, QInt8 MatMul/Gemm weights); quantize_static QDQ with
  astedge's placement (MinMax = the product's default; Percentile 99.999; Entropy as quantize_static runs it;
  with quant_pre_process; attention kept float; head kept float); ModelOpt int8 (entropy, its default, and max;
  its default FP16 output, and FP32 output for a like-for-like CPU run);
- per variant: Q/DQ placement (astedge.deploy.quantize.qdq_report: counts, what reads DQ outputs, per-channel axes,
  TensorRT-form problems), accuracy and top-1 agreement with FP32, max/mean logit difference, file size, and
  ONNX Runtime CPU latency at batch 1, all variants round-robin in one process (astedge.timing.round_robin);
- FP16: astedge convert_fp16 vs ModelOpt AutoCast (keep_io_types, LayerNormalization excluded, its reference
  run on the calibration clips): casts, what stays FP32, accuracy and agreement on ONNX Runtime CPU.
With --base: a random-weight AST-base (10/10 x 1024) export, FP32 vs dynamic vs static INT8 (latency only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# --- the ModelOpt worker: runs under ModelOpt's own Python; imports nothing from astedge -------------------


def modelopt_worker(argv: list[str]) -> None:
    import numpy as np

    action, src, out, calib = argv[:4]
    started = time.perf_counter()
    if action == "quantize":
        from modelopt.onnx.quantization import quantize

        method, high = argv[4], argv[5]
        quantize(src, quantize_mode="int8", calibration_data=np.load(calib), calibration_method=method,
                 calibration_eps=["cpu"], output_path=out, log_level="ERROR", high_precision_dtype=high)
    elif action == "autocast":
        import onnx
        from modelopt.onnx.autocast import convert_to_mixed_precision

        model = convert_to_mixed_precision(onnx_path=src, low_precision_type="fp16", keep_io_types=True,
                                           op_types_to_exclude=["LayerNormalization"], calibration_data=calib)
        onnx.save(model, out)
    else:
        raise SystemExit(f"unknown worker action {action}")
    import modelopt
    import onnx
    import onnxruntime

    print(json.dumps({"seconds": time.perf_counter() - started, "modelopt": modelopt.__version__,
                      "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}))


if len(sys.argv) > 1 and sys.argv[1] == "--modelopt-worker":
    modelopt_worker(sys.argv[2:])
    sys.exit(0)

import numpy as np  # noqa: E402

sys.path.insert(0, str(HERE))
from common import machine_header, write_results  # noqa: E402

from astedge.deploy import quantize as Q  # noqa: E402
from astedge.deploy.qdq_graph import qdq_report  # noqa: E402
from astedge.timing import round_robin  # noqa: E402


RESULTS_DIR = HERE / "results"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------------------------------


def features_of(items, feature_config, label_index) -> tuple[np.ndarray, np.ndarray]:
    from astedge.audio.decode import load_audio
    from astedge.features.fbank import model_input

    rows, labels = [], []
    for item in items:
        rows.append(model_input(load_audio(item.path, feature_config.sample_rate), feature_config))
        labels.append(label_index[item.targets[0]])
    return np.stack(rows).astype(np.float32), np.asarray(labels)


def model_data(name: str, run: Path, data: Path, calib_count: int, seed: int = 0) -> dict:
    from astedge.model.checkpoint import load_checkpoint
    from astedge.data.datasets import read_dataset

    checkpoint = load_checkpoint(run / "best.safetensors")
    index = read_dataset(data, val_fraction=0.2, seed=0)
    label_index = {i: checkpoint.labels.index(label) for i, label in enumerate(index.labels)}
    train = index.splits["train"]
    order = np.random.default_rng(seed).permutation(len(train))[:calib_count]
    calib, _ = features_of([train[i] for i in order], checkpoint.feature_config, label_index)
    held = {split: features_of(index.splits[split], checkpoint.feature_config, label_index)
            for split in ("val", "test") if index.splits.get(split)}
    return {"name": name, "checkpoint": run / "best.safetensors", "config": checkpoint.model_config,
            "feature_config": checkpoint.feature_config, "calib": calib, "held": held,
            "data": {"source": str(data), "calibration": f"{len(calib)} clips of the training split (seed {seed})",
                     **{f"held_out_{k}": len(v[0]) for k, v in held.items()}}}


# --- variants --------------------------------------------------------------------------------------------


#: Address-space cap for calibration runs (AST-base calibration at batch 8 was killed for memory at 20 GB on this
#: 23 GB machine shared with other jobs: a failed allocation is better than the kernel's OOM killer).
MEMORY_CAP = 16 << 30


def _cap_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_modelopt(python: str, action: str, src: Path, out: Path, calib: Path, *extra: str) -> dict:
    cmd = ["nice", "-n", "10", python, str(Path(__file__).resolve()), "--modelopt-worker", action, str(src), str(out),
           str(calib), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                          preexec_fn=_cap_memory)
    if done.returncode != 0 or not out.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"ModelOpt {action} failed: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_variants(model: dict, work: Path, modelopt_python: str | None) -> dict[str, dict]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from astedge.deploy.export import export

    folder = work / model["name"] / "export"
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not (folder / "model.fp16.onnx").is_file():
        export(model["checkpoint"], folder, engine=False, fp16=True, force=True, log=log)
    fp32 = folder / "model.onnx"
    out = work / model["name"]
    variants = {"FP32": {"path": fp32, "how": "astedge export (torch dynamo, opset 18)"}}
    dynamic = out / "dynamic.onnx"
    quantize_dynamic(str(fp32), str(dynamic), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    variants["dynamic INT8"] = {"path": dynamic, "how": "quantize_dynamic, QInt8 MatMul/Gemm weights"}
    attention_int8 = ("patch_embed",)  # attention quantized too (only where tokens <= 512)
    static = {
        "ORT static MinMax (astedge default: attention float)": dict(method="minmax"),
        "ORT static Percentile 99.999, attention float": dict(method="percentile"),
        "ORT static Entropy as quantize_static runs it, attention float": dict(method="entropy"),
        "ORT static MinMax + quant_pre_process": dict(method="minmax", preprocess=True),
        "ORT static MinMax, head float too": dict(method="minmax", exclude=Q.DEFAULT_EXCLUDE + ("head",)),
        "ORT static MinMax, attention INT8": dict(method="minmax", exclude=attention_int8),
        "ORT static Percentile 99.999, attention INT8": dict(method="percentile", exclude=attention_int8),
    }
    for index, (label, options) in enumerate(static.items()):
        path = out / f"static{index}.onnx"
        report = Q.quantize_int8(fp32, path, model["calib"], log=log, **options)
        variants[label] = {"path": path, "how": f"astedge.deploy.quantize {options}", "seconds": report["seconds"]}
    if modelopt_python:
        calib_npy = out / "calib.npy"
        np.save(calib_npy, model["calib"])
        for label, method, high in (("ModelOpt int8 entropy (default), FP16 graph", "entropy", "fp16"),
                                    ("ModelOpt int8 max, FP16 graph", "max", "fp16"),
                                    ("ModelOpt int8 max, FP32 graph", "max", "fp32")):
            path = out / f"modelopt-{method}-{high}.onnx"
            try:
                info = run_modelopt(modelopt_python, "quantize", fp32, path, calib_npy, method, high)
                variants[label] = {"path": path, "how": f"modelopt {info['modelopt']} quantize int8 {method}, "
                                   f"high_precision_dtype={high}, calibration_eps=['cpu']", "seconds": info["seconds"]}
            except RuntimeError as err:
                variants[label] = {"path": None, "error": str(err)}
    return variants


def graph_facts(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path))
    report = qdq_report(model)
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    fp16 = sum(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    return {"bytes": path.stat().st_size, "qdq": report, "casts": ops.get("Cast", 0), "fp16_initializers": fp16,
            "dynamic_quant_nodes": {k: v for k, v in ops.items() if k in ("DynamicQuantizeLinear", "MatMulInteger",
                                                                             "ConvInteger")}}


def ort_logits(path, x):
    """Logits of an ONNX file on ONNX Runtime's CPU provider, 4 clips a call."""
    from astedge.runtime.backends.onnxruntime import onnx_logits

    return onnx_logits(path, x, [slice(i, i + 4) for i in range(0, len(x), 4)])


def accuracy_figures(variants: dict, model: dict) -> None:
    from astedge.verify import compare

    reference = {split: ort_logits(variants["FP32"]["path"], x) for split, (x, _) in model["held"].items()}
    for variant in variants.values():
        if variant.get("path") is None:
            continue
        variant["accuracy"] = {}
        for split, (x, y) in model["held"].items():
            logits = ort_logits(variant["path"], x)
            figures = compare(reference[split], logits)
            variant["accuracy"][split] = {"accuracy": float(np.mean(logits.argmax(-1) == y)),
                                          "top1_agreement": figures["top1_agreement"],
                                          "max_abs_diff": figures["max_abs_diff"],
                                          "mean_abs_diff": figures["mean_abs_diff"],
                                          "reference_max_abs": figures["reference_max_abs"]}


def latency(paths: dict[str, Path], sample: np.ndarray, seconds: float, threads: int, min_rounds: int = 5) -> dict:
    """Per variant: min and median ms of one batch-1 call, round-robin; ratios to FP32 and to dynamic INT8."""
    from astedge.runtime.backends.onnxruntime import ort_session

    calls = {}
    for label, path in paths.items():
        session = ort_session(path, threads=threads)
        name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
        calls[label] = (lambda s=session, n=name, o=output: s.run([o], {n: sample}))
    times = round_robin(calls, seconds=seconds, min_rounds=min_rounds, warmup=2)
    ref = {key: (float(np.min(times[key])), float(np.median(times[key]))) for key in ("FP32", "dynamic INT8")
           if key in times}
    out = {}
    for label, t in times.items():
        low, mid = float(np.min(t)), float(np.median(t))
        out[label] = {"min_ms": low, "median_ms": mid, "rounds": len(t),
                      **{f"x_vs_{'fp32' if key == 'FP32' else 'dynamic'}_{stat}": r[i] / v
                         for key, r in ref.items() for i, (stat, v) in enumerate((("min", low), ("median", mid)))}}
    return out


def fp16_comparison(model: dict, work: Path, modelopt_python: str | None) -> dict:
    """astedge convert_fp16 (model.fp16.onnx of the export) vs ModelOpt AutoCast, on ONNX Runtime CPU."""
    from astedge.deploy.onnx_fp16 import precision_report
    from astedge.verify import compare

    import onnx

    folder = work / model["name"] / "export"
    fp32 = folder / "model.onnx"
    files = {"astedge convert_fp16": folder / "model.fp16.onnx"}
    result: dict = {}
    if modelopt_python:
        npz = work / model["name"] / "autocast-calib.npz"
        np.savez(npz, fbank=model["calib"][:32])
        path = work / model["name"] / "autocast.onnx"
        try:
            info = run_modelopt(modelopt_python, "autocast", fp32, path, npz)
            files["ModelOpt AutoCast"] = path
            result["autocast_run"] = info
        except RuntimeError as err:
            result["autocast_error"] = str(err)
    x, y = model["held"]["val"]
    reference = ort_logits(fp32, x)
    for label, path in files.items():
        m = onnx.load(str(path))
        report = precision_report(m)
        figures = compare(reference, logits := ort_logits(path, x))
        fp32_nodes = sorted(op for op, kinds in report["nodes_by_precision"].items() if "fp32" in kinds)
        result[label] = {"opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
                         "casts": report["casts"], "inputs": report["inputs"], "outputs": report["outputs"],
                         "ops_with_fp32_outputs": fp32_nodes, "nodes_by_precision": report["nodes_by_precision"],
                         "bytes": path.stat().st_size, "accuracy": float(np.mean(logits.argmax(-1) == y)),
                         "top1_agreement": figures["top1_agreement"], "max_abs_diff": figures["max_abs_diff"],
                         "mean_abs_diff": figures["mean_abs_diff"]}
    return result


def base_latency(seconds: float, threads: int, modelopt_python: str | None, work: Path) -> dict:
    """AST-base 10/10 x 1024, random weights: FP32 vs dynamic vs static INT8 on this CPU (latency only)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from astedge.features import fbank as F
    from astedge.deploy.export import verification_inputs
    from astedge.measure.random_weights import RANDOM_WEIGHTS, random_export
    from astedge.features.fbank import FbankConfig
    from astedge.model.config import model_config

    config = model_config("base")
    feature_config = FbankConfig()
    with random_export(config, log=log) as folder:
        fp32 = folder / "model.onnx"
        out = work / "base"
        out.mkdir(parents=True, exist_ok=True)
        dynamic, static = out / "dynamic.onnx", out / "static.onnx"
        quantize_dynamic(str(fp32), str(dynamic), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
        calib, _ = verification_inputs(feature_config, 4)
        report = Q.quantize_int8(fp32, static, calib, log=log)  # batch 1 here (calibration_batch)
        paths = {"FP32": fp32, "dynamic INT8": dynamic, "ORT static MinMax (astedge default)": static}
        if modelopt_python:
            np.save(out / "calib.npy", calib[:2])  # ModelOpt calibrates them in one call
            try:
                run_modelopt(modelopt_python, "quantize", fp32, out / "modelopt.onnx", out / "calib.npy", "max", "fp32")
                paths["ModelOpt int8 max, FP32 graph"] = out / "modelopt.onnx"
            except RuntimeError as err:
                log(str(err))
        sample = calib[:1]
        wave = (0.1 * np.random.default_rng(0).standard_normal(160000)).astype(np.float32)
        fbank_ms = float(np.median([_time(lambda: F.model_input(wave, feature_config)) for _ in range(20)]))
        timings = latency(paths, sample, seconds, threads, min_rounds=3)
        return {"weights": RANDOM_WEIGHTS, "config": "base, 16x16 patches, stride 10/10, 1024 frames (1214 tokens)",
                "threads": threads,
                "fbank_ms_median": fbank_ms, "latency": timings,
                "graphs": {label: graph_facts(path) for label, path in paths.items()},
                "static_report": {k: report[k] for k in ("tokens", "kept_float", "quantized_nodes", "seconds")}}


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


# --- report ----------------------------------------------------------------------------------------------


def _speed(t: dict) -> str:
    ratios = [f"{t[f'x_vs_{k}_min']:.2f}x {k}" for k in ("fp32", "dynamic") if f"x_vs_{k}_min" in t]
    return f"{t['min_ms']:.2f} / {t['median_ms']:.2f} ({', '.join(ratios)})"


def markdown(data: dict) -> str:
    m = data["machine"]
    dates = ", ".join(run["date"] for run in data.get("runs", [m]))
    lines = [f"# INT8 on the CPU: quantize_static vs ModelOpt vs dynamic ({m['date'][:10]})", "",
             f"Machine: {m['cpu']}, {m['cores']} vCPUs (AVX2, no AVX-512/VNNI), Python {m['python']}; ONNX Runtime "
             f"threads {data['threads']}; runs {dates}.", "", f"Load: {data['load_note']}.", "",
             "Packages: " + ", ".join(f"{k} {v}" for k, v in sorted(m["packages"].items())), "",
             f"ModelOpt (own venv): {data.get('modelopt_versions') or 'not run'}", "",
             "Columns: Q / DQ node counts; the op types reading DQ outputs; TRT-form problems (qdq_report: non-INT8 or "
             "non-zero zero points, non-positive scales, per-channel activations, weight axes other than the output "
             "channels, opset < 13); DQ outputs read by LayerNormalization/Softmax/Conv; accuracy, top-1 agreement "
             "with FP32 and max / mean |logit difference| on held-out clips.", ""]
    for name, model in data["models"].items():
        lines += [f"## {name}: {model['describe']}", "", f"Measured {model.get('measured', '?')}. Data: {model['data']}",
                  ""]
        splits = list(next(iter(v for v in model["variants"].values() if "accuracy" in v))["accuracy"])
        lines += ["| variant | Q / DQ | DQ feeds | TRT-form problems | DQ into LN/Softmax/Conv | size (MB) | " +
                  " | ".join(f"{s} acc / agree / max / mean diff" for s in splits) + " |",
                  "|" + "---|" * (6 + len(splits))]
        for label, v in model["variants"].items():
            if v.get("error"):
                lines.append(f"| {label} | failed: {v['error']} |")
                continue
            g = v["graph"]
            cells = [f"{a['accuracy']:.2%} / {a['top1_agreement']:.2%} / {a['max_abs_diff']:.3g} / "
                     f"{a['mean_abs_diff']:.3g}" for a in v["accuracy"].values()]
            lines.append(f"| {label} | {g['qdq']['QuantizeLinear']} / {g['qdq']['DequantizeLinear']} | "
                         f"{g['qdq']['dq_consumers'] or g['dynamic_quant_nodes']} | {len(g['qdq']['problems'])} | "
                         f"{len(g['qdq']['float_op_inputs'])} | {g['bytes'] / 1e6:.2f} | " + " | ".join(cells) + " |")
        settings = list(model["latency"])
        lines += ["", "ONNX Runtime CPU, batch 1, round-robin: min / median ms (speed-up of the min vs FP32 and vs "
                  "dynamic INT8)", "", "| variant | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
        for label in model["latency"][settings[0]]:
            lines.append(f"| {label} | " + " | ".join(_speed(model["latency"][k][label]) for k in settings) + " |")
        lines.append("")
        if model.get("fp16"):
            lines += ["FP16 graphs (ONNX Runtime CPU runs FP16 arithmetic in FP32 behind casts; see export.FP16_CPU_NOTE):",
                      "", "| pass | opset | casts | ops with FP32 outputs | size (MB) | val acc | agreement | max / mean diff |",
                      "|---|---|---|---|---|---|---|---|"]
            for label, f in model["fp16"].items():
                if isinstance(f, dict) and "casts" in f:
                    lines.append(f"| {label} | {f['opset']} | {f['casts']} | {', '.join(f['ops_with_fp32_outputs'])} | "
                                 f"{f['bytes'] / 1e6:.2f} | {f['accuracy']:.2%} | {f['top1_agreement']:.2%} | "
                                 f"{f['max_abs_diff']:.3g} / {f['mean_abs_diff']:.3g} |")
            lines.append("")
    if data.get("base"):
        b = data["base"]
        lines += [f"## AST-base ({b['config']}), {b['weights']}", "", f"Measured {b.get('measured', '?')}, "
                  f"{b.get('threads', '?')} threads; astedge fbank for 10 s: {b['fbank_ms_median']:.2f} ms (median).", "",
                  "| variant | model min / median ms (x FP32, x dynamic) | end to end median ms (fbank + model) | "
                  "Q / DQ | kept float | size (MB) |", "|---|---|---|---|---|---|"]
        for label, t in b["latency"].items():
            g = b["graphs"][label]
            lines.append(f"| {label} | {_speed(t)} | {t['median_ms'] + b['fbank_ms_median']:.0f} | "
                         f"{g['qdq']['QuantizeLinear']} / {g['qdq']['DequantizeLinear']} | "
                         f"{'attention, patch embedding' if 'static' in label else ''} | {g['bytes'] / 1e6:.1f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kws", type=Path, help="run folder of the kws10 model (best.safetensors)")
    parser.add_argument("--kws-data", type=Path, default=Path("/work/data/kws10"))
    parser.add_argument("--demo", type=Path, help="`astedge demo --out` folder (run/ and data/)")
    parser.add_argument("--modelopt-python", help="python of a venv with nvidia-modelopt[onnx]")
    parser.add_argument("--calib", type=int, default=256, help="calibration clips")
    parser.add_argument("--seconds", type=float, default=20.0, help="round-robin timing per model")
    parser.add_argument("--threads", default="1,2", help="ONNX Runtime intra-op threads to time with (comma list)")
    parser.add_argument("--base", action="store_true", help="also AST-base random weights (latency only)")
    parser.add_argument("--base-seconds", type=float, default=60.0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "astedge-int8-compare")
    parser.add_argument("--load-note", default="timings taken while other jobs may have shared the CPU; all variants "
                        "run round-robin in one process, so ratios stay comparable")
    parser.add_argument("--name", default="int8-cpu")
    parser.add_argument("--append", action="store_true",
                        help="add to today's results file instead of replacing it (one model per run)")
    args = parser.parse_args()

    threads = [int(n) for n in args.threads.split(",")]
    data = {"machine": machine_header(("nvidia-modelopt",)), "threads": threads, "load_note": args.load_note,
            "calibration_clips": args.calib, "models": {}}
    previous = RESULTS_DIR / f"{args.name}-{data['machine']['date'][:10]}.json"
    if args.append and previous.is_file():
        old = json.loads(previous.read_text())
        data["models"], data["runs"] = old.get("models", {}), old.get("runs", [old["machine"]])
        data.update({k: old[k] for k in ("base", "modelopt_versions") if k in old})
    data.setdefault("runs", []).append(data["machine"])
    models = []
    if args.kws and (args.kws / "best.safetensors").is_file():
        models.append(("kws10", args.kws, args.kws_data))
    if args.demo and (args.demo / "run" / "best.safetensors").is_file():
        models.append(("demo", args.demo / "run", args.demo / "data"))
    args.work.mkdir(parents=True, exist_ok=True)
    for name, run, source in models:
        log(f"== {name}")
        model = model_data(name, run, source, args.calib)
        cfg = model["config"]
        variants = make_variants(model, args.work, args.modelopt_python)
        for variant in variants.values():
            if variant.get("path") is not None:
                variant["graph"] = graph_facts(variant["path"])
        accuracy_figures(variants, model)
        sample = model["held"]["val"][0][:1]
        timings = {f"{n} threads": latency({k: v["path"] for k, v in variants.items() if v.get("path") is not None},
                                           sample, args.seconds, n) for n in threads}
        fp16 = fp16_comparison(model, args.work, args.modelopt_python)
        data["models"][name] = {
            "describe": f"{cfg.embed_dim}-d x {cfg.depth} blocks, patch {cfg.patch_size}, strides "
                        f"{cfg.fstride}/{cfg.tstride}, {cfg.target_length} frames, {cfg.num_classes} classes",
            "measured": data["machine"]["date"], "data": model["data"], "latency": timings, "fp16": fp16,
            "variants": {k: {**{kk: vv for kk, vv in v.items() if kk != "path"}, "file": str(v["path"])}
                         for k, v in variants.items()}}
        if fp16.get("autocast_run"):
            data["modelopt_versions"] = fp16["autocast_run"]
    if args.base:
        log("== AST-base, random weights")
        _cap_memory()
        data["base"] = {**base_latency(args.base_seconds, max(threads), args.modelopt_python, args.work),
                        "measured": data["machine"]["date"]}
    stem = write_results(args.name, data, markdown(data), echo=False)
    log(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
