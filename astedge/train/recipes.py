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
    drop_path: float = 0.0  # stochastic depth (the last block's drop rate; timm's drop_path_rate)
    # optimization (Adam as in AST: betas 0.95/0.999, weight decay 5e-7)
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"  # adam (AST) | adamw (decoupled weight decay, as DeiT/KWT from scratch)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 5e-7
    warmup_steps: int = 0  # linear warm-up from 0 over this many steps (AST: 1000) ...
    warmup_every: int = 50  # ... raised every this many steps (AST: 50)
    schedule: str = "step"  # step: AST's MultiStepLR below | cosine: to 0 at the end of the last epoch
    lr_start: int = 5  # MultiStepLR: decay after epoch lr_start, lr_start + lr_step, ... (1-based)
    lr_step: int = 1
    lr_decay: float = 0.85
    loss: str = "auto"  # auto (CE for single-label, BCE for multi-label) | ce | bce
    label_smoothing: float = 0.0  # CE/BCE targets y(1 - e) + e/K
    # data and augmentation
    freqm: int = 0  # SpecAugment frequency mask width (before normalization, as AST)
    timem: int = 0  # SpecAugment time mask width
    freq_masks: int = 1  # SpecAugment masks of each kind per clip
    time_masks: int = 1
    time_shift: int = 0  # roll the clip's frames by up to +-N (zero-filled), before normalization
    mixup: float = 0.0  # probability of waveform mixup, lambda ~ Beta(10, 10)
    balanced_sampling: bool = False  # AudioSet-style class-balanced sampling (weights 1000 / (count + 0.01))
    noise: bool = False  # Speech Commands: additive uniform noise and a +-10 frame roll after normalization
    norm_stats: str = "computed"  # computed (from the training set) | audioset | esc50 | speechcommands | "MEAN,STD"
    # a teacher through the distillation token (DeiT): "" | timm:NAME (a timm CNN trained first on the same
    # data) | an astedge checkpoint or export folder. The cls token learns the labels, the distillation
    # token the teacher: loss = (1 - alpha) base(cls) + alpha distill(dist); inference keeps AST's mean.
    teacher: str = ""
    distillation: str = "hard"  # hard: CE to the teacher's argmax (DeiT's best) | soft: KL at temperature tau
    distill_alpha: float = 0.5
    distill_tau: float = 1.0
    teacher_epochs: int | None = None  # epochs of a timm teacher's own training (None: the recipe's)
    # weight averaging of epochs wa_start..wa_end (1-based, inclusive; 0 = off)
    wa_start: int = 0
    wa_end: int = 0
    # what this recipe is: the preset it came from and its variant ("pretrained": AST's published values,
    # which assume ImageNet/AudioSet weights; "scratch": values measured for a random init)
    preset: str = ""
    variant: str = ""
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
    from astedge.model.config import POS_EMBED_MODES

    if recipe.pos_embed not in POS_EMBED_MODES:
        raise UserError(f"pos_embed must be one of {', '.join(POS_EMBED_MODES)}, got {recipe.pos_embed!r}")
    if len(recipe.patch_size) != 2:
        raise UserError(f"patch_size needs two sizes (frequency x time), got {recipe.patch_size}")
    if recipe.loss not in ("auto", "ce", "bce"):
        raise UserError(f"loss must be auto, ce or bce, got {recipe.loss!r}")
    choices = {"optimizer": ("adam", "adamw"), "schedule": ("step", "cosine"), "distillation": ("hard", "soft")}
    for name, allowed in choices.items():
        if getattr(recipe, name) not in allowed:
            raise UserError(f"{name} must be one of {', '.join(allowed)}, got {getattr(recipe, name)!r}")
    if not (0.0 <= recipe.label_smoothing < 1.0 and 0.0 <= recipe.distill_alpha <= 1.0 and recipe.distill_tau > 0
            and 0.0 <= recipe.drop_path < 1.0):
        raise UserError("label_smoothing and drop_path must be in [0, 1), distill_alpha in [0, 1], distill_tau > 0")
    if min(recipe.freq_masks, recipe.time_masks, recipe.time_shift) < 0 or recipe.epochs < 1 or recipe.batch_size < 1:
        raise UserError("freq_masks, time_masks and time_shift must be >= 0, epochs and batch_size >= 1")
    return recipe


