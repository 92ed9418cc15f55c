"""The paper's ablations as configurations: patch counts, counted FLOPs, export parity, position embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astedge.measure import costs
from astedge.model.convert import from_imagenet
from astedge.errors import UserError
from astedge.model.ast_model import ASTModel
from astedge.model.config import model_config


def test_patch_counts_of_the_papers_tables():
    patches = {name: config.num_patches for name, config in costs.paper_configs().items()}
    assert patches == {"stride16": 512, "stride14": 657, "stride12": 850, "stride10 (AST)": 1212,
                       "patch128x2": 512, "patch32x32": 128}
    assert model_config("base", fstride=12, tstride=16).grid == (10, 64)  # any stride pair


def test_base_flops_match_the_analytic_count():
    """Analytic: 12 layers x (12 N d^2 + 2 N^2 d) MACs + the patch conv, N = 1214, d = 768 -> 261.0 GFLOPs."""
    n, d = 1214, 768
    analytic = 2 * (12 * (12 * n * d * d + 2 * n * n * d) + 1212 * 768 * 256) + 2 * 768 * 527
    counted = costs.count_flops(model_config("base"))
    assert abs(counted - analytic) / analytic < 0.02
    assert 255e9 < counted < 267e9
    assert costs.count_parameters(model_config("base")) == 86_594_063  # Hugging Face's count


def test_activation_memory_grows_with_the_attention_matrix():
    small = costs.peak_activation_bytes(model_config("tiny", depth=1, num_classes=5, target_length=128))
    large = costs.peak_activation_bytes(model_config("tiny", depth=1, num_classes=5, target_length=512))
    grid = model_config("tiny", depth=1, num_classes=5, target_length=512).num_patches + 2
    assert large > small and large >= 3 * grid * grid * 4  # at least one [heads, N, N] float32 score matrix


@pytest.mark.parametrize("name", list(costs.PAPER_CONFIGS))
def test_every_paper_configuration_exports_and_matches_pytorch(tmp_path, name):
    import onnxruntime as ort

    from astedge.deploy.export import export_onnx

    config = model_config("tiny", depth=1, num_classes=7, **costs.PAPER_CONFIGS[name])
    torch.manual_seed(0)
    model = ASTModel(config).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    x = np.random.default_rng(1).standard_normal((2, 1024, 128)).astype(np.float32) * 0.5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert ours.shape == (2, 7) and np.abs(ours - ref).max() <= 1e-3


def _deit_state(dim: int = 192):
    import timm

    torch.manual_seed(0)
    return timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False).state_dict()


def test_position_embedding_adaptations_of_table_4():
    state = _deit_state()
    config = model_config("tiny", num_classes=3, target_length=1024)  # grid 12 x 101
    grid = state["pos_embed"][:, 2:].transpose(1, 2).reshape(1, 192, 14, 14)
    bilinear = from_imagenet(state, config, "bilinear")["v.pos_embed"]
    nearest = from_imagenet(state, config, "nearest")["v.pos_embed"]
    torch.manual_seed(1)
    reinit = from_imagenet(state, config, "reinit")["v.pos_embed"]
    for pos in (bilinear, nearest, reinit):
        assert pos.shape == (1, 2 + 1212, 192)
        torch.testing.assert_close(pos[:, :2], state["pos_embed"][:, :2])  # cls/dist positions kept
    # time stretched 14 -> 101 first, then the centre 12 of 14 frequency rows (AST's order)
    for mode, pos in (("bilinear", bilinear), ("nearest", nearest)):
        expected = torch.nn.functional.interpolate(grid, size=(14, 101), mode=mode)[:, :, 1:13]
        torch.testing.assert_close(pos[:, 2:], expected.flatten(2).transpose(1, 2))
    assert not torch.allclose(bilinear, nearest)
    fresh = reinit[:, 2:]
    # timm/AST's trunc_normal_(std=.02) truncates at +-2 absolute: effectively N(0, 0.02^2)
    assert abs(float(fresh.std()) - 0.02) < 0.002 and abs(float(fresh.mean())) < 0.002
    assert abs(float(torch.corrcoef(torch.stack([fresh.flatten(), bilinear[:, 2:].flatten()]))[0, 1])) < 0.05
    with pytest.raises(UserError, match="unknown position-embedding mode"):
        from_imagenet(state, config, "cubic")
    with pytest.raises(Exception, match="must start from scratch"):
        from_imagenet(state, model_config("tiny", patch_size=(32, 32), fstride=32, tstride=32), "bilinear")


def test_models_command_writes_the_cost_table(tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / "c.toml").write_text('[[config]]\nname = "narrow"\nsize = "tiny"\ndepth = 1\nfstride = 12\ntstride = 16\n'
                                     'target_length = 512\n[[config]]\nname = "strips"\nsize = "tiny"\ndepth = 1\n'
                                     'patch_size = [128, 2]\nfstride = 128\ntstride = 2\ntarget_length = 512\n')
    out = tmp_path / "costs.md"
    result = subprocess.run([sys.executable, "-m", "astedge", "models", "--config", str(tmp_path / "c.toml"), "--json",
                             "--threads", "1", "-o", str(out)], capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)["configs"]}
    assert rows["narrow"]["grid"] == [10, 32] and rows["narrow"]["patches"] == 320
    assert rows["strips"]["patches"] == 256 and rows["strips"]["cpu_latency_ms"] > 0
    assert rows["narrow"]["gflops"] == pytest.approx(costs.count_flops(model_config(
        "tiny", depth=1, fstride=12, tstride=16, target_length=512)) / 1e9)
    assert "| narrow | 16x16 | 12/16 | 10 x 32 | 320 |" in out.read_text()
    bad = subprocess.run([sys.executable, "-m", "astedge", "models", "--config", str(tmp_path / "none.toml")],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and "no such config file" in bad.stderr


ABLATION_RUNS = {
    **{name: values for name, values in costs.PAPER_CONFIGS.items()},
    "imagenet-bilinear": dict(pos_embed="bilinear", init="imagenet"),
    "imagenet-nearest": dict(pos_embed="nearest", init="imagenet"),
    "imagenet-reinit": dict(pos_embed="reinit", init="imagenet"),
}


@pytest.fixture(scope="module")
def ablation_data(tmp_path_factory):
    from astedge.data import synth

    root = tmp_path_factory.mktemp("ablation")
    synth.write_dataset(root / "data", classes=2, per_class=6, seconds=0.5, seed=1, stream_seconds=10.0)
    import timm

    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=1)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in deit.state_dict().items()}, str(root / "deit.safetensors"))
    return root


@pytest.mark.parametrize("name", list(ABLATION_RUNS))
def test_every_ablation_trains(tmp_path, ablation_data, name):
    """Tables 2, 4, 5 and 6 as recipes: each configuration trains (one tiny epoch) into a loadable checkpoint."""
    from astedge.model.checkpoint import load_checkpoint
    from astedge.data.datasets import read_dataset
    from astedge.train.recipes import load_recipe
    from astedge.train.loop import train

    values = dict(ABLATION_RUNS[name])
    if values.get("init") == "imagenet":
        values["init"] = f"imagenet:{ablation_data / 'deit.safetensors'}"
    if "init" not in values:  # the paper's DeiT-tiny width (an ImageNet init takes it whatever the recipe's width)
        values.update(embed_dim=None, num_heads=None)
    recipe = load_recipe("demo", overrides={"depth": 1, "epochs": 1, "batch_size": 4, "wa_start": 0, "wa_end": 0,
                                            "target_length": 128, "val_fraction": 0.3, "patch_size": (16, 16),
                                            "fstride": 16, "tstride": 16, **values})  # the paper's patches
    result = train(read_dataset(ablation_data / "data", val_fraction=0.3), tmp_path / "run", recipe,
                   log=lambda *a: None, show_progress=False)
    config = load_checkpoint(result.best).model_config
    expected = model_config("tiny", depth=1, num_classes=2, target_length=128, patch_size=recipe.patch_size,
                            fstride=recipe.fstride, tstride=recipe.tstride,
                            frame_head=True)  # synth writes every clip's event boundaries: a frame head learns them
    assert config == expected
    for key in ("patch_size", "fstride", "tstride"):
        if key in ABLATION_RUNS[name]:
            assert getattr(config, key) == ABLATION_RUNS[name][key]
    assert 0.0 <= result.best_value <= 1.0 and len(result.history) == 1
