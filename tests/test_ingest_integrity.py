"""Issue 12 items 3 and 5, issue 11 item 6: real upstream rows with one defect planted each.

Every defect that used to crash the run (a raw ``ArrowInvalid``, retried, naming no file), to shift
``source_line`` or to drop data silently now gives a quarantined row with a reason code at its exact
line, and every other real row of the file is read as before.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from curation.core.report import QUARANTINE_ERROR_RATE, QUARANTINE_WARN_RATE, quarantine_rate
from curation.datasets.pku_format import CURRENT_MARKERS, V0_FIELDS
from curation.ingest.ingest import ingest_file
from curation.ingest.sources import source_file
from curation.normalize.normalize import pairs_from, red_team_rows, split_verdicts
from pipelines.settings import SAMPLE

HH_TEST = source_file("harmless-base", "test")
RED_TEAM = source_file("red-team-attempts")
PKU_TRAIN = source_file("Alpaca-7B", "train")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_hh_lines(n: int = 40) -> list[bytes]:
    """The first ``n`` lines of the real harmless-base test file (bundled sample)."""
    data = gzip.decompress((SAMPLE / "hh-rlhf" / HH_TEST.relpath).read_bytes())
    return data.splitlines()[:n]


def real_pku_rows() -> list[dict]:
    """The 30 real PKU-SafeRLHF rows of the bundled sample's Alpaca-7B train file."""
    text = (SAMPLE / "PKU-SafeRLHF" / PKU_TRAIN.relpath).read_text()
    return [json.loads(line) for line in text.splitlines()]


def real_red_team() -> list[dict]:
    """The bundled red-team sample (real transcripts) as objects."""
    return json.loads(gzip.decompress((SAMPLE / "hh-rlhf" / RED_TEAM.relpath).read_bytes()))


def write(root: Path, relpath: str, data: bytes) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_pku(root: Path, rows: list) -> None:
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows]
    write(root, PKU_TRAIN.relpath, b"\n".join(lines) + b"\n")


def reasons_by_line(table) -> dict[int, list[str]]:
    bad = table.filter(pc.greater(pc.list_value_length(table["quarantine_reasons"]), 0))
    return dict(
        zip(bad["source_line"].to_pylist(), bad["quarantine_reasons"].to_pylist(), strict=True)
    )


def raw_by_line(table) -> dict[int, str | None]:
    return dict(zip(table["source_line"].to_pylist(), table["raw_line"].to_pylist(), strict=True))


def kept_lines(table) -> list[int]:
    good, _ = split_verdicts(table)
    return good["source_line"].to_pylist()


def v0(row: dict) -> dict:
    """A real current-layout row reduced to the old (v0) layout."""
    names = {f.name for f in V0_FIELDS}
    return {k: v for k, v in row.items() if k in names}


# --- item 3: the PKU layout is decided per row, never by the first one ---------------------------


def test_old_layout_first_row_does_not_strip_the_labels_of_the_file(tmp_path: Path):
    rows = real_pku_rows()
    safe = next(i for i, r in enumerate(rows) if r["is_response_0_safe"])
    planted = dict(rows[safe], response_0_severity_level=3, response_0_sha256="0" * 64)
    write_pku(tmp_path, [v0(rows[0]), *rows[1:safe], planted, *rows[safe + 1 :]])
    result = ingest_file(PKU_TRAIN, str(tmp_path))
    assert result.report.schema_variant == "current"
    reasons = reasons_by_line(result.table)
    assert reasons[0] == ["schema_variant_mismatch"]
    assert {"safe_with_severity", "sha256_mismatch"} <= set(reasons[safe])
    good, _ = split_verdicts(result.table)
    pairs = pairs_from(good)
    assert pairs.num_rows == 2 * (len(rows) - 2)
    assert pairs["chosen_severity"].null_count == 0  # every published pair keeps its labels
    assert pairs["chosen_harm_categories"].null_count == 0
    assert safe not in kept_lines(result.table) and 0 not in kept_lines(result.table)


def test_a_few_current_rows_in_an_old_layout_file_are_the_minority(tmp_path: Path):
    rows = real_pku_rows()
    write_pku(tmp_path, [rows[0], *(v0(r) for r in rows[1:])])
    result = ingest_file(PKU_TRAIN, str(tmp_path))
    assert result.report.schema_variant == "v0"
    assert reasons_by_line(result.table) == {0: ["schema_variant_mismatch"]}
    assert not set(CURRENT_MARKERS) & set(result.table.column_names)
    assert result.report.rows_read == len(rows) == result.table.num_rows


def test_a_current_row_missing_one_label_is_missing_field_not_a_layout_switch(tmp_path: Path):
    rows = real_pku_rows()
    del rows[4]["response_1_sha256"]
    write_pku(tmp_path, rows)
    result = ingest_file(PKU_TRAIN, str(tmp_path))
    assert result.report.schema_variant == "current"
    assert reasons_by_line(result.table) == {4: ["missing_field"]}


