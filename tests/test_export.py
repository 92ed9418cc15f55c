"""Export: ONNX (FP32/FP16) against PyTorch and ONNX Runtime, the artefact folder, Triton, device profiles,
and TensorRT: the build plan as a pure function, the build and the runtime (load, run, run_audio, stream
sessions, the GPU timer) against doubles that have exactly the Python names of TensorRT 10.3, 10.8, 10.16 and
11.4 (tests/trt_double.py) on a CPU double of libcuda (tests/gpu_doubles.py). Their "engines" are numpy maps:
real engines are built only by the `tensorrt`-marked test, on a machine with TensorRT and a GPU."""

from __future__ import annotations

import ast
import importlib
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from astedge import artefact as art
from astedge import verify
from astedge.features import cuda_driver as cd
from astedge.features import cuda_fbank as C
from astedge.deploy import engine as eng
from astedge.deploy import export as exp
from astedge.deploy import profiles
from astedge.deploy import triton
from astedge.runtime.backends import tensorrt as trt_backend
from astedge.model.checkpoint import load_checkpoint, save_checkpoint
from astedge.errors import UserError
from astedge.features.fbank import FbankConfig, num_frames
from astedge.features.fbank import model_input as F_model_input
from astedge.model.ast_model import ASTModel, model_config
from astedge.deploy.onnx_fp16 import convert_fp16, float_types
from astedge.runtime.windows import Windowing
from astedge.measure.gpu_timer import EngineEventTimer
from conftest import TORCH_STACK, run_without_torch
from gpu_doubles import FakeCuda, HostKernel
from test_cuda_fbank import host_library  # noqa: F401 - the session fixture that builds libastedge_fbank_host
from trt_double import VERSIONS, fake_tensorrt
from trt_double import api as trt_api

CFG = model_config("tiny", depth=2, num_classes=10, target_length=128)
LABELS = [f"class {i}" for i in range(10)]
#: FP16 ONNX vs FP32 ONNX on ONNX Runtime CPU, max abs logit difference. Measured 1.6e-3 for this module's
#: model (tiny, depth 2, 128 frames) and 2.2e-3 for AST-base at 1024 frames (random weights, logits within
#: +-3); the bound leaves room across ONNX Runtime versions.
FP16_TOLERANCE = 1e-2


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "astedge", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = ASTModel(CFG).eval()
    with torch.no_grad():  # away from the init's identical LayerNorms and zero biases
        for param in net.parameters():
            param.add_(0.05 * torch.randn_like(param))
    path = tmp_path_factory.mktemp("ckpt") / "kws.safetensors"
    return save_checkpoint(path, net, feature_config=FbankConfig().with_dataset("speechcommands"), labels=LABELS,
                           task="multiclass", provenance={"source": "test_export"})


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    summary = exp.export(checkpoint, root / "kws", engine=False, triton_repo=root / "triton", log=lambda m: None)
    return root / "kws", summary


def _dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_onnx_graph_names_opset_and_dynamic_batch(exported):
    folder, _ = exported
    model = onnx.load(folder / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, _dims(inp), inp.type.tensor_type.elem_type) == ("fbank", ["batch", 128, 128], TensorProto.FLOAT)
    assert (out.name, _dims(out), out.type.tensor_type.elem_type) == ("logits", ["batch", 10], TensorProto.FLOAT)
    assert not list(folder.glob("*.data"))  # weights inline
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" in ops and "Attention" not in ops  # one LN node each; TRT 10.3 parses it


def test_onnx_runtime_matches_torch_at_batch_1_and_3(exported, checkpoint):
    folder, _ = exported
    net = load_checkpoint(checkpoint).build_model()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        x = (0.5 * rng.standard_normal((batch, 128, 128))).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        got = session.run(["logits"], {"fbank": x})[0]
        assert got.shape == (batch, 10)
        assert np.abs(got - expected).max() <= 1e-3
    with pytest.raises(Exception, match="fbank|Got: 64|Expected: 128"):  # the time axis is static
        session.run(["logits"], {"fbank": np.zeros((1, 64, 128), np.float32)})


def test_fp16_onnx_keeps_layernorm_and_io_in_fp32_and_runs_on_cpu(exported):
    folder, _ = exported
    model = onnx.load(folder / "model.fp16.onnx")
    types_ = float_types(model)
    assert types_["fbank"] == types_["logits"] == TensorProto.FLOAT
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert len(norms) == 2 * CFG.depth + 2  # two per block, the final norm, the head norm
    for node in norms:  # data, scale, bias and result all FP32: exact LN weights, no FP16 variance
        assert all(types_[x] == TensorProto.FLOAT for x in [*node.input, node.output[0]] if x), node.name
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    assert matmuls and all(types_[n.output[0]] == TensorProto.FLOAT16 for n in matmuls)
    assert not [n for n in model.graph.node if n.op_type == "Softmax" and types_[n.output[0]] != TensorProto.FLOAT16]

    fp32 = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    fp16 = ort.InferenceSession(str(folder / "model.fp16.onnx"), providers=["CPUExecutionProvider"])
    x = np.load(folder / "verification.npz")["fbank"]
    for batch in (1, 3):
        a = fp32.run(["logits"], {"fbank": x[:batch]})[0]
        b = fp16.run(["logits"], {"fbank": x[:batch]})[0]
        assert b.dtype == np.float32 and np.isfinite(b).all()
        assert np.abs(a - b).max() <= FP16_TOLERANCE


