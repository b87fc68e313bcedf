"""Great Expectations schema suites: loading, clean frames pass, one bad row per family fails
with the right source_file/source_line in the failure sample."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from curation.core.schema import HARM_CATEGORIES, PAIRS
from curation.datasets.pku_format import harm_category_columns
from curation.validate import gx_validate as gv

N = 6
BAD = 3  # the row each mutation breaks


def _file(i: int) -> str:
    return f"data/part-{i % 2}.jsonl"


def _line(i: int) -> int:
    return 100 + 7 * i  # not the row position: the sample must come from the id columns


def _provenance(n: int = N) -> dict[str, list]:
    return {
        "source_file": [_file(i) for i in range(n)],
        "source_line": [_line(i) for i in range(n)],
    }


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


HARM = pa.struct([(name, pa.bool_()) for name in HARM_CATEGORIES])


def pku_table(n: int = N, *, v0: bool = False, categories=HARM_CATEGORIES) -> pa.Table:
    data: dict[str, Any] = {
        **_provenance(n),
        "prompt": [f"How do I do thing {i}?" for i in range(n)],
        "response_0": [f"Answer A{i}" for i in range(n)],
        "response_1": [f"Answer B{i}" for i in range(n)],
        "is_response_0_safe": [i % 2 == 0 for i in range(n)],
        "is_response_1_safe": [True] * n,
        "better_response_id": [i % 2 for i in range(n)],
        "safer_response_id": [(i + 1) % 2 for i in range(n)],
    }
    if v0:
        return pa.table(data)
    struct = pa.struct([(name, pa.bool_()) for name in categories])
    data |= {
        "prompt_source": ["Alpaca-7B"] * n,
        "response_0_source": ["Alpaca-7B"] * n,
        "response_1_source": [None] + ["Alpaca2-7B"] * (n - 1),  # sources may be null
        "response_0_harm_category": pa.array(
            [{c: (i + j) % 5 == 0 for j, c in enumerate(categories)} for i in range(n)], struct
        ),
        "response_1_harm_category": pa.array(
            [dict.fromkeys(categories, False) for _ in range(n)], struct
        ),
        "response_0_severity_level": [i % 4 for i in range(n)],
        "response_1_severity_level": [0] * n,
        "response_0_sha256": [_sha(f"p{i}A{i}") for i in range(n)],
        "response_1_sha256": [_sha(f"p{i}B{i}") for i in range(n)],
    }
    return pa.table(data)


def hh_frame(n: int = N) -> pd.DataFrame:
    return pd.DataFrame(
        {
            **_provenance(n),
            "chosen": [f"\n\nHuman: hi {i}\n\nAssistant: hello" for i in range(n)],
            "rejected": [f"\n\nHuman: hi {i}\n\nAssistant: go away" for i in range(n)],
        }
    )


def red_team_table(n: int = N) -> pa.Table:
    return pa.table(
        {
            **_provenance(n),
            "transcript": [f"\n\nHuman: attack {i}\n\nAssistant: no" for i in range(n)],
            "min_harmlessness_score_transcript": [0.5 - i for i in range(n)],
            "num_params": ["52B"] * n,
            "model_type": ["context distillation"] * n,
            "rating": [float(i % 5) for i in range(n)],
            "task_description": [f"task {i}" for i in range(n)],
            "task_description_harmlessness_score": [1.25] * n,
            "red_team_member_id": [str(i) for i in range(n)],
            "is_upworker": [i % 2 == 1 for i in range(n)],
            "tags": pa.array([["a", "b"], None, [], ["c"], None, ["d"]][:n], pa.list_(pa.string())),
        }
    )


def pairs_table(n: int = N) -> pa.Table:
    rows = []
    for i in range(n):
        pku = i % 2 == 1
        rows.append(
            {
                "pair_id": f"pair-{i:04d}",
                "dataset": "pku-saferlhf" if pku else "hh-rlhf",
                "subset": "Alpaca-7B" if pku else "harmless-base",
                "split": "train" if i < 4 else "test",
                "source_file": _file(i),
                "source_line": _line(i),
                "dimension": "harmless" if pku else "helpful",
                "prompt": f"prompt {i}",
                "prompt_turns": [{"role": "user", "text": f"prompt {i}"}],
                "chosen": f"good {i}",
                "rejected": f"bad {i}",
                "chosen_is_safe": True if pku else None,
                "rejected_is_safe": False if pku else None,
                "chosen_severity": 0 if pku else None,
                "rejected_severity": 2 if pku else None,
                "chosen_harm_categories": [] if pku else None,
                "rejected_harm_categories": ["Violence"] if pku else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=PAIRS)


CLEAN = {
    "hh_preference_raw": hh_frame,
    "hh_red_team_raw": lambda: gv.frame_for_validation(red_team_table()),
    "pku_saferlhf_raw": lambda: gv.frame_for_validation(pku_table()),
    "pku_saferlhf_v0_raw": lambda: gv.frame_for_validation(pku_table(v0=True)),
    "curated_pairs": lambda: gv.frame_for_validation(pairs_table()),
}


def set_cell(df: pd.DataFrame, column: str, value: Any, row: int = BAD) -> pd.DataFrame:
    """Set one cell, widening the column to object when pandas refuses the value's type."""
    df = df.copy()
    try:
        df.loc[row, column] = value
        if value is not None and df.loc[row, column] != value:
            raise TypeError
    except (TypeError, ValueError):
        df[column] = df[column].astype(object)
        df.loc[row, column] = value
    return df


