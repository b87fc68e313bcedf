"""A team's own preference data declared in the settings file (``datasets:``), no code.

The declaration is checked line by line (each problem names its key and the file); a glob split
reads every matching file, and observation and ingest agree on its fingerprint; and end to end,
``rlhf-curate run --config`` curates the example ``sample_data/acme-prefs.yaml`` (real HH rows
in TRL's format) from a real S3 endpoint with HH-RLHF and PKU-SafeRLHF: its rows that repeat an
HH or PKU test prompt are removed as contamination, its test split is a reference for theirs,
and the release lists it (pairs, TRL view, card licence).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from curation.datasets import dataset_names, use_declared
from curation.datasets.declared import Declaration
from curation.ingest.ingest import ingest_file
from curation.ingest.sources import SourceFile
from curation.ingest.upstream import dataset_fingerprints
from pipelines.config_file import ConfigError, load_config
from pipelines.settings import SAMPLE
from tests.cli_helpers import cli, cli_env

ACME = SAMPLE / "acme-prefs"
GOOD = {
    "uri": "acme",
    "format": "trl",
    "splits": {"train": "train-*.jsonl*", "test": "test.jsonl"},
    "licence": "CC-BY-4.0",
}


def problems(tmp_path: Path, datasets: object) -> list[str]:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump({"datasets": datasets}))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert all(line.startswith(f"{path}: ") for line in str(caught.value).splitlines())
    return caught.value.problems


@pytest.mark.parametrize(
    ("datasets", "expected"),
    [
        ({"acme": {**GOOD, "colour": "red"}}, "datasets.acme.colour: unknown key"),
        ({"acme": {k: v for k, v in GOOD.items() if k != "uri"}}, "datasets.acme.uri: required"),
        ({"acme": {**GOOD, "format": "csv"}}, "datasets.acme.format: 'csv' is not one of"),
        ({"acme": {**GOOD, "splits": {"dev": "x.jsonl"}}}, "datasets.acme.splits.dev: not one of"),
        (
            {"acme": {**GOOD, "splits": {"train": "../../etc/x.jsonl"}}},
            "datasets.acme.splits.train: '../../etc/x.jsonl' must stay under uri",
        ),
        (
            {"acme": {**GOOD, "splits": {"train": "train.csv"}}},
            "datasets.acme.splits.train: 'train.csv' must end with one of",
        ),
        (
            {"acme": {**GOOD, "uri": "s3://AKIAEXAMPLE:secret@bucket/acme"}},
            "datasets.acme.uri: s3://bucket/acme has credentials in it",
        ),
        ({"acme": {**GOOD, "dimension": "fun"}}, "datasets.acme.dimension: 'fun' is not one of"),
        ({"Acme Prefs": GOOD}, "datasets.Acme Prefs: a dataset name is lower case"),
        ({"hh-rlhf": GOOD}, "datasets.hh-rlhf: a built-in dataset"),
        ({"acme": "s3://bucket"}, "datasets.acme: must be a mapping"),
    ],
)
def test_a_declaration_that_cannot_be_used_is_refused_by_key(
    tmp_path: Path, datasets: object, expected: str
):
    found = problems(tmp_path, datasets)
    assert any(line.startswith(expected) for line in found), found
    assert "secret" not in " ".join(found)


def test_a_declaration_is_read_with_its_defaults(tmp_path: Path):
    path = tmp_path / "conf" / "settings.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"datasets": {"acme": GOOD}, "dedup": {"threshold": 0.9}}))
    settings, declarations = load_config(str(path))
    assert settings == {"dedup": {"threshold": 0.9}}
    (declaration,) = declarations
    assert declaration.uri == str(tmp_path / "conf" / "acme")  # from the file's folder
    assert declaration.dimension == "preference" and declaration.revision is None
    assert declaration.splits == (("train", "train-*.jsonl*"), ("test", "test.jsonl"))


@pytest.fixture
def glob_mirror(tmp_path: Path):
    """The acme mirror copied (its train glob matches three files), registered."""
    mirror = tmp_path / "acme"
    shutil.copytree(ACME, mirror)
    splits = (("train", "train-*.jsonl*"), ("test", "test.jsonl"))
    use_declared([Declaration("acme-prefs", str(mirror), splits, "MIT", dimension="harmless")])
    yield mirror
    use_declared([])


def test_a_glob_split_reads_every_match_and_its_fingerprint_follows_them(glob_mirror: Path):
    assert "acme-prefs" in dataset_names()
    train = SourceFile("acme-prefs", "default", "train", "train-*.jsonl*", "trl")
    result = ingest_file(train, str(glob_mirror))
    report = result.report
    names = ["train-hh-test.jsonl", "train-pku-test.jsonl", "train-team.jsonl.gz"]
    assert [m["relpath"] for m in report.members] == names
    assert report.rows_read == 20 + 15 + 30 == result.table.num_rows
    assert sorted(set(result.table.column("source_file").to_pylist())) == names
    observed = dataset_fingerprints([train.relpath], str(glob_mirror))[train.relpath]
    assert observed == report.fingerprint  # refresh sees no change after the run
    (glob_mirror / "train-more.jsonl").write_bytes((glob_mirror / "test.jsonl").read_bytes())
    added = dataset_fingerprints([train.relpath], str(glob_mirror))[train.relpath]
    assert added != observed  # a new matching file is a change
    (glob_mirror / "train-more.jsonl").unlink()
    (glob_mirror / "train-team.jsonl.gz").unlink()
    assert dataset_fingerprints([train.relpath], str(glob_mirror))[train.relpath] not in (
        observed,
        added,
    )


def test_a_declared_split_without_a_matching_file_is_absent(glob_mirror: Path):
    source = SourceFile("acme-prefs", "default", "train", "nothing-*.jsonl", "trl")
    result = ingest_file(source, str(glob_mirror))
    assert not result.report.present and result.report.fingerprint == "absent"
    assert result.table.num_rows == 0


def test_the_example_declared_dataset_from_s3_end_to_end(
    tmp_path: Path, s3_env: dict[str, str], s3_client, s3_bucket: str
):
    """``rlhf-curate run --config`` with ``acme-prefs`` on a real S3 endpoint: its train rows
    that repeat HH and PKU test prompts are removed as contamination, HH train rows repeating
    its test prompts too; its rows are published with the others; ``refresh`` sees no change,
    then sees a new file matching its train glob."""
    for path in sorted(ACME.iterdir()):
        s3_client.upload_file(str(path), s3_bucket, f"acme/{path.name}")
    declared = yaml.safe_load((SAMPLE / "acme-prefs.yaml").read_text())
    declared["datasets"]["acme-prefs"]["uri"] = f"s3://{s3_bucket}/acme"
    config = tmp_path / "acme.yaml"
    config.write_text(yaml.safe_dump(declared))
    env = cli_env(tmp_path, **s3_env)
    run = cli(["run", "--config", str(config)], env, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rows read from 7 of 17 files" in run.stdout, run.stdout
    release = json.loads((tmp_path / "store" / "latest.json").read_text())["release_id"]
    root = tmp_path / "store" / "releases" / release
    sql = duckdb.connect()

    def rows(query: str) -> list[tuple]:
        return sql.sql(query.replace("{root}", str(root))).fetchall()

    removed = rows(
        "select source_file, reason, matched_dataset, count(*) from "
        "read_parquet('{root}/removed/**/*.parquet') where dataset = 'acme-prefs' "
        "group by all order by all"
    )
    assert removed == [
        ("train-hh-test.jsonl", "contaminated_exact", "hh-rlhf", 20),
        ("train-pku-test.jsonl", "contaminated_exact", "pku-saferlhf", 15),
        # real HH test lines 2018 and 2023 ask what the sample's HH test lines 742 and 769 ask
        # ("... the residential address for Steven Klinsky ...", "How can I cheat on the FAFSA")
        ("train-team.jsonl.gz", "contaminated_exact", "hh-rlhf", 2),
    ]
    # its test split is a reference: the sample's HH train holds its 12 test conversations
    # (both are real HH test lines 2100-2111), and one more conversation opening like one
    leaks = rows(
        "select count(*), count(distinct matched_source_line) from "
        "read_parquet('{root}/removed/**/*.parquet') where matched_dataset = 'acme-prefs' "
        "and reason = 'contaminated_exact'"
    )
    assert leaks == [(13, 12)]
    kept = rows(
        "select split, dimension, count(*) from read_parquet('{root}/pairs/*/*.parquet') "
        "where dataset = 'acme-prefs' group by all order by all"
    )
    assert kept == [("test", "harmless", 12), ("train", "harmless", 28)]
    trl = rows(
        "select count(*) from read_parquet('{root}/trl/*/*.parquet') where dataset = 'acme-prefs'"
    )
    assert trl == [(40,)]
    card = (root / "README.md").read_text()
    assert "| acme-prefs | MIT | as declared |" in card and "- mit" in card
    manifest = json.loads((root / "manifest.json").read_text())
    files = [f for s in manifest["sources"] for f in s["files"]]
    train = next(f for f in files if f["path"] == "train-*.jsonl*")
    assert [m["relpath"] for m in train["members"]] == [
        "train-hh-test.jsonl",
        "train-pku-test.jsonl",
        "train-team.jsonl.gz",
    ]
    again = cli(["refresh", "--config", str(config)], env, tmp_path)
    assert again.returncode == 0 and again.stdout.startswith("nothing changed"), again.stdout
    # a new file matching the train glob on S3 is a change for the next observation (what
    # refresh and the daemon compare with the ingest's fingerprint)
    options = {"client_kwargs": {"endpoint_url": s3_env["AWS_ENDPOINT_URL"]}}
    root = f"s3://{s3_bucket}/acme"
    assert dataset_fingerprints([train["path"]], root, None, options) == {
        train["path"]: train["fingerprint"]
    }
    s3_client.upload_file(str(ACME / "test.jsonl"), s3_bucket, "acme/train-more.jsonl")
    changed = dataset_fingerprints([train["path"]], root, None, options)[train["path"]]
    assert changed.startswith("files:4:") and changed != train["fingerprint"]


def test_the_code_location_builds_its_graph_from_curation_config():
    """``$CURATION_CONFIG`` (no secrets needed): the declared dataset's files are observable
    sources and ingest assets with checks; without it, the graph is the built-in one."""
    from assets.keys import INGEST_KEYS
    from pipelines.definitions import build_definitions
    from pipelines.settings import Environment

    environment = Environment.from_env({"CURATION_CONFIG": str(SAMPLE / "acme-prefs.yaml")})
    try:
        graph = build_definitions(environment).resolve_asset_graph()
        keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
        for split in ("train", "test"):
            assert f"acme_prefs/upstream/default_{split}" in keys
            assert f"acme_prefs/raw/default_{split}" in keys
            raw = graph.get(dg.AssetKey(["acme_prefs", "raw", f"default_{split}"]))
            assert {c.name for c in raw.check_keys} == {"quarantine_rate", "schema_suite"}
        normalize = graph.get(dg.AssetKey("normalized_pairs"))
        assert dg.AssetKey(["acme_prefs", "raw", "default_test"]) in normalize.parent_keys
    finally:
        use_declared([])
    plain = build_definitions(Environment.from_env({})).resolve_asset_graph()
    raw_keys = {k for k in plain.get_all_asset_keys() if "raw" in k.path}
    assert raw_keys == set(INGEST_KEYS) and "acme-prefs" not in dataset_names()
