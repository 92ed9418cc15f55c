"""Build a TensorRT engine from an export folder with the ``tensorrt`` Python API (``astedge build-engine``).

Runs where only ``tensorrt`` and numpy exist (a Jetson with JetPack's TensorRT, no torch, no ONNX
Runtime): the ONNX is parsed by path, and the engine is checked against the reference logits the
export stored in ``verification.npz`` before it is written.

Two paths, chosen by the installed TensorRT's major version (:func:`plan_build`):

- **TensorRT 10.x** (JetPack 6 ships 10.3), *weak typing*: parse the FP32 ``model.onnx``, set
  ``BuilderFlag.FP16`` and keep every LayerNorm (``LayerType.NORMALIZATION``) in FP32 with
  ``layer.precision`` + ``layer.set_output_type`` and ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``
  (a constraint TensorRT cannot meet fails the build instead of silently running LayerNorm in FP16).
- **TensorRT 11.x**, *strong typing* (always on; the FP16 flag and per-layer precision are gone):
  parse ``model.fp16.onnx``, whose casts already say what runs in FP16 and keep LayerNorm in FP32.
  There is no weak path on 11: asking for one is an error, never a silent FP32 build.

``typing="strong"`` also works on TensorRT 10 (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
with the FP16 ONNX). Both paths share: one optimization profile on the batch axis (min/opt/max from
the device profile, frames and mel fixed), ``set_memory_pool_limit(WORKSPACE)``,
``builder_optimization_level``, optional ``hardware_compatibility_level``, and a persistent timing
cache keyed by TensorRT version and GPU (``$XDG_CACHE_HOME/astedge/tensorrt/``). Only symbolic
enum names are used (``STRONGLY_TYPED`` is 1 in 10.x and 0 in 11.x).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from astedge import artefact as art
from astedge.backends.tensorrt import MIN_TENSORRT_MAJOR, EngineRunner, current_gpu, import_tensorrt, trt_logger
from astedge.errors import UserError
from astedge.files import atomic_write
from astedge.profiles import DeviceProfile, load_profile
from astedge.timing import utc_now

TYPINGS = ("auto", "weak", "strong")


@dataclass(frozen=True)
class BuildPlan:
    """What one build does; pure data, decided by :func:`plan_build` from the TensorRT version."""

    tensorrt: str
    typing: str  # "weak" or "strong"
    precision: str  # "fp16" or "fp32"
    onnx_file: str  # the artefact file parsed
    network_flags: tuple[str, ...] = ()  # NetworkDefinitionCreationFlag names
    builder_flags: tuple[str, ...] = ()  # BuilderFlag names
    fp32_layer_types: tuple[str, ...] = ()  # LayerType names pinned to FP32 (weak FP16 only)


def tensorrt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise UserError(f"cannot read the TensorRT version {version!r}") from None


def plan_build(tensorrt_version: str, precision: str, files: dict, typing: str = "auto") -> BuildPlan:
    """Choose the TensorRT 10 (weak typing) or 11 (strong typing) path; :class:`UserError` when impossible."""
    major = tensorrt_major(tensorrt_version)
    if major < MIN_TENSORRT_MAJOR:
        raise UserError(f"TensorRT {tensorrt_version} is too old: astedge builds with TensorRT 10.x (JetPack 6) or "
                        "11.x; JetPack 5 (TensorRT 8.x) is not supported")
    if typing not in TYPINGS:
        raise UserError(f"typing must be one of {', '.join(TYPINGS)}, got {typing!r}")
    if precision not in ("fp16", "fp32"):
        raise UserError(f"precision must be fp16 or fp32, got {precision!r}")
    if typing == "auto":
        typing = "strong" if major >= 11 else "weak"
    if typing == "weak" and major >= 11:
        raise UserError(f"TensorRT {tensorrt_version} has no weak typing (no FP16 builder flag, no per-layer "
                        "precision): build with --typing auto/strong from the FP16 ONNX")
    # TensorRT 11 is always strongly typed; its STRONGLY_TYPED flag is kept but ignored.
    network_flags = ("STRONGLY_TYPED",) if typing == "strong" and major < 11 else ()
    if precision == "fp16" and typing == "strong":
        if not files.get("onnx_fp16"):
            raise UserError(f"TensorRT {tensorrt_version} with strong typing builds FP16 engines only from the FP16 "
                            "ONNX, which this export lacks: re-export with --fp16")
        return BuildPlan(tensorrt_version, typing, precision, files["onnx_fp16"], network_flags)
    if not files.get("onnx"):
        raise UserError("the export folder lists no model.onnx")
    if precision == "fp16":
        return BuildPlan(tensorrt_version, typing, precision, files["onnx"], network_flags,
                         builder_flags=("FP16", "OBEY_PRECISION_CONSTRAINTS"),
                         fp32_layer_types=("NORMALIZATION",))
    return BuildPlan(tensorrt_version, typing, precision, files["onnx"], network_flags)


def tensorrt_status() -> tuple[bool, str]:
    """Whether an engine can be built here (TensorRT imports and a CUDA GPU is visible), and why not."""
    try:
        trt = import_tensorrt()
        current_gpu()
    except UserError as err:
        return False, str(err)
    return True, f"TensorRT {trt.__version__}"


def default_timing_cache(tensorrt_version: str, gpu: dict) -> Path:
    """``$XDG_CACHE_HOME/astedge/tensorrt/timing-<version>-sm<cc>.cache`` (``~/.cache`` by default)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cc = str(gpu["compute_capability"]).replace(".", "")
    return root / "astedge" / "tensorrt" / f"timing-{tensorrt_version}-sm{cc}.cache"


