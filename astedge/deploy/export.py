"""``astedge export``: checkpoint -> verified ONNX (FP32 and FP16), optionally a TensorRT engine and a Triton model.

One function per target, each checked before anything is kept; the precision (``--precision``, or the device
profile's) says which ONNX files are written (:data:`astedge.precision.PRECISION_TABLE`):

- :func:`export_onnx`: torch's dynamo exporter at opset 18 with a dynamic batch (example batch 2,
  so the batch is never specialized to 1) and the checkpoint's fixed frame count, simplified with
  onnxslim, weights inline (external ``model.onnx.data`` only above protobuf's 2 GB), checked with
  ``onnx.checker`` (full check);
- ONNX Runtime (CPU) against PyTorch on deterministic inputs (:func:`verification_inputs`) in
  batches of 1 and 3: the export fails above :data:`FP32_TOLERANCE` max abs logit difference;
- :func:`astedge.deploy.onnx_fp16.convert_fp16`: FP16 compute, FP32 I/O and LayerNorm, against the FP32
  ONNX on ONNX Runtime (CPU; see :data:`FP16_CPU_NOTE` for what that run does and does not show);
- :func:`astedge.deploy.quantize.write_int8` for ``--precision int8``: Q/DQ INT8 calibrated on the user's audio, refused
  below a top-1 agreement with the FP32 ONNX on held-out clips of that audio;
- :func:`astedge.deploy.engine.build_engine` where TensorRT and a GPU are present (verified on the GPU);
- :func:`astedge.deploy.triton.write_model` for ``--triton-repo``.

Why opset 18: it is the dynamo exporter's native opset (torch 2.13-2.15 build a lower request at 18
and run a version converter, "which may not be successful"); it is >= 17, so LayerNorm is one
``LayerNormalization`` node (TensorRT's INormalizationLayer, which FP16 builds keep in FP32); it is
inside TensorRT 10.0-10.3's parser range (opsets 9-20; JetPack 6 ships 10.3) and far below opset
23, where attention would become the ``Attention`` op that only onnx-tensorrt >= 10.14 parses.

Everything is written into a temp folder beside the output and renamed into place at the end, so
an interrupted or failed export leaves nothing behind. Torch is imported only when exporting.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from astedge import artefact as art
from astedge.runtime.backends.onnxruntime import onnx_logits
from astedge.errors import UserError
from astedge.files import sha256_file
from astedge.deploy.profiles import DeviceProfile, resolve_profile
from astedge.precision import precision_spec, requested_precision
from astedge.verify import VerificationError, batch_chunks, compare, fp16_gate

OPSET = 18
#: The export fails when ONNX Runtime's FP32 logits differ from PyTorch's by more than this.
FP32_TOLERANCE = 1e-3
#: Above this many bytes of weights, model.onnx keeps them in model.onnx.data (protobuf's 2 GB cap).
EXTERNAL_DATA_BYTES = 1_800_000_000
VERIFY_COUNT = 8
FP16_CPU_NOTE = ("ONNX Runtime's CPU provider has no FP16 kernels for this graph's arithmetic (MatMul, Gemm, Conv, Add, "
                 "Mul, Div, Erf, Softmax; measured with onnxruntime 1.32): it runs them in FP32 behind inserted casts, and "
                 "only data movement (Reshape, Transpose, Split, Gather, Concat) sees FP16 tensors. This run checks the "
                 "FP16 graph (types, casts, FP16-rounded weights and activations) but not FP16 arithmetic; the engine's "
                 "figures on the GPU measure that.")


def _quiet():
    """Keep library chatter (exporter, onnxslim) off stdout, which belongs to --json."""
    return contextlib.redirect_stdout(sys.stderr)


def require_export_dependencies():
    """A :class:`UserError` naming what to install when the export's libraries are missing."""
    missing = []
    for module in ("torch", "onnx", "onnxruntime", "onnxslim", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UserError(f"astedge export needs {', '.join(missing)}: pip install 'astedge[train,export]' "
                        "(building an engine from an existing export needs only TensorRT: astedge build-engine)")


def export_onnx(net, path: str | Path):
    """Export an :class:`~astedge.model.ast_model.ASTModel` to `path` (opset 18, dynamic batch); returns the ModelProto."""
    import onnx
    import onnxslim
    import torch

    from astedge.model.ast_model import FlatOutput

    cfg = net.config
    example = torch.zeros(2, cfg.target_length, cfg.num_mel_bins)  # batch >= 2: never specialized to 1
    with _quiet(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(FlatOutput(net.eval()), (example,), dynamo=True, opset_version=OPSET,
                                    input_names=[art.INPUT_NAME], output_names=[art.OUTPUT_NAME],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                    external_data=False, verbose=False)
        model = onnxslim.slim(program.model_proto)
    save_onnx(model, path)
    onnx.checker.check_model(str(path), full_check=True)
    return model


def save_onnx(model, path: str | Path) -> list[str]:
    """Write `model`, weights inline unless they approach 2 GB; returns the file names written."""
    import onnx

    path = Path(path)
    weights = sum(len(init.raw_data) or 0 for init in model.graph.initializer)
    if weights < EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path))
        return [path.name]
    data = path.name + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=1024)
    return [path.name, data]


