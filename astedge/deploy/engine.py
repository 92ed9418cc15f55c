"""Build a TensorRT engine from an export folder with the ``tensorrt`` Python API (``astedge build-engine``).

Runs where only ``tensorrt`` and numpy exist (a Jetson with JetPack's TensorRT, no torch, no ONNX
Runtime): the ONNX is parsed by path, and the engine is checked against the reference logits the
export stored in ``verification.npz`` before it is written.

Every choice is made by :func:`plan_build`, a pure function of the TensorRT version, the profile and
the export's files (tested for 10.3, 10.8, 10.16 and 11.4 without TensorRT); which file each precision parses,
typed or weakly with which builder flags, is :data:`astedge.precision.PRECISION_TABLE`:

- **Typing.** Strong typing wherever TensorRT offers it (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
  on 10.x, always on 11.x): an FP16 engine is built from ``model.fp16.onnx``, whose casts say what runs
  in FP16 and keep LayerNorm FP32; an FP32 engine from ``model.onnx``. Weak typing (``BuilderFlag.FP16``)
  is only the fallback of TensorRT 10 for an export without the FP16 ONNX (deprecated from 10.12, gone in
  11, where it is an error, never a silent FP32 build).
- **LayerNorm.** Not pinned: since TensorRT 8.6 an opset-17 ``LayerNormalization`` becomes an
  INormalizationLayer, which computes in FP32 by default, and pins with OBEY_PRECISION_CONSTRAINTS only
  add reformat layers around all 25 norms. ``[engine] pin_layernorm = true`` keeps them (weak typing).
- **TF32.** Cleared for fp32 engines (TensorRT enables it by default), unless ``[engine] tf32 = true``,
  in which case the engine is recorded as TF32.
- **Hardware compatibility.** Refused on integrated GPUs (Jetson), at build and at load.
- **Profiles.** The profile's batch range, plus a static batch-1 profile for live streams
  (``[engine] stream_batch_1``).

What the engine really runs is read back with the engine inspector (``ProfilingVerbosity.DETAILED``):
the layers' output precisions are summed up in ``astedge.json`` and listed in ``engine-layers.json``.
The engine's platform (machine, integrated or not, GPU UUID) is recorded and checked at load. The
timing cache is keyed by TensorRT version, GPU name and UUID. Only symbolic enum names are used
(``STRONGLY_TYPED`` is 1 in 10.x and 0 in 11.x).

No engine has been built with this code yet (no TensorRT or GPU where it was written): the build is checked
against doubles that have exactly the Python names of TensorRT 10.3, 10.8, 10.16 and 11.4.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from astedge import artefact as art
from astedge.runtime.backends.tensorrt import MIN_TENSORRT_MAJOR, EngineRunner, current_gpu, import_tensorrt, trt_logger
from astedge.errors import UserError
from astedge.files import atomic_write
from astedge.deploy.profiles import DeviceProfile, resolve_profile
from astedge.precision import PRECISION_TABLE
from astedge.timing import utc_now
from astedge.verify import VerificationError, batch_chunks, compare, fp16_gate, int8_engine_gate

TYPINGS = ("auto", "weak", "strong")
LAYERS_FILE = "engine-layers.json"
#: First TensorRT release where FP16 weak typing is deprecated in favour of strong typing.
WEAK_FP16_DEPRECATED = (10, 12)


@dataclass(frozen=True)
class BuildPlan:
    """What one build does; pure data, decided by :func:`plan_build`."""

    tensorrt: str
    typing: str  # "weak" or "strong"
    precision: str  # "fp32", "fp16" or "int8"
    onnx_file: str  # the artefact file parsed
    network_flags: tuple[str, ...] = ()  # NetworkDefinitionCreationFlag names
    builder_flags: tuple[str, ...] = ()  # BuilderFlag names set
    cleared_flags: tuple[str, ...] = ()  # BuilderFlag names cleared (TF32 for fp32 engines)
    fp32_layer_types: tuple[str, ...] = ()  # LayerType names pinned to FP32 (pin_layernorm, weak FP16 only)
    profiles: tuple[tuple[int, int, int], ...] = ()  # (min, opt, max) batch per optimization profile
    tf32: bool = False  # whether FP32 layers may use TF32
    notes: tuple[str, ...] = ()


def tensorrt_version_tuple(version: str) -> tuple[int, int]:
    try:
        parts = str(version).split(".")
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise UserError(f"cannot read the TensorRT version {version!r}") from None


def tensorrt_major(version: str) -> int:
    return tensorrt_version_tuple(version)[0]


def batch_profiles(profile: DeviceProfile) -> tuple[tuple[int, int, int], ...]:
    """The profile's batch range, plus a static batch-1 profile for streams unless the range already is one."""
    main = (profile.min_batch, profile.opt_batch, profile.max_batch)
    if profile.stream_batch_1 and main != (1, 1, 1):
        return main, (1, 1, 1)
    return (main,)


