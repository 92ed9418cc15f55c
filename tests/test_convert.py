"""Checkpoint conversions checked against independent implementations.

Hugging Face's ``ASTForAudioClassification`` (random weights) is the reference network: its
folders in the transformers v4 and v5 layouts, and the AST repository's layout derived from it by
the published mapping table, must all import to a model whose logits match it. The ImageNet
adaptation is checked against ``torch.nn.functional`` on a timm DeiT saved by the test.
"""

from __future__ import annotations

import json
import sys
import time

import pytest
import timm
import torch
import torch.nn.functional as F

from astedge.model.checkpoint import load_checkpoint, save_checkpoint
from astedge.cli import main
from astedge.model.convert import from_imagenet
from astedge.errors import UserError
from astedge.model.importer import import_source, read_state_dict
from astedge.model.labels import audioset_labels, parse_label_csv, read_labels
from astedge.model.ast_model import build_model, imagenet_init, model_config
from hf_reference import hf_logits, official_state, random_hf_model, save_hf_folder

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_length=128,
             frequency_stride=10, time_stride=12)
NAMES = ["dog", "rooster", "rain", "sea waves", "crackling fire"]
# The AST repository's layout carries no head count: astedge takes embed_dim // 64, as all DeiT sizes have.
OFFICIAL_SMALL = dict(SMALL, hidden_size=128, num_attention_heads=2, intermediate_size=256)
TOL = 1e-4


def _imported_logits(imported, x):
    net = build_model(imported.model_config, imported.state)
    with torch.no_grad():
        return net(x)


@pytest.fixture(scope="module")
def small_hf():
    model = random_hf_model(1, **SMALL, num_labels=5, id2label=dict(enumerate(NAMES)))
    torch.manual_seed(2)
    return model, torch.randn(3, SMALL["max_length"], 128)


@pytest.mark.parametrize("layout", ["v4", "v4-bin", "v5"])
def test_hf_folder_matches_transformers(small_hf, tmp_path, layout):
    model, x = small_hf
    imported = import_source(save_hf_folder(model, tmp_path / "hf", layout))
    cfg = imported.model_config
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio) == (64, 2, 4, 2.0)
    assert (cfg.fstride, cfg.tstride, cfg.target_length) == (10, 12, 128)
    assert cfg.norm_eps == cfg.head_norm_eps == model.config.layer_norm_eps == 1e-12
    assert imported.labels == NAMES
    assert imported.provenance["source_format"] == ("hf-v5" if layout == "v5" else "hf-v4")
    diff = (_imported_logits(imported, x) - hf_logits(model, x)).abs().max().item()
    print(f"parity hf-{layout}: max abs logit diff {diff:.3g}")
    assert diff <= TOL


def test_official_pth_matches_transformers(tmp_path):
    # The official model uses eps 1e-6 (blocks) / 1e-5 (head); HF's nearest is layer_norm_eps=1e-6.
    model = random_hf_model(3, **OFFICIAL_SMALL, num_labels=5, layer_norm_eps=1e-6)
    torch.manual_seed(4)
    x = torch.randn(2, SMALL["max_length"], 128)
    path = tmp_path / "esc_10_12_0.9000.pth"  # strides in the name, as the AST recipes write them
    torch.save(official_state(model), path)
    imported = import_source(path)
    cfg = imported.model_config
    assert (cfg.fstride, cfg.tstride, cfg.target_length, cfg.num_heads) == (10, 12, 128, 2)
    assert (cfg.norm_eps, cfg.head_norm_eps) == (1e-6, 1e-5)
    assert "v.head.weight" not in imported.state and "v.blocks.1.attn.qkv.weight" in imported.state
    diff = (_imported_logits(imported, x) - hf_logits(model, x)).abs().max().item()
    print(f"parity official (eps 1e-6/1e-5 vs HF 1e-6): max abs logit diff {diff:.3g}")
    assert diff <= TOL


def test_official_infers_strides_and_length_from_tensors(tmp_path):
    """Without strides in the name, equal strides whose length range holds a standard window are found."""
    model = random_hf_model(5, hidden_size=128, num_hidden_layers=1, num_attention_heads=2, intermediate_size=256,
                            max_length=128, num_labels=3)
    state = {k.removeprefix("module."): v for k, v in official_state(model).items()}  # also without module.
    torch.save(state, tmp_path / "model.pth")
    imported = import_source(tmp_path / "model.pth")
    cfg = imported.model_config
    assert (cfg.fstride, cfg.tstride, cfg.target_length, cfg.num_heads) == (10, 10, 128, 2)
    assert imported.feature_config.mean == pytest.approx(-6.845978)  # Speech Commands statistics for 128 frames
    x = torch.randn(1, 128, 128)
    assert (_imported_logits(imported, x) - hf_logits(model, x)).abs().max().item() < 1e-3  # eps 1e-12 vs 1e-6


