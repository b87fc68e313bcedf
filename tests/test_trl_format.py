"""Reading TRL-format preference files (``curation/datasets/trl_format.py``) on real text: the sample's
HH and PKU rows converted to each of TRL's forms (``sample_data/build_trl.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation.core.report import REPORT_KEY
from curation.datasets.hh_rlhf import NAME as HH_DATASET
from curation.datasets.trl_format import extract_prompt
from curation.ingest.ingest import ingest_file
from curation.ingest.sources import SourceFile
from curation.normalize.normalize import pair_stream
from curation.publish.trl import trl_preference_view
from pipelines.settings import SAMPLE

TRL_SAMPLE = SAMPLE / "trl-prefs"
HH_FORMS = {
    "hh_conversational.jsonl": "conversational",
    "hh_conversational_implicit.jsonl": "conversational_implicit",
    "hh_standard.jsonl.gz": "standard",
    "hh_standard_implicit.parquet": "standard_implicit",
}


@pytest.fixture(autouse=True)
def acme(declare_acme):
    """``acme-prefs`` declared with the sample's TRL files as its mirror."""
    declare_acme(TRL_SAMPLE)
    return declare_acme


def trl_file(relpath: str, split: str = "train") -> SourceFile:
    return SourceFile("acme-prefs", "default", split, relpath, "trl")


def with_report(result) -> pa.Table:
    """An ingested table as the ingest asset stores it (its report in the metadata)."""
    report = json.dumps(result.report.to_dict()).encode()
    return result.table.replace_schema_metadata({REPORT_KEY: report})


def ingest(relpath: str, root: Path = TRL_SAMPLE, **kw) -> pa.Table:
    return with_report(ingest_file(trl_file(relpath, **kw), str(root)))


def reasons_by_line(table) -> dict[int, list[str]]:
    bad = table.filter(pc.greater(pc.list_value_length(table["quarantine_reasons"]), 0))
    return dict(
        zip(bad["source_line"].to_pylist(), bad["quarantine_reasons"].to_pylist(), strict=True)
    )


def pairs_of(table) -> list[dict]:
    return pair_stream([table], workers=1).to_table().to_pylist()


@pytest.fixture(scope="module")
def hh_pairs() -> list[dict]:
    """The pairs of real HH lines 0-19, through the HH path (``curation.datasets.hh_format``)."""
    hh = SourceFile(
        HH_DATASET, "harmless-base", "test", "harmless-base/test.jsonl.gz", "hh_preference"
    )
    pairs = pairs_of(with_report(ingest_file(hh, str(SAMPLE / "hh-rlhf"))))
    return [p for p in pairs if p["source_line"] < 20]


@pytest.mark.parametrize("relpath", sorted(HH_FORMS))
def test_each_form_of_real_hh_rows_is_read_whole(relpath: str, hh_pairs: list[dict], acme):
    acme(TRL_SAMPLE, dimension="harmless")  # a declaration's dimension names its pairs'
    table = ingest(relpath)
    assert table.num_rows == 20 and reasons_by_line(table) == {}
    assert set(table.column("form").to_pylist()) == {HH_FORMS[relpath]}
    pairs = pairs_of(table)
    assert [p["dimension"] for p in pairs] == ["harmless"] * 20
    for pair, hh in zip(pairs, hh_pairs, strict=True):
        if HH_FORMS[relpath].startswith("conversational"):
            # the same conversation as the HH path: turns, prompt text byte for byte, responses
            for key in ("prompt", "prompt_turns", "chosen", "rejected"):
                assert pair[key] == hh[key], key
        else:  # standard: the transcript split into prompt and response, nothing lost
            transcript = hh["prompt"] + "\n\nAssistant: "
            assert pair["prompt"] + pair["chosen"] == transcript + hh["chosen"]
            assert pair["prompt"] + pair["rejected"] == transcript + hh["rejected"]
            # the transcript's turns are the HH path's, so matching compares them turn by turn
            assert pair["prompt_turns"] == hh["prompt_turns"]


