"""The code deps of each ``dvc.yaml`` stage, derived from the import graph; check or rewrite them.

A stage's code deps are its module (:data:`madapter.stages.STAGES`) plus every ``madapter`` file
it imports, transitively: walked with :mod:`ast` (imports inside functions too, which stage
modules use to start fast).  A forgotten dep means DVC would not re-run the stage when that code
changes; an extra one re-runs it for nothing.  ``dvc.yaml`` is never edited by hand for these::

    python -m pipelines.dvc_deps --write   # after moving or adding a module (make dvc-deps)
    python -m pipelines.dvc_deps           # exit 1 and list the drift (tests/pipeline does this)

Only the ``madapter/...`` lines of each stage's ``deps`` are rewritten; data deps, params, outs
and comments stay as they are.
"""

from __future__ import annotations

import ast
import logging
import re
import sys
from pathlib import Path

from madapter.stages import STAGES

PACKAGES = ("madapter",)


def module_file(repo: Path, module: str) -> Path | None:
    """``madapter.data.store.decode`` -> ``madapter/data/store/decode.py`` (or the package ``__init__.py``)."""
    base = repo.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, module: str, packages: tuple[str, ...] = PACKAGES) -> set[str]:
    """The modules of ``packages`` that ``path`` (module ``module``) imports, at any depth of its code
    (imports inside functions too); ``from pkg import name`` counts ``pkg`` and ``pkg.name``."""
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
    return {m for m in found if m.split(".")[0] in packages}


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
        todo.extend(imported_modules(path, current))
    return files


NOT_A_DEP = frozenset({"madapter/__init__.py"})
"""The package marker (version string + NullHandler): changing it changes no stage's output."""

REPO_ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger(__name__)


def expected_code_deps(repo: Path) -> dict[str, list[str]]:
    """``{stage: sorted madapter/... files it imports}`` for every stage of :data:`STAGES`."""
    return {stage.name: sorted(stage_sources(repo, stage.module) - NOT_A_DEP) for stage in STAGES}


_STAGE_HEADER = re.compile(r"^  (?P<name>[\w-]+):\s*$")
_DEPS_KEY = re.compile(r"^    deps:\s*$")
_DEP_ITEM = "      - "
_CODE_DEP = re.compile(r"^      - madapter/\S+\.py\s*$")


def rewrite_code_deps(text: str, expected: dict[str, list[str]]) -> str:
    """``dvc.yaml`` text with each stage's ``- madapter/...`` dep lines replaced by ``expected``.

    Line-based, so comments and layout survive (a YAML round trip would drop them).  The data
    deps stay first, in their order; the code deps follow them, sorted.
    """
    out: list[str] = []
    stage: str | None = None
    pending: list[str] | None = None  # the code deps still to write at the end of this deps list

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            out.extend(f"{_DEP_ITEM}{dep}\n" for dep in pending)
            pending = None

    for line in text.splitlines(keepends=True):
        if pending is not None and not (line.startswith("      ") or not line.strip()):
            flush()  # the deps list ended
        header = _STAGE_HEADER.match(line)
        if header:
            stage = header["name"]
        elif _DEPS_KEY.match(line) and stage in expected:
            pending = list(expected[stage])
        elif pending is not None and _CODE_DEP.match(line):
            continue  # replaced by the expected list
        out.append(line)
    flush()
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    """``--write`` rewrites dvc.yaml; without it, report drift and exit 1 when there is some."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = REPO_ROOT / "dvc.yaml"
    text = path.read_text()
    new = rewrite_code_deps(text, expected_code_deps(REPO_ROOT))
    if new == text:
        logger.info("%s: code deps match the import graph", path)
        return 0
    if "--write" in args:
        path.write_text(new)
        logger.info("%s: code deps rewritten from the import graph", path)
        return 0
    logger.error("%s: code deps differ from the import graph; run: python -m pipelines.dvc_deps --write", path)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
