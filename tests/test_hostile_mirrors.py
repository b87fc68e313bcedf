"""Issue 22 items 3, 4 and 7: what a mirror may contain, and a mirror of the wrong dataset.

* A symbolic link (on the file or on a folder of its path) that resolves outside the mirror root
  is an error naming the link before anything is read, unless ``allow_links_outside_mirror``;
  links inside the mirror (a hf-style ``blobs/`` folder) and a root that is itself a link work.
* No file decompresses past ``max_decompressed_bytes``: a gzip bomb fails naming the file, after
  at most that many bytes (peak RSS measured in a real process with the default bound).
* A source root holding no file of its dataset's layout fails the preflight in one line, exit 2,
  on a local folder and on S3.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from assets.ingest import ingest_one
from assets.resources import AwsCredentials, CurationSettings, SourceCredentials, SourcesResource
from curation.ingest.ingest import ingest_file
from curation.ingest.preflight import check_source_root, preflight
from curation.ingest.sources import (
    MAX_DECOMPRESSED_BYTES,
    ReadPolicy,
    SourceError,
    is_present,
    read_raw,
    source_file,
)
from curation.ingest.upstream import source_fingerprint
from pipelines.settings import REPO, SAMPLE
from tests.pipeline_helpers import environment, materialize

HH_TEST = source_file("harmless-base", "test")
RED_TEAM = source_file("red-team-attempts")
PKU_TEST = source_file("Alpaca-7B", "test")
PKU_TRAIN = source_file("Alpaca-7B", "train")
SECRET = "root:x:0:0:secret-7f3a9c:/root:/bin/bash"


def copy_mirror(tmp_path: Path, name: str) -> Path:
    mirror = tmp_path / name
    shutil.copytree(SAMPLE / name, mirror)
    return mirror


def outside_file(tmp_path: Path) -> Path:
    """A passwd-like file outside every mirror of the test."""
    path = tmp_path / "elsewhere" / "passwd"
    path.parent.mkdir()
    path.write_text(f"{SECRET}\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    return path


def failure_messages(result) -> str:
    """Every step failure's message (and a ``dg.Failure``'s description)."""
    out = []
    for event in (e for e in result.all_events if e.is_step_failure):
        data = event.step_failure_data
        out.append(data.error.message if data.error else "")
        if data.user_failure_data:
            out.append(data.user_failure_data.description or "")
    return "\n".join(out)


def files_containing(folder: Path, text: str) -> list[Path]:
    needle = text.encode()
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


# --- item 3: links out of the mirror ---------------------------------------------------------------


def test_file_link_out_of_the_mirror_fails_the_run_naming_it(tmp_path: Path):
    """The issue's reproduction (with quarantine thresholds high enough to publish the lines):
    the run fails before any raw asset, naming the link; the outside text is nowhere."""
    secret = outside_file(tmp_path)
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    link = mirror / PKU_TEST.relpath
    link.unlink()
    link.symlink_to(secret)
    store = tmp_path / "warehouse"
    settings = CurationSettings(quarantine_error_rate=1.0, quarantine_warn_rate=1.0)
    result = materialize(
        environment(tmp_path, str(store), pku_saferlhf_uri=str(mirror)), settings=settings
    )
    assert not result.success
    message = failure_messages(result)
    assert f"{link}: a symbolic link to {secret}, outside the mirror {mirror}; not read" in message
    raw = [e for e in result.all_events if e.is_step_materialization]
    assert [e.asset_key.to_user_string() for e in raw] == []  # failed before any file was read
    assert not (store / "latest.json").exists()
    assert files_containing(tmp_path / "dagster_home", "secret-7f3a9c") == []


def test_folder_link_out_of_the_mirror_fails_naming_the_folder(tmp_path: Path):
    """A folder on the path (``data/Alpaca-7B``) linked to a copy outside the mirror: the
    library refuses both presence and reading, naming the folder link."""
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    outside = tmp_path / "elsewhere" / "Alpaca-7B"
    shutil.move(mirror / "data" / "Alpaca-7B", outside)
    (mirror / "data" / "Alpaca-7B").symlink_to(outside, target_is_directory=True)
    uri = str(mirror / PKU_TRAIN.relpath)
    expected = f"{mirror / 'data' / 'Alpaca-7B'} is a symbolic link to {outside}, outside"
    with pytest.raises(SourceError, match=expected):
        ingest_file(PKU_TRAIN, str(mirror))
    with pytest.raises(SourceError, match=expected):
        is_present(uri, root=str(mirror))
    # an absent file under that folder is refused too: the folder itself leaves the mirror
    with pytest.raises(SourceError, match=expected):
        is_present(str(mirror / "data/Alpaca-7B/absent.jsonl"), root=str(mirror))


def test_links_inside_the_mirror_are_read(tmp_path: Path):
    """A hf-cache-like mirror whose files are relative links into ``blobs/`` under the root, a
    folder link inside the mirror, reached through a root that is itself a link: every file
    reads as the plain copy does."""
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    blobs = mirror / "blobs"
    blobs.mkdir()
    for source in (PKU_TRAIN, PKU_TEST):
        path = mirror / source.relpath
        blob = blobs / hashlib.sha256(path.read_bytes()).hexdigest()
        path.rename(blob)
        path.symlink_to(os.path.relpath(blob, path.parent))
    (mirror / "snapshots").mkdir()  # the same depth: the links into blobs/ stay valid
    (mirror / "data" / "Alpaca-7B").rename(mirror / "snapshots" / "Alpaca-7B")
    (mirror / "data" / "Alpaca-7B").symlink_to("../snapshots/Alpaca-7B", target_is_directory=True)
    root = tmp_path / "mirror-link"
    root.symlink_to(mirror, target_is_directory=True)
    for source in (PKU_TRAIN, PKU_TEST):
        plain = ingest_file(source, str(SAMPLE / "PKU-SafeRLHF"))
        linked = ingest_file(source, str(root))
        assert linked.report.sha256 == plain.report.sha256
        assert linked.table.equals(plain.table)
        assert source_fingerprint(str(root), source.relpath).startswith("sha256:")


def test_links_out_of_the_mirror_are_read_when_allowed(tmp_path: Path):
    """``allow_links_outside_mirror`` (through the settings resource and the ingest asset's own
    function) reads a file linked from elsewhere."""
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    link = mirror / PKU_TEST.relpath
    link.unlink()
    link.symlink_to(SAMPLE / "PKU-SafeRLHF" / PKU_TEST.relpath)
    sources = SourcesResource(
        hh_rlhf_uri=str(SAMPLE / "hh-rlhf"),
        pku_saferlhf_uri=str(mirror),
        aws=AwsCredentials(),
        credentials=SourceCredentials(),
    )
    with pytest.raises(SourceError, match="outside the mirror"):
        ingest_one(PKU_TEST, sources, CurationSettings())
    allowed = CurationSettings(allow_links_outside_mirror=True)
    table, metadata = ingest_one(PKU_TEST, sources, allowed)
    assert metadata["present"] and table.num_rows == metadata["rows_read"] > 0


def test_observing_a_link_out_of_the_mirror_does_not_read_it(tmp_path: Path):
    """The upstream observation hashes local files; a link out of the mirror gets a fingerprint
    from its size and mtime, not from the content it points at."""
    secret = outside_file(tmp_path)
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    link = mirror / PKU_TEST.relpath
    link.unlink()
    link.symlink_to(secret)
    fingerprint = source_fingerprint(str(mirror), PKU_TEST.relpath)
    assert hashlib.sha256(secret.read_bytes()).hexdigest() not in fingerprint
    assert fingerprint.startswith("unread:size:")


def test_a_fifo_in_the_mirror_is_refused_not_read(tmp_path: Path):
    """A named pipe where a file should be would block the reader forever: refused by name."""
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    path = mirror / PKU_TEST.relpath
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(SourceError, match=r"Alpaca-7B/test\.jsonl: not a regular file"):
        is_present(str(path), root=str(mirror))
    assert source_fingerprint(str(mirror), PKU_TEST.relpath).startswith("unread:")


# --- item 4: bounded decompression -----------------------------------------------------------------

REAL_ROW = gzip.decompress((SAMPLE / "hh-rlhf" / HH_TEST.relpath).read_bytes()).splitlines()[0]


def write_gzip(path: Path, block: bytes, total: int, members: int = 1) -> int:
    """Write a gzip of ``block`` repeated to ``total`` bytes, streaming (``members`` gzip members
    of equal content, each compressed once); the decompressed size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    per_member = total // members
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    member = bytearray()
    for _ in range(per_member // len(block)):
        member += compressor.compress(block)
    member += compressor.flush()
    with path.open("wb") as handle:
        for _ in range(members):
            handle.write(member)
    return (per_member // len(block)) * len(block) * members


@pytest.mark.parametrize(
    ("block", "source"),
    [(b"\0" * 65536, HH_TEST), (REAL_ROW + b"\n", HH_TEST), (REAL_ROW + b"\n", RED_TEAM)],
    ids=["zeros", "valid-rows", "red-team-path"],
)
def test_gzip_bomb_over_the_bound_fails_naming_the_file(tmp_path: Path, block: bytes, source):
    size = write_gzip(tmp_path / source.relpath, block, 8 << 20)
    assert size > 4 << 20
    policy = ReadPolicy(max_decompressed_bytes=1 << 20)
    with pytest.raises(SourceError) as caught:
        ingest_file(source, str(tmp_path), policy=policy)
    assert str(caught.value) == (
        f"{tmp_path / source.relpath}: decompresses to more than 1,048,576 bytes, the bound on "
        "one source file (max_decompressed_bytes; docs/operations.md, Security)"
    )


def test_the_bound_is_exact_and_covers_every_member(tmp_path: Path):
    """The real file ingests with the bound at its decompressed size and fails one byte below;
    a second gzip member counts toward the same bound."""
    real = SAMPLE / "hh-rlhf" / HH_TEST.relpath
    size = len(gzip.decompress(real.read_bytes()))
    (tmp_path / HH_TEST.relpath).parent.mkdir(parents=True)
    shutil.copy(real, tmp_path / HH_TEST.relpath)
    at = ingest_file(HH_TEST, str(tmp_path), policy=ReadPolicy(max_decompressed_bytes=size))
    assert at.table.num_rows == at.report.rows_read > 0
    with pytest.raises(SourceError, match="decompresses to more than"):
        ingest_file(HH_TEST, str(tmp_path), policy=ReadPolicy(max_decompressed_bytes=size - 1))
    (tmp_path / HH_TEST.relpath).write_bytes(real.read_bytes() * 2)  # two members
    twice = ingest_file(HH_TEST, str(tmp_path), policy=ReadPolicy(max_decompressed_bytes=2 * size))
    assert twice.report.rows_read == 2 * at.report.rows_read
    with pytest.raises(SourceError, match="decompresses to more than"):
        ingest_file(HH_TEST, str(tmp_path), policy=ReadPolicy(max_decompressed_bytes=size + 10))


def test_an_uncompressed_file_over_the_bound_fails_before_it_is_read(tmp_path: Path):
    mirror = copy_mirror(tmp_path, "PKU-SafeRLHF")
    path = mirror / PKU_TRAIN.relpath
    with pytest.raises(SourceError, match=rf"{path}: is more than 10,000 bytes, the bound"):
        read_raw(str(path), root=str(mirror), policy=ReadPolicy(max_decompressed_bytes=10_000))


def test_the_bound_is_a_setting_checked_up_front(tmp_path: Path):
    """``max_decompressed_bytes`` reaches the ingest function of the asset; a bound that Arrow
    could not hold (one string array: 2**31 - 2 bytes) or below 1 is refused by the settings."""
    write_gzip(tmp_path / HH_TEST.relpath, REAL_ROW + b"\n", 4 << 20)
    sources = SourcesResource(
        hh_rlhf_uri=str(tmp_path),
        pku_saferlhf_uri=str(tmp_path),
        aws=AwsCredentials(),
        credentials=SourceCredentials(),
    )
    settings = CurationSettings(max_decompressed_bytes=1 << 20)
    with pytest.raises(SourceError, match="decompresses to more than 1,048,576 bytes"):
        ingest_one(HH_TEST, sources, settings)
    table, _ = ingest_one(HH_TEST, sources, CurationSettings())
    assert table.num_rows > 1000
    for bad in (0, 2**31):
        with pytest.raises(Exception, match="max_decompressed_bytes"):
            CurationSettings(max_decompressed_bytes=bad)


BOMB_CHILD = textwrap.dedent(
    """
    import resource, sys
    from curation.ingest.ingest import ingest_file
    from curation.ingest.sources import SourceError, source_file
    try:
        ingest_file(source_file("harmless-base", "test"), sys.argv[1])
        print("INGESTED")
    except SourceError as exc:
        print("ERROR", exc)
    print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


@pytest.mark.parametrize("block", [b"\0" * 65536, REAL_ROW + b"\n"], ids=["zeros", "valid-rows"])
def test_default_bound_fails_a_bomb_without_holding_it(tmp_path: Path, block: bytes):
    """A 2.25-GiB bomb (multi-member, a few MB on disk) against the default bound, in a real
    process: a clear error naming the file, and a peak RSS under 2 GB (the whole content would
    not fit; the old reader held it twice)."""
    size = write_gzip(tmp_path / HH_TEST.relpath, block, (9 << 30) // 4, members=36)
    assert size > MAX_DECOMPRESSED_BYTES and size > 2 << 30
    done = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == (
        f"ERROR {tmp_path / HH_TEST.relpath}: decompresses to more than "
        f"{MAX_DECOMPRESSED_BYTES:,} bytes, the bound on one source file "
        "(max_decompressed_bytes; docs/operations.md, Security)"
    )
    peak = int(lines[1].removeprefix("PEAK_KIB ")) * 1024
    assert peak < 2_000_000_000, f"peak RSS {peak / 1e9:.2f} GB"


# --- item 7: a root without its dataset's files ----------------------------------------------------


def test_preflight_refuses_a_root_of_the_wrong_dataset():
    """Both sample mirrors swapped: each root is a readable folder, but without a file of its
    dataset's layout; the right roots pass."""
    hh, pku = str(SAMPLE / "hh-rlhf"), str(SAMPLE / "PKU-SafeRLHF")
    wrong = check_source_root("hh-rlhf", pku)
    assert not wrong.ok
    assert wrong.line() == (
        f"FAIL  source hh-rlhf {pku}: no recognisable hh-rlhf files in this mirror (expected e.g. "
        "harmless-base/train.jsonl.gz, harmless-base/test.jsonl.gz, helpful-base/train.jsonl.gz)"
    )
    assert not check_source_root("pku-saferlhf", hh).ok
    assert check_source_root("hh-rlhf", hh).ok and check_source_root("pku-saferlhf", pku).ok


def test_preflight_refuses_a_wrong_root_on_s3(s3_client, s3_bucket: str, s3_env):
    """The PKU sample uploaded under ``pku/``: a good PKU root, a wrong HH root."""
    for path in sorted((SAMPLE / "PKU-SafeRLHF").rglob("*.jsonl")):
        key = f"pku/{path.relative_to(SAMPLE / 'PKU-SafeRLHF')}"
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=path.read_bytes())
    options = AwsCredentials(endpoint_url=s3_env["AWS_ENDPOINT_URL"]).storage_options("s3://x")
    root = f"s3://{s3_bucket}/pku"
    checks = preflight(
        f"s3://{s3_bucket}/curated", {"hh-rlhf": root, "pku-saferlhf": root}, options
    )
    assert [c.ok for c in checks] == [True, False, True], [c.line() for c in checks]
    assert checks[1].detail.startswith("no recognisable hh-rlhf files in this mirror (expected")


def test_cli_refuses_a_root_of_the_wrong_dataset_before_the_run(tmp_path: Path):
    """``rlhf-curate run --hh sample_data/PKU-SafeRLHF``: one line, exit 2, no run started."""
    script = Path(sys.executable).parent / "rlhf-curate"
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]
    home = tmp_path / "home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "CURATED_STORE_URI": str(tmp_path / "w")}
    done = subprocess.run(
        [*cli, "run", "--hh", "sample_data/PKU-SafeRLHF"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "error: source hh-rlhf sample_data/PKU-SafeRLHF: no recognisable hh-rlhf files in this "
        "mirror (expected e.g. harmless-base/train.jsonl.gz, harmless-base/test.jsonl.gz, "
        "helpful-base/train.jsonl.gz)"
    ]
    assert not home.exists()  # no Dagster run was launched


def test_a_run_with_a_wrong_root_fails_before_ingesting(tmp_path: Path):
    """Without the CLI (a run launched from the UI): the ingest step fails before reading any
    file, naming the root, instead of after ingesting all of them."""
    store = tmp_path / "warehouse"
    pku = str(SAMPLE / "PKU-SafeRLHF")
    result = materialize(environment(tmp_path, str(store), hh_rlhf_uri=pku))
    assert not result.success
    failed = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failed] == ["ingest_files"]
    assert f"{pku}: no recognisable hh-rlhf files" in failure_messages(result)
    assert not any(e.is_step_materialization for e in result.all_events)
