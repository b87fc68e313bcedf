"""A dataset is one module: no other module of the library, the assets or the pipelines spells a
dataset's name, sample folder or setting, nor imports a dataset's module except the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from curation.datasets import REGISTRY, all_files, dataset, dataset_names, raw_suite_names
from curation.validate.gx_validate import SUITE_NAMES

REPO = Path(__file__).resolve().parent.parent
CHECKED = ("curation", "assets", "pipelines")
#: Modules that may still spell a dataset, and why.
ALLOWED = {
    # the column descriptions are published bytes (the parquet schema's field metadata)
    "curation/core/schema.py",
    # the configuration contract keeps one setting per dataset: environment variables
    # (HH_RLHF_URI...), resource fields, run tags and CLI flags (--hh, --pku)
    "pipelines/settings.py",
    "pipelines/automation.py",
    "pipelines/cli_parser.py",
    "pipelines/commands.py",
    "assets/resources.py",
    # the step table's prose (the CLI imports no dataset module before it runs)
    "pipelines/progress.py",
}


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings (of modules, classes, functions and
    attributes): prose may name a dataset."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        for statement in body if isinstance(body, list) else []:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                out.add(id(statement.value))
    return out


def spellings(root: Path, module: Path) -> list[str]:
    """``path:line: literal`` for each string literal (not a docstring) of ``module`` holding a
    registered dataset's name, sample folder, setting stem or environment variable."""
    words = {w for d in REGISTRY for w in (d.name, d.sample, d.setting, d.setting.upper())}
    tree = ast.parse(module.read_text())
    skip = _docstrings(tree)
    return [
        f"{module.relative_to(root)}:{node.lineno}: {node.value[:60]!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and any(w in node.value for w in words)
    ]


def plugin_imports(root: Path, module: Path) -> list[str]:
    """``path:line: module`` for each import of a dataset's own module."""
    plugins = {type(d).__module__ for d in REGISTRY}
    found = []
    for node in ast.walk(ast.parse(module.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        found += [f"{module.relative_to(root)}:{node.lineno}: {n}" for n in names if n in plugins]
    return found


def hard_coded(root: Path) -> list[str]:
    """Every spelling of a dataset, or import of its module, outside its module, the registry
    and :data:`ALLOWED`."""
    problems = []
    for package in CHECKED:
        for module in sorted((root / package).rglob("*.py")):
            relpath = module.relative_to(root).as_posix()
            if relpath.startswith("curation/datasets/"):
                continue
            if relpath not in ALLOWED:
                problems += spellings(root, module)
            problems += plugin_imports(root, module)
    return problems


def test_no_dataset_is_named_outside_its_module_and_the_registry() -> None:
    assert hard_coded(REPO) == []


def test_a_spelled_dataset_name_is_found(tmp_path: Path) -> None:
    """The check finds a dataset name in code (a literal) but not in a docstring."""
    (tmp_path / "curation").mkdir()
    name = REGISTRY[0].name
    (tmp_path / "curation" / "bad.py").write_text(
        f'"""About {name}."""\n\nfrom curation.datasets import {type(REGISTRY[0]).__module__.split(".")[-1]}\n'
        f"IS_IT = {name!r}\n"
    )
    problems = hard_coded(tmp_path)
    assert len(problems) == 2
    assert problems[0].startswith("curation/bad.py:4:")
    assert problems[1].startswith("curation/bad.py:3:")


@pytest.mark.parametrize("plugin", REGISTRY, ids=lambda d: d.name)
def test_each_plugin_names_only_itself(plugin) -> None:
    """A dataset's module spells no other dataset."""
    module = Path(__import__(type(plugin).__module__, fromlist=["_"]).__file__)
    others = [d for d in REGISTRY if d is not plugin]
    text = module.read_text()
    assert not [d.name for d in others if f'"{d.name}"' in text or f'"{d.sample}"' in text]


def test_the_registry_is_the_one_list() -> None:
    names = dataset_names()
    assert len(set(names)) == len(names) == len(REGISTRY)
    assert {f.dataset for f in all_files()} == set(names)
    assert [dataset(n) for n in names] == list(REGISTRY)
    with pytest.raises(KeyError, match="unknown dataset"):
        dataset("no-such-dataset")
    # every suite a dataset names for its files is one of the suites written to expectations/
    assert set(raw_suite_names()) < set(SUITE_NAMES)
    for d in REGISTRY:
        for f in d.files():
            for variant in ("current", "v0"):
                assert d.suite_for(f.subset, variant) in d.suites()
