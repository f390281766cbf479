"""Which ``madapter`` source files a stage really uses: its module plus everything it imports.

Walks ``import`` statements with :mod:`ast` (including imports inside functions, which the
stage modules use to keep start-up fast), following only modules of this repository.  The
dvc.yaml test compares this set with each stage's ``deps`` so a new helper module cannot be
forgotten (a forgotten dep means DVC would not re-run the stage when that code changes).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("madapter",)


def module_file(repo: Path, module: str) -> Path | None:
    """``madapter.data.store.decode`` -> ``madapter/data/store/decode.py`` (or the package ``__init__.py``)."""
    base = repo.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m.split(".")[0] in PACKAGES}


def stage_sources(repo: Path, module: str) -> set[str]:
    """Repository-relative paths of every madapter file ``module`` imports, transitively.

    Empty package ``__init__.py`` files are left out: they carry no behaviour.
    """
    seen: set[str] = set()
    files: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        path = module_file(repo, current)
        if path is None:
            continue
        if path.name != "__init__.py" or path.read_text().strip():
            files.add(path.relative_to(repo).as_posix())
        # importing a.b.c also runs a/__init__.py and a/b/__init__.py
        parts = current.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imported_modules(path, current))
    return files