def graph_summary(model) -> dict:
    """Opset, I/O names with their dims (symbolic names for dynamic axes) and op counts of an ONNX model."""
    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": model.ir_version,
        "inputs": {i.name: dims(i) for i in model.graph.input},
        "outputs": {o.name: dims(o) for o in model.graph.output},
        "nodes": len(model.graph.node),
        "ops": dict(sorted(ops.items())),
    }


def verification_inputs(feature_config, count: int = VERIFY_COUNT, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """`count` deterministic model inputs ``[count, frames, mel]``: real fbank of synthetic sounds, then noise.

    The sounds (white noise, a tone, silence = the padding value everywhere, a chord, a chirp, clicks)
    go through :func:`astedge.features.fbank.model_input` with the checkpoint's feature config; further
    rows are N(0, 0.5) in feature space (the normalized features' nominal spread).
    """
    from astedge.features.fbank import model_input

    cfg = feature_config
    rng = np.random.default_rng(seed)
    samples = (cfg.target_length - 1) * cfg.window_shift + cfg.window_size
    t = np.arange(samples) / cfg.sample_rate
    seconds = samples / cfg.sample_rate
    clicks = np.zeros(samples)
    clicks[:: cfg.sample_rate // 4] = 0.9
    sounds = {
        "noise": 0.1 * rng.standard_normal(samples),
        "tone_440hz": 0.5 * np.sin(2 * np.pi * 440 * t),
        "gaussian_features": None,
        "silence": np.zeros(samples),
        "chord": sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 660.0, 1760.0)),
        "chirp_100_6000hz": 0.5 * np.sin(2 * np.pi * (100 * t + (6000 - 100) / (2 * seconds) * t ** 2)),
        "clicks": clicks,
    }
    rows, kinds = [], []
    for index in range(count):
        name = list(sounds)[index] if index < len(sounds) else f"gaussian_features_{index}"
        wave = sounds.get(name)
        if wave is None:
            rows.append(0.5 * rng.standard_normal((cfg.target_length, cfg.num_mel_bins)))
        else:
            rows.append(model_input(wave.astype(np.float32), cfg))
        kinds.append(name)
    return np.stack(rows).astype(np.float32), kinds


def _window_warning(profile: DeviceProfile, feature_config) -> list[str]:
    model_window = feature_config.target_length * feature_config.frame_shift_ms / 1000
    if profile.window_seconds is not None and \
            abs(profile.window_seconds - model_window) > feature_config.frame_shift_ms / 1000:
        return [f"profile {profile.name!r} aims at {profile.window_seconds:g} s windows but this model's input is "
                f"{feature_config.target_length} frames ({model_window:g} s); the runtime uses the model's window"]
    return []


