"""The layers import downwards only (docs/architecture.md, "Where the code is"):

    schemas  <-  connectors  <-  streams  <-  services  <-  infra (dev tooling, the stack)

Checked on the source (every import statement, those inside functions too): a layer imports
nothing above it, nothing in the production layers imports the dev tooling in ``infra``,
``services`` uses no private name of ``streams``, and no module is part of an import cycle
(a cycle through a deferred import would still tie the two modules' designs together).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("schemas", "connectors", "streams", "services", "infra")
#: What each layer may import of the project's own.
MAY_IMPORT = {
    "schemas": {"schemas"},
    "connectors": {"schemas", "connectors"},
    "streams": {"schemas", "connectors", "streams"},
    "services": {"schemas", "connectors", "streams", "services"},
    "infra": set(LAYERS),
}
#: Imports of the dev tooling from a production layer, each with the reason it is allowed.
DEV_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {
    # The one `fairstream` command line offers the dev tooling (`fairstream dev up`, the
    # demo, a static origin, the synthetic catalogue) beside the production commands: its
    # composition root registers their command modules, and reads the embedded stack's
    # address when no --broker/--store is given (README's first command).
    ("services.cli.main", "infra.devtools.dev_cli"): "the CLI's `dev`, `origin`, `demo`",
    ("services.cli.main", "infra.devtools.catalogue_cli"): "the CLI's `catalogue` commands",
    ("services.cli.options", "infra.devstack"): "the embedded stack's address as default",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports(name: str, path: Path) -> Iterator[tuple[str, set[str]]]:
    """Each project module ``name`` imports, with the names it takes from it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, set()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                # ``from infra import devstack`` imports the module infra.devstack.
                submodule = f"{target}.{alias.name}"
                yield (submodule, set()) if submodule in KNOWN else (target, {alias.name})


def own(target: str, known: dict[str, Path]) -> str | None:
    """The project module ``target`` names (a module or a package), or None for a library."""
    if target.split(".")[0] not in LAYERS:
        return None
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


KNOWN = modules()
GRAPH: dict[str, set[str]] = {}
NAMES: dict[tuple[str, str], set[str]] = {}
for _name, _path in KNOWN.items():
    GRAPH[_name] = set()
    for _target, _names in imports(_name, _path):
        _module = own(_target, KNOWN)
        if _module is not None and _module != _name:
            GRAPH[_name].add(_module)
            NAMES.setdefault((_name, _module), set()).update(_names)


def test_the_project_is_found() -> None:
    assert {"schemas.trust", "connectors.store", "streams.node", "services.cli.main"} <= set(KNOWN)
    assert "connectors.object_store" in GRAPH["streams.replication"]
    assert "infra.devstack" in GRAPH["infra.devtools.demo"]
    assert {"infra.devtools.dev_cli", "infra.devtools.catalogue_cli"} <= GRAPH["services.cli.main"]


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.split(".")[0] == layer
        for target in targets
        if target.split(".")[0] not in MAY_IMPORT[layer]
        if (name, target) not in DEV_IMPORTS_ALLOWED
    )
    assert wrong == []


def test_no_production_module_imports_the_dev_tooling_but_where_a_reason_is_written() -> None:
    found = {
        (name, target)
        for name, targets in GRAPH.items()
        if name.split(".")[0] != "infra"
        for target in targets
        if target.split(".")[0] == "infra"
    }
    assert found == set(DEV_IMPORTS_ALLOWED)


def test_services_use_no_private_name_of_streams() -> None:
    private = sorted(
        f"{name} takes {sorted(n for n in names if n.startswith('_'))} from {target}"
        for (name, target), names in NAMES.items()
        if name.startswith("services") and target.startswith("streams")
        if any(n.startswith("_") for n in names)
    )
    assert private == []


def test_no_module_is_part_of_an_import_cycle() -> None:
    # Tarjan's strongly connected components: any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert cycles == []
