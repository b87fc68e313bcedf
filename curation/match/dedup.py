"""Exact and near-duplicate removal of preference pairs (Dagster-free).

:func:`deduplicate` works within each ``(split, dimension)`` *scope*, across subsets and both
datasets, on the normalized text of :mod:`curation.core.textnorm`:

1. **Exact**: pairs with the same normalized ``(prompt, chosen, rejected)`` (xxh3-128 of each
   field) keep one survivor, the pair of the first source row (:data:`SOURCE_ORDER`: dataset,
   subset, split, file, line), so the two pairs of a PKU row survive or go together; the
   others are removed as ``exact_duplicate``. When the same triple also occurs with ``chosen`` and ``rejected``
   swapped, the preference label contradicts itself and **every** copy of both orientations is
   removed as ``conflicting_duplicate`` (``matched_*`` = the first source row of the opposite
   orientation).
2. **Near-duplicate** on the exact survivors (:mod:`curation.match.near_dup`): prompts are linked
   when they are the same text up to formatting and typos (any length) or small word edits
   (long texts only), clustered by union-find per scope, and each cluster keeps its first source row; the others are removed
   as ``near_duplicate`` with ``score`` the estimated Jaccard to the survivor and ``matched_*``
   the survivor. With ``prompt_dedup=False`` (default) two pairs are only linked when their
   prompts are near-duplicates **and** their chosen responses **and** their rejected responses
   are near-duplicates (or identical); with ``prompt_dedup=True`` near-duplicate prompts are
   enough. ``docs/dedup.md`` explains the default.

Rows are sorted by source row first (:data:`SOURCE_ORDER`, ``pair_id`` last), so which pairs are
kept and removed does not depend on the input order. The kept pairs stay in input order (a
sequential filter, 4x cheaper than gathering the text columns); the removed table is in source
row order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from curation.core.hashing import text_hash128
from curation.core.selection import RowSelection
from curation.core.stage_table import StageTable, take_rows
from curation.core.textnorm import normalize_array
from curation.match.near_dup import (
    _M1,
    Laps,
    NearDupParams,
    _bucket_pairs,
    connected_components,
    mix64,
    near_duplicate_pairs,
    tokenize,
    verify_pairs,
)
from curation.match.removal import (
    SOURCE_ORDER,
    batch_prompts,
    empty_removed,
    keep_in_input_order,
    prompt_columns,
    read_prompts,
    removed_table,
    sorted_pairs,
)
from curation.match.text_index import (
    DistinctTexts,
    distinct_texts,
    table_batches,
)

__all__ = ["EXACT_METHOD", "DedupConfig", "deduplicate"]

EXACT_METHOD = "xxh3-128 normalized triple"


@dataclass(frozen=True)
class DedupConfig(NearDupParams):
    """Thresholds of :func:`deduplicate`.

    Attributes:
        prompt_dedup: ``True`` removes near-duplicate prompts even when their responses differ;
            ``False`` (default) only removes a pair whose prompt, chosen and rejected texts are
            all near-duplicates of the survivor's (see ``docs/dedup.md``).
        near_dup: run the near-duplicate stage at all (exact dedup always runs).
        num_perm: MinHash permutations; 128 is the usual size for short documents (datatrove
            uses 112 = 14 bands x 8, text-dedup 256); estimate s.d. at J=0.8 is 0.035.
        threshold: Jaccard threshold 0.8, as in Lee et al. 2022 "Deduplicating Training Data
            Makes Language Models Better" (NearDup), datatrove and NeMo Curator.
        shingle_words: word n-gram size of the MinHash shingles. 5-grams are the web-document
            standard (Lee et al. 2022, datatrove), but on 8-30 word prompts one substituted word
            destroys up to 5 of ~20 shingles; bigrams keep single insertions/substitutions in
            15+ word texts above 0.8 while staying order-sensitive.
        lsh_min_recall: LSH candidate probability required at ``threshold`` when choosing the
            banding (MMDS ch. 3.4 S-curve); 0.9 gives 16 bands x 8 rows (0.947 at J=0.8).
        max_word_substitutions: texts of equal length differing in at most this many word
            positions are near-duplicates (the rule that makes 1-2 word substitutions in short
            prompts detectable; set 0 to disable).
        substitution_min_words: shortest text (in words) the substitution rule applies to (2
            substitutions in 8 words is 25 % of the text; below that it is a different prompt).
        substitution_max_words: longest text for the substitution rule; above it the Jaccard
            rule already sees 2 substitutions as >= 0.9 similar.
        max_bucket_size: LSH / blocking buckets larger than this are linked as a star around
            the smallest member plus a chain instead of all pairs (bounds the work).
        seed: MinHash seed (``rensa``) and word-hash seed (xxh3).

    The valid range of every field is declared on it (:class:`curation.match.near_dup.NearDupParams`)
    and checked when a config is built.
    """

    prompt_dedup: bool = False
    near_dup: bool = True


def _u64_pair_key(*cols: np.ndarray) -> np.ndarray:
    """A deterministic 64-bit hash combining integer columns (for bucket keys)."""
    acc = np.full(len(cols[0]), np.uint64(0x27D4EB2F165667C5), np.uint64)
    for c in cols:
        acc = mix64(acc * _M1 + np.asarray(c).astype(np.uint64))
    return acc


# --------------------------------------------------------------------------------------------
# deduplicate
# --------------------------------------------------------------------------------------------


def _scope_frame(tbl: pa.Table) -> pl.DataFrame:
    meta = pl.from_arrow(tbl.select(["split", "dimension"]))
    assert isinstance(meta, pl.DataFrame)
    return meta.with_columns(i=pl.int_range(tbl.num_rows, dtype=pl.Int64))


class _Responses:
    """Normalized responses (and their xxh3-128) of sorted rows, computed at most once."""

    def __init__(self, pairs: pa.Table | StageTable, order: np.ndarray) -> None:
        self.pairs, self.order = pairs, order
        n = len(order)
        self._pos = {c: np.full(n, -1, np.int64) for c in ("chosen", "rejected")}
        self._chunks: dict[str, list[pa.Array]] = {"chosen": [], "rejected": []}
        self._size = {"chosen": 0, "rejected": 0}
        self._hi = {c: np.zeros(n, np.uint64) for c in ("chosen", "rejected")}
        self._lo = {c: np.zeros(n, np.uint64) for c in ("chosen", "rejected")}

    def hashes(self, col: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._fill(col, rows)
        return self._hi[col][rows], self._lo[col][rows]

    def texts(self, col: str, rows: np.ndarray) -> pa.Array:
        self._fill(col, rows)
        store = (
            pa.concat_arrays(self._chunks[col])
            if len(self._chunks[col]) != 1
            else self._chunks[col][0]
        )
        return store.take(pa.array(self._pos[col][rows], pa.int64()))

    def _fill(self, col: str, rows: np.ndarray) -> None:
        missing = np.unique(rows[self._pos[col][rows] < 0])
        if len(missing) == 0:
            return
        norm = normalize_array(take_rows(self.pairs, self.order[missing], [col]).column(0))
        hi, lo = text_hash128(norm)
        self._hi[col][missing], self._lo[col][missing] = hi, lo
        self._pos[col][missing] = self._size[col] + np.arange(len(missing))
        self._size[col] += len(missing)
        self._chunks[col].append(norm)


def _exact(responses: _Responses, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (removed rows, reasons, matched rows) of the exact stage."""
    keys = ["split", "dimension", "p_hi", "p_lo"]
    shared = df.select(pl.len().over(keys) > 1).to_series().to_numpy()
    need = np.flatnonzero(shared)
    empty = np.zeros(0, np.int64)
    if len(need) < 2:
        return empty, np.zeros(0, str), empty
    c_hi, c_lo = responses.hashes("chosen", need)
    r_hi, r_lo = responses.hashes("rejected", need)
    c_lt = (c_hi < r_hi) | ((c_hi == r_hi) & (c_lo < r_lo))
    equal = (c_hi == r_hi) & (c_lo == r_lo)
    orient = np.where(equal, 0, np.where(c_lt, 1, -1)).astype(np.int8)
    ex = df[need].with_columns(
        a_hi=pl.Series(np.where(c_lt, c_hi, r_hi)),
        a_lo=pl.Series(np.where(c_lt, c_lo, r_lo)),
        b_hi=pl.Series(np.where(c_lt, r_hi, c_hi)),
        b_lo=pl.Series(np.where(c_lt, r_lo, c_lo)),
        orient=pl.Series(orient),
    )
    gk = [*keys, "a_hi", "a_lo", "b_hi", "b_lo"]
    ex = ex.with_columns(
        first=pl.col("i").min().over(gk),
        first_pos=pl.col("i").filter(pl.col("orient") == 1).min().over(gk),
        first_neg=pl.col("i").filter(pl.col("orient") == -1).min().over(gk),
    )
    conflict = ex.filter(pl.col("first_pos").is_not_null() & pl.col("first_neg").is_not_null())
    conflict = conflict.with_columns(
        matched=pl.when(pl.col("orient") == 1)
        .then(pl.col("first_neg"))
        .otherwise(pl.col("first_pos")),
        reason=pl.lit("conflicting_duplicate"),
    )
    dup = ex.filter(
        (pl.col("first_pos").is_null() | pl.col("first_neg").is_null())
        & (pl.col("i") != pl.col("first"))
    ).with_columns(matched=pl.col("first"), reason=pl.lit("exact_duplicate"))
    out = pl.concat(
        [conflict.select("i", "reason", "matched"), dup.select("i", "reason", "matched")]
    )
    return out["i"].to_numpy(), out["reason"].to_numpy(), out["matched"].to_numpy()