def plan_build(tensorrt_version: str, profile: DeviceProfile | str, files: dict, typing: str = "auto", *,
               integrated: bool = False) -> BuildPlan:
    """The build for this TensorRT version, device profile (or just a precision) and export; :class:`UserError`
    when it cannot be done right. `integrated`: the GPU building it is integrated (a Jetson)."""
    if isinstance(profile, str):  # a precision alone (checked by the profile): the default profile otherwise
        profile = DeviceProfile(name="default", precision=profile)
    version = tensorrt_version_tuple(tensorrt_version)
    major, precision = version[0], profile.precision
    if major < MIN_TENSORRT_MAJOR:
        raise UserError(f"TensorRT {tensorrt_version} is too old: astedge builds with TensorRT 10.x (JetPack 6) or "
                        "11.x; JetPack 5 (TensorRT 8.x) is not supported")
    if typing not in TYPINGS:
        raise UserError(f"typing must be one of {', '.join(TYPINGS)}, got {typing!r}")
    if integrated and profile.hardware_compatibility != "none":
        raise UserError(f"hardware_compatibility {profile.hardware_compatibility!r} is not supported on integrated GPUs "
                        "(Jetson): build the engine on the device with hardware_compatibility = \"none\"")
    spec = PRECISION_TABLE[precision]  # which files and flags (astedge.precision)
    typed = files.get(spec.typed_onnx) if spec.typed_onnx else None
    notes = []
    if typing == "auto":
        typing = "strong" if major >= 11 or precision == "fp32" or typed else "weak"
        if typing == "weak" and precision == "fp16":
            notes.append("no FP16 ONNX in the export: weakly typed FP16 (re-export with --fp16 for strong typing)")
    if typing == "weak" and major >= 11:
        raise UserError(f"TensorRT {tensorrt_version} has no weak typing (no FP16/INT8 builder flags, no per-layer "
                        "precision): build with --typing auto/strong from the export's typed ONNX")
    if typing == "weak" and spec.weak_flags and version >= WEAK_FP16_DEPRECATED:
        notes.append(f"{precision.upper()} weak typing is deprecated in TensorRT {version[0]}.{version[1]}; strong "
                     "typing is preferred")
    # TensorRT 11 is always strongly typed; its STRONGLY_TYPED flag is kept but ignored.
    network_flags = ("STRONGLY_TYPED",) if typing == "strong" and major < 11 else ()
    tf32 = precision == "fp32" and profile.tf32
    cleared = ("TF32",) if precision == "fp32" and not profile.tf32 else ()
    common = dict(cleared_flags=cleared, profiles=batch_profiles(profile), tf32=tf32)
    if typing == "strong" and typed:  # the casts of the typed ONNX say what runs in FP16 and keep LayerNorm FP32
        if profile.pin_layernorm:
            notes.append("pin_layernorm ignored: a strongly typed network keeps LayerNorm FP32 through the ONNX's casts")
        return BuildPlan(tensorrt_version, typing, precision, typed, network_flags, notes=tuple(notes), **common)
    if typing == "strong" and precision == "fp16":
        raise UserError(f"TensorRT {tensorrt_version} with strong typing builds FP16 engines only from the FP16 "
                        "ONNX, which this export lacks: re-export with --fp16")
    if not files.get(spec.weak_onnx):
        raise UserError("the export folder has no INT8 model: export with --int8 --calibration AUDIO_DIR"
                        if precision == "int8" else "the export folder lists no model.onnx")
    if typing == "strong" and spec.typed_onnx:  # INT8 without its FP16 graph
        notes.append(f"no {art.ONNX_INT8_FP16_FILE} in the export: the float parts run in FP32 under strong typing")
    pins = typing == "weak" and bool(spec.weak_flags) and profile.pin_layernorm
    flags = (spec.weak_flags if typing == "weak" else ()) + (("OBEY_PRECISION_CONSTRAINTS",) if pins else ())
    return BuildPlan(tensorrt_version, typing, precision, files[spec.weak_onnx], network_flags, builder_flags=flags,
                     fp32_layer_types=("NORMALIZATION",) if pins else (), notes=tuple(notes), **common)


