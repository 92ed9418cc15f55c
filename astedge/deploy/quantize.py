"""Explicit INT8: FP32 ``model.onnx`` -> ``model.int8.onnx`` with QuantizeLinear/DequantizeLinear (Q/DQ) nodes.

One file for two runtimes: TensorRT 10 and 11 build INT8 engines from it by *explicit quantization* (:func:`astedge.deploy.engine.plan_build`)
(the Q/DQ nodes say where INT8 is used; TensorRT 11 has no other INT8 path), and ONNX Runtime's CPU
provider runs it (it fuses DQ -> MatMul into integer kernels). Only onnx, onnxruntime and numpy: no torch.

Quantizer: ONNX Runtime's ``quantize_static`` (QDQ format), not NVIDIA ModelOpt's ONNX PTQ, which
TensorRT recommends. Measured on two trained ASTs (``benchmarks/int8_compare.py``,
``benchmarks/results/int8-cpu-*.md``): ModelOpt 0.47 needs torch, onnx 1.21 (a downgrade from the
1.23 astedge exports with) and onnxruntime-gpu beside onnxruntime (two wheels owning one module), so it
cannot be a dependency of the export without breaking the ones it has; its graph is FP16 with INT8
GEMMs, which ONNX Runtime's CPU provider runs slower than FP32. ``quantize_static`` is the same
calibrator ModelOpt itself wraps (ModelOpt patches ORT's ``quantize_static``); what ModelOpt adds is
the placement, which is written down here with TensorRT's rules instead.

Placement, and why:

- Q/DQ on the inputs of MatMul and Gemm only (QKV, projection, MLP and head GEMMs: nearly all FLOPs).
  Weights are INT8 initializers with a per-output-channel DequantizeLinear (MatMul ``[K, N]``: axis 1;
  Gemm with ``transB``: axis 0); TensorRT takes pre-quantized weights behind a DQ, and the file is
  about 4x smaller. Activations per tensor. Everything symmetric (zero point 0, INT8, never UINT8):
  the only form TensorRT's ONNX parser accepts.
- No Q/DQ reaches LayerNormalization or Softmax: residual Adds are not quantized, so the residual
  stream (where transformers keep their outlier channels) and LayerNorm's input stay float. Outputs
  of the GEMMs are not quantized either (``OpTypesToExcludeOutputQuantization``): bias Add, GELU and
  the residual Add stay float, as TensorRT fuses them into the INT8 GEMM's epilogue.
- The patch embedding (the one Conv) stays float: it reads the raw fbank, its error reaches every
  token, and it is about 1 % of the FLOPs.
- The attention MatMuls (Q.K^T and softmax.V) get Q/DQ only when the sequence is at most
  :data:`INT8_MHA_TOKENS` tokens: TensorRT's fused INT8 attention needs S <= 512, and above that INT8
  attention runs as three unfused kernels, slower than FP16 (NVIDIA/TensorRT #3714). AST at 10/10 x
  1024 has 1214 tokens: its attention stays float there.

Calibration: activation ranges from real audio (a folder; :func:`calibration_inputs`), MinMax by
default (measured best here, see the results file); the INT8 model is then checked against FP32 on
held-out clips of the same folder and refused below a top-1 agreement threshold
(:func:`check_agreement`, default 99 %). Outputs are written to a temp file and renamed. The node groups
and the check that a result is what TensorRT takes (:func:`astedge.deploy.qdq_graph.qdq_report`) read the graph
in :mod:`astedge.deploy.qdq_graph`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from astedge import artefact as art
from astedge.errors import UserError
from astedge.deploy.qdq_graph import GROUPS, LINEAR_OPS, attention_shape, node_groups, qdq_report
from astedge.verify import VerificationError, compare

INT8_FILE = art.ONNX_INT8_FILE
#: The same INT8 graph with its float parts in FP16 (LayerNorm FP32): for strongly typed TensorRT builds.
INT8_FP16_FILE = art.ONNX_INT8_FP16_FILE
#: QuantizeLinear/DequantizeLinear take FP16 tensors and scales from opset 19.
FP16_QDQ_OPSET = 19
#: The INT8 model is refused below this top-1 agreement with FP32 on held-out calibration clips.
DEFAULT_MIN_AGREEMENT = 0.99
#: TensorRT's fused INT8 multi-head attention needs sequences of at most this many tokens.
INT8_MHA_TOKENS = 512
#: Kept float by default. The attention MatMuls too, at any length: on the trained keyword model (66 tokens)
#: INT8 attention cost 0.7 % held-out and 3.8 % cross-engine top-1 agreement for no CPU speed
#: (benchmarks/results/int8-cpu-*.md); drop "attention" to quantize it where TensorRT's fused INT8
#: attention applies (<= INT8_MHA_TOKENS), and the agreement gate still judges the result.
DEFAULT_EXCLUDE = ("patch_embed", "attention")
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
DEFAULT_METHOD = "minmax"
DEFAULT_CALIBRATION_CLIPS = 256
DEFAULT_HELD_OUT_CLIPS = 200
#: Fewer readable clips than this (calibration + held out) is refused.
MIN_CLIPS = 20
#: Calibration clips per ONNX Runtime call, at most; and the attention-score bytes a call may hold.
CALIBRATION_BATCH = 8
CALIBRATION_SCORE_BYTES = 256 << 20


def _log(log):
    return log or (lambda message: print(message, file=sys.stderr))


# --- calibration audio ------------------------------------------------------------------------------------


def calibration_inputs(audio_dir: str | Path, feature_config, count: int = DEFAULT_CALIBRATION_CLIPS,
                       held_out: int = DEFAULT_HELD_OUT_CLIPS, seed: int = 0, log=None) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs ``[n, frames, mel]`` from a folder of audio: (calibration, held out), disjoint.

    Files are taken in a seeded random order until ``count + held_out`` are read; each gives its first
    model window (:func:`astedge.features.fbank.model_input`: cut or padded to the model's frames). With fewer
    files both parts shrink in proportion. Unreadable files are skipped and summarized in one log line;
    a missing or empty folder, one with no readable audio, or fewer than :data:`MIN_CLIPS` readable clips
    is a :class:`UserError` naming the folder.
    """
    from astedge.audio.decode import audio_files, load_audio
    from astedge.data.datasets import report_problems
    from astedge.features.fbank import model_input

    if count < 1 or held_out < 1:
        raise UserError("calibration and held-out clip counts must be >= 1")
    folder = Path(audio_dir)
    files = audio_files(folder, "calibration folder")
    wanted = count + held_out
    rows, problems = [], []
    for index in np.random.default_rng(seed).permutation(len(files)):
        if len(rows) >= wanted:
            break
        try:
            wave = load_audio(files[index], feature_config.sample_rate)
            rows.append(model_input(wave, feature_config))
        except UserError as err:
            problems.append(str(err))
    if problems:
        _log(log)(f"calibration: {report_problems(problems, 'unreadable files')}")
    if not rows:
        raise UserError(f"none of the {len(files)} audio files in the calibration folder could be read "
                        f"({problems[0]})", folder)
    if len(rows) < MIN_CLIPS:
        raise UserError(f"the calibration folder has {len(rows)} readable audio clip(s) (of {len(files)} files); "
                        f"INT8 calibration and its check need at least {MIN_CLIPS}", folder)
    n_held = held_out if len(rows) >= wanted else max(1, round(len(rows) * held_out / wanted))
    data = np.stack(rows).astype(np.float32)
    return data[n_held:n_held + count], data[:n_held]


