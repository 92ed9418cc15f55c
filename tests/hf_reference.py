"""Independent references for the model tests: Hugging Face's AST with random weights, and the
official AST repository's key layout written out from the published mapping table (ast.md §3.2).

Nothing here uses astedge's conversion code, so a test comparing the two can fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from transformers import ASTConfig, ASTForAudioClassification

HF_PREFIX = "audio_spectrogram_transformer."


def random_hf_model(seed: int = 0, scale: float = 0.1, **config) -> ASTForAudioClassification:
    """An eval-mode HF AST (eager attention) whose every parameter is random, LayerNorms and tokens included."""
    torch.manual_seed(seed)
    model = ASTForAudioClassification._from_config(ASTConfig(**config), attn_implementation="eager").eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(scale * torch.randn_like(param))
    return model


def hf_logits(model: ASTForAudioClassification, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).logits


def v4_state(model: ASTForAudioClassification) -> dict:
    """The model's weights under the transformers v4 (Hub) names: save_pretrained's layout in 5.x."""
    rules = [(r"\.layers\.(\d+)\.attention\.q_proj\.", r".encoder.layer.\1.attention.attention.query."),
             (r"\.layers\.(\d+)\.attention\.k_proj\.", r".encoder.layer.\1.attention.attention.key."),
             (r"\.layers\.(\d+)\.attention\.v_proj\.", r".encoder.layer.\1.attention.attention.value."),
             (r"\.layers\.(\d+)\.attention\.o_proj\.", r".encoder.layer.\1.attention.output.dense."),
             (r"\.layers\.(\d+)\.mlp\.fc1\.", r".encoder.layer.\1.intermediate.dense."),
             (r"\.layers\.(\d+)\.mlp\.fc2\.", r".encoder.layer.\1.output.dense."),
             (r"\.layers\.(\d+)\.", r".encoder.layer.\1.")]
    out = {}
    for key, value in model.state_dict().items():
        for pattern, target in rules:
            if re.search(pattern, key):
                key = re.sub(pattern, target, key)
                break
        out[key] = value.clone()
    return out


# Official name -> HF v4 name, the published table (ast.md §3.2), inverted by the function below.
_OFFICIAL_FROM_V4 = [
    ("audio_spectrogram_transformer.embeddings.cls_token", "module.v.cls_token"),
    ("audio_spectrogram_transformer.embeddings.distillation_token", "module.v.dist_token"),
    ("audio_spectrogram_transformer.embeddings.position_embeddings", "module.v.pos_embed"),
    ("audio_spectrogram_transformer.embeddings.patch_embeddings.projection.", "module.v.patch_embed.proj."),
    ("audio_spectrogram_transformer.layernorm.", "module.v.norm."),
    ("classifier.layernorm.", "module.mlp_head.0."),
    ("classifier.dense.", "module.mlp_head.1."),
]
_BLOCK_FROM_V4 = [
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."), ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
]


def official_state(model: ASTForAudioClassification, imagenet_classes: int = 1000) -> dict:
    """The state dict the AST repository would save for this network (DataParallel names, fused qkv,
    and the unused DeiT ImageNet heads as dummy tensors)."""
    v4 = v4_state(model)
    dim = model.config.hidden_size
    out = {}
    for key, value in v4.items():
        match = re.match(r"audio_spectrogram_transformer\.encoder\.layer\.(\d+)\.(.*)", key)
        if match:
            layer, rest = match.groups()
            if rest.startswith("attention.attention."):
                continue  # fused below
            for old, new in _BLOCK_FROM_V4:
                if rest.startswith(old):
                    out[f"module.v.blocks.{layer}.{new}{rest[len(old):]}"] = value
                    break
            else:
                raise AssertionError(f"unmapped {key}")
            continue
        for old, new in _OFFICIAL_FROM_V4:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            raise AssertionError(f"unmapped {key}")
    for layer in range(model.config.num_hidden_layers):
        base = f"audio_spectrogram_transformer.encoder.layer.{layer}.attention.attention."
        for kind in ("weight", "bias"):
            out[f"module.v.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(
                [v4[base + f"{part}.{kind}"] for part in ("query", "key", "value")])
    for head in ("head", "head_dist"):
        out[f"module.v.{head}.weight"] = torch.randn(imagenet_classes, dim)
        out[f"module.v.{head}.bias"] = torch.randn(imagenet_classes)
    return out


def save_hf_folder(model: ASTForAudioClassification, folder: Path, layout: str = "v4") -> Path:
    """A Hugging Face model folder: ``save_pretrained`` (v4 names), a v4 ``pytorch_model.bin``, or v5 names."""
    folder = Path(folder)
    if layout == "v4":
        model.save_pretrained(folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    if layout == "v4-bin":
        torch.save(v4_state(model), folder / "pytorch_model.bin")
    elif layout == "v5":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    else:
        raise ValueError(layout)
    return folder
