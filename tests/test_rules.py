"""Every row rule: a row that triggers it and a near-identical clean row that does not."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from curation import rules
from curation.jsonl import parse_jsonl
from curation.pku import CURRENT_FIELDS, V0_FIELDS
from curation.schema import HARM_CATEGORIES

H, A = "\n\nHuman:", "\n\nAssistant:"


def hh_row(chosen_reply="Sure, here is how.", rejected_reply="No.", context=None):
    context = context or f"{H} How do I bake bread?"
    return {"chosen": f"{context}{A} {chosen_reply}", "rejected": f"{context}{A} {rejected_reply}"}


def hh_reasons(row: dict) -> set[str]:
    table = pa.Table.from_pylist([row])
    return {code for code, mask in rules.hh_preference_masks(table).items() if mask[0]}


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
    return {code for code, mask in rules.pku_masks(parsed.table).items() if mask[0]}


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
    levels = rules.resolve_levels({"safer_has_higher_severity": "error", "sha256_mismatch": "off"})
    assert levels["safer_has_higher_severity"] == "error"
    assert levels["sha256_mismatch"] == "off"
    with pytest.raises(ValueError, match="unknown rule"):
        rules.resolve_levels({"nope": "warn"})
    with pytest.raises(ValueError, match="always an error"):
        rules.resolve_levels({"invalid_json": "warn"})


def test_reasons_by_level_splits_errors_and_warnings():
    import numpy as np

    masks = {"a_err": np.array([True, False]), "b_warn": np.array([True, True])}
    errors, warnings = rules.reasons_by_level(masks, {"a_err": "error", "b_warn": "warn"}, 2)
    assert errors.to_pylist() == [["a_err"], []]
    assert warnings.to_pylist() == [["b_warn"], ["b_warn"]]