def test_real_pku_rows_in_the_standard_form():
    table = ingest("pku_standard.jsonl", split="test")
    raw = [json.loads(x) for x in (SAMPLE / "PKU-SafeRLHF/data/Alpaca-7B/test.jsonl").open()]
    pairs = pairs_of(table)
    assert len(pairs) == 15 and reasons_by_line(table) == {}
    for pair, row in zip(pairs, raw, strict=True):
        better = row["better_response_id"]
        assert pair["prompt"] == row["prompt"]
        assert pair["prompt_turns"] == [{"role": "human", "text": row["prompt"]}]
        assert (pair["chosen"], pair["rejected"]) == (
            row[f"response_{better}"],
            row[f"response_{1 - better}"],
        )
        assert pair["dimension"] == "preference" and pair["chosen_is_safe"] is None


def test_bad_rows_get_their_reason_codes():
    """``sample_data/build_trl.py`` breaks real rows one way each."""
    assert reasons_by_line(ingest("bad.jsonl")) == {
        1: ["missing_role"],
        2: ["empty_content"],
        3: ["prompt_not_ending_with_user"],
        4: ["identical_responses"],
        5: ["mixed_forms"],
        6: ["unknown_role"],
        7: ["response_not_assistant"],
    }
    assert reasons_by_line(ingest("bad_implicit.jsonl")) == {1: ["context_mismatch"]}


def test_the_release_view_gives_back_the_conversational_rows():
    """Our TRL view of pairs read from TRL's conversational form is that form, row for row."""
    rows = [json.loads(x) for x in (TRL_SAMPLE / "hh_conversational.jsonl").open()]
    pairs = pair_stream([ingest("hh_conversational.jsonl")], workers=1).to_table()
    view = trl_preference_view(pairs).select(["prompt", "chosen", "rejected"]).to_pylist()
    assert view == rows


def test_implicit_standard_prompts_split_where_trl_splits_them():
    """TRL's rule: the common prefix, without the space before the responses."""
    assert extract_prompt("The sky is blue.", "The sky is green.") == (
        "The sky is",
        " blue.",
        " green.",
    )
    whole = pq.read_table(TRL_SAMPLE / "hh_standard_implicit.parquet").to_pylist()
    pairs = pairs_of(ingest("hh_standard_implicit.parquet"))
    for pair, row in zip(pairs, whole, strict=True):
        assert row["chosen"].startswith(pair["prompt"])
        assert pair["prompt"] + pair["chosen"] == row["chosen"]
        assert pair["prompt"] + pair["rejected"] == row["rejected"]
        assert pair["prompt"].count("\n\nHuman:") >= 1


def test_a_missing_file_is_an_empty_table(tmp_path: Path):
    table = ingest("absent.jsonl", root=tmp_path)
    assert table.num_rows == 0 and "prompt_turns" in table.column_names
    assert pairs_of(table) == []


def test_rows_repeating_hh_and_pku_test_prompts_are_contamination():
    """A team's train rows made of real HH and PKU test rows are removed by decontamination
    against the HH and PKU test splits: conversational prompts are rendered as HH transcripts,
    user turns are human turns."""
    from curation.match.decontam import decontaminate

    hh = SourceFile(
        HH_DATASET, "harmless-base", "test", "harmless-base/test.jsonl.gz", "hh_preference"
    )
    pku = SourceFile("pku-saferlhf", "Alpaca-7B", "test", "data/Alpaca-7B/test.jsonl", "pku")
    raws = [
        with_report(ingest_file(hh, str(SAMPLE / "hh-rlhf"))),
        with_report(ingest_file(pku, str(SAMPLE / "PKU-SafeRLHF"))),
        ingest("hh_conversational.jsonl"),
        ingest("pku_standard.jsonl"),
    ]
    pairs = pa.concat_tables([pair_stream([raw], workers=1).to_table() for raw in raws])
    kept, removed = decontaminate(pairs)
    team = removed.filter(pc.equal(removed["dataset"], "acme-prefs")).to_pylist()
    assert sorted((r["source_file"], r["source_line"]) for r in team) == sorted(
        [("hh_conversational.jsonl", i) for i in range(20)]
        + [("pku_standard.jsonl", i) for i in range(15)]
    )
    by_file = {"hh_conversational.jsonl": HH_DATASET, "pku_standard.jsonl": "pku-saferlhf"}
    for row in team:
        assert row["matched_dataset"] == by_file[row["source_file"]]
        assert row["matched_source_line"] == row["source_line"]  # the very row it was made from
        assert row["reason"] == "contaminated_exact"
    assert kept.filter(pc.equal(kept["dataset"], "acme-prefs")).num_rows == 0
