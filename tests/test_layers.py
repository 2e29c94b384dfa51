"""Dependencies point one way: each layer imports only itself and the layers below it.

charter (CLI, service, store) -> trainer -> judge -> constitution -> common. Read statically
(every import statement, including those inside functions and `TYPE_CHECKING` blocks), so a
lazy import cannot hide a wrong-way dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Layer -> (its source directory, the package it installs as, the layers it may import).
LAYERS: dict[str, tuple[Path, str, frozenset[str]]] = {
    "common": (REPO / "charter" / "common", "charter.common", frozenset()),
    "constitution": (REPO / "constitution", "charter.constitution", frozenset({"common"})),
    "judge": (REPO / "judge", "charter.judge", frozenset({"constitution", "common"})),
    "trainer": (
        REPO / "trainer",
        "charter.trainer",
        frozenset({"judge", "constitution", "common"}),
    ),
}


def layer_of(module: str) -> str | None:
    """The layer a `charter...` module belongs to ("charter" for the top layer), None if not
    charter's."""
    if module != "charter" and not module.startswith("charter."):
        return None
    for name, (_, package, _) in LAYERS.items():
        if module == package or module.startswith(package + "."):
            return name
    return "charter"


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield node.lineno, target
            # `from charter import jsonl` imports the module charter.jsonl.
            if target in ("charter", *(p for _, p, _ in LAYERS.values())):
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"


def layer_imports(layer: str) -> Iterator[tuple[str, str]]:
    """(`file:line`, imported module) for every import in the layer's source files."""
    directory, package, _ = LAYERS[layer]
    for path in sorted(directory.rglob("*.py")):
        relative = path.relative_to(directory).with_suffix("")
        module = ".".join([package, *(p for p in relative.parts if p != "__init__")])
        source = path.read_text(encoding="utf-8")
        for line, target in imported_modules(source, module, path.name == "__init__.py"):
            yield f"{path.relative_to(REPO)}:{line}", target


def violations(layer: str) -> Iterator[str]:
    """`file:line: imports X (layer Y)` for each import `layer` may not make."""
    allowed = LAYERS[layer][2]
    for where, target in layer_imports(layer):
        found = layer_of(target)
        if found is not None and found != layer and found not in allowed:
            yield f"{where}: imports {target} (layer {found})"


@pytest.mark.parametrize("layer", list(LAYERS))
def test_layer_imports_only_itself_and_the_layers_below(layer: str) -> None:
    directory = LAYERS[layer][0]
    assert len(list(directory.rglob("*.py"))) >= 2  # the layer is where this test looks
    assert list(violations(layer)) == []


def test_lower_layers_are_imported_where_expected() -> None:
    """The check sees real imports: each layer above common uses the ones it may."""
    seen = {layer: {layer_of(target) for _, target in layer_imports(layer)} for layer in LAYERS}
    assert "common" in seen["judge"] and "common" in seen["trainer"]
    assert "constitution" in seen["judge"] and "judge" in seen["trainer"]


# The HTTP service sits on top of the charter layer: its modules import the core (jobs, store,
# judge), never the other way round. Besides the service itself, only the command that runs it
# and its Python client (which speaks its request and response schemas) may import it.
SERVICE = "charter.service"
SERVICE_USERS = frozenset({Path("charter/cli/serve.py"), Path("charter/client.py")})


def service_imports() -> Iterator[tuple[Path, str]]:
    """(`file`, `file:line: imports X`) for each import of the service by a module under
    charter/ outside charter/service/."""
    root = REPO / "charter"
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] == "service":
            continue
        module = ".".join(
            ["charter", *(p for p in relative.with_suffix("").parts if p != "__init__")]
        )
        source = path.read_text(encoding="utf-8")
        for line, target in imported_modules(source, module, path.name == "__init__.py"):
            if target == SERVICE or target.startswith(SERVICE + "."):
                where = path.relative_to(REPO)
                yield where, f"{where}:{line}: imports {target}"


def test_only_the_service_imports_the_service() -> None:
    found = list(service_imports())
    assert [line for path, line in found if path not in SERVICE_USERS] == []
    assert {path for path, _ in found} == SERVICE_USERS  # the check sees real imports


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from charter.jsonl import x", "charter.judge.qualify", "charter.jsonl"),
        ("from charter import jsonl", "charter.judge.qualify", "charter.jsonl"),
        ("import charter.cli.main", "charter.trainer.dpo", "charter.cli.main"),
        ("def f():\n    from charter.store import open_store", "charter.judge.x", "charter.store"),
        ("from ..config import X", "charter.judge.backends.base", "charter.judge.config"),
        ("from . import y", "charter.common.datafiles", "charter.common.y"),
    ],
)
def test_imports_are_found_and_resolved(source: str, module: str, expected: str) -> None:
    assert expected in [target for _, target in imported_modules(source, module, False)]