def calibration_batch(score_elements: int) -> int:
    """Clips per calibration call: up to :data:`CALIBRATION_BATCH`, fewer when the attention scores are large. The
    calibration session keeps every activation (AST-base at 1214 tokens: 7 GB peak at batch 1 and 2, killed for
    memory at batch 8 on a 23 GB machine)."""
    if score_elements <= 0:
        return 1
    return int(max(1, min(CALIBRATION_BATCH, CALIBRATION_SCORE_BYTES // (4 * score_elements))))


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over an array, in batches."""

    def __init__(self, name: str, data: np.ndarray, batch: int):
        self.name, self.data, self.batch, self.start = name, data, batch, 0

    def get_next(self):
        if self.start >= len(self.data):
            return None
        chunk = self.data[self.start:self.start + self.batch]
        self.start += self.batch
        return {self.name: np.ascontiguousarray(chunk)}

    def __iter__(self):
        while (item := self.get_next()) is not None:
            yield item


def quantize_int8(onnx_in: str | Path, onnx_out: str | Path, calib_inputs: np.ndarray, *, tokens: int | None = None,
                  exclude=DEFAULT_EXCLUDE, method: str = DEFAULT_METHOD, preprocess: bool = False,
                  batch: int | None = None, log=None) -> dict:
    """Calibrate `onnx_in` on `calib_inputs` and write the Q/DQ model to `onnx_out` (atomically); returns a report.

    `exclude` names groups kept float (:data:`GROUPS`); "attention" is added when `tokens` (default: read
    from the graph) exceeds :data:`INT8_MHA_TOKENS`. `method`: minmax, entropy or percentile (99.999).
    `preprocess` runs ONNX Runtime's ``quant_pre_process`` first; `batch` (default :func:`calibration_batch`)
    is clips per calibration call. The result must pass ``onnx.checker`` and :func:`qdq_report` with no
    problems, else nothing is written.
    """
    import onnx
    import onnxruntime

    from astedge.files import atomic_write

    log = _log(log)
    calib_inputs = _check_quantize_request(calib_inputs, exclude, method)
    started = time.perf_counter()
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    model = onnx.load(str(onnx_in))
    found, score_elements = attention_shape(model)
    tokens = tokens if tokens is not None else found
    batch = batch or calibration_batch(score_elements)
    if (tokens is None or tokens > INT8_MHA_TOKENS) and "attention" not in exclude:
        exclude = tuple(exclude) + ("attention",)
    with tempfile.TemporaryDirectory(prefix="astedge-int8-") as tmp:
        source = onnx_in
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            source = Path(tmp) / "pre.onnx"
            quant_pre_process(str(onnx_in), str(source))
            model = onnx.load(str(source))
        groups = node_groups(model)
        excluded = sorted({name for group in exclude for name in groups.get(group, [])})
        quantized = sorted(name for group in GROUPS + ("weights",) if group not in exclude for name in groups[group]
                           if group != "patch_embed")
        out = Path(tmp) / "int8.onnx"
        _quantize_static(source, out, _Batches(model.graph.input[0].name, calib_inputs, batch), quantized, excluded,
                         method)
        report = _checked_qdq(out)
        with atomic_write(onnx_out) as handle:
            handle.write(out.read_bytes())
    seconds = time.perf_counter() - started
    log(f"INT8: Q/DQ on {len(quantized)} GEMMs ({report['per_channel_weights']}), kept float: "
        f"{', '.join(g for g in exclude) or 'nothing'}; calibrated on {len(calib_inputs)} clips ({method}) in "
        f"{seconds:.0f} s")
    return {
        "file": onnx_out.name, "bytes": onnx_out.stat().st_size,
        "quantizer": f"onnxruntime {onnxruntime.__version__} quantize_static (QDQ)", "onnx": onnx.__version__,
        "calibration": {"method": method, "clips": int(len(calib_inputs)), "batch": batch, "preprocess": preprocess},
        "weights": "int8, per output channel, symmetric", "activations": "int8, per tensor, symmetric (zero point 0)",
        "tokens": tokens, "kept_float": {group: groups.get(group, []) for group in exclude},
        "quantized_nodes": len(quantized), "graph": report, "seconds": round(seconds, 1),
    }


def _check_quantize_request(calib_inputs, exclude, method: str) -> np.ndarray:
    """The calibration inputs as float32 ``[clips, frames, mel]``; a :class:`UserError` for an unknown method or
    group, or inputs of another shape."""
    if method not in CALIBRATION_METHODS:
        raise UserError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    unknown = set(exclude) - set(GROUPS)
    if unknown:
        raise UserError(f"unknown groups to keep float: {', '.join(sorted(unknown))} (known: {', '.join(GROUPS)})")
    calib_inputs = np.asarray(calib_inputs, np.float32)
    if calib_inputs.ndim != 3 or not len(calib_inputs):
        raise UserError(f"calibration inputs must be [clips, frames, mel], got shape {calib_inputs.shape}")
    return calib_inputs


def _quantize_static(source: Path, out: Path, reader: "_Batches", quantized: list[str], excluded: list[str],
                     method: str) -> None:
    """ONNX Runtime's static QDQ quantization with astedge's placement: symmetric INT8, per-channel weights, Q/DQ on
    the inputs of `quantized` MatMul/Gemm nodes only, none on their outputs."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # Not CalibMaxIntermediateOutputs: onnxruntime 1.32's MinMax calibrator drops each full chunk unmerged
    # (the last chunk alone sets the ranges, or "No data is collected"); MinMax keeps only per-batch
    # ReduceMin/ReduceMax scalars anyway.
    options = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
               "OpTypesToExcludeOutputQuantization": list(LINEAR_OPS)}
    if method != "minmax":
        options["CalibTensorRangeSymmetric"] = True
    with contextlib.redirect_stdout(sys.stderr), _quiet_logging():
        quantize_static(str(source), str(out), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(LINEAR_OPS), per_channel=True, reduce_range=False,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_quantize=quantized,
                        nodes_to_exclude=excluded,
                        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
                        extra_options=options)


def _checked_qdq(path: Path) -> dict:
    """:func:`qdq_report` of the quantized graph at `path`, which must pass ``onnx.checker`` and have no problems."""
    import onnx

    result = onnx.load(str(path))
    onnx.checker.check_model(result, full_check=True)
    report = qdq_report(result)
    problems = report["problems"] + report["float_op_inputs"]
    if problems:  # a bug in this module or a changed quantizer, never the user's input
        raise RuntimeError(f"the INT8 graph is not what TensorRT's explicit quantization takes: {problems[0]} "
                           f"(and {len(problems) - 1} more); nothing was written")
    return report


@contextlib.contextmanager
def _quiet_logging():
    """quantize_static logs a pre-processing hint at WARNING on every call; keep it off the user's screen."""
    import logging

    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def int8_fp16(model, fp32_ops=None):
    """The Q/DQ `model` (a ModelProto) with its float parts in FP16, FP32 inputs/outputs and LayerNorm in FP32.

    Why: a strongly typed TensorRT network (the only kind on TensorRT 11) runs every float tensor in the type
    the ONNX gives it, so from ``model.int8.onnx`` the parts left float (attention over 512 tokens, Softmax,
    GELU, residual Adds) would run in FP32. This is ModelOpt's default output form: FP16 Q/DQ scales at
    opset 19 (the version converter lifts 18 -> 19: no op of this graph changes meaning). The pass is
    :func:`astedge.deploy.onnx_fp16.convert_fp16`, the same that makes ``model.fp16.onnx``.
    """
    import onnx
    import onnx.version_converter

    from astedge.deploy.onnx_fp16 import DEFAULT_FP32_OPS, convert_fp16

    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < FP16_QDQ_OPSET:
        model = onnx.version_converter.convert_version(model, FP16_QDQ_OPSET)
    return convert_fp16(model, DEFAULT_FP32_OPS if fp32_ops is None else fp32_ops)


# --- the check ----------------------------------------------------------------------------------------------


def _batches(count: int, batch: int = 4) -> list[slice]:
    return [slice(start, start + batch) for start in range(0, count, batch)]


def check_agreement(fp32_path: str | Path, int8_path: str | Path, held_out: np.ndarray,
                    min_agreement: float = DEFAULT_MIN_AGREEMENT, *, labels=None, what: str = "INT8 model",
                    classes: int | None = None) -> dict:
    """Top-1 agreement (and logit differences, accuracy when `labels` are given) of INT8 vs FP32 on `held_out`; the
    clip logits are the outputs' first `classes` columns (a frame head's follow; all columns when None).

    Raises :class:`astedge.verify.VerificationError` (one line, with the measured agreement) when the
    agreement is below `min_agreement`; a value above 1 always refuses.
    """
    if not min_agreement >= 0:
        raise UserError(f"the minimum INT8 agreement must be a fraction >= 0, got {min_agreement}")
    from astedge.runtime.backends.onnxruntime import onnx_logits

    chunks = _batches(len(held_out))
    fp32, int8 = onnx_logits(fp32_path, held_out, chunks), onnx_logits(int8_path, held_out, chunks)
    figures = {**compare(fp32, int8, classes), "reference": "FP32 ONNX on ONNX Runtime (CPU)",
               "inputs": f"{len(held_out)} held-out calibration clips", "min_agreement": min_agreement}
    if labels is not None:
        labels, width = np.asarray(labels), classes or fp32.shape[-1]
        figures["accuracy_fp32"] = float(np.mean(fp32[:, :width].argmax(-1) == labels))
        figures["accuracy_int8"] = float(np.mean(int8[:, :width].argmax(-1) == labels))
    figures["passed"] = bool(figures["finite"] and figures["top1_agreement"] >= min_agreement)
    if not figures["passed"]:
        measured = "non-finite logits" if not figures["finite"] else f"{figures['top1_agreement']:.2%}"
        raise VerificationError(f"the {what}'s top-1 agreement with FP32 on {len(held_out)} held-out calibration "
                                    f"clips is {measured}, below the required {min_agreement:.2%}; nothing was written "
                                    "(add calibration audio, or lower --int8-min-agreement)")
    return figures


def write_int8(fp32_path: str | Path, out_path: str | Path, audio_dir: str | Path, feature_config, *,
               fp16_path: str | Path | None = None, fp32_ops=None, min_agreement: float = DEFAULT_MIN_AGREEMENT,
               count: int = DEFAULT_CALIBRATION_CLIPS, held_out: int = DEFAULT_HELD_OUT_CLIPS,
               method: str = DEFAULT_METHOD, exclude=DEFAULT_EXCLUDE, seed: int = 0, classes: int | None = None,
               log=None) -> dict:
    """Calibrate, quantize and check (`classes`: the clip logits' columns, see :func:`check_agreement`): `out_path` (and `fp16_path`, the :func:`int8_fp16` graph, when given) appear
    only when every model written passed the agreement gate against FP32 on the held-out clips.

    Returns ``{"quantization": quantize_int8's report, "verification": check_agreement's figures}`` plus
    ``"verification_fp16"`` for the FP16 INT8 graph.
    """
    import onnx

    log = _log(log)
    out_path = Path(out_path)
    targets = [out_path] + ([Path(fp16_path)] if fp16_path is not None else [])
    for target in targets:
        if not target.parent.is_dir():
            raise UserError("output directory does not exist", target.parent)
    calib, held = calibration_inputs(audio_dir, feature_config, count, held_out, seed, log)
    log(f"INT8 calibration: {len(calib)} clips, {len(held)} held out, from {audio_dir}")
    temps = []
    try:
        for target in targets:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)
            temps.append(tmp)
        report = quantize_int8(fp32_path, temps[0], calib, exclude=exclude, method=method, log=log)
        result = {"quantization": report, "verification": check_agreement(fp32_path, temps[0], held, min_agreement,
                                                                                 classes=classes)}
        log(f"INT8 vs FP32 on {len(held)} held-out clips: top-1 agreement "
            f"{result['verification']['top1_agreement']:.3f}, max abs logit diff {result['verification']['max_abs_diff']:.3g}")
        if fp16_path is not None:
            model16 = int8_fp16(onnx.load(temps[0]), fp32_ops)
            onnx.checker.check_model(model16, full_check=True)
            onnx.save(model16, temps[1])
            result["verification_fp16"] = check_agreement(fp32_path, temps[1], held, min_agreement, classes=classes,
                                                          what=f"FP16 INT8 model ({Path(fp16_path).name})")
            result["verification_fp16"]["note"] = ("ONNX Runtime's CPU provider runs the FP16 parts in FP32 behind "
                                                   "casts: this checks the graph and its FP16 rounding")
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    report["file"] = out_path.name
    return result
