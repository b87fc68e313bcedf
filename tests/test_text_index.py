"""curation.match.text_index.DistinctTexts: batch by batch (word hashes parked in a temporary file) gives
the same words as tokenizing the distinct texts at once, on real HH-RLHF conversations."""

from __future__ import annotations

import gzip
import json
import os
import platform
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curation.core.textnorm import normalize_array
from curation.match.near_dup import compact_keys, tokenize
from curation.match.text_index import DistinctTexts, distinct_texts

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data/hh-rlhf/harmless-base/test.jsonl.gz"
SEED = 7


def real_texts(n_rows: int = 300) -> pa.LargeStringArray:
    """Normalized chosen and rejected conversations of the bundled real rows, with repeats across
    batches (every 10th text again at the end) and an empty text."""
    with gzip.open(SAMPLE, "rt") as handle:
        rows = [json.loads(line) for _, line in zip(range(n_rows), handle, strict=False)]
    texts = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    texts = texts + texts[::10] + [""]
    return normalize_array(pa.array(texts, pa.large_string()))


def add_in_batches(index: DistinctTexts, texts: pa.Array, batch: int):
    his, los = [], []
    for start in range(0, len(texts), batch):
        part = texts.slice(start, batch)
        hi, lo = index.add(part, np.arange(start, start + len(part), dtype=np.int64))
        his.append(hi)
        los.append(lo)
    return np.concatenate(his), np.concatenate(los)


@pytest.mark.parametrize("batch", [1, 37, 256, 10_000])
def test_batches_give_the_words_of_the_distinct_texts_at_once(batch: int) -> None:
    texts = real_texts()
    index = DistinctTexts(SEED)
    hi, lo = add_in_batches(index, texts, batch)
    tid, _first, words = index.words(hi, lo, lambda locators: texts.take(pa.array(locators)))

    expected_tid, expected_first = distinct_texts(hi, lo)
    np.testing.assert_array_equal(tid, expected_tid)
    distinct = texts.take(pa.array(expected_first))
    expected = tokenize(distinct, SEED)
    np.testing.assert_array_equal(words.offsets, expected.offsets)
    np.testing.assert_array_equal(words.hashes, expected.hashes)
    np.testing.assert_array_equal(words.compact, compact_keys(distinct, SEED))
    ends = pa.array([0, len(words) - 1])
    assert words.texts.take(ends).equals(distinct.take(ends))
    assert len(words) < len(texts)  # the repeats were folded


@pytest.mark.skipif(platform.system() != "Linux", reason="counts /proc/self/fd")
def test_the_temporary_file_is_closed_by_words() -> None:
    texts = real_texts(50)
    before = len(os.listdir("/proc/self/fd"))
    index = DistinctTexts(SEED)
    hi, lo = add_in_batches(index, texts, 16)
    assert len(os.listdir("/proc/self/fd")) == before + 1
    index.words(hi, lo, lambda locators: texts.take(pa.array(locators)))
    assert len(os.listdir("/proc/self/fd")) == before


def test_without_tokenizing_no_file_and_no_words() -> None:
    texts = real_texts(20)
    before = len(os.listdir("/proc/self/fd")) if platform.system() == "Linux" else 0
    index = DistinctTexts(SEED, tokenize=False)
    hi, lo = add_in_batches(index, texts, 8)
    if platform.system() == "Linux":
        assert len(os.listdir("/proc/self/fd")) == before
    np.testing.assert_array_equal(hi, DistinctTexts(SEED).add(texts, np.arange(len(texts)))[0])
    assert len(np.unique(np.stack([hi, lo]), axis=1)[0]) < len(texts)