def tensorrt_status() -> tuple[bool, str]:
    """Whether an engine can be built here (TensorRT imports and a CUDA GPU is visible), and why not."""
    try:
        trt = import_tensorrt()
        current_gpu()
    except UserError as err:
        return False, str(err)
    return True, f"TensorRT {trt.__version__}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "gpu"


def default_timing_cache(tensorrt_version: str, gpu: dict) -> Path:
    """``$XDG_CACHE_HOME/astedge/tensorrt/timing-<version>-<gpu name>-<uuid prefix>.cache`` (``~/.cache``).

    Keyed by the device, not its compute capability: an A10 and an RTX 3090 (both sm_86) time kernels
    differently and must not overwrite each other's cache."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    uuid = str(gpu.get("uuid") or "").removeprefix("GPU-").replace("-", "")[:12] or "nouuid"
    return root / "astedge" / "tensorrt" / f"timing-{tensorrt_version}-{_slug(gpu['name'])}-{uuid}.cache"


def _flag(trt, name: str, version: str):
    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:  # never fall back to a silent FP32 build (rf-detr #1453)
        raise UserError(f"TensorRT {version} has no BuilderFlag.{name}")
    return flag


def _parse_onnx(trt, builder, logger, onnx_path: str | Path, plan: BuildPlan, input_name: str, network_flags: int):
    """The network of `onnx_path` (parsed by path: external weights resolve) and its parser, which must outlive it."""
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UserError(f"TensorRT {plan.tensorrt} cannot parse the ONNX: {errors[0] if errors else 'unknown error'}"
                        + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""), onnx_path)
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [input_name]:
        raise UserError(f"expected one network input {input_name!r}, the ONNX has {inputs}", onnx_path)
    return network, parser


def _network_flags(trt, plan: BuildPlan) -> int:
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return flags


def _builder_config(trt, builder, plan: BuildPlan, profile: DeviceProfile):
    """The builder config: workspace, optimization level, detailed profiling (for the inspector), hardware
    compatibility and the plan's builder flags."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mib << 20)
    config.builder_optimization_level = profile.builder_optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then reports layer precisions
    if profile.hardware_compatibility != "none":
        level = getattr(trt.HardwareCompatibilityLevel, profile.hardware_compatibility.upper(), None)
        if level is None:
            raise UserError(f"TensorRT {plan.tensorrt} has no hardware compatibility level "
                            f"{profile.hardware_compatibility!r}")
        config.hardware_compatibility_level = level
    for name in plan.builder_flags:
        config.set_flag(_flag(trt, name, plan.tensorrt))
    for name in plan.cleared_flags:
        config.clear_flag(_flag(trt, name, plan.tensorrt))
    return config


def _pin_fp32_layers(trt, network, plan: BuildPlan, onnx_path: str | Path) -> int:
    """Pin the plan's FP32 layer types (LayerNorm under weak typing); the number pinned. Finding none is an error:
    an FP16 engine must not silently run LayerNorm in FP16."""
    if not plan.fp32_layer_types:
        return 0
    kinds = {getattr(trt.LayerType, name) for name in plan.fp32_layer_types}
    pinned = 0
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
    return pinned


