"""Near-duplicate detection over normalized texts: candidates by MinHash LSH and blocking,
verdicts by word-level alignment.

**What a near-duplicate is** (derived from the labelled real rows, ``docs/dedup.md``): the same
text up to formatting, typos, and small edits in long texts. :func:`edit_verdict` aligns the two
word sequences (word-level Levenshtein, ``rapidfuzz``) and accepts

* ``format``: equal once spaces are removed;
* ``typo``: every differing word is a one-character edit of its partner (:func:`is_typo`), at
  most ``max(1, L // typo_words)`` of them, at any length;
* ``edit``: in texts of at least ``long_min_words`` words, substituted, inserted or deleted
  words up to ``max_edit_fraction`` of the longer text.

A swapped word in a short prompt therefore makes a *different* prompt ("home address for Jim
Jordan" vs "... Pete Sessions", "Go on" vs "Yes, go on"), which is what real templated prompts
need.

**Candidates** (only these pairs are aligned; recall of the verdict depends on them):

* banded MinHash LSH on word ``shingle_words``-grams (Broder 1997; Leskovec, Rajaraman &
  Ullman, *Mining of Massive Datasets* ch. 3.4): ``b`` bands of ``r = num_perm // b`` rows, the
  cheapest banding whose S-curve ``1 - (1 - t^r)^b`` reaches ``lsh_min_recall`` at ``t =
  threshold``; it finds long texts with small edits;
* pigeonhole blocking of equal-length texts (``substitution_min_words`` to
  ``substitution_max_words`` words): cut into ``k + 2`` segments with ``k =
  max_word_substitutions``, two texts differing in at most ``k`` word positions share two
  identical segments (the block-permutation trick of Manku, Jain & Das Sarma 2007); it finds
  every text with up to ``k`` typos, which no set similarity sees in a short text;
* texts equal once spaces are removed (a polars hash join).

Everything before the verdict is columnar: words are hashed with xxh3-64 once per distinct word
(Arrow dictionary encoding), shingles are folded from word hashes in numpy, signatures are
computed by ``rensa`` (Rust) and candidate buckets are polars group-bys and self-joins. There is
no pairwise O(n^2) step: a bucket with more than ``max_bucket_size`` members is linked as a star
around its smallest member plus a chain. The verdict is one ``rapidfuzz`` alignment per
candidate pair.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Annotated

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import rensa
import xxhash
from annotated_types import Ge, Interval
from rapidfuzz.distance import OSA, Levenshtein

from curation.core.bounds import InvalidConfig, field_problems, widen_ints
from curation.core.textnorm import halves, parallel_map

__all__ = [
    "Laps",
    "LazyTexts",
    "NearDupParams",
    "Sketches",
    "Words",
    "compact_keys",
    "connected_components",
    "edit_verdict",
    "is_typo",
    "lsh_bands",
    "mix64",
    "near_duplicate_pairs",
    "ngram_hashes",
    "tokenize",
    "verify_pairs",
    "verify_texts",
]

log = logging.getLogger("curation.match.dedup")

_U64 = np.uint64


class Laps:
    """Log the wall time of consecutive processing stages at DEBUG level (``curation.match.dedup``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.last = time.perf_counter()
        self.last_cpu = time.process_time()

    def __call__(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        log.debug(
            "%s %s: %.3fs (cpu %.3fs)", self.prefix, name, now - self.last, cpu - self.last_cpu
        )
        self.last, self.last_cpu = now, cpu


_M1 = _U64(0x9E3779B97F4A7C15)
_P2 = _U64(0xC2B2AE3D27D4EB4F)
_P3 = _U64(0x165667B19E3779F9)


def mix64(x: np.ndarray) -> np.ndarray:
    """xxh64's avalanche step on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> _U64(33))
    x = x * _P2
    x = x ^ (x >> _U64(29))
    x = x * _P3
    return x ^ (x >> _U64(32))


@dataclass(frozen=True)
class NearDupParams:
    """Parameters of :func:`near_duplicate_pairs` (see the module docstring for the rules).

    Candidate search: ``num_perm``, ``threshold``, ``shingle_words``, ``lsh_min_recall`` (MinHash
    LSH), ``max_word_substitutions`` / ``substitution_min_words`` / ``substitution_max_words``
    (pigeonhole blocking of equal-length texts), ``max_bucket_size``, ``seed``.

    Verification (what *is* a near-duplicate; derived from the labelled real rows, see
    ``docs/dedup.md``): ``long_min_words``, ``max_edit_fraction``, ``typo_words``,
    ``typo_min_chars``.

    Every field declares its valid range (:mod:`curation.core.bounds`), checked when a config is
    built (:class:`~curation.core.bounds.InvalidConfig` lists every bad value). Where it is not
    obvious: ``threshold`` and ``lsh_min_recall`` are a Jaccard similarity and a probability;
    a ``threshold`` of 0 would make every pair of texts a candidate. ``max_edit_fraction``
    stays below 1 (at 1 any two long texts of similar length would be "near-duplicates").
    ``typo_words`` divides the text length. ``max_bucket_size`` >= 2: a bucket has at least two
    members, so 2 already links every bucket as a star plus a chain. ``seed`` seeds ``rensa``'s
    MinHash, an unsigned 64-bit integer. ``substitution_max_words`` is at least
    ``substitution_min_words`` (``max_word_substitutions: 0`` turns the rule off).
    """

    num_perm: Annotated[int, Ge(1)] = 128
    threshold: Annotated[float, Interval(gt=0, le=1)] = 0.8
    shingle_words: Annotated[int, Ge(1)] = 2
    lsh_min_recall: Annotated[float, Interval(ge=0, le=1)] = 0.9
    max_word_substitutions: Annotated[int, Ge(0)] = 3
    substitution_min_words: Annotated[int, Ge(1)] = 2
    substitution_max_words: Annotated[int, Ge(1)] = 128
    long_min_words: Annotated[int, Ge(1)] = 30
    max_edit_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.1
    typo_words: Annotated[int, Ge(1)] = 8
    typo_min_chars: Annotated[int, Ge(1)] = 4
    max_bucket_size: Annotated[int, Ge(2)] = 256
    seed: Annotated[int, Interval(ge=0, le=2**64 - 1)] = 42

    def near_params(self) -> NearDupParams:
        """Just the near-duplicate parameters (configs that extend this class carry more)."""
        return NearDupParams(**{f.name: getattr(self, f.name) for f in fields(NearDupParams)})

    def __post_init__(self) -> None:
        """Refuse values of the wrong type or outside their declared range, all at once."""
        problems = field_problems(self)
        words = ("substitution_min_words", "substitution_max_words")
        if (
            not problems.keys() & words
            and self.substitution_max_words < self.substitution_min_words
        ):
            problems["substitution_max_words"] = (
                f"substitution_max_words: {self.substitution_max_words} is out of range: must be "
                f">= substitution_min_words ({self.substitution_min_words})"
            )
        if problems:
            raise InvalidConfig(list(problems.values()))
        widen_ints(self)

    @cached_property
    def bands(self) -> tuple[int, int]:
        """``(b, r)``: LSH bands and rows per band, see :func:`lsh_bands`."""
        return lsh_bands(self.threshold, self.num_perm, self.lsh_min_recall)

    def describe(self) -> str:
        """A short method label of the whole rule (candidates and verification)."""
        b, r = self.bands
        return (
            f"near-dup: typo<=1/{self.typo_words}w (<{self.long_min_words}w), "
            f"word-edits<={self.max_edit_fraction:.0%} (>={self.long_min_words}w); "
            f"candidates minhash-lsh word{self.shingle_words} {self.num_perm}perm b{b}r{r} "
            f"j>={self.threshold:.2f}"
        )


def lsh_bands(threshold: float, num_perm: int, min_recall: float = 0.9) -> tuple[int, int]:
    """Choose the LSH banding ``(b, r)`` with ``r = num_perm // b`` for a Jaccard threshold.

    A pair with Jaccard ``s`` becomes a candidate with probability ``1 - (1 - s^r)^b`` (MMDS
    3.4.2). Among bandings whose probability at ``s = threshold`` is at least ``min_recall``,
    return the one with the smallest false-positive area ``integral_0^threshold P(s) ds`` (the
    criterion of datasketch's ``_optimal_param``, restricted to high recall because every
    candidate is verified afterwards, so a false positive only costs a comparison). ``r`` is
    ``num_perm // b`` and ``b`` divides ``num_perm`` because that is how ``rensa.RMinHashLSH``
    slices signatures. For 128 permutations and threshold 0.8 this gives 16 bands of 8 rows:
    candidate probability 0.947 at J=0.8, 0.994 at 0.85, 0.99996 at 0.9, 0.06 at 0.5.
    """
    xs = np.linspace(0.0, threshold, 512)
    best: tuple[float, int, int] | None = None
    fallback: tuple[float, int, int] | None = None
    for b in range(1, num_perm + 1):
        if num_perm % b:
            continue  # rensa.RMinHashLSH requires num_perm divisible by the number of bands
        r = num_perm // b
        recall = 1.0 - (1.0 - threshold**r) ** b
        fp_area = float(np.mean(1.0 - (1.0 - xs**r) ** b) * threshold)
        if recall >= min_recall and (best is None or fp_area < best[0]):
            best = (fp_area, b, r)
        if fallback is None or recall > fallback[0]:
            fallback = (recall, b, r)
    chosen = best if best is not None else fallback
    assert chosen is not None
    return chosen[1], chosen[2]


# --------------------------------------------------------------------------------------------
# Words and shingles
# --------------------------------------------------------------------------------------------


def _offsets(arr: pa.Array) -> np.ndarray:
    n = len(arr)
    return np.frombuffer(arr.buffers()[1], np.int64, n + 1, arr.offset * 8)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every ``(s, l)``, vectorized."""
    lengths = lengths.astype(np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = starts.astype(np.int64) - (np.cumsum(lengths) - lengths)
    return np.repeat(shift, lengths) + np.arange(total, dtype=np.int64)


_MINV = _U64(pow(0x9E3779B97F4A7C15, -1, 2**64))
_POW = [_U64(pow(0x9E3779B97F4A7C15, t, 2**64)) for t in range(8)]


class LazyTexts:
    """Texts fetched on demand: ``take(ids)`` returns the ``large_string`` texts ``ids`` from
    ``fetch`` (e.g. re-read from a stage table), so that only candidate pairs' texts are ever in
    memory. Stands in for the Arrow array of :attr:`Words.texts`."""

    def __init__(self, n: int, fetch: Callable[[np.ndarray], pa.Array]) -> None:
        self.n, self.fetch = n, fetch

    def __len__(self) -> int:
        return self.n

    def take(self, indices: pa.Array | np.ndarray) -> pa.Array:
        """The texts ``indices`` (in that order)."""
        ids = indices.to_numpy() if isinstance(indices, pa.Array) else np.asarray(indices)
        return self.fetch(ids.astype(np.int64))


def compact_keys(texts: pa.Array, seed: int) -> np.ndarray:
    """Hash of each text with its spaces removed (the key of spacing-level near-duplicates)."""
    compact = pl.Series(texts).str.replace_all(" ", "", literal=True)
    return compact.hash(seed=seed).to_numpy().astype(_U64)


#: Texts per slice when n-gram or segment hashes are computed from local prefix sums (bounds
#: the prefix arrays to the slice instead of the whole word array).
SPAN_CHUNK = 50_000


@dataclass
class Words:
    """Word hashes of a batch of normalized texts: text ``i`` has words
    ``hashes[offsets[i]:offsets[i+1]]`` (xxh3-64 of the UTF-8 word)."""

    hashes: np.ndarray
    offsets: np.ndarray
    #: the normalized texts the words were cut from, used to verify candidate pairs character
    #: by character: an Arrow array (kept by reference) or :class:`LazyTexts`
    texts: pa.Array | LazyTexts | None = None
    #: :func:`compact_keys` of every text when computed ahead (with ``compact_seed``); else they
    #: are computed from ``texts`` when needed
    compact: np.ndarray | None = None
    compact_seed: int | None = None

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def subset(self, ids: np.ndarray) -> Words:
        """The words of texts ``ids`` only (text ``j`` of the result is ``ids[j]``; no texts)."""
        ids = np.asarray(ids, np.int64)
        starts = self.offsets[ids]
        counts = self.offsets[ids + 1] - starts
        local = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Words(self.hashes[_ranges(starts, counts)], local)

    def compact_keys(self, ids: np.ndarray, seed: int) -> np.ndarray:
        """:func:`compact_keys` of texts ``ids``."""
        if self.compact is not None and self.compact_seed == seed:
            return self.compact[ids]
        if self.texts is None:
            raise ValueError("compact keys need the texts")
        return compact_keys(self.texts.take(pa.array(ids, pa.int64())), seed)

    @cached_property
    def _prefix(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.hashes)
        powers = np.full(max(n, 1), _M1, _U64)
        powers[0] = 1
        np.cumprod(powers, out=powers)  # M^i mod 2^64 (uint64 arithmetic wraps)
        inverse = np.full(n + 1, _MINV, _U64)  # n + 1: an empty span may start at the end
        inverse[0] = 1
        np.cumprod(inverse, out=inverse)
        prefix = np.zeros(n + 1, _U64)
        np.cumsum(self.hashes * powers[:n], out=prefix[1:])
        return prefix, inverse

    def span_hash(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Polynomial hash ``sum_t w[s+t] * M^t (mod 2^64)`` of the word spans ``[s, e)`` (global
        word positions, ``s < e``), in O(1) per span from prefix sums."""
        prefix, inverse = self._prefix
        return (prefix[ends] - prefix[starts]) * inverse[starts]


def tokenize(normalized: pa.Array, seed: int = 0) -> Words:
    """Split normalized texts on single spaces and hash each word with xxh3-64.

    Each distinct word is hashed once: the words are exposed as a zero-copy Arrow array over the
    text buffer and dictionary-encoded, then the dictionary is hashed with ``xxhash``. Large
    inputs are split in two halves tokenized on two threads (Arrow and numpy release the GIL).
    """
    arr = normalized
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    parts = parallel_map(lambda a: _tokenize(a, seed), halves(arr))
    if len(parts) == 1:
        return Words(parts[0].hashes, parts[0].offsets, arr)
    return Words(
        np.concatenate([parts[0].hashes, parts[1].hashes]),
        np.concatenate([parts[0].offsets, parts[1].offsets[1:] + len(parts[0].hashes)]),
        arr,
    )


def _tokenize(arr: pa.LargeStringArray, seed: int) -> Words:
    n = len(arr)
    offs = _offsets(arr) if n else np.zeros(1, np.int64)
    lo, hi = int(offs[0]), int(offs[-1])
    data = arr.buffers()[2] if n else None
    buf = np.frombuffer(data, np.uint8)[lo:hi] if data is not None and hi > lo else None
    if buf is None:
        return Words(np.zeros(0, _U64), np.zeros(n + 1, np.int64))
    rel = offs - lo
    nonempty = rel[1:] > rel[:-1]
    is_start = np.zeros(hi - lo + 1, bool)
    is_start[np.flatnonzero(buf == 32) + 1] = True
    is_start[rel[:-1][nonempty]] = True
    is_start[-1] = False
    starts = np.flatnonzero(is_start)
    word_offsets = np.append(starts, hi - lo) + lo
    words = pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(word_offsets), data)
    encoded = pc.dictionary_encode(words)
    dictionary = encoded.dictionary
    d_offs = _offsets(dictionary)
    d_buf = memoryview(dictionary.buffers()[2])
    xxh = xxhash.xxh3_64_intdigest
    vocab = np.fromiter(
        (
            xxh(d_buf[a : b - 1] if d_buf[b - 1] == 32 else d_buf[a:b], seed)
            for a, b in zip(d_offs[:-1].tolist(), d_offs[1:].tolist(), strict=True)
        ),
        _U64,
        len(dictionary),
    )
    hashes = vocab[encoded.indices.to_numpy()]
    text_offsets = np.searchsorted(starts, rel, side="left").astype(np.int64)
    return Words(hashes, text_offsets)


def ngram_hashes(words: Words, n: int, ids: np.ndarray | None = None, *, short: bool = True):
    """Hashes of the word ``n``-grams of texts ``ids`` (default: all).

    Returns ``(hashes, offsets)`` with the n-grams of ``ids[j]`` in
    ``hashes[offsets[j]:offsets[j+1]]``. An n-gram hash is the polynomial combination
    ``sum_t w[t] * M^t mod 2^64`` of its xxh3-64 word hashes (:meth:`Words.span_hash`): two
    different n-grams collide with probability ~2^-64, which is all that equality joins and
    ``rensa`` (which applies its own permutations) need. A text with ``0 < L < n`` words yields
    one shingle made of all its words when ``short`` is true (none otherwise); an empty text
    yields none.
    """
    if ids is not None:  # slices of the texts, each with its own (small) prefix sums
        ids = np.asarray(ids, np.int64)
        parts = [
            ngram_hashes(words.subset(chunk), n, short=short)
            for chunk in np.array_split(ids, max(1, -(-len(ids) // SPAN_CHUNK)))
        ]
        if len(parts) == 1:
            return parts[0]
        base = np.cumsum([0] + [len(h) for h, _ in parts[:-1]])
        offsets = np.concatenate(
            [[0]] + [o[1:] + b for (_, o), b in zip(parts, base.tolist(), strict=True)]
        )
        return np.concatenate([h for h, _ in parts]), offsets.astype(np.int64)
    starts = words.offsets[:-1]
    counts = words.counts
    total = len(words.hashes)
    is_short = (counts > 0) & (counts < n) if short else np.zeros(len(counts), bool)
    n_full = np.where(counts >= n, counts - n + 1, 0)
    out_offsets = np.concatenate([[0], np.cumsum(n_full + is_short)]).astype(np.int64)
    if total >= n and n_full.any():
        m = total - n + 1
        # n-gram hash at every position (slices, no gathers), then drop those crossing a text end
        if n <= 4:
            w = words.hashes
            full = w[n - 1 : n - 1 + m] * _POW[n - 1]
            for t in range(n - 1):
                full += w[t : t + m] * _POW[t] if t else w[:m]
        else:
            prefix, inverse = words._prefix
            full = (prefix[n:] - prefix[:m]) * inverse[:m]
        tail = np.minimum(counts, n - 1)
        cut = _ranges(starts + counts - tail, tail)
        valid = np.ones(m, bool)
        valid[cut[cut < m]] = False
        full = full[valid]
    else:
        full = np.zeros(0, _U64)
    if not is_short.any():
        return full, out_offsets
    out = np.empty(int(out_offsets[-1]), _U64)
    out[_ranges(out_offsets[:-1], n_full)] = full
    s0 = starts[is_short]
    out[out_offsets[:-1][is_short]] = words.span_hash(s0, s0 + counts[is_short])
    return out, out_offsets


# --------------------------------------------------------------------------------------------
# MinHash signatures (rensa)
# --------------------------------------------------------------------------------------------


#: Probe texts per LSH query slice (bounds the signature matrix: 100k x 128 x 4 B = 51 MB).
QUERY_CHUNK = 100_000


class Sketches:
    """MinHash signatures of a batch of texts, computed by ``rensa`` and materialized lazily."""

    def __init__(self, words: Words, params: NearDupParams) -> None:
        self.params = params
        self.words = words
        self.n = len(words)
        self._sig = np.zeros((0, params.num_perm), np.uint32)
        self._row = np.full(self.n, -1, np.int64)

    @property
    def nonempty(self) -> np.ndarray:
        """Texts with at least one shingle (every text with a word: short texts have one)."""
        return self.words.counts > 0

    def _matrix(self, ids: np.ndarray):
        # shingles of these texts only, folded from their word hashes when needed (never the
        # shingles of every text at once)
        toks, offs = ngram_hashes(self.words, self.params.shingle_words, ids)
        toks, offs = np.ascontiguousarray(toks), offs.astype(_U64)
        return rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            toks, offs, self.params.num_perm, self.params.seed
        )

    def flagged(self, ids: np.ndarray, against: np.ndarray | None = None) -> np.ndarray:
        """The subset of ``ids`` sharing at least one LSH band with another text of ``ids``, or,
        when ``against`` is given, with a text of ``against`` (``rensa``, Rust)."""
        ids = np.asarray(ids, np.int64)
        b, _ = self.params.bands
        lsh = rensa.RMinHashLSH(self.params.threshold, self.params.num_perm, b)
        if against is None:
            if len(ids) < 2:
                return ids[:0]
            flags = lsh.query_duplicate_flags_matrix_one_shot(self._matrix(ids))
        else:
            against = np.asarray(against, np.int64)
            if len(ids) == 0 or len(against) == 0:
                return ids[:0]
            # query_duplicate_flags_matrix flags a row with more than one candidate key; with
            # every reference inserted twice (two key ranges) that is exactly "shares a band
            # with some reference", and probe-probe collisions are not counted.
            refs = self._matrix(against)
            lsh.insert_matrix(refs, 0)
            lsh.insert_matrix(refs, len(against))
            del refs
            # the probes are queried in slices: the same flags, without one signature matrix
            # (and one gathered token array) for all of them at once
            flags = np.concatenate(
                [
                    np.asarray(lsh.query_duplicate_flags_matrix(self._matrix(chunk)), bool)
                    for chunk in np.array_split(ids, max(1, len(ids) // QUERY_CHUNK))
                ]
            )
        return ids[np.asarray(flags, bool)]

    def signatures(self, ids: np.ndarray) -> np.ndarray:
        """``(len(ids), num_perm)`` uint32 signatures (rows of empty texts are all zero)."""
        ids = np.asarray(ids, np.int64)
        missing = np.unique(ids[self._row[ids] < 0])
        missing = missing[self.nonempty[missing]]
        if len(missing):
            rows = self._matrix(missing).to_rows()
            new = np.array(rows, np.uint32).reshape(len(missing), self.params.num_perm)
            self._row[missing] = np.arange(len(self._sig), len(self._sig) + len(missing))
            self._sig = np.concatenate([self._sig, new])
        out = np.zeros((len(ids), self.params.num_perm), np.uint32)
        have = self._row[ids] >= 0
        out[have] = self._sig[self._row[ids[have]]]
        return out

    def jaccard(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Estimated Jaccard similarity of texts ``a[i]`` and ``b[i]`` (1.0 when ``a == b``)."""
        a = np.asarray(a, np.int64)
        b = np.asarray(b, np.int64)
        out = np.ones(len(a), np.float64)
        diff = a != b
        if diff.any():
            self.signatures(np.concatenate([a[diff], b[diff]]))
            out_d = np.empty(int(diff.sum()))
            ad, bd = a[diff], b[diff]
            step = max(1, 2_000_000 // self.params.num_perm)
            for i in range(0, len(ad), step):
                sa = self.signatures(ad[i : i + step])
                sb = self.signatures(bd[i : i + step])
                out_d[i : i + step] = (sa == sb).mean(axis=1)
            empty = ~(self.nonempty[ad] & self.nonempty[bd])
            out_d[empty] = 0.0
            out[diff] = out_d
        return out


# --------------------------------------------------------------------------------------------
# Candidate generation
# --------------------------------------------------------------------------------------------


def _bucket_pairs(
    keys: np.ndarray, ids: np.ndarray, cap: int, ref_keys: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``a < b`` of ids sharing a key; buckets above ``cap`` become star + chain.

    With ``ref_keys``, only keys that also occur in ``ref_keys`` are considered.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if len(keys) < 2:
        return empty
    ids = np.asarray(ids, np.int64)
    if ref_keys is not None:  # only keys that some reference has can pair across sides
        hit = pl.Series(keys, dtype=pl.UInt64).is_in(pl.Series(ref_keys, dtype=pl.UInt64))
        keys, ids = keys[hit.to_numpy()], ids[hit.to_numpy()]
    ks = pl.Series("k", keys, pl.UInt64)
    df = pl.DataFrame({"k": ks, "id": ids}).filter(ks.is_duplicated()).unique()
    if df.height < 2:
        return empty
    df = df.with_columns(size=pl.len().over("k")).filter(pl.col("size") > 1)
    small = df.filter(pl.col("size") <= cap).select("k", "id")
    parts = [pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64})]
    if small.height:
        parts.append(
            small.join(small, on="k", suffix="_b")
            .filter(pl.col("id") < pl.col("id_b"))
            .select(a="id", b="id_b")
        )
    large = df.filter(pl.col("size") > cap).select("k", "id").sort("k", "id")
    if large.height:
        large = large.with_columns(
            first=pl.col("id").min().over("k"), prev=pl.col("id").shift(1).over("k")
        )
        parts.append(large.filter(pl.col("id") != pl.col("first")).select(a="first", b="id"))
        parts.append(
            large.filter(pl.col("prev").is_not_null()).select(
                a=pl.col("prev").cast(pl.Int64), b="id"
            )
        )
    out = pl.concat(parts).unique()
    return out["a"].to_numpy(), out["b"].to_numpy()


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> list[np.ndarray]:
    keys = []
    for band in range(bands):
        acc = np.full(len(sig), _U64(band + 1), _U64)
        for col in range(band * rows, (band + 1) * rows):
            acc *= _M1
            acc += sig[:, col]
        keys.append(mix64(acc))
    return keys


def _lsh_candidates(
    sk: Sketches, ids: np.ndarray, refs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """LSH candidate pairs among ``ids`` (or between ``ids`` and ``refs``)."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    b, r = sk.params.bands
    if refs is None:
        flagged = sk.flagged(ids)
        if len(flagged) < 2:
            return empty
        keys = _band_keys(sk.signatures(flagged).astype(_U64), b, r)
        return _bucket_pairs(np.concatenate(keys), np.tile(flagged, b), sk.params.max_bucket_size)
    flagged = sk.flagged(ids, against=refs)
    if len(flagged) == 0:
        return empty
    refs = sk.flagged(refs, against=flagged)
    ref_keys = np.concatenate(_band_keys(sk.signatures(refs).astype(_U64), b, r))
    probe_keys = np.concatenate(_band_keys(sk.signatures(flagged).astype(_U64), b, r))
    return _bucket_pairs(
        np.concatenate([probe_keys, ref_keys]),
        np.concatenate([np.tile(flagged, b), np.tile(refs, b)]),
        sk.params.max_bucket_size,
        ref_keys=ref_keys,
    )


def _blocking_k(lengths: np.ndarray, params: NearDupParams) -> np.ndarray:
    """Differing word positions the blocking must tolerate for texts of ``lengths`` words: the
    typos :func:`edit_verdict` accepts (``max(1, L // typo_words)``), capped by
    ``max_word_substitutions`` (long texts with more edits are left to LSH)."""
    return np.minimum(np.maximum(1, lengths // params.typo_words), params.max_word_substitutions)


def _segment_hashes(words: Words, ids: np.ndarray, segs: int) -> np.ndarray:
    """``(len(ids), segs)`` hashes of the ``segs`` segments of each text ``ids[i]``: segment
    ``j`` of a text of ``L`` words covers words ``[ceil(j*L/segs), ceil((j+1)*L/segs))``.
    Computed per slice of texts from the slice's own prefix sums."""
    out = np.empty((len(ids), segs), _U64)
    for start in range(0, len(ids), SPAN_CHUNK):
        sub = words.subset(ids[start : start + SPAN_CHUNK])
        starts, lengths = sub.offsets[:-1], sub.counts
        bounds = starts[:, None] + (-((-np.arange(segs + 1)[None, :] * lengths[:, None]) // segs))
        out[start : start + len(starts)] = sub.span_hash(
            bounds[:, :-1].ravel(), bounds[:, 1:].ravel()
        ).reshape(-1, segs)
    return out


def _substitution_keys(words: Words, ids: np.ndarray, params: NearDupParams):
    """Pigeonhole blocking keys of the eligible texts among ``ids``: ``(keys, owners)``.

    A text of ``L`` words is cut into ``k + 2`` segments with ``k = _blocking_k(L)``; every pair
    of segments (with ``L``) is a key, so texts of equal length that differ in at most ``k``
    positions share a key. Short texts need ``k = 1`` (3 keys), not the maximum (10 keys).
    """
    counts = words.counts[ids]
    ids = ids[(counts >= params.substitution_min_words) & (counts <= params.substitution_max_words)]
    if params.max_word_substitutions <= 0 or len(ids) == 0:
        return np.zeros(0, _U64), np.zeros(0, np.int64)
    all_k = _blocking_k(words.counts[ids], params)
    keys, owners = [], []
    for k in np.unique(all_k).tolist():
        group = ids[all_k == k]
        segs = k + 2
        lengths = words.counts[group]
        seg_hash = _segment_hashes(words, group, segs)
        for c, combo in enumerate(itertools.combinations(range(segs), 2)):
            acc = lengths.astype(_U64) * _P2 + _U64(c + 1)
            for j in combo:
                acc *= _M1
                acc += seg_hash[:, j]
            keys.append(mix64(acc))
            owners.append(group)
    return np.concatenate(keys), np.concatenate(owners)


def _substitution_candidates(
    words: Words, ids: np.ndarray, params: NearDupParams, refs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    keys, owners = _substitution_keys(words, ids, params)
    ref_keys = None
    if refs is not None:
        ref_keys, ref_owners = _substitution_keys(words, refs, params)
        keys = np.concatenate([keys, ref_keys])
        owners = np.concatenate([owners, ref_owners])
    return _bucket_pairs(keys, owners, params.max_bucket_size, ref_keys=ref_keys)


#: One-word English cardinals and their digits: ``fourteen`` and ``14`` are one number written
#: two ways (a formatting difference). Multi-word numbers ("twenty one") are not folded.
NUMBER_WORDS = (
    {
        word: str(value)
        for value, word in enumerate(
            [
                "zero",
                "one",
                "two",
                "three",
                "four",
                "five",
                "six",
                "seven",
                "eight",
                "nine",
                "ten",
                "eleven",
                "twelve",
                "thirteen",
                "fourteen",
                "fifteen",
                "sixteen",
                "seventeen",
                "eighteen",
                "nineteen",
            ]
        )
    }
    | {
        word: str(10 * tens)
        for tens, word in enumerate(
            ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"], 2
        )
    }
    | {"hundred": "100", "thousand": "1000", "million": "1000000"}
)


def is_typo(a: str, b: str, min_chars: int = 4) -> bool:
    """True when word ``b`` is a typo/spelling variant of word ``a``.

    Both words have at least ``min_chars`` characters and differ by one edit (insertion,
    deletion, substitution or transposition of adjacent characters: optimal string alignment
    distance, Damerau 1964), or by two when both have at least 8 characters; or one is a number
    in digits and the other the same number in words (:data:`NUMBER_WORDS`). Other short words
    and numbers must be equal: ``5`` vs ``13`` or ``cnn`` vs ``abc`` are different words.
    """
    if NUMBER_WORDS.get(a) == b or NUMBER_WORDS.get(b) == a:
        return True
    if min(len(a), len(b)) < min_chars or a.isdigit() or b.isdigit():
        return False
    return OSA.distance(a, b, score_cutoff=2) <= (2 if min(len(a), len(b)) >= 8 else 1)


def _count_edits(wa: list[str], wb: list[str], params: NearDupParams) -> tuple[int, int]:
    """``(typos, edits)`` of the word-level alignment of ``wa`` to ``wb``."""
    typos = edits = 0
    for tag, i1, i2, j1, j2 in Levenshtein.opcodes(wa, wb):
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for u, v in zip(wa[i1:i2], wb[j1:j2], strict=True):
                if is_typo(u, v, params.typo_min_chars):
                    typos += 1
                else:
                    edits += 1
        else:
            edits += max(i2 - i1, j2 - j1)
    return typos, edits


def _cost(counts: tuple[int, int]) -> tuple[int, int]:
    typos, edits = counts
    return edits, typos


def edit_verdict(a: str, b: str, params: NearDupParams) -> tuple[bool, float, str]:
    """Is normalized text ``b`` a near-duplicate of ``a``? Returns ``(ok, similarity, rule)``.

    The word sequences are aligned (word-level Levenshtein, ``rapidfuzz``); every substituted
    word that :func:`is_typo` accepts is a *typo*, every other substituted, inserted or deleted
    word an *edit*. With ``L`` the longer word count:

    * ``format``: equal once spaces are removed (``any one`` / ``anyone``);
    * ``typo``: no edits and at most ``max(1, L // typo_words)`` typos (any length);
    * ``edit``: ``L >= long_min_words`` and typos + edits ``<= max_edit_fraction * L``.

    So a short text only matches up to formatting and typos (``home address for Jim Jordan`` is
    not ``... for Pete Sessions``; ``Go on`` is not ``Yes, go on``), and word substitutions,
    insertions or deletions count only in long texts that are otherwise >= 90 % identical.
    ``similarity`` is ``1 - (typos + edits) / L``.
    """
    if a == b:
        return True, 1.0, "exact"
    if a.replace(" ", "") == b.replace(" ", ""):
        return True, 1.0, "format"
    wa, wb = a.split(), b.split()
    longest = max(len(wa), len(wb))
    if longest == 0:
        return False, 0.0, "edit"
    # an alignment can have ties (two substitutions, or an insertion plus a deletion): take the
    # better of both directions so that the verdict is symmetric
    typos, edits = min(_count_edits(wa, wb, params), _count_edits(wb, wa, params), key=_cost)
    similarity = 1.0 - (typos + edits) / longest
    if edits == 0 and typos <= max(1, longest // params.typo_words):
        return True, similarity, "typo"
    if longest >= params.long_min_words and typos + edits <= params.max_edit_fraction * longest:
        return True, similarity, "edit"
    return False, similarity, "edit"


def _possible(counts: np.ndarray, a: np.ndarray, b: np.ndarray, params: NearDupParams):
    """Pairs whose word counts allow a verdict other than ``format`` (cheap pre-filter)."""
    la, lb = counts[a], counts[b]
    longest = np.maximum(la, lb)
    long_ok = (longest >= params.long_min_words) & (
        np.abs(la - lb) <= params.max_edit_fraction * longest
    )
    return (la == lb) | long_ok


def verify_texts(
    words: Words, a: np.ndarray, b: np.ndarray, params: NearDupParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`edit_verdict` for text pairs ``(a[i], b[i])`` of ``words``.

    Returns ``(ok, similarity, rule)`` arrays. Only candidate pairs reach this (a few per text),
    so the per-pair alignment is C++ (``rapidfuzz``) under a Python loop.
    """
    if words.texts is None:
        raise ValueError("verification needs Words built by tokenize() (with their texts)")
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ok = np.zeros(len(a), bool)
    sim = np.zeros(len(a), np.float64)
    rule = np.full(len(a), "edit", object)
    if len(a) == 0:
        return ok, sim, rule
    ids = np.unique(np.concatenate([a, b]))
    strings = dict(zip(ids.tolist(), words.texts.take(pa.array(ids)).to_pylist(), strict=True))
    compact: dict[int, str] = {}
    counts = words.counts
    possible = _possible(counts, a, b, params)
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        sx, sy = strings[x] or "", strings[y] or ""
        if x == y:
            ok[i], sim[i], rule[i] = True, 1.0, "exact"
            continue
        if not possible[i]:
            cx = compact.setdefault(x, sx.replace(" ", ""))
            cy = compact.setdefault(y, sy.replace(" ", ""))
            if cx == cy and cx:
                ok[i], sim[i], rule[i] = True, 1.0, "format"
            continue
        ok[i], sim[i], rule[i] = edit_verdict(sx, sy, params)
    return ok, sim, rule


def _compact_candidates(
    words: Words, ids: np.ndarray, params: NearDupParams, refs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of texts that are equal once spaces are removed (spacing-level edits)."""
    every = ids if refs is None else np.concatenate([ids, refs])
    if len(every) < 2 or (words.texts is None and words.compact is None):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = words.compact_keys(every, params.seed)
    ref_keys = None if refs is None else keys[len(ids) :]
    return _bucket_pairs(keys, every, params.max_bucket_size, ref_keys=ref_keys)


def near_duplicate_pairs(
    words: Words,
    params: NearDupParams,
    *,
    left: np.ndarray | None = None,
    right: np.ndarray | None = None,
    sketches: Sketches | None = None,
) -> tuple[pl.DataFrame, Sketches]:
    """Verified near-duplicate pairs among the texts of ``words`` (from :func:`tokenize`).

    Returns ``(pairs, sketches)``: ``pairs`` has columns ``a < b`` (text indices), ``score``
    (word-level similarity, :func:`edit_verdict`) and ``rule`` (``format``, ``typo`` or
    ``edit``). With boolean masks ``left``/``right`` only pairs joining a left text to a right
    text are returned (bipartite matching, e.g. train prompts against test prompts). Identical
    texts are expected to have been merged by the caller (they are one text here).
    """
    lap = Laps("near_duplicate_pairs")
    sk = sketches if sketches is not None else Sketches(words, params)
    lap("shingles")
    ids = np.arange(len(words), dtype=np.int64)
    bipartite = left is not None and right is not None
    refs = None
    if bipartite:
        refs = ids[right & sk.nonempty]
        ids = ids[left & ~right & sk.nonempty]
    else:
        ids = ids[sk.nonempty]
    la, lb = _lsh_candidates(sk, ids, refs)
    lap("lsh candidates")
    sa, sb = _substitution_candidates(words, ids, params, refs)
    lap("substitution candidates")
    ca, cb = _compact_candidates(words, ids, params, refs)
    lap("spacing candidates")
    cand = pl.DataFrame(
        {"a": np.concatenate([la, sa, ca]), "b": np.concatenate([lb, sb, cb])},
        schema={"a": pl.Int64, "b": pl.Int64},
    )
    cand = cand.unique().sort("a", "b")
    if bipartite:
        a, b = cand["a"].to_numpy(), cand["b"].to_numpy()
        keep = (left[a] & right[b]) | (right[a] & left[b])
        cand = cand.filter(pl.Series(keep))
    a, b = cand["a"].to_numpy(), cand["b"].to_numpy()
    ok, score, rule = verify_texts(words, a, b, params)
    lap(f"verify {len(a)} candidates")
    out = pl.DataFrame(
        {"a": a[ok], "b": b[ok], "score": score[ok], "rule": rule[ok].astype(str)},
        schema={"a": pl.Int64, "b": pl.Int64, "score": pl.Float64, "rule": pl.String},
    )
    return out, sk


def verify_pairs(
    words: Words,
    params: NearDupParams,
    a: np.ndarray,
    b: np.ndarray,
    sketches: Sketches | None = None,
) -> tuple[np.ndarray, np.ndarray, Sketches]:
    """Check given text pairs against the near-duplicate rule (no candidate search).

    Returns ``(is_near_duplicate, estimated_jaccard, sketches)``; identical indices count as
    near-duplicates with score 1.0.
    """
    sk = sketches if sketches is not None else Sketches(words, params)
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ok, _, _ = verify_texts(words, a, b, params)
    return ok, sk.jaccard(a, b), sk


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union-find over edges ``(a[i], b[i])`` of nodes ``0..n-1``, vectorized (hook + pointer
    jumping). Returns for every node the smallest node index of its component."""
    labels = np.arange(n, dtype=np.int64)
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    if len(a) == 0:
        return labels
    while True:
        la, lb = labels[a], labels[b]
        if np.array_equal(la, lb):
            return labels
        low = np.minimum(la, lb)
        np.minimum.at(labels, la, low)
        np.minimum.at(labels, lb, low)
        while True:
            nxt = labels[labels]
            if np.array_equal(nxt, labels):
                break
            labels = nxt
