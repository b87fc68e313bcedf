"""Issue 12 items 4 and 8, issue 11 item 6, through real Dagster materializations of the graph.

* An upstream path that exists but cannot be read, or a mirror root that does not exist, fails
  the run naming it (it used to look like a missing file: a release without those rows, exit 0).
* Absent files are judged against ``expected_files`` / ``allow_missing_files`` and the previous
  release: a file the previous release had that vanished fails the run unless allowed.
* Every published table is read whole by pandas, pyarrow, DuckDB, polars and ``datasets``.
* The real red-team spelling reaches the published column; keys outside a contract are counted in
  the manifest and the asset metadata; ``upstream_row_counts`` warns on the sample.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.resources import CurationSettings, settings_problems
from curation.ingest.sources import SourceError, read_raw
from pipelines.settings import SAMPLE
from tests.pipeline_helpers import check_results, environment, materialize, release_metadata

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PKU_TEST = "data/Alpaca-7B/test.jsonl"


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        e.step_failure_data.error.message for e in result.all_events if e.is_step_failure
    )


def ingested(result: dg.ExecuteInProcessResult) -> list[str]:
    return [
        e.asset_key.to_user_string()
        for e in result.all_events
        if e.is_step_materialization and e.asset_key.path[1:2] == ["raw"]
    ]


def copy_mirror(tmp_path: Path, name: str) -> Path:
    mirror = tmp_path / name
    shutil.copytree(SAMPLE / name, mirror)
    return mirror


def manifest(store: Path, release_id: str) -> dict:
    return json.loads((store / "releases" / release_id / "manifest.json").read_text())


# --- item 4: unreadable is not missing -------------------------------------------------------------


def test_dangling_symlink_fails_the_run_naming_the_file(tmp_path: Path):
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    train = mirror / "data/Alpaca-7B/train.jsonl"
    train.unlink()
    train.symlink_to(tmp_path / "gone" / "train.jsonl")
    store = tmp_path / "warehouse"
    result = materialize(environment(tmp_path, str(store), pku_saferlhf_uri=str(mirror)))
    assert not result.success
    message = failure_messages(result)
    assert f"{train}: dangling symlink" in message
    assert ingested(result) == []  # failed before any raw asset was materialized
    assert not (store / "latest.json").exists()


def test_a_folder_where_a_file_should_be_fails_naming_it(tmp_path: Path):
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    (mirror / PKU_TEST).unlink()
    (mirror / PKU_TEST).mkdir()
    with pytest.raises(SourceError, match=r"Alpaca-7B/test\.jsonl: is a folder"):
        read_raw(str(mirror / PKU_TEST))


def _without_root_privileges() -> list[str]:
    """A command prefix under which file modes apply: none for a normal user; for root,
    ``setpriv`` drops the capabilities that let root read any file (CAP_DAC_*)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file modes would not apply")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def test_permission_denied_fails_the_run_naming_the_file(tmp_path: Path):
    """Real processes that may not enter the Alpaca-7B folder: ``rlhf-curate run`` fails naming
    the file (it used to publish without those pairs), and so does reading it in the library."""
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    folder = mirror / "data/Alpaca-7B"
    store = tmp_path / "warehouse"
    env = {
        **os.environ,
        "PKU_SAFERLHF_URI": str(mirror),
        "CURATED_STORE_URI": str(store),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    cli = str(Path(sys.executable).parent / "rlhf-curate")
    read = (
        f"from curation.ingest.sources import read_raw; read_raw({str(folder / 'train.jsonl')!r})"
    )
    folder.chmod(0)
    try:
        run = subprocess.run(
            [*_without_root_privileges(), cli, "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        library = subprocess.run(
            [*_without_root_privileges(), sys.executable, "-c", read],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        folder.chmod(0o755)
    assert run.returncode != 0, run.stdout
    assert f"Permission denied: '{folder}/" in run.stderr
    assert not (store / "latest.json").exists()
    assert library.returncode != 0
    assert f"SourceError: {folder}/train.jsonl: cannot read: [Errno 13]" in library.stderr


def test_typo_in_the_mirror_root_fails_before_any_file_is_ingested(tmp_path: Path):
    typo = str(SAMPLE / "hh-rlfh")
    store = tmp_path / "warehouse"
    result = materialize(environment(tmp_path, str(store), hh_rlhf_uri=typo))
    assert not result.success
    assert f"{typo}: mirror root does not exist" in failure_messages(result)
    assert ingested(result) == []  # no empty raw assets whose checks pass in the UI
    assert not (store / "latest.json").exists()


def test_file_of_the_previous_release_that_vanished_fails_unless_allowed(tmp_path: Path):
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    store = tmp_path / "warehouse"
    env = environment(tmp_path, str(store), pku_saferlhf_uri=str(mirror))
    first = release_metadata(materialize(env))
    assert first["status"] == "published"
    (mirror / PKU_TEST).unlink()
    second = materialize(env)
    assert not second.success
    assert (
        f"pku-saferlhf/{PKU_TEST}: in the previous release {first['release_id']} but absent now"
        in failure_messages(second)
    )
    assert ingested(second) == []
    assert json.loads((store / "latest.json").read_text())["release_id"] == first["release_id"]
    allowed = CurationSettings(allow_missing_files=[f"pku-saferlhf/{PKU_TEST}"])
    third = materialize(env, settings=allowed)
    assert third.success and release_metadata(third)["status"] == "published"
    files = {
        f["path"]: f["present"]
        for s in manifest(store, release_metadata(third)["release_id"])["sources"]
        for f in s["files"]
    }
    assert files[PKU_TEST] is False and files["data/Alpaca-7B/train.jsonl"] is True


def test_expected_files_listed_in_the_config_must_be_present(tmp_path: Path):
    store = tmp_path / "warehouse"
    env = environment(tmp_path, str(store))
    result = materialize(
        env, settings=CurationSettings(expected_files=["pku-saferlhf/data/Alpaca2-7B/*"])
    )
    assert not result.success
    message = failure_messages(result)
    assert "pku-saferlhf/data/Alpaca2-7B/test.jsonl: listed in expected_files" in message
    assert "pku-saferlhf/data/Alpaca2-7B/train.jsonl: listed in expected_files" in message
    assert ingested(result) == []
    # a glob that matches no upstream file is refused when the settings are built, before
    # any run (issue 22 item 6), one line per glob
    globs = ["pku/data/*", "pku-saferlhf/data/*", "hh/x"]
    with pytest.raises(ValueError, match="matches no upstream file"):
        CurationSettings(expected_files=globs)
    problems = settings_problems({"expected_files": globs})
    assert [p.split(";")[0] for p in problems] == [
        "expected_files: 'pku/data/*' matches no upstream file",
        "expected_files: 'hh/x' matches no upstream file",
    ]


# --- item 8: every reader sees every row -----------------------------------------------------------


def test_every_reader_sees_every_published_row(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets
    import duckdb
    import pandas as pd
    import polars as pl

    store = tmp_path / "warehouse"
    meta = release_metadata(materialize(environment(tmp_path, str(store))))
    tables = manifest(store, meta["release_id"])["tables"]
    assert tables["quarantine"]["rows"] > 0
    for name, info in tables.items():
        folder = store / "releases" / meta["release_id"] / name
        files = sorted(str(p) for p in folder.rglob("*.parquet"))
        assert len(files) == len(info["files"]), name
        glob = f"{folder}/*/*.parquet" if info["split_column"] else f"{folder}/*.parquet"
        counts = {
            "pandas": len(pd.read_parquet(folder)),
            "pyarrow": pq.read_table(folder).num_rows,
            "duckdb": duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchall()[0][0],
            "polars": pl.scan_parquet(f"{folder}/**/*.parquet").select(pl.len()).collect().item(),
            "datasets": datasets.load_dataset(
                "parquet",
                data_files=f"{folder}/**/*.parquet",  # data_dir= would map split-named folders only
                split="train",
                cache_dir=str(tmp_path / "hf"),
            ).num_rows,
        }
        assert counts == dict.fromkeys(counts, info["rows"]), (name, counts)
    # the red-team quarantine rows (split null) have a folder every reader lists
    assert any(f["path"].startswith("quarantine/no_split/") for f in tables["quarantine"]["files"])


# --- issue 11 item 6: real red-team fields, unknown keys, upstream counts ---------------------------


def test_real_red_team_fields_and_unknown_keys_reach_the_release(tmp_path: Path):
    hh = copy_mirror(tmp_path, "hh-rlhf")
    pku = copy_mirror(tmp_path, "PKU-SafeRLHF")
    red_team = hh / "red-team-attempts/red_team_attempts.jsonl.gz"
    objs = json.loads(gzip.decompress(red_team.read_bytes()))
    for i, obj in enumerate(objs):  # the released file's keys
        obj["task_descripton_harmlessness_score"] = obj.pop("task_description_harmlessness_score")
        obj["red_team_member_id"] = obj["red_team_member_id"] if i % 2 else f"w{i}"
    red_team.write_bytes(gzip.compress(json.dumps(objs).encode()))
    train = pku / "data/Alpaca-7B/train.jsonl"
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    for row in rows[:4]:
        row["annotator"] = "x"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "warehouse"
    env = environment(tmp_path, str(store), hh_rlhf_uri=str(hh), pku_saferlhf_uri=str(pku))
    result = materialize(env)
    meta = release_metadata(result)
    assert meta["status"] == "published"
    published = pq.read_table(store / "releases" / meta["release_id"] / "red_team")
    assert published["task_description_harmlessness_score"].null_count == 0
    assert str(published.schema.field("red_team_member_id").type) == "string"
    assert "w0" in published["red_team_member_id"].to_pylist()
    files = {
        f["path"]: f for s in manifest(store, meta["release_id"])["sources"] for f in s["files"]
    }
    assert files["data/Alpaca-7B/train.jsonl"]["unknown_keys"] == {"annotator": 4}
    assert files["red-team-attempts/red_team_attempts.jsonl.gz"]["unknown_keys"] == {}
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "pku_saferlhf/raw/alpaca_7b_train"
    ]
    assert event.materialization.metadata["unknown_key_rows"].value == 4


def test_upstream_row_counts_warn_on_the_sample_and_pass_on_the_real_file(tmp_path: Path):
    store = tmp_path / "warehouse"
    sample = materialize(environment(tmp_path, str(store)))
    check = check_results(sample)[("source_files", "upstream_row_counts")]
    assert sample.success and not check.passed and check.severity.value == "WARN"
    assert check.metadata["files_differing"].value == 3
    if not SHARED.exists():
        pytest.skip("needs ../shared/data for a real upstream file")
    mirror = tmp_path / "real-hh"
    (mirror / "harmless-base").mkdir(parents=True)
    shutil.copy(SHARED / "hh-rlhf/harmless-base/test.jsonl.gz", mirror / "harmless-base")
    real = materialize(environment(tmp_path, str(tmp_path / "w2"), hh_rlhf_uri=str(mirror)))
    check = check_results(real)[("source_files", "upstream_row_counts")]
    assert check.passed and check.metadata["files_compared"].value == 1


def test_mirror_roots_on_s3_are_checked(s3_client, s3_bucket: str, s3_env):
    from curation.ingest.sources import check_root

    options = {"client_kwargs": {"endpoint_url": s3_env["AWS_ENDPOINT_URL"]}}
    s3_client.put_object(Bucket=s3_bucket, Key="hh/harmless-base/test.jsonl.gz", Body=b"x")
    check_root(f"s3://{s3_bucket}/hh", options)  # a prefix with objects is a folder
    with pytest.raises(SourceError, match=rf"s3://{s3_bucket}/hhh: mirror root does not exist"):
        check_root(f"s3://{s3_bucket}/hhh", options)
    with pytest.raises(SourceError, match="mirror root is not a folder"):
        check_root(f"s3://{s3_bucket}/hh/harmless-base/test.jsonl.gz", options)


def test_a_file_where_a_folder_should_be_fails_naming_the_path(tmp_path: Path):
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    shutil.rmtree(mirror / "data/Alpaca-7B")
    (mirror / "data/Alpaca-7B").write_text("not a folder")
    with pytest.raises(SourceError, match=r"Alpaca-7B/test\.jsonl: cannot read"):
        read_raw(str(mirror / PKU_TEST))


def test_rows_that_crashed_the_run_are_quarantined_in_the_release(tmp_path: Path):
    """A duplicate key (HH) and a 2^63 id (PKU) used to fail the run with a bare ArrowInvalid,
    retried twice; now the run publishes and the release's quarantine names file, line, reason."""
    hh = copy_mirror(tmp_path, "hh-rlhf")
    pku = copy_mirror(tmp_path, "PKU-SafeRLHF")
    test = hh / "harmless-base/test.jsonl.gz"
    lines = gzip.decompress(test.read_bytes()).splitlines()
    row = json.loads(lines[5])
    lines[5] = json.dumps({"chosen": row["chosen"], "rejected": row["rejected"]}).encode()
    lines[5] = lines[5][:-1] + b', "chosen": ' + json.dumps(row["chosen"]).encode() + b"}"
    test.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    train = pku / "data/Alpaca-7B/train.jsonl"
    rows = train.read_text().splitlines()
    rows[9] = rows[9].replace(
        '"better_response_id": 0', '"better_response_id": 9223372036854775808'
    )
    rows[9] = rows[9].replace(
        '"better_response_id": 1', '"better_response_id": 9223372036854775808'
    )
    assert "9223372036854775808" in rows[9]
    train.write_text("\n".join(rows) + "\n")
    store = tmp_path / "warehouse"
    env = environment(tmp_path, str(store), hh_rlhf_uri=str(hh), pku_saferlhf_uri=str(pku))
    result = materialize(env)
    meta = release_metadata(result)
    assert result.success and meta["status"] == "published"
    quarantine = pq.read_table(store / "releases" / meta["release_id"] / "quarantine").to_pylist()
    by_place = {(r["source_file"], r["source_line"]): r["reasons"] for r in quarantine}
    assert by_place[("harmless-base/test.jsonl.gz", 5)] == ["duplicate_key"]
    assert by_place[("data/Alpaca-7B/train.jsonl", 9)] == ["int_out_of_range"]
    accounting = manifest(store, meta["release_id"])["counts"]["accounting"]
    assert accounting["ok"]
