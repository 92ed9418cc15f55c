"""Checkpoint conversions into astedge's layout, each a pure function ``state_dict -> state_dict``.

astedge's parameter names are the original AST repository's without DataParallel's ``module.``
and without the unused DeiT ImageNet heads (``v.blocks.0.attn.qkv.weight``, ``mlp_head.1.weight``).

- :func:`from_official`: the AST repository's ``.pth`` files (``module.v.*``, ``module.mlp_head.*``).
- :func:`from_hf`: Hugging Face ``ASTForAudioClassification``, transformers v4 names
  (``encoder.layer.N.attention.attention.query``) and v5 names (``layers.N.attention.q_proj``);
  separate q/k/v are concatenated into timm's fused ``qkv``.
- :func:`from_imagenet`: a timm ImageNet DeiT/ViT made into an audio backbone as AST does it.
- :func:`resize_target_length`: run a model at another input length (position embedding resampling).

Below them, the readers that turn a file or folder into ``(state, config, ...)``: they load with
``torch.load(weights_only=True)`` or safetensors and never unpickle arbitrary objects.
"""

from __future__ import annotations


import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from astedge.errors import UserError
from astedge.files import sha256_file
from astedge.features import FbankConfig
from astedge.model_config import NUM_PREFIX_TOKENS, POS_EMBED_MODES, ModelConfig

# ---------------------------------------------------------------------------------------------
# Checking a state dict against a config


def _some(names, limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_state(state: dict, config: ModelConfig, optional: tuple[str, ...] = ()) -> None:
    """Raise :class:`UserError` listing missing, unexpected and wrongly shaped weights for `config`.

    Keys starting with a prefix in `optional` may be missing (e.g. a new head).
    """
    from astedge.model import expected_shapes

    expected = expected_shapes(config)
    missing = [k for k in expected if k not in state and not k.startswith(optional)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (model: {list(expected[k])})"
             for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {_some(wrong, 4)}")
    if problems:
        raise UserError("weights do not fit the model: " + "; ".join(problems))


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
        raise UserError(f"unknown Hugging Face AST weights: {_some(unknown)}")
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
    raise UserError(f"not an AST checkpoint: keys such as {_some(keys, 5)} match no known layout", source)


# ---------------------------------------------------------------------------------------------
# Position embeddings: AST's cut-or-interpolate, and resampling the time axis


def _centre(size: int, keep: int) -> slice:
    start = size // 2 - keep // 2
    return slice(start, start + keep)


def adapt_grid(grid: torch.Tensor, f_dim: int, t_dim: int, mode: str = "bilinear") -> torch.Tensor:
    """AST's resize of a ``[1, D, H, W]`` position grid to ``(f_dim, t_dim)``, time axis first.

    Each axis keeps its centre when the target is no larger, else is stretched (``mode``: AST's
    ``bilinear``, ``align_corners=False``, or ``nearest`` for the paper's Table 4 ablation): time to
    ``(H, t_dim)``, then frequency to ``(f_dim, t_dim)``.
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


def _split_pos(pos_embed: torch.Tensor, grid: tuple[int, int], prefix: int = NUM_PREFIX_TOKENS):
    """``[1, prefix + f*t, D]`` -> (prefix positions, ``[1, D, f, t]`` grid)."""
    dim = pos_embed.shape[-1]
    return pos_embed[:, :prefix], pos_embed[:, prefix:].transpose(1, 2).reshape(1, dim, *grid)


def _join_pos(prefix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)


RESIZE_MODES = ("bilinear", "nearest", "crop", "reinit")


def resize_time_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], t_dim: int,
                          mode: str = "bilinear") -> torch.Tensor:
    """Position embedding ``[1, 2 + f*t, D]`` for the same frequency rows and `t_dim` time columns.

    Modes: ``bilinear`` (default) and ``nearest`` resample the time axis of the ``f x t`` grid
    (``F.interpolate``, ``align_corners=False``); ``crop`` is the original AST rule (keep the
    centre columns when shorter, bilinear when longer); ``reinit`` draws fresh positions
    (truncated normal, std 0.02, as at initialization). The class/distillation positions are kept.
    A model run at a length it was not trained at may lose accuracy; fine-tune to recover it.
    """
    if mode not in RESIZE_MODES:
        raise UserError(f"unknown position-embedding resize mode {mode!r}; known: {', '.join(RESIZE_MODES)}")
    f_dim = grid[0]
    prefix, patches = _split_pos(pos_embed, grid)
    if mode == "reinit":
        patches = torch.nn.init.trunc_normal_(patches.new_empty(1, patches.shape[1], f_dim, t_dim), std=0.02)
    elif mode == "crop":
        patches = adapt_grid(patches, f_dim, t_dim)
    else:
        patches = F.interpolate(patches, size=(f_dim, t_dim), mode=mode)
    return _join_pos(prefix, patches)


def resize_target_length(state: dict, config: ModelConfig, target_length: int,
                         mode: str = "bilinear") -> tuple[dict, ModelConfig]:
    """An astedge state and config for `target_length` input frames (see :func:`resize_time_pos_embed`)."""
    new_config = replace(config, target_length=target_length)
    out = dict(state)
    out["v.pos_embed"] = resize_time_pos_embed(torch.as_tensor(state["v.pos_embed"]), config.grid,
                                               new_config.grid[1], mode)
    return out, new_config


# ---------------------------------------------------------------------------------------------
# ImageNet DeiT/ViT (timm) -> audio backbone


def from_imagenet(state: dict, config: ModelConfig, pos_embed: str = "bilinear") -> dict:
    """A timm ImageNet DeiT (distilled) or ViT state -> astedge backbone (``v.*``) for `config`, as AST does.

    The RGB patch kernel is summed over channels (a grey image gives the same embedding), the
    ``sqrt(N) x sqrt(N)`` position grid is cut or stretched by :func:`adapt_grid`, class and
    distillation tokens and positions are kept (a plain ViT's class token stands in for the
    distillation token), blocks and the final norm are copied, and the ImageNet heads dropped.
    The audio head (``mlp_head``) is not included: it starts fresh. `pos_embed` picks the grid
    adaptation of the paper's Table 4: ``bilinear`` (AST), ``nearest``, or ``reinit`` (fresh
    truncated-normal positions, std 0.02; the class/distillation positions are still kept).
    """
    if pos_embed not in POS_EMBED_MODES:
        raise UserError(f"unknown position-embedding adaptation {pos_embed!r}; known: {', '.join(POS_EMBED_MODES)}")
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
    prefix_pos, grid = _split_pos(pos, (side, side), prefix)
    if not distilled:
        prefix_pos = torch.cat([prefix_pos, prefix_pos], dim=1)
    if pos_embed == "reinit":
        grid = torch.nn.init.trunc_normal_(grid.new_empty(1, grid.shape[1], *config.grid), std=0.02)
    else:
        grid = adapt_grid(grid, *config.grid, mode=pos_embed)
    out["v.pos_embed"] = _join_pos(prefix_pos, grid)
    done = ("head.", "head_dist.", "patch_embed.", "pos_embed", "cls_token", "dist_token")
    for key, value in state.items():
        if not key.startswith(done):
            out["v." + key] = value  # blocks.* and norm.*; anything else check_state reports as unexpected
    return out


def imagenet_init(config: ModelConfig, state: dict, pos_embed: str = "bilinear"):
    """A fresh :class:`astedge.model.ASTModel` whose backbone starts from an ImageNet state (new head)."""
    from astedge.model import ASTModel

    backbone = from_imagenet(state, config, pos_embed)
    check_state(backbone, config, optional=("mlp_head.",))
    model = ASTModel(config)
    model.load_state_dict(backbone, strict=False)
    return model


def imagenet_state_from_timm(name: str, file: str | Path) -> dict:
    """An ImageNet state through timm's own loader from a local file (``pretrained_cfg_overlay``); no download."""
    import timm

    file = Path(file)
    if not file.is_file():
        raise UserError("ImageNet weights file does not exist", file)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)))
    return model.state_dict()