def export(checkpoint_path: str | Path, out_dir: str | Path, *, profile: DeviceProfile | str | None = None,
           precision: str | None = None, fp16: bool | None = None, int8: bool = False, engine: bool | None = None,
           triton_repo: str | Path | None = None, triton_name: str | None = None, force: bool = False,
           verify_count: int = VERIFY_COUNT, typing: str = "auto", timing_cache: str | Path | None = None,
           classes: str | Path | None = None, renormalize: bool = False, thresholds: str | Path | None = None,
           calibration: str | Path | None = None, int8_min_agreement: float | None = None, log=None) -> dict:
    """Export a checkpoint into the artefact folder `out_dir` (see :mod:`astedge.artefact`); returns a summary.

    `precision` (fp32, fp16, int8; `fp16` and `int8` are its aliases, :func:`astedge.precision.requested_precision`)
    defaults to the profile's; it says which ONNX files are written (:data:`astedge.precision.PRECISION_TABLE`).
    `engine` None builds one when TensorRT and a GPU are usable here, True requires it, False skips it. `classes`
    (a file of names or indices) keeps only those outputs of the head, verified against the full model; on a
    single-label (softmax) model a subset renormalizes the scores over the kept classes, so it is refused unless
    `renormalize` says that is meant (then recorded, with a warning);
    `thresholds` (``astedge calibrate``'s file) go into ``astedge.json`` for the event decision layer. INT8 also
    writes ``model.int8.onnx`` and ``model.int8.fp16.onnx`` calibrated on the audio folder `calibration` and refused
    below `int8_min_agreement` top-1 agreement with FP32 on held-out clips. Raises :class:`UserError` for bad inputs
    (before any work) and :class:`astedge.verify.VerificationError` when a check fails (nothing written).
    """
    from astedge.deploy import engine as engine_mod
    from astedge.deploy import triton

    log = log or (lambda message: print(message, file=sys.stderr))
    profile = resolve_profile(profile, requested_precision(precision, fp16=fp16, int8=int8))
    out_dir = art.check_destination(out_dir, force)
    _check_int8_request(profile, calibration, int8_min_agreement)
    if triton_repo is not None:
        name = triton.model_name(triton_name or out_dir.resolve().name)
        triton.check_destination(triton_repo, name, force)
    if verify_count < 1:
        raise UserError("verify_count must be >= 1")
    full, checkpoint, per_class = _load_request(checkpoint_path, classes, thresholds, renormalize)
    engine = _engine_wanted(engine, log)
    require_export_dependencies()

    warnings_ = _window_warning(profile, checkpoint.feature_config) + _subset_warning(full, checkpoint)
    started = time.perf_counter()
    with art.staged_folder(out_dir, force) as tmp:
        meta = _new_metadata(checkpoint, checkpoint_path, profile)
        _write_models(tmp, meta, full, checkpoint, profile, verify_count, calibration, int8_min_agreement, log)
        if per_class is not None:
            meta["thresholds"] = per_class
        meta["warnings"] = warnings_
        art.write_metadata(tmp, meta)
        engine_summary = None
        if engine:
            engine_summary = engine_mod.build_engine(tmp, profile, force=True, typing=typing,
                                                     timing_cache=timing_cache, log=log)
        meta = art.read_metadata(tmp)
    triton_dir = None
    if triton_repo is not None:
        triton_dir = triton.write_model(triton_repo, name, out_dir, force=force)
    for warning in warnings_:
        log(f"warning: {warning}")
    return {"output": str(out_dir), "files": meta["files"], "precisions": meta["precisions"],
            "profile": profile.name, "verification": meta["verification"], "engine": engine_summary,
            "triton": str(triton_dir) if triton_dir else None, "warnings": warnings_,
            "seconds": round(time.perf_counter() - started, 2)}


