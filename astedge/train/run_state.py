"""Where a run stands after an epoch, and resuming from it: `last.state.safetensors` beside `last.safetensors`.

The state file holds the optimizer's tensors (``optimizer.<param index>.<name>``) and the weight-averaging
sums (``wa.<parameter>``) as tensors, and the rest as JSON metadata (``optimizer``: parameter groups and
scalar entries; ``progress``: epoch, step, best value and epoch, history): resuming unpickles nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from astedge.model.checkpoint import load_checkpoint
from astedge.model.tensorfile import json_entry, read_tensors, write_tensors


@dataclass
class RunState:
    """Where a run stands after an epoch: what resuming restores."""

    epoch: int = 0
    step: int = 0
    best_value: float = -math.inf
    best_epoch: int | str = 0
    history: list[dict] = field(default_factory=list)
    wa_sum: dict = field(default_factory=dict)

    def progress(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "history": self.history}

    def record(self, record: dict, metric: str) -> bool:
        """Add an epoch's record; True when its `metric` is the best so far."""
        self.history.append(record)
        self.epoch = record["epoch"]
        improved = record[metric] > self.best_value
        if improved:
            self.best_value, self.best_epoch = record[metric], record["epoch"]
        return improved

    def add_to_average(self, model: nn.Module) -> None:
        """Add the model's weights to the weight-averaging sums (float64, on the CPU)."""
        for k, v in model.state_dict().items():
            self.wa_sum[k] = self.wa_sum.get(k, torch.zeros_like(v, dtype=torch.float64)) + v.detach().cpu().double()


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimizer state as tensors (for safetensors) + JSON-able rest: resuming needs no pickle."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_state(path: Path, optimizer: torch.optim.Optimizer, state: RunState) -> Path:
    """`state` and the optimizer's as one safetensors file (the layout in the module docstring), atomically."""
    tensors, meta = _flatten_optimizer(optimizer)
    tensors.update({f"wa.{k}": v for k, v in state.wa_sum.items()})
    return write_tensors(path, tensors, {"progress": state.progress(), "optimizer": meta})


def load_state(path: Path, optimizer: torch.optim.Optimizer) -> RunState:
    """The run state saved in `path`; `optimizer` gets its saved state back."""
    tensors, metadata = read_tensors(path, framework="pt")
    _restore_optimizer(optimizer, tensors, json_entry(metadata, "optimizer", path))
    progress = json_entry(metadata, "progress", path)
    return RunState(progress["epoch"], progress["step"], progress["best_value"], progress["best_epoch"],
                    progress["history"], {k[3:]: v for k, v in tensors.items() if k.startswith("wa.")})


def resume_run(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> RunState:
    """Model, optimizer and run state as the run folder's last finished epoch left them."""
    checkpoint = load_checkpoint(run_dir / "last.safetensors")
    model.load_state_dict({k: torch.as_tensor(v) for k, v in checkpoint.state_dict.items()})
    return load_state(run_dir / "last.state.safetensors", optimizer)
