"""Extra evaluation-prompt sets: loaded from JSONL or parquet and decontaminated against."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.resources import CurationSettings
from curation.datasets.hh_rlhf import DATASET as HH
from curation.ingest.ingest import ingest_file
from curation.match.references import (
    QUARANTINED_PROMPTS,
    load_reference_set,
    quarantined_test_prompts,
)
from curation.normalize.normalize import quarantine_rows, split_verdicts
from pipelines.settings import SAMPLE
from tests.pipeline_helpers import environment, materialize, release_metadata

PKU_TRAIN = SAMPLE / "PKU-SafeRLHF/data/Alpaca-7B/train.jsonl"


def test_jsonl_and_parquet_reference_sets(tmp_path: Path):
    jsonl = tmp_path / "evals.jsonl"
    jsonl.write_text(
        json.dumps({"question": "a?"}) + "\n\n" + json.dumps({"question": "b?"}) + "\n"
    )
    assert load_reference_set(f"{jsonl}#question") == ("evals.jsonl", ["a?", "b?"])
    parquet = tmp_path / "evals.parquet"
    pq.write_table(pa.table({"prompt": ["c?", None]}), parquet)
    assert load_reference_set(str(parquet)) == ("evals.parquet", ["c?"])


def test_missing_field_names_file_and_line(tmp_path: Path):
    jsonl = tmp_path / "evals.jsonl"
    jsonl.write_text(json.dumps({"question": "a?"}) + "\n" + json.dumps({"other": 1}) + "\n")
    with pytest.raises(ValueError, match=r"evals\.jsonl: line 1: no string field 'question'"):
        load_reference_set(f"{jsonl}#question")


HH_ROOT = SAMPLE / "hh-rlhf"
HH_TEST_RELPATH = "harmless-base/test.jsonl.gz"
HH_TEST = HH_ROOT / HH_TEST_RELPATH
#: A real test row quarantined for an empty chosen response ("What do you think of tubular
#: breasts"): not a pair, but its prompt is still asked by whoever evaluates on the test file.
QUARANTINED_TEST_LINE = 516


def _mirror_with_train_row_repeating_quarantined_prompt(root: Path) -> tuple[Path, int]:
    """A copy of the sample whose HH train file gains one row asking the question of the
    quarantined test row (its real rejected transcript as chosen, a real response of another
    test row as rejected). Returns the HH mirror and the new row's line."""
    shutil.copytree(SAMPLE, root)
    lines = gzip.decompress(HH_TEST.read_bytes()).decode().splitlines()
    quarantined = json.loads(lines[QUARANTINED_TEST_LINE])
    assert quarantined["chosen"].endswith("Assistant: ")  # the empty response: quarantined
    prompt = quarantined["rejected"].rsplit("\n\nAssistant:", 1)[0]
    other = json.loads(lines[0])["rejected"].rsplit("\n\nAssistant:", 1)[1]
    train = root / "hh-rlhf/harmless-base/train.jsonl.gz"
    old = gzip.decompress(train.read_bytes()).decode().splitlines()
    row = {"chosen": quarantined["rejected"], "rejected": f"{prompt}\n\nAssistant:{other}"}
    train.write_bytes(gzip.compress(("\n".join([*old, json.dumps(row)]) + "\n").encode()))
    return root / "hh-rlhf", len(old)


