"""Code versions: digests of everything that shapes an output, so any change names new releases.

:func:`code_version` is the whole library's version (every ``curation/*.py``, its data files and
the suites). :func:`stage_code_version` is one pipeline stage's: the stage's own modules and
everything they import from the project (found by reading the ``import`` statements, so a new
helper module is covered without a list to maintain), the data files those modules name (the
common-words list), the versions of the third-party libraries they import (a new pyarrow writes
other parquet bytes), its expectation suites, and the settings it reads.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import platform
import sys
import unicodedata
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from curation import __version__

ROOT = Path(__file__).resolve().parents[2]
#: Packages whose modules count as project code when followed through imports.
PROJECT_PACKAGES = ("curation", "assets")
#: Top-level packages of this repository (never third-party libraries).
REPO_PACKAGES = (*PROJECT_PACKAGES, "expectations", "pipelines", "bench", "tests")
SUITES = ROOT / "expectations"


@cache
def code_version() -> str:
    """``<package version>+<12 hex>`` over ``curation/**/*.py`` (every stage's package),
    ``curation/**/data/*`` and the suites."""
    root = ROOT / "curation"
    digest = hashlib.sha256()
    files = (
        sorted(root.rglob("*.py"))
        + sorted(p for p in root.glob("**/data/*") if p.is_file())
        + sorted((root.parent / "expectations").glob("*.json"))
    )
    for path in files:
        name = path.relative_to(root).as_posix() if path.suffix == ".py" else path.name
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:12]}"


def source_bytes(relpath: str) -> bytes:
    """The bytes of a project file (repo-relative path) that go into a code version."""
    return (ROOT / relpath).read_bytes()


def _module_file(module: str) -> str | None:
    """Repo-relative path of a project module (``curation.match.dedup`` -> ``curation/match/dedup.py``)."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (ROOT / candidate).is_file():
            return candidate.as_posix()
    return None


def _looks_like_path(node: ast.AST) -> bool:
    """A short one-line string literal with a ``/`` in it (a relative file path, maybe)."""
    if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
        return False
    return "/" in node.value and len(node.value) < 200 and "\n" not in node.value


@cache
def _module_facts(source: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What one walk over a module's syntax tree tells (cached by content): every absolute module
    name it imports (top level or inside functions), and its string literals that look like
    relative file paths."""
    names: list[str] = []
    paths: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif _looks_like_path(node):
            paths.append(node.value)
    return tuple(names), tuple(paths)


def _imported_names(source: bytes) -> tuple[str, ...]:
    """Every absolute module name imported in ``source``."""
    return _module_facts(source)[0]


def _imported_files(relpath: str) -> frozenset[str]:
    """Project modules imported anywhere in ``relpath`` (top level or inside functions)."""
    return _imports_in(source_bytes(relpath))


@cache
def _imports_in(source: bytes) -> frozenset[str]:
    """Project modules imported by the module whose text is ``source`` (cached by content)."""
    return frozenset(f for name in _imported_names(source) if (f := _module_file(name)))


def third_party_imports(relpath: str) -> frozenset[str]:
    """Top-level names of the non-standard, non-project modules ``relpath`` imports."""
    tops = {name.split(".")[0] for name in _imported_names(source_bytes(relpath))}
    return frozenset(
        top
        for top in tops
        if top not in REPO_PACKAGES and top not in sys.stdlib_module_names and top != "__future__"
    )


def data_files(relpath: str) -> list[str]:
    """Repo-relative paths of the files of its package that module ``relpath`` names in a string
    literal (``"data/common_en_words.txt"`` in ``curation/match/informative.py``)."""
    package = (ROOT / relpath).parent
    named = _module_facts(source_bytes(relpath))[1]
    found = {(package / p).relative_to(ROOT).as_posix() for p in named if (package / p).is_file()}
    return sorted(found)


#: Imported names whose distribution is named otherwise (found without scanning every installed
#: distribution's metadata, which :func:`importlib.metadata.packages_distributions` does).
DISTRIBUTION_OF = {"upath": "universal_pathlib", "yaml": "PyYAML"}


@cache
def _installed_version(module: str) -> tuple[str, str] | None:
    """``(distribution, version)`` of the installed distribution providing top-level module
    ``module``; None when it is not installed."""
    dist = DISTRIBUTION_OF.get(module, module)
    try:
        return dist, importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    dists = importlib.metadata.packages_distributions().get(module)
    if not dists:
        return None
    dist = sorted(dists)[0]
    return dist, importlib.metadata.version(dist)


def runtime_versions() -> dict[str, str]:
    """The interpreter facts that change bytes: Python's version and its Unicode database
    (``unicodedata`` normalization and categories feed the matching text)."""
    return {
        "python": platform.python_version(),
        "unicodedata": unicodedata.unidata_version,
    }


def library_versions(relpaths: Iterable[str]) -> dict[str, str]:
    """``{distribution: version}`` of the third-party libraries the modules ``relpaths`` import,
    plus :func:`runtime_versions`. A module that is not installed is recorded as ``absent``."""
    out: dict[str, str] = {}
    for relpath in relpaths:
        for module in third_party_imports(relpath):
            found = _installed_version(module)
            dist, version = found if found else (module, "absent")
            out[dist] = version
    return {**dict(sorted(out.items())), **runtime_versions()}


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


#: Every module whose code can shape a release (the libraries of a release are theirs).
OUTPUT_ROOTS = ("assets/ingest.py", "assets/normalize.py", "assets/curate.py", "assets/publish.py")


def release_libraries(exclude: Iterable[str] = ()) -> dict[str, str]:
    """The library versions recorded in a release's manifest and hashed into its id."""
    return library_versions(import_closure(OUTPUT_ROOTS, exclude))


def stage_code_version(
    modules: Iterable[str],
    *,
    suites: Iterable[str] = (),
    settings: Mapping[str, Any] | None = None,
    upstream: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
) -> str:
    """``<package version>+<12 hex>`` over a stage's code, data files, libraries, suites,
    settings and upstream versions.

    ``modules``: the stage's root modules (repo-relative), followed through their project
    imports except ``exclude``; each module's data files (:func:`data_files`) and the versions
    of the libraries it imports (:func:`library_versions`) are covered too; ``suites``:
    expectation suite names; ``settings``: the setting values the stage reads (JSON-able);
    ``upstream``: code versions the output also depends on (the release covers every stage, so
    its id changes whenever any stage's code does).
    """
    digest = hashlib.sha256()
    closure = import_closure(modules, exclude)
    files = sorted({*closure, *(d for path in closure for d in data_files(path))})
    files += [f"expectations/{suite}.json" for suite in sorted(suites)]
    for path in files:
        digest.update(path.encode() + b"\0" + source_bytes(path) + b"\0")
    blob = {
        "settings": settings or {},
        "upstream": dict(upstream or {}),
        "libraries": library_versions(closure),
    }
    digest.update(json.dumps(blob, sort_keys=True, default=str).encode())
    return f"{__version__}+{digest.hexdigest()[:12]}"
