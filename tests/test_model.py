"""ASTModel checked against AST's published shapes, timm's DeiT sizes, Hugging Face's parameter count
and a from-scratch functional forward; position-embedding resizing against torch.nn.functional."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from transformers import ASTConfig, ASTForAudioClassification

from astedge.errors import UserError
from astedge.model.pos_embed import resize_time_pos_embed
from astedge.model.ast_model import (
    SIZES,
    ASTModel,
    ModelConfig,
    build_model,
    expected_shapes,
    model_config,
    with_target_length,
)


@pytest.mark.parametrize("fstride, tstride, frames, f_dim, t_dim", [
    (10, 10, 1024, 12, 101), (12, 12, 1024, 10, 85), (14, 14, 1024, 9, 73), (16, 16, 1024, 8, 64),
    (10, 10, 512, 12, 50), (10, 10, 128, 12, 12)])
def test_grid_matches_published_table(fstride, tstride, frames, f_dim, t_dim):
    """ast.md §2.3: the grid and the position embedding of AST's released configurations."""
    cfg = ModelConfig(fstride=fstride, tstride=tstride, target_length=frames)
    assert cfg.grid == (f_dim, t_dim)
    shapes = expected_shapes(cfg)
    assert shapes["v.pos_embed"] == (1, f_dim * t_dim + 2, 768)
    assert shapes["v.patch_embed.proj.weight"] == (768, 1, 16, 16)
    conv = torch.nn.Conv2d(1, 1, 16, stride=(fstride, tstride))  # the grid a real convolution yields
    assert conv(torch.zeros(1, 1, 128, frames)).shape[-2:] == (f_dim, t_dim)


def test_parameter_count_equals_hugging_face():
    """Without the unused DeiT heads, AST-base 10/10/1024/527 has HF's 86.594 M parameters."""
    with torch.device("meta"):
        hf = ASTForAudioClassification(ASTConfig(num_labels=527))
    ours = sum(math.prod(shape) for shape in expected_shapes(ModelConfig()).values())
    assert ours == sum(p.numel() for p in hf.parameters())
    assert round(ours / 1e6, 3) == 86.594


@pytest.mark.parametrize("size", sorted(SIZES))
def test_sizes_are_timm_deit(size):
    with torch.device("meta"):
        deit = timm.create_model(SIZES[size]["timm_name"], pretrained=False)
    cfg = model_config(size)
    timm_dims = (deit.embed_dim, len(deit.blocks), deit.blocks[0].attn.num_heads)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == timm_dims
    assert cfg.mlp_ratio * cfg.embed_dim == deit.blocks[0].mlp.fc1.out_features


