"""The package's shape: every module imports, no two modules import each other (directly or through others), every
import points down the pipeline's stages, and the runtime side imports without torch.

Imports inside functions count too (a cycle hidden in a function is still a cycle): the graph is read from
each module's syntax tree, not from what happens to be imported at start-up.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import astedge

PACKAGE = Path(astedge.__file__).resolve().parent


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module in the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_statements(name: str, path: Path):
    """(module, names) of every import statement in the file of module `name`, in functions too; relative imports
    resolved; ``import a.b`` gives (``a.b``, [])."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, [alias.name for alias in node.names]


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The astedge modules `name` imports anywhere in its file."""
    targets: set[str] = set()
    for module, names in import_statements(name, path):
        targets.add(module)
        targets.update(f"{module}.{alias}" for alias in names)  # `from astedge import features`
    out = set()
    for target in targets:
        while target and target not in known:  # `astedge.runtime.backends.tensorrt.EngineRunner` -> its module
            target = target.rpartition(".")[0]
        if target and target != name and target != "astedge":
            out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert graph["astedge.cli"]  # the graph is really read
    assert "astedge.features.fbank" in graph["astedge.runtime.windows"]
    assert cycles(graph) == []


def test_backends_package_imports_are_resolved():
    graph = import_graph()
    assert "astedge.runtime.backends" in graph["astedge.runtime.backends.onnxruntime"]
    assert "astedge.runtime.backends.tensorrt" in graph["astedge.deploy.engine"]


#: The stages, top to bottom: a module may import its own stage and those below it, never one above.
#: Modules directly in astedge/ (artefact, timing, files, errors, verify) are shared leaves at the bottom;
#: demo is an orchestration like the CLI.
STAGES = ("cli", "demo", "train", "measure", "deploy", "runtime", "model", "data", "features", "audio")
#: Stages that must import without torch, timm or ONNX (a Jetson runtime has TensorRT and numpy).
TORCH_FREE = ("audio", "features", "runtime")
HEAVY = ("torch", "timm", "torchvision", "onnx", "onnxruntime", "onnxscript", "onnxslim", "transformers")


def stage_rank(name: str) -> int:
    """0 for the shared leaves, then 1 (audio) up to len(STAGES) (cli)."""
    parts = name.split(".")
    stage = parts[1] if len(parts) > 1 else ""
    return len(STAGES) - STAGES.index(stage) if stage in STAGES else 0


def backward_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if a != "astedge.__main__" and stage_rank(b) > stage_rank(a))


def test_the_stage_check_finds_backward_arrows():
    assert backward_arrows({"astedge.runtime.windows": {"astedge.deploy.export"}}) == \
        [("astedge.runtime.windows", "astedge.deploy.export")]
    assert backward_arrows({"astedge.deploy.export": {"astedge.runtime.windows", "astedge.errors"}}) == []


def test_every_import_points_down_the_stages():
    graph = import_graph()
    assert {name.split(".")[1] for name in graph if name.count(".")} >= set(STAGES) - {"demo"}  # stages exist
    assert backward_arrows(graph) == []


def test_runtime_stages_import_without_torch():
    """audio, features, runtime (every backend module: each imports its runtime lazily) and the engine build import
    with torch, timm and ONNX blocked, and none of those is imported along the way."""
    script = f"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
names = ["astedge.deploy.engine"]
for stage in {TORCH_FREE!r} + ("runtime.backends",):
    package = importlib.import_module("astedge." + stage)
    names += ["astedge." + stage + "." + m.name for m in pkgutil.iter_modules(package.__path__)]
for name in names:
    importlib.import_module(name)
print(len(names), sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, heavy = done.stdout.split(" ", 1)
    assert int(count) >= 15 and heavy.strip() == "[]"


def test_every_module_has_a_docstring():
    """Every module says why it exists (and parses)."""
    missing = [name for name, path in modules().items()
               if name != "astedge.__main__" and not ast.get_docstring(ast.parse(path.read_text()))]
    assert missing == []


def unresolved_imports(name: str, path: Path) -> list[str]:
    """The astedge modules and names that module `name` imports (in functions too, which run only when called) but
    that do not exist: a lazy ``from astedge.x import renamed`` fails only when its function first runs."""
    import importlib.util

    missing = []
    for module, names in import_statements(name, path):
        if module.split(".")[0] != "astedge":
            continue
        try:
            target = importlib.import_module(module)
        except ImportError as err:
            missing.append(f"{module} ({err})")
            continue
        is_package = hasattr(target, "__path__")  # its submodules count as names too
        missing += [f"{module}.{alias}" for alias in names if alias != "*" and not hasattr(target, alias)
                    and not (is_package and importlib.util.find_spec(f"{module}.{alias}"))]
    return missing


def test_the_import_check_finds_a_name_that_does_not_exist(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("def later():\n    from astedge.features.fbank import fbank, no_such_function\n"
                      "    from astedge.no_such_module import x\n    import astedge.audio.decode\n")
    assert unresolved_imports("astedge.probe", source) == [
        "astedge.features.fbank.no_such_function", "astedge.no_such_module (No module named 'astedge.no_such_module')"]


def test_every_module_imports_and_every_name_it_imports_exists():
    found = modules()
    for name in sorted(set(found) - {"astedge.__main__"}):  # __main__ runs the CLI
        importlib.import_module(name)
    assert {name: missing for name, path in found.items() if (missing := unresolved_imports(name, path))} == {}


def test_every_package_is_installed_by_pyproject():
    """pyproject lists packages explicitly (export/ maps to astedge.device_profiles): a new folder must be listed."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"not installed by pyproject.toml: {sorted(found - listed)}"
    assert "astedge.device_profiles" in listed


def test_no_function_over_80_lines_and_no_module_over_500():
    """The house rule of the restructure (issue 23): long functions and modules are split where they grow."""
    package = Path(__file__).resolve().parents[1] / "astedge"
    long_modules, long_functions = [], []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > 500:
            long_modules.append(f"{path.relative_to(package)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{path.relative_to(package)}:{node.lineno} {node.name}")
    assert not long_modules and not long_functions, long_modules + long_functions
