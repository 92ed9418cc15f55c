"""Export: ONNX (FP32/FP16) against PyTorch and ONNX Runtime, the artefact folder, Triton, device profiles,
and the TensorRT 10/11 build paths against a recording test double of the tensorrt API (no engine is faked:
real engines are built only by the `tensorrt`-marked test, on a machine with TensorRT and a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from astedge import artefact as art
from astedge import engine as eng
from astedge import export as exp
from astedge import profiles, triton
from astedge.backends import tensorrt as trt_backend
from astedge.checkpoint import load_checkpoint, save_checkpoint
from astedge.errors import UserError
from astedge.features import FbankConfig
from astedge.model import ASTModel, model_config
from astedge.onnx_fp16 import convert_fp16, float_types
from conftest import TORCH_STACK, run_without_torch

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
    with pytest.raises(art.VerificationError, match="nothing was written"):
        exp.export(checkpoint, tmp_path / "failed", engine=False, log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_export_json(checkpoint, tmp_path):
    result = cli("export", str(checkpoint), "-o", str(tmp_path / "a"), "--no-fp16", "--no-engine", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is only the JSON
    assert summary["files"]["onnx"] == "model.onnx" and summary["engine"] is None
    assert summary["verification"]["onnx_fp32_vs_torch"]["passed"]


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
        "import astedge.cli, astedge.engine, astedge.backends.tensorrt, astedge.triton, astedge.profiles\n"
        "import astedge.artefact, astedge.export, astedge.onnx_fp16\n"
        "from astedge.errors import UserError\n"
        "assert astedge.profiles.load_profile('jetson-orin-nano').max_batch == 2\n"
        "try:\n"
        f"    astedge.engine.build_engine({str(folder / 'model.onnx')!r})\n"
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
                           ('[engine]\nprecision = "int8"\n', "precision must be"),
                           ('[engine]\nbuilder_optimization_level = 7\n', "0..5"),
                           ('precision = "fp16"\n', "unknown profile key 'precision'"),
                           ("[engine\n", "not valid TOML")]:
        path.write_text(body)
        with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
            profiles.load_profile(path)
    with pytest.raises(UserError, match="does not exist"):
        profiles.load_profile(tmp_path / "none.toml")


# --- the TensorRT paths, against a recording double of the tensorrt API ----------------------------

FILES = {"onnx": "model.onnx", "onnx_fp16": "model.fp16.onnx"}


def test_plan_build_chooses_the_path_by_version():
    weak = eng.plan_build("10.3.0", "fp16", FILES)
    assert (weak.typing, weak.onnx_file, weak.network_flags) == ("weak", "model.onnx", ())
    assert weak.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and weak.fp32_layer_types == ("NORMALIZATION",)
    strong10 = eng.plan_build("10.3.0", "fp16", FILES, typing="strong")
    assert (strong10.onnx_file, strong10.network_flags, strong10.builder_flags) == ("model.fp16.onnx", ("STRONGLY_TYPED",), ())
    strong11 = eng.plan_build("11.4.0.106", "fp16", FILES)
    assert (strong11.typing, strong11.onnx_file, strong11.network_flags, strong11.builder_flags,
            strong11.fp32_layer_types) == ("strong", "model.fp16.onnx", (), (), ())
    fp32 = eng.plan_build("11.4.0.106", "fp32", FILES)
    assert (fp32.onnx_file, fp32.builder_flags) == ("model.onnx", ())
    assert eng.plan_build("10.16.1.11", "fp32", FILES).builder_flags == ()
    with pytest.raises(UserError, match="no weak typing"):
        eng.plan_build("11.4.0.106", "fp16", FILES, typing="weak")
    with pytest.raises(UserError, match="re-export with --fp16"):
        eng.plan_build("11.4.0.106", "fp16", {"onnx": "model.onnx"})
    with pytest.raises(UserError, match="too old"):
        eng.plan_build("8.6.2", "fp16", FILES)


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)


def fake_tensorrt(version: str, layers=("NORMALIZATION", "MATRIX_MULTIPLY", "NORMALIZATION"), parse_ok=True,
                  build_ok=True):
    """A stand-in for the `tensorrt` module that records the builder calls; names follow the real bindings.

    TensorRT 11 lacks BuilderFlag.FP16/OBEY_PRECISION_CONSTRAINTS and per-layer precision (layers use
    __slots__, so setting `precision` raises like the real binding's missing attribute would).
    """
    major = int(version.split(".")[0])
    log = _Recorder()
    flag_names = ["TF32", "VERSION_COMPATIBLE"] + (["FP16", "OBEY_PRECISION_CONSTRAINTS",
                                                    "PREFER_PRECISION_CONSTRAINTS"] if major < 11 else [])
    t = types.SimpleNamespace(__version__=version, float32="float32", float16="float16")
    t.BuilderFlag = types.SimpleNamespace(**{n: f"BuilderFlag.{n}" for n in flag_names})
    t.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1 if major < 11 else 0)
    t.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    t.LayerType = types.SimpleNamespace(NORMALIZATION="NORMALIZATION", MATRIX_MULTIPLY="MATRIX_MULTIPLY")
    t.HardwareCompatibilityLevel = types.SimpleNamespace(
        NONE="NONE", AMPERE_PLUS="AMPERE_PLUS", **({"SAME_COMPUTE_CAPABILITY": "SCC"} if major >= 11 else {}))

    class Layer10:
        def __init__(self, kind, index):
            self.type, self.name, self.num_outputs = kind, f"layer{index}", 1

        def __setattr__(self, key, value):
            if key == "precision":
                log("layer.precision", self.name, value)
            object.__setattr__(self, key, value)

        def set_output_type(self, index, dtype):
            log("layer.set_output_type", self.name, index, dtype)

    class Layer11:
        __slots__ = ("type", "name", "num_outputs")

        def __init__(self, kind, index):
            self.type, self.name, self.num_outputs = kind, f"layer{index}", 1

    layer_class = Layer10 if major < 11 else Layer11

    class Network:
        num_inputs = 1
        num_layers = len(layers)

        def get_input(self, index):
            return types.SimpleNamespace(name="fbank")

        def get_layer(self, index):
            return layer_class(layers[index], index)

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            log("OnnxParser")

        def parse_from_file(self, path):
            log("parse_from_file", Path(path).name)
            return parse_ok

        def get_error(self, index):
            return "In node 3 (parseGraph): INVALID_NODE: unsupported op"

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"timing:" + bytes(self.data)

    class Config:
        def __setattr__(self, key, value):
            log("config." + key, value)

        def set_memory_pool_limit(self, pool, size):
            log("set_memory_pool_limit", pool, size)

        def set_flag(self, flag):
            log("set_flag", flag)

        def add_optimization_profile(self, profile):
            log("add_optimization_profile")

        def create_timing_cache(self, data):
            log("create_timing_cache", bytes(data))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            log("set_timing_cache", ignore_mismatch)
            object.__setattr__(self, "_cache", cache)
            return True

        def get_timing_cache(self):
            return self._cache

    class Profile:
        def set_shape(self, name, low, opt, high):
            log("set_shape", name, low, opt, high)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            log("create_network", flags)
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            log("build_serialized_network")
            return b"serialized by the test double" if build_ok else None

    t.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity=2: None})
    t.Builder, t.OnnxParser = Builder, Parser
    return t, log.calls


def _build(trt, tmp_path, typing="auto", profile=None, **kwargs):
    profile = profile or profiles.load_profile("jetson-orin-agx")
    plan = eng.plan_build(trt.__version__, profile.precision, FILES, typing)
    return eng.build_serialized(trt, tmp_path / plan.onnx_file, plan, profile, "fbank", (1024, 128),
                                tmp_path / "timing.cache", log=lambda m: None, **kwargs)


def test_tensorrt_10_builds_weakly_typed_with_fp32_layernorm(tmp_path):
    trt, calls = fake_tensorrt("10.3.0")
    data, info = _build(trt, tmp_path)
    assert data == b"serialized by the test double"
    assert ("create_network", 0) in calls and ("parse_from_file", "model.onnx") in calls
    assert ("set_flag", "BuilderFlag.FP16") in calls and ("set_flag", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS") in calls
    pinned = [c for c in calls if c[0].startswith("layer.")]
    assert pinned == [("layer.precision", "layer0", "float32"), ("layer.set_output_type", "layer0", 0, "float32"),
                      ("layer.precision", "layer2", "float32"), ("layer.set_output_type", "layer2", 0, "float32")]
    assert info["fp32_pinned_layers"] == 2
    assert ("set_memory_pool_limit", "WORKSPACE", 4096 << 20) in calls
    assert ("config.builder_optimization_level", 3) in calls
    assert not [c for c in calls if c[0] == "config.hardware_compatibility_level"]
    assert ("set_shape", "fbank", (1, 1024, 128), (1, 1024, 128), (4, 1024, 128)) in calls
    assert calls.index(("add_optimization_profile",)) < calls.index(("build_serialized_network",))
    assert ("create_timing_cache", b"") in calls and ("set_timing_cache", False) in calls
    assert (tmp_path / "timing.cache").read_bytes() == b"timing:" and not info["timing_cache_reused"]
    # A second build reuses the persisted cache.
    trt2, calls2 = fake_tensorrt("10.3.0")
    _, info2 = _build(trt2, tmp_path)
    assert ("create_timing_cache", b"timing:") in calls2 and info2["timing_cache_reused"]


def test_tensorrt_10_strong_typing_uses_the_flag_and_the_fp16_onnx(tmp_path):
    trt, calls = fake_tensorrt("10.3.0")
    _build(trt, tmp_path, typing="strong")
    assert ("create_network", 1 << 1) in calls and ("parse_from_file", "model.fp16.onnx") in calls
    assert not [c for c in calls if c[0] in ("set_flag", "layer.precision")]


def test_tensorrt_11_builds_strongly_typed_from_the_fp16_onnx(tmp_path):
    trt, calls = fake_tensorrt("11.4.0.106")
    compat = profiles.DeviceProfile(name="x", max_batch=8, opt_batch=2, hardware_compatibility="same_compute_capability")
    data, info = _build(trt, tmp_path, profile=compat)  # Layer11 has no `precision`: touching it would raise
    assert data == b"serialized by the test double" and info["fp32_pinned_layers"] == 0
    assert ("create_network", 0) in calls and ("parse_from_file", "model.fp16.onnx") in calls
    assert not [c for c in calls if c[0] == "set_flag"]
    assert ("config.hardware_compatibility_level", "SCC") in calls
    assert ("set_shape", "fbank", (1, 1024, 128), (2, 1024, 128), (8, 1024, 128)) in calls


def test_tensorrt_build_failures_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot parse the ONNX: In node 3"):
        _build(fake_tensorrt("10.3.0", parse_ok=False)[0], tmp_path)
    with pytest.raises(UserError, match="could not build the engine"):
        _build(fake_tensorrt("11.4.0.106", build_ok=False)[0], tmp_path)
    with pytest.raises(UserError, match="found no LayerNorm"):
        _build(fake_tensorrt("10.3.0", layers=("MATRIX_MULTIPLY",))[0], tmp_path)
    compat = profiles.DeviceProfile(name="x", hardware_compatibility="same_compute_capability")
    with pytest.raises(UserError, match="no hardware compatibility level"):  # not in TensorRT 10.3
        _build(fake_tensorrt("10.3.0")[0], tmp_path, profile=compat)
    assert not (tmp_path / "timing.cache").exists()


def test_engine_compatibility_check():
    engine = {"tensorrt": "10.3.0", "gpu": {"name": "Orin", "compute_capability": "8.7"}, "hardware_compatibility": "none"}
    assert trt_backend.check_engine_compatible(engine, "10.3.0", {"name": "Orin", "compute_capability": "8.7"}) == []
    with pytest.raises(UserError, match="TensorRT 10.3.0 for Orin.*TensorRT 10.3.1.*rebuild it on this device"):
        trt_backend.check_engine_compatible(engine, "10.3.1", {"name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(UserError, match="specific to a GPU architecture; rebuild"):
        trt_backend.check_engine_compatible(engine, "10.3.0", {"name": "NVIDIA RTX 4090", "compute_capability": "8.9"})
    warnings = trt_backend.check_engine_compatible(engine, "10.3.0", {"name": "Other sm87", "compute_capability": "8.7"})
    assert len(warnings) == 1 and "same compute capability" in warnings[0]
    portable = {**engine, "hardware_compatibility": "ampere_plus"}
    assert trt_backend.check_engine_compatible(portable, "10.3.0", {"name": "A100", "compute_capability": "8.0"}) == []


def test_backend_without_engine_says_build_it(exported):
    folder, _ = exported
    with pytest.raises(UserError, match="has no TensorRT engine; build one on this device"):
        trt_backend.TensorRTBackend(folder)


def test_cuda_runtime_search(monkeypatch, tmp_path):
    monkeypatch.setenv(trt_backend.CUDART_ENV_VAR, str(tmp_path / "libcudart.so.99"))
    candidates = trt_backend.cudart_candidates()
    assert candidates[0] == str(tmp_path / "libcudart.so.99") and "libcudart.so.12" in candidates
    try:
        trt_backend.CudaRuntime()
    except UserError as err:  # no library, or a library without a usable GPU: one clear line
        assert "libcudart" in str(err) or "no usable CUDA GPU" in str(err)


def test_comparison_figures_and_batches():
    ref = np.array([[3.0, 2, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5]])
    same = art.compare(ref, ref)
    assert same["max_abs_diff"] == 0 and same["top1_agreement"] == 1 and same["top5_agreement"] == 1
    swapped = art.compare(ref, ref[:, [0, 1, 2, 3, 5, 4]])
    assert swapped["top1_agreement"] == 0.5 and swapped["top5_agreement"] == pytest.approx(0.9)
    assert art.fp16_gate(same) is None
    assert "non-finite" in art.fp16_gate(art.compare(ref, np.full_like(ref, np.nan)))
    assert [(c.start, c.stop) for c in art.batch_chunks(8, 3)] == [(0, 1), (1, 4), (4, 7), (7, 8)]
    assert [(c.start, c.stop) for c in art.batch_chunks(5, 4, 2)] == [(0, 2), (2, 5)]
    assert [(c.start, c.stop) for c in art.batch_chunks(3, 2, 2)] == [(0, 2), (1, 3)]  # tail overlaps: >= min


# --- a real engine: only where TensorRT and a GPU exist ------------------------------------------------


def _tensorrt_usable() -> bool:
    ok, _ = eng.tensorrt_status()
    return ok


@pytest.mark.tensorrt
@pytest.mark.skipif(not _tensorrt_usable(), reason="needs the TensorRT Python bindings and a CUDA GPU")
def test_real_engine_build_and_run(exported, tmp_path):
    import shutil

    folder = tmp_path / "kws"
    shutil.copytree(exported[0], folder)
    small = profiles.DeviceProfile(name="test", min_batch=1, opt_batch=2, max_batch=4, workspace_mib=1024,
                                   builder_optimization_level=1)
    summary = eng.build_engine(folder / "model.onnx", small, timing_cache=tmp_path / "cache", log=lambda m: None)
    figures = summary["verification"]
    assert figures["passed"] and figures["top1_agreement"] >= 0.875 and figures["max_abs_diff"] <= 5e-2
    meta = art.read_metadata(folder)
    assert meta["engine"]["tensorrt"] == summary["tensorrt"] and meta["files"]["engine"] == "model.plan"
    backend = trt_backend.TensorRTBackend(folder)
    data = np.load(folder / "verification.npz")
    logits = backend.run(data["fbank"][:3])
    assert logits.shape == (3, 10) and np.abs(logits - data["logits_onnx"][:3]).max() <= 5e-2
    backend.close()
    with pytest.raises(UserError, match="already has an engine"):
        eng.build_engine(folder, small, log=lambda m: None)