#: From-scratch variants of AST's presets, applied when `init` is random. AST's published values assume
#: ImageNet- or AudioSet-pretrained weights (the paper's Table 2: from scratch AST loses most of its
#: accuracy); on ten TTS keywords, `speechcommands` as published stayed at chance for 15 epochs. These
#: values were measured here (benchmarks/results/training-*.md): a shallower DeiT-Ti, AdamW with warm-up and a
#: cosine decay, CE with label smoothing, light SpecAugment. For speech, frame tokens (the paper's 128x2 strips,
#: one token per 20 ms, as KWT): 16x16 patches sat at chance for 4-5 epochs on ten TTS keywords, strips
#: reached 97 % of held-out voices in 6.
SCRATCH: dict[str, dict] = {
    "speechcommands": dict(model="tiny", depth=4, patch_size=(128, 2), fstride=128, tstride=2, epochs=15,
                           batch_size=32, optimizer="adamw", lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05,
                           warmup_steps=60, warmup_every=1, schedule="cosine", loss="ce", label_smoothing=0.1,
                           freqm=12, timem=10, freq_masks=1, time_masks=1, time_shift=5, mixup=0.0, noise=False),
    "esc50": dict(model="tiny", depth=6, fstride=16, tstride=16, batch_size=32, optimizer="adamw", lr=1e-3,
                  betas=(0.9, 0.999), weight_decay=0.05, warmup_steps=300, warmup_every=1, schedule="cosine",
                  label_smoothing=0.1, freqm=24, timem=48, freq_masks=2, time_masks=2),
    "audioset": dict(model="tiny", depth=6, fstride=16, tstride=16, epochs=15, batch_size=32, optimizer="adamw",
                     lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05, warmup_steps=300, warmup_every=1,
                     schedule="cosine", freqm=24, timem=96, freq_masks=2, time_masks=2, mixup=0.5, wa_start=0,
                     wa_end=0),
}

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
    """A preset (its from-scratch variant when `init` ends up random), then a TOML/JSON file's values, then
    explicit overrides (later wins)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    values = _recipe_file(config_file) if config_file else {}
    values.update(overrides or {})
    recipe = PRESETS[preset]
    init = str(values.get("init", recipe.init))
    if preset in SCRATCH and init == "random":
        recipe = recipe.with_overrides({**SCRATCH[preset], "variant": "scratch"})
    elif preset in SCRATCH:
        recipe = recipe.with_overrides({"variant": "pretrained"})
    return recipe.with_overrides({"preset": preset, **values})


#: What distillation adds to a from-scratch recipe: soft targets at a temperature on the distillation token.
DISTILL = dict(distillation="soft", distill_tau=2.0, distill_alpha=0.5)


def distill_recipe(teacher_window_seconds: float, preset: str | None = None, overrides: dict | None = None) -> Recipe:
    """A student's recipe: `preset` (default by the teacher's window: up to 2 s Speech Commands, up to 6 s
    ESC-50, else AudioSet), its from-scratch variant, :data:`DISTILL`, then `overrides`."""
    if preset is None:
        preset = "speechcommands" if teacher_window_seconds <= 2 else "esc50" if teacher_window_seconds <= 6 \
            else "audioset"
    return load_recipe(preset, overrides={**DISTILL, **(overrides or {})})


def describe_variant(recipe: Recipe) -> str:
    """One line saying which values a run uses and why."""
    if recipe.variant == "scratch" and recipe.preset in SCRATCH:
        return (f"recipe {recipe.preset}, from-scratch variant: init is random, and AST's published values assume "
                "ImageNet or AudioSet weights (from scratch they learn nothing); pass --init to use them")
    if recipe.variant == "pretrained":
        return f"recipe {recipe.preset}, AST's published values (init {recipe.init})"
    return f"recipe {recipe.preset or 'custom'}"


def _recipe_file(config_file: str | Path) -> dict:
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
    values = values.get("recipe", values)
    return {k: v for k, v in values.items() if k not in ("preset", "variant")}  # recipe.json records them


def parse_stride(text: str) -> tuple[int, int]:
    """``--stride 10/10`` -> (fstride, tstride)."""
    fstride, _, tstride = str(text).partition("/")
    if not (fstride.isdigit() and tstride.isdigit()):
        raise UserError(f"--stride expects F/T such as 10/10, got {text!r}")
    return int(fstride), int(tstride)