def _tiny_graph(extra_output: bool = False):
    """fbank -> LayerNorm -> MatMul(W) -> Softmax -> logits, plus an FP32 Cast and a float constant."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    scale = numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "scale")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bias")
    nodes = [
        helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["ln"], epsilon=1e-6),
        helper.make_node("MatMul", ["ln", "w"], ["mm"]),
        helper.make_node("Constant", [], ["half"], value_float=0.5),
        helper.make_node("Mul", ["mm", "half"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["y"], axis=-1),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["shape_f"], ["count"], keepdims=0),
        helper.make_node("Add", ["y", "count"], ["z"]),
    ]
    outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 3])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["n", 3]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              outputs, [w, scale, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("fp32_ops", [("LayerNormalization",), ("LayerNormalization", "Softmax")])
def test_convert_fp16_on_a_small_graph(fp32_ops):
    model = _tiny_graph(extra_output=True)
    converted = convert_fp16(model, fp32_ops)
    types_ = float_types(converted)
    inits = {i.name: i.data_type for i in converted.graph.initializer}
    assert inits["w"] == TensorProto.FLOAT16 and inits["scale"] == inits["bias"] == TensorProto.FLOAT
    assert [o.name for o in converted.graph.output] == ["z", "scaled"]  # names kept, FP32 outside
    assert types_["x"] == types_["z"] == types_["scaled"] == TensorProto.FLOAT
    assert types_["ln"] == TensorProto.FLOAT and types_["mm"] == TensorProto.FLOAT16
    assert types_["y"] == (TensorProto.FLOAT if "Softmax" in fp32_ops else TensorProto.FLOAT16)
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for a, b in zip(ref, got, strict=True):
        assert b.dtype == np.float32 and np.abs(a - b).max() < 1e-2


def test_convert_fp16_refuses_subgraphs():
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "b", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])])
    cond = numpy_helper.from_array(np.array(True), "c")
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [cond])
    with pytest.raises(NotImplementedError, match="subgraph"):
        convert_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def test_metadata_describes_the_folder(exported, checkpoint):
    folder, summary = exported
    meta = art.read_metadata(folder)
    ck = load_checkpoint(checkpoint, weights=False)
    assert meta["labels"] == LABELS and meta["task"] == "multiclass"
    assert meta["model_config"] == ck.model_config.to_dict()
    assert meta["feature_config"] == ck.feature_config.to_dict()
    assert meta["input"] == {"name": "fbank", "dtype": "float32", "shape": ["batch", 128, 128],
                             "layout": meta["input"]["layout"]}
    assert meta["output"]["name"] == "logits" and meta["output"]["shape"] == ["batch", 10]
    assert meta["output"]["activation"] == "softmax"
    assert meta["files"] == {"onnx": "model.onnx", "onnx_fp16": "model.fp16.onnx",
                             "verification": "verification.npz", "labels": "labels.txt"}
    assert all((folder / name).is_file() for name in meta["files"].values())
    assert sorted(p.name for p in folder.iterdir()) == sorted([*meta["files"].values(), "astedge.json"])
    assert meta["precisions"]["model.onnx"] == "fp32" and meta["precisions"]["model.fp16.onnx"].startswith("fp16")
    assert meta["engine"] is None and meta["profile"]["name"] == "workstation"
    assert meta["onnx"]["opset"] == 18 and meta["onnx"]["inputs"] == {"fbank": ["batch", 128, 128]}
    assert meta["source"]["provenance"]["source"] == "test_export" and len(meta["source"]["sha256"]) == 64
    checks = meta["verification"]
    assert checks == summary["verification"]
    assert checks["onnx_fp32_vs_torch"]["passed"] and checks["onnx_fp32_vs_torch"]["max_abs_diff"] <= 1e-3
    assert checks["onnx_fp32_vs_torch"]["batches"] == [1, 3, 3, 1]
    assert checks["onnx_fp32_vs_torch"]["top5_agreement"] == 1.0
    half = checks["onnx_fp16_vs_onnx_fp32"]
    assert half["passed"] and half["max_abs_diff"] <= FP16_TOLERANCE and half["top1_agreement"] >= 0.875
    assert "FP16 arithmetic" in half["note"]
    data = np.load(folder / "verification.npz")
    assert data["fbank"].shape == (8, 128, 128) and data["logits_onnx"].shape == (8, 10)
    silence = data["fbank"][3]  # log-mel at the floor (float32 eps), normalized: one constant
    assert np.ptp(silence) == 0 and silence[0, 0] == pytest.approx((np.log(np.finfo(np.float32).eps) + 6.845978)
                                                                  / (2 * 5.5654526), abs=1e-5)
    assert (folder / "labels.txt").read_text().splitlines() == LABELS


def test_verification_inputs_are_deterministic():
    config = FbankConfig().with_dataset("speechcommands")
    a, kinds = exp.verification_inputs(config, 10)
    b, _ = exp.verification_inputs(config, 10)
    assert a.shape == (10, 128, 128) and a.dtype == np.float32 and np.array_equal(a, b)
    assert kinds[:4] == ["noise", "tone_440hz", "gaussian_features", "silence"] and len(set(kinds)) == 10


def test_triton_repository_entry(exported):
    folder, summary = exported
    entry = Path(summary["triton"])
    assert entry.name == "kws" and (entry / "1" / "model.onnx").read_bytes() == (folder / "model.fp16.onnx").read_bytes()
    assert (entry / "labels.txt").read_text().splitlines() == LABELS
    text = (entry / "config.pbtxt").read_text()
    for line in ('name: "kws"', 'platform: "onnxruntime_onnx"', "max_batch_size: 32", 'name: "fbank"',
                 "dims: [ 128, 128 ]", 'name: "logits"', "dims: [ 10 ]", 'label_filename: "labels.txt"',
                 "data_type: TYPE_FP32", "preferred_batch_size: [ 8 ]", "max_queue_delay_microseconds: 1000",
                 "kind: KIND_GPU"):
        assert line in text, line
    # A plan entry takes the engine's batch range (config text only: no engine exists here).
    meta = {**art.read_metadata(folder), "engine": {"tensorrt": "10.3.0", "batch": {"min": 1, "opt": 1, "max": 4},
                                                     "gpu": {"name": "Orin", "compute_capability": "8.7"}}}
    meta["files"] = {**meta["files"], "engine": "model.plan"}
    plan = triton.config_pbtxt("kws", meta)
    assert 'platform: "tensorrt_plan"' in plan and "max_batch_size: 4" in plan and "preferred_batch_size" not in plan
    assert "TensorRT 10.3.0" in plan and "sm 8.7" in plan
    with pytest.raises(UserError, match="already exists"):
        triton.write_model(entry.parent, "kws", folder)


def test_existing_folder_needs_force_and_is_replaced_whole(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(UserError, match="already exists; pass --force"):
        exp.export(checkpoint, out, engine=False, log=lambda m: None)
    assert (out / "keep.txt").read_text() == "old"
    summary = exp.export(checkpoint, out, engine=False, force=True, fp16=False, verify_count=3, log=lambda m: None)
    assert not (out / "keep.txt").exists() and (out / "model.onnx").is_file() and not (out / "model.fp16.onnx").exists()
    assert summary["precisions"] == {"model.onnx": "fp32"} and art.read_metadata(out)["profile"]["precision"] == "fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or backup folders left

    monkeypatch.setattr(exp, "FP32_TOLERANCE", -1.0)  # every comparison now fails
    with pytest.raises(verify.VerificationError, match="nothing was written"):
        exp.export(checkpoint, tmp_path / "failed", engine=False, log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_export_json(checkpoint, tmp_path):
    result = cli("export", str(checkpoint), "-o", str(tmp_path / "a"), "--no-fp16", "--no-engine", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is only the JSON
    assert summary["files"]["onnx"] == "model.onnx" and summary["engine"] is None
    assert summary["verification"]["onnx_fp32_vs_torch"]["passed"]


def test_cli_export_precision_and_its_alias_write_the_same_folder(checkpoint, tmp_path):
    """`--precision fp16` and its alias `--fp16` write the same files with the same recorded precisions and profile,
    both overriding a profile of another precision (fp32 here)."""
    cpu = tmp_path / "cpu.toml"
    cpu.write_text('[engine]\nprecision = "fp32"\n')
    folders = {flags: tmp_path / name for flags, name in ((("--precision", "fp16"), "by_name"), (("--fp16",), "by_alias"))}
    for flags, out in folders.items():
        result = cli("export", str(checkpoint), "-o", str(out), "--profile", str(cpu), *flags, "--no-engine", "--json")
        assert result.returncode == 0, result.stderr
    (by_name, by_alias) = [art.read_metadata(out) for out in folders.values()]
    assert by_name["files"] == by_alias["files"] == {"onnx": "model.onnx", "onnx_fp16": "model.fp16.onnx",
                                                     "verification": "verification.npz", "labels": "labels.txt"}
    assert by_name["precisions"] == by_alias["precisions"] and set(by_name["precisions"]) == {"model.onnx",
                                                                                              "model.fp16.onnx"}
    assert by_name["profile"] == by_alias["profile"] == profiles.resolve_profile(cpu, "fp16").to_dict()
    assert by_name["profile"]["precision"] == "fp16"
    (name, alias) = [sorted(p.name for p in out.iterdir()) for out in folders.values()]
    assert name == alias
    (name, alias) = [np.load(out / "verification.npz") for out in folders.values()]
    assert np.array_equal(name["logits_onnx_fp16"], alias["logits_onnx_fp16"])


@pytest.mark.parametrize("case", ["missing", "not_checkpoint", "exists", "profile", "bad_profile"])
def test_cli_export_bad_input_exits_2_with_one_line(case, checkpoint, tmp_path):
    model, out, extra, fragment = checkpoint, tmp_path / "out", [], ""
    if case == "missing":
        model, fragment = tmp_path / "nope.safetensors", "does not exist"
    elif case == "not_checkpoint":
        model = tmp_path / "junk.safetensors"
        model.write_bytes(b"not a safetensors file at all")
        fragment = "not a readable safetensors file"
    elif case == "exists":
        out.mkdir()
        fragment = "already exists; pass --force"
    elif case == "profile":
        extra, fragment = ["--profile", "jetson-xavier"], "unknown device profile 'jetson-xavier'"
    else:
        bad = tmp_path / "bad.toml"
        bad.write_text("name = 'x'\n[engine]\nmax_batch = 0\n")
        extra, fragment = ["--profile", str(bad)], "1 <= min <= opt <= max"
    result = cli("export", str(model), "-o", str(out), *extra)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_help_has_examples():
    for command in ("export", "build-engine"):
        result = cli(command, "--help")
        assert result.returncode == 0 and f"Example: astedge {command}" in result.stdout.replace("\n", " ")


def test_build_engine_needs_no_torch_nor_onnx(exported):
    """The Jetson has tensorrt + numpy only: build-engine's modules import without torch, ONNX or ORT."""
    folder, _ = exported
    code = (
        "import astedge.cli, astedge.deploy.engine, astedge.runtime.backends.tensorrt, astedge.deploy.triton, astedge.deploy.profiles\n"
        "import astedge.artefact, astedge.deploy.export, astedge.deploy.onnx_fp16\n"
        "from astedge.errors import UserError\n"
        "assert astedge.deploy.profiles.load_profile('jetson-orin-nano').max_batch == 2\n"
        "try:\n"
        f"    astedge.deploy.engine.build_engine({str(folder / 'model.onnx')!r})\n"
        "except UserError as err:\n"
        "    print(err)\n"
    )
    result = run_without_torch(code, TORCH_STACK + ("onnx", "onnxruntime", "onnxslim", "onnxscript", "tensorrt"))
    assert result.returncode == 0, result.stderr
    assert "TensorRT is not available" in result.stdout