def test_official_ambiguous_length_needs_option(tmp_path):
    model = random_hf_model(6, hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64,
                            max_length=300, num_labels=2)
    torch.save(official_state(model), tmp_path / "custom.pth")
    with pytest.raises(UserError, match=r"custom\.pth: strides are ambiguous \(4/4 at 60\.\.63; 10/10 at 296\.\.305\)"):
        import_source(tmp_path / "custom.pth")
    with pytest.raises(UserError, match=r"ambiguous for strides 10/10: pass --target-length \(296\.\.305"):
        import_source(tmp_path / "custom.pth", fstride=10)
    with pytest.raises(UserError, match="--fstride"):
        import_source(tmp_path / "custom.pth", fstride=11, target_length=300)
    imported = import_source(tmp_path / "custom.pth", target_length=300)
    assert (imported.model_config.fstride, imported.model_config.target_length) == (10, 300)
    x = torch.randn(1, 300, 128)
    assert (_imported_logits(imported, x) - hf_logits(model, x)).abs().max().item() < 1e-3


def test_mismatched_keys_are_listed(tmp_path):
    model = random_hf_model(7, **SMALL, num_labels=5)
    state = official_state(model)
    del state["module.v.blocks.1.norm1.weight"]
    state["module.v.blocks.1.extra.weight"] = torch.zeros(3)
    state["module.v.norm.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "broken_10_12_x.pth")
    with pytest.raises(UserError) as err:
        import_source(tmp_path / "broken_10_12_x.pth")
    message = str(err.value)
    assert "broken_10_12_x.pth" in message
    assert "missing v.blocks.1.norm1.weight" in message
    assert "unexpected v.blocks.1.extra.weight" in message
    assert "v.norm.bias [7] (model: [64])" in message

    folder = save_hf_folder(model, tmp_path / "hf", "v5")
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights.pop("audio_spectrogram_transformer.layers.0.attention.k_proj.bias")
    weights["audio_spectrogram_transformer.layers.0.attention.gate.weight"] = torch.zeros(2)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(UserError, match=r"unknown Hugging Face AST weights: .*attention\.gate\.weight"):
        import_source(folder)


def test_hf_options_must_agree(small_hf, tmp_path):
    folder = save_hf_folder(small_hf[0], tmp_path / "hf")
    with pytest.raises(UserError, match=r"--tstride 10 disagrees with config.json \(12\)"):
        import_source(folder, tstride=10)
    with pytest.raises(UserError, match=r"--target-length 1024 disagrees with config.json \(128\)"):
        import_source(folder, target_length=1024)


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")  # AST's empty filter 3
def test_hf_feature_extractor_config_is_carried(small_hf, tmp_path):
    from transformers import ASTFeatureExtractor

    folder = save_hf_folder(small_hf[0], tmp_path / "hf")
    ASTFeatureExtractor(max_length=128, mean=-6.5, std=5.25).save_pretrained(folder)
    features = import_source(folder).feature_config
    assert (features.mean, features.std, features.target_length, features.num_mel_bins) == (-6.5, 5.25, 128, 128)
    esc = import_source(folder, dataset="esc50").feature_config  # an explicit dataset wins
    assert (esc.mean, esc.std, esc.target_length) == (pytest.approx(-6.6268077), pytest.approx(5.358466), 128)
    ASTFeatureExtractor(max_length=1024).save_pretrained(folder)
    with pytest.raises(UserError, match="preprocessor_config.json: feature extractor gives 1024 x 128 inputs"):
        import_source(folder)


def test_audioset_head_gets_audioset_labels(tmp_path):
    model = random_hf_model(8, hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64,
                            max_length=1024, num_labels=527)
    torch.save(official_state(model), tmp_path / "audioset_10_10_0.1234.pth")
    imported = import_source(tmp_path / "audioset_10_10_0.1234.pth")
    assert imported.model_config.target_length == 1024
    assert len(imported.labels) == 527 and imported.labels[0] == "Speech"
    assert imported.labels[526] == "Field recording"
    assert imported.feature_config.mean == pytest.approx(-4.2677393)
    hf = import_source(save_hf_folder(model, tmp_path / "hf"))  # LABEL_N placeholders do not count as names
    assert hf.labels == imported.labels


def test_audioset_label_file_is_the_published_one():
    labels = audioset_labels()
    assert len(labels) == 527 and len(set(labels)) == 527
    assert labels[:3] == ["Speech", "Male speech, man speaking", "Female speech, woman speaking"]
    assert labels[70] == "Hubbub, speech noise, speech babble"
    assert labels[-1] == "Field recording"


def test_label_files(tmp_path):
    csv_text = 'index,mid,display_name\n1,/m/b,"Rain, heavy"\n0,/m/a,"Dog"\n'
    assert parse_label_csv(csv_text) == ["Dog", "Rain, heavy"]
    (tmp_path / "names.txt").write_text("yes\nno\n\n")
    assert read_labels(tmp_path / "names.txt") == ["yes", "no"]
    with pytest.raises(UserError, match="indices are not 0..1"):
        parse_label_csv("index,display_name\n0,a\n2,b\n")
    with pytest.raises(UserError, match="missing.csv"):
        read_labels(tmp_path / "missing.csv")


def test_foreign_files_are_refused_without_unpickling(tmp_path):
    import argparse

    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(UserError, match="notes.pth: is neither a torch checkpoint"):
        import_source(tmp_path / "notes.pth")
    torch.save({"model": argparse.Namespace(evil=True)}, tmp_path / "object.pth")  # arbitrary objects: refused
    with pytest.raises(UserError, match="object.pth: cannot be read as a weights-only torch file"):
        import_source(tmp_path / "object.pth")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="folder without config.json"):
        import_source(tmp_path / "folder")


