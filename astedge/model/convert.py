"""Checkpoint layouts -> astedge's, each a pure function: ``state_dict -> state_dict`` or ``dict -> config``.

astedge's parameter names are the original AST repository's without DataParallel's ``module.``
and without the unused DeiT ImageNet heads (``v.blocks.0.attn.qkv.weight``, ``mlp_head.1.weight``).

- :func:`from_official`: the AST repository's ``.pth`` files (``module.v.*``, ``module.mlp_head.*``).
- :func:`from_hf`: Hugging Face ``ASTForAudioClassification``, transformers v4 names
  (``encoder.layer.N.attention.attention.query``) and v5 names (``layers.N.attention.q_proj``);
  separate q/k/v are concatenated into timm's fused ``qkv``.
- :func:`from_imagenet`: a timm ImageNet DeiT/ViT made into an audio backbone as AST does it.
- :func:`detect_layout`, :func:`official_config`, :func:`hf_config`, :func:`hf_labels`, :func:`hf_features`:
  what a source is and the configs its tensors and JSON files describe.

Reading files and putting the pieces together is :mod:`astedge.model.importer`'s job; position-embedding
geometry is :mod:`astedge.model.pos_embed`'s.
"""

from __future__ import annotations

import math
import re

import torch

from astedge.errors import UserError, some
from astedge.features.fbank import FbankConfig
from astedge.model.config import NUM_PREFIX_TOKENS, ModelConfig
from astedge.model.pos_embed import adapt_grid, check_mode, fresh_grid, join_pos, split_pos

# ---------------------------------------------------------------------------------------------
# Official AST repository


