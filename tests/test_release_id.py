"""The release id is a function of every input that can change a release's bytes (issue 20).

Properties, each input changed alone:
- ``compute_release_id``: any change of a source file's path or sha256, a reference file's
  sha256, a config value, the code version or a library version names another release (and the
  id recomputed from a manifest is the id it was published under);
- the release's code version: any byte of any module, data file or suite a stage reads, and any
  library version a stage imports, changes it;
- every ``CurationSettings`` field is either hashed (through ``release_config``) or declared as
  not shaping the output, with the reason, so a new setting cannot slip past the id.

The pipeline-level checks (a changed reference file publishes a new release, same id => same
files) are in ``tests/test_trust_across_runs.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import curation.core.version as version_module
from assets.resources import CurationSettings
from curation.core.version import import_closure
from curation.match.decontam import DecontamConfig
from curation.match.dedup import DedupConfig
from curation.publish.layout import compute_release_id, release_id_of
from pipelines.versions import NOT_OUTPUT_SHAPING, STAGES, stage_versions

#: Settings that never change what a release contains, and why.
NOT_IN_THE_ID = {
    "quarantine_error_rate": "a check threshold: decides whether a run may publish, not what",
    "quarantine_warn_rate": "a check threshold (WARN only)",
    "threads": "parallelism; outputs are identical for any thread count (tests/test_parallel.py)",
    "ingest_threads": "parallelism, as threads",
    "expected_files": "decides whether a run may publish; the files read are in `sources`",
    "allow_missing_files": "as expected_files",
    "malloc_mmap_threshold": "memory behaviour of glibc only",
    "gx_sample_rows": "how much of a table GX validates: a check, not a transformation",
    "max_decompressed_bytes": "a bound on what may be read; the files read are in `sources`",
    "allow_links_outside_mirror": "whether a file may be read; the files read are in `sources`",
    "drift": "compares with the previous release: decides whether latest moves, not the data",
}

SOURCES = [
    {
        "name": "hh-rlhf",
        "files": [
            {"path": "harmless-base/test.jsonl.gz", "sha256": "a" * 64},
            {"path": "harmless-base/train.jsonl.gz", "sha256": "b" * 64},
        ],
    },
    {"name": "pku-saferlhf", "files": [{"path": "data/Alpaca-7B/test.jsonl", "sha256": "c" * 64}]},
]
REFERENCES = [{"name": "evalset.jsonl", "field": "question", "sha256": "d" * 64}]
LIBRARIES = {"pyarrow": "26.0.1", "polars": "2.1.0", "python": "3.11.7"}
CONFIG = CurationSettings().release_config()


def inputs() -> dict:
    return {
        "sources": copy.deepcopy(SOURCES),
        "config": copy.deepcopy(CONFIG),
        "code_version": "0.1.0+abc",
        "references": copy.deepcopy(REFERENCES),
        "libraries": dict(LIBRARIES),
    }


def release_id(parts: dict) -> str:
    return compute_release_id(
        parts["sources"],
        parts["config"],
        parts["code_version"],
        parts["references"],
        parts["libraries"],
    )


def leaves(obj, path=()):
    """Every (path, value) of the scalars in a nested dict/list."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, (*path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from leaves(value, (*path, index))
    else:
        yield path, obj


