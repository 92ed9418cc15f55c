"""The Audio Spectrogram Transformer on timm's DeiT (distilled) VisionTransformer.

The network is AST's: a 1-channel strided patch embedding over the ``[F, T]`` log-mel image
(frequency is the image height), the DeiT class and distillation tokens, timm's pre-LN blocks,
a final LayerNorm, the mean of the two token outputs, and a LayerNorm + Linear head giving raw
logits. Parameter names mirror the original repository (``v.blocks.0.attn.qkv.weight``,
``mlp_head.1.weight``) minus DataParallel's ``module.`` and the unused DeiT heads, so checkpoint
conversion stays a renaming.

Everything that shapes the network lives in :class:`ModelConfig`, which checkpoints store; the
LayerNorm eps values are part of it because they follow the weights' source (official AST: 1e-6
in the backbone, 1e-5 in the head; Hugging Face: ``layer_norm_eps``, 1e-12, everywhere).
"""

from __future__ import annotations

import functools

import torch
from timm.layers import PatchEmbed
from timm.models.deit import VisionTransformerDistilled
from torch import nn

from astedge.model.convert import from_imagenet
from astedge.errors import UserError, some
from astedge.model.config import NUM_PREFIX_TOKENS, SIZES, ModelConfig, model_config
from astedge.model.pos_embed import resize_target_length