def test_cli_build_engine_without_tensorrt_is_a_user_error(exported, tmp_path):
    folder, _ = exported
    result = cli("build-engine", str(folder / "model.onnx"))
    if result.returncode == 0:  # pragma: no cover - a machine with TensorRT and a GPU
        pytest.skip("TensorRT is usable here")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "TensorRT" in result.stderr or "GPU" in result.stderr
    assert not (folder / "model.plan").exists()
    result = cli("build-engine", str(tmp_path))
    assert result.returncode == 2 and "no astedge.json" in result.stderr


# --- device profiles ------------------------------------------------------------------------------


def test_shipped_profiles():
    names = profiles.available_profiles()
    assert {"workstation", "jetson-orin-agx", "jetson-orin-nano"} <= set(names)
    import astedge.device_profiles

    assert profiles.PROFILE_DIR == Path(astedge.device_profiles.__file__).resolve().parent  # installed with the package
    assert profiles.PROFILE_DIR.name == "export"  # the repository's top-level folder (an editable install)
    for name in names:
        profile = profiles.load_profile(name)
        assert profile.name == name and profile.precision == "fp16" and profile.fp32_ops == ("LayerNormalization",)
        assert "ESTIMATE" in profile.notes["latency"]  # no latency in a profile is presented as measured
    nano = profiles.load_profile("jetson-orin-nano")
    assert (nano.min_batch, nano.opt_batch, nano.max_batch, nano.workspace_mib) == (1, 1, 2, 1536)
    assert nano.window_seconds == 10.24 and "TensorRT 10.3" in nano.notes["jetpack"]
    assert profiles.load_profile(None).name == "workstation"
    text = Path(profiles.PROFILE_DIR / "workstation.toml").read_text()
    assert text.startswith("# astedge device profile (TOML)")