def only_failure(result: gv.SuiteResult, expectation: str, column: str) -> dict:
    matches = [
        f for f in result.failures if f["expectation"] == expectation and f["column"] == column
    ]
    assert matches, f"no {expectation} failure on {column}: {result.failures}"
    return matches[0]


def assert_bad_row_sampled(failure: dict, value: Any = "__any__") -> None:
    assert failure["unexpected_count"] == 1
    assert failure["sample"] == [
        {
            "source_file": _file(BAD),
            "source_line": _line(BAD),
            "value": failure["sample"][0]["value"] if value == "__any__" else value,
        }
    ]


# ------------------------------------------------------------------------------------------
# suites as files
# ------------------------------------------------------------------------------------------


def test_every_suite_file_exists_and_loads():
    assert set(gv.SUITES) == set(gv.SUITE_NAMES)
    for name, path in gv.SUITES.items():
        assert path.is_file(), path
        data = json.loads(path.read_text())
        suite = gv.load_suite(name)
        assert suite.name == name == data["name"]
        assert len(suite.expectations) == len(data["expectations"]) > 0
        assert suite.to_json_dict() == data  # GX's serialization round-trips


def test_suite_files_are_up_to_date_with_build_suites():
    built = gv.build_suites()
    for name, suite in built.items():
        assert suite.to_json_dict() == gv.load_suite_json(name), (
            f"{name}.json is stale: run python -m curation.validate.gx_validate write-suites"
        )


def test_pku_suite_covers_all_38_harm_category_columns():
    data = gv.load_suite_json("pku_saferlhf_raw")
    by_type: dict[str, set] = {}
    for exp in data["expectations"]:
        by_type.setdefault(exp["type"], set()).add(exp["kwargs"].get("column"))
    harm = set(harm_category_columns())
    assert len(harm) == 38
    assert "response_1_harm_category.White-Collar Crime" in harm
    for kind in (
        "expect_column_to_exist",
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_not_be_null",
    ):
        assert harm <= by_type[kind], kind


def test_load_suite_rejects_unknown_name_and_dropped_expectations(tmp_path, monkeypatch):
    with pytest.raises(KeyError):
        gv.load_suite("nope")
    data = gv.load_suite_json("hh_preference_raw")
    data["expectations"].append({"type": "expect_no_such_thing", "kwargs": {"column": "x"}})
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    monkeypatch.setitem(gv.SUITES, "broken", path)
    with pytest.raises(ValueError, match="only"):
        gv.load_suite("broken")


