"""Trust across runs (issue 20), on the real sample through real materializations:

- a refresh after a ``run`` (no refresh cursor) publishes a change made in between, and the
  daemon's first tick requests the same assets;
- a release pruned from the store by another instance is republished by the next refresh;
- the release id covers the extra reference files' contents (a changed file names a new release
  with the new decisions), and the same id means the same data files;
- a re-run never adopts a damaged release: it repairs a flipped byte (or fails naming the file),
  the project's reader refuses a damaged page (parquet page checksums), and ``verify`` catches
  an edited manifest (counts, source sha256s, code version) through the digests and the id.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.keys import INGEST_KEYS, UPSTREAM_KEYS, ingest_asset_key
from assets.resources import CurationSettings
from curation.ingest.sources import source_file
from curation.publish.reader import open_release, prune
from curation.publish.release import ReleaseError, digest_key, publish_release
from curation.validate.gx_validate import warm_up
from pipelines.definitions import build_definitions
from pipelines.refresh import refresh
from pipelines.settings import SAMPLE
from pipelines.staleness import decide
from tests.pipeline_helpers import environment, materialize, release_metadata

PKU_TRAIN = source_file("Alpaca-7B", "train")
AFTER_INGEST = {
    "normalized_pairs",
    "quarantine",
    "red_team",
    "source_files",
    "deduplicated_pairs",
    "dedup_removed",
    "curated_pairs",
    "decontam_removed",
    "paraphrases",
    "reference_files",
    "release",
}


@pytest.fixture(autouse=True)
def gx_imported():
    """Finish the background GX import before a test touches an instance (see test_automation)."""
    warm_up().join()


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A writable copy of the bundled sample mirrors."""
    root = tmp_path / "mirror"
    shutil.copytree(SAMPLE / "hh-rlhf", root / "hh-rlhf")
    shutil.copytree(SAMPLE / "PKU-SafeRLHF", root / "PKU-SafeRLHF")
    return root


@pytest.fixture
def instance(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def latest_id(store: Path) -> str:
    return json.loads((store / "latest.json").read_text())["release_id"]


def requested(result) -> set[str]:
    keys = [*UPSTREAM_KEYS, *INGEST_KEYS, *(dg.AssetKey(k) for k in AFTER_INGEST)]
    return {k.to_user_string() for k in keys if result.get_num_requested(k)}


def append_two_rows(mirror: Path) -> None:
    """The issue's change: the first two real rows appended to the PKU train file."""
    path = mirror / "PKU-SafeRLHF" / PKU_TRAIN.relpath
    first_two = (SAMPLE / "PKU-SafeRLHF" / PKU_TRAIN.relpath).read_text().splitlines(True)[:2]
    path.write_text(path.read_text() + "".join(first_two))


# --- refresh ----------------------------------------------------------------------------------


def test_refresh_after_a_run_publishes_a_change_made_in_between(
    tmp_path: Path, mirror: Path, instance
):
    env = environment(
        tmp_path,
        str(tmp_path / "store"),
        hh_rlhf_uri=str(mirror / "hh-rlhf"),
        pku_saferlhf_uri=str(mirror / "PKU-SafeRLHF"),
    )
    store = tmp_path / "store"
    defs = build_definitions(env, keep_release_fresh=False)
    assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance).success
    first = latest_id(store)
    manifest = json.loads((store / "releases" / first / "manifest.json").read_text())
    before = {f["path"]: f["fingerprint"] for s in manifest["sources"] for f in s["files"]}
    assert before[PKU_TRAIN.relpath].startswith("sha256:")

    append_two_rows(mirror)
    changed = refresh(defs, instance)  # this home has no refresh cursor: `run` made no tick
    assert changed.success
    assert set(changed.requested) == {ingest_asset_key(PKU_TRAIN).to_user_string()} | AFTER_INGEST
    second = latest_id(store)
    assert second != first
    manifest = json.loads((store / "releases" / second / "manifest.json").read_text())
    pku = next(s for s in manifest["sources"] if s["name"] == "pku-saferlhf")
    train = next(f for f in pku["files"] if f["path"] == PKU_TRAIN.relpath)
    content = (mirror / "PKU-SafeRLHF" / PKU_TRAIN.relpath).read_bytes()
    assert train["sha256"] == hashlib.sha256(content).hexdigest()
    sample_rows = len((SAMPLE / "PKU-SafeRLHF" / PKU_TRAIN.relpath).read_text().splitlines())
    assert train["rows"] == sample_rows + 2  # the two appended rows were read

    assert refresh(defs, instance).requested == []  # and nothing more, on every next refresh
    assert refresh(defs, instance).requested == []


