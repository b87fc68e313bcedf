"""The library's layout shows the stages, and imports flow one way (issue 24, item 4).

Every module of ``curation/`` sits in one stage folder; a module imports only from its own stage
or a stage below it in :data:`STAGES`: every ``import`` statement counts, at the top of a module
or inside a function (a deliberately lazy import, kept out of the ``releases`` commands' start-up,
still points down).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The stage folders of ``curation/``, lowest first (``docs/architecture.md``, "Layout").
STAGES = ("core", "datasets", "ingest", "validate", "normalize", "match", "publish")


def stage_of(module: str) -> int | None:
    """The rank of the stage a ``curation`` module name belongs to; ``None`` for other packages
    and for names outside the stage folders (``curation`` itself, its ``__version__``)."""
    parts = module.split(".")
    if parts[0] != "curation" or len(parts) == 1 or parts[1] not in STAGES:
        return None
    return STAGES.index(parts[1])


def imported(module: str, node: ast.AST) -> list[str]:
    """The absolute names an import statement imports (relative imports resolved against
    ``module``): ``from a.b import c`` gives ``a.b`` and ``a.b.c``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".")[: -node.level]
        base = ".".join([*package, *([base] if base else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def upward_imports(root: Path) -> list[str]:
    """``path:line: importer -> imported`` for each import of ``curation/`` that points to a
    higher stage, and each module outside the stage folders."""
    problems = []
    for path in sorted((root / "curation").rglob("*.py")):
        module = module_name(root, path)
        relpath = path.relative_to(root).as_posix()
        own = stage_of(module)
        if own is None and module != "curation":
            problems.append(f"{relpath}: not in a stage folder {STAGES}")
            continue
        own = own or 0  # curation/__init__.py (the package's version): the bottom
        for node in ast.walk(ast.parse(path.read_text(), relpath)):
            for name in imported(module, node):
                target = stage_of(name)
                if target is not None and target > own:
                    problems.append(f"{relpath}:{node.lineno}: {module} -> {name}")
    return problems


def test_every_module_sits_in_a_stage_and_imports_only_downward():
    assert upward_imports(REPO) == []


def test_the_stage_folders_are_the_packages():
    """The declared stages are the library's folders (a new folder gets its place here)."""
    folders = {
        p.name
        for p in (REPO / "curation").iterdir()
        if p.is_dir() and (p / "__init__.py").is_file()
    }
    assert folders == set(STAGES)


def _library(tmp_path: Path, files: dict[str, str]) -> Path:
    for relpath, text in files.items():
        path = tmp_path / "curation" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_an_upward_import_is_found_even_inside_a_function(tmp_path: Path):
    root = _library(
        tmp_path,
        {
            "__init__.py": "",
            "core/__init__.py": "",
            "core/fine.py": "from curation import __version__\nfrom curation.core import bounds\n",
            "core/up.py": "def f():\n    from curation.match import dedup\n",
            "match/__init__.py": "",
            "match/rel.py": "from ..publish.card import render_card\nfrom . import dedup\n",
            "loose.py": "",
        },
    )
    assert upward_imports(root) == [
        "curation/core/up.py:2: curation.core.up -> curation.match",
        "curation/core/up.py:2: curation.core.up -> curation.match.dedup",
        "curation/loose.py: not in a stage folder " + str(STAGES),
        "curation/match/rel.py:1: curation.match.rel -> curation.publish.card",
        "curation/match/rel.py:1: curation.match.rel -> curation.publish.card.render_card",
    ]
