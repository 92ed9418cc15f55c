"""Position-embedding geometry: adapting AST's ``f x t`` grid of learned positions to another grid.

Two situations need it, with one vocabulary of modes (:data:`POS_EMBED_MODES`, the paper's Table 4 plus
AST's own rule):

- an ImageNet ViT/DeiT's square grid becomes an audio grid (:func:`astedge.model.convert.from_imagenet`): each
  axis keeps its centre when the target is no larger and is stretched otherwise (AST's rule), the
  stretch being ``bilinear`` (AST; ``crop`` means the same here) or ``nearest``; ``reinit`` draws fresh
  positions;
- a model runs at another input length (:func:`resize_target_length`): ``bilinear`` and ``nearest``
  resample the time axis, ``crop`` is AST's rule (keep the centre columns when shorter, bilinear when
  longer), ``reinit`` draws fresh columns.

The class and distillation positions are always kept. Torch only (no model import: no cycles).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from astedge.errors import UserError
from astedge.model.config import NUM_PREFIX_TOKENS, POS_EMBED_MODES, ModelConfig


def check_mode(mode: str) -> str:
    if mode not in POS_EMBED_MODES:
        raise UserError(f"unknown position-embedding mode {mode!r}; known: {', '.join(POS_EMBED_MODES)}")
    return mode


def _centre(size: int, keep: int) -> slice:
    start = size // 2 - keep // 2
    return slice(start, start + keep)


def adapt_grid(grid: torch.Tensor, f_dim: int, t_dim: int, mode: str = "bilinear") -> torch.Tensor:
    """AST's resize of a ``[1, D, H, W]`` position grid to ``(f_dim, t_dim)``, time axis first.

    Each axis keeps its centre when the target is no larger, else is stretched with `mode` (``bilinear``,
    ``align_corners=False``, as AST, or ``nearest``): time to ``(H, t_dim)``, then frequency to ``(f_dim, t_dim)``.
    """
    height, width = grid.shape[-2:]
    if t_dim <= width:
        grid = grid[..., _centre(width, t_dim)]
    else:
        grid = F.interpolate(grid, size=(height, t_dim), mode=mode)
    if f_dim <= height:
        grid = grid[..., _centre(height, f_dim), :]
    else:
        grid = F.interpolate(grid, size=(f_dim, t_dim), mode=mode)
    return grid


def fresh_grid(like: torch.Tensor, f_dim: int, t_dim: int) -> torch.Tensor:
    """New positions ``[1, D, f_dim, t_dim]``: truncated normal, std 0.02, as at initialization."""
    return torch.nn.init.trunc_normal_(like.new_empty(1, like.shape[1], f_dim, t_dim), std=0.02)


def split_pos(pos_embed: torch.Tensor, grid: tuple[int, int], prefix: int = NUM_PREFIX_TOKENS):
    """``[1, prefix + f*t, D]`` -> (prefix positions, ``[1, D, f, t]`` grid)."""
    dim = pos_embed.shape[-1]
    return pos_embed[:, :prefix], pos_embed[:, prefix:].transpose(1, 2).reshape(1, dim, *grid)


def join_pos(prefix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`split_pos`."""
    return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)


def resize_time_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], t_dim: int,
                          mode: str = "bilinear") -> torch.Tensor:
    """Position embedding ``[1, 2 + f*t, D]`` for the same frequency rows and `t_dim` time columns.

    A model run at a length it was not trained at may lose accuracy; fine-tune to recover it.
    """
    check_mode(mode)
    f_dim = grid[0]
    prefix, patches = split_pos(pos_embed, grid)
    if mode == "reinit":
        patches = fresh_grid(patches, f_dim, t_dim)
    elif mode == "crop":
        patches = adapt_grid(patches, f_dim, t_dim)
    else:
        patches = F.interpolate(patches, size=(f_dim, t_dim), mode=mode)
    return join_pos(prefix, patches)


def resize_target_length(state: dict, config: ModelConfig, target_length: int,
                         mode: str = "bilinear") -> tuple[dict, ModelConfig]:
    """An astedge state and config for `target_length` input frames (see :func:`resize_time_pos_embed`)."""
    new_config = replace(config, target_length=target_length)
    out = dict(state)
    out["v.pos_embed"] = resize_time_pos_embed(torch.as_tensor(state["v.pos_embed"]), config.grid,
                                               new_config.grid[1], mode)
    return out, new_config