def _load_request(checkpoint_path, classes, thresholds, renormalize: bool = False):
    """The checkpoint, the model exported from it (its `classes` subset, or itself) and the exported classes'
    `thresholds` (None without a thresholds file). A subset of a softmax head needs `renormalize`."""
    from astedge.model.checkpoint import load_checkpoint

    full = checkpoint = load_checkpoint(checkpoint_path)
    if classes is not None:
        from astedge.model.labels import read_class_subset

        checkpoint = full.with_classes(read_class_subset(classes, full.labels))
        dropped = [label for label in full.labels if label not in checkpoint.labels]
        if full.task == "multiclass" and dropped and not renormalize:
            raise UserError(f"keeps {len(checkpoint.labels)} of the {len(full.labels)} classes of a single-label "
                            f"(softmax) model: its scores would be renormalized over the kept ones, so audio of a "
                            f"dropped class ({', '.join(dropped[:3])}{', ...' if len(dropped) > 3 else ''}) would "
                            "score as a kept one; export every class and pick them at run time with --allow, or pass "
                            "--renormalize to mean it", classes)
    per_class = None
    if thresholds is not None:
        from astedge.runtime.events import read_thresholds

        per_class = {k: v for k, v in read_thresholds(thresholds, full.labels).items() if k in checkpoint.labels}
    return full, checkpoint, per_class


def _subset_warning(full, checkpoint) -> list[str]:
    """A renormalized softmax subset says so in the summary's warnings (and astedge.json's)."""
    if full.task != "multiclass" or len(checkpoint.labels) == len(full.labels):
        return []
    return [f"the {len(checkpoint.labels)} kept classes' softmax scores are renormalized over them (--renormalize): "
            f"audio of the {len(full.labels) - len(checkpoint.labels)} dropped classes scores as a kept class"]


def _new_metadata(checkpoint, checkpoint_path, profile: DeviceProfile) -> dict:
    from astedge.runtime.frames import FrameLayout, frame_activation

    config = checkpoint.model_config
    frames = None
    if config.frame_head:
        activation = frame_activation(checkpoint.task, checkpoint.events.get("background"))
        frames = {**FrameLayout.of(config, checkpoint.feature_config).to_dict(), "activation": activation}
    return art.new_metadata(
        labels=checkpoint.labels, task=checkpoint.task, model_config=config.to_dict(),
        feature_config=checkpoint.feature_config.to_dict(), profile=profile.to_dict(),
        source={"checkpoint": str(Path(checkpoint_path).resolve()), "sha256": sha256_file(Path(checkpoint_path)),
                "provenance": checkpoint.provenance}, output_width=config.output_width, frames=frames,
        events=checkpoint.events)


def _write_models(tmp: Path, meta: dict, full, checkpoint, profile: DeviceProfile, verify_count: int, calibration,
                  int8_min_agreement, log) -> None:
    """Every file the profile's precision exports (:data:`astedge.precision.PRECISION_TABLE`), each verified, then
    verification.npz and labels.txt; `meta` records them."""
    exports = precision_spec(profile.precision).exports
    net = checkpoint.build_model()
    inputs, kinds = verification_inputs(checkpoint.feature_config, verify_count)
    meta["verification"] = {"inputs": {"file": art.VERIFICATION_FILE, "count": len(inputs), "kinds": kinds}}
    if checkpoint is not full:  # a class subset
        meta["classes"] = _check_subset(full, checkpoint, net, inputs, log)
    model, arrays = _write_fp32(net, inputs, tmp, meta, log)
    if "onnx_fp16" in exports:
        arrays["logits_onnx_fp16"] = _write_fp16(model, inputs, arrays["logits_onnx"], profile, tmp, meta,
                                                 len(checkpoint.labels), log)
    if "onnx_int8" in exports:
        _write_int8(tmp, checkpoint, profile, calibration, int8_min_agreement, meta, log)
        arrays["logits_onnx_int8"] = onnx_logits(tmp / art.ONNX_INT8_FILE, inputs,
                                                 batch_chunks(len(inputs), max_batch=3))
    art.save_arrays(tmp / art.VERIFICATION_FILE, **arrays)
    meta["files"]["verification"] = art.VERIFICATION_FILE
    (tmp / art.LABELS_FILE).write_text("".join(label + "\n" for label in checkpoint.labels), encoding="utf-8")
    meta["files"]["labels"] = art.LABELS_FILE


