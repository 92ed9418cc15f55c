"""Training recipes: every hyper-parameter in one dataclass, with AST's published recipes as presets.

Values come from the original `egs/*/run*.sh` (see shared/reference/ast.md §6). Any field can be
overridden from a TOML/JSON file or `--set KEY=VALUE`; `Recipe.describe()` is written into each run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from astedge.errors import UserError
from astedge.files import read_toml
from astedge.train.augment import OFF, WaveAugment


@dataclass(frozen=True)
class Recipe:
    # model
    model: str = "tiny"  # tiny | small | base (DeiT widths)
    depth: int | None = None  # override the size's 12 layers (None keeps it)
    embed_dim: int | None = None  # override the size's width (None keeps it; a multiple of num_heads)
    num_heads: int | None = None  # override the size's attention heads (None keeps it)
    mlp_ratio: float | None = None  # override the MLP's hidden width / embed_dim (None keeps DeiT's 4)
    patch_size: tuple[int, int] = (16, 16)  # (frequency, time); e.g. (128, 2) or (32, 32) for the paper's Table 6
    fstride: int = 10  # patch strides; 16/14/12/10 are the paper's Table 5 overlaps
    tstride: int = 10
    target_length: int | None = None  # frames; None: from the data (median clip, rounded up to the patch grid)
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
    augment: WaveAugment = OFF  # waveform augmentation (noise, rooms, band, speed, pitch, shift, gain): augment.py
    # a frame head (events at the token grid's time step, beside the clip logits): "auto" adds one when the data has
    # event boundaries (strong labels) | "on" | "off". Frames learn by BCE where boundaries are known and through
    # linear-softmax pooling where only clip labels are; frame_weight scales that loss against the clip loss.
    frame_head: str = "auto"
    frame_weight: float = 1.0
    crop_of_two: float = 0.0  # frame heads: share of training windows cut from two clips (edges, pairs, distractors)
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
    # which assume ImageNet/AudioSet weights; "scratch": values measured for a random init; "finetune": those
    # values fitted to fine-tuning another checkpoint on the data at hand)
    preset: str = ""
    variant: str = ""
    # runtime
    num_workers: int = 0
    amp: bool = True  # autocast fp16 on CUDA (no effect on CPU)
    seed: int = 0
    val_fraction: float = 0.2

    def with_overrides(self, values: dict) -> "Recipe":
        """These values with `values` applied: field names, or ``augment.FIELD`` for one augmentation setting
        (applied after an ``augment`` value: true/false, a table of settings)."""
        values = dict(values)
        nested = {k.split(".", 1)[1]: values.pop(k) for k in list(values) if k.startswith("augment.")}
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(f"unknown recipe field(s): {', '.join(unknown)}; known: {', '.join(known)}")
        recipe = replace(self, **{k: _coerce(getattr(self, k), k, v) for k, v in values.items()})
        if nested:
            recipe = replace(recipe, augment=recipe.augment.with_values(nested, _coerce))
        return _check(recipe)

    def to_dict(self) -> dict:
        return asdict(self)


def _coerce(current, name: str, value):
    """Parse `--set` strings into the field's type (bool, int, float, tuple, None; augmentation settings)."""
    if isinstance(current, WaveAugment):
        return _coerce_augment(current, value)
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
        if current is None:  # an optional number (mlp_ratio): a float when it reads as one, else the text
            try:
                return float(text)
            except ValueError:
                return text
    except ValueError:
        raise UserError(f"recipe field {name}: cannot read {value!r} as {type(current).__name__}") from None
    return text


def _coerce_augment(current: WaveAugment, value) -> WaveAugment:
    """``augment``: settings (a WaveAugment or a table of its fields), or on/off: on keeps settings already on,
    else takes the default ones; off keeps the settings with probability 0."""
    if isinstance(value, WaveAugment):
        return value
    if isinstance(value, dict):
        return current.with_values(value, _coerce)
    on = _coerce(False, "augment", value) if isinstance(value, str) else value
    if not isinstance(on, bool):
        raise UserError(f"augment takes true, false or a table of settings, got {value!r}")
    if not on:
        return replace(current, p=0.0)
    return current if current.p > 0 else replace(WaveAugment(), noise_dir=current.noise_dir, rir_dir=current.rir_dir)


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
    if recipe.frame_head not in ("auto", "on", "off"):
        raise UserError(f"frame_head must be auto, on or off, got {recipe.frame_head!r}")
    if not (recipe.frame_weight >= 0 and 0.0 <= recipe.crop_of_two <= 1.0):
        raise UserError("frame_weight must be >= 0 and crop_of_two in [0, 1]")
    problems = recipe.augment.problems()
    if problems:
        raise UserError("; ".join(problems))
    return recipe


