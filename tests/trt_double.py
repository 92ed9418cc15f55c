"""A recording stand-in for the `tensorrt` module that only has the names the real bindings of one version have.

`fake_tensorrt(version)` reads tests/data/tensorrt_api/<version>.txt (every Python name of the real bindings,
`Class.member` per line) and builds a module double whose every class refuses a public attribute that the
real class of that version lacks (AttributeError, as the binding would raise): code that runs against
`fake_tensorrt("10.3.0")` uses only names TensorRT 10.3 (JetPack 6) has, and so on for 10.8, 10.16 and 11.4.
Behaviour is what astedge relies on: the builder calls are recorded; an "engine" is JSON describing its
profiles; an execution context runs, as stream work on a FakeCuda, a numpy linear map (or `logits_fn`) of
its input binding into its output binding. No engine is built or run for real.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np

from gpu_doubles import read_floats

API_DIR = Path(__file__).parent / "data" / "tensorrt_api"
VERSIONS = tuple(sorted((p.stem for p in API_DIR.glob("*.txt")), key=lambda v: tuple(int(x) for x in v.split("."))))


def api(version: str) -> dict[str, set[str]]:
    """Class (or nested class, "Logger.Severity") -> public member names; "" -> the module's names."""
    names: dict[str, set[str]] = {"": set()}
    for line in (API_DIR / f"{version}.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        owner, _, member = line.rpartition(".")
        names.setdefault(owner, set()).add(member)
        if not owner:
            names[""].add(member)
    return names


class Strict:
    """Instances refuse public attributes their real class (`_api`) lacks in the version `_names` describes."""

    _api = ""
    _names: dict[str, set[str]] = {}

    def __getattribute__(self, name):
        if not name.startswith("_"):
            cls = object.__getattribute__(self, "__class__")
            if name not in cls._names.get(cls._api, ()):
                raise AttributeError(f"tensorrt {cls._version} has no {cls._api}.{name}")
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            cls = type(self)
            if name not in cls._names.get(cls._api, ()):
                raise AttributeError(f"tensorrt {cls._version} has no settable {cls._api}.{name}")
            self._sets.append((name, value))
        object.__setattr__(self, name, value)


class Namespace:
    """An enum class or the module: attributes from a dict, refusing names the version lacks."""

    def __init__(self, version, owner, names, values):
        self._version, self._owner, self._names, self._values = version, owner, names, values

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._names:
            raise AttributeError(f"tensorrt {self._version} has no {self._owner + '.' if self._owner else ''}{name}")
        return self._values[name]


def fake_tensorrt(version: str, *, cuda=None, layers=("NORMALIZATION", "MATRIX_MULTIPLY", "NORMALIZATION"),
                  parse_ok=True, build_ok=True, classes=10, logits_fn=None, inspector_json=None):
    """(module double, call log). `cuda`: a gpu_doubles.FakeCuda that execution contexts run their work on."""
    names = api(version)
    calls: list[tuple] = []
    log = calls.append

    def strict(api_name):
        return type(api_name, (Strict,), {"_api": api_name, "_names": names, "_version": version})

    def enum(owner):
        members = {m: f"{owner}.{m}" for m in names.get(owner, ()) if m not in ("name", "value")}
        return Namespace(version, owner, names.get(owner, set()), members)

    class Layer(strict("ILayer")):
        def __init__(self, kind, index):
            object.__setattr__(self, "_sets", [])
            object.__setattr__(self, "type", f"LayerType.{kind}")
            object.__setattr__(self, "name", f"layer{index}")
            object.__setattr__(self, "num_outputs", 1)

        def __setattr__(self, key, value):
            super().__setattr__(key, value)
            log(("layer." + key, self.name, value))

        def set_output_type(self, index, dtype):
            log(("layer.set_output_type", self.name, index, dtype))

    class Tensor(strict("ITensor")):
        def __init__(self, name):
            object.__setattr__(self, "_sets", [])
            object.__setattr__(self, "name", name)

    class Network(strict("INetworkDefinition")):
        def __init__(self):
            object.__setattr__(self, "_sets", [])
            object.__setattr__(self, "num_inputs", 1)
            object.__setattr__(self, "num_layers", len(layers))

        def get_input(self, index):
            return Tensor("fbank")

        def get_layer(self, index):
            return Layer(layers[index], index)

    class Parser(strict("OnnxParser")):
        def __init__(self, network, logger):
            object.__setattr__(self, "_sets", [])
            object.__setattr__(self, "num_errors", 0 if parse_ok else 1)
            log(("OnnxParser",))

        def parse_from_file(self, path):
            log(("parse_from_file", Path(path).name))
            return parse_ok

        def get_error(self, index):
            return "In node 3 (parseGraph): INVALID_NODE: unsupported op"

    class Cache(strict("ITimingCache")):
        def __init__(self, data):
            object.__setattr__(self, "_sets", [])
            object.__setattr__(self, "_data", bytes(data))

        def serialize(self):
            return b"timing:" + self._data

    class Profile(strict("IOptimizationProfile")):
        def __init__(self):
            object.__setattr__(self, "_sets", [])
            object.__setattr__(self, "_shapes", None)

        def set_shape(self, name, low, opt, high):
            log(("set_shape", name, low, opt, high))
            object.__setattr__(self, "_shapes", (tuple(low), tuple(opt), tuple(high)))
            return True

    class Config(strict("IBuilderConfig")):
        def __init__(self):
            object.__setattr__(self, "_sets", [])
            object.__setattr__(self, "_profiles", [])

        def __setattr__(self, key, value):
            super().__setattr__(key, value)
            log(("config." + key, value))

        def set_memory_pool_limit(self, pool, size):
            log(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            log(("set_flag", flag))

        def clear_flag(self, flag):
            log(("clear_flag", flag))

        def add_optimization_profile(self, profile):
            log(("add_optimization_profile",))
            self._profiles.append(profile._shapes)
            return len(self._profiles) - 1

        def create_timing_cache(self, data):
            log(("create_timing_cache", bytes(data)))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            log(("set_timing_cache", ignore_mismatch))
            object.__setattr__(self, "_cache", cache)
            return True

        def get_timing_cache(self):
            return self._cache

    class Builder(strict("Builder")):
        def __init__(self, logger):
            object.__setattr__(self, "_sets", [])

        def create_network(self, flags=0):
            log(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            log(("build_serialized_network",))
            if not build_ok:
                return None
            return json.dumps({"profiles": config._profiles, "classes": classes}).encode()

    class Inspector(strict("EngineInspector")):
        def __init__(self):
            object.__setattr__(self, "_sets", [])

        def get_engine_information(self, fmt):
            assert fmt == "LayerInformationFormat.JSON"
            assert self._sets and self._sets[-1][0] == "execution_context"  # shapes known: precisions resolved
            return inspector_json or json.dumps({"Layers": [
                {"Name": "{ForeignNode[/blocks.0/norm1/LayerNormalization...]}", "LayerType": "Myelin",
                 "Inputs": [{"Format/Datatype": "Row major linear FP32"}],
                 "Outputs": [{"Format/Datatype": "Row major linear FP32"}]}], "Bindings": ["fbank", "logits"]})

    class Context(strict("IExecutionContext")):
        def __init__(self, engine, strategy):
            object.__setattr__(self, "_sets", [])
            object.__setattr__(self, "_engine", engine)
            object.__setattr__(self, "_strategy", strategy)
            object.__setattr__(self, "_profile", 0)
            object.__setattr__(self, "_shape", None)
            object.__setattr__(self, "_addresses", {})
            object.__setattr__(self, "_memory", None)

        def set_optimization_profile_async(self, index, stream):
            log(("set_optimization_profile_async", index, stream))
            object.__setattr__(self, "_profile", index)
            return True

        def set_input_shape(self, name, shape):
            low, _, high = self._engine._profiles[self._profile]
            shape = tuple(shape)
            if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True)):
                return False
            object.__setattr__(self, "_shape", shape)
            return True

        def get_tensor_shape(self, name):
            return (self._shape[0], classes) if name == "logits" else self._shape

        def set_tensor_address(self, name, address):
            self._addresses[name] = address
            return True

        def set_device_memory(self, memory, size):
            log(("set_device_memory", size))
            object.__setattr__(self, "_memory", (memory, size))

        def execute_async_v3(self, stream):
            if self._strategy == "ExecutionContextAllocationStrategy.USER_MANAGED" and self._memory is None:
                return False  # as TensorRT: user-managed memory must be set first
            shape, source, target = self._shape, self._addresses["fbank"], self._addresses["logits"]

            def run():
                x = read_floats(source, int(np.prod(shape))).reshape(shape)
                self._engine._inputs.append(x)
                y = np.ascontiguousarray(self._engine._logits(x), np.float32)
                ctypes.memmove(target, y.ctypes.data, y.nbytes)

            cuda.submit(stream, "engine", run, shape[0])
            return True

    class Engine(strict("ICudaEngine")):
        def __init__(self, data):
            object.__setattr__(self, "_sets", [])
            description = json.loads(bytes(data))
            object.__setattr__(self, "_profiles", [tuple(map(tuple, p)) for p in description["profiles"]])
            object.__setattr__(self, "_inputs", [])
            frames, bins = self._profiles[0][0][1:]
            weights = np.random.default_rng(0).standard_normal((frames * bins, classes)).astype(np.float32)
            object.__setattr__(self, "_weights", weights)
            object.__setattr__(self, "num_io_tensors", 2)
            object.__setattr__(self, "num_optimization_profiles", len(self._profiles))

        def _logits(self, x):
            if logits_fn is not None:
                return logits_fn(x)
            return (x.reshape(len(x), -1).astype(np.float64) @ self._weights).astype(np.float32)

        def get_tensor_name(self, index):
            return ("fbank", "logits")[index]

        def get_tensor_mode(self, name):
            return "TensorIOMode.INPUT" if name == "fbank" else "TensorIOMode.OUTPUT"

        def get_tensor_dtype(self, name):
            return "DataType.FLOAT"

        def get_tensor_profile_shape(self, name, index):
            return self._profiles[index]

        def get_device_memory_size_for_profile_v2(self, index):
            return 1024 * (1 + self._profiles[index][2][0])

        def create_execution_context(self, strategy="ExecutionContextAllocationStrategy.STATIC"):
            log(("create_execution_context", strategy))
            return Context(self, strategy)

        def create_engine_inspector(self):
            return Inspector()

    class Runtime(strict("Runtime")):
        def __init__(self, logger):
            object.__setattr__(self, "_sets", [])

        def deserialize_cuda_engine(self, data):
            return Engine(data)

    values = {
        "Builder": Builder, "OnnxParser": Parser, "Runtime": Runtime,
        "Logger": type("Logger", (), {"WARNING": "Logger.WARNING", "__init__": lambda self, severity=None: None}),
        "float32": "float32", "float16": "float16",
        "nptype": lambda dtype: {"DataType.FLOAT": np.float32}[dtype],
    }
    for owner in ("BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "LayerType",
                  "HardwareCompatibilityLevel", "ProfilingVerbosity", "LayerInformationFormat", "TensorIOMode",
                  "ExecutionContextAllocationStrategy"):
        values[owner] = enum(owner)
    strongly_typed = 1 if int(version.split(".")[0]) < 11 else 0
    values["NetworkDefinitionCreationFlag"]._values["STRONGLY_TYPED"] = strongly_typed  # an int, as the real enum
    module = Namespace(version, "", names[""], values)
    module.__dict__["__version__"] = version
    return module, calls
