"""Every row rule: a row that triggers it and a near-identical clean row that does not."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from curation import datasets
from curation.core import rules
from curation.core.jsonl import parse_jsonl
from curation.core.schema import HARM_CATEGORIES
from curation.datasets import hh_rlhf, pku_saferlhf
from curation.datasets.pku_format import CURRENT_FIELDS, V0_FIELDS
from curation.datasets.trl_format import parse_trl

H, A = "\n\nHuman:", "\n\nAssistant:"


def hh_row(chosen_reply="Sure, here is how.", rejected_reply="No.", context=None):
    context = context or f"{H} How do I bake bread?"
    return {"chosen": f"{context}{A} {chosen_reply}", "rejected": f"{context}{A} {rejected_reply}"}


def hh_reasons(row: dict) -> set[str]:
    table = pa.Table.from_pylist([row])
    return {code for code, mask in hh_rlhf.PREFERENCE_RULES(table).items() if mask[0]}


HH_CASES = {
    "bad_turn_order": (
        {"chosen": f"{A} hi{H} q{A} a", "rejected": f"{A} hi{H} q{A} b"},
        hh_row(context=f"{H} hi{A} hello{H} q"),
    ),
    "context_mismatch": (
        {"chosen": f"{H} q one{A} a", "rejected": f"{H} q two{A} b"},
        {"chosen": f"{H} q one{A} a", "rejected": f"{H} q one{A} b"},
    ),
    "empty_response": (hh_row(chosen_reply="   "), hh_row(chosen_reply=" .")),
    "identical_responses": (hh_row("Same.", "Same."), hh_row("Same.", "Same!")),
}


@pytest.mark.parametrize("code", sorted(HH_CASES))
def test_hh_rule_and_near_miss(code: str):
    bad, clean = HH_CASES[code]
    assert code in hh_reasons(bad)
    assert hh_reasons(clean) == set()


def pku_row(**changes) -> dict:
    prompt = "How can I stay safe online?"
    row = {
        "prompt": prompt,
        "response_0": "Use strong passwords.",
        "response_1": "Steal your neighbour's wifi password.",
        "prompt_source": "test",
        "response_0_source": "test",
        "response_1_source": "test",
        "is_response_0_safe": True,
        "is_response_1_safe": False,
        "response_0_harm_category": {c: False for c in HARM_CATEGORIES},
        "response_1_harm_category": {c: c == "Cybercrime" for c in HARM_CATEGORIES},
        "response_0_severity_level": 0,
        "response_1_severity_level": 2,
        "better_response_id": 0,
        "safer_response_id": 0,
    }
    for key, value in changes.items():
        if key.endswith("_harm_category"):
            row[key] = {**row[key], **value}
        else:
            row[key] = value
    for i in (0, 1):
        if f"response_{i}_sha256" not in changes:
            row[f"response_{i}_sha256"] = hashlib.sha256(
                (row["prompt"] + row[f"response_{i}"]).encode()
            ).hexdigest()
    return row


def pku_reasons(row: dict, fields=CURRENT_FIELDS) -> set[str]:
    parsed = parse_jsonl(json.dumps(row).encode() + b"\n", fields)
    assert not parsed.bad, parsed.bad
    return {code for code, mask in pku_saferlhf.FAMILY(parsed.table).items() if mask[0]}


def both_unsafe(**changes) -> dict:
    return pku_row(
        is_response_0_safe=False,
        response_0_harm_category={"Violence": True},
        response_0_severity_level=1,
        **changes,
    )


PKU_CASES = {
    "sha256_mismatch": (pku_row(response_0_sha256="0" * 64), pku_row()),
    "safe_with_severity": (
        pku_row(response_0_severity_level=1),
        pku_row(response_1_severity_level=1),
    ),
    "safe_with_harm_category": (
        pku_row(response_0_harm_category={"Drugs": True}),
        pku_row(response_1_harm_category={"Drugs": True}),
    ),
    "unsafe_without_harm": (
        pku_row(response_1_harm_category={"Cybercrime": False}),
        pku_row(response_1_harm_category={"Drugs": True}),
    ),
    "safer_contradicts_flags": (pku_row(safer_response_id=1), pku_row(better_response_id=1)),
    "identical_responses": (
        pku_row(response_1="Use strong passwords."),
        pku_row(response_1="Use strong passwords!"),
    ),
    "bad_response_id": (pku_row(better_response_id=2), pku_row(better_response_id=1)),
    "bad_severity": (pku_row(response_1_severity_level=4), pku_row(response_1_severity_level=3)),
    "empty_prompt": (pku_row(prompt="  "), pku_row(prompt=" ?")),
    "empty_response": (pku_row(response_0="\n"), pku_row(response_0="\nok")),
    "safer_has_higher_severity": (
        both_unsafe(response_1_severity_level=2, safer_response_id=1),
        both_unsafe(response_1_severity_level=1, safer_response_id=1),
    ),
}


@pytest.mark.parametrize("code", sorted(PKU_CASES))
def test_pku_rule_and_near_miss(code: str):
    bad, clean = PKU_CASES[code]
    assert code in pku_reasons(bad)
    assert pku_reasons(clean) == set()


def test_pku_v0_rows_use_the_labels_they_have():
    row = {
        k: v for k, v in pku_row(safer_response_id=1).items() if k in {f.name for f in V0_FIELDS}
    }
    assert pku_reasons(row, V0_FIELDS) == {"safer_contradicts_flags"}
    clean = {k: v for k, v in pku_row().items() if k in {f.name for f in V0_FIELDS}}
    assert pku_reasons(clean, V0_FIELDS) == set()


def test_levels_override_and_validation():
    levels = datasets.resolve_levels(
        {"safer_has_higher_severity": "error", "sha256_mismatch": "off"}
    )
    assert levels["safer_has_higher_severity"] == "error"
    assert levels["sha256_mismatch"] == "off"
    with pytest.raises(ValueError, match="unknown rule"):
        datasets.resolve_levels({"nope": "warn"})
    with pytest.raises(ValueError, match="always an error"):
        datasets.resolve_levels({"invalid_json": "warn"})


def test_reasons_by_level_splits_errors_and_warnings():
    masks = {"a_err": np.array([True, False]), "b_warn": np.array([True, True])}
    errors, warnings = rules.reasons_by_level(masks, {"a_err": "error", "b_warn": "warn"}, 2)
    assert errors.to_pylist() == [["a_err"], []]
    assert warnings.to_pylist() == [["b_warn"], ["b_warn"]]


# --- declarations and checks are one structure (issue 14) ----------------------------------------

V0_SKIPPED = {
    "bad_severity",
    "sha256_mismatch",
    "safe_with_severity",
    "safe_with_harm_category",
    "unsafe_without_harm",
    "safer_has_higher_severity",
}


def _v0_table() -> pa.Table:
    row = {k: v for k, v in pku_row().items() if k in {f.name for f in V0_FIELDS}}
    return parse_jsonl(json.dumps(row).encode() + b"\n", V0_FIELDS).table


FAMILY_TABLES = {
    "hh_preference": (lambda: pa.Table.from_pylist([hh_row()]), set()),
    "hh_red_team": (lambda: pa.table({"transcript": [f"{H} hi{A} hello"]}), set()),
    "pku": (
        lambda: parse_jsonl(json.dumps(pku_row()).encode() + b"\n", CURRENT_FIELDS).table,
        set(),
    ),
    "pku_v0": (_v0_table, V0_SKIPPED),
    "trl": (
        lambda: (
            parse_trl(
                json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}).encode(), "t"
            ).table
        ),
        set(),
    ),
}


#: Every rule family of the registered datasets, by kind.
FAMILIES = {f.kind: f for f in datasets.rule_families()}


@pytest.mark.parametrize("layout", sorted(FAMILY_TABLES))
def test_every_family_masks_exactly_its_applicable_rules(layout: str):
    """Each family's masks are its declared rules minus those the layout legitimately skips."""
    family = FAMILIES[layout.removesuffix("_v0")]
    make_table, skipped = FAMILY_TABLES[layout]
    table = make_table()
    masks = family(table)
    assert set(family.skipped(table.column_names)) == skipped
    assert set(masks) == {r.code for r in family.rules} - skipped
    assert all(len(mask) == table.num_rows for mask in masks.values())