def _add_batch_profiles(builder, config, batches, input_name: str, frame_shape: tuple[int, int]) -> None:
    frames, mel = frame_shape
    for low, opt, high in batches:
        optimization = builder.create_optimization_profile()
        optimization.set_shape(input_name, (low, frames, mel), (opt, frames, mel), (high, frames, mel))
        config.add_optimization_profile(optimization)


def _load_timing_cache(config, cache_path: Path | None, log) -> bytes:
    """Give the config the timing cache at `cache_path` (a new one when it is absent or made elsewhere); returns
    the bytes reused."""
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), False):  # ignore_mismatch=False
        log(f"timing cache {cache_path} does not match this TensorRT/GPU; starting a new one")
        cache_bytes = b""
        config.set_timing_cache(config.create_timing_cache(b""), False)
    return cache_bytes


def _save_timing_cache(config, cache_path: Path | None) -> None:
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache_path) as handle:
            handle.write(bytes(memoryview(config.get_timing_cache().serialize())))


def build_serialized(trt, onnx_path: str | Path, plan: BuildPlan, profile: DeviceProfile, input_name: str,
                     frame_shape: tuple[int, int], timing_cache: str | Path | None = None, log=None) -> tuple[bytes, dict]:
    """Parse `onnx_path` and build a serialized engine with `trt` (the ``tensorrt`` module); returns (plan, info).

    Everything version-specific comes from `plan`; the calls are the same in TensorRT 10 and 11.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = _parse_onnx(trt, builder, logger, onnx_path, plan, input_name, _network_flags(trt, plan))
    config = _builder_config(trt, builder, plan, profile)
    pinned = _pin_fp32_layers(trt, network, plan, onnx_path)
    batches = plan.profiles or batch_profiles(profile)  # a plan made elsewhere may leave them to us
    _add_batch_profiles(builder, config, batches, input_name, frame_shape)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_bytes = _load_timing_cache(config, cache_path, log)

    log(f"building the TensorRT {plan.tensorrt} engine ({plan.precision}{' (TF32 allowed)' if plan.tf32 else ''}, "
        f"{plan.typing} typing, batch profiles {', '.join('/'.join(map(str, p)) for p in batches)}, workspace "
        f"{profile.workspace_mib} MiB, optimization level {profile.builder_optimization_level}); this takes minutes")
    for note in plan.notes:
        log(f"note: {note}")
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise UserError(f"TensorRT {plan.tensorrt} could not build the engine (see its log above)", onnx_path)
    _save_timing_cache(config, cache_path)
    info = {"build_seconds": round(seconds, 1), "layers": network.num_layers, "fp32_pinned_layers": pinned,
            "timing_cache": str(cache_path) if cache_path else None, "timing_cache_reused": bool(cache_bytes)}
    return bytes(memoryview(serialized)), info


_PRECISION_WORDS = (("fp8", "FP8"), ("int8", "Int8"), ("int4", "Int4"), ("bf16", "BF16"), ("fp16", "FP16"),
                    ("fp16", "Half"), ("fp32", "FP32"), ("fp32", "Float"), ("int32", "Int32"), ("int64", "Int64"),
                    ("bool", "Bool"))


def tensor_precision(text: str) -> str:
    """The data type named in an inspector "Format/Datatype" string ("Row major linear FP16 format", "Half")."""
    for name, word in _PRECISION_WORDS:
        if re.search(rf"\b{word}\b", str(text)):
            return name
    return "unknown"


def layer_precisions(info: str | dict) -> dict:
    """Summary of ``EngineInspector.get_engine_information(LayerInformationFormat.JSON)``: layers by the precision
    of their outputs, reformat layers, and the normalization layers' precisions (LayerNorm inside a Myelin
    region is not listed separately); plus the per-layer list (name, type, output precisions)."""
    data = json.loads(info) if isinstance(info, str) else info
    layers = data.get("Layers", [])
    rows, by_output, norms = [], {}, {}
    for layer in layers:
        if isinstance(layer, str):  # LAYER_NAMES_ONLY verbosity: names without types
            rows.append({"name": layer, "type": "?", "outputs": []})
            continue
        outputs = sorted({tensor_precision(t.get("Format/Datatype", "")) for t in layer.get("Outputs", [])})
        kind = str(layer.get("LayerType", "?"))
        rows.append({"name": str(layer.get("Name", "?")), "type": kind, "outputs": outputs})
        key = "+".join(outputs) or "none"
        by_output[key] = by_output.get(key, 0) + 1
        if "norm" in kind.lower() or re.search(r"layer_?norm", str(layer.get("Name", "")), re.IGNORECASE):
            norms[key] = norms.get(key, 0) + 1
    summary = {"layers": len(layers), "by_output_precision": by_output,
               "reformat_layers": sum(r["type"] == "Reformat" for r in rows), "normalization_layers": norms,
               "source": "IEngineInspector JSON (ProfilingVerbosity.DETAILED)"}
    return {"summary": summary, "layers": rows}


def inspect_engine(trt, runner: EngineRunner) -> dict:
    """The engine's layers and precisions as TensorRT reports them (shapes set on the runner's context)."""
    inspector = runner.engine.create_engine_inspector()
    inspector.execution_context = runner.context
    return layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def build_engine(path: str | Path, profile: DeviceProfile | str | None = None, *, force: bool = False,
                 typing: str = "auto", timing_cache: str | Path | None = None, precision: str | None = None,
                 log=None) -> dict:
    """Build, verify and write ``model.plan`` into the export folder of `path`; updates ``astedge.json``.

    `profile` defaults to the one recorded at export; `precision` replaces its precision
    (:func:`astedge.deploy.profiles.resolve_profile`). The engine runs the stored verification inputs on this GPU
    and is written only if its logits match the ONNX Runtime FP32 logits within the FP16 gate
    (:func:`astedge.verify.fp16_gate`), or for INT8 the INT8 ONNX's within :func:`astedge.verify.int8_engine_gate`;
    the figures go into ``astedge.json``, with the layer precisions TensorRT reports and the platform it was built on.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    folder = art.artefact_dir(path)
    meta = art.read_metadata(folder)
    profile = resolve_profile(profile if profile is not None else meta.get("profile") or None, precision)
    engine_path = folder / art.ENGINE_FILE
    if engine_path.exists() and not force:
        built = meta.get("engine") or {}
        raise UserError(f"already has an engine (TensorRT {built.get('tensorrt', '?')}, "
                        f"{(built.get('gpu') or {}).get('name', '?')}); pass --force to rebuild it", engine_path)
    trt = import_tensorrt()
    gpu = current_gpu()
    if profile.integrated_gpu != bool(gpu["integrated"]):
        log(f"note: profile {profile.name!r} targets {'an integrated' if profile.integrated_gpu else 'a discrete'} GPU; "
            f"this is {gpu['name']} ({'integrated' if gpu['integrated'] else 'discrete'})")
    plan = plan_build(trt.__version__, profile, meta["files"], typing, integrated=bool(gpu["integrated"]))
    onnx_path = folder / plan.onnx_file
    if not onnx_path.is_file():
        raise UserError("is missing from the export folder", onnx_path)
    verification = art.load_verification(folder)
    if timing_cache is None:
        timing_cache = default_timing_cache(trt.__version__, gpu)
    model = meta["model_config"]
    data, info = build_serialized(trt, onnx_path, plan, profile, meta["input"]["name"],
                                  (model["target_length"], model["num_mel_bins"]), timing_cache, log)
    figures, layers = _verify_engine(trt, data, plan.precision, verification, folder, gpu, log)
    with atomic_write(engine_path) as handle:
        handle.write(data)
    with atomic_write(folder / LAYERS_FILE, "w") as handle:
        handle.write(json.dumps(layers, indent=1) + "\n")
    _record_engine(folder, meta, plan, profile, gpu, {"bytes": len(data), **info}, layers, figures)
    return {"engine": str(engine_path), "tensorrt": trt.__version__, "gpu": gpu, "typing": plan.typing,
            "precision": plan.precision, "tf32": plan.tf32, "onnx": plan.onnx_file, "build_seconds": info["build_seconds"],
            "layer_precisions": layers["summary"], "verification": figures}