def test_the_daemons_first_tick_sees_a_change_made_after_a_run(
    tmp_path: Path, mirror: Path, instance
):
    """The automation sensor evaluates the same conditions: a new sensor (no cursor) after a
    ``run`` and a file change requests the file and everything below it."""
    env = environment(
        tmp_path,
        str(tmp_path / "store"),
        hh_rlhf_uri=str(mirror / "hh-rlhf"),
        pku_saferlhf_uri=str(mirror / "PKU-SafeRLHF"),
    )
    defs = build_definitions(env, keep_release_fresh=False)
    job = defs.resolve_job_def("full_refresh")
    assert job.execute_in_process(instance=instance).success
    assert requested(dg.evaluate_automation_conditions(defs, instance)) == set()
    append_two_rows(mirror)
    observed = job.execute_in_process(instance=instance, asset_selection=list(UPSTREAM_KEYS))
    assert observed.success
    tick = dg.evaluate_automation_conditions(defs, instance)  # cursor None: a first tick
    assert requested(tick) == {ingest_asset_key(PKU_TRAIN).to_user_string()} | AFTER_INGEST
    # one decision: what `rlhf-curate refresh` would run is what the daemon's tick requests
    decision = decide(defs.resolve_asset_graph(), instance, str(tmp_path / "store"))
    assert {k.to_user_string() for k in decision.keys} == requested(tick)
    assert decision.requested[ingest_asset_key(PKU_TRAIN)].startswith("source changed")
    # the next tick does not request it again while nothing ran (no hot loop in the daemon)
    assert requested(dg.evaluate_automation_conditions(defs, instance, cursor=tick.cursor)) == set()


def test_refresh_republishes_a_release_pruned_by_another_instance(tmp_path: Path, instance):
    store = tmp_path / "store"
    defs = build_definitions(environment(tmp_path, str(store)), keep_release_fresh=False)
    assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance).success
    ours = latest_id(store)
    assert refresh(defs, instance).requested == []

    # another instance publishes to the same store, then prunes all but its own release
    other = publish_release(
        str(store),
        {"pairs": open_release(str(store)).table("pairs", "test")},
        sources=[],
        config={"other": "instance"},
        code_version="other",
        counts={},
        checks={},
    )
    assert latest_id(store) == other.release_id
    assert prune(str(store), keep=1) == [ours]
    assert not (store / "releases" / ours).exists()

    again = refresh(defs, instance)
    assert again.success and again.requested == ["release"]
    assert (store / "releases" / ours / "manifest.json").is_file()
    assert open_release(str(store), ours).verify() == []
    assert refresh(defs, instance).requested == []


# --- the release id --------------------------------------------------------------------------


def test_extra_reference_contents_name_the_release(tmp_path: Path):
    """The issue's case: five train prompts added to an extra reference file. The second run
    publishes a new release with the new removals; restoring the file names the first again."""
    train = [
        json.loads(line)["prompt"]
        for line in (SAMPLE / "PKU-SafeRLHF" / PKU_TRAIN.relpath).read_text().splitlines()
    ]
    evals = tmp_path / "evalset.jsonl"
    evals.write_text(json.dumps({"question": "What is the capital of France?"}) + "\n")
    original = evals.read_bytes()
    settings = CurationSettings(extra_reference_uris=[f"{evals}#question"])
    store = tmp_path / "store"

    first = release_metadata(materialize(environment(tmp_path, str(store)), settings))
    evals.write_text(
        original.decode() + "".join(json.dumps({"question": p}) + "\n" for p in train[:5])
    )
    second = release_metadata(materialize(environment(tmp_path, str(store)), settings))
    assert second["release_id"] != first["release_id"]
    assert second["status"] == "published"
    assert second["removed_pairs"] > first["removed_pairs"]
    manifest = open_release(str(store), second["release_id"]).manifest
    [reference] = manifest["references"]
    assert reference["sha256"] == hashlib.sha256(evals.read_bytes()).hexdigest()
    assert reference["rows"] == 6

    evals.write_bytes(original)  # same contents again: the first release, unchanged
    third = release_metadata(materialize(environment(tmp_path, str(store)), settings))
    assert (third["release_id"], third["status"]) == (first["release_id"], "unchanged")
    assert third["removed_pairs"] == first["removed_pairs"]

    # same id => same data files: a fresh store gets byte-identical parquet files
    fresh = tmp_path / "fresh"
    fourth = release_metadata(materialize(environment(tmp_path, str(fresh)), settings))
    assert fourth["release_id"] == first["release_id"]

    def hashes(root: Path) -> dict:
        manifest = open_release(str(root), first["release_id"]).manifest
        return {f["path"]: f["sha256"] for t in manifest["tables"].values() for f in t["files"]}

    assert hashes(store) == hashes(fresh)


