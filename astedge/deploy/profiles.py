"""Device profiles: how to build and serve an engine for one kind of machine, as plain TOML.

A profile fixes the TensorRT build (precision, the batch range of the optimization profile,
workspace, builder optimization level, hardware compatibility), the streaming window and hop the
runtime aims for, the Triton batching knobs, and free-form notes (JetPack, power mode, clocks,
latency estimates). ``--profile NAME`` reads ``export/NAME.toml`` from the repository's top-level
``export/`` folder, which pip installs as the package ``astedge.device_profiles`` (so a wheel finds them
too); anything that looks like a path reads that file.

Reading needs only the standard library (``tomllib``; ``tomli`` on Python 3.10): the Jetson's
``astedge build-engine`` uses it without torch. Unknown keys are errors, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from astedge.errors import UserError, check_fields
from astedge.files import read_toml
from astedge.precision import check_precision, precision_problem


def _profile_dir() -> Path:
    """The shipped profiles: the repository's export/ folder, installed as ``astedge.device_profiles``."""
    try:
        import astedge.device_profiles as shipped
    except ModuleNotFoundError:  # a source tree on sys.path without an install
        return Path(__file__).resolve().parents[2] / "export"
    return Path(shipped.__file__).resolve().parent


#: The shipped profiles.
PROFILE_DIR = _profile_dir()
DEFAULT_PROFILE = "workstation"
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")


@dataclass(frozen=True)
class DeviceProfile:
    """One device profile (see the header of any file in the repository's ``export/`` folder for the fields)."""

    name: str
    description: str = ""
    # [engine]
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_mib: int = 4096
    builder_optimization_level: int = 3
    hardware_compatibility: str = "none"
    fp32_ops: tuple[str, ...] = ("LayerNormalization",)
    pin_layernorm: bool = False  # TensorRT 10 weak typing only: pin every LayerNorm to FP32 (obey constraints)
    tf32: bool = False  # fp32 engines: allow TF32 (else the TF32 flag is cleared)
    stream_batch_1: bool = True  # add a static batch-1 optimization profile for live streams
    integrated_gpu: bool = False  # the profile targets an integrated GPU (Jetson): no hardware compatibility
    # [stream]
    window_seconds: float | None = None
    hop_seconds: float = 1.0
    # [triton]
    max_queue_delay_us: int = 1000
    instance_count: int = 1
    # [notes]: free-form, copied into the artefact's metadata
    notes: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "fp32_ops", tuple(self.fp32_ops))
        problems = [problem] if (problem := precision_problem(self.precision)) else []
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            problems.append(f"batch sizes must satisfy 1 <= min <= opt <= max, got "
                            f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if self.workspace_mib < 16:
            problems.append(f"workspace_mib must be >= 16, got {self.workspace_mib}")
        if not 0 <= self.builder_optimization_level <= 5:
            problems.append(f"builder_optimization_level must be 0..5, got {self.builder_optimization_level}")
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            problems.append(f"hardware_compatibility must be one of {', '.join(HARDWARE_COMPATIBILITY)}, "
                            f"got {self.hardware_compatibility!r}")
        if self.integrated_gpu and self.hardware_compatibility != "none":
            problems.append(f"hardware_compatibility {self.hardware_compatibility!r} is not supported on integrated GPUs "
                            "(Jetson): engines are built on the device; use \"none\"")
        if self.window_seconds is not None and not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            problems.append(f"window_seconds must be positive, got {self.window_seconds}")
        if not (math.isfinite(self.hop_seconds) and self.hop_seconds > 0):
            problems.append(f"hop_seconds must be positive, got {self.hop_seconds}")
        if self.max_queue_delay_us < 0 or self.instance_count < 1:
            problems.append("max_queue_delay_us must be >= 0 and instance_count >= 1")
        if problems:
            raise UserError("invalid device profile: " + "; ".join(problems), self.source or None)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["fp32_ops"] = list(self.fp32_ops)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DeviceProfile:
        """The profile a dict describes (``to_dict``'s form, as astedge.json stores it); unknown keys are an error."""
        return cls(**check_fields(cls, data, "device profile", data.get("source") or None))


# TOML layout -> field names and the types each key takes.
_SCHEMA = {
    None: {"name": str, "description": str},
    "engine": {"precision": str, "min_batch": int, "opt_batch": int, "max_batch": int, "workspace_mib": int,
               "builder_optimization_level": int, "hardware_compatibility": str, "fp32_ops": list,
               "pin_layernorm": bool, "tf32": bool, "stream_batch_1": bool, "integrated_gpu": bool},
    "stream": {"window_seconds": (int, float), "hop_seconds": (int, float)},
    "triton": {"max_queue_delay_us": int, "instance_count": int},
}


def parse_profile(data: dict, source: str = "", default_name: str = "") -> DeviceProfile:
    """A :class:`DeviceProfile` from parsed TOML (``tomllib.loads``); every key and type is checked."""
    values: dict = {"name": default_name, "source": source}
    for key, value in data.items():
        if key == "notes":
            if not isinstance(value, dict):
                raise UserError("[notes] must be a table", source or None)
            values["notes"] = dict(value)
            continue
        if key in _SCHEMA and key is not None:
            if not isinstance(value, dict):
                raise UserError(f"[{key}] must be a table", source or None)
            items, section = value.items(), key
        else:
            items, section = [(key, value)], None
        for name, item in items:
            expected = _SCHEMA[section].get(name)
            where = f"{section}.{name}" if section else name
            if expected is None:
                raise UserError(f"unknown profile key {where!r}", source or None)
            if (isinstance(item, bool) and expected is not bool) or not isinstance(item, expected):
                raise UserError(f"profile key {where!r} has the wrong type ({type(item).__name__})", source or None)
            if name == "fp32_ops" and not all(isinstance(op, str) for op in item):
                raise UserError("engine.fp32_ops must be a list of ONNX op names", source or None)
            values[name] = float(item) if section == "stream" else item
    if not values["name"]:
        raise UserError("profile has no name", source or None)
    return DeviceProfile(**values)


def available_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".toml") or "/" in spec or "\\" in spec or Path(spec).is_file()


def load_profile(spec: str | Path | None = None) -> DeviceProfile:
    """The profile `spec` names (a shipped profile's name or a TOML file); None -> ``workstation``."""
    spec = str(spec) if spec is not None else DEFAULT_PROFILE
    if _looks_like_path(spec):
        path = Path(spec)
        if not path.is_file():
            raise UserError("profile file does not exist", path)
    else:
        path = PROFILE_DIR / f"{spec}.toml"
        if not path.is_file():
            raise UserError(f"unknown device profile {spec!r}; known: {', '.join(available_profiles())} "
                            "(or pass a .toml file)")
    return parse_profile(read_toml(path), source=str(path), default_name=path.stem)


def resolve_profile(profile: DeviceProfile | dict | str | Path | None, precision: str | None = None) -> DeviceProfile:
    """The profile an export or an engine build uses: `profile` (a profile, the dict ``astedge.json`` records, a
    shipped profile's name or a TOML file; None: ``workstation``) with its precision replaced by `precision` when
    one is given (:func:`astedge.precision.requested_precision` turns the export's aliases into one)."""
    if isinstance(profile, dict):
        profile = DeviceProfile.from_dict(profile)
    elif not isinstance(profile, DeviceProfile):
        profile = load_profile(profile)
    if precision is not None and precision != profile.precision:
        profile = DeviceProfile.from_dict({**profile.to_dict(), "precision": check_precision(precision)})
    return profile