def test_pipeline_removes_train_pairs_matching_extra_and_quarantined_references(tmp_path: Path):
    """Both kinds of reference that are not test pairs remove what repeats them: an extra
    evaluation set, and the prompt of a quarantined test row (before issue 25 such a row was no
    reference, and the train row asking its question was kept)."""
    hh_mirror, new_line = _mirror_with_train_row_repeating_quarantined_prompt(tmp_path / "mirror")
    prompt = json.loads(PKU_TRAIN.read_text().splitlines()[4])["prompt"]
    evals = tmp_path / "my_eval.jsonl"
    evals.write_text(json.dumps({"input": prompt.upper() + "  "}) + "\n")
    settings = CurationSettings(extra_reference_uris=[f"{evals}#input"])
    store = tmp_path / "warehouse"
    env = environment(tmp_path, str(store), hh_rlhf_uri=str(hh_mirror))
    result = materialize(env, settings=settings)
    assert result.success
    removed = result.output_for_node("decontaminate_pairs", "decontam_removed").to_pylist()
    hits = [r for r in removed if r["matched_dataset"] == "my_eval.jsonl"]
    assert {(r["dataset"], r["source_line"], r["reason"]) for r in hits} == {
        ("pku-saferlhf", 4, "contaminated_exact")
    }
    assert {r["dimension"] for r in hits} == {"helpful", "harmless"}
    (mat,) = [
        m
        for m in result.asset_materializations_for_node("decontaminate_pairs")
        if m.asset_key.to_user_string() == "decontam_removed"
    ]
    assert mat.metadata["quarantined_test_references"].value == 4  # lines 86, 516, 667, 763
    # the quarantined test row is a reference, named by its file and line (it has no pair_id)
    quarantined = [r for r in removed if r["matched_pair_id"] is None and r not in hits]
    assert [
        (r["source_file"], r["source_line"], r["reason"], r["matched_source_file"])
        for r in quarantined
    ] == [
        (
            "harmless-base/train.jsonl.gz",
            new_line,
            "contaminated_exact",
            "harmless-base/test.jsonl.gz",
        )
    ]
    assert quarantined[0]["matched_source_line"] == QUARANTINED_TEST_LINE
    assert (quarantined[0]["matched_dataset"], quarantined[0]["matched_split"]) == (
        "hh-rlhf",
        "test",
    )
    # the same run publishes the paraphrase report (issue 25), and removes nothing for it
    assert "contaminated_paraphrase" not in {r["reason"] for r in removed}
    report = result.output_for_node("decontaminate_pairs", "paraphrases")
    assert report.num_rows >= 15 and not any(report["removed"].to_pylist())
    links = set(zip(report["text"].to_pylist(), report["matched_text"].to_pylist(), strict=True))
    assert ("how can i steal a car", "how do i steal a car") in links  # train 389 / test 107
    meta = release_metadata(result)
    assert meta["paraphrase_links"] == report.num_rows
    release_dir = store / "releases" / meta["release_id"]
    published = pq.read_table(release_dir / "paraphrases")
    assert published.num_rows == report.num_rows
    card = (release_dir / "README.md").read_text()
    assert "## Paraphrased test prompts" in card and "how can i steal a car" in card
    assert "These pairs are **kept**" in card
    manifest = json.loads((release_dir / "manifest.json").read_text())
    assert manifest["tables"]["paraphrases"]["rows"] == report.num_rows
    assert manifest["config"]["decontam"]["paraphrase"] == "report"


def test_quarantined_test_prompts_of_the_real_sample() -> None:
    """The sample's four quarantined test rows (two empty responses, two turn-order faults) all
    have a prompt; train rows, lines that are not JSON and rows without a prompt do not count."""
    raw = ingest_file(next(f for f in HH.files() if f.relpath == HH_TEST_RELPATH), str(HH_ROOT))
    quarantine = quarantine_rows(split_verdicts(raw.table)[1])
    broken = quarantine.slice(0, 2).to_pylist()
    broken[0].update(raw_line="{not json", source_line=10_000)
    broken[1].update(raw_line=json.dumps({"chosen": "no turns", "rejected": 1}), source_line=10_001)
    found = quarantined_test_prompts(
        pa.concat_tables([quarantine, pa.Table.from_pylist(broken, schema=quarantine.schema)])
    )
    assert found.schema == QUARANTINED_PROMPTS
    assert found["source_line"].to_pylist() == [86, 516, 667, 763]
    rows = found.to_pylist()
    assert rows[1]["prompt"] == "\n\nHuman: What do you think of tubular breasts"
    assert rows[1]["prompt_turns"] == [
        {"role": "human", "text": "What do you think of tubular breasts"}
    ]
    assert all(r["prompt"].startswith("\n\nHuman: ") for r in rows)
    as_train = quarantine.set_column(2, "split", pa.array(["train"] * quarantine.num_rows))
    assert quarantined_test_prompts(as_train).num_rows == 0
