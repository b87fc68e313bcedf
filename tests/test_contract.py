"""Full-scale contract validation: every row in Arrow, the whole GX suite on a seeded sample."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.core.stage_table import StageTable
from curation.validate import contract
from curation.validate import gx_validate as gv
from curation.validate.contract import SuiteRun, row_failures, take_rows, validate_tables
from tests.test_gx_validate import CLEAN, pku_table


def _with(table: pa.Table, column: str, values: list) -> pa.Table:
    i = table.column_names.index(column)
    return table.set_column(i, column, pa.array(values, table.schema.field(column).type))


def _big(n: int = 3000) -> pa.Table:
    return pku_table(n)


def test_arrow_pass_counts_every_row_the_gx_sample_would_miss():
    table = _big()
    ids = [0] * table.num_rows
    for row in (1234, 2345, 2999):
        ids[row] = 7
    bad = _with(table, "better_response_id", ids)
    result = validate_tables({"f": bad}, "pku_saferlhf_raw", sample_rows=50)["f"]
    assert not result.success
    assert result.validated_rows < 60  # GX saw the sample plus the flagged rows only
    [failure] = result.failures
    assert failure["expectation"] == "expect_column_values_to_be_in_set"
    assert failure["unexpected_count"] == 3 and failure["scope"] == "all rows (Arrow)"
    lines = {s["source_line"] for s in failure["sample"]}
    assert lines == {bad["source_line"][r].as_py() for r in (1234, 2345, 2999)}


@pytest.mark.parametrize(
    ("column", "value", "expectation"),
    [
        ("response_0_severity_level", 9, "expect_column_values_to_be_between"),
        ("response_0_sha256", "not-a-sha", "expect_column_values_to_match_regex"),
        ("prompt", "   ", "expect_column_values_to_match_regex"),
        ("prompt", None, "expect_column_values_to_not_be_null"),
    ],
)
def test_arrow_pass_agrees_with_gx_on_the_whole_table(column, value, expectation):
    table = pku_table()
    values = table[column].to_pylist()
    values[2] = value
    bad = _with(table, column, values)
    arrow, flagged = row_failures(bad, "pku_saferlhf_raw")
    gx = gv.validate_frame(bad, "pku_saferlhf_raw")
    assert [f["expectation"] for f in arrow] == [expectation]
    assert flagged.tolist() == [2]
    [same] = [f for f in gx.failures if f["expectation"] == expectation]
    assert same["unexpected_count"] == arrow[0]["unexpected_count"] == 1
    assert same["sample"] == arrow[0]["sample"]


def test_unique_flags_every_member_of_a_duplicate_group():
    pairs = pa.Table.from_pandas(CLEAN["curated_pairs"](), preserve_index=False)
    ids = pairs["pair_id"].to_pylist()
    ids[1] = ids[0]
    arrow, _ = row_failures(_with(pairs, "pair_id", ids), "curated_pairs")
    [failure] = arrow
    assert failure["expectation"] == "expect_column_values_to_be_unique"
    assert failure["unexpected_count"] == 2


def test_one_gx_run_per_schema_attributes_failures_to_the_right_file(monkeypatch):
    from curation.validate import contract

    runs: list[int] = []
    real = contract.validate_frame

    def counting(frame, *args, **kwargs):  # the real GX validation, counted
        runs.append(len(frame))
        return real(frame, *args, **kwargs)

    monkeypatch.setattr(contract, "validate_frame", counting)
    clean = pku_table()
    typed_wrong = _with(  # a bool column holding strings: only GX's type check catches it
        clean.drop_columns(["is_response_0_safe"]).append_column(
            "is_response_0_safe", pa.array(["yes"] * clean.num_rows)
        ),
        "better_response_id",
        [0] * clean.num_rows,
    )
    run = SuiteRun("pku_saferlhf_raw", sample_rows=2)
    run.add("a_clean", clean)
    run.add("b_clean_too", clean)
    run.add("c_bad", typed_wrong)
    results = run.results()
    assert runs == [4, 2]  # two schemas: the two clean files share one GX run
    assert results["a_clean"].success and results["b_clean_too"].success
    bad = results["c_bad"]
    assert not bad.success
    kinds = {f["expectation"] for f in bad.failures}
    assert "expect_column_values_to_be_of_type" in kinds
    assert all(f["scope"] == "GX sample" for f in bad.failures)
    assert bad.validated_rows == 2 and bad.rows == clean.num_rows
    assert "seeded sample of 2 rows" in bad.to_markdown()


def test_small_tables_are_validated_by_gx_in_full():
    table = pku_table()
    [result] = validate_tables({"t": table}, "pku_saferlhf_raw").values()
    assert result.success and result.validated_rows == result.rows == table.num_rows


def test_row_mask_checks_only_the_rows_that_passed_the_row_rules():
    table = _big(400)
    ids = [0] * table.num_rows
    ids[10] = 5  # a quarantined row: not part of the contract
    ids[20] = 6  # a row that went on: counted
    bad = _with(table, "better_response_id", ids)
    rows = [True] * table.num_rows
    rows[10] = False
    result = validate_tables({"f": bad}, "pku_saferlhf_raw", sample_rows=50)["f"]
    assert result.failures[0]["unexpected_count"] == 2
    run = SuiteRun("pku_saferlhf_raw", sample_rows=50)
    run.add("f", bad, rows=np.array(rows))
    masked = run.results()["f"]
    [failure] = masked.failures
    assert failure["unexpected_count"] == 1 and masked.rows == table.num_rows - 1
    assert [s["value"] for s in failure["sample"]] == [6]


def _stage(table: pa.Table, path, batch_rows: int) -> StageTable:
    """``table`` as an Arrow IPC file of record batches of ``batch_rows`` rows."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    return StageTable(path)


def test_a_stage_table_gives_the_failures_of_the_table(tmp_path, monkeypatch):
    """Column blocks of a StageTable (read on demand) flag the same rows, with the same samples,
    as the whole table; blocks span several stored batches and end inside one."""
    monkeypatch.setattr(contract, "BLOCK_ROWS", 7)
    pairs = pa.Table.from_pandas(CLEAN["curated_pairs"](), preserve_index=False)
    pairs = pa.concat_tables([pairs] * (40 // pairs.num_rows + 1)).slice(0, 40)
    ids = [f"id{i}" for i in range(pairs.num_rows)]
    ids[31] = ids[3]
    prompts = pairs["prompt"].to_pylist()
    prompts[5], prompts[17] = "  ", None
    splits = pairs["split"].to_pylist()
    splits[38] = "validation"
    bad = _with(_with(_with(pairs, "pair_id", ids), "prompt", prompts), "split", splits)
    stage = _stage(bad, tmp_path / "pairs.arrow", 3)
    table_failures, table_rows = row_failures(bad, "curated_pairs")
    stage_failures, stage_rows = row_failures(stage, "curated_pairs")
    assert stage_failures == table_failures
    assert stage_rows.tolist() == table_rows.tolist() == [3, 5, 17, 31, 38]
    kinds = {f["expectation"] for f in stage_failures}
    assert "expect_column_values_to_be_unique" in kinds
    picks = np.array([0, 4, 5, 6, 20, 39])
    assert take_rows(stage, picks).equals(bad.take(pa.array(picks)))
    with pytest.raises(ValueError, match="ascending"):
        take_rows(stage, np.array([5, 4]))
