"""Regenerate tests/data/tensorrt_api/<version>.txt: the Python names of the TensorRT bindings of one version.

TensorRT cannot be installed here (no GPU, no libnvinfer), but the code that builds and runs engines should
still be checked against the API of each TensorRT it targets: 10.3 (JetPack 6), 10.8, the newest 10.x and
the newest 11.x. This script lists that API from the official bindings wheels on PyPI
(`tensorrt-cu12-bindings`, `tensorrt-cu13-bindings`: the pybind11 module `tensorrt_bindings/tensorrt.so`
plus its `__init__.py`; the `tensorrt` package that users import is `from tensorrt_bindings import *`).

How: the compiled module needs only a handful of C symbols from libnvinfer/libnvonnxparser/libnvinfer_plugin
(`createInferBuilder_INTERNAL`, `getPluginRegistry`, ...), none of which it calls while importing. So the
script compiles tiny stub libraries with those symbols (each returns 0; nothing is ever called), puts them on
LD_LIBRARY_PATH and really imports the module in a child Python. The names therefore come from the live
module (`dir()`), not from guessing at strings: exact for what the module exposes, class attribution included.
Any other unresolved symbol a future wheel needs is added to the stubs from the loader's error and retried.

Output, one file per wheel, sorted, one entry per line:
  - `Name`                   every public name of `from tensorrt import *` (classes, functions, constants,
                             e.g. `Builder`, `nptype`, `float16`); stdlib modules the package happens to
                             import (os, sys, ctypes, warnings) and the `tensorrt` submodule are left out;
  - `Class.member`           every public attribute of a class, inherited ones included (so
                             `IConvolutionLayer.precision` is listed as `ILayer.precision` is): methods,
                             properties, enum members (`BuilderFlag.FP16`), nested classes;
  - `Class.Nested.member`    public attributes of a nested class (`ILogger.Severity.ERROR`).
Names starting with `_` (dunders included) are dropped. The first line is
`# tensorrt <full version> from <wheel file name>, sha256 <hex>`; further `#` lines are notes (e.g. the
`tensorrt.plugin` submodule of 10.8+, which is Python code not imported by `import tensorrt` and not listed).

Usage (needs Python 3.11 on x86_64 Linux, to match the cp311 manylinux wheels, and a C compiler `cc`):
    python benchmarks/tensorrt_api_names.py --download          # fetch the default wheels, then list them
    python benchmarks/tensorrt_api_names.py --wheels /tmp/trt-wheels --out tests/data/tensorrt_api
    python benchmarks/tensorrt_api_names.py --kinds WHEEL       # print `name<TAB>kind` for one wheel, no files
The default wheels are pinned in DEFAULT_WHEELS below; `pip index versions tensorrt-cu12-bindings` lists
what PyPI has.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "tensorrt_api"
DEFAULT_WHEEL_DIR = Path("/tmp/trt-wheels")

# (pip requirement, why): 10.3 is what JetPack 6 ships; 10.16.1.11 / 11.4.0.106 were the newest 10.x / 11.x.
DEFAULT_WHEELS = (
    ("tensorrt-cu12-bindings==10.3.0", "JetPack 6"),
    ("tensorrt-cu12-bindings==10.8.0.43", "10.8"),
    ("tensorrt-cu12-bindings==10.16.1.11", "newest 10.x"),
    ("tensorrt-cu13-bindings==11.4.0.106", "newest 11.x"),
)

# The C symbols the bindings import from the TensorRT libraries (the same nine in 10.3 to 11.4).
KNOWN_SYMBOLS = (
    "createInferBuilder_INTERNAL",
    "createInferRefitter_INTERNAL",
    "createInferRuntime_INTERNAL",
    "getPluginRegistry",
    "getBuilderPluginRegistry",
    "initLibNvInferPlugins",
    "createNvOnnxParser_INTERNAL",
    "createNvOnnxParserRefitter_INTERNAL",
    "getNvOnnxParserVersion",
)
STUB_LIBS = ("nvinfer", "nvinfer_plugin", "nvonnxparser")
DROPPED_MODULES = {"ctypes", "os", "sys", "warnings", "tensorrt"}

# Runs in the child Python, with the extracted wheel on sys.path and the stubs on LD_LIBRARY_PATH.
_INTROSPECT = r"""
import json, sys, types
ns = {}
exec("from tensorrt_bindings import *", ns)   # exactly what `import tensorrt` re-exports
import tensorrt_bindings
DROPPED = set(json.loads(sys.argv[1]))

def kind(obj):
    if isinstance(obj, type):
        return "enum" if hasattr(obj, "__members__") else "class"
    if isinstance(obj, property):
        return "property" if obj.fset is None else "property(rw)"
    if isinstance(obj, types.ModuleType):
        return "module"
    t = type(obj).__name__
    if t in ("instancemethod", "builtin_function_or_method", "function", "method"):
        return "function" if t in ("builtin_function_or_method", "function") else "method"
    if isinstance(type(obj), type) and hasattr(type(obj), "__members__") and type(obj).__module__.startswith("tensorrt"):
        return "enum value"
    return t

def members(cls):
    return [m for m in dir(cls) if not m.startswith("_")]

