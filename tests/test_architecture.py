"""The architecture, checked: layers import only downward, no import circles, and only the
MXNet backend imports MXNet. Imports are read from the source with `ast`, those inside
functions included (a deferred import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

from deepar_cli.backends import BACKENDS, get_backend
from deepar_cli.config.hyperparameters import LIKELIHOODS

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "deepar_cli"

# The layers, lowest first, by the first name under deepar_cli ("" is the package itself,
# which re-exports the API): a module imports its own layer and the layers below only.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("errors", "atomic", "jsontext", "interrupts", "threads", "version"),
    ("config",),
    ("data",),
    ("backends",),
    ("model",),
    ("evaluation",),
    ("training", "inference"),
    ("serve", "tune"),
    ("api", ""),
    ("cli", "__main__"),
)
# Deep-learning frameworks, and the one subpackage that may import each.
FRAMEWORKS = {"mxnet": "deepar_cli.backends.mxnet", "gluonts.mx": "deepar_cli.backends.mxnet"}


def modules() -> Dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = modules()


def imported_names(module: str) -> Iterator[str]:
    """The dotted names `module` imports, at any depth of its code: `from a import b` gives
    "a.b", which is module a.b or a name in module a."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` packages up
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield from (f"{base}.{alias.name}" for alias in node.names)


def own_module(name: str) -> str:
    """The package's module a dotted name lies in ("" if none): the longest prefix that is
    a module."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def graph() -> Dict[str, Set[str]]:
    """module -> the package's modules it imports."""
    return {module: {target for name in imported_names(module)
                     if (target := own_module(name)) and target != module}
            for module in MODULES}


def layer(module: str) -> int:
    name = module[len(PACKAGE) + 1:].split(".")[0] if module != PACKAGE else ""
    for index, names in enumerate(LAYERS):
        if name in names:
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def tangles(edges: Dict[str, Set[str]]) -> List[Set[str]]:
    """The strongly connected components of two or more modules (Tarjan's algorithm): each
    module of one reaches every other through imports."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    components: List[Set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return components


def cycle(edges: Dict[str, Set[str]], component: Set[str]) -> List[str]:
    """A shortest path from the component's first module back to itself, inside it."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for other in sorted(edges[node] & component):
            if other == start:
                return paths[node] + [start]
            if other not in paths:
                paths[other] = paths[node] + [other]
                frontier.append(other)
    raise AssertionError(f"no cycle through {sorted(component)}")


# --------------------------------------------------------------------------- the checks


def test_only_the_mxnet_backend_imports_mxnet() -> None:
    offenders = sorted(
        f"{module} imports {name}"
        for module in MODULES for name in imported_names(module)
        for framework, owner in FRAMEWORKS.items()
        if (name == framework or name.startswith(framework + "."))
        and not (module == owner or module.startswith(owner + ".")))
    assert offenders == []


def test_only_the_registry_reaches_a_backend() -> None:
    """The rest of the package uses the interface: a backend's subpackage is imported by
    name, through deepar_cli.backends.get_backend, and by nothing else."""
    subpackages = {owner for owner in FRAMEWORKS.values()}
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in graph().items() for target in targets
        for subpackage in subpackages
        if (target == subpackage or target.startswith(subpackage + "."))
        and not (module == subpackage or module.startswith(subpackage + ".")))
    assert offenders == []


def test_no_import_circles() -> None:
    edges = graph()
    found = []
    for component in tangles(edges):
        path = cycle(edges, component)
        rest = sorted(component - set(path))
        found.append(" -> ".join(path) + (f" (tangled with {', '.join(rest)})"
                                          if rest else ""))
    assert found == [], "import circles: " + "; ".join(found)


def test_layers_import_only_downward() -> None:
    upward = sorted(f"{module} imports {target}"
                    for module, targets in graph().items() for target in targets
                    if layer(target) > layer(module))
    assert upward == []


def test_every_package_says_what_it_owns_and_may_import() -> None:
    for module, path in MODULES.items():
        if path.name == "__init__.py" and module != PACKAGE:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "May import" in doc, f"{module}: its docstring says not what it may import"


def test_the_checks_see_what_they_check() -> None:
    """The scanner finds function-level imports and names circles; the graph holds the
    package's real dependencies."""
    edges = graph()
    assert "deepar_cli.api" in edges["deepar_cli"]  # imported inside __getattr__
    assert "deepar_cli.evaluation.backtest" in edges["deepar_cli.training"]
    toy = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a"}}
    assert tangles(toy) == [{"a", "b", "c"}]
    assert cycle(toy, {"a", "b", "c"}) == ["a", "b", "a"]
    assert layer("deepar_cli.backends.mxnet.sampling") < layer("deepar_cli.model.modelfolder")


def test_every_backend_implements_every_likelihood() -> None:
    """A likelihood is refused, never mapped to another, where a backend lacks it: the
    registered backends implement SageMaker's whole list."""
    for name in BACKENDS:
        backend = get_backend(name)
        assert backend.name == name
        assert backend.likelihoods == LIKELIHOODS
