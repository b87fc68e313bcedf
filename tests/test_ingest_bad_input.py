"""Malformed inputs: bad lines are quarantined with the right reason, unreadable files fail by name."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from curation.ingest.ingest import ingest_file
from curation.ingest.sources import SourceError, SourceFile, source_file

HH_TEST = source_file("harmless-base", "test")
RED_TEAM = source_file("red-team-attempts")
PKU_TRAIN = source_file("Alpaca-7B", "train")
TRL = SourceFile("acme-prefs", "default", "train", "team/train.jsonl", "trl")  # declare_acme
TRL_GOOD = {
    "prompt": [{"role": "user", "content": "q"}],
    "chosen": [{"role": "assistant", "content": "yes"}],
    "rejected": [{"role": "assistant", "content": "no"}],
}
GOOD = {"chosen": "\n\nHuman: q\n\nAssistant: yes", "rejected": "\n\nHuman: q\n\nAssistant: no"}


def write_hh(root: Path, lines: list[bytes], compress: bool = True) -> Path:
    path = root / HH_TEST.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def reasons_by_line(table) -> dict[int, list[str]]:
    bad = table.filter(pc.greater(pc.list_value_length(table["quarantine_reasons"]), 0))
    return dict(
        zip(bad["source_line"].to_pylist(), bad["quarantine_reasons"].to_pylist(), strict=True)
    )


def test_bad_lines_are_quarantined_and_the_rest_kept(tmp_path: Path):
    good = json.dumps(GOOD).encode()
    lines = [
        good,
        b'{"chosen": "x", ',  # invalid_json
        b"[1, 2, 3]",  # not_an_object
        json.dumps({"chosen": GOOD["chosen"]}).encode(),  # missing_field
        json.dumps({**GOOD, "rejected": True}).encode(),  # wrong_type
        b'{"chosen": "\xff\xfe", "rejected": "x"}',  # invalid_utf8
        b"",  # blank: not a row
        json.dumps({**GOOD, "chosen": GOOD["chosen"] + " " + "x" * 5_000_000}).encode(),
        good,
    ]
    write_hh(tmp_path, lines)
    result = ingest_file(HH_TEST, str(tmp_path))
    assert result.report.rows_read == 8 and result.report.blank_lines == 1
    assert result.table.num_rows == 8
    assert reasons_by_line(result.table) == {
        1: ["invalid_json"],
        2: ["not_an_object"],
        3: ["missing_field"],
        4: ["wrong_type"],
        5: ["invalid_utf8"],
    }
    raw = dict(
        zip(
            result.table["source_line"].to_pylist(),
            result.table["raw_line"].to_pylist(),
            strict=True,
        )
    )
    assert raw[1] == '{"chosen": "x", ' and raw[0] is None
    assert raw[5].startswith('{"chosen": "\\xff')
    kept = result.table.filter(
        pc.equal(pc.list_value_length(result.table["quarantine_reasons"]), 0)
    )
    assert kept["source_line"].to_pylist() == [0, 7, 8]
    assert len(kept["chosen"][1].as_py()) > 5_000_000


def test_wrong_type_for_pku_boolean(tmp_path: Path):
    from tests.test_rules import pku_row

    path = tmp_path / PKU_TRAIN.relpath
    path.parent.mkdir(parents=True)
    rows = [pku_row(), pku_row(is_response_0_safe="yes"), pku_row()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = ingest_file(PKU_TRAIN, str(tmp_path))
    assert reasons_by_line(result.table) == {1: ["wrong_type"]}
    assert result.report.schema_variant == "current"


def test_truncated_gzip_fails_naming_the_file(tmp_path: Path):
    path = write_hh(tmp_path, [json.dumps(GOOD).encode()] * 200)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(
        SourceError, match=r"harmless-base/test\.jsonl\.gz: corrupt or truncated gzip"
    ):
        ingest_file(HH_TEST, str(tmp_path))


def test_empty_file_fails_naming_the_file(tmp_path: Path):
    path = tmp_path / HH_TEST.relpath
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"test\.jsonl\.gz: file is empty"):
        ingest_file(HH_TEST, str(tmp_path))


def test_plain_text_named_gz_is_read(tmp_path: Path, caplog):
    write_hh(tmp_path, [json.dumps(GOOD).encode()] * 3, compress=False)
    result = ingest_file(HH_TEST, str(tmp_path))
    assert result.report.compression == "none" and result.report.rows_quarantined == 0
    assert result.table.num_rows == 3
    assert "not gzip-compressed" in caplog.text


def test_missing_file_is_absent_not_an_error(tmp_path: Path):
    result = ingest_file(HH_TEST, str(tmp_path))
    assert not result.report.present and result.table.num_rows == 0


def red_team_obj(i: int) -> dict:
    return {"transcript": f"\n\nHuman: q{i}\n\nAssistant: a{i}", "rating": 1.0, "tags": None}


@pytest.mark.parametrize("layout", ["array", "lines"])
def test_red_team_array_and_lines(tmp_path: Path, layout: str):
    objs = [red_team_obj(i) for i in range(5)] + [{"transcript": 3}, "text"]
    path = tmp_path / RED_TEAM.relpath
    path.parent.mkdir(parents=True)
    if layout == "array":
        data = json.dumps(objs, indent=2).encode()
    else:
        data = b"\n".join(json.dumps(o).encode() for o in objs) + b"\n"
    path.write_bytes(gzip.compress(data))
    result = ingest_file(RED_TEAM, str(tmp_path))
    assert result.report.rows_read == 7
    assert reasons_by_line(result.table) == {5: ["wrong_type"], 6: ["not_an_object"]}


def test_malformed_red_team_array_fails_naming_the_file(tmp_path: Path):
    path = tmp_path / RED_TEAM.relpath
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(b'[{"transcript": "x"}, {"transcript": '))
    with pytest.raises(SourceError, match=r"red_team_attempts\.jsonl\.gz: unreadable JSON array"):
        ingest_file(RED_TEAM, str(tmp_path))


def test_pku_v0_file_is_accepted_and_normalized_with_its_labels(tmp_path: Path):
    from curation.datasets.pku_format import V0_FIELDS
    from curation.normalize.normalize import pairs_from, split_verdicts
    from tests.test_rules import pku_row

    v0 = {f.name for f in V0_FIELDS}
    rows = [
        {k: v for k, v in pku_row(better_response_id=1).items() if k in v0},
        {k: v for k, v in pku_row(safer_response_id=1).items() if k in v0},  # contradicts flags
    ]
    path = tmp_path / PKU_TRAIN.relpath
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = ingest_file(PKU_TRAIN, str(tmp_path))
    assert result.report.schema_variant == "v0"
    assert reasons_by_line(result.table) == {1: ["safer_contradicts_flags"]}
    good, _ = split_verdicts(result.table)
    pairs = {p["dimension"]: p for p in pairs_from(good).to_pylist()}
    assert pairs["helpful"]["chosen"] == rows[0]["response_1"]
    assert pairs["harmless"]["chosen"] == rows[0]["response_0"]
    assert pairs["harmless"]["chosen_is_safe"] is True
    assert pairs["harmless"]["chosen_severity"] is None
    assert pairs["harmless"]["chosen_harm_categories"] is None


def _hh_line(text: str) -> tuple[object, bytes]:
    return HH_TEST, text.encode()


def _pku_line(**changes) -> tuple[object, bytes]:
    from tests.test_rules import pku_row

    return PKU_TRAIN, json.dumps(pku_row(**changes)).encode()


def _trl(**changes: object) -> tuple[object, bytes]:
    return TRL, json.dumps({**TRL_GOOD, **changes}).encode()


def _red_team(text: str) -> tuple[object, bytes]:
    return RED_TEAM, text.encode()


def _v0_line() -> tuple[object, bytes]:
    from curation.datasets.pku_format import V0_FIELDS
    from tests.test_rules import pku_row

    v0 = {f.name for f in V0_FIELDS}
    return PKU_TRAIN, json.dumps({k: v for k, v in pku_row().items() if k in v0}).encode()


#: One offending line per declared parse failure: (file, line), written after two good lines.
PARSE_FAILURE_LINES = {
    "invalid_utf8": lambda: (RED_TEAM, b'{"transcript": "\xff\xfe"}'),
    "invalid_json": lambda: _hh_line('{"chosen": "x", '),
    "not_an_object": lambda: _hh_line("[1, 2]"),
    "missing_field": lambda: _hh_line(json.dumps({"chosen": GOOD["chosen"]})),
    "wrong_type": lambda: _hh_line(json.dumps({**GOOD, "rejected": True})),
    "int_out_of_range": lambda: _pku_line(better_response_id=2**63),
    "duplicate_key": lambda: _hh_line('{"chosen": "a", "chosen": "b", "rejected": "c"}'),
    "non_finite_number": lambda: _red_team('{"transcript": "\\n\\nHuman: q", "rating": NaN}'),
    "schema_variant_mismatch": _v0_line,
    "unknown_harm_category": lambda: _pku_line(response_0_harm_category={"Election Fraud": True}),
    "missing_role": lambda: _trl(prompt=[{"content": "q"}]),
    "unknown_role": lambda: _trl(prompt=[{"role": "human", "content": "q"}]),
    "response_not_assistant": lambda: _trl(chosen=[{"role": "user", "content": "yes"}]),
    "mixed_forms": lambda: (
        TRL,
        json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}).encode(),
    ),
    "conflicting_fields": lambda: _red_team(
        json.dumps(
            {
                "transcript": "\n\nHuman: q",
                "task_description_harmlessness_score": 1.0,
                "task_descripton_harmlessness_score": 2.0,
            }
        )
    ),
}


def test_every_declared_parse_failure_is_tested():
    from curation.core.rules import PARSE_CODES

    assert set(PARSE_FAILURE_LINES) == PARSE_CODES


@pytest.mark.parametrize("code", sorted(PARSE_FAILURE_LINES))
def test_every_declared_parse_failure_is_produced(tmp_path: Path, code: str, declare_acme):
    """Each code of ``PARSE_RULES`` has a producer in the parsers (the other direction, an
    undeclared code, raises in ``rules.parse_failure``)."""
    source, bad = PARSE_FAILURE_LINES[code]()
    good = {
        HH_TEST: json.dumps(GOOD).encode(),
        PKU_TRAIN: _pku_line()[1],
        RED_TEAM: json.dumps(red_team_obj(0)).encode(),
        TRL: json.dumps(TRL_GOOD).encode(),
    }[source]
    path = tmp_path / source.relpath
    path.parent.mkdir(parents=True)
    data = b"\n".join([good, good, bad]) + b"\n"
    path.write_bytes(gzip.compress(data) if source.relpath.endswith(".gz") else data)
    result = ingest_file(source, str(tmp_path))
    assert reasons_by_line(result.table) == {2: [code]}


def test_invalid_utf8_alone_in_a_jsonl_file_is_quarantined(tmp_path: Path):
    good = json.dumps(GOOD).encode()
    write_hh(tmp_path, [good, good, b'{"chosen": "\xff\xfe", "rejected": "x"}'])
    result = ingest_file(HH_TEST, str(tmp_path))
    assert reasons_by_line(result.table) == {2: ["invalid_utf8"]}
