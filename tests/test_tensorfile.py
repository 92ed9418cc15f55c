"""The one safetensors + JSON metadata reader/writer (checkpoints, teachers and training state all go through it):
round trips, header-only reads, and files that are not safetensors refused with the file named."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from astedge.errors import UserError
from astedge.model.tensorfile import json_entry, read_header, read_tensors, write_tensors

METADATA = {"config": {"depth": 2, "scale": 0.125, "grid": [12, 12]}, "labels": ["Café", "dog bark"],
            "task": "multiclass", "version": "1", "count": 3}


def test_numpy_tensors_and_json_metadata_round_trip(tmp_path):
    tensors = {"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "index": np.arange(5, dtype=np.int64),
               "t": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))}  # not C-contiguous
    path = write_tensors(tmp_path / "a.safetensors", tensors, METADATA)
    assert path == tmp_path / "a.safetensors" and [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
    read, header = read_tensors(path)
    assert set(read) == set(tensors)
    for key, value in tensors.items():
        assert read[key].dtype == value.dtype and np.array_equal(read[key], value), key
    # strings are stored as they are (a reader of the raw header sees "multiclass", not "\"multiclass\"") ...
    assert header["task"] == "multiclass" and header["version"] == "1"
    # ... everything else as JSON
    assert json.loads(header["config"]) == METADATA["config"] and header["count"] == "3"
    assert {key: json_entry(header, key, path) for key in ("config", "labels", "count")} == \
        {key: METADATA[key] for key in ("config", "labels", "count")}
    assert read_header(path) == header


def test_torch_tensors_round_trip_views_and_bfloat16(tmp_path):
    base = torch.arange(20, dtype=torch.float32)
    tensors = {"view": base[5:9], "transposed": base.reshape(4, 5).t(), "half": torch.randn(3, dtype=torch.bfloat16),
               "steps": torch.tensor(7.0)}
    path = write_tensors(tmp_path / "b.safetensors", tensors, {"progress": {"epoch": 2, "best": -math.inf}})
    read, header = read_tensors(path, framework="pt")
    for key, value in tensors.items():
        assert read[key].dtype == value.dtype and torch.equal(read[key], value), key
    assert json_entry(header, "progress", path) == {"epoch": 2, "best": -math.inf}


def test_the_header_is_read_without_the_tensors(tmp_path, monkeypatch):
    path = write_tensors(tmp_path / "c.safetensors", {"w": np.ones(4, np.float32)}, {"task": "multilabel"})
    import safetensors

    real = safetensors.safe_open

    class NoTensors:
        """safe_open whose handles refuse to hand out tensor data."""

        def __init__(self, *args, **kwargs):
            self.handle = real(*args, **kwargs)

        def __enter__(self):
            self.inner = self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def metadata(self):
            return self.inner.metadata()

        def keys(self):
            return self.inner.keys()

        def get_tensor(self, name):
            raise AssertionError(f"tensor {name} was read")

    monkeypatch.setattr(safetensors, "safe_open", NoTensors)
    assert read_header(path) == {"task": "multilabel"}
    with pytest.raises(AssertionError, match="tensor w was read"):
        read_tensors(path)


def test_pickles_and_other_files_are_refused_naming_the_file(tmp_path):
    pickled = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, pickled)  # a zip of pickles: never opened as one
    text = tmp_path / "notes.safetensors"
    text.write_text("not tensors at all\n")
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)  # a bare pickle stream
    for path in (pickled, text, legacy):
        for read in (read_header, read_tensors):
            with pytest.raises(UserError, match="is not a readable safetensors file") as err:
                read(path)
            assert str(err.value).startswith(f"{path}: ") and len(str(err.value).splitlines()) == 1
    with pytest.raises(UserError, match="missing.safetensors: does not exist"):
        read_header(tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match=": is not a file"):
        read_tensors(tmp_path)
    with pytest.raises(UserError, match="is not a readable safetensors file .*; try this"):
        read_header(text, hint="; try this")


def test_json_entries_that_are_missing_or_broken_name_the_file(tmp_path):
    path = write_tensors(tmp_path / "d.safetensors", {}, {"good": [1], "broken": "{"})
    header = read_header(path)
    assert json_entry(header, "good", path) == [1]
    with pytest.raises(UserError, match=r"d.safetensors: metadata lacks 'progress'"):
        json_entry(header, "progress", path)
    with pytest.raises(UserError, match=r"d.safetensors: state metadata 'broken' is not valid JSON"):
        json_entry(header, "broken", path, "state metadata")
