"""How the weights move: the optimizer (Adam as AST, or AdamW), the learning-rate schedule (warm-up, then AST's
MultiStep decay or a cosine) and one epoch of optimizer steps. Shared by the AST loop and the CNN teacher's."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from astedge.train.recipes import Recipe
from astedge.train.run_state import RunState


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """Adam (AST) or AdamW; AdamW leaves norms, biases and tokens/positions out of weight decay (as DeiT/timm)."""
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())  # one kernel per step, not per tensor
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=tuple(recipe.betas),
                                weight_decay=recipe.weight_decay, fused=fused or None)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith(("cls_token", "dist_token", "pos_embed")) else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=tuple(recipe.betas),
                             fused=fused or None)


def lr_at(recipe: Recipe, epoch: int, step: int, total_steps: int | None = None) -> float:
    """Warm-up (stepwise, from 0), then AST's MultiStep decay after epochs lr_start, lr_start + lr_step, ...
    (1-based), or a cosine from the warm-up's end to 0 at `total_steps`."""
    lr = recipe.lr
    if recipe.schedule == "cosine":
        if total_steps is None:
            raise ValueError("the cosine schedule needs total_steps")
        span = max(1, total_steps - recipe.warmup_steps)
        done = min(1.0, max(0, step - recipe.warmup_steps) / span)
        lr *= 0.5 * (1.0 + math.cos(math.pi * done))
    else:
        decays = 0 if epoch <= recipe.lr_start else len(range(recipe.lr_start, epoch, recipe.lr_step))
        lr *= recipe.lr_decay**decays
    if recipe.warmup_steps and step <= recipe.warmup_steps:
        lr *= (step // recipe.warmup_every * recipe.warmup_every) / recipe.warmup_steps
    return lr


def train_epoch(objective_fn, params: nn.Module, loader, optimizer, scaler, recipe: Recipe, epoch: int,
                state: RunState, total_steps: int, device, use_amp: bool, bar=None) -> tuple[list[float], list[float]]:
    """One pass over the epoch's batches (progress on a rich `bar` when given); returns the per-step losses and
    label losses. `state.step` counts the steps: the schedule's position."""
    params.train()
    losses, label_losses = [], []
    job = bar.add_task("train", total=len(loader), loss="-") if bar is not None else None
    for batch in loader:  # (x, y), then a frame head's targets when the model has one
        state.step += 1
        for group in optimizer.param_groups:
            group["lr"] = lr_at(recipe, epoch, state.step, total_steps)
        batch = [part.to(device, non_blocking=True) for part in batch]
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            loss, label = objective_fn(*batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
        label_losses.append(label.item())
        if bar is not None:
            bar.update(job, advance=1, loss=f"{np.mean(losses[-20:]):.3f}")
    return losses, label_losses


def steps_per_epoch(count: int, batch_size: int, world: int) -> int:
    """Optimizer steps in one epoch on each of `world` ranks (the cosine schedule's length; one step at least)."""
    per_rank = math.ceil(count / world)
    return per_rank // batch_size if per_rank > batch_size else 1
