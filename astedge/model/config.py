"""The shape of an AST network as data: :class:`ModelConfig` and the named sizes.

Kept apart from :mod:`astedge.model.ast_model` so that checkpoints' configs can be read where torch and
timm are not installed (the Jetson runtime).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from astedge.errors import UserError, check_fields

#: Named sizes: DeiT's tiny/small/base widths (head dim 64) and the timm ImageNet backbone each
#: starts from. ``base`` with the 384-pixel DeiT weights is the paper's model.
SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3, timm_name="deit_tiny_distilled_patch16_224"),
    "small": dict(embed_dim=384, depth=12, num_heads=6, timm_name="deit_small_distilled_patch16_224"),
    "base": dict(embed_dim=768, depth=12, num_heads=12, timm_name="deit_base_distilled_patch16_384"),
}

#: Tokens before the patches: DeiT's class token and distillation token.
NUM_PREFIX_TOKENS = 2

#: How a position grid is adapted to another grid or input length (:mod:`astedge.model.pos_embed`; the paper's
#: Table 4 plus AST's centre-crop rule).
POS_EMBED_MODES = ("bilinear", "nearest", "crop", "reinit")

@dataclass(frozen=True)
class ModelConfig:
    """Everything that determines the network's shape and arithmetic. Defaults: AST-base, AudioSet 10/10."""

    num_classes: int = 527
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: tuple[int, int] = (16, 16)  # (frequency, time)
    fstride: int = 10
    tstride: int = 10
    num_mel_bins: int = 128
    target_length: int = 1024
    qkv_bias: bool = True
    norm_eps: float = 1e-6  # blocks and final norm (timm/official); HF uses layer_norm_eps
    head_norm_eps: float = 1e-5  # head LayerNorm (PyTorch default in the official code)
    frame_head: bool = False  # per-column (time) logits beside the clip logits: events at the token grid's time step

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        problems = []
        if len(self.patch_size) != 2 or min(self.patch_size) < 1:
            problems.append(f"patch_size {self.patch_size} must be two positive sizes (frequency, time)")
        elif self.patch_size[0] > self.num_mel_bins or self.patch_size[1] > self.target_length:
            problems.append(f"patch {self.patch_size} does not fit a {self.num_mel_bins} x {self.target_length} input")
        if min(self.fstride, self.tstride) < 1:
            problems.append(f"strides must be >= 1, got {self.fstride}/{self.tstride}")
        if self.num_classes < 1 or self.depth < 1 or self.num_heads < 1:
            problems.append("num_classes, depth and num_heads must be >= 1")
        elif self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if problems:
            raise UserError("invalid model config: " + "; ".join(problems))

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (f_dim, t_dim), as AST's conv yields it: ``(size - patch) // stride + 1``."""
        return ((self.num_mel_bins - self.patch_size[0]) // self.fstride + 1,
                (self.target_length - self.patch_size[1]) // self.tstride + 1)

    @property
    def output_width(self) -> int:
        """Values per input row of the exported model's one output: the clip logits, then (with a frame head) every
        time column's logits, column by column."""
        return self.num_classes * (1 + (self.grid[1] if self.frame_head else 0))

    @property
    def num_patches(self) -> int:
        f_dim, t_dim = self.grid
        return f_dim * t_dim

    def to_dict(self) -> dict:
        data = asdict(self)
        data["patch_size"] = list(self.patch_size)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**check_fields(cls, data, "model config"))

def model_config(size: str = "base", **overrides) -> ModelConfig:
    """The config of a named size (see :data:`SIZES`) with any field overridden."""
    if size not in SIZES:
        raise UserError(f"unknown model size {size!r}; known: {', '.join(SIZES)}")
    dims = {k: v for k, v in SIZES[size].items() if k != "timm_name"}
    return ModelConfig(**{**dims, **overrides})


def size_name(config: ModelConfig) -> str | None:
    """The named size whose width, depth and heads `config` has (None for a custom shape)."""
    for name, dims in SIZES.items():
        if (config.embed_dim, config.depth, config.num_heads) == (dims["embed_dim"], dims["depth"], dims["num_heads"]):
            return name
    return None
