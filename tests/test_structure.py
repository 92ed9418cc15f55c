"""The package's shape: every module imports, and no two modules import each other, directly or through others.

Imports inside functions count too (a cycle hidden in a function is still a cycle): the graph is read from
each module's syntax tree, not from what happens to be imported at start-up.
"""

from __future__ import annotations

import ast
import importlib
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


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The astedge modules `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            targets.update(f"{module}.{alias.name}" for alias in node.names)  # `from astedge import features`
    out = set()
    for target in targets:
        while target and target not in known:  # `astedge.backends.tensorrt.EngineRunner` -> its module
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
    assert "astedge.features" in graph["astedge.windows"]
    assert cycles(graph) == []


def test_backends_package_imports_are_resolved():
    graph = import_graph()
    assert "astedge.backends" in graph["astedge.backends.onnxruntime"]
    assert "astedge.backends.tensorrt" in graph["astedge.engine"]


@pytest.mark.parametrize("name", sorted(set(modules()) - {"astedge.__main__"}))  # __main__ runs the CLI
def test_every_module_imports(name):
    importlib.import_module(name)


def test_every_package_is_installed_by_pyproject():
    """pyproject lists packages explicitly (export/ maps to astedge.device_profiles): a new folder must be listed."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"not installed by pyproject.toml: {sorted(found - listed)}"
    assert "astedge.device_profiles" in listed
