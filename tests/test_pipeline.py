"""The whole asset graph materialized on the bundled sample, into a local folder and into S3 (moto)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import s3fs

from pipelines.settings import SAMPLE
from tests.pipeline_helpers import check_results, environment, materialize, release_metadata
from tests.test_trl_view import assert_trl_view

# Lines of the real harmless-base test file that break the HH rules, found independently by
# scanning the file (see docs/validation.md): 4 empty final responses, 9 bad turn orders
# (5 of which also have mismatched contexts). The sample's test file holds real lines 0-799,
# its train file real lines 800-2311.
REAL_BAD_LINES = {86, 516, 925, 1103, 667, 763, 1254, 1319, 1688, 1849, 1950, 1952, 2036}


def sample_rows() -> dict[tuple[str, str], int]:
    """Rows per (subset, split) of the sample, counted straight from the files."""
    hh = SAMPLE / "hh-rlhf/harmless-base"
    pku = SAMPLE / "PKU-SafeRLHF/data/Alpaca-7B"
    return {
        ("harmless-base", s): len(gzip.decompress((hh / f"{s}.jsonl.gz").read_bytes()).splitlines())
        for s in ("train", "test")
    } | {
        ("Alpaca-7B", s): len((pku / f"{s}.jsonl").read_text().splitlines())
        for s in ("train", "test")
    }


def expected_pairs() -> Counter:
    """Pairs per (dataset, subset, split, dimension) that the sample must yield before dedup."""
    rows = sample_rows()
    bad_test = sum(1 for line in REAL_BAD_LINES if line < 800)
    expected = Counter()
    expected["hh-rlhf", "harmless-base", "test", "harmless"] = (
        rows["harmless-base", "test"] - bad_test
    )
    expected["hh-rlhf", "harmless-base", "train", "harmless"] = rows["harmless-base", "train"] - (
        len(REAL_BAD_LINES) - bad_test
    )
    for split in ("train", "test"):
        for dim in ("helpful", "harmless"):
            expected["pku-saferlhf", "Alpaca-7B", split, dim] = rows["Alpaca-7B", split]
    return expected


def read_table(root: str, release_id: str, name: str, filesystem=None):
    return ds.dataset(
        f"{root}/releases/{release_id}/{name}", format="parquet", filesystem=filesystem
    ).to_table()


def assert_release_matches_sources(root: str, filesystem=None) -> None:
    opener = filesystem.open if filesystem else open
    with opener(f"{root}/latest.json", "rb") as handle:
        release_id = json.load(handle)["release_id"]
    with opener(f"{root}/releases/{release_id}/manifest.json", "rb") as handle:
        manifest = json.load(handle)
    pairs = read_table(root, release_id, "pairs", filesystem)
    removed = read_table(root, release_id, "removed", filesystem)
    quarantine = read_table(root, release_id, "quarantine", filesystem)
    red_team = read_table(root, release_id, "red_team", filesystem)

    def key(row):
        return (row["dataset"], row["subset"], row["split"], row["dimension"])

    got = Counter(
        key(r) for r in pairs.select(["dataset", "subset", "split", "dimension"]).to_pylist()
    )
    got.update(
        key(r) for r in removed.select(["dataset", "subset", "split", "dimension"]).to_pylist()
    )
    assert got == expected_pairs()
    assert pairs.num_rows == manifest["tables"]["pairs"]["rows"]
    assert len(set(pairs["pair_id"].to_pylist()) | set(removed["pair_id"].to_pylist())) == sum(
        got.values()
    )

    real_line = {"test": 0, "train": 800}
    rows = quarantine.to_pylist()
    assert quarantine.num_rows == manifest["tables"]["quarantine"]["rows"]  # no folder skipped
    quarantined = {r["source_line"] + real_line[r["split"]] for r in rows if r["split"]}
    assert quarantined == REAL_BAD_LINES
    assert [r["subset"] for r in rows if r["split"] is None] == ["red-team-attempts"]
    assert (
        red_team.num_rows + 1 == 120
    )  # the one transcript taken from real line 1254 breaks turn order
    accounting = manifest["counts"]["accounting"]
    assert accounting["ok"] and accounting["rows_read"] == sum(sample_rows().values()) + 120

    # A field traced from a known source line: PKU train.jsonl line 3.
    source = json.loads(
        (SAMPLE / "PKU-SafeRLHF/data/Alpaca-7B/train.jsonl").read_text().splitlines()[3]
    )
    both = [
        r
        for table in (pairs, removed)
        for r in table.to_pylist()
        if r["dataset"] == "pku-saferlhf" and r["split"] == "train" and r["source_line"] == 3
    ]
    assert {r["dimension"] for r in both} == {"helpful", "harmless"}
    kept = [
        r
        for r in pairs.to_pylist()
        if r["dataset"] == "pku-saferlhf" and r["split"] == "train" and r["source_line"] == 3
    ]
    for row in kept:
        pick = (
            source["better_response_id"]
            if row["dimension"] == "helpful"
            else source["safer_response_id"]
        )
        assert row["prompt"] == source["prompt"]
        assert row["chosen"] == source[f"response_{pick}"]
        assert row["rejected"] == source[f"response_{1 - pick}"]
        assert row["chosen_is_safe"] == source[f"is_response_{pick}_safe"]
        assert row["chosen_severity"] == source[f"response_{pick}_severity_level"]
        cats = [c for c, v in source[f"response_{pick}_harm_category"].items() if v]
        assert row["chosen_harm_categories"] == cats


def test_graph_on_sample_into_local_folder(tmp_path: Path):
    store = tmp_path / "warehouse"
    result = materialize(environment(tmp_path, str(store)))
    assert result.success
    checks = check_results(result)
    assert checks[("curated_pairs", "row_accounting")].passed
    assert checks[("curated_pairs", "curated_pairs_suite")].passed
    assert all(c.passed for (a, name), c in checks.items() if name == "schema_suite")
    meta = release_metadata(result)
    assert meta["status"] == "published"
    assert_release_matches_sources(str(store))
    # the tables read directly with pandas and pyarrow, without our code
    import pandas as pd

    release_dir = store / "releases" / meta["release_id"]
    frame = pd.read_parquet(release_dir / "pairs")
    assert len(frame) == meta["pairs"]
    assert pq.read_table(next((release_dir / "pairs" / "train").glob("*.parquet"))).num_rows > 0
    assert_trl_view(release_dir, tmp_path / "hf_cache")  # the TRL view (tests/test_trl_view.py)


def test_graph_on_sample_into_s3(tmp_path: Path, s3_env: dict, s3_bucket: str):
    store_uri = f"s3://{s3_bucket}/curated"
    result = materialize(environment(tmp_path, store_uri))
    assert result.success
    meta = release_metadata(result)
    assert meta["status"] == "published"
    assert meta["release_uri"].startswith(store_uri)
    assert "secret" not in json.dumps({k: str(v) for k, v in meta.items()}).lower()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_env["AWS_ENDPOINT_URL"]})
    assert_release_matches_sources(f"{s3_bucket}/curated", filesystem=fs)


def test_rerun_on_unchanged_inputs_publishes_nothing(tmp_path: Path):
    store = tmp_path / "warehouse"
    first = release_metadata(materialize(environment(tmp_path, str(store))))
    second = release_metadata(materialize(environment(tmp_path, str(store))))
    assert second["release_id"] == first["release_id"]
    assert second["status"] == "unchanged"
    assert len([p for p in (store / "releases").iterdir() if p.is_dir()]) == 1


def test_mirror_missing_files_are_absent_in_manifest(tmp_path: Path):
    store = tmp_path / "warehouse"
    assert materialize(environment(tmp_path, str(store))).success
    release_id = json.loads((store / "latest.json").read_text())["release_id"]
    manifest = json.loads((store / "releases" / release_id / "manifest.json").read_text())
    files = [f for source in manifest["sources"] for f in source["files"]]
    assert len(files) == 15
    absent = {f["path"] for f in files if not f["present"]}
    assert "helpful-base/train.jsonl.gz" in absent
    assert "data/Alpaca2-7B/test.jsonl" in absent
    assert "harmless-base/train.jsonl.gz" not in absent


def test_mirror_with_nothing_recognisable_fails_naming_the_uri(tmp_path: Path):
    empty_mirror = tmp_path / "not-a-mirror"
    (empty_mirror / "random").mkdir(parents=True)
    store = tmp_path / "warehouse"
    result = materialize(environment(tmp_path, str(store), pku_saferlhf_uri=str(empty_mirror)))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert str(empty_mirror) in failure.step_failure_data.error.message
    assert "no recognisable" in failure.step_failure_data.error.message
    assert not (store / "latest.json").exists()


def test_changed_source_publishes_a_new_release(tmp_path: Path):
    import shutil

    mirror = tmp_path / "pku"
    shutil.copytree(SAMPLE / "PKU-SafeRLHF", mirror)
    store = tmp_path / "warehouse"
    env = environment(tmp_path, str(store), pku_saferlhf_uri=str(mirror))
    first = release_metadata(materialize(env))
    train = mirror / "data/Alpaca-7B/train.jsonl"
    train.write_text("".join(train.read_text().splitlines(keepends=True)[:-1]))  # drop a row
    second = release_metadata(materialize(env))
    assert second["status"] == "published" and second["release_id"] != first["release_id"]
    assert second["pairs"] == first["pairs"] - 2  # one PKU row = a helpful and a harmless pair
    assert json.loads((store / "latest.json").read_text())["release_id"] == second["release_id"]
    manifest = json.loads((store / "releases" / second["release_id"] / "manifest.json").read_text())
    assert manifest["parent_release_id"] == first["release_id"]