# --- damaged and edited releases -------------------------------------------------------------


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding the sample's release (one materialization for the tests below, which
    each damage a copy of it): the store and the release id."""
    warm_up().join()
    root = tmp_path_factory.mktemp("published")
    store = root / "store"
    return store, release_metadata(materialize(environment(root, str(store))))["release_id"]


def copy_of(published: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A private copy of the published store (same release id: the store is not an input)."""
    store, release_id = published
    shutil.copytree(store, tmp_path / "store")
    return tmp_path / "store", release_id


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3 if offset is None else offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_rerun_repairs_a_damaged_release_and_readers_refuse_it_meanwhile(
    tmp_path: Path, published: tuple[Path, str]
):
    store, release_id = copy_of(published, tmp_path)
    env = environment(tmp_path, str(store))
    part = store / "releases" / release_id / "pairs" / "train" / "part-00000.parquet"
    pristine = part.read_bytes()
    flip_byte(part)

    release = open_release(str(store))
    assert {p.kind for p in release.verify()} == {"sha256"}
    with pytest.raises(ReleaseError, match="CRC checksum verification failed"):
        release.table("pairs", split="train")  # the project's reader checks every page
    with pytest.raises(OSError, match="CRC checksum"):
        pq.read_table(part, page_checksum_verification=True)  # as can any reader that checks

    again = release_metadata(materialize(env))  # same inputs: the same release, repaired
    assert (again["release_id"], again["status"]) == (release_id, "unchanged")
    assert part.read_bytes() == pristine
    assert open_release(str(store)).verify() == []


def test_a_rerun_refuses_a_release_whose_manifest_was_edited(
    tmp_path: Path, published: tuple[Path, str]
):
    store, release_id = copy_of(published, tmp_path)
    env = environment(tmp_path, str(store))
    path = store / "releases" / release_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tables"]["pairs"]["rows"] += 1000
    path.write_text(json.dumps(manifest, indent=2))
    result = materialize(env)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert "manifest.json" in message and "edited" in message
    assert latest_id(store) == release_id  # the pointer did not move on


@pytest.mark.parametrize(
    ("edit", "kinds"),
    [
        (
            lambda m: m["tables"]["pairs"]["splits"].update(
                train=m["tables"]["pairs"]["splits"]["train"] + 1000
            ),
            {"digest", "manifest"},
        ),
        (lambda m: m["sources"][0]["files"][0].update(sha256="0" * 64), {"digest", "id"}),
        (lambda m: m.update(code_version="tampered"), {"digest", "id"}),
        (lambda m: m["counts"]["accounting"].update(pairs_kept=1), {"digest", "accounting"}),
    ],
)
def test_verify_catches_an_edited_manifest(
    tmp_path: Path, published: tuple[Path, str], edit, kinds
):
    store, rid = copy_of(published, tmp_path)
    assert open_release(str(store)).verify() == []
    path = store / "releases" / rid / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2))
    assert {p.kind for p in open_release(str(store)).verify()} == kinds

    # rewriting the digest beside the folder too is still caught by latest.json's digest
    (store / digest_key(rid)).write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    found = open_release(str(store)).verify()
    assert any(p.kind == "digest" and "latest.json" in p.message for p in found)


def test_verify_counts_rows_from_the_parquet_footers(tmp_path: Path, published: tuple[Path, str]):
    """A data file replaced by another valid parquet file with other rows, and the manifest's
    sizes and hashes edited to match it (the digests then catch the manifest, the footer the
    rows)."""
    store, rid = copy_of(published, tmp_path)
    folder = store / "releases" / rid
    part = folder / "pairs" / "test" / "part-00000.parquet"
    table = pq.read_table(part)
    pq.write_table(table.slice(0, table.num_rows - 1), part)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(
        f for f in manifest["tables"]["pairs"]["files"] if f["path"].startswith("pairs/test")
    )
    entry.update(bytes=part.stat().st_size, sha256=hashlib.sha256(part.read_bytes()).hexdigest())
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    problems = open_release(str(store)).verify()
    rows = [p for p in problems if p.kind == "rows"]
    assert [p.path for p in rows] == [entry["path"]]
    assert f"{table.num_rows - 1} rows, manifest says {table.num_rows}" in rows[0].message
    assert any(p.kind == "accounting" for p in problems)
