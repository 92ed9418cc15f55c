"""ONNX Runtime backend: an export folder's ``model.onnx`` or ``model.fp16.onnx`` on the CPU, CUDA or TensorRT provider.

Needs only ``onnxruntime`` (``onnxruntime-gpu`` for CUDA/TensorRT) and numpy; no torch. Which file runs:

- an ``.onnx`` path runs that file;
- ``precision="fp32"`` runs ``model.onnx``; ``"fp16"`` runs ``model.fp16.onnx`` (the TensorRT provider
  instead builds FP16 from ``model.onnx`` with ``trt_fp16_enable``); ``"int8"`` runs ``model.int8.onnx``
  (``export --int8``);
- ``"auto"`` runs FP16 on a GPU provider when the export has it, FP32 on the CPU (ONNX Runtime's CPU
  provider has no FP16 kernels for this graph; it would run FP32 behind casts, only slower).

A provider that is missing, or that ONNX Runtime silently replaces by the CPU when its libraries do
not load, is a :class:`UserError`, so ``--backend auto`` moves on to the next backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astedge import artefact as art
from astedge.runtime.backends import SplitOutputs, check_input, check_precision
from astedge.runtime.model_path import export_metadata, frame_layout, resolve_model
from astedge.errors import UserError
from astedge.precision import PRECISIONS

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
#: Where the TensorRT provider caches the engines it builds (inside the export folder).
TRT_CACHE_DIR = ".onnxruntime-tensorrt-cache"


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise UserError(f"ONNX Runtime is not installed ({err}): pip install onnxruntime (CPU) or onnxruntime-gpu "
                        "(CUDA, TensorRT)") from None
    return onnxruntime


def ort_session(path: str | Path, providers=("CPUExecutionProvider",), threads: int | None = None):
    """An ONNX Runtime session on `providers` (quiet: warnings only), `threads` intra-op threads if given.

    INT8 GEMMs compute exactly what the Q/DQ graph says (as TensorRT does) on every x86 CPU: without VNNI, ONNX
    Runtime's default U8S8 kernel adds pairs of products in saturating 16 bits (errors of thousands of
    quantization steps measured on AVX2: top-1 agreement with FP32 then depends on the CPU), so
    ``session.x64quantprecision`` selects its exact U8U8 kernel there; VNNI CPUs and FP32 graphs are unaffected.
    """
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.x64quantprecision", "1")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=list(providers))


def onnx_logits(path: str | Path, inputs: np.ndarray, chunks: list[slice], threads: int | None = None) -> np.ndarray:
    """Logits of an ONNX file on ONNX Runtime's CPU provider, fed in the given batches (row slices of `inputs`)."""
    session = ort_session(path, threads=threads)
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    return np.concatenate([session.run([output], {name: inputs[chunk]})[0] for chunk in chunks])


class OnnxRuntimeBackend(SplitOutputs):
    """An exported model in an ONNX Runtime session on one execution provider."""

    def __init__(self, path: str | Path, precision: str = "auto", provider: str = "cpu", threads: int | None = None):
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}")
        check_precision(precision)
        ref = resolve_model(path)
        if ref.kind != "export":
            raise UserError("ONNX Runtime runs an export folder; export the checkpoint first: "
                            f"astedge export -m {ref.path} -o DIR", ref.path)
        ort = _import_onnxruntime()
        wanted = PROVIDERS[provider]
        available = ort.get_available_providers()
        if wanted not in available:
            raise UserError(f"ONNX Runtime {ort.__version__} here has no {wanted} (it has {', '.join(available)}); "
                            "for CUDA and TensorRT install onnxruntime-gpu")
        self.folder = ref.path
        self.meta, self.labels, self.task, self.feature_config = export_metadata(self.folder)
        self.frame_layout = frame_layout(self.meta)
        self.name = f"onnxruntime-{provider}"
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.file, self.precision = self._pick_file(ref.onnx, precision, provider)
        providers: list = [wanted]
        if provider == "tensorrt":
            cache = self.folder / TRT_CACHE_DIR
            providers = [(wanted, {"trt_fp16_enable": self.precision == "fp16", "trt_engine_cache_enable": True,
                                   "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                                   "trt_timing_cache_path": str(cache)}), "CUDAExecutionProvider"]
        if provider != "cpu":
            providers.append("CPUExecutionProvider")  # for the few nodes a GPU provider declines
        try:
            self.session = ort_session(self.file, providers, threads)
        except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own types for bad files and providers
            raise UserError(f"ONNX Runtime cannot load it on {wanted}: {str(err).splitlines()[0]}", self.file) from None
        used = self.session.get_providers()
        if not used or used[0] != wanted:
            raise UserError(f"ONNX Runtime fell back to {used[0] if used else 'nothing'} instead of {wanted} (its CUDA "
                            "libraries did not load?)")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"expected one input and one output, got {len(inputs)} and {len(outputs)}", self.file)
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.frames, self.bins = self.feature_config.target_length, self.feature_config.num_mel_bins

    def _pick_file(self, named: Path | None, precision: str, provider: str) -> tuple[Path, str]:
        files = self.meta["files"]
        fp16_file = files.get("onnx_fp16")
        if named is not None:
            recorded = str(self.meta.get("precisions", {}).get(named.name, "fp32"))
            named_precision = recorded.split(" ")[0] if recorded.split(" ")[0] in PRECISIONS else "fp32"
            if precision not in ("auto", named_precision):
                raise UserError(f"is the {named_precision} model but precision {precision} was asked for", named)
            return named, named_precision
        if precision == "int8":  # the Q/DQ graph; ONNX Runtime's CPU provider fuses it into integer kernels
            if not files.get("onnx_int8"):
                raise UserError("has no INT8 model (export it with --int8 --calibration AUDIO_DIR)", self.folder)
            return self.folder / files["onnx_int8"], "int8"
        if provider == "tensorrt":  # TensorRT builds its own FP16 from the FP32 graph
            return self.folder / files.get("onnx", art.ONNX_FILE), "fp16" if precision == "fp16" else "fp32"
        if precision == "auto":
            precision = "fp16" if provider != "cpu" and fp16_file else "fp32"
        if precision == "fp16":
            if not fp16_file:
                raise UserError("has no FP16 model (export it with --fp16)", self.folder)
            return self.folder / fp16_file, "fp16"
        return self.folder / files.get("onnx", art.ONNX_FILE), "fp32"

    def _raw(self, fbank: np.ndarray) -> np.ndarray:
        x = check_input(fbank, self.frames, self.bins)
        return np.asarray(self.session.run([self.output_name], {self.input_name: x})[0], dtype=np.float32)

    def close(self) -> None:
        self.session = None
