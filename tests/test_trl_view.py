"""The TRL preference view of a release (``trl/<split>/*.parquet``, :mod:`curation.publish.trl`).

The sample release's view is checked by :func:`assert_trl_view`, called from the one
materialization of ``test_pipeline.test_graph_on_sample_into_local_folder`` (no second run of
the graph): it must load with ``datasets`` (through the card's ``trl`` config and as plain
parquet), pandas and DuckDB, hold the pairs of each split, satisfy TRL's format rule, and read
as the same conversations as the raw sample lines.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.core.store import Store
from curation.datasets import dataset as dataset_of_name
from curation.datasets.hh_rlhf import NAME as HH_DATASET
from curation.datasets.pku_saferlhf import NAME as PKU_DATASET
from curation.publish.reader import open_release
from curation.publish.release import ReleaseError
from curation.publish.trl import TRL_PREFERENCE, TRL_VIEW, ViewError, trl_preference_view
from pipelines.settings import SAMPLE
from tests.test_release import make_pairs, make_tables, publish

pytestmark = pytest.mark.usefixtures("fast_charts")

TRL_MESSAGE_ROLES = {"user", "assistant", "system"}  # TRL's dataset formats guide


def is_conversational(example: dict[str, Any]) -> bool:
    """TRL's rule, copied (``trl`` pulls in torch, too heavy a dev dependency) from
    ``trl/data_utils.py`` (huggingface/trl, commit f2cd577, ``is_conversational``, Apache-2.0):
    an example is conversational when one of its supported keys holds a list whose first item
    is a dict with a ``role``. ``DPOTrainer``/``RewardTrainer`` apply the chat template only to
    examples it accepts."""
    supported_keys = ["prompt", "chosen", "rejected", "completion", "messages"]
    example_keys = {key for key in example if key in supported_keys}
    if example_keys:
        key = example_keys.pop()
        maybe_messages = example[key]
        if isinstance(maybe_messages, list):
            maybe_message = maybe_messages[0]
            if isinstance(maybe_message, dict) and "role" in maybe_message:
                return True
    return False


def is_conversational_preference(row: dict[str, Any]) -> bool:
    """TRL's conversational preference type with an explicit prompt: ``prompt`` ends with a
    user turn, ``chosen``/``rejected`` are assistant messages, every message is exactly
    ``{role, content}`` with a TRL role, and TRL's rule holds for each of the three keys (its
    rule looks at one of them only, whichever the set yields first)."""
    messages = [*row["prompt"], *row["chosen"], *row["rejected"]]
    return (
        all(is_conversational({key: row[key]}) for key in ("prompt", "chosen", "rejected"))
        and all(set(m) == {"role", "content"} and m["role"] in TRL_MESSAGE_ROLES for m in messages)
        and all(isinstance(m["content"], str) and m["content"] for m in row["prompt"])
        and row["prompt"][-1]["role"] == "user"
        and [m["role"] for m in row["chosen"]] == ["assistant"]
        and [m["role"] for m in row["rejected"]] == ["assistant"]
    )


def hh_turns(transcript: str) -> list[tuple[str, str]]:
    """An HH transcript split on its turn markers, independently of ``curation.datasets.hh_format``:
    ``[(speaker, text)]`` with the one space after the marker removed."""
    parts = re.split(r"\n\n(Human|Assistant):", transcript)
    assert parts[0] == "", "a transcript starts with a marker"
    return [
        (speaker, text[1:] if text.startswith(" ") else text)
        for speaker, text in zip(parts[1::2], parts[2::2], strict=True)
    ]


def raw_line(source_file: str, line: int, dataset: str) -> dict[str, Any]:
    """The sample's raw JSON line a pair came from."""
    root = SAMPLE / dataset_of_name(dataset).sample
    path = root / source_file
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(data.splitlines()[line])


def assert_trl_view(release_dir: Path, cache_dir: Path) -> None:
    """The TRL view of a published sample release (see the module docstring)."""
    import datasets
    import duckdb
    import pandas as pd

    manifest = json.loads((release_dir / "manifest.json").read_text())
    pair_splits = manifest["tables"]["pairs"]["splits"]
    entry = manifest["tables"][TRL_VIEW]
    assert entry["view_of"] == "pairs" and entry["splits"] == pair_splits
    assert {f["path"].rsplit("/", 1)[0] for f in entry["files"]} == {
        f"{TRL_VIEW}/{s}" for s in pair_splits
    }

    # datasets, through the card's `trl` config and as plain parquet files
    by_config = datasets.load_dataset(str(release_dir), TRL_VIEW, cache_dir=str(cache_dir))
    files = {s: str(release_dir / TRL_VIEW / s / "*.parquet") for s in pair_splits}
    plain = datasets.load_dataset("parquet", data_files=files, cache_dir=str(cache_dir))
    for loaded in (by_config, plain):
        assert {s: loaded[s].num_rows for s in loaded} == pair_splits
    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    for column in ("prompt", "chosen", "rejected"):
        assert by_config["train"].features[column] == datasets.List(message)

    # pandas and DuckDB, without our code
    for split, rows in pair_splits.items():
        assert len(pd.read_parquet(release_dir / TRL_VIEW / split)) == rows
    counted = duckdb.sql(
        "SELECT split, count(*) FROM read_parquet(?) GROUP BY split",
        params=[str(release_dir / TRL_VIEW / "*" / "*.parquet")],
    ).fetchall()
    assert dict(counted) == pair_splits

    # every row of TRL's format, row for row the pairs (same order, same keys)
    for split in pair_splits:
        rows = by_config[split].to_list()
        assert all(is_conversational_preference(r) for r in rows)
        pairs = pq.read_table(release_dir / "pairs" / split).to_pylist()
        keys = ("pair_id", "dataset", "subset", "split", "dimension")
        assert [tuple(r[k] for k in keys) for r in rows] == [
            tuple(p[k] for k in keys) for p in pairs
        ]
        assert_reads_as_the_raw_lines(rows, {p["pair_id"]: p for p in pairs})