def _engine_wanted(engine: bool | None, log) -> bool:
    """None: build an engine when TensorRT and a GPU are usable here; True: require them; False: skip."""
    from astedge.deploy.engine import tensorrt_status

    if engine is False:
        return False
    ok, why_not = tensorrt_status()
    if engine and not ok:
        raise UserError(f"--engine needs TensorRT and a GPU here: {why_not}")
    if not ok:
        log(f"skipping the TensorRT engine ({why_not.split(';')[0]}); build it on the device with "
            "`astedge build-engine`")
    return ok


#: A class subset's logits must equal the full model's for those classes within this (float32 rounding).
SUBSET_TOLERANCE = 1e-4


def _check_subset(full, subset, net, inputs: np.ndarray, log) -> dict:
    """The subset model's logits against the full model's columns for the kept classes, on the verification inputs."""
    import torch

    with torch.no_grad():
        whole = full.build_model()(torch.from_numpy(inputs)).numpy()
        part = net(torch.from_numpy(inputs)).numpy()
    index = {label: i for i, label in enumerate(full.labels)}
    columns = [index[label] for label in subset.labels]
    diff = float(np.abs(whole[:, columns] - part).max())
    log(f"class subset: {len(columns)} of {len(full.labels)} outputs; logits vs the full model's: max abs diff "
        f"{diff:.3g}")
    if diff > SUBSET_TOLERANCE:
        raise VerificationError(f"the {len(columns)}-class head differs from the full model's outputs by {diff:.3g} "
                                    f"(> {SUBSET_TOLERANCE:g}); nothing was written")
    return {"from": len(full.labels), "kept": list(subset.labels), "indices": columns, "max_abs_diff": diff,
            "tolerance": SUBSET_TOLERANCE, "passed": True}


def _write_fp32(net, inputs: np.ndarray, tmp: Path, meta: dict, log) -> tuple[object, dict]:
    """model.onnx, checked against PyTorch on the verification inputs; returns the ModelProto and the logits."""
    import onnx
    import onnxruntime
    import onnxslim
    import torch

    log(f"exporting ONNX (opset {OPSET}, dynamic batch, {net.config.target_length} frames)")
    model = export_onnx(net, tmp / art.ONNX_FILE)
    meta["files"]["onnx"] = art.ONNX_FILE
    meta["precisions"][art.ONNX_FILE] = "fp32"
    meta["onnx"] = {**graph_summary(model), "exporter": f"torch.onnx dynamo (torch {torch.__version__})",
                    "simplifier": f"onnxslim {onnxslim.__version__}", "onnx": onnx.__version__,
                    "weights": "external" if (tmp / (art.ONNX_FILE + ".data")).exists() else "inline"}
    with torch.no_grad():
        reference = net.forward_flat(torch.from_numpy(inputs)).numpy()
    chunks = batch_chunks(len(inputs), max_batch=3)
    onnx32 = onnx_logits(tmp / art.ONNX_FILE, inputs, chunks)
    fp32 = {**compare(reference, onnx32, net.config.num_classes), "reference": f"torch {torch.__version__} (CPU, FP32)",
            "runtime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
            "batches": [c.stop - c.start for c in chunks], "tolerance": FP32_TOLERANCE}
    fp32["passed"] = fp32["finite"] and fp32["max_abs_diff"] <= FP32_TOLERANCE
    meta["verification"]["onnx_fp32_vs_torch"] = fp32
    log(f"ONNX FP32 vs PyTorch: max abs diff {fp32['max_abs_diff']:.3g}, top-5 agreement "
        f"{fp32['top5_agreement']:.3f}")
    if not fp32["passed"]:
        raise VerificationError(f"ONNX Runtime FP32 logits differ from PyTorch by {fp32['max_abs_diff']:.3g} "
                                    f"(> {FP32_TOLERANCE:g}); nothing was written")
    return model, {"fbank": inputs, "logits_torch": reference.astype(np.float32), "logits_onnx": onnx32}


