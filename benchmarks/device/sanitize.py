"""A small, complete workout of the CUDA fbank kernel for compute-sanitizer (racecheck and synccheck are slow, so the
inputs are small): every entry point and block shape the tests cover, on the GPU, checked against the host build.

    compute-sanitizer --tool racecheck --error-exitcode 1 python benchmarks/device/sanitize.py

- model input (padding, cropping, a block straddling the last frame), raw frames, normalized frames (the stream
  ring's kind), n_fft 256 / 512 / 2048 / 4096 (1, 2 or 4 frames a block), a batch that uses gridDim.y;
- run_device on a driver-API stream, eagerly and replayed from a CUDA graph;
- run_host (the plan's own stream) with a staging limit small enough to split clips and rows into chunks.
Exit status 0 when every output matches the host build within 4e-6 (logf may differ by 1 ulp).
"""

from __future__ import annotations

import sys

import numpy as np

from astedge.features import cuda_driver
from astedge.features import cuda_fbank as C
from astedge.features import fbank as F
from astedge.features.device_pipeline import Graphs

CASES = [  # (config, model_input, normalize, samples, batch)
    (F.FbankConfig(target_length=100), True, True, 16000, 3),  # 98 frames + 2 pad rows: the last block straddles
    (F.FbankConfig(target_length=50), True, True, 16000, 2),  # cropping
    (F.DEFAULT, False, False, 4000, 5),  # raw frames
    (F.DEFAULT, False, True, 4320, 1),  # normalized frames (the stream's hop)
    (F.FbankConfig(sample_rate=8000, num_mel_bins=64, target_length=30), True, True, 2400, 2),  # n_fft 256
    (F.FbankConfig(sample_rate=44100, target_length=8), True, True, 5000, 2),  # n_fft 2048
    (F.FbankConfig(sample_rate=96000, target_length=5), True, True, 9000, 2),  # n_fft 4096
]


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """Max |a - b|, infinite when any cell is not finite (an unwritten NaN cell must not hide)."""
    diff = np.abs(a - b)
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")


def main() -> int:
    driver = cuda_driver.shared_driver()
    stream = driver.stream()
    rng = np.random.default_rng(0)
    worst = 0.0
    for config, model_input, normalize, samples, batch in CASES:
        gpu = C.CudaFbank(config, model_input=model_input, normalize=normalize)
        host = C.HostFbank(config, model_input=model_input, normalize=normalize)
        waves = (0.1 * rng.standard_normal((batch, samples))).astype(np.float32)
        rows, bins = gpu.output_shape(samples)
        want = host(waves)
        x, y = driver.alloc(waves.nbytes), driver.alloc(batch * rows * bins * 4)
        out = np.empty((batch, rows, bins), np.float32)
        driver.copy_to_device(x, waves.ctypes.data, waves.nbytes, stream)
        graphs = Graphs(driver, stream)
        for _ in range(3):  # eager, captured, replayed
            driver.fill32(y, 0x7FC00000, batch * rows * bins, stream)  # NaN: an unwritten cell shows
            graphs.run("k", lambda: gpu.run_device(x, y, batch, samples, stream))
            driver.copy_to_host(out.ctypes.data, y, out.nbytes, stream)
            driver.synchronize(stream)
            worst = max(worst, _gap(out, want))
        gpu.set_staging_limit(4 * (rows * bins + samples) // 2 + 4096)  # forces chunks
        worst = max(worst, _gap(gpu(waves), want))
        graphs.close()
        driver.free(x)
        driver.free(y)
        gpu.close()
    driver.destroy_stream(stream)
    print(f"max |gpu - host| = {worst:.3g} over {len(CASES)} configurations")
    return 0 if worst <= 4e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
