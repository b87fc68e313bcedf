"""Extra evaluation-prompt sets: loaded from JSONL or parquet and decontaminated against."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.resources import CurationSettings
from curation.references import load_reference_set
from pipelines.settings import SAMPLE
from tests.pipeline_helpers import environment, materialize

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


def test_pipeline_removes_train_pairs_matching_an_extra_reference(tmp_path: Path):
    prompt = json.loads(PKU_TRAIN.read_text().splitlines()[4])["prompt"]
    evals = tmp_path / "my_eval.jsonl"
    evals.write_text(json.dumps({"input": prompt.upper() + "  "}) + "\n")
    settings = CurationSettings(extra_reference_uris=[f"{evals}#input"])
    store = tmp_path / "warehouse"
    result = materialize(environment(tmp_path, str(store)), settings=settings)
    assert result.success
    removed = result.output_for_node("decontaminate_pairs", "decontam_removed").to_pylist()
    hits = [r for r in removed if r["matched_dataset"] == "my_eval.jsonl"]
    assert {(r["dataset"], r["source_line"], r["reason"]) for r in hits} == {
        ("pku-saferlhf", 4, "contaminated_exact")
    }
    assert {r["dimension"] for r in hits} == {"helpful", "harmless"}