def test_every_family_is_tested_and_every_rule_belongs_to_one():
    assert {layout.removesuffix("_v0") for layout in FAMILY_TABLES} == set(FAMILIES)
    in_families = {r.code for f in FAMILIES.values() for r in f.rules}
    assert in_families | rules.PARSE_CODES == set(datasets.all_rules())
    assert not in_families & rules.PARSE_CODES


def test_a_mask_without_a_rule_or_a_rule_without_a_mask_is_an_error():
    declared = (rules.Rule("a", rules.ERROR, "a rule", ("x",)), rules.Rule("b", rules.WARN, "b"))
    table = pa.table({"x": [1, 2]})
    ok = rules.RuleFamily("t", declared, lambda t: {"a": np.zeros(2, bool), "b": np.ones(2, bool)})
    assert set(ok(table)) == {"a", "b"}
    undeclared = rules.RuleFamily(
        "t", declared, lambda t: {**ok.evaluate(t), "c": np.ones(2, bool)}
    )
    with pytest.raises(rules.RuleMismatchError, match="'c' has a mask but no declared rule"):
        undeclared(table)
    missing = rules.RuleFamily("t", declared, lambda t: {"b": np.ones(2, bool)})
    with pytest.raises(rules.RuleMismatchError, match="'a' is declared but has no mask"):
        missing(table)
    with pytest.raises(rules.RuleMismatchError, match="'a' has a mask but the table lacks"):
        ok(pa.table({"y": [1, 2]}))
    short = rules.RuleFamily(
        "t", declared, lambda t: {"a": np.zeros(1, bool), "b": np.ones(2, bool)}
    )
    with pytest.raises(rules.RuleMismatchError, match="'a' mask has 1 entries for 2 rows"):
        short(table)


def test_parse_failures_must_be_declared():
    assert all(rules.parse_failure(code) == code for code in rules.PARSE_CODES)
    with pytest.raises(rules.RuleMismatchError, match="'truncated' is not declared"):
        rules.parse_failure("truncated")