def wants_frames(recipe: Recipe, strong_clips: int) -> bool:
    """Whether the model gets a frame head: on, off, or (auto) when the data has event boundaries."""
    return recipe.frame_head == "on" or (recipe.frame_head == "auto" and strong_clips > 0)


#: From-scratch variants of AST's presets, applied when `init` is random. AST's published values assume
#: ImageNet- or AudioSet-pretrained weights (the paper's Table 2: from scratch AST loses most of its
#: accuracy); on ten TTS keywords, `speechcommands` as published stayed at chance for 15 epochs. These
#: values were measured here (benchmarks/results/training-*.md): a shallower DeiT-Ti, AdamW with warm-up and a
#: cosine decay, CE with label smoothing, light SpecAugment. For speech, frame tokens (the paper's 128x2 strips,
#: one token per 20 ms, as KWT): 16x16 patches sat at chance for 4-5 epochs on ten TTS keywords, strips
#: reached 97 % of held-out voices in 6. Waveform augmentation (noise, rooms, band, speed, pitch) is on:
#: models trained on one set of voices and recordings scored 45-55 % on other synthesizers' voices without it.
#: Keywords take the clips' own length (98 frames for 1 s; AST's 128 made a quarter of the tokens padding) and a
#: 2x MLP: a step 1.8x faster on 2 cores, at the same accuracy on unseen voices (93.7 % in 15 epochs); the time
#: saved buys 25 epochs in what 15 took: 97.3 % on unseen voices (benchmarks/results/train-recipes-2026-12-08.md).
SCRATCH: dict[str, dict] = {
    "speechcommands": dict(model="tiny", depth=4, mlp_ratio=2, patch_size=(128, 2), fstride=128, tstride=2,
                           target_length=None, epochs=25,
                           batch_size=32, optimizer="adamw", lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05,
                           warmup_steps=60, warmup_every=1, schedule="cosine", loss="ce", label_smoothing=0.1,
                           freqm=12, timem=10, freq_masks=1, time_masks=1, time_shift=5, mixup=0.0, noise=False,
                           augment=WaveAugment()),
    "esc50": dict(model="tiny", depth=6, fstride=16, tstride=16, batch_size=32, optimizer="adamw", lr=1e-3,
                  betas=(0.9, 0.999), weight_decay=0.05, warmup_steps=300, warmup_every=1, schedule="cosine",
                  label_smoothing=0.1, freqm=24, timem=48, freq_masks=2, time_masks=2, augment=WaveAugment()),
    "audioset": dict(model="tiny", depth=6, fstride=16, tstride=16, epochs=15, batch_size=32, optimizer="adamw",
                     lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05, warmup_steps=300, warmup_every=1,
                     schedule="cosine", freqm=24, timem=96, freq_masks=2, time_masks=2, mixup=0.5, wa_start=0,
                     wa_end=0, augment=WaveAugment()),
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
    # A narrow AST with a frame head from scratch on a 2-core CPU within the demo's 3 minutes (README, the demo):
    # 16x8 patches (frequency-local, one token column per 80 ms: the frame rate) at 64 wide, 2 heads, 4 layers,
    # AdamW 2e-3 with cosine decay, CE on the clip and softmax CE on the frames, half the windows cut from two clips.
    # Measured on the demo data (AMD EPYC, 2 vCPUs): 98.2 % after 12 epochs of about 9.4 s (104 frames: the clips'
    # length on the patch grid; 97.7 % after 10 at 112 frames; a 2x MLP saved 7 % an epoch and cost 0.8 points at
    # 13 epochs, not kept). The 128x8 strips at 192 wide that it replaces cost the same per epoch and reached
    # 91.3 % (97.7 % after 30): a strip's one linear embedding of all 128 bins learns "modulated or steady" once per
    # frequency, and tone / AM tone stayed confused;
    # 32x8 at 96 wide 91.9 %; 16x8 at 96 wide 95.3 % (lr 1e-3); 16x8 at 64 wide 96.0 % at lr 1e-3.
    "demo": Recipe(model="tiny", depth=4, embed_dim=64, num_heads=2, patch_size=(16, 8), fstride=16, tstride=8,
                   epochs=12, batch_size=32, optimizer="adamw", lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05,
                   warmup_steps=100, warmup_every=1, schedule="cosine", loss="ce", crop_of_two=0.5),
}

#: Where a checkpoint came from (its provenance's source_format) when it is one of the paper's pretrained bases:
#: an imported AST repository checkpoint or Hugging Face AST model. (An ImageNet DeiT is `imagenet:FILE`.)
PAPER_BASES = ("ast-official", "hf-v4", "hf-v5")

#: The fine-tuning variant (another checkpoint as init, e.g. one trained here on other words): the from-scratch
#: values at this fraction of their lr, a batch of about one eighth of the training clips (at least
#: MIN_BATCH, at most the from-scratch batch: at least 8 steps an epoch) and a warm-up of one epoch.
FINETUNE_LR = 0.5
CLIPS_PER_BATCH, MIN_BATCH = 8, 4
#: Fewer optimizer steps per epoch than this draw a warning (AST's batch 128 on 100 clips is one).
MIN_STEPS_PER_EPOCH = 4


