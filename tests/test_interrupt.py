"""Training killed (a real SIGKILL of `astedge train` at a chosen point) and continued with --resume.

A resumed run continues after the last epoch whose state file was written, loses at most the epoch in progress,
ends with the weights of a run never cut, and never starts over without saying so. The kill points are the
`ASTEDGE_KILL_AT` hook of :mod:`astedge.train.loop`: ``steps:N`` (epoch N's steps done, nothing of it written) and
``state:N`` (epoch N's state file written, its checkpoints not yet).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from astedge.data import synth
from astedge.data.datasets import read_dataset
from astedge.errors import UserError
from astedge.model.checkpoint import load_checkpoint
from astedge.train.loop import KILL_HOOK, train
from astedge.train.recipes import load_recipe
from test_train import TINY

RECIPE = {**TINY, "val_fraction": 0.3}


def _weights(path) -> dict:
    return load_checkpoint(path).state_dict


def _largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.fixture(scope="module")
def uncut(tmp_path_factory):
    """The data, the recipe and a run of it that nothing interrupted."""
    root = tmp_path_factory.mktemp("interrupt")
    synth.write_dataset(root / "data", classes=3, per_class=6, seconds=0.5, seed=3, stream_seconds=2.0)
    recipe = load_recipe("demo", overrides=RECIPE)
    data = read_dataset(root / "data", val_fraction=recipe.val_fraction, seed=recipe.seed)
    train(data, root / "uncut", recipe, log=lambda *a: None, show_progress=False)
    return root, data, recipe


def _killed_run(root, point: str):
    """`astedge train` in a subprocess that SIGKILLs itself at `point`."""
    run = root / point.replace(":", "-")
    sets = [arg for key, value in RECIPE.items() for arg in ("--set", f"{key}={value}")]
    result = subprocess.run([sys.executable, "-m", "astedge", "train", str(root / "data"), "-o", str(run), *sets],
                            env={**os.environ, KILL_HOOK: point}, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    return run


@pytest.mark.parametrize("point, committed", [("steps:2", 1), ("state:1", 1), ("first epoch", 0)])
def test_a_killed_run_resumes_after_its_last_committed_epoch(uncut, point, committed):
    root, data, recipe = uncut
    if point == "first epoch":  # what a kill in epoch 1 leaves: the folder and its recipe, no state (no process kept)
        run = root / "first"
        run.mkdir()
        shutil.copy(root / "uncut" / "recipe.json", run)
    else:
        run = _killed_run(root, point)
    if point == "state:1":  # cut between the state file and the checkpoints
        assert (run / "last.state.safetensors").exists() and not (run / "last.safetensors").exists()
    if point == "steps:2":
        assert load_checkpoint(run / "last.safetensors", weights=False).provenance["epoch"] == 1
    said = []
    resumed = train(data, run, recipe, resume=True, log=said.append, show_progress=False)
    trained = [int(line.split(":")[0][6:]) for line in map(str, said) if line.startswith("epoch ")]
    assert trained == list(range(committed + 1, recipe.epochs + 1)), said  # nothing committed is trained again
    expected = f"resuming after epoch {committed}" if committed else "no finished epoch to resume from"
    assert any(expected in str(line) for line in said), said  # never starts over silently
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    logged = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2]
    for name in ("last", "best"):
        checkpoint = load_checkpoint(run / f"{name}.safetensors")
        assert checkpoint.provenance["epoch"] == (2 if name == "last" else resumed.best_epoch)
        assert _largest_difference(checkpoint.state_dict, _weights(root / "uncut" / f"{name}.safetensors")) <= 1e-6


def test_checkpoints_without_their_state_are_refused_in_one_line(uncut, tmp_path):
    root, data, recipe = uncut
    shutil.copytree(root / "uncut", tmp_path / "run")
    (tmp_path / "run" / "last.state.safetensors").unlink()
    with pytest.raises(UserError, match="no last.state.safetensors") as err:
        train(data, tmp_path / "run", recipe, resume=True, log=lambda *a: None, show_progress=False)
    assert "\n" not in str(err.value) and "--force" in str(err.value)


def test_an_old_state_file_resumes_only_with_a_checkpoint_of_its_epoch(uncut, tmp_path):
    """State files from before the weights moved in: a checkpoint of another epoch (a cut between the two) is
    refused rather than mixed with the state."""
    from safetensors.torch import load_file, save
    from safetensors import safe_open

    root, data, recipe = uncut
    run = tmp_path / "run"
    shutil.copytree(root / "uncut", run)
    state = run / "last.state.safetensors"
    with safe_open(str(state), framework="pt") as handle:
        metadata = handle.metadata()
    progress = json.loads(metadata["progress"])
    progress["epoch"] = 1  # the state of epoch 1 beside epoch 2's checkpoint, as the old order could leave them
    tensors = {k: v for k, v in load_file(str(state)).items() if not k.startswith("model.")}
    state.write_bytes(save(tensors, metadata={**metadata, "progress": json.dumps(progress)}))
    with pytest.raises(UserError, match="last.safetensors is from epoch 2 and last.state.safetensors from epoch 1"):
        train(data, run, recipe, resume=True, log=lambda *a: None, show_progress=False)