out = {}
for name, obj in ns.items():
    if name.startswith("_") or name in DROPPED:
        continue
    out[name] = kind(obj)
    if isinstance(obj, type):
        for m in members(obj):
            sub = getattr(obj, m)
            # a property seen through the class is the property object; look it up in the MRO dicts for kinds
            raw = next((c.__dict__[m] for c in obj.__mro__ if m in c.__dict__), sub)
            out[f"{name}.{m}"] = kind(raw)
            if isinstance(sub, type) and sub is not obj:
                for mm in members(sub):
                    raw2 = next((c.__dict__[mm] for c in sub.__mro__ if mm in c.__dict__), getattr(sub, mm))
                    out[f"{name}.{m}.{mm}"] = kind(raw2)
print(json.dumps({"version": tensorrt_bindings.__version__, "names": out}))
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_stubs(directory: Path, major: str, symbols: list[str]) -> None:
    """Compile lib{nvinfer,nvinfer_plugin,nvonnxparser}.so.<major>, each defining every symbol as `return 0`."""
    directory.mkdir(parents=True, exist_ok=True)
    src = directory / "stub.c"
    src.write_text("".join(f"long {s}(void) {{ return 0; }}\n" for s in symbols))
    for lib in STUB_LIBS:
        soname = f"lib{lib}.so.{major}"
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-o", str(directory / soname), str(src), f"-Wl,-soname,{soname}"],
            check=True,
        )


def introspect(wheel: Path, python: str = sys.executable) -> dict:
    """Import the wheel's module against stub libraries in a child `python`; return {version, names: {name: kind}}."""
    tag = wheel.name.split("-")[2]  # cp311
    have = subprocess.run([python, "-c", "import sys; print('cp%d%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    if have != tag:
        raise RuntimeError(f"{wheel.name} is for {tag} but {python} is {have}: pass --python with a matching one")
    with tempfile.TemporaryDirectory(prefix="trt-api-") as tmp:
        root = Path(tmp) / "site"
        with zipfile.ZipFile(wheel) as z:
            z.extractall(root)
        so = root / "tensorrt_bindings" / "tensorrt.so"
        needed = re.findall(rb"libnvinfer\.so\.(\d+)", so.read_bytes())
        major = needed[0].decode() if needed else wheel.name.split("-")[1].split(".")[0]
        symbols = list(KNOWN_SYMBOLS)
        for _ in range(20):
            stubs = Path(tmp) / "stubs"
            build_stubs(stubs, major, symbols)
            env = dict(os.environ, PYTHONPATH=str(root), LD_LIBRARY_PATH=str(stubs))
            env.pop("PYTHONSTARTUP", None)
            proc = subprocess.run(
                [python, "-c", _INTROSPECT, json.dumps(sorted(DROPPED_MODULES))],
                env=env, cwd=tmp, capture_output=True, text=True,
            )
            if proc.returncode == 0:
                return json.loads(proc.stdout.strip().splitlines()[-1])
            missing = re.search(r"undefined symbol: (\w+)", proc.stderr)
            if not missing or missing.group(1) in symbols:
                raise RuntimeError(f"importing {wheel.name} failed:\n{proc.stderr}")
            symbols.append(missing.group(1))
        raise RuntimeError(f"importing {wheel.name}: too many missing symbols ({symbols})")


def notes(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        files = z.namelist()
    out = [
        "# names of `from tensorrt import *` and public attributes of its classes (inherited ones included),",
        "# read with dir() from the real module imported against stub libnvinfer; regenerate with",
        "# benchmarks/tensorrt_api_names.py",
    ]
    if any(f.startswith("tensorrt_bindings/plugin/") for f in files):
        out.append("# also ships the pure-Python submodule tensorrt.plugin (import tensorrt.plugin), not listed")
    return out


def write(wheel: Path, out_dir: Path, python: str) -> Path:
    info = introspect(wheel, python)
    version = info["version"]
    lines = [f"# tensorrt {version} from {wheel.name}, sha256 {sha256(wheel)}", *notes(wheel)]
    lines += sorted(info["names"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{version}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def download(wheel_dir: Path) -> list[Path]:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    for req, _why in DEFAULT_WHEELS:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
             "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
             "--platform", "manylinux2014_x86_64", "-d", str(wheel_dir), req],
            check=True,
        )
    return sorted(wheel_dir.glob("tensorrt_cu1*_bindings-*-cp311-*x86_64.whl"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, default=DEFAULT_WHEEL_DIR, help="folder of tensorrt_cu*_bindings wheels")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--download", action="store_true", help="pip download DEFAULT_WHEELS into --wheels first")
    ap.add_argument("--python", default=sys.executable, help="a Python 3.11 to import the cp311 wheels with")
    ap.add_argument("--kinds", type=Path, help="print name<TAB>kind for this one wheel and write nothing")
    args = ap.parse_args(argv)

    if args.kinds:
        for name, k in sorted(introspect(args.kinds, args.python)["names"].items()):
            print(f"{name}\t{k}")
        return 0
    wheels = download(args.wheels) if args.download else sorted(args.wheels.glob("tensorrt_cu1*_bindings-*.whl"))
    if not wheels:
        ap.error(f"no tensorrt_cu*_bindings wheels in {args.wheels} (try --download)")
    for wheel in wheels:
        path = write(wheel, args.out, args.python)
        print(f"{wheel.name} -> {path} ({sum(1 for line in path.open() if not line.startswith('#'))} names)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
