"""Training: dataset readers, AST's recipe arithmetic, metrics, a tiny real run, resume and DDP."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from astedge.measure import metrics
from astedge.data import synth
from astedge.data.event_table import read_events_csv
from astedge.data.datasets import Item, holdout, read_dataset
from astedge.errors import UserError
from astedge.train.recipes import PRESETS, load_recipe
from astedge.train.loop import train
from astedge.train.optimization import lr_at
from astedge.train.clips import ClipDataset, balanced_weights, epoch_indices, spec_augment
from astedge.features import fbank as F

TINY = dict(model="tiny", depth=1, epochs=2, batch_size=8, lr=5e-4, patch_size=(16, 16), fstride=16, tstride=16,
            warmup_steps=0,
            freqm=4, timem=4, mixup=0.5, wa_start=0, wa_end=0)


# --- data ---------------------------------------------------------------------------------------

def test_event_recording_long_events_are_runs_of_clip_scale_sounds(tmp_path):
    """`astedge data events`: a labelled long recording at a recorder's rate; events within it, apart, of known
    classes; a 3 s event is three 1 s sounds (each its own sweep), not one slow sweep. Bad options: one line, exit 2."""
    import soundfile as sf

    result = subprocess.run([sys.executable, "-m", "astedge", "data", "events", str(tmp_path / "rec"), "--seconds", "30",
                             "--rate", "44100", "--seed", "2", "--json"], capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    info = sf.info(summary["audio"])
    assert (info.samplerate, round(info.duration, 3)) == (44100, 30.0)
    rows = [(e.onset, e.offset, e.label) for e in read_events_csv(summary["truth"])]
    assert len(rows) == summary["events"] >= 4 and all(label in synth.CLASSES for _, _, label in rows)
    assert all(0 < a < b <= 30 and b - a >= 0.3 - 1e-3 for a, b, _ in rows)
    assert all(b1 + 0.5 - 1e-3 <= a2 for (_, b1, _), (a2, _, _) in zip(rows, rows[1:]))  # gaps of >= 0.5 s
    rng = np.random.default_rng(0)
    long = synth._long_event("chirp_up", 3 * 16000, 16000, rng)
    parts = [synth.CLASSES["chirp_up"](np.random.default_rng(0), 16000, 16000) for _ in range(1)]
    assert long.shape == (48000,) and np.allclose(long[:16000], parts[0])  # the first second is a whole 1 s chirp
    bad = subprocess.run([sys.executable, "-m", "astedge", "data", "events", str(tmp_path / "x"), "--seconds", "5"],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--seconds" in bad.stderr


def test_synth_is_deterministic_and_complete(tmp_path, tiny_data):
    """The same arguments give the same bytes, whatever the number of worker processes; the stream is an event
    recording with its one truth table."""
    synth.write_dataset(tmp_path, classes=3, per_class=10, seconds=0.5, seed=3, stream_seconds=10.0, workers=1)
    for path in sorted(tiny_data.rglob("*.wav")):
        assert path.read_bytes() == (tmp_path / path.relative_to(tiny_data)).read_bytes()
    assert (tmp_path / "strong.tsv").read_bytes() == (tiny_data / "strong.tsv").read_bytes()
    assert sorted(p.name for p in tiny_data.iterdir() if p.is_dir()) == ["chirp_down", "chirp_up", "tone"]
    assert sorted(p.name for p in tiny_data.iterdir() if not p.is_dir()) == ["stream.csv", "stream.wav", "strong.tsv"]
    truth = read_events_csv(tiny_data / "stream.csv")
    assert truth and all(e.label in ("chirp_down", "chirp_up", "tone") and 0 < e.onset < e.offset <= 10 for e in truth)
    assert sf.info(tiny_data / "stream.wav").duration == pytest.approx(10.0)
    with pytest.raises(UserError, match="already exists"):
        synth.write_dataset(tmp_path, classes=3, per_class=1, seconds=0.5, stream_seconds=10.0)  # not empty: --force


def test_folder_reader_and_stable_holdout(tiny_data):
    data = read_dataset(tiny_data, val_fraction=0.3)
    assert data.labels == ["chirp_down", "chirp_up", "tone"] and data.task == "multiclass"
    train_items, val_items = data.splits["train"], data.splits["val"]
    assert len(train_items) + len(val_items) == 30 and 3 <= len(val_items) <= 15
    assert {i.path for i in train_items}.isdisjoint({i.path for i in val_items})
    # The split depends on each file's name only: dropping files does not move the others.
    kept = [i for i in train_items + val_items if "0003" not in i.path.name]
    again_train, again_val = holdout(kept, 0.3)
    assert set(again_val) == {i for i in val_items if "0003" not in i.path.name}


def test_manifest_multilabel_with_label_file_reports_bad_rows(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(tmp_path / name, np.zeros(800, np.float32), 16000)
    (tmp_path / "labels.csv").write_text('index,mid,display_name\n0,/m/01,"Dog"\n1,/m/02,"Bark, loud"\n2,/m/03,"Cat"\n')
    (tmp_path / "train.csv").write_text(
        'path,labels,split\na.wav,"/m/01,/m/02",train\nb.wav,Cat,val\nc.wav,/m/99,train\nmissing.wav,Dog,train\n')
    data = read_dataset(tmp_path / "train.csv", label_file=tmp_path / "labels.csv")
    assert data.task == "multilabel" and data.labels == ["Dog", "Bark, loud", "Cat"]
    assert data.splits["train"] == [Item(tmp_path / "a.wav", (0, 1))]
    assert data.splits["val"] == [Item(tmp_path / "b.wav", (2,))]
    assert len(data.problems) == 2 and "unknown label" in data.problems[0] and "no such file" in data.problems[1]


def test_esc50_and_speech_commands_layouts(tmp_path):
    esc = tmp_path / "ESC-50"
    (esc / "meta").mkdir(parents=True)
    (esc / "audio").mkdir()
    rows = [("1-1-A-0.wav", 1, 0, "dog"), ("2-1-A-1.wav", 2, 1, "rooster"), ("3-1-A-0.wav", 3, 0, "dog")]
    with open(esc / "meta" / "esc50.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for name, fold, target, category in rows:
            writer.writerow([name, fold, target, category, False, 1, "A"])
            sf.write(esc / "audio" / name, np.zeros(800, np.float32), 44100)
    data = read_dataset(esc, fold=2)
    assert data.labels == ["dog", "rooster"] and [i.path.name for i in data.splits["val"]] == ["2-1-A-1.wav"]
    with pytest.raises(UserError, match="folds 1-5"):
        read_dataset(esc, fold=6)

    sc = tmp_path / "speech_commands"
    for word in ("yes", "no", "_background_noise_"):
        (sc / word).mkdir(parents=True)
        for k in range(3):
            sf.write(sc / word / f"{k}.wav", np.zeros(1600, np.float32), 16000)
    (sc / "validation_list.txt").write_text("yes/0.wav\n")
    (sc / "testing_list.txt").write_text("no/1.wav\nno/2.wav\n")
    data = read_dataset(sc)
    assert data.labels == ["no", "yes"]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 3, "val": 1, "test": 2}


# --- recipe arithmetic ----------------------------------------------------------------------------

def test_presets_carry_asts_hyperparameters():
    audioset, esc, sc = PRESETS["audioset"], PRESETS["esc50"], PRESETS["speechcommands"]
    assert (audioset.lr, audioset.batch_size, audioset.epochs, audioset.freqm, audioset.timem, audioset.mixup) == \
        (1e-5, 12, 5, 48, 192, 0.5)
    assert audioset.balanced_sampling and (audioset.wa_start, audioset.wa_end) == (1, 5)
    assert (esc.target_length, esc.freqm, esc.timem, esc.loss) == (512, 24, 96, "ce")
    assert (sc.target_length, sc.lr, sc.batch_size, sc.loss, sc.noise) == (128, 2.5e-4, 128, "bce", True)
    for name in ("audioset", "esc50", "speechcommands"):  # AST's Adam (the demo's from-scratch recipe: AdamW)
        assert PRESETS[name].betas == (0.95, 0.999) and PRESETS[name].weight_decay == 5e-7


def test_schedule_matches_torch_multistep_and_asts_warmup():
    """AST steps MultiStepLR(milestones=range(start, 1000, step)) once per epoch after validation."""
    for name in ("audioset", "esc50", "speechcommands"):
        recipe = PRESETS[name]
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.Adam([param], lr=recipe.lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, list(range(recipe.lr_start, 1000, recipe.lr_step)), gamma=recipe.lr_decay)
        for epoch in range(1, recipe.epochs + 1):
            assert math.isclose(lr_at(recipe, epoch, 10**9), optimizer.param_groups[0]["lr"], rel_tol=1e-9), (name, epoch)
            optimizer.step()
            scheduler.step()
    audioset = PRESETS["audioset"]
    assert [lr_at(audioset, e, 10**9) for e in (3, 4, 5)] == pytest.approx([5e-6, 2.5e-6, 1.25e-6])
    assert lr_at(audioset, 1, 0) == 0.0 and lr_at(audioset, 1, 49) == 0.0
    assert lr_at(audioset, 1, 50) == pytest.approx(5e-7) and lr_at(audioset, 1, 999) == pytest.approx(9.5e-6)


def test_overrides_from_file_and_set(tmp_path):
    (tmp_path / "r.toml").write_text("[recipe]\nepochs = 3\nbetas = [0.9, 0.99]\n")
    recipe = load_recipe("esc50", tmp_path / "r.toml", {"lr": "3e-4", "balanced_sampling": "true", "depth": "2"})
    assert (recipe.epochs, recipe.betas, recipe.lr, recipe.balanced_sampling, recipe.depth) == (3, (0.9, 0.99), 3e-4, True, 2)
    with pytest.raises(UserError, match="unknown recipe field"):
        load_recipe("demo", overrides={"learning_rate": "1"})
    with pytest.raises(UserError, match="cannot read"):
        load_recipe("demo", overrides={"epochs": "ten"})
    # An optional number (None by default) reads as a number, and reaches the model: its MLP's width.
    from astedge.train.loop import initial_model

    recipe = load_recipe("demo", overrides={"mlp_ratio": "1.5", "depth": "1"})
    model = initial_model(recipe, 3, ["a", "b", "c"], 48, 128, lambda *a: None)
    assert recipe.mlp_ratio == 1.5 and model.v.blocks[0].mlp.fc1.out_features == 96  # 64 wide x 1.5


def test_specaugment_masks_before_normalization():
    x = np.full((100, 128), 3.0, np.float32)
    masked = spec_augment(x, 20, 30, np.random.default_rng(5))
    normalized = F.normalize(masked)
    zero = F.DEFAULT.pad_value
    rows = np.flatnonzero((normalized == np.float32(zero)).all(axis=1))
    cols = np.flatnonzero((normalized == np.float32(zero)).all(axis=0))
    assert len(rows) < 30 and len(cols) < 20 and (masked == 0).sum() > 0
    assert np.all((masked == 0) | (masked == 3.0))


def test_balanced_weights_and_epoch_shards():
    items = [Item(Path("a"), (0,)), Item(Path("b"), (0,)), Item(Path("c"), (1,)), Item(Path("d"), (0, 1))]
    weights = balanced_weights(items, 2)
    w0, w1 = 1000 / 3.01, 1000 / 2.01
    np.testing.assert_allclose(weights, [w0, w0, w1, w0 + w1])
    shards = [epoch_indices(7, 3, 0, rank, 2) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 4 and set(shards[0] + shards[1]) == set(range(7))
    assert epoch_indices(7, 3, 0, 0, 1) == epoch_indices(7, 3, 0, 0, 1) != epoch_indices(7, 4, 0, 0, 1)


def test_metrics_against_hand_computed_values():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.3, 0.6], [0.2, 0.4]])
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    # class 0: ranking 0.9(+) 0.8(-) 0.3(+) 0.2(-): AP = (1/1 + 2/3) / 2; AUC = 3/4
    # class 1: ranking 0.7(+) 0.6(+) 0.4(-) 0.1(-): AP = 1; AUC = 1
    result = metrics.evaluate(scores, targets, "multilabel")
    assert result["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert result["mAUC"] == pytest.approx((0.75 + 1) / 2)
    assert metrics.d_prime(0.5) == pytest.approx(0.0, abs=1e-12)
    assert metrics.d_prime(0.9) == pytest.approx(math.sqrt(2) * 1.2815515655446004)
    assert metrics.accuracy(scores, np.array([0, 1, 1, 1])) == 0.75


def test_mixup_targets_and_determinism(tiny_data):
    data = read_dataset(tiny_data, val_fraction=0.3)
    recipe = load_recipe("demo", overrides={"mixup": 1.0, "target_length": 64})
    config = F.FbankConfig(target_length=64)
    dataset = ClipDataset(data.splits["train"], 3, config, recipe, True)
    x, y = dataset[0]
    x2, y2 = dataset[0]
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (64, 128) and y.sum().item() == pytest.approx(1.0) and (y > 0).sum() in (1, 2)
    dataset.epoch = 1
    assert not torch.equal(dataset[0][0], x)


# --- real runs -----------------------------------------------------------------------------------

def test_tiny_run_writes_a_checkpoint_whose_metric_reproduces(tmp_path, tiny_data):
    from astedge.model.checkpoint import load_checkpoint
    from astedge.train.clips import predict

    data = read_dataset(tiny_data, val_fraction=0.3)
    recipe = load_recipe("demo", overrides=TINY)
    result = train(data, tmp_path / "run", recipe, log=lambda *a: None, show_progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and (tmp_path / "run" / "curves.png").stat().st_size > 1000
    ckpt = load_checkpoint(result.best)
    assert ckpt.labels == ("chirp_down", "chirp_up", "tone") and ckpt.task == "multiclass"
    assert ckpt.feature_config.target_length == 48  # 0.5 s -> 48 frames, rounded up to 16
    assert ckpt.provenance["recipe"]["depth"] == 1
    # Re-score the validation split independently with the saved checkpoint.
    val = ClipDataset(data.splits["val"], 3, ckpt.feature_config, recipe, False)
    scores, targets = predict(ckpt.build_model(), val, 4, torch.device("cpu"), "multiclass")
    assert metrics.accuracy(scores, targets) == pytest.approx(result.best_value)
    with pytest.raises(UserError, match="already holds a training run"):
        train(data, tmp_path / "run", recipe, log=lambda *a: None, show_progress=False)


def test_default_target_length_tiles_the_patch_grid_to_the_median_clip():
    from astedge.features import fbank as feats
    from astedge.train.clips import default_target_length

    samples = [15_680, 15_680, 30_000]  # 0.98 s at 16 kHz: 1 + (15680 - 400) // 160 = 96 frames
    assert feats.num_frames(15_680, feats.DEFAULT) == 96
    assert default_target_length(samples, feats.DEFAULT, 8, 8) == 96  # 8 + 11 * 8: no padded column
    assert default_target_length(samples, feats.DEFAULT, 2, 2) == 96
    assert default_target_length(samples, feats.DEFAULT, 16, 10) == 96  # 16 + 8 * 10
    assert default_target_length([16_000] * 3, feats.DEFAULT, 16, 10) == 106  # 98 frames: 16 + 9 * 10 >= 98 > 96
    assert default_target_length(samples, feats.DEFAULT, 128, 2) == 128  # never shorter than one patch
    assert default_target_length([16_000] * 3, feats.DEFAULT, 8, 8) == 104  # 98 frames -> 13 columns


def test_curves_are_redrawn_when_old_or_after_the_last_epoch(tmp_path):
    from astedge.train.run_folder import REDRAW_S, log_epoch

    history = [{"epoch": 1, "train_loss": 1.0, "accuracy": 0.5}]
    log_epoch(tmp_path, history, "accuracy", last=False)  # no drawing yet: drawn
    curves = tmp_path / "curves.png"
    drawn = curves.stat().st_mtime_ns
    history.append({"epoch": 2, "train_loss": 0.5, "accuracy": 0.7})
    log_epoch(tmp_path, history, "accuracy", last=False)
    assert curves.stat().st_mtime_ns == drawn and len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    os.utime(curves, ns=(drawn - int(REDRAW_S * 1e9), drawn - int(REDRAW_S * 1e9)))
    log_epoch(tmp_path, history, "accuracy", last=False)
    assert curves.stat().st_mtime_ns > drawn - int(REDRAW_S * 1e9)
    fresh = curves.stat().st_mtime_ns - 1_000_000_000  # one second old: redrawn only as the last epoch's
    os.utime(curves, ns=(fresh, fresh))
    log_epoch(tmp_path, history, "accuracy", last=False)
    assert curves.stat().st_mtime_ns == fresh
    log_epoch(tmp_path, history, "accuracy", last=True)
    assert curves.stat().st_mtime_ns > fresh and curves.stat().st_size > 1000


def test_resume_reproduces_an_uninterrupted_run(tmp_path, tiny_data):
    from astedge.model.checkpoint import load_checkpoint

    data = read_dataset(tiny_data, val_fraction=0.3)
    quiet = dict(log=lambda *a: None, show_progress=False)
    steps = {**TINY, "schedule": "step"}  # a run cut after epoch 1 of 1: its lr must not depend on the epoch count
    train(data, tmp_path / "full", load_recipe("demo", overrides=steps), **quiet)
    train(data, tmp_path / "cut", load_recipe("demo", overrides={**steps, "epochs": 1}), **quiet)
    resumed = train(data, tmp_path / "cut", load_recipe("demo", overrides=steps), resume=True, **quiet)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    a = load_checkpoint(tmp_path / "full" / "last.safetensors").state_dict
    b = load_checkpoint(tmp_path / "cut" / "last.safetensors").state_dict
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-6



# The training state file as astedge wrote and read it before its I/O moved to astedge.model.tensorfile
# (astedge/train/loop.py at da4d264: the same safetensors calls and metadata): run folders written then must
# resume now. The layout: optimizer tensors as "optimizer.<param index>.<name>", weight-average sums as "wa.<name>";
# metadata "progress" (JSON) and "optimizer" (JSON: param_groups, non-tensor entries as "<param index>.<name>").
def _old_save_state(path: Path, optimizer, progress: dict, wa_sum: dict | None) -> None:
    from safetensors.torch import save

    state = optimizer.state_dict()
    entries = [(f"{index}.{name}", value) for index, entry in state["state"].items() for name, value in entry.items()]
    tensors = {f"optimizer.{key}": value.detach().cpu().contiguous() for key, value in entries if torch.is_tensor(value)}
    meta = {"param_groups": state["param_groups"],
            "scalars": {key: value for key, value in entries if not torch.is_tensor(value)}}
    if wa_sum:
        tensors.update({f"wa.{k}": v.contiguous() for k, v in wa_sum.items()})
    data = save(tensors, metadata={"progress": json.dumps(progress), "optimizer": json.dumps(meta)})
    path.write_bytes(data)


def _old_load_state(path: Path) -> tuple[dict, dict, dict]:
    from safetensors.torch import load_file
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    wa = {k[3:]: v for k, v in tensors.items() if k.startswith("wa.")}
    return tensors, json.loads(metadata["optimizer"]), {"progress": json.loads(metadata["progress"]), "wa": wa}


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_the_state_file_keeps_its_layout_both_ways(tmp_path):
    from astedge.train.optimization import make_optimizer
    from astedge.train.run_state import RunState, load_state, save_state

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    recipe = load_recipe("demo", overrides={"optimizer": "adamw"})  # two parameter groups
    optimizer = make_optimizer(model, recipe)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()
    progress = {"epoch": 2, "step": 6, "best_value": 0.5, "best_epoch": 1,
                "history": [{"epoch": 1, "accuracy": 0.5}, {"epoch": 2, "accuracy": 0.25}]}
    wa = {k: v.detach().double() * 2 for k, v in model.state_dict().items()}
    _old_save_state(tmp_path / "old.safetensors", optimizer, progress, wa)

    restored = make_optimizer(model, recipe)
    state, weights = load_state(tmp_path / "old.safetensors", restored)  # an old file, read now
    assert state.progress() == progress and _same_tensors(state.wa_sum, wa) and weights == {}
    before, after = optimizer.state_dict(), restored.state_dict()
    assert after["param_groups"] == json.loads(json.dumps(before["param_groups"]))  # betas come back as a list
    assert after["state"].keys() == before["state"].keys()
    assert all(_same_tensors(after["state"][i], before["state"][i]) for i in before["state"])

    save_state(tmp_path / "new.safetensors", model, optimizer, RunState(**progress, wa_sum=wa))  # now, read as then
    (old_tensors, old_meta, old_saved), (tensors, meta, saved) = (_old_load_state(tmp_path / name)
                                                                  for name in ("old.safetensors", "new.safetensors"))
    weights = {k[6:]: tensors.pop(k) for k in list(tensors) if k.startswith("model.")}  # the weights moved in since
    assert _same_tensors(tensors, old_tensors) and meta == old_meta and saved["progress"] == old_saved["progress"]
    assert _same_tensors(weights, model.state_dict())


def test_a_run_folder_in_the_old_state_layout_resumes(tmp_path, tiny_data):
    """A cut run whose state file is written as astedge wrote it before (no weights: they come from last.safetensors
    of the same epoch) resumes exactly as one written now."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from astedge.model.checkpoint import load_checkpoint

    data = read_dataset(tiny_data, val_fraction=0.3)
    quiet = dict(log=lambda *a: None, show_progress=False)
    train(data, tmp_path / "now", load_recipe("demo", overrides={**TINY, "epochs": 1}), **quiet)
    shutil.copytree(tmp_path / "now", tmp_path / "then")
    state_file = tmp_path / "then" / "last.state.safetensors"
    with safe_open(str(state_file), framework="pt") as handle:
        metadata = handle.metadata()
    progress, meta = json.loads(metadata["progress"]), json.loads(metadata["optimizer"])
    assert progress["epoch"] == 1 and any(k.startswith("optimizer.") for k in load_file(str(state_file)))
    then = {k: v for k, v in load_file(str(state_file)).items() if not k.startswith("model.")}  # no weights then
    state_file.write_bytes(save(then, metadata={"progress": json.dumps(progress), "optimizer": json.dumps(meta)}))
    runs = [train(data, tmp_path / name, load_recipe("demo", overrides=TINY), resume=True, **quiet)
            for name in ("now", "then")]
    assert [[h["epoch"] for h in r.history] for r in runs] == [[1, 2], [1, 2]]
    assert [h["train_loss"] for h in runs[0].history] == [h["train_loss"] for h in runs[1].history]
    a, b = (load_checkpoint(tmp_path / name / "last.safetensors").state_dict for name in ("now", "then"))
    assert all(np.array_equal(a[k], b[k]) for k in a)