def _write_fp16(model, inputs: np.ndarray, onnx32: np.ndarray, profile: DeviceProfile, tmp: Path, meta: dict,
                classes: int, log) -> np.ndarray:
    """model.fp16.onnx, checked against the FP32 ONNX; returns its logits."""
    import onnx
    import onnxruntime

    from astedge.deploy.onnx_fp16 import convert_fp16, precision_report

    log(f"converting to FP16 (FP32 I/O; kept in FP32: {', '.join(profile.fp32_ops) or 'nothing'})")
    model16 = convert_fp16(model, profile.fp32_ops)
    save_onnx(model16, tmp / art.ONNX_FP16_FILE)
    onnx.checker.check_model(str(tmp / art.ONNX_FP16_FILE), full_check=True)
    meta["files"]["onnx_fp16"] = art.ONNX_FP16_FILE
    meta["precisions"][art.ONNX_FP16_FILE] = "fp16 (FP32 I/O and " + ", ".join(profile.fp32_ops) + ")"
    meta["onnx"]["fp16"] = precision_report(model16, profile.fp32_ops)
    chunks = batch_chunks(len(inputs), max_batch=3)
    onnx16 = onnx_logits(tmp / art.ONNX_FP16_FILE, inputs, chunks)
    runtime = f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"
    half = {**compare(onnx32, onnx16, classes), "reference": "model.onnx on " + runtime, "runtime": runtime,
            "batches": [c.stop - c.start for c in chunks], "note": FP16_CPU_NOTE}
    failure = fp16_gate(half)
    half["passed"] = failure is None
    meta["verification"]["onnx_fp16_vs_onnx_fp32"] = half
    log(f"ONNX FP16 vs FP32: max abs diff {half['max_abs_diff']:.3g}, top-1 agreement {half['top1_agreement']:.3f}")
    if failure:
        raise VerificationError(f"the FP16 ONNX fails verification: {failure}; nothing was written "
                                    "(export with --no-fp16, or keep more ops in FP32 in the profile)")
    return onnx16


def _check_int8_request(profile: DeviceProfile, calibration, min_agreement) -> None:
    """Fail before any work: INT8 needs a readable folder of audio and a sensible agreement threshold; the other
    precisions take neither."""
    from astedge.audio.decode import audio_files, audio_info

    if profile.precision != "int8":
        if calibration is not None or min_agreement is not None:
            raise UserError("--calibration and --int8-min-agreement are for INT8 exports: add --int8 (or --precision int8)")
        return
    if calibration is None:
        raise UserError("INT8 export needs calibration audio: --calibration AUDIO_DIR (clips from the model's domain)")
    for path in audio_files(calibration, "calibration folder"):
        audio_info(path)  # an unreadable clip is refused now, not after minutes of export
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise UserError(f"--int8-min-agreement must be a fraction in [0, 1], got {min_agreement}")


def _write_int8(tmp: Path, checkpoint, profile: DeviceProfile, calibration, min_agreement, meta: dict, log) -> None:
    """model.int8.onnx and model.int8.fp16.onnx, each refused below the agreement gate against model.onnx."""
    from astedge.deploy.quantize import DEFAULT_MIN_AGREEMENT, write_int8

    result = write_int8(tmp / art.ONNX_FILE, tmp / art.ONNX_INT8_FILE, calibration, checkpoint.feature_config,
                        fp16_path=tmp / art.ONNX_INT8_FP16_FILE, fp32_ops=profile.fp32_ops,
                        classes=len(checkpoint.labels),
                        min_agreement=DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement, log=log)
    meta["files"]["onnx_int8"] = art.ONNX_INT8_FILE
    meta["files"]["onnx_int8_fp16"] = art.ONNX_INT8_FP16_FILE
    meta["precisions"][art.ONNX_INT8_FILE] = "int8 (Q/DQ GEMMs; float parts FP32)"
    meta["precisions"][art.ONNX_INT8_FP16_FILE] = ("int8 (Q/DQ GEMMs; float parts FP16, FP32 I/O and "
                                                   + ", ".join(profile.fp32_ops) + ")")
    meta["onnx"]["int8"] = result["quantization"]
    meta["verification"]["onnx_int8_vs_onnx_fp32"] = result["verification"]
    meta["verification"]["onnx_int8_fp16_vs_onnx_fp32"] = result["verification_fp16"]
