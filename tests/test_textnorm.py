"""Matching normalization: documented examples, fast path == general path, invariances."""

from __future__ import annotations

import unicodedata

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.core.textnorm import normalize_array, normalize_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello,  World!!", "hello world"),
        ("  leading and trailing\t\n", "leading and trailing"),
        ("Don't", "dont"),
        ("Don\u2019t do that", "dont do that"),
        ("\uff26\uff35\uff2c\uff2c\uff0dwidth \ufb01ne", "full width fine"),  # NFKC
        ("Stra\u00dfe \u03a3\u039f\u03a6\u039f\u03a3", "strasse \u03c3\u03bf\u03c6\u03bf\u03c3"),
        (
            "na\u00efve caf\u00e9 \U0001f600 \u0939\u093f\u0928\u094d\u0926\u0940",
            "na\u00efve caf\u00e9 \u0939\u093f\u0928\u094d\u0926\u0940",
        ),
        ("\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u4f60\u597d \u4e16\u754c"),
        ("a\u00a0b\u2003c\u200bd", "a b c d"),
        ("x\u00b2 + y_1 = **bold**", "x2 y 1 bold"),
        ("- item one\n- item two", "item one item two"),
        ("!!!", ""),
        ("", ""),
    ],
)
def test_documented_examples(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_array_api_preserves_nulls_and_accepts_any_container() -> None:
    values = ["A  b", None, "\u00c9t\u00e9!", "x,y"]
    expected = ["a b", None, "\u00e9t\u00e9", "x y"]
    assert normalize_array(pa.array(values)).to_pylist() == expected
    assert normalize_array(pa.array(values, pa.large_string())).to_pylist() == expected
    assert normalize_array(pa.chunked_array([values[:2], values[2:]])).to_pylist() == expected
    assert normalize_array(pl.Series(values)).to_pylist() == expected
    assert normalize_array(pa.array(values).slice(2)).to_pylist() == expected[2:]
    assert normalize_array(pa.array([], pa.string())).to_pylist() == []
    assert normalize_array(pa.array(values)).type == pa.large_string()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=8))
def test_scalar_matches_array(texts: list[str]) -> None:
    out = normalize_array(pa.array(texts, pa.large_string())).to_pylist()
    assert out == [normalize_text(t) for t in texts]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(max_codepoint=127), max_size=60), max_size=8))
def test_ascii_fast_path_equals_general_path(texts: list[str]) -> None:
    arr = pa.array(texts, pa.large_string())
    assert normalize_array(arr).to_pylist() == normalize_array(arr, _force_general=True).to_pylist()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_output_form_and_idempotence(text: str) -> None:
    out = normalize_text(text)
    assert out == out.strip()
    assert "  " not in out
    # "Cn": assigned after Python's Unicode database (the Rust regex crate is newer)
    assert all(
        ch == " " or unicodedata.category(ch)[0] in "LNM" or unicodedata.category(ch) == "Cn"
        for ch in out
    )
    assert normalize_text(out) == out


WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
NOISE = st.text(alphabet=' \t\n.,;:!?"()[]{}-*_/\u00a0\u2014\u201c\u201d', min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(st.lists(WORD, min_size=1, max_size=12), st.data())
def test_case_whitespace_punctuation_edits_are_invisible(words: list[str], data) -> None:
    base = " ".join(words)
    pieces = []
    for word in words:
        pieces.append(data.draw(NOISE))
        upper = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
        pieces.append("".join(c.upper() if u else c for c, u in zip(word, upper, strict=True)))
    pieces.append(data.draw(st.text(alphabet=" .!?\n", max_size=3)))
    assert normalize_text("".join(pieces)) == base


def test_stage_pairs_carry_the_normalized_prompt_once():
    import pyarrow as pa

    from curation.core.schema import PAIRS
    from curation.core.textnorm import NORMALIZED_PROMPT, normalize_array, normalized_prompts
    from curation.normalize.normalize import PAIRS_STAGE, with_pair_ids

    rows = {name: [None, None] for name in PAIRS.names}
    rows.update(
        dataset=["hh-rlhf"] * 2,
        subset=["harmless-base"] * 2,
        split=["train"] * 2,
        dimension=["harmless"] * 2,
        source_file=["f"] * 2,
        source_line=[0, 1],
        prompt=["Hello,  WORLD’s", "Ｆｕｌｌ width"],
        chosen=["a", "b"],
        rejected=["c", "d"],
    )
    staged = with_pair_ids(pa.Table.from_pydict(rows, schema=PAIRS))
    assert staged.schema == PAIRS_STAGE
    expected = normalize_array(staged["prompt"])
    assert staged[NORMALIZED_PROMPT].combine_chunks().equals(expected)
    assert normalized_prompts(staged).equals(expected)
    assert normalized_prompts(staged.drop_columns([NORMALIZED_PROMPT])).equals(expected)