def test_feature_cache_is_keyed_by_content_and_settings(tmp_path, tiny_data):
    from astedge.train.clips import FeatureCache

    data = read_dataset(tiny_data, val_fraction=0.3)
    recipe = load_recipe("demo", overrides={"mixup": 0.0})
    config = F.FbankConfig(target_length=48)
    plain = ClipDataset(data.splits["val"], 3, config, recipe, False)
    cached = ClipDataset(data.splits["val"], 3, config, recipe, False, cache=FeatureCache(tmp_path / "c", config))
    for i in range(3):
        torch.testing.assert_close(cached[i][0], plain[i][0], rtol=0, atol=0)
    files = sorted((tmp_path / "c").glob("*.npy"))
    assert len(files) == 3
    np.testing.assert_array_equal(np.load(files[0]), F.fbank(cached.wave(
        [i for i in range(3) if cached.cache.path(cached.items[i].path) == files[0]][0])))
    # A later read comes from disk: poison the file and see it served.
    path = cached.cache.path(cached.items[0].path)
    np.save(path, np.zeros_like(np.load(path)))
    served = cached[0][0]
    assert bool(torch.all(served == served[0, 0]))
    # Other fbank settings get other entries; normalization and length do not change the key.
    assert FeatureCache(tmp_path / "c", F.FbankConfig(num_mel_bins=64)).settings != cached.cache.settings
    assert FeatureCache(tmp_path / "c", F.FbankConfig(target_length=99, mean=0.0)).settings == cached.cache.settings