# ---------------------------------------------------------------------------------------------
# Reading sources


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch file loaded with ``weights_only=True``.

    A checkpoint wrapping its weights under ``model`` or ``state_dict`` (DeiT, Lightning) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("does not exist" if not path.exists() else "is not a file", path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as err:
            raise UserError(f"is not a readable safetensors file ({err})", path) from None
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # torch's zip format or a legacy pickle
        raise UserError("is neither a torch checkpoint (.pth/.bin) nor a .safetensors file", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors come in many types; all mean "not a safe weights file"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot be read as a weights-only torch file ({first})", path) from None
    for _ in range(2):
        if isinstance(state, dict):
            inner = next((state[k] for k in ("model", "state_dict") if isinstance(state.get(k), dict)), None)
            if inner is not None:
                state = inner
    if not isinstance(state, dict) or not state:
        raise UserError("holds no state dict", path)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        others = [k for k in state if k not in tensors]
        raise UserError(f"state dict holds non-tensor entries: {_some(others)}", path)
    return tensors


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


_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _read_hf_state(folder: Path) -> tuple[dict, Path]:
    for name in _HF_WEIGHTS:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return read_state_dict(path), path
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"is not a readable shard index ({err})", path) from None
        state = {}
        for shard in shards:
            state.update(read_state_dict(folder / shard))
        return state, path
    raise UserError(f"holds no weights (looked for {', '.join(_HF_WEIGHTS)})", folder)


@dataclass(frozen=True)
class Imported:
    """A converted checkpoint, ready for :func:`astedge.checkpoint.save_checkpoint`."""

    state: dict
    model_config: ModelConfig
    feature_config: FbankConfig | None  # None: derive from the model config
    labels: list[str] | None  # None: the default names for the head
    task: str
    provenance: dict = field(default_factory=dict)


def import_source(source: str | Path, *, labels: list[str] | None = None, fstride: int | None = None,
                  tstride: int | None = None, target_length: int | None = None, dataset: str | None = None,
                  task: str | None = None) -> Imported:
    """Read a published AST checkpoint: an AST repository ``.pth``, a Hugging Face model folder, or an
    astedge checkpoint (re-imported with its own description).

    Strides and length come from the source (HF ``config.json``; the official tensors and file
    name); the options disambiguate or, for HF, must agree. Labels: `labels`, else HF's
    ``id2label``, else AudioSet's for 527 outputs, else ``class_N``. Normalization statistics:
    `dataset`, else HF's ``preprocessor_config.json``, else the recipe matching the input length.
    """
    from astedge.checkpoint import feature_config_for
    from astedge.labels import default_labels

    source = Path(source)
    if not source.exists():
        raise UserError("does not exist", source)
    if source.is_dir():
        got = _import_hf_folder(source, fstride=fstride, tstride=tstride, target_length=target_length)
    elif _is_astedge_checkpoint(source):
        got = _import_astedge(source)
    else:
        got = _import_official(source, fstride=fstride, tstride=tstride, target_length=target_length)
    config = got.model_config
    try:
        check_state(got.state, config)
    except UserError as err:
        raise UserError(str(err), source) from None
    names = list(labels or got.labels or default_labels(config.num_classes))
    if len(names) != config.num_classes:
        raise UserError(f"{len(names)} labels given for a head of {config.num_classes} outputs", source)
    features = got.feature_config if dataset is None and got.feature_config else feature_config_for(config, dataset)
    return replace(got, feature_config=features, labels=names, task=task or got.task)


def _import_hf_folder(folder: Path, **options) -> Imported:
    config_path = folder / "config.json"
    try:
        hf = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("is a folder without config.json (expected a Hugging Face AST model)", folder) from None
    except (OSError, ValueError) as err:
        raise UserError(f"is not readable JSON ({err})", config_path) from None
    raw, weights_path = _read_hf_state(folder)
    layout = detect_layout(raw, weights_path)
    if not layout.startswith("hf"):
        raise UserError(f"weights are in the {layout} layout, not Hugging Face's", weights_path)
    config = hf_config(hf)
    for name, value in options.items():
        if value is not None and value != getattr(config, name):
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {value} disagrees with config.json ({getattr(config, name)})", folder)
    features = None
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        try:
            features = _hf_features(json.loads(pre.read_text(encoding="utf-8")), config, pre)
        except (OSError, ValueError) as err:
            raise UserError(f"is not readable JSON ({err})", pre) from None
    single = hf.get("problem_type") == "single_label_classification"
    return Imported(state=from_hf(raw), model_config=config, feature_config=features, labels=hf_labels(hf),
                    task="multiclass" if single else "multilabel",
                    provenance={"source": folder.name, "source_format": layout,
                                "source_sha256": sha256_file(weights_path)})


def _import_astedge(path: Path) -> Imported:
    from astedge.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    return Imported(state={k: torch.from_numpy(v) for k, v in ckpt.state_dict.items()},
                    model_config=ckpt.model_config, feature_config=ckpt.feature_config, labels=list(ckpt.labels),
                    task=ckpt.task, provenance={**ckpt.provenance, "source": path.name, "source_format": "astedge"})


def _import_official(path: Path, **options) -> Imported:
    raw = read_state_dict(path)
    layout = detect_layout(raw, path)
    if layout == "imagenet":
        raise UserError("is an ImageNet backbone without an audio head; train from it instead of importing", path)
    if layout.startswith("hf"):
        raise UserError("holds Hugging Face weights; import the folder with its config.json instead", path)
    state = from_official(raw)
    try:
        config = official_config(state, name=path.name, **options)
    except UserError as err:
        raise UserError(str(err), path) from None
    return Imported(state=state, model_config=config, feature_config=None, labels=None, task="multilabel",
                    provenance={"source": path.name, "source_format": "ast-official", "source_sha256": sha256_file(path)})


def _is_astedge_checkpoint(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return "astedge_format" in (handle.metadata() or {})
    except SafetensorError:
        return False


def _hf_features(pre: dict, config: ModelConfig, path: Path) -> FbankConfig:
    """FbankConfig from an ``ASTFeatureExtractor`` preprocessor config; its window must be the model's."""
    features = FbankConfig(sample_rate=pre.get("sampling_rate", 16000),
                           num_mel_bins=pre.get("num_mel_bins", config.num_mel_bins),
                           target_length=pre.get("max_length", config.target_length),
                           mean=pre.get("mean", -4.2677393), std=pre.get("std", 4.5689974))
    if (features.target_length, features.num_mel_bins) != (config.target_length, config.num_mel_bins):
        raise UserError(f"feature extractor gives {features.target_length} x {features.num_mel_bins} inputs "
                        f"but the model takes {config.target_length} x {config.num_mel_bins}", path)
    return features