def reference_forward(state: dict, cfg: ModelConfig, x: torch.Tensor, eps=None, head_eps=None) -> torch.Tensor:
    """AST's forward (ast.md §2.4) written with torch.nn.functional only, from the weights."""
    eps = cfg.norm_eps if eps is None else eps
    head_eps = cfg.head_norm_eps if head_eps is None else head_eps
    s = {k: v.double() for k, v in state.items()}
    image = x.double().unsqueeze(1).transpose(2, 3)  # [B, 1, F, T]
    patches = F.conv2d(image, s["v.patch_embed.proj.weight"], s["v.patch_embed.proj.bias"],
                       stride=(cfg.fstride, cfg.tstride))
    tokens = patches.flatten(2).transpose(1, 2)  # frequency-major: index f * t_dim + t
    batch, dim = x.shape[0], cfg.embed_dim
    h = torch.cat([s["v.cls_token"].expand(batch, -1, -1), s["v.dist_token"].expand(batch, -1, -1), tokens], 1)
    h = h + s["v.pos_embed"]
    heads, head_dim = cfg.num_heads, dim // cfg.num_heads
    for i in range(cfg.depth):
        p = f"v.blocks.{i}."
        a = F.layer_norm(h, (dim,), s[p + "norm1.weight"], s[p + "norm1.bias"], eps)
        q, k, v = F.linear(a, s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"]).split(dim, dim=-1)
        q, k, v = (t.reshape(batch, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, -1, dim)
        h = h + F.linear(attended, s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])
        m = F.layer_norm(h, (dim,), s[p + "norm2.weight"], s[p + "norm2.bias"], eps)
        m = F.gelu(F.linear(m, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"]))
        h = h + F.linear(m, s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"])
    h = F.layer_norm(h, (dim,), s["v.norm.weight"], s["v.norm.bias"], eps)
    pooled = (h[:, 0] + h[:, 1]) / 2
    pooled = F.layer_norm(pooled, (dim,), s["mlp_head.0.weight"], s["mlp_head.0.bias"], head_eps)
    return F.linear(pooled, s["mlp_head.1.weight"], s["mlp_head.1.bias"]).float()


def randomized(cfg: ModelConfig, seed: int) -> ASTModel:
    torch.manual_seed(seed)
    model = ASTModel(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(param))
    return model


# Large eps values make a LayerNorm that used the wrong one visibly wrong.
@pytest.mark.parametrize("cfg", [
    ModelConfig(num_classes=6, embed_dim=32, depth=2, num_heads=2, fstride=10, tstride=12, target_length=64,
                norm_eps=0.05, head_norm_eps=0.5),
    ModelConfig(num_classes=4, embed_dim=24, depth=1, num_heads=3, patch_size=(128, 2), fstride=1, tstride=2,
                target_length=40, mlp_ratio=2.0),
    ModelConfig(num_classes=3, embed_dim=16, depth=1, num_heads=1, patch_size=(32, 32), fstride=32, tstride=32,
                target_length=96, norm_eps=1e-12, head_norm_eps=1e-12),
], ids=["16x16-10/12", "128x2", "32x32"])
def test_forward_matches_functional_reference(cfg):
    model = randomized(cfg, seed=0)
    torch.manual_seed(1)
    x = torch.randn(3, cfg.target_length, cfg.num_mel_bins)
    with torch.no_grad():
        got = model(x)
    expected = reference_forward(model.state_dict(), cfg, x)
    assert got.shape == (3, cfg.num_classes)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    if cfg.norm_eps >= 0.01:  # with large eps the comparison is sensitive to the eps each LayerNorm uses
        swapped = reference_forward(model.state_dict(), cfg, x, eps=cfg.head_norm_eps, head_eps=cfg.norm_eps)
        assert (got - swapped).abs().max() > 1e-3


def test_layernorm_eps_follow_config():
    model = ASTModel(ModelConfig(embed_dim=32, depth=2, num_heads=2, target_length=64, norm_eps=1e-12,
                                 head_norm_eps=3e-5))
    block_eps = {m.eps for name, m in model.named_modules()
                 if isinstance(m, torch.nn.LayerNorm) and name.startswith("v.")}
    assert block_eps == {1e-12} and model.mlp_head[0].eps == 3e-5
    assert (ModelConfig().norm_eps, ModelConfig().head_norm_eps) == (1e-6, 1e-5)  # official AST


def test_config_round_trip_and_validation():
    cfg = model_config("small", patch_size=(128, 2), fstride=1, tstride=2, target_length=512, num_classes=35)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.patch_size == (128, 2)
    with pytest.raises(UserError, match="unknown model config fields: colour"):
        ModelConfig.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(UserError, match="not divisible by num_heads"):
        ModelConfig(embed_dim=100, num_heads=3)
    with pytest.raises(UserError, match="unknown model size"):
        model_config("huge")


def test_wrong_input_shape_is_a_user_error():
    model = ASTModel(ModelConfig(embed_dim=16, depth=1, num_heads=1, target_length=64, num_classes=2))
    with pytest.raises(UserError, match=r"expects input \[batch, 64, 128\] \(time, mel\), got \[1, 128, 64\]"):
        model(torch.zeros(1, 128, 64))


# --- variable length -----------------------------------------------------------------------------


def _grid(pos, f_dim, t_dim):
    return pos[:, 2:].reshape(1, f_dim, t_dim, -1).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def pos():
    torch.manual_seed(3)
    return torch.randn(1, 2 + 12 * 50, 8)  # 10/10 at 512 frames: grid 12 x 50


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("t_dim", [12, 101])
def test_resize_interpolates_time_axis(pos, mode, t_dim):
    out = resize_time_pos_embed(pos, (12, 50), t_dim, mode)
    expected = F.interpolate(_grid(pos, 12, 50), size=(12, t_dim), mode=mode)
    torch.testing.assert_close(_grid(out, 12, t_dim), expected, rtol=0, atol=0)
    torch.testing.assert_close(out[:, :2], pos[:, :2], rtol=0, atol=0)


def test_resize_crop_is_the_original_rule(pos):
    shorter = resize_time_pos_embed(pos, (12, 50), 12, "crop")  # centre columns 25 - 6 .. 25 + 6
    torch.testing.assert_close(_grid(shorter, 12, 12), _grid(pos, 12, 50)[..., 19:31], rtol=0, atol=0)
    longer = resize_time_pos_embed(pos, (12, 50), 101, "crop")
    expected = F.interpolate(_grid(pos, 12, 50), size=(12, 101), mode="bilinear", align_corners=False)
    torch.testing.assert_close(_grid(longer, 12, 101), expected, rtol=0, atol=0)


def test_resize_reinit_and_identity(pos):
    torch.manual_seed(4)
    fresh = resize_time_pos_embed(pos, (12, 50), 200, "reinit")
    assert fresh.shape == (1, 2 + 12 * 200, 8)
    torch.testing.assert_close(fresh[:, :2], pos[:, :2], rtol=0, atol=0)
    assert abs(fresh[:, 2:].std().item() - 0.02) < 0.002
    assert torch.equal(resize_time_pos_embed(pos, (12, 50), 50, "bilinear"), pos)
    with pytest.raises(UserError, match="unknown position-embedding mode 'cubic'"):
        resize_time_pos_embed(pos, (12, 50), 20, "cubic")


def test_model_runs_at_another_length():
    cfg = ModelConfig(embed_dim=16, depth=1, num_heads=2, num_classes=3, target_length=512)
    model = randomized(cfg, seed=5)
    short = with_target_length(model, 128, mode="crop")
    assert short.config.target_length == 128 and short.config.grid == (12, 12)
    assert short(torch.randn(2, 128, 128)).shape == (2, 3)
    x = torch.randn(1, 512, 128)
    with torch.no_grad():
        same = with_target_length(model, 512)(x)
        assert torch.equal(same, model(x))
    expected = resize_time_pos_embed(model.state_dict()["v.pos_embed"], (12, 50), 12, "crop")
    torch.testing.assert_close(short.state_dict()["v.pos_embed"], expected, rtol=0, atol=0)


def test_build_model_checks_weights():
    cfg = ModelConfig(embed_dim=16, depth=1, num_heads=1, num_classes=2, target_length=64)
    original = ASTModel(cfg)
    copy = build_model(cfg, original.state_dict())
    with torch.no_grad():
        copy.v.pos_embed.add_(1.0)  # the built model owns its weights
    assert not torch.equal(copy.v.pos_embed, original.v.pos_embed)
    state = original.state_dict()
    state.pop("v.norm.weight")
    with pytest.raises(UserError, match="missing v.norm.weight"):
        build_model(cfg, state)
