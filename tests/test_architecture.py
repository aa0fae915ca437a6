"""The package's shape, read from its source with ``ast`` (nothing is imported).

* No module is longer than 500 lines.
* No import cycle between the package's modules, imports inside functions included.
* Floors: the bottom floor (``errors``, the private ``_*.py`` helpers) imports no other floor; the runtime
  imports only the bottom floor; ``data`` (building the CSVs) sits on the runtime; ``export`` and ``train``
  sit on ``data`` and do not import each other; ``bench`` sits above them; the top-level CLI above everything.
* The runtime is the base install: at module level it imports only the standard library, numpy, pandas,
  onnxruntime, Pillow and the bottom floor.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "mnist_onnx"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 500

#: Third-party distributions the base install brings (import names).
RUNTIME_THIRD_PARTY = {"numpy", "pandas", "onnxruntime", "PIL"}

#: Floor of each part of the package; a module may import its own part and lower floors only.
FLOORS = {"bottom": 0, "runtime": 1, "data": 2, "export": 3, "train": 3, "bench": 4, "top": 5}


@dataclass(frozen=True)
class Import:
    """One import of a module: what it names, where, and whether it runs when the module loads."""

    importer: str
    target: str  # absolute dotted name, e.g. "numpy.linalg" or "mnist_onnx.runtime.session"
    line: int
    module_level: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names a ``from ... import ...`` statement loads: the module, or its submodules when named."""
    if node.level:
        base = importer.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in MODULES]
    # `from pkg import sub` loads pkg.sub; `from pkg import name` (or a mix) loads pkg itself.
    if submodules and len(submodules) == len(node.names):
        return submodules
    return [module, *submodules]


def _imports(name: str, source: str, is_package: bool = False) -> list[Import]:
    """Every import statement of module ``name`` that can run, with whether it runs at import time."""
    tree = ast.parse(source)
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, module_level)
            return  # imports for type checkers only never run
        if isinstance(node, ast.Import):
            found.extend(Import(name, alias.name, node.lineno, module_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.extend(Import(name, target, node.lineno, module_level) for target in _resolve(name, is_package, node))
        inner = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return found


IMPORTS = {
    name: _imports(name, path.read_text(encoding="utf-8"), path.name == "__init__.py") for name, path in MODULES.items()
}


def _own(target: str) -> str | None:
    """The package module an import loads (the longest known prefix), or None for other distributions."""
    parts = target.split(".")
    if parts[0] != PACKAGE:
        return None
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _part(module: str) -> str:
    """Which part of the package a module belongs to (a key of FLOORS)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "bottom"  # the package's __init__: the version and the lazy public names
    head = parts[1]
    if head in ("runtime", "data", "export", "train", "bench"):
        return head
    if head == "errors" or (head.startswith("_") and head != "__main__"):
        return "bottom"
    return "top"  # mnist_onnx.cli and mnist_onnx.__main__


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def test_the_source_is_found():
    # Guards the tests below against passing on an empty or misplaced package.
    assert {
        f"{PACKAGE}.runtime",
        f"{PACKAGE}.export",
        f"{PACKAGE}.train",
        f"{PACKAGE}.bench",
        f"{PACKAGE}.errors",
    } <= set(MODULES)
    assert any(imp.target.startswith(f"{PACKAGE}.") for imps in IMPORTS.values() for imp in imps)


def test_no_module_is_longer_than_500_lines():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not too_long, "modules over 500 lines: " + ", ".join(f"{k} ({v})" for k, v in sorted(too_long.items()))


def test_no_import_cycle_between_modules_counting_imports_inside_functions():
    graph = {name: {own for imp in imps if (own := _own(imp.target)) and own != name} for name, imps in IMPORTS.items()}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle_and_names_it():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


def test_imports_are_resolved_and_placed():
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from . import graph as g\n"
        "from .. import __version__\n"
        "from ..runtime.session import create_session\n"
        "if TYPE_CHECKING:\n"
        "    from ..train import recipes\n"
        "try:\n"
        "    import ray\n"
        "except ImportError:\n"
        "    pass\n"
        "def f():\n"
        "    from ..bench import suite\n"
    )
    found = {(imp.target, imp.module_level) for imp in _imports(f"{PACKAGE}.export.convert", source)}
    assert found == {
        ("__future__", True),
        ("typing", True),
        ("numpy", True),
        (f"{PACKAGE}.export.graph", True),
        (PACKAGE, True),
        (f"{PACKAGE}.runtime.session", True),
        ("ray", True),
        (f"{PACKAGE}.bench.suite", False),
    }


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_imports_only_its_own_part_and_lower_floors(name):
    part = _part(name)
    wrong = []
    for imp in IMPORTS[name]:
        own = _own(imp.target)
        if own is None:
            continue
        target_part = _part(own)
        if target_part == part:
            continue
        if FLOORS[target_part] >= FLOORS[part]:
            kind = "sideways" if FLOORS[target_part] == FLOORS[part] else "upward"
            wrong.append(f"line {imp.line}: {kind} import of {own} ({target_part}) from the {part} floor")
    assert not wrong, f"{name}: " + "; ".join(wrong)


RUNTIME_MODULES = sorted(name for name in MODULES if _part(name) == "runtime")


@pytest.mark.parametrize("name", RUNTIME_MODULES)
def test_runtime_imports_only_the_base_install_at_module_level(name):
    wrong = []
    for imp in IMPORTS[name]:
        if not imp.module_level:
            continue
        root = imp.target.split(".")[0]
        if root == PACKAGE:
            own = _own(imp.target)
            if own is None or _part(own) not in ("bottom", "runtime"):
                wrong.append(f"line {imp.line}: {imp.target}")
        elif root not in sys.stdlib_module_names and root not in RUNTIME_THIRD_PARTY:
            wrong.append(f"line {imp.line}: {imp.target}")
    assert not wrong, (
        f"{name} imports at module level what the base install (numpy, pandas, onnxruntime, "
        f"Pillow) does not bring: " + "; ".join(wrong)
    )