def load_recipe(preset: str = "demo", config_file: str | Path | None = None, overrides: dict | None = None,
                train_clips: int | None = None) -> Recipe:
    """A preset in the variant its `init` calls for (see :func:`variant_for`), then a TOML/JSON file's values,
    then explicit overrides (later wins). `train_clips` (the data's training clips) sizes the fine-tuning
    variant's batch and warm-up; without it they stay the from-scratch values."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    values = _recipe_file(config_file) if config_file else {}
    values.update(overrides or {})
    recipe = PRESETS[preset]
    variant = variant_for(preset, str(values.get("init", recipe.init)))
    if variant == "scratch":
        recipe = recipe.with_overrides({**SCRATCH[preset], "variant": "scratch"})
    elif variant == "pretrained":
        recipe = recipe.with_overrides({"variant": "pretrained"})
    elif variant == "finetune":
        base = recipe.with_overrides(SCRATCH.get(preset, {}))
        recipe = base.with_overrides({**finetune_values(base, train_clips), "variant": "finetune"})
    return recipe.with_overrides({"preset": preset, **values})


def variant_for(preset: str, init: str) -> str:
    """``scratch`` (random init, a preset with a from-scratch variant), ``pretrained`` (AST's published values: the
    init is one of the paper's pretrained bases, by its provenance), ``finetune`` (any other checkpoint), or ""
    (the demo's own values, from scratch or from a paper base)."""
    if init == "random":
        return "scratch" if preset in SCRATCH else ""
    if is_paper_base(init):
        return "pretrained" if preset in SCRATCH else ""
    return "finetune"


def is_paper_base(init: str) -> bool:
    """Whether `init` is ImageNet DeiT (``imagenet:FILE``) or a checkpoint imported from a published AST."""
    if init.startswith("imagenet:"):
        return True
    from astedge.model.checkpoint import load_checkpoint

    return load_checkpoint(init, weights=False).provenance.get("source_format") in PAPER_BASES


def finetune_values(base: Recipe, train_clips: int | None) -> dict:
    """What fine-tuning changes in `base` (the from-scratch values): a lower lr, and (given the data's size) a
    batch and a one-epoch warm-up that fit it."""
    values = {"lr": base.lr * FINETUNE_LR, "augment": base.augment if base.augment.p else WaveAugment()}
    if train_clips:
        batch = min(base.batch_size, max(MIN_BATCH, train_clips // CLIPS_PER_BATCH))
        values.update(batch_size=batch, warmup_steps=math.ceil(train_clips / batch), warmup_every=1)
    return values


def batch_warning(recipe: Recipe, train_clips: int) -> str | None:
    """One line when the batch leaves an epoch fewer than MIN_STEPS_PER_EPOCH optimizer steps (else None)."""
    steps = train_clips // recipe.batch_size if train_clips > recipe.batch_size else 1
    if steps >= MIN_STEPS_PER_EPOCH:
        return None
    return (f"warning: batch {recipe.batch_size} on {train_clips} training clips leaves {steps} optimizer "
            f"step{'s' if steps > 1 else ''} per epoch ({steps * recipe.epochs} in the whole run), too few to learn "
            f"from: try --set batch_size={max(1, train_clips // CLIPS_PER_BATCH)} (about clips / {CLIPS_PER_BATCH})")


def augment_options(on: bool | None, noise_dir=None, rir_dir=None) -> dict:
    """Recipe overrides for `train --augment/--no-augment --noise DIR --rir DIR`: a folder turns augmentation on
    unless it is switched off."""
    values = {f"augment.{k}": str(v) for k, v in (("noise_dir", noise_dir), ("rir_dir", rir_dir)) if v is not None}
    if on is not None or values:
        values["augment"] = True if on is None else on
    return values


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
        what = (f"recipe {recipe.preset}, from-scratch variant: init is random, and AST's published values assume "
                "ImageNet or AudioSet weights (from scratch they learn nothing); pass --init to use them")
    elif recipe.variant == "pretrained":
        what = f"recipe {recipe.preset}, AST's published values (init {recipe.init}, one of the paper's bases)"
    elif recipe.variant == "finetune":
        what = (f"recipe {recipe.preset}, fine-tuning variant: {recipe.init} is not one of the paper's pretrained "
                "bases (ImageNet DeiT, an imported AST), which AST's published values assume; the from-scratch "
                f"values at lr {recipe.lr:g}, batch {recipe.batch_size} and a {recipe.warmup_steps}-step warm-up, "
                "fitted to the data")
    else:
        what = f"recipe {recipe.preset or 'custom'}"
    return f"{what}; {recipe.augment.describe()}"


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
