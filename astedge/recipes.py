"""Training recipes: every hyper-parameter in one dataclass, with AST's published recipes as presets.

Values come from the original `egs/*/run*.sh` (see shared/reference/ast.md §6). Any field can be
overridden from a TOML/JSON file or `--set KEY=VALUE`; `Recipe.describe()` is written into each run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from astedge.errors import UserError
from astedge.files import read_toml


@dataclass(frozen=True)
class Recipe:
    # model
    model: str = "tiny"  # tiny | small | base (DeiT widths)
    depth: int | None = None  # override the size's 12 layers (None keeps it)
    patch_size: tuple[int, int] = (16, 16)  # (frequency, time); e.g. (128, 2) or (32, 32) for the paper's Table 6
    fstride: int = 10  # patch strides; 16/14/12/10 are the paper's Table 5 overlaps
    tstride: int = 10
    target_length: int | None = None  # frames; None: from the data (median clip, rounded up to 16)
    init: str = "random"  # random | imagenet:FILE | path to an astedge checkpoint (new head if labels differ)
    pos_embed: str = "bilinear"  # adapting positions to a new grid/length: bilinear | nearest | crop | reinit (Table 4)
    # optimization (Adam as in AST: betas 0.95/0.999, weight decay 5e-7)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 5e-7
    warmup_steps: int = 0  # linear warm-up from 0 over this many steps (AST: 1000) ...
    warmup_every: int = 50  # ... raised every this many steps (AST: 50)
    lr_start: int = 5  # MultiStepLR: decay after epoch lr_start, lr_start + lr_step, ... (1-based)
    lr_step: int = 1
    lr_decay: float = 0.85
    loss: str = "auto"  # auto (CE for single-label, BCE for multi-label) | ce | bce
    # data and augmentation
    freqm: int = 0  # SpecAugment frequency mask width (before normalization, as AST)
    timem: int = 0  # SpecAugment time mask width
    mixup: float = 0.0  # probability of waveform mixup, lambda ~ Beta(10, 10)
    balanced_sampling: bool = False  # AudioSet-style class-balanced sampling (weights 1000 / (count + 0.01))
    noise: bool = False  # Speech Commands: additive uniform noise and a +-10 frame roll after normalization
    norm_stats: str = "computed"  # computed (from the training set) | audioset | esc50 | speechcommands | "MEAN,STD"
    # weight averaging of epochs wa_start..wa_end (1-based, inclusive; 0 = off)
    wa_start: int = 0
    wa_end: int = 0
    # runtime
    num_workers: int = 0
    amp: bool = True  # autocast fp16 on CUDA (no effect on CPU)
    seed: int = 0
    val_fraction: float = 0.2

    def with_overrides(self, values: dict) -> "Recipe":
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(f"unknown recipe field(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return _check(replace(self, **{k: _coerce(getattr(self, k), k, v) for k, v in values.items()}))

    def to_dict(self) -> dict:
        return asdict(self)


def _coerce(current, name: str, value):
    """Parse `--set` strings into the field's type (bool, int, float, tuple, None)."""
    if not isinstance(value, str):
        return tuple(value) if isinstance(current, tuple) else value
    text = value.strip()
    try:
        if text.lower() in ("none", "null"):
            return None
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(current, tuple):
            kind = type(current[0]) if current else float
            return tuple(kind(x) for x in text.strip("()[]").replace("x", ",").split(","))
        if isinstance(current, int) or (current is None and text.lstrip("-").isdigit()):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise UserError(f"recipe field {name}: cannot read {value!r} as {type(current).__name__}") from None
    return text


def _check(recipe: "Recipe") -> "Recipe":
    from astedge.model_config import POS_EMBED_MODES

    if recipe.pos_embed not in POS_EMBED_MODES:
        raise UserError(f"pos_embed must be one of {', '.join(POS_EMBED_MODES)}, got {recipe.pos_embed!r}")
    if len(recipe.patch_size) != 2:
        raise UserError(f"patch_size needs two sizes (frequency x time), got {recipe.patch_size}")
    if recipe.loss not in ("auto", "ce", "bce"):
        raise UserError(f"loss must be auto, ce or bce, got {recipe.loss!r}")
    return recipe


PRESETS: dict[str, Recipe] = {
    # AST's recipes, for the paper's base model from ImageNet (pass --init imagenet:FILE).
    "audioset": Recipe(model="base", target_length=1024, epochs=5, batch_size=12, lr=1e-5, warmup_steps=1000,
                       lr_start=2, lr_step=1, lr_decay=0.5, loss="bce", freqm=48, timem=192, mixup=0.5,
                       balanced_sampling=True, wa_start=1, wa_end=5, norm_stats="audioset"),
    "esc50": Recipe(model="base", target_length=512, epochs=25, batch_size=48, lr=1e-4, lr_start=5, lr_step=1,
                    lr_decay=0.85, loss="ce", freqm=24, timem=96, norm_stats="esc50"),
    "speechcommands": Recipe(model="base", target_length=128, epochs=30, batch_size=128, lr=2.5e-4, lr_start=5,
                             lr_step=1, lr_decay=0.85, loss="bce", freqm=48, timem=48, mixup=0.6, noise=True,
                             norm_stats="speechcommands"),
    # A tiny AST from scratch on a 2-core CPU within the demo's 5 minutes. Measured on the demo data
    # (see the README's demo section): 12 layers learn too slowly for that budget (61% after 8 epochs,
    # 7 min), SpecAugment halves the early learning speed on 1 s clips, and 3,200 clips x 12 epochs
    # overfit (95.2%) where 6,000 x 7 generalize (98.1%). So: DeiT-Ti width with 4 layers, no overlap
    # (stride 16: 56 patches), warm-up, a step decay and the weight average of the last two epochs;
    # the data's random pitch, gain, timing and noise are the augmentation.
    "demo": Recipe(model="tiny", depth=4, fstride=16, tstride=16, epochs=7, batch_size=32, lr=5e-4,
                   warmup_steps=50, warmup_every=1, lr_start=4, lr_step=1, lr_decay=0.6, loss="ce",
                   wa_start=6, wa_end=7),
}


def load_recipe(preset: str = "demo", config_file: str | Path | None = None, overrides: dict | None = None) -> Recipe:
    """A preset, then a TOML/JSON file's values, then explicit overrides (later wins)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    recipe = PRESETS[preset]
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise UserError("no such recipe file", path)
        if path.suffix.lower() == ".toml":
            values = read_toml(path)
        else:
            try:
                values = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as err:
                raise UserError(f"cannot parse recipe ({err})", path) from None
        if not isinstance(values, dict):
            raise UserError("a recipe file holds a table of recipe fields", path)
        recipe = recipe.with_overrides(values.get("recipe", values))
    return recipe.with_overrides(overrides or {})


def parse_stride(text: str) -> tuple[int, int]:
    """``--stride 10/10`` -> (fstride, tstride)."""
    fstride, _, tstride = str(text).partition("/")
    if not (fstride.isdigit() and tstride.isdigit()):
        raise UserError(f"--stride expects F/T such as 10/10, got {text!r}")
    return int(fstride), int(tstride)