# ------------------------------------------------------------------------------------------
# clean frames pass
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_clean_frame_passes(name):
    df = CLEAN[name]()
    result = gv.validate_frame(df, name)
    assert result.success, result.to_markdown()
    assert result.failed == 0 and result.failures == []
    assert result.rows == N
    assert result.evaluated == len(gv.load_suite_json(name)["expectations"])


def test_pyarrow_table_is_accepted_directly():
    assert gv.validate_frame(pku_table(), "pku_saferlhf_raw").success
    assert gv.validate_frame(red_team_table(), "hh_red_team_raw").success


def test_v0_frame_fails_current_suite_on_missing_columns():
    result = gv.validate_frame(pku_table(v0=True), "pku_saferlhf_raw")
    assert not result.success
    missing = {f["column"] for f in result.failures if f["expectation"] == "expect_column_to_exist"}
    assert "response_0_sha256" in missing and "response_0_harm_category.Violence" in missing


# ------------------------------------------------------------------------------------------
# one bad row per expectation family
# ------------------------------------------------------------------------------------------

CASES = [
    # (suite, column, bad value, failing expectation, sampled value)
    ("pku_saferlhf_raw", "is_response_0_safe", "yes", "expect_column_values_to_be_of_type", "yes"),
    ("pku_saferlhf_raw", "response_0_severity_level", 5, "expect_column_values_to_be_between", 5),
    ("pku_saferlhf_raw", "better_response_id", 2, "expect_column_values_to_be_in_set", 2),
    ("pku_saferlhf_raw", "safer_response_id", 2, "expect_column_values_to_be_in_set", 2),
    ("pku_saferlhf_raw", "response_1_sha256", "ABC", "expect_column_values_to_match_regex", "ABC"),
    (
        "pku_saferlhf_raw",
        "response_0_sha256",
        "A" * 64,  # right length, upper case
        "expect_column_values_to_match_regex",
        "A" * 64,
    ),
    ("pku_saferlhf_raw", "prompt", "", "expect_column_values_to_match_regex", ""),
    ("pku_saferlhf_raw", "response_1", "  \n", "expect_column_values_to_match_regex", "  \n"),
    ("pku_saferlhf_raw", "response_0", None, "expect_column_values_to_not_be_null", None),
    (
        "pku_saferlhf_raw",
        "response_1_harm_category.Violence",
        None,
        "expect_column_values_to_not_be_null",
        None,
    ),
    (
        "pku_saferlhf_raw",
        "response_0_harm_category.Drugs",
        "no",
        "expect_column_values_to_be_of_type",
        "no",
    ),
    (
        "pku_saferlhf_v0_raw",
        "is_response_1_safe",
        "yes",
        "expect_column_values_to_be_of_type",
        "yes",
    ),
    ("pku_saferlhf_v0_raw", "better_response_id", 2, "expect_column_values_to_be_in_set", 2),
    ("hh_preference_raw", "chosen", "", "expect_column_values_to_match_regex", ""),
    ("hh_preference_raw", "rejected", None, "expect_column_values_to_not_be_null", None),
    ("hh_preference_raw", "chosen", 42, "expect_column_values_to_be_of_type", 42),
    ("hh_red_team_raw", "rating", 5.0, "expect_column_values_to_be_between", 5.0),
    ("hh_red_team_raw", "is_upworker", "yes", "expect_column_values_to_be_of_type", "yes"),
    ("hh_red_team_raw", "tags", "a,b", "expect_column_values_to_be_of_type", "a,b"),
    ("hh_red_team_raw", "red_team_member_id", 7, "expect_column_values_to_be_of_type", 7),
    ("hh_red_team_raw", "transcript", "", "expect_column_values_to_match_regex", ""),
    ("hh_red_team_raw", "num_params", 52, "expect_column_values_to_be_of_type", 52),
    ("curated_pairs", "dataset", "other", "expect_column_values_to_be_in_set", "other"),
    ("curated_pairs", "split", "dev", "expect_column_values_to_be_in_set", "dev"),
    ("curated_pairs", "dimension", "honest", "expect_column_values_to_be_in_set", "honest"),
    ("curated_pairs", "chosen_severity", 5.0, "expect_column_values_to_be_between", 5.0),
    ("curated_pairs", "source_line", -1, "expect_column_values_to_be_between", -1),
    ("curated_pairs", "rejected", "", "expect_column_values_to_match_regex", ""),
    ("curated_pairs", "pair_id", None, "expect_column_values_to_not_be_null", None),
]


