"""Paraphrased test prompts: the static embedding and the neighbour search (Dagster-free).

Decontamination's rules (:mod:`curation.match.decontam`) match test prompts *as text*: equal,
contained, near-identical. A train prompt that asks a test question in other words ("How do I
steal a car?" / "How can I steal a car?") passes them by design.
:func:`curation.match.decontam.paraphrase_matches` finds such candidates by meaning, with this module:

* **Embedding** (:func:`embed`, :func:`embed_texts`): the mean token vector of a normalized text
  (:mod:`curation.core.textnorm`) under ``wordllama``'s ``l2_supercat`` model, 256 dimensions, unit
  length: what ``WordLlama.embed(texts, norm=True)`` computes. The weights and the tokenizer
  ship inside the wheel (:func:`load_model` reads them without the network). Each distinct word
  is tokenized once and a text is a bag of its words, so no per-token array is built.
  Decontamination embeds its openings from the word hashes it already holds
  (:func:`embed_words`, with a :class:`Vocabulary` of their words gathered in the same pass),
  so no opening is read back from the stage table.
* **Neighbours** (:func:`nearest`): for every train text, its :data:`NEIGHBOURS` nearest
  reference texts at or above a cosine threshold, exactly; a principal-axes upper bound of the
  cosine (:func:`_bounds`) skips most pairs without losing any.
* **Words** (:func:`paraphrase_markdown`): the tables the card and the asset metadata show.

The units (informative openings) and the threshold were chosen on the labelled real rows
(``bench/labels/paraphrase.jsonl``, ``docs/dedup.md`` §6); what it costs on the benchmark corpus
is in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import xxhash
from scipy import sparse
from threadpoolctl import threadpool_limits

from curation.core.parallel import parallel_map
from curation.core.report import markdown_table
from curation.match.near_dup import Words, tokenize

__all__ = [
    "DIMS",
    "MODEL",
    "NEIGHBOURS",
    "THRESHOLD",
    "Embedded",
    "ReferenceIndex",
    "Vocabulary",
    "embed",
    "embed_texts",
    "embed_words",
    "load_model",
    "method_name",
    "nearest",
    "paraphrase_markdown",
]

#: The wordllama model (bundled in the wheel) and how many of its dimensions are used.
MODEL = "l2_supercat"
MODEL_DIMS = 256
DIMS = 256
#: Reference texts kept per train text (at or above the threshold), nearest first.
NEIGHBOURS = 3
#: The default least cosine similarity (``DecontamConfig.paraphrase_threshold``), chosen on the
#: labelled real candidates (``bench/labels/paraphrase.jsonl``, ``docs/dedup.md`` §6).
THRESHOLD = 0.85
#: Train texts per matrix product: the score block is ``QUERY_BLOCK x references`` float32.
QUERY_BLOCK = 512
#: The first stage of :func:`nearest`: principal axes of the bound, the least number of
#: references for which it runs (below it, one full product is cheap), and the float32 rounding
#: the bound is allowed.
FILTER_DIMS = 96
FILTER_MIN_REFS = 2048
BOUND_SLACK = 1e-4


@cache
def load_model(dims: int = DIMS) -> tuple[np.ndarray, Any]:
    """wordllama's embedding matrix (``vocab x dims``, float32) and tokenizer, loaded from the
    installed package once per process, without the network.

    ``WordLlama.load()`` looks for the tokenizer in the wrong folder and then downloads it;
    pointing ``cache_dir`` at the package folder, where the wheel put both files, and
    ``disable_download`` make it read them. Importing ``wordllama`` configures the root logger
    (``logging.basicConfig(level=INFO)``); the root logger is put back as it was.
    """
    import tokenizers

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
        from wordllama import WordLlama

        model = WordLlama.load(
            config=MODEL,
            dim=MODEL_DIMS,
            trunc_dim=None if dims == MODEL_DIMS else dims,
            cache_dir=Path(wordllama.__file__).parent,
            disable_download=True,
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    tokenizer = tokenizers.Tokenizer.from_str(model.tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.no_truncation()
    matrix = np.ascontiguousarray(model.embedding[:, :dims], np.float32)
    return matrix, tokenizer


def method_name(threshold: float, dims: int = DIMS) -> str:
    """The ``method`` of a paraphrase removal (the removed table)."""
    return f"wordllama {MODEL} {dims}d mean-pooled, cosine>={threshold:g}, informative openings"


def _word_vectors(words: pl.Series, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """The sum of the token vectors of each word of ``words`` (distinct words) and its token
    count. The tokenizer (SentencePiece-style BPE: a ``▁`` before every word, no token spans
    two words) cuts a text into the tokens of its words, so a text's tokens are its words'."""
    matrix, tokenizer = load_model(dims)
    encoded = tokenizer.encode_batch_fast(words.to_list(), add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encoded), np.int64, len(encoded))
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((i for e in encoded for i in e.ids), np.int64, int(offsets[-1]))
    tokens = sparse.csr_matrix(
        (np.ones(len(ids), np.float32), ids.clip(0, len(matrix) - 1), offsets),
        shape=(len(encoded), len(matrix)),
    )
    return np.asarray(tokens @ matrix, np.float32), lengths.astype(np.float32)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` scaled to length 1 (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass
class Embedded:
    """Texts as bags of distinct words: ``text_words`` (texts x words, occurrence counts) and
    ``sums`` (each word's summed token vectors). A text's embedding is the unit vector of
    ``text_words @ sums`` (its mean token vector, up to the length), computed on demand for some
    rows (:meth:`vectors`): no per-token array is ever built."""

    text_words: sparse.csr_matrix
    sums: np.ndarray

    def __len__(self) -> int:
        return self.text_words.shape[0]

    def vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Unit vectors of texts ``rows`` (all by default); a text without tokens gets the
        zero vector."""
        bag = self.text_words if rows is None else self.text_words[rows]
        return _unit_rows(np.asarray(bag @ self.sums, np.float32))


def embed_texts(texts: list[str] | pa.Array | pa.ChunkedArray, dims: int = DIMS) -> Embedded:
    """The :class:`Embedded` form of normalized texts (:mod:`curation.core.textnorm`: words
    separated by single spaces). Each distinct word is tokenized once (:func:`_word_vectors`)."""
    values = pl.Series(
        "t",
        texts.cast(pa.large_string()) if isinstance(texts, pa.Array | pa.ChunkedArray) else texts,
        pl.String,
    ).fill_null("")
    words = (
        pl.DataFrame({"w": values.str.split(" ")})
        .with_row_index("text")
        .explode("w")
        .filter(pl.col("w").is_not_null() & (pl.col("w") != ""))
    )
    distinct = words.select(pl.col("w").unique(maintain_order=True)).with_row_index("word")
    words = words.join(distinct, on="w", how="left", maintain_order="left")
    sums, _ = _word_vectors(distinct["w"], dims)
    text_words = sparse.csr_matrix(
        (
            np.ones(words.height, np.float32),
            (words["text"].to_numpy(), words["word"].to_numpy()),
        ),
        shape=(len(values), distinct.height),
    )
    return Embedded(text_words, sums)


class Vocabulary:
    """The distinct words of texts seen batch by batch (:meth:`add`), for embedding those texts
    later from their word hashes (:func:`embed_words`) instead of reading them again: on the
    benchmark corpus the openings' words are ~100 K short strings, the openings ~60 MB."""

    def __init__(self) -> None:
        self.words = pl.Series("w", [], pl.String)
        self._parts: list[pl.Series] = []
        self._pending = 0
        self._lookup: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def add(self, texts: pa.Array | pa.ChunkedArray) -> None:
        """Remember the words of normalized ``texts``."""
        values = pl.Series("t", texts.cast(pa.large_string()), pl.String)
        part = values.str.split(" ").explode().unique()
        part = part.filter(part.is_not_null() & (part != ""))
        self._parts.append(part)
        self._pending += len(part)
        if self._pending > 4 * max(len(self.words), 1 << 16):  # batches' words overlap: merge
            self._merge()

    def _merge(self) -> None:
        if self._parts:
            self.words = pl.concat([self.words, *self._parts]).unique()
            self._parts, self._pending = [], 0
            self._lookup = None

    def lookup(self, seed: int, dims: int = DIMS) -> tuple[np.ndarray, np.ndarray]:
        """``(hashes, sums)``: the words' xxh3-64 hashes as :func:`curation.match.near_dup.tokenize`
        computes them with ``seed``, sorted, and each word's summed token vectors
        (:func:`_word_vectors`) in that order. Computed once: every word is tokenized once."""
        self._merge()
        if self._lookup is None or self._lookup[0] != (seed, dims):
            hashed = tokenize(self.words.to_arrow().cast(pa.large_string()), seed).hashes
            order = np.argsort(hashed, kind="stable")
            sums, _ = _word_vectors(self.words.gather(order), dims)
            self._lookup = ((seed, dims), hashed[order], sums)
        return self._lookup[1], self._lookup[2]


#: Texts whose word hashes are looked up at a time (bounds the lookup's temporaries).
LOOKUP_CHUNK = 1 << 16


def embed_words(
    words: Words, ids: np.ndarray, vocabulary: Vocabulary, seed: int, dims: int = DIMS
) -> Embedded:
    """The :class:`Embedded` form of texts ``ids`` of ``words`` (their xxh3-64 word hashes with
    ``seed``, :func:`curation.match.near_dup.tokenize`), each word found in ``vocabulary`` by its hash:
    what :func:`embed_texts` gives for the texts themselves. Every word must be in the
    vocabulary; an empty word (two spaces in a row) counts as none, as there."""
    known, sums = vocabulary.lookup(seed, dims)
    empty = np.uint64(xxhash.xxh3_64_intdigest(b"", seed))
    ids = np.asarray(ids, np.int64)
    rows, cols = [], []
    for start in range(0, len(ids), LOOKUP_CHUNK):
        part = words.subset(ids[start : start + LOOKUP_CHUNK])
        at = np.searchsorted(known, part.hashes).clip(0, max(len(known) - 1, 0))
        found = known[at] == part.hashes if len(known) else np.zeros(len(at), bool)
        if not (found | (part.hashes == empty)).all():
            raise ValueError("embed_words: a word that is not in the vocabulary")
        owner = np.repeat(np.arange(start, start + len(part), dtype=np.int32), part.counts)
        rows.append(owner[found])
        cols.append(at[found].astype(np.int32))
    text_words = sparse.csr_matrix(
        (
            np.ones(sum(len(r) for r in rows), np.float32),
            (
                np.concatenate([np.zeros(0, np.int32), *rows]),
                np.concatenate([np.zeros(0, np.int32), *cols]),
            ),
        ),
        shape=(len(ids), len(known)),
    )
    return Embedded(text_words, sums)


def embed(texts: list[str] | pa.Array | pa.ChunkedArray, dims: int = DIMS) -> np.ndarray:
    """Unit vectors (``len(texts) x dims``, float32) of normalized texts: the mean token vector
    of each text, L2-normalized, as ``WordLlama.embed(texts, norm=True)`` computes it; a text
    without tokens gets the zero vector (similar to nothing)."""
    return embed_texts(texts, dims).vectors()


def _basis(refs: np.ndarray, dims: int) -> np.ndarray:
    """The first ``dims`` principal axes of ``refs`` (``d x dims``): the eigenvectors of their
    ``d x d`` covariance with the largest eigenvalues (an SVD of the ``n x d`` rows took a
    second and ~100 MB more for the same axes)."""
    centred = refs - refs.mean(axis=0)
    covariance = centred.T.astype(np.float64) @ centred.astype(np.float64)
    _, vectors = np.linalg.eigh(covariance)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, :dims], np.float32)