def _clusters_prompt(rows: pl.DataFrame, edges: pl.DataFrame) -> tuple[np.ndarray, pl.DataFrame]:
    """Union-find of rows (columns i, split, dimension, tid) over text edges within a scope.

    Returns (cluster label per row of ``rows``, node table).
    """
    nodes = (
        rows.select("split", "dimension", "tid")
        .unique()
        .sort("split", "dimension", "tid", nulls_last=True)
        .with_row_index("node")
    )
    na = nodes.rename({"tid": "a", "node": "na"})
    nb = nodes.rename({"tid": "b", "node": "nb"})
    ne = (
        edges.select("a", "b")
        .join(na, on="a")
        .join(nb, on=["b", "split", "dimension"], nulls_equal=True)
    )
    labels = connected_components(nodes.height, ne["na"].to_numpy(), ne["nb"].to_numpy())
    row_node = rows.join(
        nodes, on=["split", "dimension", "tid"], nulls_equal=True, how="left", maintain_order="left"
    )["node"].to_numpy()
    return labels[row_node], nodes


def _survivors(i: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """For each row, the smallest row index (= first source row) of its cluster."""
    df = pl.DataFrame({"i": i, "c": cluster})
    return df.select(pl.col("i").min().over("c")).to_series().to_numpy()


def _near(
    responses: _Responses,
    sorted_rows: pl.DataFrame,
    prompts: DistinctTexts,
    fetch_prompts: Callable[[np.ndarray], pa.Array],
    remaining: np.ndarray,
    config: DedupConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The near-duplicate stage over the ``remaining`` rows (positions in ``sorted_rows``).

    ``prompts`` holds the tokenized distinct prompts; ``fetch_prompts(sorted rows)`` reads the
    normalized prompts of the few rows whose prompts are aligned word by word.

    Returns ``(removed rows, scores, kept row each matched, method)``, rows as positions in
    ``sorted_rows``. Prompts are clustered first (identical or near-duplicate normalized text,
    within a split and dimension); with ``prompt_dedup`` a cluster keeps its first row. Otherwise
    only rows of multi-row clusters are *candidates* (``candidate_pos`` in ``remaining_rows``,
    ``candidate_row`` in ``sorted_rows``, ``candidate`` = 0..n-1 among themselves): two
    candidates are near-duplicates when their chosen responses are identical or near-duplicates
    within the cluster and their rejected responses pass the near-duplicate rule; each connected
    group keeps its first row.
    """
    params = config.near_params()
    empty = np.zeros(0, np.int64)
    method = f"{params.describe()}; " + (
        "prompt" if config.prompt_dedup else "prompt+chosen+rejected"
    )
    if len(remaining) < 2:
        return empty, np.zeros(0), empty, method
    remaining_rows = sorted_rows[remaining]
    lap = Laps("deduplicate near")
    prompt_tid, _, prompt_words = prompts.words(
        remaining_rows["p_hi"].to_numpy(), remaining_rows["p_lo"].to_numpy(), fetch_prompts
    )
    lap("prompt words")
    prompt_edges, prompt_sketches = near_duplicate_pairs(prompt_words, params)
    lap("prompt pairs")
    prompt_rows = remaining_rows.select("i", "split", "dimension").with_columns(
        tid=pl.Series(prompt_tid)
    )
    prompt_cluster, _ = _clusters_prompt(prompt_rows, prompt_edges)
    row = prompt_rows["i"].to_numpy()
    if config.prompt_dedup:
        kept_row = _survivors(row, prompt_cluster)
        is_removed = row != kept_row
        kept_pos = np.searchsorted(row, kept_row[is_removed])  # row is sorted ascending
        score = prompt_sketches.jaccard(prompt_tid[is_removed], prompt_tid[kept_pos])
        return row[is_removed], score, kept_row[is_removed], method
    # pair mode: only rows in multi-row prompt clusters can be near-duplicates
    cluster_size = (
        pl.DataFrame({"c": prompt_cluster}).select(pl.len().over("c")).to_series().to_numpy()
    )
    candidate_pos = np.flatnonzero(cluster_size > 1)
    if len(candidate_pos) < 2:
        return empty, np.zeros(0), empty, method
    candidate_row = row[candidate_pos]
    n_candidates = len(candidate_pos)
    candidate_cluster = prompt_cluster[candidate_pos]
    candidate = np.arange(n_candidates, dtype=np.int64)
    # chosen responses: identical or near-duplicate (LSH) within the prompt cluster
    chosen_hi, chosen_lo = responses.hashes("chosen", candidate_row)
    chosen_tid, chosen_first = distinct_texts(chosen_hi, chosen_lo)
    chosen_texts = responses.texts("chosen", candidate_row[chosen_first])
    lap("normalize chosen")
    chosen_words = tokenize(chosen_texts, config.seed)
    chosen_edges, chosen_sketches = near_duplicate_pairs(chosen_words, params)
    lap("chosen pairs")
    same_chosen_a, same_chosen_b = _bucket_pairs(
        _u64_pair_key(candidate_cluster, chosen_tid), candidate, params.max_bucket_size
    )
    candidate_chosen = pl.DataFrame({"x": candidate, "cl": candidate_cluster, "ct": chosen_tid})
    near_chosen = (
        chosen_edges.select("a", "b")
        .join(candidate_chosen.rename({"ct": "a"}), on="a")
        .join(candidate_chosen.rename({"ct": "b", "x": "y"}), on=["b", "cl"])
    )
    pair_a = np.concatenate([same_chosen_a, near_chosen["x"].to_numpy()])
    pair_b = np.concatenate([same_chosen_b, near_chosen["y"].to_numpy()])
    candidate_pairs = pl.DataFrame(
        {"x": np.minimum(pair_a, pair_b), "y": np.maximum(pair_a, pair_b)}
    ).unique()
    first_of_pair, second_of_pair = candidate_pairs["x"].to_numpy(), candidate_pairs["y"].to_numpy()
    if len(first_of_pair) == 0:
        return empty, np.zeros(0), empty, method
    # rejected responses: verify exactly these pairs
    involved = np.unique(np.concatenate([first_of_pair, second_of_pair]))
    rejected_hi, rejected_lo = responses.hashes("rejected", candidate_row[involved])
    involved_rejected_tid, rejected_first = distinct_texts(rejected_hi, rejected_lo)
    rejected_texts = responses.texts("rejected", candidate_row[involved[rejected_first]])
    rejected_words = tokenize(rejected_texts, config.seed)
    rejected_tid = np.full(n_candidates, -1, np.int64)
    rejected_tid[involved] = involved_rejected_tid
    verified, _, rejected_sketches = verify_pairs(
        rejected_words, params, rejected_tid[first_of_pair], rejected_tid[second_of_pair]
    )
    lap("rejected pairs")
    first_of_pair, second_of_pair = first_of_pair[verified], second_of_pair[verified]
    # each group's label is its smallest candidate index, i.e. its first source row
    component = connected_components(n_candidates, first_of_pair, second_of_pair)
    is_removed = component != candidate
    if not is_removed.any():
        return empty, np.zeros(0), empty, method
    removed, kept = candidate[is_removed], component[is_removed]
    candidate_prompt_tid = prompt_tid[candidate_pos]
    score = np.minimum.reduce(
        [
            prompt_sketches.jaccard(candidate_prompt_tid[removed], candidate_prompt_tid[kept]),
            chosen_sketches.jaccard(chosen_tid[removed], chosen_tid[kept]),
            rejected_sketches.jaccard(rejected_tid[removed], rejected_tid[kept]),
        ]
    )
    return candidate_row[removed], score, candidate_row[kept], method


def deduplicate(
    pairs: pa.Table | StageTable, config: DedupConfig = DedupConfig(), *, lazy: bool = False
) -> tuple[pa.Table | RowSelection, pa.Table]:
    """Remove exact and near-duplicate pairs; returns ``(kept, removed)``.

    ``pairs`` is a table or a :class:`~curation.core.stage_table.StageTable` handle (read batch by
    batch: only ids, hashes and word hashes are kept; texts are read again for candidates).
    With ``lazy=True`` ``kept`` is a :class:`~curation.core.selection.RowSelection` of ``pairs`` (no
    copy of the kept rows).

    ``kept`` has the schema of ``pairs`` and keeps its row order; ``removed`` has schema
    :data:`curation.core.schema.REMOVED` with one row per removed pair (reasons ``exact_duplicate``,
    ``conflicting_duplicate``, ``near_duplicate``). Every input ``pair_id`` is in exactly one of
    them.
    """
    lap = Laps("deduplicate")
    tbl, order = sorted_pairs(pairs, ("chosen", "rejected"), by=SOURCE_ORDER)
    n = tbl.num_rows
    if n == 0:
        return (RowSelection(pairs, np.ones(0, bool)) if lazy else pairs), empty_removed()
    # one pass over the normalized prompts, batch by batch: hashes of every prompt and the word
    # hashes of every distinct one (the texts themselves are not kept)
    prompts = DistinctTexts(config.seed, tokenize=config.near_dup)
    p_hi, p_lo, start = [], [], 0
    for batch in table_batches(pairs, prompt_columns(pairs)):
        hi, lo = prompts.add(batch_prompts(batch), np.arange(start, start + batch.num_rows))
        p_hi.append(hi)
        p_lo.append(lo)
        start += batch.num_rows
    lap("hash and tokenize prompts")
    p_hi, p_lo = np.concatenate(p_hi)[order], np.concatenate(p_lo)[order]
    df = _scope_frame(tbl).with_columns(p_hi=pl.Series(p_hi), p_lo=pl.Series(p_lo))

    responses = _Responses(pairs, order)
    ex_rows, ex_reason, ex_matched = _exact(responses, df)
    lap("exact")
    removed = np.zeros(n, bool)
    removed[ex_rows] = True
    parts = [
        (ex_rows, ex_reason, np.full(len(ex_rows), EXACT_METHOD), np.ones(len(ex_rows)), ex_matched)
    ]
    if config.near_dup:
        nd_rows, nd_score, nd_matched, method = _near(
            responses,
            df,
            prompts,
            lambda rows: read_prompts(pairs, rows),
            np.flatnonzero(~removed),
            config,
        )
        removed[nd_rows] = True
        parts.append(
            (
                nd_rows,
                np.full(len(nd_rows), "near_duplicate"),
                np.full(len(nd_rows), method),
                nd_score,
                nd_matched,
            )
        )
    rows = np.concatenate([p[0] for p in parts]).astype(np.int64)
    lap("near")
    kept = keep_in_input_order(pairs, order, ~removed, lazy)
    if len(rows) == 0:
        return kept, empty_removed()
    out = removed_table(
        tbl,
        rows,
        np.concatenate([p[1] for p in parts]).astype(object),
        np.concatenate([p[2] for p in parts]).astype(object),
        np.concatenate([p[3] for p in parts]),
        np.concatenate([p[4] for p in parts]).astype(np.int64),
    )
    lap("output")
    return kept, out
