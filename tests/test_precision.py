"""One door for precision: the table (files and TensorRT flags of each precision), one check with one message at
every door (export, build-engine, device profiles, the runtime), and the export's aliases. No torch needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from astedge import artefact as art
from astedge import precision as P
from astedge.deploy import engine as eng
from astedge.deploy import profiles
from astedge.errors import UserError
from astedge.runtime import backends
from trt_double import VERSIONS
from trt_double import api as trt_api

#: The artefact's files by their astedge.json key (astedge.artefact's names: what export writes, backends read).
FILE_NAMES = {"onnx": art.ONNX_FILE, "onnx_fp16": art.ONNX_FP16_FILE, "onnx_int8": art.ONNX_INT8_FILE,
              "onnx_int8_fp16": art.ONNX_INT8_FP16_FILE}
BAD = "precision must be one of fp32, fp16, int8, got 'int4'"


def test_the_table_names_each_precisions_files_and_flags():
    table = {name: (spec.exports, spec.onnx, spec.weak_onnx, spec.weak_flags, spec.typed_onnx)
             for name, spec in P.PRECISION_TABLE.items()}
    assert table == {
        "fp32": (("onnx",), "onnx", "onnx", (), None),
        "fp16": (("onnx", "onnx_fp16"), "onnx_fp16", "onnx", ("FP16",), "onnx_fp16"),
        "int8": (("onnx", "onnx_fp16", "onnx_int8", "onnx_int8_fp16"), "onnx_int8", "onnx_int8", ("INT8", "FP16"),
                 "onnx_int8_fp16"),
    }
    assert P.PRECISIONS == ("fp32", "fp16", "int8") and P.RUNTIME_PRECISIONS == ("auto", "fp32", "fp16", "int8")
    assert [FILE_NAMES[key] for key in P.PRECISION_TABLE["int8"].exports] == [
        "model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.fp16.onnx"]
    for spec in P.PRECISION_TABLE.values():  # whatever runs or builds a precision is a file its export writes
        assert {spec.onnx, spec.weak_onnx, spec.typed_onnx} - {None} <= set(spec.exports)


def test_weak_flags_exist_in_tensorrt_10_and_not_in_11():
    """The weak builds' flags are real BuilderFlag names of every TensorRT 10 the doubles describe, and gone in 11
    (where plan_build must refuse weak typing rather than silently build FP32)."""
    flags = {flag for spec in P.PRECISION_TABLE.values() for flag in spec.weak_flags}
    assert flags == {"FP16", "INT8"}
    for version in VERSIONS:
        builder_flags = trt_api(version)["BuilderFlag"]
        assert (flags <= builder_flags) == version.startswith("10."), version
    files = {key: FILE_NAMES[key] for key in P.PRECISION_TABLE["int8"].exports}
    for name, spec in P.PRECISION_TABLE.items():  # plan_build reads the table: weak builds parse the weak file
        weak = eng.plan_build("10.3.0", name, files, "weak") if spec.weak_flags else None
        strong = eng.plan_build("11.4.0.106", name, files)
        if weak is not None:
            assert (weak.onnx_file, weak.builder_flags) == (FILE_NAMES[spec.weak_onnx], spec.weak_flags)
        assert strong.onnx_file == FILE_NAMES[spec.typed_onnx or spec.weak_onnx] and strong.builder_flags == ()


def test_an_unknown_precision_is_refused_with_one_message_at_every_door(tmp_path):
    doors = {
        "check_precision": lambda: P.check_precision("int4"),
        "precision_spec": lambda: P.precision_spec("int4"),
        "export aliases": lambda: P.requested_precision("int4"),
        "resolve_profile": lambda: profiles.resolve_profile(None, "int4"),
        "device profile": lambda: profiles.DeviceProfile(name="x", precision="int4"),
        "plan_build": lambda: eng.plan_build("10.3.0", "int4", {"onnx": "model.onnx"}),
    }
    for door, call in doors.items():
        with pytest.raises(UserError) as caught:
            call()
        assert BAD in str(caught.value) and "\n" not in str(caught.value), door
    with pytest.raises(UserError) as caught:
        backends.check_precision("int4")  # the runtime's vocabulary adds "auto", in the same message
    assert str(caught.value) == "precision must be one of auto, fp32, fp16, int8, got 'int4'"
    assert backends.check_precision("auto") == "auto" and backends.PRECISIONS == P.RUNTIME_PRECISIONS
    with pytest.raises(UserError, match="got 'auto'"):
        P.check_precision("auto")  # a build has no "auto"
    assert P.check_precision("int8") == "int8" and P.precision_problem("fp16") is None


@pytest.mark.parametrize("command", [["export", "nope.safetensors", "-o", "out"], ["build-engine", "folder"]])
def test_cli_precision_doors_share_the_message(command, tmp_path):
    """export refuses the precision before reading the checkpoint; build-engine before looking for TensorRT."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / art.METADATA_FILE).write_text('{"astedge_artefact": "1", "labels": [], "task": "multiclass", '
                                            '"model_config": {}, "feature_config": {}, "input": {}, "output": {}, '
                                            '"files": {}}')
    done = subprocess.run([sys.executable, "-m", "astedge", *command, "--precision", "int4"], cwd=tmp_path,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 2 and BAD in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_export_refuses_conflicting_aliases_before_any_work(tmp_path):
    done = subprocess.run([sys.executable, "-m", "astedge", "export", "nope.safetensors", "-o", "out", "--precision",
                           "fp32", "--fp16"], cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "conflicting precision options --precision fp32 --fp16" in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("asked, expected", [
    (dict(), None),
    (dict(precision="fp16"), "fp16"), (dict(fp16=True), "fp16"), (dict(precision="fp16", fp16=True), "fp16"),
    (dict(precision="fp32"), "fp32"), (dict(fp16=False), "fp32"), (dict(precision="fp32", fp16=False), "fp32"),
    (dict(int8=True), "int8"), (dict(precision="int8"), "int8"), (dict(int8=True, fp16=True), "int8"),
    (dict(precision="int8", int8=True), "int8"), (dict(precision="int8", fp16=True), "int8"),
])
def test_export_aliases_name_the_same_precision(asked, expected):
    assert P.requested_precision(**asked) == expected


@pytest.mark.parametrize("asked, flags", [
    (dict(precision="fp32", fp16=True), "--precision fp32 --fp16"),
    (dict(precision="fp16", fp16=False), "--precision fp16 --no-fp16"),
    (dict(precision="fp16", int8=True), "--precision fp16 --int8"),
    (dict(int8=True, fp16=False), "--int8 --no-fp16"),  # INT8 exports write the FP16 ONNX too
    (dict(precision="int8", fp16=False), "--precision int8 --no-fp16"),
])
def test_conflicting_precision_options_are_one_line(asked, flags):
    with pytest.raises(UserError) as caught:
        P.requested_precision(**asked)
    message = str(caught.value)
    assert message.startswith(f"conflicting precision options {flags}:") and "\n" not in message


def test_resolve_profile_replaces_only_the_precision(tmp_path):
    nano = profiles.load_profile("jetson-orin-nano")
    assert profiles.resolve_profile("jetson-orin-nano") == nano
    assert profiles.resolve_profile(nano, "fp16") is nano  # nothing to replace
    fp32 = profiles.resolve_profile("jetson-orin-nano", "fp32")
    assert fp32.precision == "fp32" and fp32.to_dict() == {**nano.to_dict(), "precision": "fp32"}
    assert profiles.resolve_profile(nano.to_dict(), "fp32") == fp32  # the form astedge.json records
    assert profiles.resolve_profile(None) == profiles.load_profile("workstation")
