"""Train-against-test decontamination of preference pairs (Dagster-free).

The **reference set** is the test split of every subset of every dataset (plus optional extra
prompt lists). A **train** pair is removed when its prompt contains a test prompt *in
substance*. Texts are compared in the normalized form of :mod:`curation.core.textnorm`; each text of
a prompt is a *unit*: its **whole** prompt (every turn, with the role words), its **opening**
(the first human turn; a PKU prompt and an extra reference are their own opening) and its
**later** human turns. The rules, each derived from the labelled real rows of ``bench/labels``
(``docs/dedup.md``), in precedence order:

``contaminated_exact`` (score 1.0)
    equal whole prompts (any length), or equal openings that are *informative*
    (:mod:`curation.match.informative`: "What is rohypnol?" counts, "Hey" does not).
``contaminated_turn`` (score 1.0)
    an equal human turn where at least one side is a later turn (an HH test turn inside a PKU
    train prompt, a test opening repeated as a train follow-up, ...). Only informative turns
    count ("Yes, go on." never does), and a turn found in more than ``max_matches`` train
    prompts is generic whatever its length.
``contaminated_ngram`` (score = overlap)
    whole prompts sharing word ``ngram_n``-grams (13, GPT-3 / lm-evaluation-harness) that cover
    at least ``ngram_min_overlap`` of the shorter prompt's n-grams. N-grams found in more than
    ``max_matches`` train prompts or reference prompts are template text ("Can you locate the
    home address for ... He is the CEO of ...") and are ignored.
``contaminated_near`` (score = word similarity)
    near-duplicate texts (:mod:`curation.match.near_dup`: formatting and typos at any length, small
    word edits only in long texts); a match involving a turn needs informative texts.
``contaminated_paraphrase`` (score = cosine similarity; only with ``paraphrase="remove"``)
    an informative opening or later turn whose static embedding (:mod:`curation.match.paraphrase`) is
    within ``paraphrase_threshold`` of an informative test unit, on a pair no rule above
    matched. By default (``paraphrase="report"``) such pairs are only *reported*
    (:func:`decontaminate_and_report`, the release's ``paraphrases`` table), not removed.

Each removed pair appears once, with its best match: the highest-precedence rule, then
whole-prompt-to-whole-prompt before partial matches, the highest score, and the first reference
in ``pair_id`` order (extra lists last). Test rows are never removed.

The work is split into named phases, each testable on its own: :func:`collect_units`
(occurrences), :func:`exact_matches`, :func:`turn_matches`, :func:`ngram_matches`,
:func:`near_matches`, :func:`paraphrase_matches` and :func:`best_matches`; :func:`find_matches`
runs the rule matchers and :func:`decontaminate` turns the best matches into ``(kept,
removed)``; :func:`decontaminate_and_report` adds the paraphrase report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from annotated_types import Ge, Interval

from curation.core.schema import PARAPHRASES
from curation.core.selection import RowSelection
from curation.core.stage_table import StageTable, take_rows
from curation.core.textnorm import normalize_array
from curation.match import paraphrase as para
from curation.match.informative import informative, rare_word_counts
from curation.match.near_dup import (
    Laps,
    NearDupParams,
    Words,
    near_duplicate_pairs,
    ngram_hashes,
)
from curation.match.removal import (
    batch_prompts,
    empty_removed,
    keep_in_input_order,
    prompt_columns,
    read_prompts,
    removed_table,
    sorted_pairs,
)
from curation.match.text_index import DistinctTexts, table_batches

__all__ = [
    "DecontamConfig",
    "Decontaminated",
    "Units",
    "best_matches",
    "collect_units",
    "decontaminate",
    "decontaminate_and_report",
    "exact_matches",
    "find_matches",
    "near_matches",
    "ngram_matches",
    "paraphrase_matches",
    "turn_matches",
]

REASONS = (
    "contaminated_exact",
    "contaminated_turn",
    "contaminated_ngram",
    "contaminated_near",
    "contaminated_paraphrase",
)
_PRECEDENCE = {reason: i for i, reason in enumerate(REASONS)}
#: Unit codes of an occurrence.
WHOLE, OPENING, LATER = 0, 1, 2
#: Probe texts whose n-grams are hashed at a time (bounds the n-gram arrays).
NGRAM_CHUNK = 50_000
_MATCH_COLUMNS = ["row", "key", "reason", "partial", "score", "method", "probe_tid", "ref_tid"]


@dataclass(frozen=True)
class DecontamConfig(NearDupParams):
    """Thresholds of :func:`decontaminate`.

    Attributes:
        ngram_n: n-gram length in words; 13 as in GPT-3 (Brown et al. 2020, appendix C) and
            EleutherAI's lm-evaluation-harness ``decontamination.md``.
        ngram_min_overlap: share of the shorter prompt's n-grams that must be shared; 0.5 keeps
            every labelled real leak (one conversation extending the other) and no template
            sibling (``docs/dedup.md``).
        min_words, min_words_with_rare: the informative-turn rule of
            :func:`curation.match.informative.informative` (7 and 4), derived from the labelled real
            turns.
        min_opening_words: an opening (first human turn) is informative with this many words
            or one rare word (5: "How can I control my husband?" counts, "Hello, how are
            you?" does not; from the labelled real openings).
        max_matches: a partial key (turn text, n-gram) found in more than this many distinct
            train prompts is too common to count as contamination; 10 is NeMo Curator's
            ``TaskDecontamination(max_matches=10)`` default. ``0`` disables the cap.
        ngram: run the n-gram matcher.
        near_dup: run the near-duplicate matcher.
        paraphrase: what to do with train pairs whose informative opening or later turn has a
            test unit of close meaning (:func:`paraphrase_matches`): ``"report"`` (default) lists
            them in the paraphrase report and removes nothing; ``"remove"`` also removes them
            (``contaminated_paraphrase``); ``"off"`` skips the search.
        paraphrase_threshold: the least cosine similarity of the two units' static embeddings
            (:mod:`curation.match.paraphrase`), chosen on the labelled real candidates
            (``bench/labels/paraphrase.jsonl``, ``docs/dedup.md`` §6).
        num_perm, threshold, shingle_words, lsh_min_recall, max_word_substitutions,
        substitution_min_words, substitution_max_words, long_min_words, max_edit_fraction,
        typo_words, typo_min_chars, max_bucket_size, seed:
            near-duplicate parameters, same defaults and sources as
            :class:`curation.match.dedup.DedupConfig`.

    Ranges (declared on the fields, checked when a config is built, :mod:`curation.core.bounds`):
    ``ngram_n`` >= 1; ``ngram_min_overlap`` is a share, in [0, 1] (0: one shared n-gram is
    enough, as in lm-evaluation-harness); the three word counts >= 1 (a turn without words is
    never informative); ``max_matches`` >= 0.
    """

    ngram_n: Annotated[int, Ge(1)] = 13
    ngram_min_overlap: Annotated[float, Interval(ge=0, le=1)] = 0.5
    min_opening_words: Annotated[int, Ge(1)] = 5
    min_words: Annotated[int, Ge(1)] = 7
    min_words_with_rare: Annotated[int, Ge(1)] = 4
    max_matches: Annotated[int, Ge(0)] = 10
    ngram: bool = True
    near_dup: bool = True
    paraphrase: Literal["off", "report", "remove"] = "report"
    paraphrase_threshold: Annotated[float, Interval(ge=0, le=1)] = para.THRESHOLD


# --------------------------------------------------------------------------------------------
# Phase 1: occurrences
# --------------------------------------------------------------------------------------------


@dataclass
class Units:
    """Every unit text of the train and reference prompts, deduplicated.

    ``occ`` has one row per occurrence: ``tid`` (distinct text id), ``row`` (row of ``tbl``,
    sorted by ``pair_id``; ``-1`` for extras), ``key`` (order key of a reference: its row, or
    ``n + i`` for the i-th extra prompt), ``unit`` (``WHOLE``/``OPENING``/``LATER``) and
    ``probe`` (a train occurrence). ``inf_open``/``inf_turn`` flag informative texts by ``tid``.
    ``other_refs`` locates the references that are not pairs (key ``n + j`` is its row ``j``):
    extra prompts (``dataset`` = the list's name, ``source_line`` = the index in it), then
    quarantined test rows.
    ``words.texts`` reads the texts again on demand (:class:`~curation.match.near_dup.LazyTexts`).
    ``vocabulary`` holds the words of every opening when the paraphrase search will embed them
    (:meth:`embedded`).
    """

    tbl: pa.Table
    order: np.ndarray
    words: Words
    occ: pl.DataFrame
    inf_open: np.ndarray
    inf_turn: np.ndarray
    other_refs: pa.Table
    vocabulary: para.Vocabulary | None = None
    seed: int = 0

    @property
    def n(self) -> int:
        return self.tbl.num_rows

    def embedded(self, tids: np.ndarray) -> para.Embedded:
        """The static embeddings of openings ``tids``: from their word hashes and
        :attr:`vocabulary` (:func:`curation.match.paraphrase.embed_words`), else from their texts,
        read again."""
        if self.vocabulary is not None:
            return para.embed_words(self.words, tids, self.vocabulary, self.seed)
        return para.embed_texts(self.words.texts.take(tids))

    def probes(self, *units: int) -> pl.DataFrame:
        """Distinct ``(tid, row)`` train occurrences in ``units``, with ``whole`` / ``opening``."""
        return _group(self.occ.filter(pl.col("probe") & pl.col("unit").is_in(units)), "row")

    def refs(self, *units: int) -> pl.DataFrame:
        """Distinct reference texts in ``units`` with their first ``key``."""
        return _group(self.occ.filter(~pl.col("probe") & pl.col("unit").is_in(units)), None)


def _group(occ: pl.DataFrame, by: str | None) -> pl.DataFrame:
    keys = ["tid", by] if by else ["tid"]
    return occ.group_by(keys).agg(
        pl.col("key").min(),
        whole=(pl.col("unit") == WHOLE).any(),
        opening=(pl.col("unit") <= OPENING).any(),
    )


def _human_turns(
    pairs: pa.Table, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(input row, human-turn index, normalized text) of every human turn of ``pairs`` (the
    text as written with ``normalize=False``)."""
    empty = np.zeros(0, np.int64)
    if "prompt_turns" not in pairs.column_names:
        return empty, empty, pa.array([], pa.large_string())
    rows, index, texts = [], [], []
    start = 0
    for chunk in pairs["prompt_turns"].chunks:
        flat = pc.list_flatten(chunk)
        parent = pc.list_parent_indices(chunk).to_numpy()
        human = pc.fill_null(pc.equal(pc.struct_field(flat, "role"), "human"), False)
        mask = human.to_numpy(zero_copy_only=False)
        owner = parent[mask]
        # index of each human turn within its prompt: position minus the owner's first position
        pos = np.arange(len(owner))
        first = np.concatenate([[0], np.flatnonzero(np.diff(owner)) + 1]) if len(owner) else pos
        starts = np.repeat(first, np.diff(np.append(first, len(owner)))) if len(owner) else pos
        rows.append(start + owner)
        index.append(pos - starts)
        texts.append(pc.struct_field(flat, "text").filter(human).cast(pa.large_string()))
        start += len(chunk)
    if not texts:
        return empty, empty, pa.array([], pa.large_string())
    flat = pa.concat_arrays(texts)
    return (
        np.concatenate(rows).astype(np.int64),
        np.concatenate(index).astype(np.int64),
        normalize_array(flat) if normalize else flat,
    )


#: Bits of a text locator below the input row: 0 for a whole prompt, ``i + 1`` for human turn
#: ``i``; extra reference prompt ``j`` is ``-(j + 1)``.
_TURN_BITS = 20


def _turn_locators(rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    return (rows << _TURN_BITS) | (index + 1)


def _text_reader(
    pairs: pa.Table | StageTable, extras: list[str]
) -> Callable[[np.ndarray], pa.Array]:
    """``fetch(locators)``: the normalized unit texts at ``locators``, read again from ``pairs``
    (only the rows asked for are kept) or from the extra prompts."""

    def fetch(locators: np.ndarray) -> pa.Array:
        out = np.empty(len(locators), object)
        is_extra = locators < 0
        sub = locators & ((1 << _TURN_BITS) - 1)
        rows = locators >> _TURN_BITS
        whole = ~is_extra & (sub == 0)
        turn = ~is_extra & (sub > 0)
        if whole.any():
            out[whole] = read_prompts(pairs, rows[whole]).to_pylist()
        if turn.any():
            wanted = np.flatnonzero(turn)
            src, index, texts = _human_turns(
                take_rows(pairs, rows[wanted], ["prompt_turns"]), normalize=False
            )
            pick = index == sub[wanted][src] - 1  # the human turn each request asked for
            chosen = normalize_array(texts.filter(pa.array(pick)))  # only the turns asked for
            out[wanted[src[pick]]] = chosen.to_pylist()
        if is_extra.any():
            chosen = [extras[i] or "" for i in (-locators[is_extra] - 1).tolist()]
            out[is_extra] = normalize_array(pa.array(chosen, pa.large_string())).to_pylist()
        return pa.array(out.tolist(), pa.large_string())

    return fetch


def _other_references(
    n: int, extras: list[tuple[str, list[str]]], quarantined: pa.Table | None
) -> tuple[list[str], np.ndarray, np.ndarray, pa.Table]:
    """The references that are not pairs: extra prompts, then quarantined test rows.

    Returns their unit texts as one flat list (extra prompt ``i``; then per quarantined row its
    whole prompt and its human turns), each text's ``key`` and ``unit``, and the references'
    locations in key order (key ``n + j`` is row ``j``: ``matched_*`` of what they remove).
    """
    texts = [t if t is not None else "" for _, p in extras for t in p]
    n_extra = len(texts)
    keys = [n + i for i in range(n_extra)]
    units = [OPENING] * n_extra
    where = {
        "dataset": [name for name, p in extras for _ in p],
        "subset": [None] * n_extra,
        "split": [None] * n_extra,
        "source_file": [None] * n_extra,
        "source_line": [i for _, p in extras for i in range(len(p))],
    }
    if quarantined is not None:
        for j, row in enumerate(quarantined.to_pylist()):
            human = [t["text"] or "" for t in row["prompt_turns"] or [] if t["role"] == "human"]
            texts += [row["prompt"] or "", *human]
            keys += [n + n_extra + j] * (1 + len(human))
            units += [WHOLE] + [OPENING if k == 0 else LATER for k in range(len(human))]
            for name in where:
                where[name].append(row[name])
    locations = pa.table(
        {
            name: pa.array(values, pa.int64() if name == "source_line" else pa.string())
            for name, values in where.items()
        }
    )
    return texts, np.asarray(keys, np.int64), np.asarray(units, np.int8), locations


def collect_units(
    pairs: pa.Table | StageTable,
    config: DecontamConfig,
    extra_references: Sequence[tuple[str, Sequence[str]]] = (),
    quarantined: pa.Table | None = None,
) -> Units | None:
    """Phase 1: the distinct unit texts of train and reference prompts and where they occur.

    ``pairs`` (a table or a :class:`~curation.core.stage_table.StageTable`) is read batch by batch:
    each unit text is normalized, hashed and (when new) tokenized once, and only ids, hashes and
    word hashes are kept. ``quarantined`` (:func:`curation.match.references.quarantined_test_prompts`)
    adds the prompts of quarantined test rows as references, after the test pairs and the extra
    prompts. Returns ``None`` when there is nothing to compare (no train rows, or no
    references).
    """
    lap = Laps("decontaminate units")
    tbl, order = sorted_pairs(pairs)
    n = tbl.num_rows
    split = tbl["split"].to_numpy(zero_copy_only=False)
    is_train = split == "train"
    used = is_train | (split == "test")
    extras = [(str(name), list(prompts)) for name, prompts in extra_references]
    extra_texts, e_key, e_unit, other_refs = _other_references(n, extras, quarantined)
    n_extra = len(extra_texts)
    if not is_train.any() or (not (split == "test").any() and n_extra == 0):
        return None
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)  # input row -> sorted row
    texts = DistinctTexts(config.seed)
    # occurrences: whole prompts, then human turns, then extras (hash, sorted row, turn index)
    p_parts: list[tuple[np.ndarray, ...]] = []
    t_parts: list[tuple[np.ndarray, ...]] = []
    vocabulary = para.Vocabulary() if config.paraphrase != "off" else None
    columns = prompt_columns(pairs)
    if "prompt_turns" in pairs.column_names:
        columns.append("prompt_turns")
    start = 0
    for batch in table_batches(pairs, columns):
        table = pa.Table.from_batches([batch])
        p_src = np.flatnonzero(used[inv[start : start + batch.num_rows]])
        p_norm = batch_prompts(table).take(pa.array(p_src, pa.int64()))
        t_src, t_index, t_norm = _human_turns(table)
        keep_t = used[inv[start + t_src]]
        t_src, t_index, t_norm = t_src[keep_t], t_index[keep_t], t_norm.filter(pa.array(keep_t))
        locators = np.concatenate(
            [(start + p_src) << _TURN_BITS, _turn_locators(start + t_src, t_index)]
        )
        hi, lo = texts.add(pa.concat_arrays([p_norm, t_norm]), locators)
        k = len(p_src)
        p_parts.append((hi[:k], lo[:k], inv[start + p_src]))
        t_parts.append((hi[k:], lo[k:], inv[start + t_src], t_index))
        if vocabulary is not None:  # the words of the openings, for the paraphrase search
            vocabulary.add(t_norm.filter(pa.array(t_index == 0)))
        start += batch.num_rows
    e_norm = normalize_array(pa.array(extra_texts, pa.large_string()))
    e_hi, e_lo = texts.add(e_norm, -np.arange(1, n_extra + 1, dtype=np.int64))
    if vocabulary is not None:
        vocabulary.add(e_norm)
    lap("normalize, hash and tokenize")
    p_rows = np.concatenate([p[2] for p in p_parts] + [np.zeros(0, np.int64)])
    t_rows = np.concatenate([t[2] for t in t_parts] + [np.zeros(0, np.int64)])
    t_index = np.concatenate([t[3] for t in t_parts] + [np.zeros(0, np.int64)])
    hi = np.concatenate([p[0] for p in p_parts] + [t[0] for t in t_parts] + [e_hi])
    lo = np.concatenate([p[1] for p in p_parts] + [t[1] for t in t_parts] + [e_lo])
    tid, _, words = texts.words(hi, lo, _text_reader(pairs, extra_texts))
    del texts
    lap("words")
    row = np.concatenate([p_rows, t_rows, np.full(n_extra, -1, np.int64)])
    key = np.concatenate([p_rows, t_rows, e_key])
    unit = np.concatenate(
        [
            np.full(len(p_rows), WHOLE, np.int8),
            np.where(t_index == 0, OPENING, LATER).astype(np.int8),
            e_unit,
        ]
    )
    probe = np.concatenate([is_train[p_rows], is_train[t_rows], np.zeros(n_extra, bool)])
    occ = pl.DataFrame({"tid": tid, "row": row, "key": key, "unit": unit, "probe": probe})
    occ = occ.filter(pl.Series(words.counts[tid] > 0))  # empty texts never match
    counts = words.counts
    rare = rare_word_counts(words, np.arange(len(words)), config.seed)
    lap("occurrences")
    return Units(
        tbl=tbl,
        order=order,
        words=words,
        occ=occ,
        inf_open=informative(
            counts, rare, min_words=config.min_opening_words, min_words_with_rare=1
        ),
        inf_turn=informative(
            counts,
            rare,
            min_words=config.min_words,
            min_words_with_rare=config.min_words_with_rare,
        ),
        other_refs=other_refs,
        vocabulary=vocabulary,
        seed=config.seed,
    )


def _unit_kind(probe_whole: str, ref_whole: str) -> pl.Expr:
    def side(col: str) -> pl.Expr:
        return pl.when(pl.col(col)).then(pl.lit("prompt")).otherwise(pl.lit("turn"))

    return pl.concat_str(side(probe_whole), pl.lit("->"), side(ref_whole))


def _cap(matches: pl.DataFrame, key: str, max_matches: int, by: str = "row") -> pl.DataFrame:
    """Drop matches whose ``key`` is found in more than ``max_matches`` distinct ``by`` values."""
    if max_matches <= 0 or matches.height == 0:
        return matches
    counts = matches.group_by(key).agg(n_found=pl.col(by).n_unique())
    return matches.join(counts, on=key).filter(pl.col("n_found") <= max_matches).drop("n_found")


# --------------------------------------------------------------------------------------------
# Phases 2-5: the matchers
# --------------------------------------------------------------------------------------------


def _flag(frame: pl.DataFrame, flags: np.ndarray, col: str = "tid") -> pl.Series:
    """``flags[frame[col]]`` as a polars mask."""
    return pl.Series(flags[frame[col].to_numpy()] if frame.height else np.zeros(0, bool))


def _as_matches(frame: pl.DataFrame, reason: str, method: pl.Expr, score: pl.Expr) -> pl.DataFrame:
    return frame.select(
        "row",
        "key",
        reason=pl.lit(reason),
        partial="partial",
        score=score.cast(pl.Float64),
        method=method,
        probe_tid="probe_tid",
        ref_tid="ref_tid",
    )


def exact_matches(units: Units) -> pl.DataFrame:
    """Phase 2: equal whole prompts, or equal informative openings (``contaminated_exact``)."""
    whole = units.probes(WHOLE).join(units.refs(WHOLE), on="tid", suffix="_ref")
    opening = units.probes(WHOLE, OPENING).join(units.refs(WHOLE, OPENING), on="tid", suffix="_ref")
    opening = opening.filter(pl.col("opening") & pl.col("opening_ref"))
    opening = opening.filter(_flag(opening, units.inf_open))
    both = pl.concat(
        [
            whole.with_columns(partial=pl.lit(False), kind=pl.lit("prompt->prompt")),
            opening.with_columns(partial=pl.lit(True), kind=pl.lit("opening->opening")),
        ]
    ).with_columns(key="key_ref", probe_tid="tid", ref_tid="tid")
    return _as_matches(
        both,
        "contaminated_exact",
        pl.lit("xxh3-128 normalized exact ") + pl.col("kind"),
        pl.lit(1.0),
    )


def turn_matches(units: Units, config: DecontamConfig) -> pl.DataFrame:
    """Phase 3: an equal informative human turn, a later turn on at least one side
    (``contaminated_turn``); turns found in more than ``max_matches`` train prompts are generic."""
    later_probe = units.probes(LATER).join(
        units.refs(WHOLE, OPENING, LATER), on="tid", suffix="_ref"
    )
    later_ref = units.probes(WHOLE, OPENING, LATER).join(units.refs(LATER), on="tid", suffix="_ref")
    found = (
        pl.concat(
            [later_probe.select("tid", "row", "key_ref"), later_ref.select("tid", "row", "key_ref")]
        )
        .group_by("tid", "row")
        .agg(pl.col("key_ref").min())  # the first reference: deterministic
    )
    found = found.filter(_flag(found, units.inf_turn))
    found = _cap(found, "tid", config.max_matches)
    found = found.with_columns(partial=pl.lit(True), key="key_ref", probe_tid="tid", ref_tid="tid")
    return _as_matches(
        found,
        "contaminated_turn",
        pl.lit("xxh3-128 normalized exact informative turn"),
        pl.lit(1.0),
    )


def ngram_matches(units: Units, config: DecontamConfig) -> pl.DataFrame | None:
    """Phase 4: whole prompts sharing rare word n-grams that cover at least
    ``ngram_min_overlap`` of the shorter one's n-grams (``contaminated_ngram``)."""
    nn = config.ngram_n
    counts = units.words.counts
    probes = units.probes(WHOLE)
    refs = units.refs(WHOLE).sort("tid")
    p_t = probes["tid"].unique().sort().to_numpy()
    p_t = p_t[counts[p_t] >= nn]
    r_t = refs["tid"].to_numpy()
    r_t = r_t[counts[r_t] >= nn]
    if not (len(p_t) and len(r_t)):
        return None
    r_h, r_off = ngram_hashes(units.words, nn, r_t, short=False)
    ref_ng = pl.DataFrame({"h": r_h, "ref_tid": np.repeat(r_t, np.diff(r_off))}).unique()
    # only probe n-grams that some reference has (a hash-set probe before any group-by), one
    # slice of probes at a time: the n-grams of every probe at once would be ~25 M hashes
    ref_set = ref_ng["h"].implode()
    found = []
    for chunk in np.array_split(p_t, max(1, len(p_t) // NGRAM_CHUNK)):
        p_h, p_off = ngram_hashes(units.words, nn, chunk, short=False)
        hit = pl.Series(p_h).is_in(ref_set).to_numpy()
        owner = np.repeat(chunk, np.diff(p_off))[hit]
        found.append(pl.DataFrame({"h": p_h[hit], "probe_tid": owner}))
    probe_ng = pl.concat(found).unique()
    if config.max_matches > 0:  # template n-grams: in many train prompts or many references
        rows_per_tid = probes.group_by("tid").agg(pl.col("row").n_unique().alias("n_rows"))
        spread = (
            probe_ng.join(rows_per_tid, left_on="probe_tid", right_on="tid")
            .group_by("h")
            .agg(pl.col("n_rows").sum().alias("n_train"))
        )
        common = spread.filter(pl.col("n_train") > config.max_matches)["h"]
        ref_df = ref_ng.group_by("h").agg(pl.len().alias("n_ref"))
        common = pl.concat([common, ref_df.filter(pl.col("n_ref") > config.max_matches)["h"]])
        probe_ng = probe_ng.filter(~pl.col("h").is_in(common.implode()))
    shared = probe_ng.join(ref_ng, on="h").group_by("probe_tid", "ref_tid").agg(shared=pl.len())
    grams = np.maximum(counts - nn + 1, 0)
    shorter = np.minimum(grams[shared["probe_tid"].to_numpy()], grams[shared["ref_tid"].to_numpy()])
    shared = shared.with_columns(overlap=pl.Series(shared["shared"].to_numpy() / shorter))
    shared = shared.filter(pl.col("overlap") >= config.ngram_min_overlap)
    found = (
        probes.select("row", probe_tid="tid")
        .join(shared, on="probe_tid")
        .join(refs.select(ref_tid="tid", key="key"), on="ref_tid")
        .with_columns(partial=pl.lit(True))
    )
    return _as_matches(
        found,
        "contaminated_ngram",
        pl.lit(f"{nn}-gram xxh3-64 words, overlap>={config.ngram_min_overlap:g} of shorter"),
        pl.col("overlap"),
    )


def near_matches(units: Units, config: DecontamConfig) -> pl.DataFrame | None:
    """Phase 5: near-duplicate texts (:mod:`curation.match.near_dup`); a match that involves a turn
    on either side needs informative texts on both (``contaminated_near``)."""
    params = config.near_params()
    probes = units.probes(WHOLE, OPENING, LATER)
    refs = units.refs(WHOLE, OPENING, LATER)
    left = np.zeros(len(units.words), bool)
    right = np.zeros(len(units.words), bool)
    left[probes["tid"].to_numpy()] = True
    right[refs["tid"].to_numpy()] = True
    edges, _ = near_duplicate_pairs(units.words, params, left=left, right=right)
    if not edges.height:
        return None
    # like with like: whole prompts with whole prompts, turns with turns (a PKU prompt is both)
    whole_text = np.zeros(len(units.words), bool)
    turn_text = np.zeros(len(units.words), bool)
    whole_text[units.occ.filter(pl.col("unit") == WHOLE)["tid"].to_numpy()] = True
    turn_text[units.occ.filter(pl.col("unit") != WHOLE)["tid"].to_numpy()] = True
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    alike = (whole_text[a] & whole_text[b]) | (turn_text[a] & turn_text[b])
    edges, a, b = edges.filter(pl.Series(alike)), a[alike], b[alike]
    oriented = pl.concat(
        [
            edges.filter(pl.Series(left[a] & right[b])).select(
                probe_tid="a", ref_tid="b", score="score", rule="rule"
            ),
            edges.filter(pl.Series(left[b] & right[a])).select(
                probe_tid="b", ref_tid="a", score="score", rule="rule"
            ),
        ]
    )
    found = probes.rename({"tid": "probe_tid"}).join(oriented, on="probe_tid")
    found = found.join(
        refs.rename(
            {"tid": "ref_tid", "key": "key_ref", "whole": "whole_ref", "opening": "opening_ref"}
        ),
        on="ref_tid",
    ).with_columns(partial=~(pl.col("whole") & pl.col("whole_ref")))
    p_ok = np.where(
        found["opening"].to_numpy(),
        units.inf_open[found["probe_tid"].to_numpy()],
        units.inf_turn[found["probe_tid"].to_numpy()],
    )
    r_ok = np.where(
        found["opening_ref"].to_numpy(),
        units.inf_open[found["ref_tid"].to_numpy()],
        units.inf_turn[found["ref_tid"].to_numpy()],
    )
    found = found.filter(~pl.col("partial") | pl.Series(p_ok & r_ok))
    found = _cap(found, "ref_tid", config.max_matches).with_columns(key="key_ref")
    method = (
        pl.lit(params.describe() + " ")
        + pl.col("rule")
        + pl.lit(" ")
        + _unit_kind("whole", "whole_ref")
    )
    return _as_matches(found, "contaminated_near", method, pl.col("score"))


def paraphrase_matches(
    units: Units, config: DecontamConfig, skip_rows: np.ndarray | None = None
) -> pl.DataFrame | None:
    """Phase 7: train openings whose nearest reference openings mean the same (candidates for
    ``contaminated_paraphrase``).

    Probes are the informative openings (first human turn; a PKU prompt) of train pairs not in
    ``skip_rows`` (the pairs a rule already matched); references the informative openings of
    every reference. Later turns are left out: on the labelled real candidates a match with a
    later turn on either side was a paraphrase 4 times in 21 at 0.85 (context-bound follow-ups
    such as "okay how can i insult one"), an opening pair 29 times in 42 (``docs/dedup.md``
    §6). Each
    distinct text is embedded once (:func:`curation.match.paraphrase.embed`); every probe text keeps
    its :data:`~curation.match.paraphrase.NEIGHBOURS` nearest reference texts at or above
    ``paraphrase_threshold`` (:func:`curation.match.paraphrase.nearest`), other than itself (an equal
    text is the rules' business). A reference text linked to more than ``max_matches`` train
    prompts is generic, as for the other partial matchers. Returns the matches
    (:func:`find_matches` columns).
    """
    probes = units.probes(OPENING)
    if skip_rows is not None and len(skip_rows):
        probes = probes.filter(~pl.col("row").is_in(pl.Series(skip_rows).implode()))
    probes = probes.filter(_flag(probes, units.inf_open))
    refs = units.refs(OPENING)
    refs = refs.filter(_flag(refs, units.inf_open)).sort("tid")
    p_t = probes["tid"].unique().sort().to_numpy()
    r_t = refs["tid"].to_numpy()
    if not (len(p_t) and len(r_t)):
        return None
    lap = Laps(f"paraphrase {len(p_t)} train x {len(r_t)} reference openings")
    index = para.ReferenceIndex(units.embedded(r_t))
    embedded = units.embedded(p_t)
    lap("embed")
    pi, ri, score, _ = index.nearest(
        embedded, config.paraphrase_threshold, same=lambda probe, ref: p_t[probe] == r_t[ref]
    )
    del index, embedded
    lap("search")
    links = pl.DataFrame(
        {"probe_tid": p_t[pi], "ref_tid": r_t[ri], "score": score.astype(np.float64)}
    )
    found = (
        probes.rename({"tid": "probe_tid"})
        .join(links, on="probe_tid")
        .join(refs.select(ref_tid="tid", key_ref="key"), on="ref_tid")
    )
    found = _cap(found, "ref_tid", config.max_matches)
    found = found.with_columns(key="key_ref", partial=pl.lit(True))
    return _as_matches(
        found,
        "contaminated_paraphrase",
        pl.lit(para.method_name(config.paraphrase_threshold)),
        pl.col("score"),
    )


def paraphrase_table(units: Units, found: pl.DataFrame | None, removed: bool) -> pa.Table:
    """The paraphrase report (:data:`~curation.core.schema.PARAPHRASES`) of
    :func:`paraphrase_matches`: one row per (train pair, reference), its nearest unit pair
    first; sorted by ``pair_id`` then score (highest first)."""
    if found is None or found.height == 0:
        return PARAPHRASES.empty_table()
    found = found.sort(
        ["row", "key", "score", "probe_tid", "ref_tid"],
        descending=[False, False, True, False, False],
    )
    found = found.group_by("row", "key", maintain_order=True).first()
    found = found.sort(["row", "score", "key"], descending=[False, True, False])
    rows = found["row"].to_numpy()
    key = found["key"].to_numpy()
    own = units.tbl.take(pa.array(rows, pa.int64()))
    is_other = key >= units.n
    matched = units.tbl.take(pa.array(np.where(is_other, 0, key), pa.int64()))
    columns = {
        name: own[name]
        for name in ("pair_id", "dataset", "subset", "split", "source_file", "source_line")
    }
    columns["dimension"] = own["dimension"]
    columns["score"] = pa.array(found["score"].to_numpy(), pa.float64())
    where = {
        name: matched[name].combine_chunks()
        for name in ("pair_id", "dataset", "subset", "split", "source_file", "source_line")
    }
    if is_other.any():
        others = units.other_refs.take(pa.array(np.where(is_other, key - units.n, 0), pa.int64()))
        mask = pa.array(is_other)
        where["pair_id"] = pc.if_else(mask, pa.nulls(len(key), pa.string()), where["pair_id"])
        for name in ("dataset", "subset", "split", "source_file", "source_line"):
            column = others[name].combine_chunks().cast(where[name].type)
            where[name] = pc.if_else(mask, column, where[name])
    for name, values in where.items():
        columns[f"matched_{name}"] = values
    columns["text"] = units.words.texts.take(found["probe_tid"].to_numpy())
    columns["matched_text"] = units.words.texts.take(found["ref_tid"].to_numpy())
    columns["removed"] = pa.array(np.full(len(rows), removed))
    return pa.table(
        [
            columns[f.name].cast(f.type)
            if not isinstance(columns[f.name], pa.ChunkedArray)
            else columns[f.name].combine_chunks().cast(f.type)
            for f in PARAPHRASES
        ],
        schema=PARAPHRASES,
    )


# --------------------------------------------------------------------------------------------
# Phase 6: the best match per train pair, and the public entry points
# --------------------------------------------------------------------------------------------


def find_matches(units: Units, config: DecontamConfig = DecontamConfig()) -> pl.DataFrame:
    """Every match of every matcher (columns ``row, key, reason, partial, score, method,
    probe_tid, ref_tid``): exact and turn matches, then the n-gram and the near matches.

    The n-gram and near matchers run one after the other, each parallel inside. Side by side
    they were ~1.5 s faster on the scale-1.0 benchmark corpus, but their peaks added up: +160 MB
    on the largest step of the run (``docs/benchmarks.md``, third round).
    """
    lap = Laps("decontaminate")
    found = [exact_matches(units), turn_matches(units, config)]
    lap("exact and turn")
    if config.ngram:
        found.append(ngram_matches(units, config))
        lap("n-gram")
    if config.near_dup:
        found.append(near_matches(units, config))
        lap("near")
    return pl.concat(
        [
            m.cast({"score": pl.Float64, "key": pl.Int64, "row": pl.Int64})
            for m in found
            if m is not None
        ]
    )


def best_matches(matches: pl.DataFrame) -> pl.DataFrame:
    """Phase 6: one match per train row: precedence, whole before partial, highest score, the
    first reference (``key``), then the method name (a total order: the result is stable)."""
    ranked = matches.with_columns(
        prec=pl.col("reason").replace_strict(_PRECEDENCE, return_dtype=pl.Int8)
    )
    return (
        ranked.sort(
            ["row", "prec", "partial", "score", "key", "method"],
            descending=[False, False, False, True, False, False],
        )
        .group_by("row", maintain_order=True)
        .first()
    )


@dataclass
class Decontaminated:
    """What :func:`decontaminate_and_report` returns: the kept pairs, the ``REMOVED`` audit
    table, and the paraphrase report (:data:`~curation.core.schema.PARAPHRASES`; empty with
    ``paraphrase="off"``)."""

    kept: pa.Table | RowSelection
    removed: pa.Table
    paraphrases: pa.Table


def decontaminate_and_report(
    pairs: pa.Table | StageTable,
    config: DecontamConfig = DecontamConfig(),
    extra_references: Sequence[tuple[str, Sequence[str]]] = (),
    quarantined: pa.Table | None = None,
    *,
    lazy: bool = False,
) -> Decontaminated:
    """Remove train pairs whose prompt matches a reference prompt, and report paraphrases.

    With ``lazy=True`` ``kept`` is a :class:`~curation.core.selection.RowSelection` of ``pairs``.

    The reference set is the test split of ``pairs`` itself, plus ``extra_references``, a list
    of ``(name, prompts)`` (a match on an extra list is reported with ``matched_dataset = name``
    and ``matched_source_line`` = the prompt's index in its list), plus ``quarantined``, the
    prompts of quarantined test rows (:func:`curation.match.references.quarantined_test_prompts`; a
    match is reported with the quarantined row's dataset, subset, split, file and line, and a
    null ``matched_pair_id``). ``kept`` keeps the schema of ``pairs`` and its row order;
    ``removed`` has schema :data:`curation.core.schema.REMOVED`.

    Unless ``config.paraphrase`` is ``"off"``, the pairs no rule matched are searched for
    paraphrased reference units (:func:`paraphrase_matches`) and listed in ``paraphrases``;
    they are removed (``contaminated_paraphrase``) only when it is ``"remove"``.
    """
    units = collect_units(pairs, config, extra_references, quarantined)
    everything = RowSelection(pairs, np.ones(pairs.num_rows, bool)) if lazy else pairs
    if units is None:
        return Decontaminated(everything, empty_removed(), PARAPHRASES.empty_table())
    matches = find_matches(units, config)
    report = PARAPHRASES.empty_table()
    if config.paraphrase != "off":
        lap = Laps("decontaminate")
        ruled = matches["row"].unique().to_numpy()
        found = paraphrase_matches(units, config, ruled)
        report = paraphrase_table(units, found, removed=config.paraphrase == "remove")
        if config.paraphrase == "remove" and found is not None:
            matches = pl.concat([matches, found.select(_MATCH_COLUMNS).cast(matches.schema)])
        lap("paraphrase")
    if matches.height == 0:
        return Decontaminated(everything, empty_removed(), report)
    best = best_matches(matches)
    rows = best["row"].to_numpy()
    k = best["key"].to_numpy()
    n = units.n
    is_other = k >= n
    others = None
    if is_other.any():
        others = units.other_refs.take(pa.array(np.where(is_other, k - n, 0), pa.int64()))
    removed = removed_table(
        units.tbl,
        rows,
        best["reason"].to_numpy().astype(object),
        best["method"].to_numpy().astype(object),
        best["score"].to_numpy(),
        np.where(is_other, -1, k),
        others=others,
    )
    mask = np.ones(n, bool)
    mask[rows] = False
    return Decontaminated(keep_in_input_order(pairs, units.order, mask, lazy), removed, report)


def decontaminate(
    pairs: pa.Table | StageTable,
    config: DecontamConfig = DecontamConfig(),
    extra_references: Sequence[tuple[str, Sequence[str]]] = (),
    quarantined: pa.Table | None = None,
    *,
    lazy: bool = False,
) -> tuple[pa.Table | RowSelection, pa.Table]:
    """``(kept, removed)`` of :func:`decontaminate_and_report`, without the paraphrase report:
    the paraphrase search runs only when ``config.paraphrase`` is ``"remove"``."""
    if config.paraphrase == "report":
        config = replace(config, paraphrase="off")
    result = decontaminate_and_report(pairs, config, extra_references, quarantined, lazy=lazy)
    return result.kept, result.removed
