"""The house has no import circle: not in the library, the flows, the benchmarks or the acceptance
check.  A circle means two modules that cannot be read (or moved, or tested) one without the other;
``benchmarks/bench.py`` <-> ``benchmarks/report.py`` was one.

The graph is the one ``make dvc-deps`` derives stage deps from (:func:`pipelines.dvc_deps.imported_modules`:
every import statement, inside functions too), over the files of the packages below.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.dvc_deps import imported_modules, module_file
from tests.common.processes import REPO

PACKAGES = ("madapter", "pipelines", "benchmarks", "infra")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of PACKAGES it imports}``, names resolved to files of this checkout."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = {t for t in imported_modules(path, name, PACKAGES) if module_file(REPO, t) is not None}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (``[a, b, ..., a]``), or None: a depth-first search for a back edge."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (circle := visit(target)):
                return circle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges into a package's ``__init__`` from its own submodules are how Python imports packages
    (``import a.b`` runs ``a/__init__.py``), not a design circle: dropped."""
    return {m: {t for t in targets if not m.startswith(f"{t}.")} for m, targets in graph.items()}


def test_the_graph_covers_every_package() -> None:
    graph = import_graph()
    for package in PACKAGES:
        assert any(m == package or m.startswith(f"{package}.") for m in graph), f"{package}/ not in the graph"
    assert "benchmarks.harness" in graph and "pipelines.flows" in graph


def test_no_import_circle_anywhere() -> None:
    circle = find_circle(_without_package_inits(import_graph()))
    assert circle is None, "import circle: " + " -> ".join(circle)


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": set(), "c": {"a", "b"}}, None),
])
def test_the_circle_finder_finds_a_circle_and_only_one(graph, expected) -> None:
    assert find_circle(graph) == expected