def _verify_engine(trt, data: bytes, precision: str, verification: dict, folder: Path, gpu: dict,
                  log) -> tuple[dict, dict]:
    """Run the serialized engine on the export's verification inputs and gate its logits: against the FP32 ONNX's,
    or for INT8 the INT8 ONNX's (the same Q/DQ scales; its distance to FP32 was gated at export). Returns the
    figures and the engine's layer precisions; :class:`astedge.verify.VerificationError` when it fails."""
    inputs, reference = verification["fbank"], verification["logits_onnx"]
    int8 = precision == "int8"
    if int8:
        if "logits_onnx_int8" not in verification:
            raise UserError("has no INT8 verification logits: re-export with --int8", folder / art.VERIFICATION_FILE)
        reference = verification["logits_onnx_int8"]
    with EngineRunner(data, trt) as runner:
        chunks = (batch_chunks(len(inputs), runner.max_batch, runner.min_batch)
                  if len(inputs) >= runner.min_batch else [slice(0, len(inputs))])  # run() pads short batches
        logits = reference.copy()
        for chunk in chunks:
            logits[chunk] = runner.run(inputs[chunk])
        layers = inspect_engine(trt, runner)
    figures = {**compare(reference, logits),
               "reference": (f"{art.ONNX_INT8_FILE} on ONNX Runtime (CPU; stored at export)" if int8 else
                             "model.onnx on ONNX Runtime (CPU, FP32; stored at export)"),
               "runtime": f"TensorRT {trt.__version__} on {gpu['name']}", "batches": [c.stop - c.start for c in chunks]}
    if int8:
        figures["vs_onnx_fp32"] = compare(verification["logits_onnx"], logits)
    failure = int8_engine_gate(figures) if int8 else fp16_gate(figures)
    figures["passed"] = failure is None
    log(f"engine vs ONNX {'INT8' if int8 else 'FP32'}: max abs diff {figures['max_abs_diff']:.3g}, top-1 agreement "
        f"{figures['top1_agreement']:.3f}, top-5 agreement {figures['top5_agreement']:.3f}; layers by output "
        f"precision {layers['summary']['by_output_precision']}")
    if failure:
        raise VerificationError(f"the TensorRT engine fails verification: {failure}; no engine was written")
    return figures, layers


