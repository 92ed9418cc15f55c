"""Event F1 of a model on long recordings it never heard, with the defaults `astedge classify --events` uses.

Run: python benchmarks/events_f1.py MODEL [--seeds 11 12] [--rates 44100 48000] [--seconds 240] [--name STEM]
MODEL is an export folder or checkpoint (e.g. the demo's `demo/export`). Each recording is made by `astedge data
events` with a seed and rate of its own (none of them the demo's), scored with DCASE's collars (0.2 s onset,
offset within max(0.2 s, 20 %)), segment F1 (1 s) and PSDS1. Writes benchmarks/results/<--name>-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, write_results  # noqa: E402


def main() -> None:
    from astedge.data.synth import write_event_stream
    from astedge.measure.evaluation import evaluate_events, read_truth
    from astedge.runtime.classifier import Classifier, ClassifierOptions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--rates", type=int, nargs="+", default=[44100, 48000])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--name", default="events-f1", help="results file stem (one per model compared)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            Classifier.from_options(args.model, ClassifierOptions(events=True)) as classifier:
        for seed, rate in zip(args.seeds, args.rates, strict=True):
            audio, truth = write_event_stream(Path(tmp) / f"events-{seed}", args.seconds, rate, seed)
            report = evaluate_events(classifier, [audio], read_truth(truth, [audio]))
            eb, settings = report["event_based"], report["settings"]
            rows.append({"recording": f"data events --seed {seed} --rate {rate} --seconds {args.seconds:g}",
                         "true_events": report["true_events"], "detected_events": report["detected_events"],
                         "event_f1": eb["f1"], "precision": eb["precision"], "recall": eb["recall"],
                         "segment_f1": report["segment_based"]["f1"], "psds1": report["psds"]["psds1"],
                         "decision_latency_p50_s": report["decision_latency_s"]["p50"], "settings": settings})
            print(f"seed {seed} @ {rate} Hz: event F1 {eb['f1']:.3f} (P {eb['precision']:.2f}, R {eb['recall']:.2f}), "
                  f"segment F1 {report['segment_based']['f1']:.3f}, PSDS1 {report['psds']['psds1']}", flush=True)
    lines = [f"# Event F1 with the model's defaults — {machine_header()['cpu']}", "",
             f"Model: `{args.model}`; `astedge classify --events` defaults (the model's calibrated thresholds, median "
             "and minimum duration; its frame hop and delay). DCASE collars: 0.2 s onset, offset within "
             "max(0.2 s, 20 %).", "",
             "| recording | true events | detected | event F1 | P | R | segment F1 (1 s) | PSDS1 | decision latency p50 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['recording']}` | {r['true_events']} | {r['detected_events']} | {r['event_f1']:.3f} | "
                     f"{r['precision']:.2f} | {r['recall']:.2f} | {r['segment_f1']:.3f} | {r['psds1']} | "
                     f"{r['decision_latency_p50_s']:.2f} s |")
    write_results(args.name, {"machine": machine_header(), "model": args.model, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