def test_hf_backbone_without_head_is_named(small_hf, tmp_path):
    """A Hugging Face ASTModel (the backbone, as the Hub also carries): one error naming the weights file."""
    model = small_hf[0]
    model.audio_spectrogram_transformer.save_pretrained(tmp_path / "backbone")
    with pytest.raises(UserError, match=r"backbone/model\.safetensors: is a Hugging Face ASTModel without a "
                                        r"classification head"):
        import_source(tmp_path / "backbone")
    torch.save({"embeddings.cls_token": torch.zeros(1, 1, 8), "unrelated.weight": torch.zeros(2)},
               tmp_path / "odd.pth")
    with pytest.raises(UserError, match=r"odd\.pth: not an AST checkpoint: keys such as embeddings\.cls_token"):
        import_source(tmp_path / "odd.pth")


def test_base_size_matches_transformers(tmp_path):
    """One run at the paper's size and AudioSet shape (10/10, 1024 frames)."""
    start = time.perf_counter()
    model = random_hf_model(9, scale=0.05, num_labels=527)  # logits within about +-5, like a trained model
    x = torch.randn(1, 1024, 128)
    imported = import_source(save_hf_folder(model, tmp_path / "hf"))
    assert imported.model_config.grid == (12, 101)
    diff = (_imported_logits(imported, x) - hf_logits(model, x)).abs().max().item()
    print(f"parity hf-v4 base 10/10/1024: max abs logit diff {diff:.3g} ({time.perf_counter() - start:.1f} s)")
    assert diff <= TOL


