"""CPU fbank for one 10 s clip: astedge's numpy reference vs what a user would reach for instead.

Run: python benchmarks/fbank_cpu.py   (writes benchmarks/results/fbank-cpu-<date>.{json,md})
All timings come from one process on one machine; read the ratios, not the absolute numbers.
Compared: Hugging Face ASTFeatureExtractor (its numpy path: torchaudio is not installed),
kaldi-native-fbank (at 125 bins: it refuses AST's 128), and torchaudio's original kaldi.fbank when
tests/.cache/kaldi.py has been fetched (.ci/run does it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import machine_header, timeit, write_results  # noqa: E402

from astedge.features import fbank as F  # noqa: E402


def main() -> None:
    wave = (0.1 * np.random.default_rng(0).standard_normal(160000)).astype(np.float32)
    rows = {"astedge numpy (model input, 1024x128)": lambda: F.model_input(wave)}

    from transformers import ASTFeatureExtractor
    from transformers.utils import is_torchaudio_available

    extractor = ASTFeatureExtractor()
    label = "transformers ASTFeatureExtractor " + ("(torchaudio path)" if is_torchaudio_available() else "(numpy path)")
    rows[label] = lambda: extractor(wave, sampling_rate=16000, return_tensors="np")

    try:
        from references import knf_logmel

        rows["kaldi-native-fbank OnlineFbank (125 bins)"] = lambda: knf_logmel(wave, 125)
    except ImportError:
        pass
    try:
        import pytest  # references.torchaudio_fbank skips through pytest when kaldi.py is absent

        from references import torchaudio_fbank

        import torch

        torch.set_num_threads(1)
        torchaudio_fbank(wave)
        rows["torchaudio kaldi.fbank (original, torch 1 thread)"] = lambda: torchaudio_fbank(wave)
    except (ImportError, pytest.skip.Exception):
        pass

    results = {name: timeit(fn, repeats=30) for name, fn in rows.items()}
    ours = results["astedge numpy (model input, 1024x128)"]["p50_ms"]
    for stats in results.values():
        stats["vs_astedge"] = stats["p50_ms"] / ours
    data = {"benchmark": "fbank-cpu", "clip": "10 s, 16 kHz, Gaussian noise", "machine": machine_header(
        ("transformers", "kaldi-native-fbank", "torch")), "results": results}
    lines = [f"# CPU fbank, one 10 s clip — {data['machine']['cpu']}, {data['machine']['cores']} cores, "
             f"{data['machine']['date'][:10]}", "", "| implementation | p50 ms | mean ms | slower than astedge |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {s['p50_ms']:.2f} | {s['mean_ms']:.2f} | {s['vs_astedge']:.1f}x |" for name, s in results.items()]
    write_results("fbank-cpu", data, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
