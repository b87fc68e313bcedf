"""Consumer API and CLI: open/read lazily, verify, list, show, diff, prune."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pyarrow as pa
import pytest

from curation.core import schema as S
from curation.core.store import Store
from curation.core.version import release_libraries
from curation.datasets import hh_rlhf
from curation.publish.reader import diff_releases, list_releases, open_release, prune, show
from curation.publish.release import ReleaseError, compute_release_id, manifest_key
from pipelines.cli_releases import add_release_commands, run_releases_command
from tests.test_release import (  # shared synthetic data and fixtures
    SOURCES,
    Boom,
    Clock,
    latest_id,
    make_pairs,
    make_quarantine,
    make_removed,
    make_tables,
    publish,
    release_ids,
)

pytestmark = pytest.mark.usefixtures("fast_charts")


# ---------------------------------------------------------------------------- open & read


def test_open_release_by_latest_id_and_prefix(store: Store) -> None:
    clock = Clock()
    first = publish(store, config={"v": 1}, clock=clock)
    second = publish(store, config={"v": 2}, clock=clock)
    assert open_release(store.uri).release_id == second.release_id
    assert open_release(store, "latest").release_id == second.release_id
    assert open_release(store, first.release_id).release_id == first.release_id
    assert open_release(store, first.release_id[:6]).release_id == first.release_id
    release = open_release(store, first.release_id)
    assert release.tables == ["pairs", "quarantine", "red_team", "removed", "trl"]
    assert release.splits("pairs") == ["test", "train"]
    assert release.rows("pairs", "train") == 24
    assert release.to_pandas("removed", "test").shape == (3, len(S.REMOVED))
    assert release.table("pairs", columns=["pair_id"]).num_columns == 1
    assert all(p.startswith(release.uri) for p in release.paths("pairs"))
    assert show(store, first.release_id) == first.manifest
    with pytest.raises(KeyError, match="no split 'validation'"):
        release.table("pairs", "validation")
    with pytest.raises(KeyError, match="no table 'nope'"):
        release.table("nope")
    with pytest.raises(ReleaseError) as info:
        open_release(store, "0123456789abcdef")
    assert store.uri in str(info.value) and "0123456789abcdef" in str(info.value)


def test_nothing_published(tmp_path: Path) -> None:
    store = Store(tmp_path / "empty")
    assert list_releases(store) == []
    with pytest.raises(ReleaseError, match=r"no latest\.json"):
        open_release(store)


def test_reads_are_lazy_and_errors_name_the_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    result = publish(store)
    rid = result.release_id
    gone = result.manifest["tables"]["pairs"]["files"][0]["path"]
    store.delete(f"releases/{rid}/{gone}")
    release = open_release(store)  # reads the manifest only
    assert release.table("red_team").num_rows == 4
    with pytest.raises(ReleaseError) as info:
        release.table("pairs")
    message = str(info.value)
    assert store.uri in message and rid in message and gone in message


def test_reads_never_unpickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle
    import re

    import curation.core.store
    import curation.publish.reader
    import curation.publish.release

    for module in (curation.publish.reader, curation.publish.release, curation.core.store):
        source = Path(module.__file__).read_text()
        assert not re.search(r"import (cloud)?pickle|pickle\.load|read_pickle|joblib", source)
    store = Store(tmp_path / "s")
    a = publish(store, config={"v": 1})

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    release = open_release(store)
    assert release.to_pandas("pairs").shape[0] == 30
    assert release.verify() == []
    assert diff_releases(store, a.release_id, "latest")["tables"]["pairs"]["*"]["unchanged"] == 30


# ---------------------------------------------------------------------------- verify


def test_verify_catches_tampering(store: Store) -> None:
    result = publish(store, max_rows_per_part=10)
    rid, pre = result.release_id, f"releases/{result.release_id}"
    release = open_release(store)
    assert release.verify(progress=True) == []
    files = result.manifest["tables"]["pairs"]["files"]

    flipped = files[0]["path"]
    data = bytearray(store.get(f"{pre}/{flipped}"))
    data[8] ^= 0xFF  # in the first data page (the footer, with the schema, is at the end)
    store.put(f"{pre}/{flipped}", bytes(data))  # same size, different bytes
    truncated = files[1]["path"]
    store.put(f"{pre}/{truncated}", store.get(f"{pre}/{truncated}")[:-10])
    missing = files[2]["path"]
    store.delete(f"{pre}/{missing}")
    store.put(f"{pre}/pairs/train/part-09999.parquet", b"stray")
    store.put(f"{pre}/README.md", b"edited card")

    problems = {(p.path, p.kind) for p in release.verify()}
    assert problems == {
        (flipped, "sha256"),
        (truncated, "size"),
        (missing, "missing"),
        ("pairs/train/part-09999.parquet", "unlisted"),
        ("README.md", "size"),
    }
    assert all(rid in str(p) for p in release.verify())


# ---------------------------------------------------------------------------- list & prune


def test_list_releases_hides_partial_releases(store: Store) -> None:
    good = publish(store, clock=Clock())
    store.put("releases/deadbeefdeadbeef/pairs/train/part-00000.parquet", b"half written")
    store.put("releases/deadbeefdeadbeef/README.md", b"card")
    listed = list_releases(store)
    assert [r["release_id"] for r in listed] == [good.release_id]
    assert listed[0]["latest"] and listed[0]["sequence"] == 1
    rows = {"pairs": 30, "quarantine": 3, "red_team": 4, "removed": 5, "trl": 30}
    assert listed[0]["rows"] == rows
    with pytest.raises(ReleaseError):
        open_release(store, "deadbeefdeadbeef")


def _publish_five_latest_not_newest(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """R1..R4 published normally; R5 crashes before the pointer swap (latest stays on R4)."""
    clock = Clock()
    ids = [publish(store, config={"v": i}, clock=clock).release_id for i in range(1, 5)]
    real = store.compare_and_swap

    def boom(key, data, etag):
        if key == "latest.json":
            raise Boom("crash before swap")
        return real(key, data, etag)

    with monkeypatch.context() as m:
        m.setattr(store, "compare_and_swap", boom)
        with pytest.raises(Boom):
            publish(store, config={"v": 5}, clock=clock)
    ids.append(compute_release_id(SOURCES, {"v": 5}, "test-1", [], release_libraries()))
    assert release_ids(store) == ids and latest_id(store) == ids[3]
    return ids


def test_prune_keeps_newest_pinned_and_latest(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    r1, r2, r3, r4, r5 = _publish_five_latest_not_newest(store, monkeypatch)
    store.put("releases/partial0000000000/pairs/train/part-00000.parquet", b"in progress")

    assert prune(store, keep=1, pinned=[r1], dry_run=True) == [r2, r3]
    assert release_ids(store) == [r1, r2, r3, r4, r5]
    assert prune(store, keep=1, pinned=[r1]) == [r2, r3]
    assert release_ids(store) == [r1, r4, r5]
    assert store.list(f"releases/{r2}") == [] and store.list(f"releases/{r3}") == []
    assert latest_id(store) == r4
    assert prune(store, keep=0) == [r1, r5]  # latest survives even with keep=0
    assert release_ids(store) == [r4]
    assert open_release(store).verify() == []
    # Under the publish lock no publish is in progress: a folder without a manifest is the
    # leftover of a killed publisher, and prune removes it.
    assert not store.exists("releases/partial0000000000/pairs/train/part-00000.parquet")
    with pytest.raises(ValueError):
        prune(store, keep=-1)


def test_prune_pins_resolve_like_show_and_unknown_pins_delete_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    r1, r2, r3, r4, r5 = _publish_five_latest_not_newest(store, monkeypatch)
    assert prune(store, keep=1, pinned=[r2[:6]]) == [r1, r3]  # a prefix, as `show` takes it
    assert release_ids(store) == [r2, r4, r5]
    with pytest.raises(ReleaseError, match="no published release 'ffff'"):
        prune(store, keep=0, pinned=["ffff"])
    assert release_ids(store) == [r2, r4, r5]  # refused before deleting anything
    code, _ = _cli("releases", "prune", "--keep", "0", "--pin", "ffff", "--store", store.uri)
    assert code == 2 and release_ids(store) == [r2, r4, r5]


# ---------------------------------------------------------------------------- diff


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def test_diff_releases(store: Store) -> None:
    clock = Clock()
    a_pairs = make_pairs(20)
    a = publish(store, make_tables(pairs=a_pairs), config={"v": "a"}, clock=clock)

    rows = {r["pair_id"]: r for r in _rows(a_pairs)}
    del rows["p0000"], rows["p0001"]  # removed: p0000 (test), p0001 (train)
    rows["p0005"] = {**rows["p0005"], "chosen": "a better answer"}  # changed (test)
    rows["p0007"] = {
        **rows["p0007"],
        "rejected_harm_categories": ["Violence", "Drugs"],
    }  # changed (train)
    rows["p0009"] = {**rows["p0009"], "split": "test"}  # moved train -> test
    rows["p0100"] = {**rows["p0002"], "pair_id": "p0100", "source_line": 100}  # added (train)
    b_pairs = pa.Table.from_pylist(list(rows.values()), schema=S.PAIRS)
    b_tables = make_tables(
        pairs=b_pairs,
        removed=make_removed({"exact_duplicate": 5, "near_duplicate": 1}),
        quarantine=make_quarantine(1),
    )
    b = publish(store, b_tables, config={"v": "b"}, clock=clock)

    d = diff_releases(store, a.release_id, "latest")
    assert (d["a"], d["b"]) == (a.release_id, b.release_id)
    assert d["config_changes"] == {"v": {"a": "a", "b": "b"}}
    pairs = d["tables"]["pairs"]
    counts = {
        split: {k: pairs[split][k] for k in ("added", "removed", "changed", "unchanged")}
        for split in pairs
    }
    assert counts == {
        "*": {"added": 1, "removed": 2, "changed": 3, "unchanged": 15},
        "test": {"added": 1, "removed": 1, "changed": 1, "unchanged": 2},
        "train": {"added": 1, "removed": 2, "changed": 1, "unchanged": 13},
    }
    assert pairs["*"]["examples"] == {
        "added": ["p0100"],
        "removed": ["p0000", "p0001"],
        "changed": ["p0005", "p0007", "p0009"],
    }
    assert pairs["test"]["examples"]["added"] == ["p0009"]
    removed = d["tables"]["removed"]["*"]
    assert (removed["added"], removed["removed"], removed["changed"]) == (3, 2, 0)
    quarantine = d["tables"]["quarantine"]["*"]
    assert (quarantine["added"], quarantine["removed"], quarantine["unchanged"]) == (0, 2, 1)
    assert d["reasons"]["removed"] == {
        "exact_duplicate": {"a": 3, "b": 5, "delta": 2},
        "near_duplicate": {"a": 0, "b": 1, "delta": 1},
        "test_contamination": {"a": 2, "b": 0, "delta": -2},
    }
    assert d["reasons"]["quarantine"] == {
        "bad_json": {"a": 1, "b": 0, "delta": -1},
        "empty_response": {"a": 3, "b": 1, "delta": -2},
    }
    same = diff_releases(store, b.release_id, b.release_id)
    assert same["tables"]["pairs"]["*"]["unchanged"] == 19
    assert all(v["delta"] == 0 for v in same["reasons"]["removed"].values())


# ---------------------------------------------------------------------------- CLI


def _cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="rlhf-curate")
    add_release_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    return run_releases_command(args, out=out), out.getvalue()


def test_cli_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    store = Store(tmp_path / "wh")
    clock = Clock()
    a = publish(store, config={"v": 1}, clock=clock)
    b = publish(
        store,
        make_tables(removed=make_removed({"exact_duplicate": 4})),
        config={"v": 2},
        clock=clock,
    )
    s = ["--store", str(tmp_path / "wh")]

    rc, out = _cli("releases", "list", *s)
    assert rc == 0 and a.release_id in out and b.release_id in out and "(* = latest)" in out
    rc, out = _cli("releases", "list", *s, "--json")
    assert [r["release_id"] for r in json.loads(out)] == [a.release_id, b.release_id]

    monkeypatch.setenv("CURATED_STORE_URI", str(tmp_path / "wh"))  # default store
    rc, out = _cli("releases", "show", a.release_id[:8])
    assert rc == 0 and f"release_id         {a.release_id}" in out and "pairs" in out
    rc, out = _cli("releases", "show", "--json")
    assert json.loads(out)["release_id"] == b.release_id

    rc, out = _cli("releases", "verify", b.release_id, "--no-progress")
    assert rc == 0 and "OK" in out
    rc, out = _cli("releases", "diff", a.release_id, b.release_id)
    assert rc == 0 and "config v: 1 -> 2" in out and "exact_duplicate" in out
    rc, out = _cli("releases", "diff", a.release_id, b.release_id, "--json")
    assert json.loads(out)["reasons"]["removed"]["test_contamination"]["delta"] == -2

    card = f"releases/{b.release_id}/README.md"
    store.put(card, store.get(card) + b"tampered")
    rc, out = _cli("releases", "verify", b.release_id, "--json")
    assert rc == 1 and json.loads(out)["problems"][0]["path"] == "README.md"

    rc, out = _cli("releases", "prune", "--keep", "1", "--dry-run")
    assert rc == 0 and "would delete 1 release(s): " + a.release_id in out
    rc, out = _cli("releases", "prune", "--keep", "0", "--pin", a.release_id, "--json")
    assert json.loads(out) == {"deleted": [], "dry_run": False}
    rc, out = _cli("releases", "prune", "--keep", "1", "--yes")
    assert rc == 0 and release_ids(store) == [b.release_id]

    rc, out = _cli("releases", "show", "ffffffffffffffff")
    assert rc == 2
    assert "ffffffffffffffff" in capsys.readouterr().err
    assert store.exists(manifest_key(b.release_id))


def test_rows_without_split_are_no_split_everywhere(tmp_path: Path) -> None:
    """A quarantined red-team row has no split: `no_split` in the manifest, the card (and its Hub
    config), `releases show` and `releases diff`; null in the parquet `split` column."""
    store = Store(tmp_path / "wh")
    clock = Clock()
    a = publish(store, make_tables(quarantine=make_quarantine(2)), config={"v": 1}, clock=clock)
    red_team_row = {
        "dataset": hh_rlhf.NAME,
        "subset": "red-team-attempts",
        "split": None,
        "source_file": "red-team-attempts/red_team_attempts.jsonl.gz",
        "source_line": 7,
        "reasons": ["bad_turn_order"],
        "raw_line": "{}",
    }
    quarantine = pa.concat_tables(
        [make_quarantine(2), pa.Table.from_pylist([red_team_row], schema=S.QUARANTINE)]
    )
    b = publish(store, make_tables(quarantine=quarantine), config={"v": 2}, clock=clock)

    assert b.manifest["tables"]["quarantine"]["splits"] == {"train": 2, "no_split": 1}
    assert open_release(store).table("quarantine", split="no_split")["split"].to_pylist() == [None]
    diff = diff_releases(store, a.release_id, b.release_id)["tables"]["quarantine"]
    assert set(diff) == {"*", "train", "no_split"} and diff["no_split"]["added"] == 1
    rc, out = _cli("releases", "diff", a.release_id, "latest", "--store", str(store.root))
    assert rc == 0 and any(
        line.split()[:3] == ["quarantine", "no_split", "1"] for line in out.splitlines()
    )
    rc, out = _cli("releases", "show", "--store", str(store.root))
    assert "no_split=1" in out
    card = store.get(f"releases/{b.release_id}/README.md").decode()
    assert "- split: no_split\n    path: quarantine/no_split/*.parquet" in card
    assert "| `quarantine` | 3 | 2 | train: 2, no_split: 1 |" in card
    assert "`no_split`: rows that belong to no split" in card and "column is null" in card


def test_show_and_card_count_source_files_alike(tmp_path: Path) -> None:
    """One definition of a source's files: present / listed (an absent file is listed)."""
    store = Store(tmp_path / "wh")
    absent = {"path": "helpful-base/train.jsonl.gz", "present": False, "rows": 0}
    sources = [{**SOURCES[0], "files": [*SOURCES[0]["files"], absent]}, SOURCES[1]]
    result = publish(store, sources=sources)
    _, out = _cli("releases", "show", "--store", str(store.root))
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "files present / listed" in rows["source"] and "rows read" in rows["source"]
    assert rows["hh-rlhf"].split()[-4:] == ["1", "/", "2", "30"]
    assert rows["pku-saferlhf"].split()[-4:] == ["1", "/", "1", "40"]
    card = store.get(f"releases/{result.release_id}/README.md").decode()
    assert "| source | uri | revision | files present / listed | rows read |" in card
    assert "| hh-rlhf | hf://datasets/Anthropic/hh-rlhf | 09be8c5 | 1 / 2 | 30 |" in card
