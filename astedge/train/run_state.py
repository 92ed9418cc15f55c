"""Where a run stands after an epoch, and resuming from it: `last.state.safetensors` beside `last.safetensors`.

The state file holds the model's weights (``model.<parameter>``), the optimizer's tensors
(``optimizer.<param index>.<name>``) and the weight-averaging sums (``wa.<parameter>``) as tensors, and the rest
as JSON metadata (``optimizer``: parameter groups and scalar entries; ``progress``: epoch, step, best value and
epoch, history): resuming unpickles nothing.

The state file is the epoch's commit: written first and whole (one atomic rename), before the checkpoints, so a
run killed at any moment resumes from the last epoch whose state file exists, with that epoch's own weights;
checkpoints a cut left behind are rewritten from it. State files from before the weights moved in resume from
``last.safetensors`` only when its epoch stamp (``provenance.epoch``) is the state's epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from astedge.errors import UserError
from astedge.model.checkpoint import load_checkpoint
from astedge.model.tensorfile import json_entry, read_tensors, write_tensors

#: The run folder's resume point (the commit) and its checkpoint of the same epoch.
STATE_FILE, LAST_FILE = "last.state.safetensors", "last.safetensors"


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


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: RunState) -> Path:
    """The model's weights, `state` and the optimizer's as one safetensors file (the layout in the module
    docstring), atomically: the epoch's commit."""
    tensors, meta = _flatten_optimizer(optimizer)
    tensors.update({f"wa.{k}": v for k, v in state.wa_sum.items()})
    tensors.update({f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    return write_tensors(path, tensors, {"progress": state.progress(), "optimizer": meta})


def load_state(path: Path, optimizer: torch.optim.Optimizer) -> tuple[RunState, dict]:
    """The run state saved in `path` and the model weights saved with it (empty in older files); `optimizer` gets
    its saved state back."""
    tensors, metadata = read_tensors(path, framework="pt")
    _restore_optimizer(optimizer, tensors, json_entry(metadata, "optimizer", path))
    progress = json_entry(metadata, "progress", path)
    state = RunState(progress["epoch"], progress["step"], progress["best_value"], progress["best_epoch"],
                     progress["history"], {k[3:]: v for k, v in tensors.items() if k.startswith("wa.")})
    return state, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}


def check_resumable(run_dir: Path) -> None:
    """Refuse a run folder that holds checkpoints but no state file to resume from (one line, before any work)."""
    if (run_dir / LAST_FILE).exists() and not (run_dir / STATE_FILE).exists():
        raise UserError(f"holds {LAST_FILE} but no {STATE_FILE} (the optimizer and progress --resume needs); start "
                        f"over with --force, or fine-tune from it with --init {run_dir / LAST_FILE}", run_dir)


def resume_run(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> RunState | None:
    """Model, optimizer and run state as the run folder's last committed epoch left them; None when no epoch
    was committed (the run was cut in its first)."""
    check_resumable(run_dir)
    if not (run_dir / STATE_FILE).exists():
        return None
    state, weights = load_state(run_dir / STATE_FILE, optimizer)
    if not weights:  # a state file from before the weights moved in: the checkpoint must be of the same epoch
        checkpoint = load_checkpoint(run_dir / LAST_FILE)
        stamp = checkpoint.provenance.get("epoch")
        if stamp != state.epoch:
            raise UserError(f"{LAST_FILE} is from epoch {stamp} and {STATE_FILE} from epoch {state.epoch}: the run "
                            "was cut between writing them; start over with --force", run_dir)
        weights = {k: torch.as_tensor(v) for k, v in checkpoint.state_dict.items()}
    model.load_state_dict(weights)
    return state
