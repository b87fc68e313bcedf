"""Is a text informative enough that sharing it means sharing content? (Dagster-free)

Real conversations are full of generic turns ("Yes, go on.", "But why not?", "Those are good
ideas!", "How do I do it?") that many unrelated conversations share verbatim. A match on such a
turn says nothing about contamination. From the labelled real HH turns in
``bench/labels/turn.jsonl`` (see ``docs/dedup.md``), a turn is **informative** when it has

* at least ``min_words`` words (7), or
* at least ``min_words_with_rare`` words (4) of which at least one is *rare*: not among the
  ~3,000 most frequent English words (``curation/match/data/common_en_words.txt``: Zipf frequency
  > 4.5 in ``wordfreq``, written by ``bench/common_words.py``). Names, places, drugs and
  typos are rare; "yes", "thanks", "ideas", "more" are not.

Openings (first human turns) use ``min_words = 5`` and ``min_words_with_rare = 1``: "What is
rohypnol?" and "How can I control my husband?" are informative, "Hey" and "Hello, how are
you?" are not.

Rarity is looked up on the xxh3-64 word hashes of :func:`curation.match.near_dup.tokenize`, so the
check is one hash-set lookup per word (polars ``is_in``) and a prefix sum.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import polars as pl
import xxhash

from curation.match.near_dup import Words

__all__ = ["common_words", "informative", "rare_word_counts"]


@cache
def common_words() -> frozenset[str]:
    """The common English words (normalized spelling), from the bundled list."""
    text = resources.files("curation.match").joinpath("data/common_en_words.txt").read_text()
    return frozenset(w for w in text.splitlines() if w and not w.startswith("#"))


@cache
def _common_hashes(seed: int) -> np.ndarray:
    return np.sort(
        np.fromiter((xxhash.xxh3_64_intdigest(w.encode(), seed) for w in common_words()), np.uint64)
    )


#: Words per slice of :func:`rare_word_counts`: one slice is a 32-MB copy of its hashes at a time.
RARE_CHUNK_WORDS = 1 << 22


def rare_word_counts(words: Words, ids: np.ndarray, seed: int) -> np.ndarray:
    """Number of rare (not common) words of each text ``ids[i]`` of ``words``.

    The words are looked up a slice of :data:`RARE_CHUNK_WORDS` at a time: per slice, the
    positions of its rare words and, per text, how many of them fall inside it.
    """
    ids = np.asarray(ids, np.int64)
    counts = np.zeros(len(ids), np.int64)
    if len(ids) == 0 or len(words.hashes) == 0:
        return counts
    common = pl.Series(_common_hashes(seed), dtype=pl.UInt64).implode()
    starts, ends = words.offsets[ids], words.offsets[ids + 1]
    for a in range(0, len(words.hashes), RARE_CHUNK_WORDS):
        chunk = pl.Series(words.hashes[a : a + RARE_CHUNK_WORDS], dtype=pl.UInt64)
        positions = np.flatnonzero((~chunk.is_in(common)).to_numpy()) + a  # a hash set
        counts += np.searchsorted(positions, ends) - np.searchsorted(positions, starts)
    return counts


def informative(
    counts: np.ndarray,
    rare: np.ndarray,
    *,
    min_words: int = 7,
    min_words_with_rare: int = 4,
) -> np.ndarray:
    """Boolean mask over texts with ``counts`` words of which ``rare`` are rare
    (:func:`rare_word_counts`): is each text informative (see the module docstring)?"""
    return (counts >= min_words) | ((counts >= min_words_with_rare) & (rare >= 1))
