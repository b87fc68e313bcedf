"""Credentials never reach a release, the Dagster instance or the console (issue 22, items 1-2).

Each run is the installed ``rlhf-curate`` in a subprocess with a fresh ``DAGSTER_HOME`` and
store, reading private HTTP mirrors (a real server on loopback that refuses requests without
the credentials). After it, every file under the store and ``DAGSTER_HOME`` (SQLite run and
event-log storage, compute logs, stage tables; parquet decoded, since it is compressed) and every
line of output is searched for each secret, as written and as the basic-auth header sends it.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.resources import (
    AwsCredentials,
    SourceCredentials,
    SourcesResource,
    settings_from_mapping,
)
from curation.ingest.sources import SourceError
from pipelines.cli import main
from tests.cli_helpers import cli, cli_env
from tests.http_mirror import AuthMirror, basic

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
PASSWORD = "hh-Pw-7c1f9e2a4b"
TOKEN = "pku-Tok-3d8b6a0e5f"
BEARER = "Bearer-Hdr-9a7e5c3b1d"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """A copy of both sample mirrors, to be served: ``hh/`` and ``pku/``."""
    root = tmp_path / "www"
    shutil.copytree(SAMPLE / "hh-rlhf", root / "hh")
    shutil.copytree(SAMPLE / "PKU-SafeRLHF", root / "pku")
    return root


@pytest.fixture
def mirror(www: Path) -> Iterator[AuthMirror]:
    """Requires basic auth ``reader:PASSWORD``, ``?token=TOKEN`` or ``Authorization: BEARER``."""
    server = AuthMirror(www, headers=[basic("reader", PASSWORD), BEARER], tokens=[TOKEN])
    yield server
    server.close()


def forms(secret: str) -> list[str]:
    """A secret as it may be written down: itself, and inside a basic-auth header."""
    return [secret, base64.b64encode(f"reader:{secret}".encode()).decode()]


def recorded_texts(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under ``root`` as bytes; a parquet file also decoded (data and metadata)."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        yield path, data
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            decoded = json.dumps([str(table.schema.metadata), table.to_pylist()], default=str)
            yield path, decoded.encode()


def assert_nowhere(secrets: list[str], roots: list[Path], proc) -> None:
    """No form of any secret in any file under ``roots`` or any line of the output (``proc``:
    anything with ``stdout`` and ``stderr``, e.g. a completed process or captured output)."""
    needles = [form for secret in secrets for form in forms(secret)]
    for root in roots:
        assert root.exists(), root
        for path, data in recorded_texts(root):
            found = [n for n in needles if n.encode() in data]
            assert not found, f"{found} in {path}"
    if isinstance(proc, subprocess.CompletedProcess):
        text = proc.stdout + proc.stderr
    else:  # pytest's captured output
        text = proc.out + proc.err
    for line in text.splitlines():
        assert not any(n in line for n in needles), line


def published(proc: subprocess.CompletedProcess, store: Path) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    release_id = next(
        line.split()[1] for line in proc.stdout.splitlines() if line.startswith("release ")
    )
    return json.loads((store / "releases" / release_id / "manifest.json").read_text())


def present_files(manifest: dict) -> dict[str, int]:
    return {
        f"{s['dataset']}/{f['path']}": f["rows"]
        for s in manifest["sources"]
        for f in s["files"]
        if f["present"]
    }


SAMPLE_FILES = {  # every file of the sample mirrors, each with rows
    "hh-rlhf/harmless-base/test.jsonl.gz",
    "hh-rlhf/harmless-base/train.jsonl.gz",
    "hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz",
    "pku-saferlhf/data/Alpaca-7B/test.jsonl",
    "pku-saferlhf/data/Alpaca-7B/train.jsonl",
}


def test_credentials_in_the_source_uris(tmp_path: Path, env: dict, mirror: AuthMirror):
    """HH-RLHF with basic auth in the URI's user info, PKU-SafeRLHF with a query-string token:
    both are read with them, and only the redacted URIs are recorded."""
    env["HH_RLHF_URI"] = mirror.url.replace("http://", f"http://reader:{PASSWORD}@") + "/hh"
    env["PKU_SAFERLHF_URI"] = f"{mirror.url}/pku?token={TOKEN}"
    proc = cli(["run"], env, tmp_path)
    manifest = published(proc, tmp_path / "store")
    assert mirror.refused == [] and mirror.served > 0
    assert {s["uri"] for s in manifest["sources"]} == {f"{mirror.url}/hh", f"{mirror.url}/pku"}
    files = present_files(manifest)
    assert set(files) == SAMPLE_FILES and all(files.values())
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [run] = instance.get_runs()
        assert run.tags["rlhf/hh_uri"] == f"{mirror.url}/hh"
        assert run.tags["rlhf/pku_uri"] == f"{mirror.url}/pku"
    assert_nowhere([PASSWORD, TOKEN], [tmp_path / "store", tmp_path / "home"], proc)


def test_credentials_from_the_environment(tmp_path: Path, env: dict, mirror: AuthMirror):
    """Plain mirror URIs, the header from ``SOURCES_HTTP_HEADERS``."""
    env["HH_RLHF_URI"] = f"{mirror.url}/hh"
    env["PKU_SAFERLHF_URI"] = f"{mirror.url}/pku"
    env["SOURCES_HTTP_HEADERS"] = json.dumps({"Authorization": BEARER})
    proc = cli(["run"], env, tmp_path)
    manifest = published(proc, tmp_path / "store")
    assert mirror.refused == [] and mirror.served > 0
    assert set(present_files(manifest)) == SAMPLE_FILES
    assert_nowhere([BEARER], [tmp_path / "store", tmp_path / "home"], proc)


def test_a_failed_read_quotes_no_credential(tmp_path: Path, env: dict, mirror: AuthMirror):
    """A file the server refuses even with the token fails the run when it is observed, naming
    the file and the status (not "absent": fsspec reports a 403 as not found); the HTTP client's
    error, which quotes the URL with its query, never gets out."""
    mirror.failing["/hh/harmless-base/test.jsonl.gz"] = 403
    env["HH_RLHF_URI"] = f"{mirror.url}/hh?token={TOKEN}"
    env["PKU_SAFERLHF_URI"] = str(SAMPLE / "PKU-SafeRLHF")
    proc = cli(["run"], env, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = f"{mirror.url}/hh/harmless-base/test.jsonl.gz: cannot observe: 403"
    assert failed in proc.stderr, proc.stderr
    assert_nowhere([TOKEN], [tmp_path / "home"], proc)


STORE_SECRET = "supersecret123"
STORE_URI = f"s3://AKIAFAKEKEY:{STORE_SECRET}@advbucket/curated"


def test_credentials_in_the_store_uri_are_never_printed(tmp_path: Path, env: dict):
    """Issue 22, item 2: the error line names the store without its credentials."""
    proc = cli(["run"], {**env, "CURATED_STORE_URI": STORE_URI}, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(
        "error: CURATED_STORE_URI: s3://advbucket/curated: credentials in a store URI are "
        "refused (they would be printed and recorded); give them as AWS_ACCESS_KEY_ID"
    )
    assert_nowhere([STORE_SECRET], [], proc)
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("variables", "args", "secret", "named"),
    [
        (
            {},
            ["run", "--store", STORE_URI],
            STORE_SECRET,
            "--store s3://advbucket/curated: credentials on the command line are refused",
        ),
        (
            {"CURATED_STORE_URI": STORE_URI},
            ["releases", "list"],
            STORE_SECRET,
            "s3://advbucket/curated: credentials in a store URI are refused",
        ),
        (
            {"STAGE_STORE_URI": f"s3://advbucket/stage?X-Amz-Signature={STORE_SECRET}"},
            ["run"],
            STORE_SECRET,
            "STAGE_STORE_URI: s3://advbucket/stage: credentials in a store URI are refused",
        ),
        (
            {"HH_RLHF_URI": f"hf://datasets/Anthropic/hh-rlhf?token={BEARER}"},
            ["run"],
            BEARER,
            "source hh-rlhf hf://datasets/Anthropic/hh-rlhf: credentials in a hf:// source URI "
            "are not supported",
        ),
        (
            {"SOURCES_HTTP_HEADERS": '{"Authorization": Bearer-Hdr-9a7e5c3b1d}'},
            ["run"],
            BEARER,
            "SOURCES_HTTP_HEADERS: not JSON (line 1, column 19)",
        ),
    ],
)
def test_a_credential_where_it_is_refused_stops_before_any_work(
    tmp_path: Path,
    env: dict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    variables: dict,
    args: list[str],
    secret: str,
    named: str,
):
    """The same checks in process (the CLI's start-up costs seconds each)."""
    for name, value in {**env, **variables}.items():
        monkeypatch.setenv(name, value)
    assert main(args) == 2
    out = capsys.readouterr()
    assert named in out.err, out.err
    assert_nowhere([secret], [], out)
    assert not (tmp_path / "home").exists()  # no run


def test_refused_credentials_fail_the_preflight(
    tmp_path: Path,
    env: dict,
    mirror: AuthMirror,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
):
    """A wrong password: the source check names the redacted mirror and the 401; the same
    password on the command line is refused before anything is asked."""
    wrong = "wrong-Pw-5e3c1a9f"
    uri = mirror.url.replace("http://", f"http://reader:{wrong}@") + "/hh"
    for name, value in {**env, "HH_RLHF_URI": uri}.items():
        monkeypatch.setenv(name, value)
    assert main(["run"]) == 2
    out = capsys.readouterr()
    assert f"error: source hh-rlhf {mirror.url}/hh: cannot be read" in out.err
    assert "401" in out.err and mirror.refused
    assert_nowhere([wrong], [], out)
    monkeypatch.delenv("HH_RLHF_URI")
    asked = len(mirror.refused)
    assert main(["run", "--hh", uri]) == 2
    out = capsys.readouterr()
    assert f"--hh {mirror.url}/hh: credentials on the command line are refused" in out.err
    assert_nowhere([wrong], [], out)
    assert len(mirror.refused) == asked  # nothing asked of the mirror
    assert not (tmp_path / "home").exists()


def test_credentials_in_run_config_or_settings_are_refused():
    """What the UI's launchpad may set: a source URI with credentials fails the run naming its
    redacted form; a reference set with credentials is refused when the settings are read."""
    sources = SourcesResource(
        hh_rlhf_uri=f"https://reader:{PASSWORD}@mirror.example/hh",
        pku_saferlhf_uri=str(SAMPLE / "PKU-SafeRLHF"),
        aws=AwsCredentials(),
        credentials=SourceCredentials(),
    )
    with pytest.raises(SourceError, match=r"^https://mirror\.example/hh: credentials") as info:
        sources.root("hh-rlhf")
    assert PASSWORD not in str(info.value)
    assert sources.root("pku-saferlhf") == (str(SAMPLE / "PKU-SafeRLHF"), None)
    spec = f"s3://AKIAFAKEKEY:{STORE_SECRET}@bucket/refs.jsonl#prompt"
    with pytest.raises(ValueError, match=r"s3://bucket/refs\.jsonl#prompt: credentials") as info:
        settings_from_mapping({"extra_reference_uris": [spec]})
    assert STORE_SECRET not in str(info.value)
