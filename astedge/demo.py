"""`astedge demo`: the whole product on a laptop CPU in about three minutes.

Synthesize a dataset of distinct sound classes with the boundaries of every event (and a background class: noise
and distractors), train a tiny AST with a frame head from scratch with the `demo` recipe (its decision layer
calibrated on streams of held-out clips), export it, then find the events of a long labelled recording it never
heard, with the defaults ``astedge classify --events`` uses, and score them (DCASE event F1, PSDS, latency).
"""

from __future__ import annotations

import time
from pathlib import Path

from astedge.data import synth

#: The demo's data: 10 classes and the background x 400 one-second clips (80 % train, 20 % held out, all with
#: their events' boundaries), and a 60 s recording of events at 44.1 kHz to find the events in.
DATA = dict(classes=10, per_class=400, seconds=1.0, stream_seconds=60.0, stream_rate=44100, background=True)


def run_demo(out: str | Path, seed: int = 0, log=print, show_progress: bool = True, epochs: int | None = None) -> dict:
    """Run every stage into `out` and return the summary (accuracy, events, latency, seconds per stage); `epochs`
    overrides the demo recipe's (12: the 3-minute budget)."""
    from astedge.data.datasets import read_dataset
    from astedge.train.loop import train
    from astedge.train.recipes import load_recipe

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings, started = {}, time.perf_counter()

    log(f"1/4 synthesizing {DATA['classes']} classes + a {synth.BACKGROUND} class x {DATA['per_class']} clips with "
        f"their events' boundaries, and a {DATA['stream_seconds']:g} s recording, into {out / 'data'}")
    summary = synth.write_dataset(out / "data", seed=seed, force=True, **DATA)
    timings["synthesize_s"] = time.perf_counter() - started

    log("2/4 training a tiny AST with a frame head from scratch on the CPU (recipe `demo`)")
    t0 = time.perf_counter()
    data = read_dataset(out / "data", val_fraction=0.2, seed=seed)
    overrides = {"seed": seed} | ({"epochs": epochs} if epochs else {})
    result = train(data, out / "run", load_recipe("demo", overrides=overrides), force=True, log=log,
                   show_progress=show_progress)
    timings["train_s"] = time.perf_counter() - t0

    log("3/4 exporting to ONNX (FP32, verified against PyTorch; FP16)")
    t0 = time.perf_counter()
    exported = _export(result.best, out, log)
    timings["export_s"] = time.perf_counter() - t0

    log(f"4/4 finding the events of {summary.stream.name} (never heard) with the export's defaults")
    t0 = time.perf_counter()
    events = _score_events(out / "export", summary.stream, summary.stream_truth, log)
    timings["events_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    return {"held_out_accuracy": result.best_value, "held_out_clips": len(data.splits["val"]),
            "best_epoch": result.best_epoch, "checkpoint": str(result.best), "exported": exported,
            "events": events, "timings": {k: round(v, 1) for k, v in timings.items()}}


def _export(checkpoint: Path, out: Path, log) -> dict:
    """Export the checkpoint (verified ONNX + FP16 ONNX; an engine too where TensorRT runs)."""
    from astedge.deploy.export import export

    summary = export(checkpoint, out / "export", profile="workstation", force=True, log=log)
    return {"folder": summary["output"], "files": summary["files"],
            "onnx_vs_torch_max_abs": summary["verification"]["onnx_fp32_vs_torch"]["max_abs_diff"]}


def _score_events(model: Path, recording: Path, truth: Path, log) -> dict:
    """The recording's events with the export's own defaults (the calibrated thresholds, median filter and minimum
    duration; the background class never an event), scored against its truth."""
    from astedge.measure.evaluation import evaluate_events, read_truth
    from astedge.runtime.classifier import Classifier, ClassifierOptions

    with Classifier.from_options(model, ClassifierOptions(events=True)) as classifier:
        report = evaluate_events(classifier, [recording], read_truth(truth, [recording]))
    figures = {"event_f1": report["event_based"]["f1"], "precision": report["event_based"]["precision"],
               "recall": report["event_based"]["recall"], "segment_f1": report["segment_based"]["f1"],
               "psds1": report["psds"]["psds1"], "true_events": report["true_events"],
               "detected_events": report["detected_events"],
               "detections_per_true_event": report["detections_per_true_event"]["mean"],
               "decision_latency_p50_s": report["decision_latency_s"]["p50"],
               "window_ms_p50": (report["window_ms"] or {}).get("p50"), "backend": classifier.backend.name,
               "hop_seconds": report["settings"]["hop_s"]}
    log(f"    events: F1 {figures['event_f1']:.3f} ({figures['detected_events']} found for {figures['true_events']} "
        f"true; {figures['detections_per_true_event']:.2f} per true event), median decision latency "
        f"{figures['decision_latency_p50_s']} s")
    return figures
