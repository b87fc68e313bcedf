"""The registry of datasets: the one list the pipeline reads its datasets from.

Each dataset is one module of this package holding a
:class:`~curation.datasets.base.PreferenceDataset` (``DATASET``); :data:`REGISTRY` lists them.
Adding a dataset is its module, its suites written to ``expectations/`` (``python -m
curation.validate.gx_validate write-suites``) and one line below (``docs/architecture.md``, Adding a
dataset). Other modules find a dataset by name (:func:`dataset`) or by file
(:func:`dataset_of`), never by spelling its name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from curation.core.rules import Rule, RuleFamily
from curation.core.rules import all_rules as _all_rules
from curation.core.rules import resolve_levels as _resolve_levels
from curation.datasets import hh_rlhf, pku_saferlhf
from curation.datasets.base import PreferenceDataset, SourceFile
from curation.datasets.declared import TRL_FAMILY, Declaration, TrlDataset

#: Every built-in dataset, in the order of their files, settings and card sections.
REGISTRY: tuple[PreferenceDataset, ...] = (
    hh_rlhf.DATASET,
    pku_saferlhf.DATASET,
)
BUILT_IN = frozenset(d.name for d in REGISTRY)
#: The datasets declared in this process's settings file (:func:`use_declared`), after
#: the built-in ones.
_declared: tuple[PreferenceDataset, ...] = ()
_by_name = {d.name: d for d in REGISTRY}


def use_declared(declarations: Sequence[Declaration]) -> None:
    """Register the datasets a settings file declares (replacing those registered before).

    The asset graph, the suites and the card are built from the registry, so this is called
    before the definitions are built (``pipelines.definitions.build_definitions``): one code
    location, one set of datasets."""
    global _declared, _by_name
    _declared = tuple(TrlDataset(d) for d in declarations)
    _by_name = {d.name: d for d in (*REGISTRY, *_declared)}


def registered() -> tuple[PreferenceDataset, ...]:
    """The built-in datasets, then the declared ones."""
    return (*REGISTRY, *_declared)


def declared() -> tuple[PreferenceDataset, ...]:
    """The datasets declared in the settings file."""
    return _declared


def dataset_names() -> tuple[str, ...]:
    """The names of the registered datasets (the values of the ``dataset`` column)."""
    return tuple(_by_name)


def dataset(name: str) -> PreferenceDataset:
    """The registered dataset called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return _by_name[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(_by_name)}") from None


def dataset_of(source: SourceFile | Mapping) -> PreferenceDataset:
    """The dataset of an upstream file or of a file report (its ``dataset``)."""
    return dataset(source["dataset"] if isinstance(source, Mapping) else source.dataset)


def all_files() -> list[SourceFile]:
    """Every upstream file of every dataset (the source list), in registry order."""
    return [f for d in registered() for f in d.files()]


def rule_families() -> tuple[RuleFamily, ...]:
    """Every rule family of every dataset."""
    families = [f for d in registered() for f in d.rule_families()]
    # the TRL format's rules are known whether or not a dataset is declared in it (a settings
    # file may set their levels before its datasets are registered)
    return tuple(dict.fromkeys([*families, TRL_FAMILY]))


def all_rules() -> dict[str, Rule]:
    """The parse rules and every dataset's row rules, by reason code."""
    return _all_rules(rule_families())


def resolve_levels(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Default levels of every rule with ``overrides`` applied
    (:func:`curation.core.rules.resolve_levels` over :func:`all_rules`)."""
    return _resolve_levels(overrides, all_rules())


def raw_suite_names() -> tuple[str, ...]:
    """The GX suites of every dataset's raw files, in registry order."""
    return tuple(name for d in registered() for name in d.suites())


def suite_for(report: Mapping) -> str:
    """The GX suite of an ingested file, from its report (dataset, subset, schema variant)."""
    return dataset_of(report).suite_for(report["subset"], report.get("schema_variant"))


def pairs_per_row(report: Mapping) -> int:
    """Pairs a valid row of this file yields (0: it gives none)."""
    return dataset_of(report).pairs_per_row(report["subset"])


def upstream_rows() -> dict[str, int]:
    """Rows of the real upstream files where known, by ``<dataset>/<relpath>``."""
    return {f"{d.name}/{rel}": n for d in REGISTRY for rel, n in d.upstream_rows.items()}