# --- item 5: bad rows that crashed the run are quarantined at their exact line ------------------


def test_duplicate_key_in_an_hh_row_is_quarantined_not_a_crash(tmp_path: Path):
    lines = real_hh_lines()
    row = json.loads(lines[5])
    lines[5] = (
        b'{"chosen": '
        + json.dumps(row["chosen"]).encode()
        + b', "chosen": '
        + json.dumps(row["chosen"]).encode()
        + b', "rejected": '
        + json.dumps(row["rejected"]).encode()
        + b"}"
    )
    write(tmp_path, HH_TEST.relpath, gzip.compress(b"\n".join(lines) + b"\n"))
    result = ingest_file(HH_TEST, str(tmp_path))
    assert reasons_by_line(result.table).get(5) == ["duplicate_key"]
    assert result.report.quarantine_by_reason.get("duplicate_key") == 1
    raw = raw_by_line(result.table)
    assert raw[5] == lines[5].decode()
    assert 4 in kept_lines(result.table) and 6 in kept_lines(result.table)


def test_response_id_beyond_int64_is_quarantined_not_a_crash(tmp_path: Path):
    rows = real_pku_rows()
    lines = [json.dumps(r).encode() for r in rows]
    lines[7] = lines[7].replace(
        f'"better_response_id": {rows[7]["better_response_id"]}'.encode(),
        b'"better_response_id": 9223372036854775808',
    )
    assert b"9223372036854775808" in lines[7]
    write_pku(tmp_path, lines)
    result = ingest_file(PKU_TRAIN, str(tmp_path))
    assert reasons_by_line(result.table) == {7: ["int_out_of_range"]}
    assert result.report.schema_variant == "current"


def test_unknown_harm_category_is_quarantined_not_dropped(tmp_path: Path):
    rows = real_pku_rows()
    rows[3]["response_1_harm_category"]["Election Interference"] = True
    write_pku(tmp_path, rows)
    result = ingest_file(PKU_TRAIN, str(tmp_path))
    assert reasons_by_line(result.table) == {3: ["unknown_harm_category"]}
    assert result.report.unknown_keys == {"response_1_harm_category.Election Interference": 1}


def test_object_split_over_two_lines_keeps_every_line_number_exact(tmp_path: Path):
    lines = real_hh_lines(12)
    row = json.loads(lines[3])
    split = [
        b'{"chosen": ' + json.dumps(row["chosen"]).encode() + b",",
        b'"rejected": ' + json.dumps(row["rejected"]).encode() + b"}",
    ]
    # two objects on one line next to a split object: as many rows as lines, so a reader that
    # only compares counts shifts every later line by one
    doubled = lines[1] + lines[2]
    data = [lines[0], doubled, *split, *lines[4:]]
    write(tmp_path, HH_TEST.relpath, gzip.compress(b"\n".join(data) + b"\n"))
    result = ingest_file(HH_TEST, str(tmp_path))
    assert reasons_by_line(result.table) == {
        1: ["invalid_json"],
        2: ["invalid_json"],
        3: ["invalid_json"],
    }
    good, _ = split_verdicts(result.table)
    by_line = dict(zip(good["source_line"].to_pylist(), good["chosen"].to_pylist(), strict=True))
    for line in range(4, len(data)):
        assert by_line[line] == json.loads(data[line])["chosen"]
    assert result.report.rows_read == len(data) == result.table.num_rows


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_number_in_the_red_team_array_is_quarantined(tmp_path: Path, constant: str):
    objs = real_red_team()[:20]
    texts = [json.dumps(o) for o in objs]
    texts[6] = texts[6].replace(
        f'"rating": {json.dumps(objs[6]["rating"])}', f'"rating": {constant}'
    )
    assert constant in texts[6]
    write(tmp_path, RED_TEAM.relpath, gzip.compress(("[\n" + ",\n".join(texts) + "\n]").encode()))
    result = ingest_file(RED_TEAM, str(tmp_path))
    assert reasons_by_line(result.table) == {6: ["non_finite_number"]}
    raw = raw_by_line(result.table)
    assert raw[6] == texts[6]
    assert result.report.rows_read == 20 and len(kept_lines(result.table)) == 19


def test_duplicate_key_in_the_red_team_array_is_quarantined(tmp_path: Path):
    objs = real_red_team()[:5]
    texts = [json.dumps(o) for o in objs]
    texts[2] = texts[2][:-1] + ', "rating": 0.0}'
    write(tmp_path, RED_TEAM.relpath, gzip.compress(("[" + ",".join(texts) + "]").encode()))
    result = ingest_file(RED_TEAM, str(tmp_path))
    assert reasons_by_line(result.table) == {2: ["duplicate_key"]}


# --- issue 11 item 6: the real red-team fields ----------------------------------------------------


