"""Train-against-test decontamination of preference pairs (Dagster-free).

The **reference set** is the test split of every subset of both datasets (plus optional extra
prompt lists): every test prompt, and for multi-turn (HH) test conversations also every single
human turn. A **train** pair is removed when one of its probe texts (its whole prompt and, for
HH, each of its human turns) matches a reference text:

``contaminated_exact`` (score 1.0)
    equal normalized text (xxh3-128). This is also the fallback for texts shorter than ``n``
    words, which cannot share an ``n``-gram.
``contaminated_ngram`` (score ``n``)
    a shared word ``n``-gram, ``n = 13`` as in GPT-3 (Brown et al. 2020, app. C) and the
    lm-evaluation-harness decontamination. N-grams are xxh3-64 word hashes folded into one
    64-bit integer and matched by a polars hash join. Whole prompts are compared (an HH
    conversation's n-grams include those of each of its turns).
``contaminated_near`` (score = estimated Jaccard)
    a near-duplicate by :mod:`curation.near_dup` (MinHash LSH >= 0.8 or <= 2 word
    substitutions).

Precedence is exact > ngram > near; each removed pair appears once, with its best match (then
whole-prompt-to-whole-prompt before turn-level matches, highest score, and the first reference
in ``pair_id`` order, extra lists last). Test rows are never removed.

Matches that involve only *part* of a conversation (an HH human turn on either side, or any
n-gram) are ignored when the matched reference key (turn text or n-gram) is found in more than
``max_matches`` distinct train prompts: such keys are generic (``"Can you tell me more?"``,
assistant boilerplate), the rule NeMo Curator applies to task decontamination
(``max_matches=10``). Whole-prompt-to-whole-prompt matches are never capped. Turns shorter than
``min_turn_words`` words (``"thanks"``, ``"ok"``) are not used as probes or references.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup import (
    _distinct_texts,
    empty_removed,
    keep_in_input_order,
    removed_table,
    sorted_pairs,
    text_hash128,
)
from curation.near_dup import Laps, NearDupParams, near_duplicate_pairs, ngram_hashes, tokenize
from curation.selection import RowSelection
from curation.textnorm import normalize_array, normalized_prompts

__all__ = ["DecontamConfig", "decontaminate"]

_PRECEDENCE = {"contaminated_exact": 0, "contaminated_ngram": 1, "contaminated_near": 2}


@dataclass(frozen=True)
class DecontamConfig(NearDupParams):
    """Thresholds of :func:`decontaminate`.

    Attributes:
        ngram_n: n-gram length in words; 13 as in GPT-3 (Brown et al. 2020, appendix C) and
            EleutherAI's lm-evaluation-harness ``decontamination.md``.
        min_turn_words: human turns with fewer words are not used on their own (whole prompts
            always are).
        max_matches: a partial key (turn text, n-gram) found in more than this many distinct
            train prompts is too common to count as contamination; 10 is NeMo Curator's
            ``TaskDecontamination(max_matches=10)`` default. ``0`` disables the cap.
        ngram: run the n-gram matcher.
        near_dup: run the near-duplicate matcher.
        num_perm, threshold, shingle_words, lsh_min_recall, max_word_substitutions,
        substitution_min_words, substitution_max_words, max_bucket_size, seed:
            near-duplicate parameters, same defaults and sources as
            :class:`curation.dedup.DedupConfig`.
    """

    ngram_n: int = 13
    min_turn_words: int = 3
    max_matches: int = 10
    ngram: bool = True
    near_dup: bool = True


def _human_turns(pairs: pa.Table) -> tuple[np.ndarray, pa.Array]:
    """(input row, normalized text) of every human turn of ``pairs`` (no copy of the column)."""
    if "prompt_turns" not in pairs.column_names:
        return np.zeros(0, np.int64), pa.array([], pa.large_string())
    rows, texts = [], []
    start = 0
    for chunk in pairs["prompt_turns"].chunks:
        flat = pc.list_flatten(chunk)
        parent = pc.list_parent_indices(chunk).to_numpy()
        human = pc.fill_null(pc.equal(pc.struct_field(flat, "role"), "human"), False)
        rows.append(start + parent[human.to_numpy(zero_copy_only=False)])
        texts.append(pc.struct_field(flat, "text").filter(human).cast(pa.large_string()))
        start += len(chunk)
    if not texts:
        return np.zeros(0, np.int64), pa.array([], pa.large_string())
    return np.concatenate(rows).astype(np.int64), normalize_array(pa.concat_arrays(texts))


def _cap(matches: pl.DataFrame, key: str, max_matches: int) -> pl.DataFrame:
    """Drop partial matches whose ``key`` is found in more than ``max_matches`` train prompts."""
    if max_matches <= 0 or matches.height == 0:
        return matches
    counts = matches.group_by(key).agg(n_prompts=pl.col("wtid").n_unique())
    return (
        matches.join(counts, on=key)
        .filter(~pl.col("partial") | (pl.col("n_prompts") <= max_matches))
        .drop("n_prompts")
    )


def decontaminate(
    pairs: pa.Table,
    config: DecontamConfig = DecontamConfig(),
    extra_references: Sequence[tuple[str, Sequence[str]]] = (),
    *,
    lazy: bool = False,
) -> tuple[pa.Table | RowSelection, pa.Table]:
    """Remove train pairs whose prompt matches a test prompt; returns ``(kept, removed)``.

    With ``lazy=True`` ``kept`` is a :class:`~curation.selection.RowSelection` of ``pairs``.

    The reference set is the test split of ``pairs`` itself plus ``extra_references``, a list of
    ``(name, prompts)``; a match on an extra list is reported with ``matched_dataset = name``
    and ``matched_source_line`` = the prompt's index in its list. ``kept`` keeps the schema of
    ``pairs`` and its row order; ``removed`` has schema :data:`curation.schema.REMOVED`.
    """
    lap = Laps("decontaminate")
    tbl, order = sorted_pairs(pairs)
    n = tbl.num_rows
    split = tbl["split"].to_numpy(zero_copy_only=False)
    train = np.flatnonzero(split == "train")
    test = np.flatnonzero(split == "test")
    extras = [(str(name), list(prompts)) for name, prompts in extra_references]
    n_extra = sum(len(p) for _, p in extras)
    if len(train) == 0 or (len(test) == 0 and n_extra == 0):
        return (RowSelection(pairs, np.ones(pairs.num_rows, bool)) if lazy else pairs), (
            empty_removed()
        )

    # ---- every text with where it occurs ---------------------------------------------------
    # Texts are read in input order (no copy of the big columns); ``inv`` maps an input row to
    # its row in ``tbl`` (pair_id order).
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)
    is_train = np.zeros(n, bool)
    is_train[train] = True
    used = is_train.copy()
    used[test] = True
    p_norm = normalized_prompts(pairs)
    p_rows = inv
    if not used.all():
        keep = used[inv]
        p_norm, p_rows = p_norm.filter(pa.array(keep)), inv[keep]
    t_src, t_norm = _human_turns(pairs)
    t_rows = inv[t_src]
    if not used.all():
        keep = used[t_rows]
        t_norm, t_rows = t_norm.filter(pa.array(keep)), t_rows[keep]
    extra_names = np.array([name for name, p in extras for _ in p], object)
    extra_index = np.array([i for _, p in extras for i in range(len(p))], np.int64)
    e_norm = normalize_array(
        pa.array([t if t is not None else "" for _, p in extras for t in p], pa.large_string())
    )
    n_p, n_t = len(p_norm), len(t_norm)
    texts = pa.concat_arrays([p_norm, t_norm, e_norm])
    del p_norm, t_norm, e_norm  # only their concatenation is used from here on
    lap("normalize")
    hi, lo = text_hash128(texts)
    tid, first = _distinct_texts(hi, lo)
    distinct = texts.take(pa.array(first, pa.int64()))
    del texts
    words = tokenize(distinct, config.seed)
    del distinct  # the word hashes are all that is needed from here on
    counts = words.counts
    lap("tokenize")
    row = np.concatenate([p_rows, t_rows, np.full(n_extra, -1, np.int64)])
    # order key of a reference: its row (tbl is sorted by pair_id), extras after all rows
    key = np.concatenate([p_rows, t_rows, n + np.arange(n_extra, dtype=np.int64)])
    whole = np.concatenate([np.ones(n_p, bool), np.zeros(n_t, bool), np.ones(n_extra, bool)])
    probe = np.concatenate([is_train[p_rows], is_train[t_rows], np.zeros(n_extra, bool)])
    # empty texts never match; turns shorter than min_turn_words are not used on their own
    wc = counts[tid]
    ok = (wc > 0) & (whole | (wc >= config.min_turn_words))
    occ = pl.DataFrame({"tid": tid, "row": row, "key": key, "whole": whole, "probe": probe})
    occ = occ.filter(pl.Series(ok))
    probes = occ.filter("probe").group_by("tid", "row").agg(pl.col("whole").any())
    refs = (
        occ.filter(~pl.col("probe"))
        .group_by("tid")
        .agg(pl.col("key").min(), ref_whole=pl.col("whole").any())
    )
    wtid = probes.filter("whole").select("row", wtid="tid")
    probes = probes.join(wtid, on="row", how="left")

    lap("occurrences")
    matches: list[pl.DataFrame] = []
    cols = ["row", "reason", "partial", "score", "key", "method"]

    def kind(probe_whole: str, ref_whole: str) -> pl.Expr:
        return pl.concat_str(
            pl.when(pl.col(probe_whole)).then(pl.lit("prompt")).otherwise(pl.lit("turn")),
            pl.lit("->"),
            pl.when(pl.col(ref_whole)).then(pl.lit("prompt")).otherwise(pl.lit("turn")),
        )

    # ---- exact -----------------------------------------------------------------------------
    ex = probes.join(refs, on="tid").with_columns(partial=~(pl.col("whole") & pl.col("ref_whole")))
    ex = _cap(ex, "tid", config.max_matches)
    matches.append(
        ex.with_columns(
            reason=pl.lit("contaminated_exact"),
            score=pl.lit(1.0),
            method=pl.lit("xxh3-128 normalized exact ") + kind("whole", "ref_whole"),
        ).select(cols)
    )

    lap("exact")

    # ---- n-gram and near-duplicate matchers: independent, so they run on two threads -------
    nn = config.ngram_n

    def ngram_matches() -> pl.DataFrame | None:
        p_t = probes.filter("whole")["tid"].unique().sort().to_numpy()
        r_t = refs.filter("ref_whole").sort("tid")
        p_t = p_t[counts[p_t] >= nn]
        r_keys = r_t["key"].to_numpy()
        r_t = r_t["tid"].to_numpy()
        keep_r = counts[r_t] >= nn
        r_t, r_keys = r_t[keep_r], r_keys[keep_r]
        if not (len(p_t) and len(r_t)):
            return None
        r_h, r_off = ngram_hashes(words, nn, r_t, short=False)
        ref_ng = (
            pl.DataFrame({"h": r_h, "key": np.repeat(r_keys, np.diff(r_off))})
            .group_by("h")
            .agg(pl.col("key").min())
        )
        p_h, p_off = ngram_hashes(words, nn, p_t, short=False)
        pos = np.flatnonzero(pl.Series(p_h).is_in(ref_ng["h"]).to_numpy())
        owner = p_t[np.searchsorted(p_off, pos, side="right") - 1]
        hits = (
            pl.DataFrame({"h": p_h[pos], "wtid": owner})
            .join(ref_ng, on="h")
            .unique(["h", "wtid"])
            .with_columns(partial=pl.lit(True))
        )
        hits = _cap(hits, "h", config.max_matches)
        best = hits.group_by("wtid").agg(pl.col("key").min())
        ng = probes.filter("whole").select("row", "wtid").join(best, on="wtid")
        return ng.with_columns(
            reason=pl.lit("contaminated_ngram"),
            partial=pl.lit(True),
            score=pl.lit(float(nn)),
            method=pl.lit(f"{nn}-gram xxh3-64 words"),
        ).select(cols)

    def near_matches() -> pl.DataFrame | None:
        params = config.near_params()
        left = np.zeros(len(words), bool)
        right = np.zeros(len(words), bool)
        left[probes["tid"].to_numpy()] = True
        right[refs["tid"].to_numpy()] = True
        edges, _ = near_duplicate_pairs(words, params, left=left, right=right)
        if not edges.height:
            return None
        a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
        fwd = left[a] & right[b]
        bwd = left[b] & right[a]
        oriented = pl.concat(
            [
                edges.filter(pl.Series(fwd)).select(tid="a", ref="b", score="score", rule="rule"),
                edges.filter(pl.Series(bwd)).select(tid="b", ref="a", score="score", rule="rule"),
            ]
        )
        nd = (
            probes.join(oriented, on="tid")
            .join(refs.rename({"tid": "ref"}), on="ref")
            .with_columns(partial=~(pl.col("whole") & pl.col("ref_whole")))
        )
        nd = _cap(nd, "ref", config.max_matches)
        label = (
            pl.when(pl.col("rule") == "jaccard")
            .then(pl.lit(params.describe()))
            .otherwise(pl.lit(params.describe_substitution()))
        )
        return nd.with_columns(
            reason=pl.lit("contaminated_near"),
            method=label + pl.lit(" ") + kind("whole", "ref_whole"),
        ).select(cols)

    matchers = [
        m for m, on in ((ngram_matches, config.ngram), (near_matches, config.near_dup)) if on
    ]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decontam") as pool:
        found = list(pool.map(lambda matcher: matcher(), matchers))
    matches.extend(m for m in found if m is not None)

    lap("near")
    allm = pl.concat([m.cast({"score": pl.Float64, "key": pl.Int64}) for m in matches])
    if allm.height == 0:
        return (RowSelection(pairs, np.ones(pairs.num_rows, bool)) if lazy else pairs), (
            empty_removed()
        )
    allm = allm.with_columns(
        prec=pl.col("reason").replace_strict(_PRECEDENCE, return_dtype=pl.Int8)
    )
    best = (
        allm.sort(
            ["row", "prec", "partial", "score", "key", "method"],
            descending=[False, False, False, True, False, False],
        )
        .group_by("row", maintain_order=True)
        .first()
    )
    rows = best["row"].to_numpy()
    k = best["key"].to_numpy()
    is_extra = k >= n
    ext = np.where(is_extra, k - n, 0)
    removed = removed_table(
        tbl,
        rows,
        best["reason"].to_numpy().astype(object),
        best["method"].to_numpy().astype(object),
        best["score"].to_numpy(),
        np.where(is_extra, -1, k),
        extra_name=extra_names[ext] if n_extra else None,
        extra_index=extra_index[ext] if n_extra else None,
    )
    mask = np.ones(n, bool)
    mask[rows] = False
    kept = keep_in_input_order(pairs, order, mask, lazy)
    lap("output")
    return kept, removed