def build_serialized(trt, onnx_path: str | Path, plan: BuildPlan, profile: DeviceProfile, input_name: str,
                     frame_shape: tuple[int, int], timing_cache: str | Path | None = None, log=None) -> tuple[bytes, dict]:
    """Parse `onnx_path` and build a serialized engine with `trt` (the ``tensorrt`` module); returns (plan, info).

    Everything version-specific comes from `plan`; the calls are the same in TensorRT 10 and 11.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UserError(f"TensorRT {plan.tensorrt} cannot parse the ONNX: {errors[0] if errors else 'unknown error'}"
                        + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""), onnx_path)
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [input_name]:
        raise UserError(f"expected one network input {input_name!r}, the ONNX has {inputs}", onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mib << 20)
    config.builder_optimization_level = profile.builder_optimization_level
    if profile.hardware_compatibility != "none":
        level = getattr(trt.HardwareCompatibilityLevel, profile.hardware_compatibility.upper(), None)
        if level is None:
            raise UserError(f"TensorRT {plan.tensorrt} has no hardware compatibility level "
                            f"{profile.hardware_compatibility!r}")
        config.hardware_compatibility_level = level
    for name in plan.builder_flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:  # never fall back to a silent FP32 build (rf-detr #1453)
            raise UserError(f"TensorRT {plan.tensorrt} has no BuilderFlag.{name}")
        config.set_flag(flag)

    pinned = 0
    if plan.fp32_layer_types:
        kinds = {getattr(trt.LayerType, name) for name in plan.fp32_layer_types}
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if layer.type in kinds:
                layer.precision = trt.float32
                for output in range(layer.num_outputs):
                    layer.set_output_type(output, trt.float32)
                pinned += 1
        if pinned == 0:
            raise UserError("found no LayerNorm (INormalizationLayer) to keep in FP32: was this ONNX exported by "
                            "astedge (opset >= 17)? Refusing to build an FP16 engine with FP16 LayerNorm", onnx_path)

    optimization = builder.create_optimization_profile()
    frames, mel = frame_shape
    optimization.set_shape(input_name, (profile.min_batch, frames, mel), (profile.opt_batch, frames, mel),
                           (profile.max_batch, frames, mel))
    config.add_optimization_profile(optimization)

    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, False):  # ignore_mismatch=False
        log(f"timing cache {cache_path} does not match this TensorRT/GPU; starting a new one")
        cache_bytes = b""
        config.set_timing_cache(config.create_timing_cache(b""), False)

    log(f"building the TensorRT {plan.tensorrt} engine ({plan.precision}, {plan.typing} typing, batch "
        f"{profile.min_batch}/{profile.opt_batch}/{profile.max_batch}, workspace {profile.workspace_mib} MiB, "
        f"optimization level {profile.builder_optimization_level}); this takes minutes")
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise UserError(f"TensorRT {plan.tensorrt} could not build the engine (see its log above)", onnx_path)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache_path) as handle:
            handle.write(bytes(memoryview(config.get_timing_cache().serialize())))
    info = {"build_seconds": round(seconds, 1), "layers": network.num_layers, "fp32_pinned_layers": pinned,
            "timing_cache": str(cache_path) if cache_path else None, "timing_cache_reused": bool(cache_bytes)}
    return bytes(memoryview(serialized)), info


def build_engine(path: str | Path, profile: DeviceProfile | str | None = None, *, force: bool = False,
                 typing: str = "auto", timing_cache: str | Path | None = None, log=None) -> dict:
    """Build, verify and write ``model.plan`` into the export folder of `path`; updates ``astedge.json``.

    `profile` defaults to the one recorded at export. The engine runs the stored verification inputs
    on this GPU and is written only if its logits match the ONNX Runtime FP32 logits within the FP16
    gate (:func:`astedge.artefact.fp16_gate`); the figures go into ``astedge.json``.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    folder = art.artefact_dir(path)
    meta = art.read_metadata(folder)
    if profile is None:
        profile = DeviceProfile.from_dict(meta["profile"]) if meta.get("profile") else load_profile(None)
    elif not isinstance(profile, DeviceProfile):
        profile = load_profile(profile)
    engine_path = folder / art.ENGINE_FILE
    if engine_path.exists() and not force:
        built = meta.get("engine") or {}
        raise UserError(f"already has an engine (TensorRT {built.get('tensorrt', '?')}, "
                        f"{(built.get('gpu') or {}).get('name', '?')}); pass --force to rebuild it", engine_path)
    trt = import_tensorrt()
    gpu = current_gpu()
    plan = plan_build(trt.__version__, profile.precision, meta["files"], typing)
    onnx_path = folder / plan.onnx_file
    if not onnx_path.is_file():
        raise UserError("is missing from the export folder", onnx_path)
    verification = art.load_verification(folder)
    if timing_cache is None:
        timing_cache = default_timing_cache(trt.__version__, gpu)
    model = meta["model_config"]
    data, info = build_serialized(trt, onnx_path, plan, profile, meta["input"]["name"],
                                  (model["target_length"], model["num_mel_bins"]), timing_cache, log)

    inputs, reference = verification["fbank"], verification["logits_onnx"]
    with EngineRunner(data, trt) as runner:
        chunks = (art.batch_chunks(len(inputs), runner.max_batch, runner.min_batch)
                  if len(inputs) >= runner.min_batch else [slice(0, len(inputs))])  # run() pads short batches
        logits = reference.copy()
        for chunk in chunks:
            logits[chunk] = runner.run(inputs[chunk])
    figures = {**art.compare(reference, logits), "reference": "model.onnx on ONNX Runtime (CPU, FP32; stored at export)",
               "runtime": f"TensorRT {trt.__version__} on {gpu['name']}", "batches": [c.stop - c.start for c in chunks]}
    failure = art.fp16_gate(figures)
    figures["passed"] = failure is None
    log(f"engine vs ONNX FP32: max abs diff {figures['max_abs_diff']:.3g}, top-1 agreement "
        f"{figures['top1_agreement']:.3f}, top-5 agreement {figures['top5_agreement']:.3f}")
    if failure:
        raise art.VerificationError(f"the TensorRT engine fails verification: {failure}; no engine was written")

    with atomic_write(engine_path) as handle:
        handle.write(data)
    engine = {"file": art.ENGINE_FILE, "tensorrt": trt.__version__, "gpu": gpu, "precision": plan.precision,
              **{k: v for k, v in asdict(plan).items() if k not in ("tensorrt", "precision")},
              "batch": {"min": profile.min_batch, "opt": profile.opt_batch, "max": profile.max_batch},
              "workspace_mib": profile.workspace_mib, "builder_optimization_level": profile.builder_optimization_level,
              "hardware_compatibility": profile.hardware_compatibility, "profile": profile.name,
              "built": utc_now(), "bytes": len(data), **info}
    meta["engine"] = engine
    meta["profile"] = profile.to_dict()  # the folder now targets the device the engine was built for
    meta["files"]["engine"] = art.ENGINE_FILE
    meta["precisions"][art.ENGINE_FILE] = plan.precision
    meta.setdefault("verification", {})["engine_vs_onnx_fp32"] = figures
    art.write_metadata(folder, meta)
    return {"engine": str(engine_path), "tensorrt": trt.__version__, "gpu": gpu, "typing": plan.typing,
            "precision": plan.precision, "onnx": plan.onnx_file, "build_seconds": info["build_seconds"],
            "verification": figures}
