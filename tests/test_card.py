"""The dataset card's YAML front matter, read back by the Hugging Face libraries.

A release is published to a local store; its ``README.md`` is then parsed by
``huggingface_hub.DatasetCard`` and ``datasets``' own config parser, and loaded with
``datasets.load_dataset`` on the release folder, which finds the data files only through the
card's ``configs``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest
from datasets import load_dataset
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

from curation.core import schema as S
from curation.core.store import Store
from curation.datasets import pku_saferlhf
from curation.publish.release import publish_release, release_prefix
from tests.factories import make_pairs


def _tables() -> dict[str, pa.Table]:
    """Pairs in train (3) and test (2), one removed pair in test, two red-team transcripts."""
    pairs = make_pairs(
        [{"prompt": f"prompt {i}", "split": "test" if i < 2 else "train"} for i in range(5)]
    )
    removed = pa.Table.from_pylist(
        [
            {
                "pair_id": "r0",
                "dataset": pku_saferlhf.NAME,
                "subset": "Alpaca-7B",
                "split": "test",
                "dimension": "helpful",
                "reason": "exact_duplicate",
                "method": "sha256",
            }
        ],
        schema=S.REMOVED,
    )
    red_team = pa.Table.from_pylist(
        [{"transcript_id": f"t{i}", "transcript": f"\n\nHuman: hi {i}"} for i in range(2)],
        schema=S.RED_TEAM,
    )
    return {"pairs": pairs, "removed": removed, "red_team": red_team}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A published release: its folder and its manifest."""
    root = tmp_path_factory.mktemp("card") / "store"
    result = publish_release(
        Store(root),
        _tables(),
        sources=[{"name": "pku-saferlhf", "uri": "sample", "revision": None, "files": []}],
        config={"card": 1},
        code_version="card-test",
        counts={},
        checks={},
        write_threads=1,
    )
    return root / release_prefix(result.release_id), result.manifest


def test_front_matter_is_read_by_huggingface_hub(release: tuple[Path, dict]) -> None:
    folder, manifest = release
    data = DatasetCard.load(folder / "README.md").data
    assert data.license == ["mit", "cc-by-nc-4.0"]
    assert data.pretty_name == f"Curated RLHF preference pairs (release {manifest['release_id']})"
    assert data.tags == ["rlhf", "preference", "safety"]
    configs = MetadataConfigs.from_dataset_card_data(data)
    assert configs.get_default_config_name() == "pairs"
    assert configs == {
        "pairs": {
            "default": True,
            "data_files": [
                {"split": "test", "path": "pairs/test/*.parquet"},
                {"split": "train", "path": "pairs/train/*.parquet"},
            ],
        },
        "red_team": {"data_files": [{"split": "train", "path": "red_team/*.parquet"}]},
        "removed": {"data_files": [{"split": "test", "path": "removed/test/*.parquet"}]},
        "trl": {
            "data_files": [
                {"split": "test", "path": "trl/test/*.parquet"},
                {"split": "train", "path": "trl/train/*.parquet"},
            ],
        },
    }
    # every data file of the manifest is matched by its table's config, and nothing else is
    for name, info in manifest["tables"].items():
        globbed = {
            p.relative_to(folder).as_posix()
            for entry in configs[name]["data_files"]
            for p in folder.glob(entry["path"])
        }
        assert globbed == {f["path"] for f in info["files"]}, name


def test_load_dataset_finds_the_splits_through_the_card(
    release: tuple[Path, dict], tmp_path: Path
) -> None:
    folder, manifest = release
    pairs = load_dataset(str(folder), cache_dir=str(tmp_path / "hf"))  # default config
    assert {s: pairs[s].num_rows for s in pairs} == manifest["tables"]["pairs"]["splits"]
    assert sorted(pairs["train"]["pair_id"]) == ["p0002", "p0003", "p0004"]
    red_team = load_dataset(str(folder), "red_team", cache_dir=str(tmp_path / "hf"))
    assert red_team["train"]["transcript_id"] == ["t0", "t1"]


def test_how_to_load_snippets_run_in_the_release_folder(
    release: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card's loading snippets name no path of the publishing machine, and run as written
    from the release's folder (the reader's with the store's path filled in)."""
    folder, manifest = release
    text = (folder / "README.md").read_text()
    section = text[text.index("## How to load") :]
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(snippets) == 6 and str(folder.parents[1]) not in text
    monkeypatch.chdir(folder)
    store, cache = str(folder.parents[1]), str(tmp_path / "hf")
    results = []
    for code in snippets:
        scope: dict = {}
        code = code.replace('"path/to/store"', repr(store))
        code = code.replace(
            'load_dataset("parquet", ', f"load_dataset('parquet', cache_dir={cache!r}, "
        )
        exec(code, scope)  # the card's own code
        results.append(scope)
    splits = manifest["tables"]["pairs"]["splits"]
    assert len(results[0]["train"]) == splits["train"]  # pandas
    assert len(results[0]["pairs"]) == sum(splits.values())
    assert results[2]["pairs"].height == sum(splits.values())  # polars
    assert {s: results[3]["ds"][s].num_rows for s in results[3]["ds"]} == splits  # datasets
    prefs = results[4]["prefs"]  # datasets, the TRL view
    assert {s: prefs[s].num_rows for s in prefs} == splits
    assert prefs["train"][0]["chosen"][0]["role"] == "assistant"
    assert len(results[5]["train"]) == splits["train"] and results[5]["problems"] == []