@pytest.mark.parametrize(
    ("suite", "column", "bad", "expectation", "sampled"),
    CASES,
    ids=[f"{c[0]}:{c[1]}={c[2]!r}" for c in CASES],
)
def test_bad_row_fails_with_its_source_location(suite, column, bad, expectation, sampled):
    df = set_cell(CLEAN[suite](), column, bad)
    result = gv.validate_frame(df, suite)
    assert not result.success
    failure = only_failure(result, expectation, column)
    if column == "source_line":  # the id column itself is the bad value
        assert failure["unexpected_count"] == 1
        assert failure["sample"] == [{"source_file": _file(BAD), "source_line": -1, "value": -1}]
    else:
        assert_bad_row_sampled(failure, sampled)
    # nothing else breaks because of this single cell, except the type check of a now mixed column
    others = [f for f in result.failures if f["column"] != column]
    assert others == [], others


def test_duplicate_pair_id_samples_both_rows():
    df = set_cell(CLEAN["curated_pairs"](), "pair_id", "pair-0001")
    failure = only_failure(
        gv.validate_frame(df, "curated_pairs"), "expect_column_values_to_be_unique", "pair_id"
    )
    assert failure["unexpected_count"] == 2
    assert {(s["source_file"], s["source_line"]) for s in failure["sample"]} == {
        (_file(1), _line(1)),
        (_file(BAD), _line(BAD)),
    }


def test_missing_harm_category_column_fails_presence():
    categories = [c for c in HARM_CATEGORIES if c != "Animal Abuse"]
    result = gv.validate_frame(pku_table(categories=categories), "pku_saferlhf_raw")
    assert not result.success
    missing = {f["column"] for f in result.failures if f["expectation"] == "expect_column_to_exist"}
    assert missing == {
        "response_0_harm_category.Animal Abuse",
        "response_1_harm_category.Animal Abuse",
    }
    # checks of the absent columns cannot run: reported with GX's exception, no sample
    for failure in result.failures:
        assert failure["column"].endswith("Animal Abuse")
        assert failure["sample"] == []
        if failure["expectation"] != "expect_column_to_exist":
            assert failure["exception"]


def test_wrong_dtype_is_a_column_level_failure():
    df = CLEAN["pku_saferlhf_raw"]()
    df["response_0_severity_level"] = df["response_0_severity_level"].astype("float64") + 0.5
    result = gv.validate_frame(df, "pku_saferlhf_raw")
    failure = only_failure(
        result, "expect_column_values_to_be_in_type_list", "response_0_severity_level"
    )
    assert failure["observed_value"] == "float64"
    assert failure["unexpected_count"] is None and failure["sample"] == []


def test_sample_is_capped_and_uses_id_columns_with_any_index():
    df = CLEAN["pku_saferlhf_raw"]()
    df["response_0_sha256"] = "bad"
    df.index = range(50, 50 + N)  # a non-default index must not shift the sampled rows
    result = gv.validate_frame(df, "pku_saferlhf_raw", sample_size=2)
    failure = only_failure(result, "expect_column_values_to_match_regex", "response_0_sha256")
    assert failure["unexpected_count"] == N
    assert failure["unexpected_percent"] == pytest.approx(100.0)
    assert failure["sample"] == [
        {"source_file": _file(i), "source_line": _line(i), "value": "bad"} for i in range(2)
    ]


def test_frame_without_id_columns_samples_positions():
    df = set_cell(hh_frame(), "chosen", "").drop(columns=["source_file", "source_line"])
    result = gv.validate_frame(df, "hh_preference_raw")
    failure = only_failure(result, "expect_column_values_to_match_regex", "chosen")
    assert failure["sample"] == [
        {"index": BAD, "source_file": None, "source_line": None, "value": ""}
    ]


