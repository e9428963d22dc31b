"""The package's import graph: layers import downward only, and nothing imports in a cycle,
counting imports inside functions and under TYPE_CHECKING (a lazy import is for start-up time,
never to hide a cycle). The layers, lowest first, are the ones the README's Layout draws."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cpfmap"
LAYERS = [
    {"cpfmap.version", "cpfmap.errors", "cpfmap.clock", "cpfmap.redact", "cpfmap.resources"},
    {"cpfmap.protocol"},
    {"cpfmap.language"},
    {"cpfmap.http"},
    {"cpfmap.recording"},
    {"cpfmap.runtime"},
    {"cpfmap.authoring"},
    {"cpfmap.packaging"},
    {"cpfmap.conformance"},
    {"cpfmap.api"},
    {"cpfmap.cli", "cpfmap.__main__"},
]
# Only http/ speaks HTTP; the others reach a backend through its Transport interface.
ONLY_HTTP = {"requests", "urllib3"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    if module == "cpfmap":  # the package's facade: re-exports the embedding API, imported lazily
        return len(LAYERS) - 1
    for index, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the README's Layout")


def imports(path: Path) -> set[str]:
    """Every cpfmap module the file imports, wherever the import statement stands."""
    found: set[str] = set()
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """module -> the cpfmap modules it imports. `from pkg import mod` counts as importing
    pkg.mod; a package that Python imports on the way to a submodule does not count."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        found = {m for m in imports(path) if m in modules and m != name}
        edges[name] = {m for m in found if not any(other.startswith(m + ".") for other in found)}
    return edges


GRAPH = graph()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    upward = sorted(m for m in GRAPH[module] if m != "cpfmap" and layer_of(m) > layer_of(module))
    assert not upward, f"{module} (layer {layer_of(module)}) imports a higher layer: {upward}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_only_http_imports_requests(module):
    path = next(p for p in PACKAGE.rglob("*.py") if module_name(p) == module)
    foreign = {m.split(".")[0] for m in imports(path)} & ONLY_HTTP
    assert not foreign or module.startswith("cpfmap.http"), f"{module} imports {foreign}"


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if nxt == "cpfmap":
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


def test_package_root_imports_lazily():
    """`import cpfmap` loads only the version: the command line starts without the engine."""
    assert GRAPH["cpfmap"] <= {"cpfmap.version", "cpfmap.api", "cpfmap.errors", "cpfmap.language.catalog",
                               "cpfmap.language.model", "cpfmap.http.transport"}
