"""The demo classes replayed through rooms and noise: how much of a model's held-out accuracy survives?

Run: python benchmarks/demo_rooms.py DEMO_DATA CHECKPOINT [CHECKPOINT ...] [--seed 7]
DEMO_DATA is `astedge demo`'s data folder; each CHECKPOINT a model trained on it (e.g. the demo's, and one trained
with `astedge train DEMO_DATA --augment`). The held-out split (the demo's: 20 %, seed 0) is scored clean, through
synthesized rooms (pyroomacoustics, RT60 0.3-0.9 s, made with a seed the training rooms never used), with coloured
noise at 10 and 0 dB SNR, and through a room plus noise at 10 dB. Writes
benchmarks/results/demo-rooms-cpu-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, write_results  # noqa: E402


def coloured_noise(rng: np.random.Generator, n: int, slope_db: float) -> np.ndarray:
    """Noise whose spectrum falls `slope_db` per octave (0: white, -3: pink, -6: brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    noise = np.fft.irfft(spectrum * freqs ** (slope_db / 20 / np.log10(2)), n)
    return noise / max(np.sqrt(np.mean(noise**2)), 1e-12)


def conditions(waves: list[np.ndarray], rate: int, seed: int) -> dict[str, list[np.ndarray]]:
    from scipy.signal import oaconvolve

    from astedge.train.rooms import synthesize_rooms

    rng = np.random.default_rng(seed)
    bank = synthesize_rooms(12, (0.3, 0.9), rate, seed=seed).responses

    def room(wave):
        wet = oaconvolve(wave, bank[rng.integers(len(bank))])[: len(wave)]
        return wet * np.sqrt(np.mean(wave**2) / max(np.mean(wet**2), 1e-20))

    def noisy(wave, snr_db):
        level = np.sqrt(np.mean(wave**2)) / 10 ** (snr_db / 20)
        return wave + level * coloured_noise(rng, len(wave), rng.uniform(-6, 0))

    return {"clean": waves,
            "room (RT60 0.3-0.9 s)": [room(w) for w in waves],
            "noise at 10 dB": [noisy(w, 10) for w in waves],
            "noise at 0 dB": [noisy(w, 0) for w in waves],
            "room + noise at 10 dB": [noisy(room(w), 10) for w in waves]}


def main() -> None:
    import torch

    from astedge.audio.decode import load_audio
    from astedge.data.datasets import read_dataset
    from astedge.measure import metrics
    from astedge.model.checkpoint import load_checkpoint
    from astedge.train.clips import ClipDataset, predict
    from astedge.train.recipes import load_recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    items = read_dataset(args.data, val_fraction=0.2, seed=0).splits["val"]
    rows = []
    for path in args.checkpoints:
        checkpoint = load_checkpoint(path)
        config, model = checkpoint.feature_config, checkpoint.build_model()
        waves = [load_audio(i.path, config.sample_rate).astype(np.float64) for i in items]
        row = {"checkpoint": str(path)}
        for name, replayed in conditions(waves, config.sample_rate, args.seed).items():
            dataset = ClipDataset(items, len(checkpoint.labels), config, load_recipe("demo"), False,
                                  [w.astype(np.float32) for w in replayed])
            scores, targets = predict(model, dataset, 64, torch.device("cpu"), checkpoint.task)
            row[name] = float(metrics.accuracy(scores, targets))
            print(f"{path}: {name} {row[name]:.3f}", flush=True)
        rows.append(row)
    names = [k for k in rows[0] if k != "checkpoint"]
    header = machine_header(("pyroomacoustics",))
    lines = [f"# The demo classes through rooms and noise — {header['cpu']}, {header['date'][:10]}", "",
             f"Held-out clips of `{args.data}` ({len(items)}), accuracy; rooms and noise drawn with seed {args.seed}.",
             "", "| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| `{r['checkpoint']}` | " + " | ".join(f"{100 * r[n]:.1f} %" for n in names) + " |" for r in rows]
    write_results("demo-rooms-cpu", {"machine": header, "items": len(items), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
