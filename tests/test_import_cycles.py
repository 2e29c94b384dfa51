"""No import cycles between charter's modules.

Read statically like the layers test (every import statement, including those inside functions
and `TYPE_CHECKING` blocks), so a lazy import cannot hide a cycle: two modules that need each
other are one module split in the wrong place, and the first to be imported sees the other
half-made.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_layers import LAYERS, REPO

# Where each package's modules live: the `charter` directory, and the layers mapped into it.
SOURCES: dict[str, Path] = {"charter": REPO / "charter"} | {
    package: directory for directory, package, _ in LAYERS.values()
}


def modules() -> dict[str, Path]:
    """Every charter module by name, with its file."""
    found: dict[str, Path] = {}
    for package, directory in SOURCES.items():
        for path in sorted(directory.rglob("*.py")):
            relative = path.relative_to(directory).with_suffix("")
            name = ".".join([package, *(p for p in relative.parts if p != "__init__")])
            found.setdefault(name, path)
    return found


def imports(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The charter modules `source` imports. `from package import name` imports the submodule
    `name` when there is one (`from . import state`), else the package itself."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                above = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{above}.{node.module}" if node.module else above
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    """Module -> the charter modules it imports."""
    known = modules()
    return {
        name: imports(
            path.read_text(encoding="utf-8"), name, path.name == "__init__.py", set(known)
        )
        for name, path in known.items()
    }


def cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[list[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                yield from visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                yield sorted(group)

    for node in sorted(graph):
        if node not in index:
            yield from visit(node)


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert list(cycles(import_graph())) == []


def test_the_graph_sees_lazy_imports() -> None:
    """The check reads real imports, those inside functions included."""
    graph = import_graph()
    assert "charter.jobs.session" in graph["charter.cli.generate"]  # imported in the command
    assert "charter.jobs.store" in graph["charter.jobs.run"]


def test_a_submodule_imported_from_its_package_is_that_submodule() -> None:
    known = {"charter.p", "charter.p.a", "charter.p.b"}
    assert imports("from . import b", "charter.p.a", False, known) == {"charter.p.b"}
    assert imports("from charter.p import X", "charter.p.a", False, known) == {"charter.p"}
    assert imports("def f():\n    from .b import X", "charter.p.a", False, known) == {"charter.p.b"}


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_cycles_are_found(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert list(cycles(graph)) == expected
