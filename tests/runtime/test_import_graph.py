"""rune's modules import one another one way only, and its lowest modules import (almost) nothing.

Read from the source with ``ast`` (nothing is imported): every import of an
``inclavare.runtime`` module counts, also inside functions (a lazy import is still a cycle),
except those under ``if TYPE_CHECKING:``, which never run. ``pal/`` is the enclave runtimes'
own package and is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "src" / "inclavare" / "runtime"
PACKAGE = "inclavare.runtime"

# The modules everyone may import, and the only runtime modules each of them may import.
LOW_MODULES = {
    "invocation": set(),
    "host_settings": {"invocation"},  # re-exports DEFAULT_RUNC_ROOT, which Invocation.root needs
    "runc_process": {"host_settings", "oci_log"},  # lazily, only to report a runc that fails to start
}
# What each of them (and rune_entry, which they serve) imports when it is loaded.
MODULE_LEVEL_IMPORTS = {
    "invocation": set(),
    "host_settings": {"posix", "inclavare.immutable", f"{PACKAGE}.invocation"},
    "runc_process": {"posix"},
    "rune_entry": {"posix", "sys", f"{PACKAGE}.invocation", f"{PACKAGE}.host_settings",
                   f"{PACKAGE}.runc_process"},
}
# The intended direction, so that a parser that finds nothing cannot pass the test.
EXPECTED_EDGES = [("rune_entry", "rune_cli"), ("rune_cli", "enclave_create"), ("enclave_create", "enclave_prepare"),
                  ("rune_cli", "enclave_commands"), ("enclave_commands", "container_commands"),
                  ("rune_cli", "container_commands")]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    """Full names of what an import statement loads (``from P import m`` may load module P.m)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative to a module directly in inclavare.runtime
        base = PACKAGE.split(".")[: len(PACKAGE.split(".")) - (node.level - 1)]
        module = ".".join([*base, *([node.module] if node.module else [])])
    else:
        module = node.module or ""
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


class _Imports(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(_imported_names(node))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.names.update(_imported_names(node))


def runtime_modules(runtime: Path) -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(runtime.glob("*.py")) if p.stem != "__init__"}


def import_graph(runtime: Path) -> dict[str, set[str]]:
    """module -> the runtime modules it imports anywhere (module level or inside functions)."""
    trees = runtime_modules(runtime)
    graph: dict[str, set[str]] = {}
    for name, tree in trees.items():
        visitor = _Imports()
        visitor.visit(tree)
        graph[name] = {n[len(PACKAGE) + 1:].split(".")[0] for n in visitor.names if n.startswith(PACKAGE + ".")}
        graph[name] &= trees.keys()
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def module_level_imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names.add(_imported_names(node)[0])
    return names


def test_runtime_modules_import_without_cycles() -> None:
    graph = import_graph(RUNTIME)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_intended_direction_is_seen() -> None:
    graph = import_graph(RUNTIME)
    missing = [(a, b) for a, b in EXPECTED_EDGES if b not in graph.get(a, set())]
    assert missing == []


@pytest.mark.parametrize("module", sorted(LOW_MODULES))
def test_low_modules_import_only_each_other(module: str) -> None:
    graph = import_graph(RUNTIME)
    assert module in graph, f"no module inclavare.runtime.{module}"
    imported = graph[module]
    assert imported <= LOW_MODULES[module], f"{module} imports {sorted(imported - LOW_MODULES[module])}"


@pytest.mark.parametrize("module", sorted(MODULE_LEVEL_IMPORTS))
def test_fast_path_modules_load_only_posix_and_each_other(module: str) -> None:
    trees = runtime_modules(RUNTIME)
    assert module in trees, f"no module inclavare.runtime.{module}"
    assert module_level_imports(trees[module]) == MODULE_LEVEL_IMPORTS[module]
