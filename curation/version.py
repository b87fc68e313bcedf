"""Code versions: digests of the source that shapes an output, so logic changes name new releases.

:func:`code_version` is the whole library's version (every ``curation/*.py`` and suite).
:func:`stage_code_version` is one pipeline stage's: the stage's own modules and everything they
import from the project (found by reading the ``import`` statements, so a new helper module is
covered without a list to maintain), its expectation suites, and the settings it reads.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from curation import __version__

ROOT = Path(__file__).resolve().parents[1]
#: Packages whose modules count as project code when followed through imports.
PROJECT_PACKAGES = ("curation", "assets")
SUITES = ROOT / "expectations"


@cache
def code_version() -> str:
    """``<package version>+<first 12 hex of sha256 over curation/*.py and expectations/*.json>``."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    files = sorted(root.glob("*.py")) + sorted((root.parent / "expectations").glob("*.json"))
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:12]}"


def source_bytes(relpath: str) -> bytes:
    """The bytes of a project file (repo-relative path) that go into a code version."""
    return (ROOT / relpath).read_bytes()


def _module_file(module: str) -> str | None:
    """Repo-relative path of a project module (``curation.dedup`` -> ``curation/dedup.py``)."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (ROOT / candidate).is_file():
            return candidate.as_posix()
    return None


def _imported_files(relpath: str) -> frozenset[str]:
    """Project modules imported anywhere in ``relpath`` (top level or inside functions)."""
    return _imports_in(source_bytes(relpath))


@cache
def _imports_in(source: bytes) -> frozenset[str]:
    """Project modules imported by the module whose text is ``source`` (cached by content)."""
    tree = ast.parse(source)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        out.update(f for name in names if (f := _module_file(name)))
    return frozenset(out)


def import_closure(roots: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """``roots`` and every project module they import, transitively, minus ``exclude``; sorted."""
    excluded = set(exclude)
    seen: set[str] = set()
    todo = [r for r in roots if r not in excluded]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(f for f in _imported_files(path) if f not in seen and f not in excluded)
    return sorted(seen)


def stage_code_version(
    modules: Iterable[str],
    *,
    suites: Iterable[str] = (),
    settings: Mapping[str, Any] | None = None,
    upstream: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
) -> str:
    """``<package version>+<12 hex>`` over a stage's code, suites, settings and upstream versions.

    ``modules``: the stage's root modules (repo-relative), followed through their project
    imports except ``exclude``; ``suites``: expectation suite names; ``settings``: the setting
    values the stage reads (JSON-able); ``upstream``: code versions the output also depends on
    (the release covers every stage, so its id changes whenever any stage's code does).
    """
    digest = hashlib.sha256()
    for path in import_closure(modules, exclude):
        digest.update(path.encode() + b"\0" + source_bytes(path) + b"\0")
    for suite in sorted(suites):
        relpath = f"expectations/{suite}.json"
        digest.update(relpath.encode() + b"\0" + source_bytes(relpath) + b"\0")
    blob = {"settings": settings or {}, "upstream": dict(upstream or {})}
    digest.update(json.dumps(blob, sort_keys=True, default=str).encode())
    return f"{__version__}+{digest.hexdigest()[:12]}"