def assert_reads_as_the_raw_lines(rows: list[dict], pairs: dict[str, dict]) -> None:
    """The first HH row and the first PKU row of a split against their raw sample lines."""
    hh = next(r for r in rows if r["dataset"] == HH_DATASET)
    pair = pairs[hh["pair_id"]]
    raw = raw_line(pair["source_file"], pair["source_line"], HH_DATASET)
    speaker = {"user": "Human", "assistant": "Assistant"}
    prompt = [(speaker[m["role"]], m["content"]) for m in hh["prompt"]]
    assert len(prompt) >= 1
    for side in ("chosen", "rejected"):
        [answer] = hh[side]
        assert [*prompt, ("Assistant", answer["content"])] == hh_turns(raw[side])
    pku = next(r for r in rows if r["dataset"] == PKU_DATASET)
    pair = pairs[pku["pair_id"]]
    raw = raw_line(pair["source_file"], pair["source_line"], PKU_DATASET)
    assert pku["prompt"] == [{"role": "user", "content": raw["prompt"]}]
    pick = raw["better_response_id" if pku["dimension"] == "helpful" else "safer_response_id"]
    assert pku["chosen"] == [{"role": "assistant", "content": raw[f"response_{pick}"]}]
    assert pku["rejected"] == [{"role": "assistant", "content": raw[f"response_{1 - pick}"]}]


# ---------------------------------------------------------------------------- the view itself


def test_roles_are_trl_names_and_an_unknown_role_names_its_pair():
    pairs = make_pairs(4)
    turns = pa.array(
        [
            [{"role": "human", "text": "hi"}, {"role": "assistant", "text": "hello"}],
            [{"role": "human", "text": "q"}],
            [{"role": "system", "text": "be kind"}, {"role": "human", "text": "q"}],
            [{"role": "user", "text": "q"}],
        ],
        pairs.schema.field("prompt_turns").type,
    )
    pairs = pairs.set_column(pairs.schema.get_field_index("prompt_turns"), "prompt_turns", turns)
    view = trl_preference_view(pairs)
    assert view.schema == TRL_PREFERENCE
    assert [[m["role"] for m in p] for p in view.column("prompt").to_pylist()] == [
        ["user", "assistant"],
        ["user"],
        ["system", "user"],
        ["user"],
    ]
    assert view.column("chosen").to_pylist()[1] == [{"role": "assistant", "content": "chosen 1"}]

    bad = [[{"role": "human", "text": "q"}]] * 3 + [[{"role": "narrator", "text": "q"}]]
    pairs = pairs.set_column(
        pairs.schema.get_field_index("prompt_turns"),
        "prompt_turns",
        pa.array(bad, turns.type),
    )
    with pytest.raises(ViewError, match=r"pair 'p0003'.*'narrator'"):
        trl_preference_view(pairs)


def test_a_sliced_and_chunked_table_gives_the_same_view():
    """Parts are written from slices of record batches: offsets must follow the slice."""
    pairs = make_pairs(30)
    chunked = pa.concat_tables([pairs.slice(0, 7), pairs.slice(7, 13), pairs.slice(20)])
    assert trl_preference_view(chunked.slice(5, 20)).equals(
        trl_preference_view(pairs.slice(5, 20).combine_chunks())
    )


def test_the_view_is_listed_verified_and_repaired_like_the_other_tables(tmp_path: Path):
    store = Store(tmp_path / "store")  # the protocol is the same on S3 (tests/test_release.py)
    first = publish(store)
    rid = first.release_id
    entry = first.manifest["tables"][TRL_VIEW]
    assert entry["rows"] == first.manifest["tables"]["pairs"]["rows"]
    assert entry["splits"] == first.manifest["tables"]["pairs"]["splits"]
    release = open_release(store, rid)
    assert release.verify() == []
    damaged = f"releases/{rid}/{TRL_VIEW}/train/part-00000.parquet"
    store.put(damaged, b"not parquet")
    assert [(p.path, p.kind) for p in release.verify()] == [
        (f"{TRL_VIEW}/train/part-00000.parquet", "size")
    ]
    again = publish(store)  # the same inputs: adopts the release, repairs the view from pairs
    assert again.status == "unchanged" and again.release_id == rid
    assert open_release(store, rid).verify() == []
    assert open_release(store, rid).table(TRL_VIEW).num_rows == entry["rows"]


def test_a_view_cannot_be_given(tmp_path: Path):
    with pytest.raises(ReleaseError, match="derived from 'pairs'"):
        publish(Store(tmp_path / "s"), make_tables(trl=make_pairs(2)))


def test_diff_compares_the_pairs_not_their_view(tmp_path: Path):
    """The view changes exactly when the pairs do: ``releases diff`` reads it not a second time."""
    from curation.publish.reader import diff_releases

    store = Store(tmp_path / "store")
    a = publish(store, config={"v": 1})
    b = publish(store, make_tables(n_pairs=31), config={"v": 2})
    result = diff_releases(store, a.release_id, b.release_id)
    assert TRL_VIEW in open_release(store, b.release_id).tables
    assert "pairs" in result["tables"] and TRL_VIEW not in result["tables"]
    assert result["tables"]["pairs"]["*"]["added"] == 1
