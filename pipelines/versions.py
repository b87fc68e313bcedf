"""Per-stage code versions: which code, suites and settings shape each stage's output.

A stage's version covers its asset module and every project module it imports (see
:func:`curation.core.version.stage_code_version`), the expectation suites whose blocking checks gate
it, and the settings values it reads. So a decontamination change re-runs decontamination and
publish, not ingest; a changed resource default marks exactly the stages that read it stale. The
release's version also covers every other stage, and it is the code version recorded in the
manifest and hashed into the release id: the id changes whenever the published bytes could.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from assets.resources import CurationSettings
from curation.core.version import stage_code_version
from curation.datasets import REGISTRY, declared

#: Never followed: settings are covered by their values, alerting and the Dagster-free version
#: module do not shape outputs.
NOT_OUTPUT_SHAPING = ("assets/resources.py", "assets/alerting.py", "curation/core/version.py")
#: The suites of the built-in datasets' raw files (a declared dataset's suite is generated from
#: its declaration, which the ingest stage's settings cover).
RAW_SUITES = tuple(name for d in REGISTRY for name in d.suites())


@dataclass(frozen=True)
class Stage:
    """One stage: its step (op) name, root modules, suites, and modules it must not follow."""

    op: str
    modules: tuple[str, ...]
    suites: tuple[str, ...] = ()
    exclude: tuple[str, ...] = field(default=())


STAGES = {
    "ingest": Stage("ingest_files", ("assets/ingest.py", "assets/io.py"), RAW_SUITES),
    "normalize": Stage("validate_and_normalize", ("assets/normalize.py", "assets/io.py")),
    # dedup and decontamination share assets/curate.py; dedup does not read decontamination
    "dedup": Stage(
        "deduplicate_pairs",
        ("assets/curate.py", "assets/io.py"),
        exclude=(
            "curation/match/decontam.py",
            "curation/match/references.py",
            "curation/match/paraphrase.py",
        ),
    ),
    "decontam": Stage(
        "decontaminate_pairs", ("assets/curate.py", "assets/io.py"), ("curated_pairs",)
    ),
    "release": Stage("release", ("assets/publish.py",)),
}
STAGE_OF_OP = {stage.op: name for name, stage in STAGES.items()}


def stage_settings(settings: CurationSettings) -> dict[str, dict]:
    """The settings values each stage reads (JSON-able)."""
    return {
        "ingest": {"rule_levels": settings.levels(), **_declarations()},
        "normalize": {},
        "dedup": {"dedup": dataclasses.asdict(settings.dedup_config())},
        "decontam": {
            "decontam": dataclasses.asdict(settings.decontam_config()),
            "extra_reference_uris": list(settings.extra_reference_uris),
        },
        "release": settings.release_config(),
    }


def _declarations() -> dict[str, dict]:
    """The datasets the settings file declares, when it declares any (their files, dimension
    and licence shape every stage from ingest to the card)."""
    found = {d.name: d.declaration.to_dict() for d in declared()}
    return {"datasets": found} if found else {}


def stage_versions(settings: CurationSettings | None = None) -> Mapping[str, str]:
    """``{stage: code version}``; the release's covers every other stage's too."""
    values = stage_settings(settings or CurationSettings())
    out: dict[str, str] = {}
    for name, stage in STAGES.items():
        upstream = dict(out) if name == "release" else None
        out[name] = stage_code_version(
            stage.modules,
            suites=stage.suites,
            settings=values[name],
            upstream=upstream,
            exclude=(*NOT_OUTPUT_SHAPING, *stage.exclude),
        )
    return out
