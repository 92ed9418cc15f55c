"""Recipes and their variants: which values `--init` gets (AST's published ones only from the paper's bases, else
a fine-tuning variant fitted to the data), the one-line warning for a batch too large for the data, and the
`train` options that configure waveform augmentation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from astedge.data.datasets import read_dataset
from astedge.errors import UserError
from astedge.features import fbank as F
from astedge.train.recipes import load_recipe


def test_augmentation_is_on_from_scratch_off_in_asts_recipes_and_set_like_any_field(tmp_path):
    from astedge.train.recipes import describe_variant

    assert load_recipe("speechcommands").augment.p > 0 and load_recipe("esc50").augment.p > 0
    published = load_recipe("speechcommands", overrides={"init": "imagenet:deit_base_distilled_patch16_384.pth"})
    assert published.augment.p == 0.0 and "no waveform augmentation" in describe_variant(published)
    assert load_recipe("demo").augment.p == 0.0  # the demo's own recipe: its data is varied already
    assert load_recipe("demo", overrides={"augment": "true"}).augment.p == 0.8
    assert load_recipe("speechcommands", overrides={"augment": False}).augment.p == 0.0
    (tmp_path / "r.toml").write_text('optimizer = "adam"\n[augment]\nsnr_db = [0, 10]\n')
    from_file = load_recipe("esc50", tmp_path / "r.toml")
    assert from_file.optimizer == "adam" and from_file.augment.snr_db == (0, 10)
    assert load_recipe("demo", overrides={"augment.rt60": "0.3,0.9"}).augment.rt60 == (0.3, 0.9)
    with pytest.raises(UserError, match="augment.snr_db must be"):
        load_recipe("demo", overrides={"augment.snr_db": "20,10"})
    with pytest.raises(UserError, match="unknown augment field"):
        load_recipe("demo", overrides={"augment.colour": "pink"})
    with pytest.raises(UserError, match="augment.noise_dir .* is not a folder of audio files"):
        load_recipe("demo", overrides={"augment.noise_dir": str(tmp_path)})


def _checkpoints(tmp_path) -> dict[str, Path]:
    """A tiny model saved as if imported from the AST repository, from Hugging Face, and as trained here."""
    from astedge.model.ast_model import ASTModel, model_config
    from astedge.model.checkpoint import save_checkpoint

    model = ASTModel(model_config("tiny", depth=1, num_classes=3, target_length=48, fstride=16, tstride=16))
    paths = {}
    for name, provenance in (("official", {"source_format": "ast-official"}), ("hf", {"source_format": "hf-v4"}),
                             ("trained", {"source": "astedge train"})):
        paths[name] = save_checkpoint(tmp_path / f"{name}.safetensors", model, labels=["x", "y", "z"],
                                      task="multiclass", feature_config=F.FbankConfig(target_length=48),
                                      provenance=provenance)
    return paths


def test_init_gets_asts_values_only_from_the_papers_bases_else_a_fine_tuning_variant_fitted_to_the_data(tmp_path):
    from astedge.train.recipes import SCRATCH, batch_warning, describe_variant

    paths = _checkpoints(tmp_path)
    for init in ("imagenet:deit.pth", str(paths["official"]), str(paths["hf"])):
        recipe = load_recipe("speechcommands", overrides={"init": init}, train_clips=100)
        assert (recipe.variant, recipe.batch_size, recipe.lr, recipe.augment.p) == ("pretrained", 128, 2.5e-4, 0.0)
    scratch = SCRATCH["speechcommands"]
    tuned = load_recipe("speechcommands", overrides={"init": str(paths["trained"])}, train_clips=100)
    assert (tuned.variant, tuned.preset, tuned.loss, tuned.optimizer) == ("finetune", "speechcommands", "ce", "adamw")
    assert (tuned.batch_size, tuned.warmup_steps, tuned.warmup_every) == (12, 9, 1)  # 100 // 8; ceil(100 / 12)
    assert tuned.lr == scratch["lr"] / 2 and tuned.augment.p > 0
    note = describe_variant(tuned)
    assert "fine-tuning variant" in note and "batch 12" in note and "9-step warm-up" in note and "\n" not in note
    large = load_recipe("speechcommands", overrides={"init": str(paths["trained"])}, train_clips=5000)
    assert (large.batch_size, large.warmup_steps) == (scratch["batch_size"], 157)  # capped at the scratch batch
    assert load_recipe("speechcommands", overrides={"init": str(paths["trained"])}, train_clips=20).batch_size == 4
    assert load_recipe("speechcommands", overrides={"init": str(paths["trained"]), "batch_size": 16},
                       train_clips=100).batch_size == 16  # --set wins
    assert load_recipe("demo", overrides={"init": str(paths["trained"])}, train_clips=400).variant == "finetune"
    # a batch that leaves too few steps an epoch is said in one line; the fitted one is not
    published = load_recipe("speechcommands", overrides={"init": str(paths["official"])})
    warning = batch_warning(published, 100)
    assert warning.startswith("warning: batch 128 on 100 training clips leaves 1 optimizer step per epoch (30 in")
    assert "--set batch_size=12" in warning and "\n" not in warning
    assert batch_warning(tuned, 100) is None and batch_warning(load_recipe("speechcommands"), 100) is not None
    with pytest.raises(UserError, match="does not exist"):
        load_recipe("speechcommands", overrides={"init": str(tmp_path / "missing.safetensors")})


def test_cli_fine_tunes_with_the_fitted_variant_and_takes_noise_and_room_folders(tmp_path, tiny_data):
    run = lambda *a: subprocess.run([sys.executable, "-m", "astedge", "train", str(tiny_data), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    paths = _checkpoints(tmp_path)
    tuned = run("-o", str(tmp_path / "ft"), "--preset", "speechcommands", "--init", str(paths["trained"]),
                "--epochs", "1", "--no-augment", "--json")
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    recipe = json.loads((tmp_path / "ft" / "recipe.json").read_text())
    train_clips = len(read_dataset(tiny_data).splits["train"])
    assert (recipe["variant"], recipe["augment"]["p"]) == ("finetune", 0.0)
    assert recipe["batch_size"] == max(4, train_clips // 8) and "fine-tuning variant" in tuned.stderr
    (tmp_path / "noise").mkdir()
    sf.write(tmp_path / "noise" / "fan.wav", 0.1 * np.random.default_rng(0).standard_normal(8000), 16000)
    (tmp_path / "rir").mkdir()
    sf.write(tmp_path / "rir" / "room.wav", np.exp(-np.arange(800) / 100.0) * np.cos(np.arange(800)), 16000)
    folders = run("-o", str(tmp_path / "aug"), "--noise", str(tmp_path / "noise"), "--rir", str(tmp_path / "rir"),
                  "--epochs", "1", "--set", "depth=1", "--set", "batch_size=8", "--json")
    assert folders.returncode == 0, folders.stderr[-2000:]
    augment = json.loads((tmp_path / "aug" / "recipe.json").read_text())["augment"]
    assert augment["p"] > 0 and (augment["noise_dir"], augment["rir_dir"]) == (str(tmp_path / "noise"),
                                                                              str(tmp_path / "rir"))
    (tmp_path / "empty").mkdir()
    bad = run("-o", str(tmp_path / "bad"), "--noise", str(tmp_path / "empty"))
    assert bad.returncode == 2 and "is not a folder of audio files" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
