"""What an AST configuration costs: patch grid, parameters, FLOPs, activation memory and CPU latency.

The paper's ablations change exactly these numbers (fewer patches = less compute = lower latency),
so they are counted, not guessed: FLOPs with ``torch.utils.flop_counter`` (2 per multiply-add, on
the meta device: no weights allocated), activation memory as the peak of live intermediate
tensors during a batch-1 forward (a dispatch-mode tally on the meta device), and latency by
running the exported ONNX graph in ONNX Runtime on this machine's CPU.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

from astedge.model.config import ModelConfig, model_config

#: The paper's configurations on a 1024 x 128 input (AST-base): Table 5's patch overlaps
#: (strides 16, 14, 12, 10) and Table 6's patch shapes (128x2 strips and 32x32, without overlap).
#: Tables 2 and 4 (ImageNet init on/off, position-embedding adaptation) change weights, not cost.
PAPER_CONFIGS: dict[str, dict] = {
    "stride16": dict(fstride=16, tstride=16),
    "stride14": dict(fstride=14, tstride=14),
    "stride12": dict(fstride=12, tstride=12),
    "stride10 (AST)": dict(fstride=10, tstride=10),
    "patch128x2": dict(patch_size=(128, 2), fstride=128, tstride=2),
    "patch32x32": dict(patch_size=(32, 32), fstride=32, tstride=32),
}


def paper_configs(size: str = "base", **overrides) -> dict[str, ModelConfig]:
    return {name: model_config(size, **{**values, **overrides}) for name, values in PAPER_CONFIGS.items()}


def count_flops(config: ModelConfig, batch: int = 1) -> int:
    """FLOPs of one forward pass (2 per multiply-add), counted by torch on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from astedge.model.ast_model import ASTModel

    with torch.device("meta"):
        model = ASTModel(config).eval()
        x = torch.empty(batch, config.target_length, config.num_mel_bins)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def count_parameters(config: ModelConfig) -> int:
    import torch

    from astedge.model.ast_model import ASTModel

    with torch.device("meta"):
        return sum(p.numel() for p in ASTModel(config).parameters())


def peak_activation_bytes(config: ModelConfig, batch: int = 1) -> int:
    """Peak bytes of live intermediate tensors in a batch-`batch` float32 forward (weights excluded).

    Every tensor an operator creates (views excluded: they share memory) is counted until Python
    frees it, on the meta device. An eager-mode figure: fused runtimes (TensorRT) keep less alive.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from astedge.model.ast_model import ASTModel

    class Tally(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0

        def _release(self, size):
            self.live -= size

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t._base is None and not func.is_view:
                    size = t.numel() * t.element_size()
                    self.live += size
                    weakref.finalize(t, self._release, size)
            self.peak = max(self.peak, self.live)
            return out

    with torch.device("meta"):
        model = ASTModel(config).eval()
        x = torch.empty(batch, config.target_length, config.num_mel_bins)
    tally = Tally()
    with tally, torch.no_grad():
        model(x)
    return tally.peak


def onnx_cpu_latencies_ms(configs: dict[str, ModelConfig], threads: int | None = None,
                          rounds: int = 7) -> dict[str, dict]:
    """Batch-1 latency of each config's exported FP32 ONNX graph (random weights) in ONNX Runtime on this CPU.

    All sessions are built first and then run round-robin (:func:`astedge.timing.round_robin`, with its
    pause between contenders), `rounds` times each, so a burst of other load hits every config alike;
    the minimum is the figure to compare (load only ever adds time).
    """
    import contextlib

    import numpy as np

    from astedge import artefact as art
    from astedge.runtime.backends.onnxruntime import ort_session
    from astedge.measure.random_weights import random_export
    from astedge.timing import round_robin

    calls = {}
    with contextlib.ExitStack() as stack:
        for index, (name, config) in enumerate(configs.items()):
            folder = stack.enter_context(random_export(config, name=f"model{index}"))
            session = ort_session(folder / art.ONNX_FILE, threads=threads)
            x = np.random.default_rng(0).standard_normal((1, config.target_length, config.num_mel_bins))
            feed = {session.get_inputs()[0].name: x.astype(np.float32)}
            calls[name] = lambda session=session, feed=feed: session.run(None, feed)
    times = round_robin(calls, rounds)
    return {name: {"min_ms": float(np.min(t)), "p50_ms": float(np.median(t)), "rounds": rounds}
            for name, t in times.items()}


def configs_from_toml(path: str | Path, size: str = "base") -> dict[str, ModelConfig]:
    """``[[config]]`` tables (name, patch_size, fstride, tstride, target_length, size, ...) -> named configs."""
    from astedge.errors import UserError
    from astedge.files import read_toml

    if not Path(path).is_file():
        raise UserError("no such config file", path)
    entries = read_toml(path).get("config", [])
    if not entries:
        raise UserError("no [[config]] tables found", path)
    configs = {}
    for entry in entries:
        entry = dict(entry)
        name = str(entry.pop("name", f"config{len(configs) + 1}"))
        configs[name] = model_config(entry.pop("size", size), **entry)
    return configs


@dataclass
class Cost:
    name: str
    patch_size: tuple[int, int]
    strides: tuple[int, int]
    grid: tuple[int, int]
    patches: int
    params_m: float
    gflops: float
    activation_mib: float
    cpu_latency_ms: float | None = None  # best of the round-robin runs (see onnx_cpu_latencies_ms)
    cpu_latency_p50_ms: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def costs(configs: dict[str, ModelConfig], latency: bool = True, threads: int | None = None, progress=None) -> list[Cost]:
    """Counted costs of each config, plus measured ONNX Runtime CPU latency when `latency`."""
    results = []
    for name, config in configs.items():
        results.append(Cost(name, tuple(config.patch_size), (config.fstride, config.tstride), config.grid,
                            config.num_patches, count_parameters(config) / 1e6, count_flops(config) / 1e9,
                            peak_activation_bytes(config) / 2**20))
        if progress:
            progress()
    if latency:
        for result, timing in zip(results, onnx_cpu_latencies_ms(configs, threads).values()):
            result.cpu_latency_ms, result.cpu_latency_p50_ms = timing["min_ms"], timing["p50_ms"]
    return results


def markdown_table(rows: list[Cost], header: str) -> str:
    lines = [header, "", "| config | patch | strides | grid (f x t) | patches | params (M) | GFLOPs | activations (MiB) "
             "| CPU latency, ONNX Runtime, best / median (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for c in rows:
        latency = f"{c.cpu_latency_ms:.0f} / {c.cpu_latency_p50_ms:.0f}" if c.cpu_latency_ms is not None else "-"
        lines.append(f"| {c.name} | {c.patch_size[0]}x{c.patch_size[1]} | {c.strides[0]}/{c.strides[1]} | "
                     f"{c.grid[0]} x {c.grid[1]} | {c.patches} | {c.params_m:.2f} | {c.gflops:.1f} | "
                     f"{c.activation_mib:.0f} | {latency} |")
    return "\n".join(lines) + "\n"