def test_fine_tuning_from_a_checkpoint_keeps_the_backbone_and_replaces_the_head(tmp_path, tiny_data):
    from astedge.model.checkpoint import load_checkpoint, save_checkpoint
    from astedge.model.ast_model import ASTModel, model_config

    torch.manual_seed(3)
    source = ASTModel(model_config("tiny", depth=1, num_classes=5, target_length=48, fstride=16, tstride=16))
    save_checkpoint(tmp_path / "src.safetensors", source, labels=list("abcde"), task="multilabel",
                    feature_config=F.FbankConfig(target_length=48))
    recipe = load_recipe("demo", overrides={**TINY, "epochs": 1, "lr": 1e-12, "warmup_steps": 0, "mixup": 0.0,
                                            "init": str(tmp_path / "src.safetensors")})
    result = train(read_dataset(tiny_data, val_fraction=0.3), tmp_path / "run", recipe, log=lambda *a: None,
                   show_progress=False)
    tuned = load_checkpoint(result.best).state_dict
    original = source.state_dict()
    assert tuned["mlp_head.1.weight"].shape == (3, 192)
    np.testing.assert_allclose(tuned["v.blocks.0.attn.qkv.weight"], original["v.blocks.0.attn.qkv.weight"].numpy(),
                               atol=1e-6)  # lr 1e-12: the backbone is the source's


