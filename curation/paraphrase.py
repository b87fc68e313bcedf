"""Paraphrased test prompts: train units whose nearest test units mean the same (Dagster-free).

Decontamination's rules (:mod:`curation.decontam`) match test prompts *as text*: equal,
contained, near-identical. A train prompt that asks a test question in other words ("How do I
steal a car?" / "How can I steal a car?") passes them by design. This module finds such
candidates by meaning:

* **Units.** The same units decontamination compares: every informative opening (first human
  turn; a PKU prompt) and informative later human turn (:mod:`curation.informative`), in their
  normalized form (:mod:`curation.textnorm`). Whole conversations are not embedded: a
  continuation dilutes the vector of the question it repeats.
* **Embedding.** A static embedding: the mean of the token vectors of ``wordllama``'s
  ``l2_supercat`` model (its weights and tokenizer ship inside the wheel, so nothing is
  downloaded), the first :data:`DIMS` of its 256 dimensions (the model is trained so that a
  prefix of its dimensions is an embedding too), L2-normalized. :func:`embed` computes exactly
  what ``WordLlama.embed(texts, norm=True)`` computes, without padding every text of a batch to
  the longest one.
* **Neighbours.** For every train unit, its :data:`NEIGHBOURS` nearest test units by cosine
  similarity, exactly: the test vectors are one matrix, the train vectors come block by block
  and each block is one matrix product (:func:`nearest`). Kept: a pair of *different* texts at
  or above the threshold.

What the threshold means was measured on the labelled real rows (``bench/labels/
paraphrase.jsonl``, ``docs/dedup.md`` §6); what it costs on the benchmark corpus is in
``docs/benchmarks.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import tokenizers

__all__ = ["DIMS", "MODEL", "NEIGHBOURS", "embed", "load_model", "method_name", "nearest"]

#: The wordllama model (bundled in the wheel) and how many of its dimensions are used.
MODEL = "l2_supercat"
MODEL_DIMS = 256
DIMS = 256
#: Test units kept per train unit (above the threshold), nearest first.
NEIGHBOURS = 3
#: Texts embedded at a time (bounds the token arrays of one block).
EMBED_BLOCK = 8192
#: Train vectors per matrix product: the score block is ``QUERY_BLOCK x test units`` float32.
QUERY_BLOCK = 1024


@cache
def load_model(dims: int = DIMS) -> tuple[np.ndarray, tokenizers.Tokenizer]:
    """wordllama's embedding matrix (``vocab x dims``, float32) and tokenizer, loaded from the
    installed package once per process, without the network.

    ``WordLlama.load()`` looks for the tokenizer in the wrong folder and then downloads it;
    pointing ``cache_dir`` at the package folder, where the wheel put both files, and
    ``disable_download`` make it read them. Importing ``wordllama`` configures the root logger
    (``logging.basicConfig(level=INFO)``); the root logger is put back as it was.
    """
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
    """The ``method`` of a paraphrase match (the removed table and the report)."""
    return f"wordllama {MODEL} {dims}d mean-pooled, cosine>={threshold:g}, informative units"


def _token_ids(tokenizer: tokenizers.Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``texts`` as one flat array and per-text offsets."""
    encoded = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encoded), np.int64, len(encoded))
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.empty(int(offsets[-1]), np.int64)
    for e, a, b in zip(encoded, offsets[:-1], offsets[1:], strict=True):
        ids[a:b] = e.ids
    return ids, offsets


def embed(texts: list[str] | pa.Array, dims: int = DIMS) -> np.ndarray:
    """Unit vectors (``len(texts) x dims``, float32): the mean token vector of each text,
    L2-normalized; a text without tokens gets the zero vector (similar to nothing)."""
    matrix, tokenizer = load_model(dims)
    values = texts.to_pylist() if isinstance(texts, pa.Array | pa.ChunkedArray) else list(texts)
    out = np.zeros((len(values), dims), np.float32)
    for start in range(0, len(values), EMBED_BLOCK):
        block = [v or "" for v in values[start : start + EMBED_BLOCK]]
        ids, offsets = _token_ids(tokenizer, block)
        np.clip(ids, 0, len(matrix) - 1, out=ids)
        counts = np.diff(offsets)
        has = counts > 0
        if not has.any():
            continue
        sums = np.add.reduceat(matrix[ids], offsets[:-1][has], axis=0)
        vectors = sums / counts[has, None].astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        out[start + np.flatnonzero(has)] = vectors / np.maximum(norms, 1e-12)
    return out


def nearest(
    refs: np.ndarray,
    probe_blocks: Iterator[tuple[np.ndarray, np.ndarray]],
    threshold: float,
    k: int = NEIGHBOURS,
    same: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest reference vectors of every probe vector, at or above ``threshold``.

    ``refs`` is ``m x d`` (unit vectors); ``probe_blocks`` yields ``(probe ids, vectors)``.
    ``same(probe ids, ref indices)`` flags candidate pairs to leave out (the same text on both
    sides). Returns ``(probe id, ref index, score, rank)`` arrays, rank 1 the nearest; ties
    are broken by the lower reference index, so the result does not depend on the block size.
    """
    found: list[tuple[np.ndarray, ...]] = []
    m = len(refs)
    take = min(k + 1, m)  # one spare: the probe's own text may be among the references
    for ids, vectors in probe_blocks:
        for a in range(0, len(ids), QUERY_BLOCK):
            scores = vectors[a : a + QUERY_BLOCK] @ refs.T
            if take < m:
                top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
            else:
                top = np.broadcast_to(np.arange(m), (len(scores), m))
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.lexsort((top, -top_scores), axis=1)
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            probe = np.repeat(ids[a : a + QUERY_BLOCK], top.shape[1]).reshape(top.shape)
            keep = top_scores >= threshold
            if same is not None:
                keep &= ~same(probe, top)
            rank = np.cumsum(keep, axis=1)
            keep &= rank <= k
            found.append((probe[keep], top[keep], top_scores[keep], rank[keep]))
    if not found:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32), empty
    return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))  # type: ignore[return-value]
