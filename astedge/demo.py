"""`astedge demo`: the whole product on a laptop CPU in a few minutes.

Synthesize a dataset of distinct sound classes (and a background class: noise and distractors), train a
tiny AST from scratch with the `demo` recipe, export it, classify the synthetic stream window by window
and score each window against the stream's ground truth, then calibrate event thresholds on the
held-out clips and score the events found in the stream.
"""

from __future__ import annotations

import time
from pathlib import Path

from astedge.data import synth

#: The demo's data: 10 classes and the background x 750 one-second clips (80% train, 20% held out), a 48 s stream.
DATA = dict(classes=10, per_class=750, seconds=1.0, stream_segments=24, segment_seconds=2.0, background=True)
#: Event detection on the stream: 1 s windows every 0.1 s, median of 3, thresholds calibrated on held-out clips.
EVENT_HOP, EVENT_SMOOTHING = 0.1, ("median", 3)


def run_demo(out: str | Path, seed: int = 0, log=print, show_progress: bool = True) -> dict:
    """Run every stage into `out` and return the summary (accuracies, latency, seconds per stage)."""
    from astedge.data.datasets import read_dataset
    from astedge.train.recipes import load_recipe
    from astedge.train.loop import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings, started = {}, time.perf_counter()

    extra = f" + a {synth.BACKGROUND} class" if DATA.get("background") else ""
    log(f"1/4 synthesizing {DATA['classes']} classes{extra} x {DATA['per_class']} clips into {out / 'data'}")
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
    exported = _export(result.best, out, log)
    timings["export_s"] = time.perf_counter() - t0

    log("4/4 classifying the stream window by window, then its events")
    t0 = time.perf_counter()
    stream = _score_stream(out / "export", summary.stream, summary.stream_truth, log)
    stream["events"] = _score_events(out / "export", data, summary.root / "stream-events.csv", summary.stream, log)
    timings["stream_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    return {"held_out_accuracy": result.best_value, "held_out_clips": len(data.splits["val"]),
            "best_epoch": result.best_epoch, "checkpoint": str(result.best), "exported": exported, **stream,
            "timings": {k: round(v, 1) for k, v in timings.items()}}


def _export(checkpoint: Path, out: Path, log) -> dict:
    """Export the checkpoint (verified ONNX + FP16 ONNX; an engine too where TensorRT runs)."""
    from astedge.deploy.export import export

    summary = export(checkpoint, out / "export", profile="workstation", force=True, log=log)
    return {"folder": summary["output"], "files": summary["files"],
            "onnx_vs_torch_max_abs": summary["verification"]["onnx_fp32_vs_torch"]["max_abs_diff"]}


def _score_stream(model: Path, stream_path: Path, truth_path: Path, log) -> dict:
    """Classify the stream with the runtime (fastest backend here, one window per call) and score each window."""
    from astedge.runtime.classifier import Classifier, ClassifierOptions
    from astedge.timing import percentiles

    with Classifier.from_options(model, ClassifierOptions(hop=0.5, top_k=1, batch_size=1)) as classifier:
        backend, windowing = classifier.backend, classifier.windowing()
        log(f"    backend {backend.name} ({backend.precision}), {windowing.seconds[0]:g} s windows every "
            f"{windowing.seconds[1]:g} s")
        result = classifier.classify_file(stream_path)
    truth = synth.read_truth(truth_path)
    correct = scored = 0
    for window in result.windows:
        expected, _ = synth.window_label(truth, window.start, window.end)
        if expected is not None:  # windows split evenly between two segments have no single answer
            scored += 1
            correct += window.top[0].label == expected
    latency = percentiles([window.latency_ms for window in result.windows], stats=False)
    return {"backend": backend.name, "stream_windows": scored, "stream_window_accuracy": correct / max(scored, 1),
            "window_seconds": windowing.seconds[0], "hop_seconds": windowing.seconds[1],
            "latency_ms_p50": latency["p50"], "latency_ms_p99": latency["p99"]}


def _score_events(model: Path, data, truth: Path, stream_path: Path, log) -> dict:
    """Calibrate per-class thresholds on the held-out clips (max F1), then find the stream's events and score them
    (DCASE event-based F1, duplicates, decision latency). The background class is never an event."""
    from astedge.measure.evaluation import calibrate_thresholds, evaluate_events, read_truth
    from astedge.runtime.classifier import Classifier

    with Classifier.from_options(model) as classifier:
        thresholds = calibrate_thresholds(classifier, data, "val")["thresholds"]
        events = classifier.replace(hop=EVENT_HOP, top_k=1, max_seconds=None, deny=(synth.BACKGROUND,),
                                    smoothing=EVENT_SMOOTHING[0], smoothing_windows=EVENT_SMOOTHING[1], events=True,
                                    thresholds=thresholds)
        report = evaluate_events(events, [stream_path], read_truth(truth, [stream_path]))
    figures = {"event_f1": report["event_based"]["f1"], "segment_f1": report["segment_based"]["f1"],
               "true_events": report["true_events"], "detected_events": report["detected_events"],
               "detections_per_true_event": report["detections_per_true_event"]["mean"],
               "decision_latency_p50_s": report["decision_latency_s"]["p50"]}
    log(f"    events: F1 {figures['event_f1']:.3f} ({figures['detected_events']} found for {figures['true_events']} "
        f"true; {figures['detections_per_true_event']:.2f} per true event), median decision latency "
        f"{figures['decision_latency_p50_s']} s")
    return figures