def test_unreadable_files_are_reported_and_skipped(tmp_path, tiny_data):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    (root / "tone" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    messages = []
    train(read_dataset(root, val_fraction=0.3), tmp_path / "run", load_recipe("demo", overrides={**TINY, "epochs": 1}),
          log=messages.append, show_progress=False)
    skipped = [m for m in messages if str(m).startswith("skipped 1 files")]
    assert skipped and "broken.wav" in skipped[0]


def test_ddp_with_two_cpu_processes(tmp_path, tiny_data):
    """torchrun + gloo: the same code path as one process; rank 0 alone writes."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "astedge",
         "train", str(tiny_data), "-o", str(out), "--json", "--set", "depth=1", "--set", "epochs=1",
         "--set", "batch_size=4", "--set", "fstride=16", "--set", "tstride=16", "--set", "val_fraction=0.3"],
        capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    summary, _ = json.JSONDecoder().raw_decode(result.stdout[result.stdout.index("{"):])  # rank 0's summary
    assert summary["epochs"] == 1 and Path(summary["best"]).is_file()


def test_cli_synth_and_train(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "astedge", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=300, stdin=subprocess.DEVNULL)
    result = run("data", "synth", str(tmp_path / "d"), "--classes", "2", "--per-class", "6", "--seconds", "0.4", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["clips"] == 12
    args = ["train", str(tmp_path / "d"), "-o", str(tmp_path / "r"), "--json", "--set", "depth=1", "--epochs", "1",
            "--patch", "32x32", "--stride", "32/16", "--set", "val_fraction=0.4", "--cache", str(tmp_path / "cache")]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["metric"] == "accuracy"
    from astedge.model.checkpoint import load_checkpoint

    config = load_checkpoint(summary["best"], weights=False).model_config
    assert (config.patch_size, config.fstride, config.tstride) == ((32, 32), 32, 16)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 12
    again = run(*args)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    bad = run("train", str(tmp_path / "d"), "-o", str(tmp_path / "r2"), "--set", "lr")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    bad = run("train", str(tmp_path / "d"), "-o", str(tmp_path / "r2"), "--pos-embed", "cubic")
    assert bad.returncode == 2 and "pos_embed must be one of" in bad.stderr


# --- learning on the user's data: from-scratch variants, teachers, the learning check ------------------

def test_presets_switch_to_their_from_scratch_variant_when_init_is_random(tmp_path):
    from astedge.train.recipes import SCRATCH, describe_variant

    scratch = load_recipe("speechcommands")
    assert (scratch.variant, scratch.preset) == ("scratch", "speechcommands")
    assert all(getattr(scratch, k) == (tuple(v) if isinstance(v, list) else v) for k, v in SCRATCH["speechcommands"].items())
    assert "from-scratch variant" in describe_variant(scratch) and scratch.augment.p > 0  # augmented from scratch
    published = load_recipe("speechcommands", overrides={"init": "imagenet:deit_base_distilled_patch16_384.pth"})
    assert published.variant == "pretrained" and (published.lr, published.batch_size, published.loss) == \
        (PRESETS["speechcommands"].lr, 128, "bce")  # AST's values stay for a pretrained init
    assert load_recipe("speechcommands", overrides={"lr": "3e-4"}).lr == 3e-4  # --set still wins over the variant
    (tmp_path / "r.toml").write_text('optimizer = "adam"\n')
    assert load_recipe("esc50", tmp_path / "r.toml").optimizer == "adam"
    assert load_recipe("demo").variant == ""  # the demo's own recipe is from scratch already
    with pytest.raises(UserError, match="optimizer must be one of"):
        load_recipe("demo", overrides={"optimizer": "sgd"})


def test_time_shift_and_several_masks():
    from astedge.train.clips import time_shift

    x = np.arange(12, dtype=np.float32).reshape(6, 2) + 1
    np.testing.assert_array_equal(time_shift(x, 2), np.concatenate([np.zeros((2, 2)), x[:4]]))
    np.testing.assert_array_equal(time_shift(x, -1), np.concatenate([x[1:], np.zeros((1, 2))]))
    assert time_shift(x, 0) is x
    ones = np.ones((100, 128), np.float32)
    one = spec_augment(ones, 30, 30, np.random.default_rng(1))
    assert np.array_equal(one, spec_augment(ones, 30, 30, np.random.default_rng(1), 1, 1))  # AST's default draws
    masked_rows = lambda m: int((m == 0).all(axis=1).sum())  # noqa: E731
    several = [spec_augment(ones, 1, 30, np.random.default_rng(s), 0, 3) for s in range(20)]
    assert np.mean([masked_rows(m) for m in several]) > np.mean(
        [masked_rows(spec_augment(ones, 1, 30, np.random.default_rng(s), 0, 1)) for s in range(20)])


def test_distillation_objective_is_deits_split():
    """Class token to the labels, distillation token to the teacher's decision, on the same (augmented) batch."""
    import torch.nn.functional as tf

    from astedge.model.ast_model import ASTModel, model_config
    from astedge.train.objectives import distill_loss, label_loss, objective

    torch.manual_seed(0)
    net = ASTModel(model_config("tiny", depth=1, num_classes=4, target_length=32, fstride=16, tstride=16))
    x, y = torch.randn(5, 32, 128), tf.one_hot(torch.tensor([0, 1, 2, 3, 1]), 4).float()
    seen = []
    teacher_logits = torch.randn(5, 4)

    def teacher(batch):
        seen.append(batch)
        return teacher_logits

    loss, label = objective(net, label_loss("ce", 0.1), teacher, distill_loss("hard", "multiclass", 1.0), 0.3)(x, y)
    cls, dist = net(x, distilled=True)
    expected_label = tf.cross_entropy(cls, y, label_smoothing=0.1)
    expected = 0.7 * expected_label + 0.3 * tf.cross_entropy(dist, teacher_logits.argmax(-1))
    assert torch.allclose(label, expected_label) and torch.allclose(loss, expected)
    assert seen[0] is x  # the teacher labels exactly the student's batch
    torch.testing.assert_close(net(x), net.mlp_head((net.forward_tokens(x)[0] + net.forward_tokens(x)[1]) / 2))
    soft = distill_loss("soft", "multiclass", 2.0)(dist, teacher_logits)
    manual = (tf.softmax(teacher_logits / 2, -1) * (tf.log_softmax(teacher_logits / 2, -1)
                                                     - tf.log_softmax(dist / 2, -1))).sum(-1).mean() * 4
    assert torch.allclose(soft, manual, atol=1e-6)
    multi = distill_loss("hard", "multilabel", 1.0)(dist, teacher_logits)
    assert torch.allclose(multi, tf.binary_cross_entropy_with_logits(dist, (teacher_logits > 0).float()))


def test_chance_levels_and_the_constant_guess_loss():
    targets = np.eye(10)[np.arange(300) % 10]
    rate, noise = metrics.chance_level(targets, "multiclass")
    assert rate == pytest.approx(0.1) and noise == pytest.approx(2 * math.sqrt(0.09 / 300) + 1 / 300)
    assert metrics.constant_guess_loss(targets, "bce") == pytest.approx(0.3251, abs=1e-4)  # the stuck loss
    assert metrics.constant_guess_loss(targets, "ce") == pytest.approx(math.log(10))
    assert metrics.constant_guess_loss(targets, "ce", 0.1) == pytest.approx(math.log(10))  # uniform stays uniform
    skewed = np.eye(2)[[0] * 90 + [1] * 10]
    assert metrics.chance_level(skewed, "multiclass")[0] == pytest.approx(0.9)
    prior = (np.random.default_rng(0).random((400, 5)) < [0.1, 0.2, 0.3, 0.4, 0.5]).astype(float)
    chance, spread = metrics.chance_level(prior, "multilabel")
    assert chance == pytest.approx(prior.mean(axis=0).mean(), abs=0.03) and 0 < spread < 0.1


def test_learning_check_says_which_failure_once():
    from astedge.train.learning_check import LearningCheck

    targets = np.eye(4)[np.arange(200) % 4]
    check = LearningCheck("multiclass", targets, targets, "ce", 0.0, recipe=load_recipe("speechcommands"))
    stuck = [{"accuracy": 0.25, "train_label_loss": math.log(4)}] * 3
    said = [check.update(r) for r in stuck + stuck]
    assert said[:2] == [None, None] and "not learning" in said[2] and said[3:] == [None] * 3  # once
    assert "from-scratch variant" not in said[2]  # the recipe already is the variant
    check = LearningCheck("multiclass", targets, targets, "ce", 0.0)
    falling = [{"accuracy": 0.27, "train_label_loss": loss} for loss in (1.2, 0.6, 0.2)]
    assert "memorizes" in [check.update(r) for r in falling][2]
    check = LearningCheck("multiclass", targets, targets, "ce", 0.0)
    learning = [{"accuracy": a, "train_label_loss": 1.0} for a in (0.25, 0.6, 0.3, 0.3, 0.8)]
    assert [check.update(r) for r in learning] == [None] * 5  # never 3 epochs in a row at chance


def test_the_learning_check_fires_on_a_run_that_cannot_learn_and_not_on_one_that_does(tmp_path, tiny_data):
    data = read_dataset(tiny_data, val_fraction=0.3)
    said = []
    train(data, tmp_path / "frozen", load_recipe("demo", overrides={**TINY, "epochs": 3, "lr": 0.0, "mixup": 0.0}),
          log=said.append, show_progress=False)
    warnings = [m for m in said if str(m).startswith("warning:")]
    learning = [w for w in warnings if "not learning" in w]
    assert len(learning) == 1 and all(w in learning or "optimizer steps per epoch" in w for w in warnings)
    rng, t = np.random.default_rng(0), np.arange(8000) / 16000  # low and high tones: learnt within 2 epochs
    for label, (low, high) in (("low", (300, 500)), ("high", (3000, 4000))):
        (tmp_path / "tones" / label).mkdir(parents=True)
        for k in range(30):
            wave = 0.3 * np.sin(2 * np.pi * rng.uniform(low, high) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(tmp_path / "tones" / label / f"{label}{k}.wav", wave.astype(np.float32), 16000)
    said = []
    easy = {**TINY, "epochs": 4, "mixup": 0.0, "freqm": 0, "timem": 0, "patch_size": "128x2", "fstride": 128,
            "tstride": 2}
    result = train(read_dataset(tmp_path / "tones", val_fraction=0.3), tmp_path / "learns",
                   load_recipe("demo", overrides=easy), log=said.append, show_progress=False)
    assert result.best_value > 0.9 and not [m for m in said if str(m).startswith("warning:")]


def test_a_timm_teacher_is_trained_once_cached_and_distilled(tmp_path, tiny_data):
    from astedge.train.teacher import read_metadata

    data = read_dataset(tiny_data, val_fraction=0.3)
    recipe = load_recipe("demo", overrides={**TINY, "epochs": 1, "mixup": 0.0, "teacher": "timm:resnet10t",
                                            "teacher_epochs": 2})
    said = []
    result = train(data, tmp_path / "run", recipe, log=said.append, show_progress=False)
    cached = tmp_path / "run" / "teacher.safetensors"
    assert read_metadata(cached)["timm"] == "resnet10t" and sum("teacher epoch" in str(m) for m in said) == 2
    stamp = cached.stat().st_mtime_ns
    said = []
    train(data, tmp_path / "run", recipe, force=True, log=said.append, show_progress=False)
    assert any("cached" in str(m) for m in said) and cached.stat().st_mtime_ns == stamp  # not retrained
    said = []
    train(data, tmp_path / "run", recipe.with_overrides({"teacher_epochs": 1}), force=True, log=said.append,
          show_progress=False)
    assert sum("teacher epoch" in str(m) for m in said) == 1  # another teacher recipe: trained again
    assert result.best.is_file()
    other = train(data, tmp_path / "reuse", recipe.with_overrides({"teacher": str(cached)}), log=said.append,
                  show_progress=False)  # a teacher checkpoint from another run
    assert other.best.is_file() and any(f"from {cached}" in str(m) for m in said)
    with pytest.raises(UserError, match="timm cannot build it"):
        train(data, tmp_path / "bad", recipe.with_overrides({"teacher": "timm:no_such_cnn"}), log=said.append,
              show_progress=False)



def test_a_teacher_file_written_as_before_loads_and_one_written_now_reads_as_before(tmp_path):
    """The teacher file's layout is unchanged: save_cnn as it was (astedge/train/teacher.py at da4d264) -> load_cnn
    now, and save_cnn now -> the header and tensors the old reader saw."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from astedge.train.teacher import TEACHER_FORMAT, CnnClassifier, load_cnn, read_metadata, save_cnn

    torch.manual_seed(0)
    model = CnnClassifier("resnet10t", 3)
    labels, features = ["Café", "dog", "siren"], F.DEFAULT.with_dataset("speechcommands")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    old_metadata = {"astedge_teacher": TEACHER_FORMAT, "timm": model.name, "labels": json.dumps(labels),
                    "task": "multiclass", "feature_config": json.dumps(features.to_dict()), "fingerprint": "0123",
                    "metrics": json.dumps({"accuracy": 0.75})}
    (tmp_path / "old.safetensors").write_bytes(save(tensors, metadata=old_metadata))
    loaded, metadata = load_cnn(tmp_path / "old.safetensors")
    assert metadata == old_metadata and json.loads(metadata["labels"]) == labels
    assert _same_tensors(loaded.state_dict(), model.state_dict())

    save_cnn(tmp_path / "new.safetensors", model, labels=labels, task="multiclass", features=features,
             fingerprint="0123", metrics={"accuracy": 0.75})
    with safe_open(str(tmp_path / "new.safetensors"), framework="pt") as handle:
        header = handle.metadata()
    decoded = ("labels", "feature_config", "metrics")
    assert {k: v for k, v in header.items() if k not in decoded} == \
        {k: v for k, v in old_metadata.items() if k not in decoded}
    assert all(json.loads(header[k]) == json.loads(old_metadata[k]) for k in decoded)
    assert _same_tensors(load_file(str(tmp_path / "new.safetensors")), tensors)
    assert read_metadata(tmp_path / "new.safetensors") == header and read_metadata(tmp_path / "nothing") is None

def test_an_ast_checkpoint_teacher_with_other_features_and_labels(tmp_path, tiny_data):
    """A teacher trained at another window and normalization, with more labels, still labels the batch."""
    import torch.nn.functional as tf

    from astedge.model.checkpoint import save_checkpoint
    from astedge.model.ast_model import ASTModel, model_config
    from astedge.train.teacher import load_teacher

    torch.manual_seed(1)
    labels = ["tone", "extra", "chirp_down", "chirp_up"]
    net = ASTModel(model_config("tiny", depth=1, num_classes=4, target_length=64, fstride=16, tstride=16))
    teacher_features = F.FbankConfig(target_length=64, mean=-3.0, std=2.0)
    save_checkpoint(tmp_path / "t.safetensors", net, labels=labels, task="multiclass", feature_config=teacher_features)
    student = F.FbankConfig(target_length=48, mean=-6.0, std=5.0)
    teacher = load_teacher(tmp_path / "t.safetensors", ["chirp_down", "chirp_up", "tone"], student, torch.device("cpu"))
    raw = torch.randn(2, 40, 128) * 3 - 5  # raw log-mel of 40 frames
    x = tf.pad((raw - student.mean) / (2 * student.std), (0, 0, 0, 8), value=student.pad_value)
    expected_input = torch.cat([(raw - teacher_features.mean) / (2 * teacher_features.std),
                                torch.full((2, 24, 128), teacher_features.pad_value)], dim=1)
    with torch.no_grad():
        expected = net(expected_input)[:, [2, 3, 0]]
    torch.testing.assert_close(teacher(x), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="no output for the labels missing"):
        load_teacher(tmp_path / "t.safetensors", ["tone", "missing"], student, torch.device("cpu"))


def test_accuracy_by_group_is_each_groups_own(tmp_path, tiny_data):
    """--group-by COLUMN of a manifest: each group is scored apart (hand-made scores: by_group's arithmetic), and a
    run reports every group of its test split with its clip count; a missing column is one error naming it."""
    from astedge.measure.metrics import by_group

    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    targets = np.array([[1, 0], [0, 1], [0, 1], [0, 1], [0, 1]])
    groups = by_group(scores, targets, ["a", "a", "b", "b", "b"], "multiclass")
    assert groups == {"a": {"accuracy": 1.0, "clips": 2}, "b": {"accuracy": pytest.approx(1 / 3), "clips": 3}}

    files = sorted(tiny_data.glob("*/*.wav"))
    rows = ["path,labels,split,speaker"] + [
        f"{f},{f.parent.name},{('train', 'val', 'test')[i % 3]},spk{i % 2}"
        for i, f in enumerate(files)]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match="--group-by 'device': no such column"):
        read_dataset(tmp_path / "clips.csv", group_by="device")
    data = read_dataset(tmp_path / "clips.csv", group_by="speaker")
    result = train(data, tmp_path / "run", load_recipe("demo", overrides={**TINY, "epochs": 1}),
                   log=lambda *a: None, show_progress=False)
    reported = result.test["groups"]
    test_items = data.splits["test"]
    assert reported["split"] == "test"
    assert {g: m["clips"] for g, m in reported["by_group"].items()} == \
        {g: sum(i.group == g for i in test_items) for g in ("spk0", "spk1")}
    weighted = sum(m["accuracy"] * m["clips"] for m in reported["by_group"].values()) / len(test_items)
    assert weighted == pytest.approx(result.test["student"]["accuracy"])  # the groups add up to the whole split
    evaluated = _evaluate_clips_cli(tmp_path / "clips.csv", result.best, "--split", "test", "--group-by", "speaker")
    for group, figures in reported["by_group"].items():  # evaluate DATA scores the groups as train did
        assert evaluated["groups"][group]["clips"] == figures["clips"]
        assert evaluated["groups"][group]["accuracy"] == pytest.approx(figures["accuracy"])
    assert evaluated["accuracy"] == pytest.approx(result.test["student"]["accuracy"])
    assert sum(m["clips"] for m in evaluated["classes"].values()) == len(test_items)
    assert sum(m["accuracy"] * m["clips"] for m in evaluated["classes"].values()) / len(test_items) == \
        pytest.approx(evaluated["accuracy"])
    (tmp_path / "no-test.csv").write_text("\n".join(r for r in rows if not r.endswith(("test,spk0", "test,spk1")))
                                          + "\n")  # no test split: the groups of the validation split
    data = read_dataset(tmp_path / "no-test.csv", group_by="speaker")
    result = train(data, tmp_path / "run-val", load_recipe("demo", overrides={**TINY, "epochs": 1}),
                   log=lambda *a: None, show_progress=False)
    reported, val_items = result.test["groups"], data.splits["val"]
    assert reported["split"] == "val" and "student" not in result.test
    assert {g: m["clips"] for g, m in reported["by_group"].items()} == \
        {g: sum(i.group == g for i in val_items) for g in ("spk0", "spk1")}
    weighted = sum(m["accuracy"] * m["clips"] for m in reported["by_group"].values()) / len(val_items)
    assert weighted == pytest.approx(result.best_value)  # the best epoch's validation accuracy, regrouped


def _evaluate_clips_cli(data, model, *flags) -> dict:
    """`astedge evaluate DATA -m MODEL FLAGS --json`: a dataset's clips scored (one JSON object)."""
    run = subprocess.run([sys.executable, "-m", "astedge", "evaluate", str(data), "-m", str(model), "--json", *flags],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)