def _record_engine(folder: Path, meta: dict, plan: BuildPlan, profile: DeviceProfile, gpu: dict, info: dict,
                   layers: dict, figures: dict) -> None:
    """``astedge.json`` after a build: what built the engine, for which platform and profile, and how it verified."""
    platform_ = {"machine": gpu["machine"], "integrated": bool(gpu["integrated"]), "gpu_uuid": gpu.get("uuid"),
                 "driver": gpu.get("driver")}
    meta["engine"] = {"file": art.ENGINE_FILE, "tensorrt": plan.tensorrt, "gpu": gpu, "platform": platform_,
                      "precision": plan.precision,
                      **{k: v for k, v in asdict(plan).items() if k not in ("tensorrt", "precision")},
                      "batch": {"min": profile.min_batch, "opt": profile.opt_batch, "max": profile.max_batch},
                      "workspace_mib": profile.workspace_mib,
                      "builder_optimization_level": profile.builder_optimization_level,
                      "hardware_compatibility": profile.hardware_compatibility, "profile": profile.name,
                      "layer_precisions": layers["summary"], "layers_file": LAYERS_FILE,
                      "built": utc_now(), **info}
    meta["profile"] = profile.to_dict()  # the folder now targets the device the engine was built for
    meta["files"]["engine"] = art.ENGINE_FILE
    meta["precisions"][art.ENGINE_FILE] = plan.precision
    meta.setdefault("verification", {})["engine_vs_onnx_int8" if plan.precision == "int8" else
                                        "engine_vs_onnx_fp32"] = figures
    art.write_metadata(folder, meta)