def _top_k(
    probe: np.ndarray, ref: np.ndarray, score: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best ``(probe, ref, score)`` of each probe (highest score, then lower ref),
    with their rank (1 = nearest)."""
    order = np.lexsort((ref, -score, probe))
    probe, ref, score = probe[order], ref[order], score[order]
    first = np.r_[True, probe[1:] != probe[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(probe)), 0))
    rank = np.arange(len(probe)) - start + 1
    keep = rank <= k
    return probe[keep], ref[keep], score[keep], rank[keep]


def _bounds(vectors: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``[x @ basis, |x - its projection|]`` of unit vectors ``x``: for two of them,
    ``x . y <= (x @ basis) . (y @ basis) + |x_rest| |y_rest|`` (Cauchy-Schwarz on the part
    outside the basis), so the product of two such rows bounds their cosine from above."""
    projected = vectors @ basis
    rest = np.sqrt(np.clip(1.0 - np.einsum("ij,ij->i", projected, projected), 0.0, None))
    return np.hstack([projected, rest[:, None]]).astype(np.float32)


def _at_least(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero(scores >= threshold)`` of a C-ordered block, from the flat positions (a
    2-D ``nonzero`` over every cell was most of the search; a row-maximum filter first cost
    more than this, since most rows of a block have a candidate)."""
    flat = np.flatnonzero(scores >= threshold)
    return np.divmod(flat, scores.shape[1])


class ReferenceIndex:
    """The reference texts of :func:`nearest`, prepared once: their unit vectors and, with at
    least :data:`FILTER_MIN_REFS` of them, the basis and rows of the cosine bound."""

    def __init__(self, refs: Embedded) -> None:
        with threadpool_limits(limits=1, user_api="blas"):  # see nearest()
            self.vectors = refs.vectors()
            self.basis: np.ndarray | None = None
            self.coarse = self.vectors
            if len(refs) >= FILTER_MIN_REFS:
                self.basis = _basis(self.vectors, min(FILTER_DIMS, self.vectors.shape[1]))
                self.coarse = _bounds(self.vectors, self.basis)

    def nearest(
        self,
        probes: Embedded,
        threshold: float,
        k: int = NEIGHBOURS,
        same: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:func:`nearest` against these references. The blocks of probes are spread over the
        library's thread pool with one BLAS thread each: OpenBLAS's own threads, spinning
        between the many small products, took 3.5x the wall time on a busy 2-core machine."""

        buffers = threading.local()

        def block(a: int) -> tuple[np.ndarray, ...]:
            rows = np.arange(a, min(a + QUERY_BLOCK, len(probes)))
            vectors = probes.vectors(rows)
            out = getattr(buffers, "scores", None)
            if out is None:  # one score block per thread, reused: a fresh one is page faults
                out = buffers.scores = np.empty((QUERY_BLOCK, len(self.coarse)), np.float32)
            if self.basis is None:
                scores = np.matmul(vectors, self.vectors.T, out=out[: len(rows)])
                i, j = _at_least(scores, threshold)
                score = scores[i, j]
            else:
                bound = np.matmul(_bounds(vectors, self.basis), self.coarse.T, out=out[: len(rows)])
                i, j = _at_least(bound, threshold - BOUND_SLACK)
                score = np.einsum("ij,ij->i", vectors[i], self.vectors[j])
            probe = rows[i]
            keep = score >= threshold
            if same is not None:
                keep &= ~same(probe, j)
            return probe[keep], j[keep].astype(np.int64), score[keep].astype(np.float32)

        with threadpool_limits(limits=1, user_api="blas"):
            found = parallel_map(block, range(0, len(probes), QUERY_BLOCK))
        if not found:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0, np.float32), empty
        probe, ref, score = (np.concatenate(parts) for parts in zip(*found, strict=True))
        return _top_k(probe, ref, score, k)


def nearest(
    refs: Embedded,
    probes: Embedded,
    threshold: float,
    k: int = NEIGHBOURS,
    same: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest reference texts of every probe text at cosine ``threshold`` or more,
    exactly.

    With at least :data:`FILTER_MIN_REFS` references, in two stages: an upper bound of every
    (probe, reference) cosine from the references' first :data:`FILTER_DIMS` principal axes
    (:func:`_bounds`: one matrix product of ``FILTER_DIMS + 1`` columns per block of
    :data:`QUERY_BLOCK` probes), then the full cosine of the pairs whose bound reaches
    ``threshold``. The bound never undercuts the cosine, so no pair is lost; on the benchmark
    corpus it leaves ~4 candidates per probe of ~17,000 references (``docs/benchmarks.md``).
    With fewer references, one full product per block.

    ``same(probe, ref)`` flags pairs to leave out (the same text on both sides). Returns
    ``(probe, ref, score, rank)`` arrays, rank 1 the nearest; ties go to the lower reference,
    so the result does not depend on the block size.
    """
    return ReferenceIndex(refs).nearest(probes, threshold, k, same)


# --------------------------------------------------------------------------------------------
# The report in words (the card and the asset metadata)
# --------------------------------------------------------------------------------------------

#: Characters of a text shown in an example.
EXAMPLE_CHARS = 100


def _clip(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 3] + "..."


def _top_examples(paraphrases: pa.Table, n: int) -> list[list[Any]]:
    """The ``n`` highest-scoring distinct text pairs of a report."""
    frame = pl.from_arrow(paraphrases.select(_EXAMPLE_COLUMNS))
    assert isinstance(frame, pl.DataFrame)
    top = (
        frame.sort(["score", "text", "matched_text"], descending=[True, False, False])
        .unique(["text", "matched_text"], keep="first", maintain_order=True)
        .head(n)
    )
    return [
        [
            f"{r['score']:.3f}",
            _clip(r["text"]),
            _clip(r["matched_text"]),
            f"{r['dataset']} {r['source_file']}:{r['source_line']}",
            f"{r['matched_dataset']} {r['matched_source_file']}:{r['matched_source_line']}",
        ]
        for r in top.iter_rows(named=True)
    ]


_EXAMPLE_COLUMNS = [
    "score",
    "text",
    "matched_text",
    "dataset",
    "source_file",
    "source_line",
    "matched_dataset",
    "matched_source_file",
    "matched_source_line",
]


def paraphrase_markdown(paraphrases: pa.Table, examples: int = 10) -> tuple[str, str]:
    """Two Markdown tables of a paraphrase report (:data:`~curation.core.schema.PARAPHRASES`): links
    and distinct train pairs per (train dataset, test dataset), and the ``examples``
    highest-scoring text pairs. The card and the asset metadata show the same tables."""
    frame = pl.from_arrow(paraphrases.select(["dataset", "matched_dataset", "pair_id"]))
    assert isinstance(frame, pl.DataFrame)
    counts = (
        frame.group_by("dataset", "matched_dataset")
        .agg(links=pl.len(), pairs=pl.col("pair_id").n_unique())
        .sort("dataset", "matched_dataset", nulls_last=True)
    )
    by_dataset = markdown_table(
        ["train dataset", "test dataset", "links", "train pairs"],
        [list(r) for r in counts.iter_rows()],
        right=[2, 3],
    )
    top = markdown_table(
        ["score", "train opening", "test opening", "train row", "test row"],
        _top_examples(paraphrases, examples),
    )
    return by_dataset, top