# --- ImageNet -> audio ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deit(tmp_path_factory):
    """A random timm DeiT-tiny (distilled), saved as the DeiT release does ({'model': state}) and as safetensors."""
    torch.manual_seed(10)
    net = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.05 * torch.randn_like(param))
    state = net.state_dict()
    folder = tmp_path_factory.mktemp("deit")
    torch.save({"model": state}, folder / "deit.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, folder / "deit.safetensors")
    return state, folder


def _grid(pos, prefix=2):
    """[1, prefix + n, D] -> [1, D, sqrt(n), sqrt(n)], written out independently of astedge."""
    side = int((pos.shape[1] - prefix) ** 0.5)
    return pos[:, prefix:].reshape(1, side, side, -1).permute(0, 3, 1, 2)


def _audio_grid(pos, f_dim, t_dim):
    return pos[:, 2:].reshape(1, f_dim, t_dim, -1).permute(0, 3, 1, 2)


def test_imagenet_patch_kernel_sums_rgb(deit):
    state, _ = deit
    audio = from_imagenet(state, model_config("tiny"))
    w_rgb, bias = state["patch_embed.proj.weight"], state["patch_embed.proj.bias"]
    assert audio["v.patch_embed.proj.weight"].shape == (192, 1, 16, 16)
    torch.manual_seed(11)
    for patch in (torch.full((1, 1, 16, 16), 0.7), torch.randn(1, 1, 16, 16)):
        grey_rgb = F.conv2d(patch.expand(1, 3, 16, 16), w_rgb, bias)
        mono = F.conv2d(patch, audio["v.patch_embed.proj.weight"], audio["v.patch_embed.proj.bias"])
        torch.testing.assert_close(mono, grey_rgb, rtol=1e-5, atol=1e-5)


def test_imagenet_pos_embed_time_stretched_then_frequency_cut(deit):
    state, _ = deit
    cfg = model_config("tiny")  # 10/10, 1024 frames: grid 12 x 101 from DeiT-tiny's 14 x 14
    audio = from_imagenet(state, cfg)
    pos = state["pos_embed"]
    stretched = F.interpolate(_grid(pos), size=(14, 101), mode="bilinear", align_corners=False)
    expected = stretched[:, :, 7 - 6:7 - 6 + 12, :]
    assert audio["v.pos_embed"].shape == (1, 2 + 12 * 101, 192)
    torch.testing.assert_close(_audio_grid(audio["v.pos_embed"], 12, 101), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(audio["v.pos_embed"][:, :2], pos[:, :2], rtol=0, atol=0)


def test_imagenet_pos_embed_time_cut_then_frequency_stretched(deit):
    state, _ = deit
    cfg = model_config("tiny", fstride=4, target_length=128)  # grid 29 x 12: freq > 14, time <= 14
    assert cfg.grid == (29, 12)
    audio = from_imagenet(state, cfg)
    cut = _grid(state["pos_embed"])[:, :, :, 7 - 6:7 - 6 + 12]
    expected = F.interpolate(cut, size=(29, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(_audio_grid(audio["v.pos_embed"], 29, 12), expected, rtol=0, atol=1e-6)


def test_imagenet_init_model(deit):
    state, folder = deit
    cfg = model_config("tiny", num_classes=7, target_length=128)
    through_timm = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=True,  # timm's own loader, no download
                                     pretrained_cfg_overlay=dict(file=str(folder / "deit.safetensors"))).state_dict()
    for source in (read_state_dict(folder / "deit.pth"), read_state_dict(folder / "deit.safetensors"), through_timm):
        model = imagenet_init(cfg, source)
        got = model.state_dict()
        for name in ("cls_token", "dist_token", "blocks.3.attn.qkv.weight", "blocks.11.mlp.fc2.bias", "norm.weight"):
            torch.testing.assert_close(got["v." + name], state[name], rtol=0, atol=0)
    assert model(torch.randn(2, 128, 128)).shape == (2, 7)


def test_imagenet_plain_vit_and_refusals(deit):
    state, _ = deit
    vit = {k: v for k, v in state.items() if k not in ("dist_token", "head_dist.weight", "head_dist.bias")}
    vit["pos_embed"] = torch.cat([state["pos_embed"][:, :1], state["pos_embed"][:, 2:]], dim=1)
    audio = from_imagenet(vit, model_config("tiny", target_length=128))
    torch.testing.assert_close(audio["v.dist_token"], state["cls_token"], rtol=0, atol=0)
    torch.testing.assert_close(audio["v.pos_embed"][:, 1], state["pos_embed"][:, 0], rtol=0, atol=0)
    with pytest.raises(UserError, match="32x32 patches must start from scratch"):
        from_imagenet(state, model_config("tiny", patch_size=(32, 32)))
    with pytest.raises(UserError, match="192-d but the config asks for 384-d"):
        from_imagenet(state, model_config("small"))


# --- the command ---------------------------------------------------------------------------------


def _run_cli(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["astedge", *args])
    try:
        main()
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_import_command(small_hf, tmp_path, monkeypatch, capsys):
    model, x = small_hf
    folder = save_hf_folder(model, tmp_path / "hf")
    (tmp_path / "labels.csv").write_text("index,mid,display_name\n" + "".join(
        f'{i},/m/x{i},"{name.upper()}"\n' for i, name in enumerate(NAMES)))
    out = tmp_path / "model.safetensors"
    code = _run_cli(monkeypatch, "import", str(folder), "-o", str(out), "--labels", str(tmp_path / "labels.csv"),
                    "--json")
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source_format"] == "hf-v4" and summary["first_labels"] == ["DOG", "ROOSTER", "RAIN"]
    checkpoint = load_checkpoint(out)
    assert checkpoint.labels[-1] == "CRACKLING FIRE" and checkpoint.provenance["source"] == "hf"
    with torch.no_grad():
        diff = (checkpoint.build_model()(x) - hf_logits(model, x)).abs().max().item()
    assert diff <= TOL

    code = _run_cli(monkeypatch, "import", str(tmp_path / "nowhere.pth"), "-o", str(out))
    err = capsys.readouterr().err
    assert code == 2 and "nowhere.pth" in err and len(err.strip().splitlines()) == 1


def test_reimport_astedge_checkpoint_keeps_everything(small_hf, tmp_path):
    imported = import_source(save_hf_folder(small_hf[0], tmp_path / "hf", "v5"))
    path = save_checkpoint(tmp_path / "m.safetensors", imported.state, imported.model_config,
                           labels=imported.labels, task="multiclass")
    again = import_source(path)
    assert again.model_config == imported.model_config  # heads (4) come from the metadata, not inferred
    assert (again.labels, again.task, again.provenance["source_format"]) == (NAMES, "multiclass", "astedge")
    for key, value in imported.state.items():
        torch.testing.assert_close(again.state[key], value, rtol=0, atol=0)