def upstream_red_team(objs: list[dict]) -> list[dict]:
    """Objects with the keys of the released file: upstream's spelling, member ids as ints."""
    out = []
    for i, obj in enumerate(objs):
        obj = dict(obj)
        obj["task_descripton_harmlessness_score"] = obj.pop("task_description_harmlessness_score")
        obj["red_team_member_id"] = int(obj["red_team_member_id"]) if i % 2 else f"m{i}"
        out.append(obj)
    return out


def test_upstream_spelling_and_member_ids_reach_the_published_columns(tmp_path: Path):
    objs = upstream_red_team(real_red_team()[:30])
    objs[4]["reviewer_note"] = "not in the card"
    objs[9]["reviewer_note"] = "again"
    write(tmp_path, RED_TEAM.relpath, gzip.compress(json.dumps(objs).encode()))
    result = ingest_file(RED_TEAM, str(tmp_path))
    assert result.report.rows_quarantined == 0
    assert result.report.unknown_keys == {"reviewer_note": 2}
    good, _ = split_verdicts(result.table)
    published = red_team_rows(good)
    scores = published["task_description_harmlessness_score"].to_pylist()
    assert scores == [o["task_descripton_harmlessness_score"] for o in objs]
    assert None not in scores
    assert published["red_team_member_id"].to_pylist() == [
        str(o["red_team_member_id"]) for o in objs
    ]


def test_both_spellings_that_disagree_are_quarantined(tmp_path: Path):
    objs = upstream_red_team(real_red_team()[:6])
    objs[1]["task_description_harmlessness_score"] = objs[1]["task_descripton_harmlessness_score"]
    objs[3]["task_description_harmlessness_score"] = 99.0
    write(tmp_path, RED_TEAM.relpath, gzip.compress(json.dumps(objs).encode()))
    result = ingest_file(RED_TEAM, str(tmp_path))
    assert reasons_by_line(result.table) == {3: ["conflicting_fields"]}


def test_unknown_top_level_pku_keys_are_counted(tmp_path: Path):
    rows = real_pku_rows()
    for i in (2, 5, 11):
        rows[i]["annotator"] = f"a{i}"
    write_pku(tmp_path, rows)
    result = ingest_file(PKU_TRAIN, str(tmp_path))
    assert result.report.unknown_keys == {"annotator": 3}
    assert result.report.rows_quarantined == 0


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data")
def test_the_real_files_parse_without_unknown_keys_or_new_quarantine(tmp_path: Path):
    """The real upstream rows: every PKU row current, no key outside the contract."""
    data = (SHARED / "PKU-SafeRLHF/data/Alpaca-7B/test.sample.jsonl").read_bytes()
    write(tmp_path, PKU_TRAIN.relpath, data)
    result = ingest_file(PKU_TRAIN, str(tmp_path))
    assert result.report.schema_variant == "current" and result.report.rows_read == 45
    assert result.report.unknown_keys == {}
    assert result.report.quarantine_by_reason == {}
    hh = (SHARED / "hh-rlhf/harmless-base/test.jsonl.gz").read_bytes()
    write(tmp_path, HH_TEST.relpath, hh)
    result = ingest_file(HH_TEST, str(tmp_path))
    assert result.report.rows_read == 2312 and result.report.unknown_keys == {}
    # the new parse reasons never fire on the real rows: the same 13 rows as before, same reasons
    assert result.report.rows_quarantined == 13
    assert result.report.quarantine_by_reason == {
        "bad_turn_order": 9,
        "context_mismatch": 5,
        "empty_response": 4,
    }
    assert hashlib.sha256(hh).hexdigest() == result.report.sha256


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data")
def test_quarantine_rate_thresholds_against_the_measured_real_rates(tmp_path: Path):
    """The figures QUARANTINE_WARN_RATE / QUARANTINE_ERROR_RATE cite (curation/core/report.py)."""
    write(tmp_path, HH_TEST.relpath, (SHARED / "hh-rlhf/harmless-base/test.jsonl.gz").read_bytes())
    hh = ingest_file(HH_TEST, str(tmp_path)).report.to_dict()
    pku_data = (SHARED / "PKU-SafeRLHF/data/Alpaca-7B/test.sample.jsonl").read_bytes()
    write(tmp_path, PKU_TRAIN.relpath, pku_data)
    pku = ingest_file(PKU_TRAIN, str(tmp_path)).report.to_dict()
    assert (hh["rows_quarantined"], hh["rows_read"]) == (13, 2312)
    assert f"{quarantine_rate(hh):.2%}" == "0.56%" and quarantine_rate(pku) == 0.0
    # WARN sits just above the interval of the real HH rate (a clean file stays quiet); ERROR is
    # far above it
    assert quarantine_rate(hh) < 0.0096 < QUARANTINE_WARN_RATE <= QUARANTINE_ERROR_RATE / 5
