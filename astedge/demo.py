"""`astedge demo`: the whole product on a laptop CPU in a few minutes.

Synthesize a dataset of distinct sound classes, train a tiny AST from scratch with the `demo`
recipe, export it, then classify the synthetic stream window by window and score each window
against the stream's ground truth.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from astedge import synth

#: The demo's data: 10 classes x 750 one-second clips (80% train, 20% held out) and a 48 s stream.
DATA = dict(classes=10, per_class=750, seconds=1.0, stream_segments=24, segment_seconds=2.0)


def run_demo(out: str | Path, seed: int = 0, log=print, show_progress: bool = True) -> dict:
    """Run every stage into `out` and return the summary (accuracies, latency, seconds per stage)."""
    from astedge.datasets import read_dataset
    from astedge.recipes import load_recipe
    from astedge.train import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings, started = {}, time.perf_counter()

    log(f"1/4 synthesizing {DATA['classes']} classes x {DATA['per_class']} clips into {out / 'data'}")
    summary = synth.write_dataset(out / "data", seed=seed, **DATA)
    timings["synthesize_s"] = time.perf_counter() - started

    log("2/4 training a tiny AST from scratch on the CPU (recipe `demo`)")
    t0 = time.perf_counter()
    data = read_dataset(out / "data", val_fraction=0.2, seed=seed)
    recipe = load_recipe("demo", overrides={"seed": seed})
    result = train(data, out / "run", recipe, force=True, log=log, show_progress=show_progress)
    timings["train_s"] = time.perf_counter() - t0

    log("3/4 exporting to ONNX (FP32, verified against PyTorch; FP16)")
    t0 = time.perf_counter()
    classifier, exported = _classifier(result.best, out, log)
    timings["export_s"] = time.perf_counter() - t0

    log("4/4 classifying the stream window by window with ONNX Runtime")
    t0 = time.perf_counter()
    stream = _score_stream(classifier, summary.stream, summary.stream_truth)
    timings["stream_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    return {"held_out_accuracy": result.best_value, "held_out_clips": len(data.splits["val"]),
            "best_epoch": result.best_epoch, "checkpoint": str(result.best), "exported": exported, **stream,
            "timings": {k: round(v, 1) for k, v in timings.items()}}


def _classifier(checkpoint: Path, out: Path, log):
    """Export the checkpoint (verified ONNX + FP16 ONNX) and return an ONNX Runtime fbank -> logits function."""
    import onnxruntime

    from astedge.checkpoint import load_checkpoint
    from astedge.export import export

    summary = export(checkpoint, out / "export", profile="workstation", engine=False, force=True, log=log)
    session = onnxruntime.InferenceSession(str(out / "export" / summary["files"]["onnx"]),
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch})[0]

    exported = {"folder": summary["output"], "files": summary["files"],
                "onnx_vs_torch_max_abs": summary["verification"]["onnx_fp32_vs_torch"]["max_abs_diff"]}
    return (run, load_checkpoint(checkpoint, weights=False)), exported


def _score_stream(classifier, stream_path: Path, truth_path: Path) -> dict:
    from astedge import audio as audio_io
    from astedge import features as feats
    from astedge.predict import activate
    from astedge.runtime import window_starts

    run, ckpt = classifier
    config = ckpt.feature_config
    wave = audio_io.load_audio(stream_path, config.sample_rate)
    window = int(round(config.window_seconds * config.sample_rate))
    hop = config.sample_rate // 2
    truth = synth.read_truth(truth_path)
    correct = scored = 0
    latencies = []
    for start in window_starts(len(wave), window, hop):
        t0 = time.perf_counter()
        x = feats.model_input(wave[start:start + window], config)[None]
        scores = activate(run(x)[0], ckpt.task)
        latencies.append((time.perf_counter() - t0) * 1e3)
        expected, _ = synth.window_label(truth, start / config.sample_rate, (start + window) / config.sample_rate)
        if expected is not None:  # windows split evenly between two segments have no single answer
            scored += 1
            correct += ckpt.labels[int(np.argmax(scores))] == expected
    return {"stream_windows": scored, "stream_window_accuracy": correct / max(scored, 1),
            "window_seconds": window / config.sample_rate, "hop_seconds": hop / config.sample_rate,
            "latency_ms_p50": float(np.percentile(latencies, 50)), "latency_ms_p99": float(np.percentile(latencies, 99))}