def changed(value):
    """Another value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):  # stays inside the (0, 1] of shares and thresholds
        return value * 0.9 + 0.013
    if isinstance(value, int):
        return value + 1
    if value is None:
        return "set"
    return f"{value}x"


def set_leaf(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


ALL_LEAVES = [path for path, _ in leaves(inputs())]


@pytest.mark.parametrize("path", ALL_LEAVES, ids=lambda p: "/".join(map(str, p)))
def test_every_recorded_input_changes_the_id(path):
    base = release_id(inputs())
    edited = inputs()
    set_leaf(edited, path, changed(dict(leaves(edited))[path]))
    assert release_id(edited) != base


@settings(max_examples=60, deadline=None)
@given(
    files=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda f: f[0],
    ),
    shuffled=st.randoms(use_true_random=False),
)
def test_the_id_ignores_order_but_not_content(files, shuffled):
    sources = [{"name": "x", "files": [{"path": p, "sha256": h} for p, h in files]}]
    base = compute_release_id(sources, CONFIG, "v", [], LIBRARIES)
    reordered = list(sources[0]["files"])
    shuffled.shuffle(reordered)
    assert (
        compute_release_id([{"name": "x", "files": reordered}], CONFIG, "v", [], LIBRARIES) == base
    )
    path, digest = files[0]
    flipped = "0" if digest[0] != "0" else "1"
    other = [{"name": "x", "files": [{"path": path, "sha256": flipped + digest[1:]}]}]
    other[0]["files"] += sources[0]["files"][1:]
    assert compute_release_id(other, CONFIG, "v", [], LIBRARIES) != base


def test_a_manifest_names_its_own_id():
    parts = inputs()
    manifest = {"format_version": 2, "release_id": release_id(parts), **parts}
    assert release_id_of(json.loads(json.dumps(manifest))) == manifest["release_id"]
    legacy = {"format_version": 1, **{k: parts[k] for k in ("sources", "config", "code_version")}}
    assert release_id_of(legacy) == compute_release_id(
        parts["sources"], parts["config"], parts["code_version"]
    )


# --- what the code version covers -----------------------------------------------------------


def release_closure() -> list[str]:
    """Every file whose bytes go into the release's code version."""
    files = set()
    for stage in STAGES.values():
        closure = import_closure(stage.modules, (*NOT_OUTPUT_SHAPING, *stage.exclude))
        files.update(closure)
        files.update(d for path in closure for d in version_module.data_files(path))
        files.update(f"expectations/{suite}.json" for suite in stage.suites)
    return sorted(files)


def test_the_closure_holds_every_stage_and_the_common_words():
    files = release_closure()
    for expected in (
        "assets/ingest.py",
        "assets/curate.py",
        "assets/publish.py",
        "curation/match/decontam.py",
        "curation/match/near_dup.py",
        "curation/publish/release.py",
        "curation/match/references.py",
        "curation/match/data/common_en_words.txt",
        "expectations/curated_pairs.json",
        "expectations/pku_saferlhf_raw.json",
    ):
        assert expected in files


def test_any_byte_of_any_file_changes_the_release_version(monkeypatch: pytest.MonkeyPatch):
    base = stage_versions()["release"]
    real = version_module.source_bytes
    for target in release_closure():
        monkeypatch.setattr(
            version_module, "source_bytes", lambda p, t=target: real(p) + (b"#" if p == t else b"")
        )
        assert stage_versions()["release"] != base, target
    monkeypatch.setattr(version_module, "source_bytes", real)
    assert stage_versions()["release"] == base


@pytest.mark.parametrize("module", ["pyarrow", "polars", "xxhash", "rensa", "matplotlib"])
def test_a_library_upgrade_changes_the_release_version(module, monkeypatch: pytest.MonkeyPatch):
    base = stage_versions()["release"]
    real = version_module._installed_version

    def upgraded(name: str):
        found = real(name)
        return (found[0], found[1] + ".post1") if name == module and found else found

    monkeypatch.setattr(version_module, "_installed_version", upgraded)
    assert stage_versions()["release"] != base
    assert module in version_module.release_libraries()


def test_every_setting_is_hashed_or_declared_harmless():
    hashed = CurationSettings().release_config()
    for name in CurationSettings.model_fields:
        assert (name in hashed) != (name in NOT_IN_THE_ID), name
    defaults = CurationSettings()
    for name in ("dedup", "decontam"):
        config_class = DedupConfig if name == "dedup" else DecontamConfig
        hints = typing.get_type_hints(config_class)
        for field in dataclasses.fields(config_class):
            value = getattr(config_class(), field.name)
            if typing.get_origin(hints[field.name]) is typing.Literal:  # another allowed value
                new = next(v for v in typing.get_args(hints[field.name]) if v != value)
            else:
                new = changed(value)
            other = CurationSettings(**{name: {field.name: new}})
            assert other.release_config() != defaults.release_config(), f"{name}.{field.name}"