def test_cached_context_does_not_leak_results_between_frames():
    good, bad = hh_frame(), set_cell(hh_frame(), "chosen", "")
    outcomes = [gv.validate_frame(df, "hh_preference_raw").success for df in (bad, good, bad, good)]
    assert outcomes == [False, True, False, True]
    big = pd.concat([hh_frame(40)] * 5, ignore_index=True)
    assert gv.validate_frame(big, "hh_preference_raw").rows == 200


def test_no_progress_bars_on_stderr(capfd):
    gv.validate_frame(hh_frame(), "hh_preference_raw")
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err + captured.out


# ------------------------------------------------------------------------------------------
# conversion helpers and reporting
# ------------------------------------------------------------------------------------------


def test_frame_for_validation_flattens_structs_and_lists():
    df = gv.frame_for_validation(pku_table())
    assert set(harm_category_columns()) <= set(df.columns)
    assert "response_0_harm_category" not in df.columns
    assert str(df["response_0_harm_category.Violence"].dtype) == "bool"
    tags = gv.frame_for_validation(red_team_table())["tags"]
    assert tags[0] == ["a", "b"] and tags[1] is None and tags[2] == []


def test_flatten_harm_categories_from_dict_records():
    records = pku_table().to_pylist()
    df = pd.DataFrame(records)
    flat = gv.flatten_harm_categories(df)
    assert set(harm_category_columns()) <= set(flat.columns)
    assert gv.validate_frame(flat, "pku_saferlhf_raw").success
    # a category missing from every row gives no column, so presence fails
    for record in records:
        del record["response_0_harm_category"]["Violence"]
    flat = gv.flatten_harm_categories(pd.DataFrame(records))
    assert "response_0_harm_category.Violence" not in flat.columns
    result = gv.validate_frame(flat, "pku_saferlhf_raw")
    only_failure(result, "expect_column_to_exist", "response_0_harm_category.Violence")


def test_to_metadata_and_markdown():
    df = set_cell(hh_frame(), "chosen", "x" * 1000)
    df = set_cell(df, "rejected", "")
    result = gv.validate_frame(df, "hh_preference_raw")
    meta = result.to_metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["suite"] == "hh_preference_raw" and meta["success"] is False
    assert meta["failed"] == 1 and meta["rows"] == N
    md = result.to_markdown()
    assert "FAILED" in md and "| expectation |" in md
    assert f"{_file(BAD)}:{_line(BAD)}" in md and "`rejected`" in md
    ok = gv.validate_frame(hh_frame(), "hh_preference_raw")
    assert "passed" in ok.to_markdown() and ok.to_metadata()["failures"] == []


def test_long_values_are_truncated_in_samples():
    df = set_cell(hh_frame(), "chosen", 7)
    df = set_cell(df, "rejected", "   " + "y" * 1000, row=1)  # passes \\S, long: not sampled
    result = gv.validate_frame(df, "hh_preference_raw")
    assert (
        only_failure(result, "expect_column_values_to_be_of_type", "chosen")["sample"][0]["value"]
        == 7
    )
    assert gv._jsonable("z" * 1000).startswith("z" * gv.MAX_SAMPLE_CHARS + "…")


def test_chunked_arrow_columns_are_combined():
    table = pa.concat_tables([pku_table()] * 3)  # 3 chunks per column, like multi-block reads
    df = table.flatten().flatten().to_pandas()
    df = set_cell(df, "response_0_sha256", "nope", row=N + BAD)
    assert gv._chunked(df["prompt"]) is not None
    normalized = gv._normalize(df)
    assert gv._chunked(normalized["prompt"]) is None
    assert normalized["prompt"].dtype == df["prompt"].dtype
    failure = only_failure(
        gv.validate_frame(df, "pku_saferlhf_raw"),
        "expect_column_values_to_match_regex",
        "response_0_sha256",
    )
    assert_bad_row_sampled(failure, "nope")