def from_official(state: dict) -> dict:
    """AST repository state dict (``module.`` optional) -> astedge: drop the unused DeiT heads."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(("v.head.", "v.head_dist.")):
            continue
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Hugging Face ASTForAudioClassification (transformers v4 and v5 names)

_HF_LAYER = r"(?:encoder\.layer|layers)\.(\d+)\."
_HF_RULES = [
    (r"embeddings\.cls_token", "v.cls_token"),
    (r"embeddings\.distillation_token", "v.dist_token"),
    (r"embeddings\.position_embeddings", "v.pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"v.patch_embed.proj.\1"),
    (_HF_LAYER + r"layernorm_before\.(weight|bias)", r"v.blocks.\1.norm1.\2"),
    (_HF_LAYER + r"layernorm_after\.(weight|bias)", r"v.blocks.\1.norm2.\2"),
    (_HF_LAYER + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)", r"v.blocks.\1.attn.proj.\2"),
    (_HF_LAYER + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)", r"v.blocks.\1.mlp.fc1.\2"),
    (_HF_LAYER + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)", r"v.blocks.\1.mlp.fc2.\2"),
    (r"layernorm\.(weight|bias)", r"v.norm.\1"),
    (r"classifier\.layernorm\.(weight|bias)", r"mlp_head.0.\1"),
    (r"classifier\.dense\.(weight|bias)", r"mlp_head.1.\1"),
]
_HF_QKV = re.compile(_HF_LAYER + r"attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(weight|bias)")
_HF_PREFIX = "audio_spectrogram_transformer."


def from_hf(state: dict) -> dict:
    """Hugging Face AST state dict (v4 or v5 names) -> astedge; q, k, v rows are stacked into ``qkv``."""
    out, qkv, unknown = {}, {}, []
    for key, value in state.items():
        name = key.removeprefix(_HF_PREFIX)
        match = _HF_QKV.fullmatch(name)
        if match:
            layer, long_name, short_name, kind = match.groups()
            part = (long_name or short_name)[0]  # q, k or v
            qkv.setdefault((layer, kind), {})[part] = value
            continue
        for pattern, target in _HF_RULES:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, target, name)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise UserError(f"unknown Hugging Face AST weights: {some(unknown)}")
    for (layer, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            lacking = ", ".join(p for p in "qkv" if p not in parts)
            raise UserError(f"layer {layer} attention {kind} lacks its {lacking} part")
        out[f"v.blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def detect_layout(state: dict, source=None) -> str:
    """``official`` (AST repository or astedge), ``hf-v4``, ``hf-v5`` or ``imagenet`` (timm), from key names.

    An unknown layout is a UserError naming `source` (the file the keys came from)."""
    keys = list(state)
    if any(k.startswith((_HF_PREFIX, "classifier.")) for k in keys):
        return "hf-v5" if any(".layers." in k for k in keys) else "hf-v4"
    if any(k.startswith(("module.v.", "v.", "module.mlp_head.", "mlp_head.")) for k in keys):
        return "official"
    if any(k.startswith("blocks.") for k in keys) and "pos_embed" in state:
        return "imagenet"
    if any(k.startswith("embeddings.patch_embeddings.") for k in keys):
        raise UserError("is a Hugging Face ASTModel without a classification head (keys embeddings.*, encoder.*); "
                        "astedge imports ASTForAudioClassification weights, which carry the classifier", source)
    raise UserError(f"not an AST checkpoint: keys such as {some(keys, 5)} match no known layout", source)


# ---------------------------------------------------------------------------------------------
# ImageNet DeiT/ViT (timm) -> audio backbone


def from_imagenet(state: dict, config: ModelConfig, pos_embed: str = "bilinear") -> dict:
    """A timm ImageNet DeiT (distilled) or ViT state -> astedge backbone (``v.*``) for `config`, as AST does.

    The RGB patch kernel is summed over channels (a grey image gives the same embedding), the
    ``sqrt(N) x sqrt(N)`` position grid is cut or stretched by :func:`adapt_grid`, class and
    distillation tokens and positions are kept (a plain ViT's class token stands in for the
    distillation token), blocks and the final norm are copied, and the ImageNet heads dropped.
    The audio head (``mlp_head``) is not included: it starts fresh. `pos_embed` picks the grid
    adaptation of the paper's Table 4: ``bilinear`` (AST; ``crop`` is the same rule), ``nearest``, or
    ``reinit`` (fresh truncated-normal positions, std 0.02; the class/distillation positions are still kept).
    """
    check_mode(pos_embed)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if tuple(config.patch_size) != (16, 16):
        raise UserError(f"ImageNet weights have 16x16 patches; a model with {config.patch_size[0]}x"
                        f"{config.patch_size[1]} patches must start from scratch (no ImageNet init)")
    try:
        kernel, pos, cls = state["patch_embed.proj.weight"], state["pos_embed"], state["cls_token"]
    except KeyError as err:
        raise UserError(f"not a timm ViT/DeiT state dict: no {err.args[0]!r}") from None
    if tuple(kernel.shape[2:]) != (16, 16):
        raise UserError(f"ImageNet patch kernel is {list(kernel.shape[2:])}, expected 16x16")
    if kernel.shape[0] != config.embed_dim:
        raise UserError(f"ImageNet model is {kernel.shape[0]}-d but the config asks for {config.embed_dim}-d; "
                        "pick the matching size")
    out = {"v.patch_embed.proj.weight": kernel.sum(dim=1, keepdim=True),
           "v.patch_embed.proj.bias": state["patch_embed.proj.bias"], "v.cls_token": cls}
    distilled = "dist_token" in state
    out["v.dist_token"] = state["dist_token"] if distilled else cls.clone()
    prefix = 2 if distilled else 1
    side = math.isqrt(pos.shape[1] - prefix)
    if side * side != pos.shape[1] - prefix:
        raise UserError(f"ImageNet position embedding of {pos.shape[1] - prefix} patches is not a square grid")
    prefix_pos, grid = split_pos(pos, (side, side), prefix)
    if not distilled:
        prefix_pos = torch.cat([prefix_pos, prefix_pos], dim=1)
    if pos_embed == "reinit":
        grid = fresh_grid(grid, *config.grid)
    else:
        grid = adapt_grid(grid, *config.grid, mode="bilinear" if pos_embed == "crop" else pos_embed)
    out["v.pos_embed"] = join_pos(prefix_pos, grid)
    done = ("head.", "head_dist.", "patch_embed.", "pos_embed", "cls_token", "dist_token")
    for key, value in state.items():
        if not key.startswith(done):
            out["v." + key] = value  # blocks.* and norm.*; anything else check_state reports as unexpected
    return out


# ---------------------------------------------------------------------------------------------
# Configs from tensors and JSON


_STANDARD_LENGTHS = (1024, 512, 128)  # AudioSet, ESC-50, Speech Commands windows


def _strides_from_name(name: str) -> tuple[int, int] | None:
    """``audioset_10_10_0.4593.pth`` -> (10, 10), as the AST recipes parse file names."""
    match = re.search(r"_(\d{1,2})_(\d{1,2})_", name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _grid_candidates(num_patches, patch, num_mel_bins, fstride, tstride, target_length):
    """(fstride, tstride, target_lengths) triples whose grid has `num_patches` patches."""
    found = []
    for fs in [fstride] if fstride else range(1, patch[0] + 1):
        f_dim = (num_mel_bins - patch[0]) // fs + 1
        if f_dim < 1 or num_patches % f_dim:
            continue
        t_dim = num_patches // f_dim
        ts = tstride or fs  # released checkpoints all use equal strides
        low = (t_dim - 1) * ts + patch[1]
        lengths = range(low, low + ts)
        if target_length is not None:
            lengths = [target_length] if target_length in lengths else []
        if lengths:
            found.append((fs, ts, list(lengths)))
    return found


def official_config(state: dict, *, name: str = "", fstride: int | None = None, tstride: int | None = None,
                    target_length: int | None = None, num_mel_bins: int = 128) -> ModelConfig:
    """The config of an astedge/official state, inferred from tensor shapes (and strides in the file name).

    Width, depth, MLP ratio, patch and head come from the tensors; heads are ``embed_dim // 64`` (all
    DeiT sizes); strides and input length from the position embedding's size: the options win, then
    ``_F_T_`` in the file name, then equal strides whose length range holds a standard window
    (1024, 512, 128). More than one answer, or none, is an error asking for the options.
    """
    try:
        dim = state["v.cls_token"].shape[-1]
        patch = tuple(state["v.patch_embed.proj.weight"].shape[2:])
        num_patches = state["v.pos_embed"].shape[1] - NUM_PREFIX_TOKENS
        num_classes = state["mlp_head.1.weight"].shape[0]
        hidden = state["v.blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise UserError(f"not a complete AST state dict: no {err.args[0]!r}") from None
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("v.blocks."))
    hint = _strides_from_name(name) if not (fstride and tstride) else None
    tries = [(fstride or hint[0], tstride or hint[1]), (fstride, tstride)] if hint else [(fstride, tstride)]
    for fs, ts in tries:
        found = _grid_candidates(num_patches, patch, num_mel_bins, fs, ts, target_length)
        if found:
            break
    if not found:
        raise UserError(f"a position embedding of {num_patches} patches fits no stride for {num_mel_bins} mel bins "
                        f"and {patch[0]}x{patch[1]} patches with the given options; pass --fstride, --tstride and "
                        "--target-length")
    if target_length is None:
        standard = [(fs, ts, [n]) for fs, ts, lengths in found for n in lengths if n in _STANDARD_LENGTHS]
        if len(found) == 1 and len(standard) != 1:
            fs, ts, lengths = found[0]
            raise UserError(f"input length is ambiguous for strides {fs}/{ts}: pass --target-length "
                            f"({lengths[0]}..{lengths[-1]} all give the same {num_patches}-patch grid)")
        found = standard or found
    if len(found) != 1:
        options = "; ".join(f"{fs}/{ts} at {lengths[0]}" + (f"..{lengths[-1]}" if len(lengths) > 1 else "")
                            for fs, ts, lengths in found)
        raise UserError(f"strides are ambiguous ({options}); pass --fstride/--tstride/--target-length")
    fs, ts, (length, *_) = found[0]
    return ModelConfig(num_classes=num_classes, embed_dim=dim, depth=depth, num_heads=max(1, dim // 64),
                       mlp_ratio=hidden / dim, patch_size=patch, fstride=fs, tstride=ts,
                       num_mel_bins=num_mel_bins, target_length=length, norm_eps=1e-6, head_norm_eps=1e-5)


def hf_config(config: dict) -> ModelConfig:
    """ModelConfig from a Hugging Face ``config.json`` (ASTConfig defaults for absent fields).

    HF uses ``layer_norm_eps`` (1e-12 by default) in every LayerNorm, the head's included.
    """
    if config.get("model_type", "audio-spectrogram-transformer") != "audio-spectrogram-transformer":
        raise UserError(f"config.json is for a {config.get('model_type')!r} model, not an AST")
    if config.get("hidden_act", "gelu") != "gelu":
        raise UserError(f"hidden_act {config['hidden_act']!r} is not supported (AST uses exact 'gelu')")
    hidden = config.get("hidden_size", 768)
    patch = config.get("patch_size", 16)
    eps = config.get("layer_norm_eps", 1e-12)
    labels = config.get("id2label") or {}
    return ModelConfig(
        num_classes=len(labels) or config.get("num_labels", 2), embed_dim=hidden,
        depth=config.get("num_hidden_layers", 12), num_heads=config.get("num_attention_heads", 12),
        mlp_ratio=config.get("intermediate_size", 3072) / hidden,
        patch_size=tuple(patch) if isinstance(patch, (list, tuple)) else (patch, patch),
        fstride=config.get("frequency_stride", 10), tstride=config.get("time_stride", 10),
        num_mel_bins=config.get("num_mel_bins", 128), target_length=config.get("max_length", 1024),
        qkv_bias=config.get("qkv_bias", True), norm_eps=eps, head_norm_eps=eps)


def hf_labels(config: dict) -> list[str] | None:
    """Names from ``id2label`` in index order; None when they are transformers' ``LABEL_N`` placeholders."""
    id2label = config.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    if not names or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return None
    return names


def hf_features(pre: dict, config: ModelConfig, path) -> FbankConfig:
    """FbankConfig from an ``ASTFeatureExtractor`` preprocessor config; its window must be the model's."""
    features = FbankConfig(sample_rate=pre.get("sampling_rate", 16000),
                           num_mel_bins=pre.get("num_mel_bins", config.num_mel_bins),
                           target_length=pre.get("max_length", config.target_length),
                           mean=pre.get("mean", -4.2677393), std=pre.get("std", 4.5689974))
    if (features.target_length, features.num_mel_bins) != (config.target_length, config.num_mel_bins):
        raise UserError(f"feature extractor gives {features.target_length} x {features.num_mel_bins} inputs "
                        f"but the model takes {config.target_length} x {config.num_mel_bins}", path)
    return features