class StridedPatchEmbed(PatchEmbed):
    """timm's PatchEmbed with AST's overlapping stride: ``Conv2d(1, D, patch, stride=(fstride, tstride))``.

    The grid is computed analytically, so timm sizes the position embedding to match.
    """

    def __init__(self, *args, stride: tuple[int, int], **kwargs):
        super().__init__(*args, **kwargs)
        conv = self.proj
        self.proj = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=self.patch_size, stride=stride,
                              bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        self.grid_size = tuple((s - p) // st + 1 for s, p, st in zip(self.img_size, self.patch_size, stride, strict=True))
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In training, patches that do not overlap (stride = patch: strips, 16/16) are one matrix product: the
        same numbers as the convolution, whose backward pass on the CPU took a quarter of a demo training step.
        Inference and export keep the Conv (the ONNX graph and INT8 placement expect it)."""
        if not (self.training and torch.is_grad_enabled()) or tuple(self.proj.stride) != tuple(self.patch_size) \
                or self.flatten is not True:
            return super().forward(x)
        (rows, cols), (height, width) = self.grid_size, self.patch_size
        batch, channels = x.shape[:2]
        patches = x[:, :, :rows * height, :cols * width].reshape(batch, channels, rows, height, cols, width)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, rows * cols, channels * height * width)
        return self.norm(nn.functional.linear(patches, self.proj.weight.flatten(1), self.proj.bias))


class ASTModel(nn.Module):
    """AST: ``[B, T, F]`` normalized log-mel (time-major, like the features) -> ``[B, num_classes]`` logits.

    `drop_path` (stochastic depth, timm's ``drop_path_rate``) only acts in training and is not part of the
    config: it changes no weight and no inference.
    """

    def __init__(self, config: ModelConfig | None = None, drop_path: float = 0.0):
        super().__init__()
        self.config = config = config or ModelConfig()
        norm = functools.partial(nn.LayerNorm, eps=config.norm_eps)
        self.v = VisionTransformerDistilled(
            img_size=(config.num_mel_bins, config.target_length),
            patch_size=config.patch_size,
            in_chans=1,
            num_classes=0,  # no DeiT heads: AST pools the two tokens into its own head
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            norm_layer=norm,
            act_layer=nn.GELU,  # exact erf GELU, as AST and HF "gelu"
            embed_layer=functools.partial(StridedPatchEmbed, stride=(config.fstride, config.tstride)),
            drop_path_rate=drop_path,
        )
        assert self.v.pos_embed.shape[1] == config.num_patches + NUM_PREFIX_TOKENS
        self.mlp_head = nn.Sequential(nn.LayerNorm(config.embed_dim, eps=config.head_norm_eps),
                                      nn.Linear(config.embed_dim, config.num_classes))
        if config.frame_head:
            self.frame_head = nn.Sequential(nn.LayerNorm(config.embed_dim, eps=config.head_norm_eps),
                                            nn.Linear(config.embed_dim, config.num_classes))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Every token's output ``[B, 2 + F' * T', D]``: class, distillation, then the patch grid row by row
        (frequency rows of time columns)."""
        if tuple(x.shape[1:]) != (self.config.target_length, self.config.num_mel_bins):
            raise UserError(f"model expects input [batch, {self.config.target_length}, {self.config.num_mel_bins}] "
                            f"(time, mel), got {list(x.shape)}")
        x = x.unsqueeze(1).transpose(2, 3)  # [B, 1, F, T]: frequency is the image height
        return self.v.forward_features(x)

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The class and distillation token outputs, ``[B, D]`` each."""
        x = self.encode(x)
        return x[:, 0], x[:, 1]

    def frame_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T', classes]`` per time column: the column's patch tokens averaged over frequency, through the
        frame head (HTS-AT's token-semantic idea with a per-column linear map)."""
        f_dim, t_dim = self.config.grid
        grid = tokens[:, NUM_PREFIX_TOKENS:].reshape(tokens.shape[0], f_dim, t_dim, -1)
        return self.frame_head(grid.mean(dim=1))

    def forward_frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip logits ``[B, classes]``, frame logits ``[B, T', classes]``) of a model with a frame head."""
        if not self.config.frame_head:
            raise UserError("this model has no frame head (train or fine-tune it with one: --set frame_head=true)")
        tokens = self.encode(x)
        return self.mlp_head((tokens[:, 0] + tokens[:, 1]) / 2), self.frame_logits(tokens)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding ``[B, D]``: the mean of the class and distillation token outputs."""
        cls, dist = self.forward_tokens(x)
        return (cls + dist) / 2

    def forward_flat(self, x: torch.Tensor) -> torch.Tensor:
        """The exported model's one output ``[B, output_width]``: the clip logits, then (with a frame head) the frame
        logits column by column (:attr:`ModelConfig.output_width`; :func:`astedge.runtime.frames.split_output`)."""
        if not self.config.frame_head:
            return self(x)
        clip, frames = self.forward_frames(x)
        return torch.cat([clip, frames.flatten(1)], dim=1)

    def forward(self, x: torch.Tensor, distilled: bool = False, frames: bool = False):
        """Logits ``[B, classes]`` of the mean of the two tokens (AST's inference). ``distilled=True`` (training
        with a teacher, as DeiT) gives the logits of each token through the head: (class token, distillation token).
        ``frames=True`` gives (clip logits, frame logits) as :meth:`forward_frames` (through ``forward``, so that a
        DistributedDataParallel wrapper syncs its gradients)."""
        if frames and distilled:  # a teacher and a frame head: (class token, distillation token, frames)
            tokens = self.encode(x)
            return self.mlp_head(tokens[:, 0]), self.mlp_head(tokens[:, 1]), self.frame_logits(tokens)
        if frames:
            return self.forward_frames(x)
        if distilled:
            cls, dist = self.forward_tokens(x)
            return self.mlp_head(cls), self.mlp_head(dist)
        return self.mlp_head(self.forward_features(x))


class FlatOutput(nn.Module):
    """What ONNX export traces: the model's one output row (:meth:`ASTModel.forward_flat`), so every runtime (ONNX
    Runtime, TensorRT, Triton) carries clip and frame logits in one tensor."""

    def __init__(self, net: ASTModel):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_flat(x)


def build_model(config: ModelConfig, state_dict: dict | None = None) -> ASTModel:
    """An :class:`ASTModel` in eval mode (float32), loaded strictly from `state_dict` when given.

    With weights, the model is built on the meta device and takes them over, skipping a random init.
    """
    if state_dict is None:
        return ASTModel(config).eval()
    check_state(state_dict, config)
    with torch.device("meta"):
        model = ASTModel(config)
    weights = {k: torch.as_tensor(v).to(torch.float32, copy=True) for k, v in state_dict.items()}  # never shared
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the model `config` describes, without allocating it (meta device)."""
    with torch.device("meta"):
        model = ASTModel(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state(state: dict, config: ModelConfig, optional: tuple[str, ...] = ()) -> None:
    """Raise :class:`UserError` listing missing, unexpected and wrongly shaped weights for `config`.

    Keys starting with a prefix in `optional` may be missing (e.g. a new head).
    """
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in state and not k.startswith(optional)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (model: {list(expected[k])})"
             for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing {some(missing)}")
    if unexpected:
        problems.append(f"unexpected {some(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {some(wrong, 4)}")
    if problems:
        raise UserError("weights do not fit the model: " + "; ".join(problems))


def with_target_length(model: ASTModel, target_length: int, mode: str = "bilinear") -> ASTModel:
    """A copy of `model` that takes `target_length` frames; see :func:`astedge.model.pos_embed.resize_target_length`."""
    state, config = resize_target_length(model.state_dict(), model.config, target_length, mode)
    return build_model(config, state).train(model.training)


def imagenet_init(config: ModelConfig, state: dict, pos_embed: str = "bilinear", drop_path: float = 0.0):
    """A fresh :class:`ASTModel` whose backbone starts from an ImageNet state (new heads; :func:`from_imagenet`)."""
    backbone = from_imagenet(state, config, pos_embed)
    check_state(backbone, config, optional=("mlp_head.", "frame_head."))
    model = ASTModel(config, drop_path=drop_path)
    model.load_state_dict(backbone, strict=False)
    return model


__all__ = ["SIZES", "ModelConfig", "model_config", "ASTModel", "build_model", "check_state", "expected_shapes",
           "with_target_length", "imagenet_init"]