def test_profile_validation(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('description = "x"\n[engine]\nprecision = "fp32"\nmax_batch = 2\n[stream]\nhop_seconds = 2\n'
                    '[notes]\nclocks = "jetson_clocks"\n')
    mine = profiles.load_profile(path)
    assert (mine.name, mine.precision, mine.max_batch, mine.hop_seconds) == ("mine", "fp32", 2, 2.0)
    assert mine.source == str(path) and profiles.DeviceProfile.from_dict(mine.to_dict()) == mine
    with pytest.raises(UserError, match="unknown device profile fields: colour"):  # astedge.json's form is strict too
        profiles.DeviceProfile.from_dict({**mine.to_dict(), "colour": "red"})
    for body, fragment in [('[engine]\nmax_bacth = 2\n', "unknown profile key 'engine.max_bacth'"),
                           ('[engine]\nmax_batch = "2"\n', "wrong type"),
                           ('[engine]\nprecision = "int4"\n', "precision must be"),
                           ('[engine]\nbuilder_optimization_level = 7\n', "0..5"),
                           ('precision = "fp16"\n', "unknown profile key 'precision'"),
                           ("[engine\n", "not valid TOML")]:
        path.write_text(body)
        with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
            profiles.load_profile(path)
    with pytest.raises(UserError, match="does not exist"):
        profiles.load_profile(tmp_path / "none.toml")


# --- the TensorRT paths, against doubles that have exactly one version's Python names ----------------------
# tests/trt_double.py builds a `tensorrt` double from tests/data/tensorrt_api/<version>.txt (the real bindings'
# names of 10.3 = JetPack 6, 10.8, 10.16 and 11.4): any name the version lacks raises AttributeError.

FILES = {"onnx": "model.onnx", "onnx_fp16": "model.fp16.onnx"}
AGX = profiles.load_profile("jetson-orin-agx")


def _profile(**changes):
    return dataclasses.replace(AGX, **changes)


def test_plan_build_prefers_strong_typing_wherever_it_exists():
    for version in VERSIONS:
        plan = eng.plan_build(version, AGX, FILES)
        assert (plan.typing, plan.onnx_file, plan.builder_flags, plan.fp32_layer_types) == (
            "strong", "model.fp16.onnx", (), ())
        assert plan.network_flags == (("STRONGLY_TYPED",) if version.startswith("10.") else ())
        assert plan.profiles == ((1, 1, 4), (1, 1, 1)) and plan.cleared_flags == () and not plan.tf32
    weak = eng.plan_build("10.3.0", AGX, {"onnx": "model.onnx"})  # no FP16 ONNX: TensorRT 10's fallback
    assert (weak.typing, weak.builder_flags, weak.fp32_layer_types, weak.network_flags) == ("weak", ("FP16",), (), ())
    assert any("re-export with --fp16" in n for n in weak.notes) and not any("deprecated" in n for n in weak.notes)
    assert any("deprecated" in n for n in eng.plan_build("10.16.1.11", AGX, FILES, "weak").notes)
    with pytest.raises(UserError, match="re-export with --fp16"):
        eng.plan_build("11.4.0.106", AGX, {"onnx": "model.onnx"})
    with pytest.raises(UserError, match="no weak typing"):
        eng.plan_build("11.4.0.106", AGX, FILES, typing="weak")
    with pytest.raises(UserError, match="too old"):
        eng.plan_build("8.6.2", AGX, FILES)


def test_plan_build_pins_layernorm_only_when_asked_and_clears_tf32_for_fp32():
    pins = eng.plan_build("10.3.0", _profile(pin_layernorm=True), FILES, "weak")
    assert pins.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and pins.fp32_layer_types == ("NORMALIZATION",)
    strong = eng.plan_build("10.3.0", _profile(pin_layernorm=True), FILES)
    assert strong.fp32_layer_types == () and any("pin_layernorm ignored" in n for n in strong.notes)
    fp32 = eng.plan_build("11.4.0.106", _profile(precision="fp32"), FILES)
    assert (fp32.onnx_file, fp32.typing, fp32.cleared_flags, fp32.tf32) == ("model.onnx", "strong", ("TF32",), False)
    tf32 = eng.plan_build("10.8.0.43", _profile(precision="fp32", tf32=True), FILES)
    assert tf32.cleared_flags == () and tf32.tf32
    assert eng.plan_build("10.3.0", "fp16", FILES).profiles == ((1, 1, 8), (1, 1, 1))  # a bare precision: defaults
    static = profiles.DeviceProfile(name="x", min_batch=1, opt_batch=1, max_batch=1)
    assert eng.plan_build("10.3.0", static, FILES).profiles == ((1, 1, 1),)
    assert eng.plan_build("10.3.0", _profile(stream_batch_1=False), FILES).profiles == ((1, 1, 4),)


def test_hardware_compatibility_is_refused_on_integrated_gpus():
    with pytest.raises(UserError, match="not supported on integrated GPUs"):
        profiles.DeviceProfile(name="x", integrated_gpu=True, hardware_compatibility="ampere_plus")
    discrete = profiles.DeviceProfile(name="x", hardware_compatibility="ampere_plus")
    assert eng.plan_build("10.3.0", discrete, FILES).typing == "strong"
    with pytest.raises(UserError, match="not supported on integrated GPUs"):
        eng.plan_build("10.3.0", discrete, FILES, integrated=True)
    assert all(profiles.load_profile(n).integrated_gpu for n in ("jetson-orin-agx", "jetson-orin-nano"))
    assert not profiles.load_profile("workstation").integrated_gpu


def test_profile_booleans_are_read_and_checked(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[engine]\npin_layernorm = true\ntf32 = true\nstream_batch_1 = false\nintegrated_gpu = true\n')
    mine = profiles.load_profile(path)
    assert (mine.pin_layernorm, mine.tf32, mine.stream_batch_1, mine.integrated_gpu) == (True, True, False, True)
    assert profiles.DeviceProfile.from_dict(mine.to_dict()) == mine
    path.write_text('[engine]\npin_layernorm = 1\n')
    with pytest.raises(UserError, match="wrong type"):
        profiles.load_profile(path)
    path.write_text('[engine]\nmax_batch = true\n')
    with pytest.raises(UserError, match="wrong type"):  # a boolean is still no integer
        profiles.load_profile(path)


def test_timing_cache_is_keyed_by_the_device_not_the_compute_capability(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a10 = {"name": "NVIDIA A10", "compute_capability": "8.6", "uuid": "GPU-1111aaaa-2222-3333-4444-555566667777"}
    rtx = {"name": "NVIDIA GeForce RTX 3090", "compute_capability": "8.6", "uuid": "GPU-9999aaaa-2222-3333-4444-555566667777"}
    paths = {eng.default_timing_cache("10.16.1.11", gpu) for gpu in (a10, rtx)}
    paths.add(eng.default_timing_cache("11.4.0.106", a10))
    assert len(paths) == 3 and all(p.parent == tmp_path / "astedge" / "tensorrt" for p in paths)
    assert eng.default_timing_cache("10.3.0", a10).name == "timing-10.3.0-nvidia-a10-1111aaaa2222.cache"


def _build(trt, tmp_path, typing="auto", profile=None, files=FILES, integrated=False):
    profile = profile or AGX
    plan = eng.plan_build(trt.__version__, profile, files, typing, integrated=integrated)
    return eng.build_serialized(trt, tmp_path / plan.onnx_file, plan, profile, "fbank", (1024, 128),
                                tmp_path / "timing.cache", log=lambda m: None)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_build_path_uses_only_names_of_that_tensorrt(version, tmp_path):
    """The build against a double with exactly this version's Python names: a name the version lacks raises."""
    fp32 = _profile(precision="fp32")
    cases = [("auto", AGX, FILES), ("strong", fp32, FILES), ("auto", dataclasses.replace(fp32, tf32=True), FILES)]
    if version.startswith("10."):
        cases += [("weak", AGX, FILES), ("weak", _profile(pin_layernorm=True), FILES), ("auto", AGX, {"onnx": "model.onnx"})]
    for typing, profile, files in cases:
        trt, calls = fake_tensorrt(version)
        data, _ = _build(trt, tmp_path, typing, profile, files)
        assert json.loads(data)["profiles"] and ("config.profiling_verbosity", "ProfilingVerbosity.DETAILED") in calls
    scc = profiles.DeviceProfile(name="x", hardware_compatibility="same_compute_capability")  # from 10.16 on
    if version in ("10.3.0", "10.8.0.43"):
        with pytest.raises(UserError, match="no hardware compatibility level"):
            _build(fake_tensorrt(version)[0], tmp_path, profile=scc)
    else:
        trt, calls = fake_tensorrt(version)
        _build(trt, tmp_path, profile=scc)
        assert ("config.hardware_compatibility_level", "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY") in calls
    if version.startswith("11."):  # the weak-typing names really are gone there
        with pytest.raises(AttributeError, match="has no BuilderFlag.FP16"):
            fake_tensorrt(version)[0].BuilderFlag.FP16  # noqa: B018
        layer = fake_tensorrt(version)[0].Builder(None).create_network().get_layer(0)
        with pytest.raises(AttributeError, match="settable ILayer.precision"):
            layer.precision = "float32"


def test_tensorrt_10_strong_build_records_the_calls(tmp_path):
    trt, calls = fake_tensorrt("10.3.0")
    _, info = _build(trt, tmp_path)
    assert ("create_network", 1 << 1) in calls and ("parse_from_file", "model.fp16.onnx") in calls
    assert not [c for c in calls if c[0] in ("set_flag", "clear_flag") or c[0].startswith("layer.")]
    assert ("set_memory_pool_limit", "MemoryPoolType.WORKSPACE", 4096 << 20) in calls
    assert ("config.builder_optimization_level", 3) in calls
    assert not [c for c in calls if c[0] == "config.hardware_compatibility_level"]
    shapes = [c[2:] for c in calls if c[0] == "set_shape"]
    assert shapes == [((1, 1024, 128), (1, 1024, 128), (4, 1024, 128)), ((1, 1024, 128),) * 3]
    assert calls.count(("add_optimization_profile",)) == 2
    assert calls.index(("add_optimization_profile",)) < calls.index(("build_serialized_network",))
    assert ("create_timing_cache", b"") in calls and ("set_timing_cache", False) in calls
    assert (tmp_path / "timing.cache").read_bytes() == b"timing:" and not info["timing_cache_reused"]
    assert info["fp32_pinned_layers"] == 0
    trt2, calls2 = fake_tensorrt("10.3.0")  # a second build reuses the persisted cache
    _, info2 = _build(trt2, tmp_path)
    assert ("create_timing_cache", b"timing:") in calls2 and info2["timing_cache_reused"]


def test_tensorrt_10_weak_paths(tmp_path):
    trt, calls = fake_tensorrt("10.8.0.43")
    _build(trt, tmp_path, "weak")
    assert ("create_network", 0) in calls and ("parse_from_file", "model.onnx") in calls
    assert [c for c in calls if c[0] == "set_flag"] == [("set_flag", "BuilderFlag.FP16")]
    assert not [c for c in calls if c[0].startswith("layer.")]  # no pins by default
    trt, calls = fake_tensorrt("10.3.0")
    _, info = _build(trt, tmp_path, "weak", _profile(pin_layernorm=True))
    assert ("set_flag", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS") in calls and info["fp32_pinned_layers"] == 2
    pinned = [c for c in calls if c[0].startswith("layer.")]
    assert pinned == [("layer.precision", "layer0", "float32"), ("layer.set_output_type", "layer0", 0, "float32"),
                      ("layer.precision", "layer2", "float32"), ("layer.set_output_type", "layer2", 0, "float32")]


def test_fp32_engines_clear_tf32(tmp_path):
    trt, calls = fake_tensorrt("11.4.0.106")
    _build(trt, tmp_path, profile=_profile(precision="fp32"))
    assert ("clear_flag", "BuilderFlag.TF32") in calls and ("parse_from_file", "model.onnx") in calls
    trt, calls = fake_tensorrt("11.4.0.106")
    _build(trt, tmp_path, profile=_profile(precision="fp32", tf32=True))
    assert not [c for c in calls if c[0] == "clear_flag"]


def test_tensorrt_build_failures_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot parse the ONNX: In node 3"):
        _build(fake_tensorrt("10.3.0", parse_ok=False)[0], tmp_path)
    with pytest.raises(UserError, match="could not build the engine"):
        _build(fake_tensorrt("11.4.0.106", build_ok=False)[0], tmp_path)
    with pytest.raises(UserError, match="found no LayerNorm"):
        _build(fake_tensorrt("10.3.0", layers=("MATRIX_MULTIPLY",))[0], tmp_path, "weak", _profile(pin_layernorm=True))
    assert not (tmp_path / "timing.cache").exists()


def test_static_tensorrt_names_in_the_source_exist_in_every_version():
    """Every `trt.X` / `trt.X.Y` spelled out in the modules that take the tensorrt module exists in 10.3, 10.8, 10.16
    and 11.4 (names only some versions have go through plan_build's names, run per version above)."""
    used = set()
    for module in ("astedge.deploy.engine", "astedge.runtime.backends.tensorrt", "astedge.features.device_pipeline"):
        for node in ast.walk(ast.parse(Path(importlib.import_module(module).__file__).read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            if isinstance(node.value, ast.Name) and node.value.id == "trt":
                used.add(node.attr)
            elif (isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name)
                  and node.value.value.id == "trt"):
                used.add(f"{node.value.attr}.{node.attr}")
    used -= {"__version__"}
    assert {"ProfilingVerbosity.DETAILED", "LayerInformationFormat.JSON", "ExecutionContextAllocationStrategy.USER_MANAGED",
            "TensorIOMode.INPUT", "MemoryPoolType.WORKSPACE", "Logger.WARNING"} <= used
    for version in VERSIONS:
        names = trt_api(version)
        missing = sorted(n for n in used if n.rpartition(".")[2] not in names.get(n.rpartition(".")[0], set()))
        assert not missing, f"TensorRT {version} lacks {missing}"


def test_layer_precisions_from_the_inspector_json():
    info = {"Layers": [
        {"Name": "Reformatting CopyNode for Input Tensor 0", "LayerType": "Reformat",
         "Outputs": [{"Format/Datatype": "Row major linear FP16 format"}]},
        {"Name": "{ForeignNode[/blocks.0/attn/MatMul...]}", "LayerType": "Myelin",
         "Outputs": [{"Format/Datatype": "Row major linear FP32"}]},
        {"Name": "/norm/LayerNormalization", "LayerType": "Normalization", "Outputs": [{"Format/Datatype": "Float"}]},
        {"Name": "/head/Gemm", "LayerType": "CaskGemm", "Outputs": [{"Format/Datatype": "Half"}]}],
        "Bindings": ["fbank", "logits"]}
    result = eng.layer_precisions(json.dumps(info))
    assert result["summary"]["layers"] == 4 and result["summary"]["reformat_layers"] == 1
    assert result["summary"]["by_output_precision"] == {"fp16": 2, "fp32": 2}
    assert result["summary"]["normalization_layers"] == {"fp32": 1}
    assert result["layers"][3] == {"name": "/head/Gemm", "type": "CaskGemm", "outputs": ["fp16"]}
    assert eng.layer_precisions({"Layers": ["a", "b"]})["summary"]["layers"] == 2  # LAYER_NAMES_ONLY engines
    assert eng.tensor_precision("Thirty-two wide channel vectorized row major Int8 format.") == "int8"


def test_engine_compatibility_check():
    orin = {"name": "Orin", "compute_capability": "8.7", "machine": "aarch64", "integrated": True}
    engine = {"tensorrt": "10.3.0", "gpu": orin, "hardware_compatibility": "none",
              "platform": {"machine": "aarch64", "integrated": True}}
    assert trt_backend.check_engine_compatible(engine, "10.3.0", orin) == []
    with pytest.raises(UserError, match="TensorRT 10.3.0 for Orin.*TensorRT 10.3.1.*rebuild it on this device"):
        trt_backend.check_engine_compatible(engine, "10.3.1", orin)
    with pytest.raises(UserError, match="specific to a GPU architecture; rebuild"):
        trt_backend.check_engine_compatible(engine, "10.3.0", {**orin, "name": "Thor", "compute_capability": "11.0"})
    warnings = trt_backend.check_engine_compatible(engine, "10.3.0", {**orin, "name": "Other sm87"})
    assert len(warnings) == 1 and "same compute capability" in warnings[0]
    # An x86 engine of the same compute capability is refused on a Jetson: platforms are not portable.
    x86 = {**engine, "platform": {"machine": "x86_64", "integrated": False}}
    with pytest.raises(UserError, match="not portable across platforms"):
        trt_backend.check_engine_compatible(x86, "10.3.0", orin)
    rtx = {"name": "RTX A6000", "compute_capability": "8.6", "machine": "x86_64", "integrated": False}
    portable = {**x86, "gpu": rtx, "hardware_compatibility": "ampere_plus"}
    assert trt_backend.check_engine_compatible(portable, "10.3.0", {**rtx, "name": "A100", "compute_capability": "8.0"}) == []
    with pytest.raises(UserError, match="integrated GPUs"):  # an ampere_plus engine at load on a Jetson
        trt_backend.check_engine_compatible({**portable, "platform": engine["platform"]}, "10.3.0", orin)
    old = {k: v for k, v in engine.items() if k != "platform"}  # built before platforms were recorded
    assert "does not record its platform" in trt_backend.check_engine_compatible(old, "10.3.0", orin)[0]


def test_stream_profile_prefers_the_static_batch_1_profile():
    assert trt_backend.stream_profile([((1,), (8,), (32,)), ((1,), (1,), (1,))]) == 1
    assert trt_backend.stream_profile([((1,), (8,), (32,))]) == 0
    assert trt_backend.stream_profile([((2,), (8,), (32,))]) is None


def test_backend_without_engine_says_build_it(exported):
    folder, _ = exported
    with pytest.raises(UserError, match="has no TensorRT engine; build one on this device"):
        trt_backend.TensorRTBackend(folder)


@pytest.mark.parametrize("failure", [cd.CudaUnavailable("libcuda.so.1 not found (no NVIDIA driver)"),
                                     cd.CudaError("cuInit", 100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device")])
def test_no_gpu_is_one_user_error(monkeypatch, failure):
    def no_driver(device=0):
        raise failure

    monkeypatch.setattr(trt_backend, "shared_driver", no_driver)
    with pytest.raises(UserError) as err:
        trt_backend.current_gpu()
    assert str(err.value) == f"no CUDA GPU visible: {failure}" and "\n" not in str(err.value)
    orin = cd.Driver(lib=FakeCuda(name="Orin", cc=(8, 7), integrated=True))  # and with a GPU, its description
    assert {k: trt_backend.current_gpu(orin)[k] for k in ("name", "compute_capability", "integrated")} == \
        {"name": "Orin", "compute_capability": "8.7", "integrated": True}


# --- build-engine and the backend end to end on the doubles (one version's TensorRT names, libcuda on the CPU)


def _network_engine(folder, wrong: bool = False):
    """An engine double that computes the network on whatever reaches its input binding: the export's FP16 ONNX
    (what a strongly typed build compiles) in ONNX Runtime, so verification meets real FP16 differences; `wrong`
    swaps the classes (an engine that computes something else)."""
    session = ort.InferenceSession(str(folder / "model.fp16.onnx"), providers=["CPUExecutionProvider"])

    def fn(x):
        logits = session.run(None, {"fbank": np.ascontiguousarray(x, np.float32)})[0]
        return logits[:, ::-1] if wrong else logits

    return fn


@pytest.fixture
def doubles(monkeypatch, exported, tmp_path):
    """A copy of the export folder, a FakeCuda (an Orin: integrated), and build_engine wired to a TensorRT double."""
    import shutil

    folder = tmp_path / "kws"
    shutil.copytree(exported[0], folder)
    cuda = FakeCuda(name="Orin", cc=(8, 7), integrated=True)
    driver = cd.Driver(lib=cuda)
    monkeypatch.setattr(trt_backend, "shared_driver", lambda device=0: driver)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def use(version, wrong=False):
        trt, calls = fake_tensorrt(version, cuda=cuda, logits_fn=_network_engine(folder, wrong))
        monkeypatch.setattr(eng, "import_tensorrt", lambda: trt)
        return trt, calls

    return folder, cuda, driver, use


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0.106"])
def test_build_engine_records_platform_layers_and_profiles(doubles, version):
    folder, cuda, driver, use = doubles
    use(version)
    summary = eng.build_engine(folder / "model.onnx", profiles.load_profile("jetson-orin-nano"), log=lambda m: None)
    assert summary["typing"] == "strong" and summary["onnx"] == "model.fp16.onnx" and summary["verification"]["passed"]
    engine = art.read_metadata(folder)["engine"]
    assert engine["platform"]["integrated"] is True and engine["platform"]["machine"]
    assert engine["gpu"]["uuid"].startswith("GPU-") and engine["profiles"] == [[1, 1, 2], [1, 1, 1]]
    assert engine["layer_precisions"]["by_output_precision"] == {"fp32": 1} and engine["tf32"] is False
    assert json.loads((folder / eng.LAYERS_FILE).read_text())["layers"][0]["type"] == "Myelin"
    assert engine["timing_cache"].endswith(f"timing-{version}-orin-000102030405.cache")
    assert cuda.live() == {}  # the verification runner released everything
    figures = summary["verification"]  # the engine's own FP16 arithmetic against the FP32 ONNX's logits
    assert 0 < figures["max_abs_diff"] and figures["max_abs_diff"] <= 0.05 * figures["reference_max_abs"]


def test_an_engine_that_computes_something_else_is_refused(doubles):
    folder, cuda, driver, use = doubles
    use("10.8.0.43", wrong=True)
    before = art.read_metadata(folder)
    with pytest.raises(verify.VerificationError, match="the TensorRT engine fails verification"):
        eng.build_engine(folder / "model.onnx", profiles.load_profile("jetson-orin-nano"), log=lambda m: None)
    assert not (folder / "model.plan").exists() and art.read_metadata(folder) == before
    assert cuda.live() == {}


def test_export_and_build_engine_resolve_the_same_profile(doubles, checkpoint, tmp_path):
    """One resolve_profile: the same profile and precision asked of export and of build-engine give the same profile;
    build-engine without a profile takes the one the export recorded, with its precision replaced."""
    folder, cuda, driver, use = doubles
    use("10.8.0.43")
    eng.build_engine(folder, "jetson-orin-nano", precision="fp32", log=lambda m: None)
    built = art.read_metadata(folder)
    exp.export(checkpoint, tmp_path / "nano", profile="jetson-orin-nano", precision="fp32", engine=False,
               verify_count=1, log=lambda m: None)
    exported_profile = art.read_metadata(tmp_path / "nano")["profile"]
    assert built["profile"] == exported_profile == profiles.resolve_profile("jetson-orin-nano", "fp32").to_dict()
    assert built["engine"]["precision"] == "fp32" and built["engine"]["onnx_file"] == "model.onnx"
    eng.build_engine(folder, precision="fp16", force=True, log=lambda m: None)  # the recorded Nano profile, as FP16
    rebuilt = art.read_metadata(folder)
    assert rebuilt["profile"] == profiles.load_profile("jetson-orin-nano").to_dict()
    assert rebuilt["engine"]["precision"] == "fp16" and rebuilt["engine"]["onnx_file"] == "model.fp16.onnx"


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_runs_audio_and_streams_on_the_device_doubles(version, doubles, rng, host_library):
    """The runtime against each version's names: load, run, run_audio, a stream session, the GPU timer, close."""
    folder, cuda, driver, use = doubles
    use(version)
    eng.build_engine(folder / "model.onnx", profiles.load_profile("jetson-orin-nano"), log=lambda m: None)
    config = FbankConfig.from_dict(art.read_metadata(folder)["feature_config"])
    model = C.HostFbank(config, library=host_library)
    frames = C.HostFbank(config, model_input=False, normalize=True, library=host_library)
    trt, calls = fake_tensorrt(version, cuda=cuda)
    backend = trt_backend.TensorRTBackend(folder, trt=trt, driver=driver,
                                          extractors={"model": HostKernel(cuda, model), "frames": HostKernel(cuda, frames)})
    waves = [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(3)]
    logits = backend.run_audio(waves)
    engine = backend.runner.engine
    assert [len(x) for x in engine._inputs] == [2, 1]  # the Nano profile's max batch is 2
    assert np.array_equal(np.concatenate(engine._inputs), model(np.stack(waves)))
    assert np.array_equal(logits, engine._logits(model(np.stack(waves))))
    assert not cuda.labels("H2D") and not cuda.labels("D2H")  # an integrated GPU: mapped memory, no copies at all
    session = backend.open_stream(Windowing.from_seconds(config, 1.0, 0.5))
    assert ("create_execution_context", "ExecutionContextAllocationStrategy.USER_MANAGED") in calls
    assert ("set_optimization_profile_async", 1, session.pipeline.stream) in calls  # the static batch-1 profile
    stream = np.concatenate(waves)
    for start in range(0, 32001, 8000):
        out = session.classify(lambda a, b: stream[a:b], start, start + 16000)
        assert np.array_equal(engine._inputs[-1][0], model(stream[start:start + 16000]))
        assert np.array_equal(out, engine._logits(engine._inputs[-1])[0])
    assert session.frames_computed == num_frames(32000 + 16000)  # every frame once
    timer = EngineEventTimer.attach(backend)
    backend.run(model(np.stack(waves[:2])))
    assert timer is not None and timer.take() == pytest.approx(0.25)  # the double's elapsed time
    backend.close()
    assert cuda.live() == {}


def test_backend_without_the_fbank_library_computes_features_on_the_host(doubles, rng, tmp_path):
    folder, cuda, driver, use = doubles
    trt, _ = use("10.8.0.43")
    eng.build_engine(folder / "model.onnx", profiles.load_profile("jetson-orin-nano"), log=lambda m: None)
    backend = trt_backend.TensorRTBackend(folder, trt=trt, driver=driver, fbank_library=tmp_path / "missing.so")
    waves = [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(3)]
    with pytest.warns(RuntimeWarning, match="CUDA fbank unavailable"):
        logits = backend.run_audio(waves)
    config = backend.feature_config
    assert np.array_equal(logits, backend.run(np.stack([F_model_input(w, config) for w in waves])))
    with pytest.warns(RuntimeWarning, match="CUDA fbank unavailable"):
        assert backend.open_stream(Windowing.from_seconds(config, 1.0, 0.5)) is None  # the listener's host path
    backend.close()
    assert cuda.live() == {}


def test_engine_runner_construction_failure_releases_everything(doubles):
    folder, cuda, driver, use = doubles
    trt, _ = use("10.3.0")
    eng.build_engine(folder / "model.onnx", profiles.load_profile("jetson-orin-nano"), log=lambda m: None)
    data = (folder / "model.plan").read_bytes()
    runner = trt_backend.EngineRunner(data, trt, driver)
    runner.run(np.zeros((1, 128, 128), np.float32))
    cuda.fail["cuMemFree_v2"] = 1
    with pytest.raises(cd.CudaError):
        runner.close()
    del cuda.fail["cuMemFree_v2"]
    assert set(cuda.live()) == {"memory"} and not cuda.streams  # the stream went although a free failed
    cuda.memory.clear()
    cuda.fail["cuStreamCreate"] = 2  # the pipeline cannot start: nothing stays allocated
    runner = trt_backend.EngineRunner(data, trt, driver)
    with pytest.raises(cd.CudaError):
        runner.run(np.zeros((1, 128, 128), np.float32))
    runner.close()
    assert cuda.live() == {}


def test_comparison_figures_and_batches():
    ref = np.array([[3.0, 2, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5]])
    same = verify.compare(ref, ref)
    assert same["max_abs_diff"] == 0 and same["top1_agreement"] == 1 and same["top5_agreement"] == 1
    swapped = verify.compare(ref, ref[:, [0, 1, 2, 3, 5, 4]])
    assert swapped["top1_agreement"] == 0.5 and swapped["top5_agreement"] == pytest.approx(0.9)
    assert verify.fp16_gate(same) is None
    assert "non-finite" in verify.fp16_gate(verify.compare(ref, np.full_like(ref, np.nan)))
    assert [(c.start, c.stop) for c in verify.batch_chunks(8, 3)] == [(0, 1), (1, 4), (4, 7), (7, 8)]
    assert [(c.start, c.stop) for c in verify.batch_chunks(5, 4, 2)] == [(0, 2), (2, 5)]
    assert [(c.start, c.stop) for c in verify.batch_chunks(3, 2, 2)] == [(0, 2), (1, 3)]  # tail overlaps: >= min


# --- a real engine: only where TensorRT and a GPU exist ------------------------------------------------


def _tensorrt_usable() -> bool:
    ok, _ = eng.tensorrt_status()
    return ok


SMALL_PROFILE = dict(name="test", min_batch=1, opt_batch=2, max_batch=4, workspace_mib=1024, builder_optimization_level=1)
NEEDS_TENSORRT = pytest.mark.skipif(not _tensorrt_usable(), reason="needs the TensorRT Python bindings and a CUDA GPU")


@pytest.fixture(scope="module")
def real_engine(exported, tmp_path_factory):
    """A copy of the export folder with a real engine built in it, and build-engine's summary."""
    import shutil

    folder = tmp_path_factory.mktemp("real-engine") / "kws"
    shutil.copytree(exported[0], folder)
    summary = eng.build_engine(folder / "model.onnx", profiles.DeviceProfile(**SMALL_PROFILE),
                               timing_cache=folder.parent / "cache", log=lambda m: None)
    return folder, summary


@pytest.mark.tensorrt
@NEEDS_TENSORRT
def test_real_engine_build_and_run(real_engine):
    folder, summary = real_engine
    figures = summary["verification"]
    assert figures["passed"] and figures["top1_agreement"] >= 0.875 and figures["max_abs_diff"] <= 5e-2
    meta = art.read_metadata(folder)
    assert meta["engine"]["tensorrt"] == summary["tensorrt"] and meta["files"]["engine"] == "model.plan"
    assert meta["engine"]["platform"]["machine"] and meta["engine"]["layer_precisions"]["layers"] > 0
    assert meta["engine"]["profiles"] == [[1, 2, 4], [1, 1, 1]] and (folder / eng.LAYERS_FILE).is_file()
    backend = trt_backend.TensorRTBackend(folder)
    data = np.load(folder / "verification.npz")
    logits = backend.run(data["fbank"][:3])
    assert logits.shape == (3, 10) and np.abs(logits - data["logits_onnx"][:3]).max() <= 5e-2
    # The device path: audio in, features written by the CUDA fbank into the binding, graphs on repeats.
    rng = np.random.default_rng(0)
    config = backend.feature_config
    waves = [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(4)]
    host = backend.run(np.stack([C.HostFbank(config)(w) for w in waves]))
    for _ in range(3):
        assert np.abs(backend.run_audio(waves) - host).max() <= 5e-3  # FP16 engine: inputs differ by <= 1 ulp of logf
    backend.close()
    with pytest.raises(UserError, match="already has an engine"):
        eng.build_engine(folder, profiles.DeviceProfile(**SMALL_PROFILE), log=lambda m: None)


@pytest.mark.tensorrt
@NEEDS_TENSORRT
@pytest.mark.skipif(C.find_library() is None, reason="live windows on the device need the CUDA fbank library "
                    "(cmake -B build && cmake --build build); without it the listener computes features on the host")
def test_real_engine_streams_live_windows_on_the_device(real_engine):
    folder, _ = real_engine
    backend = trt_backend.TensorRTBackend(folder)
    config = backend.feature_config
    session = backend.open_stream(Windowing.from_seconds(config, 1.0, 0.5))
    assert session is not None, "the CUDA fbank library is there, yet the device stream did not open"
    rng = np.random.default_rng(0)
    stream = np.concatenate([(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(4)])
    for start in range(0, 48001, 8000):
        out = session.classify(lambda a, b: stream[a:b], start, start + 16000)
        expected = backend.run(C.HostFbank(config)(stream[start:start + 16000])[None])[0]
        assert np.abs(out - expected).max() <= 5e-3
    backend.close()
