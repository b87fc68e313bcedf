"""Deterministic synthetic HH-RLHF and PKU-SafeRLHF mirrors with planted duplicates and contamination.

``python -m bench.synth --out DIR --scale 1.0 --seed 0`` writes

* ``DIR/hh-rlhf/{harmless-base,helpful-base,helpful-online,helpful-rejection-sampled}/
  {train,test}.jsonl.gz`` (lines ``{"chosen", "rejected"}``, multi-turn transcripts sharing
  their context) and ``DIR/hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz`` (one JSON
  array, as upstream);
* ``DIR/PKU-SafeRLHF/data/{Alpaca-7B,Alpaca2-7B,Alpaca3-8B}/{train,test}.jsonl`` (the current
  upstream schema, label-consistent, correct ``response_N_sha256``);
* ``DIR/ground_truth.jsonl``: one record per planted *pair* (a PKU row gives a ``helpful`` and a
  ``harmless`` pair, so a planted PKU row has two records) with the ``kind``, the planted pair's
  ``dataset/subset/split/source_file/source_line/dimension``, the ``expected_reason`` a perfect
  curator would remove it with, and the ``original_*`` row it copies (for dedup kinds the
  original pair has the same dimension; for contamination kinds the original is a test row);
* ``DIR/synth_info.json``: parameters, file row counts and planted counts.

At scale 1.0 file sizes match upstream. Texts are drawn from a seeded vocabulary of 60,000
pseudo-words (syllable compounds, Zipf-like frequencies with a flat head, so unrelated texts
share essentially no word 5-grams), with light punctuation; human turns / prompts have 8-60
words (35 % 8-15, 40 % 16-30, 25 % 31-60), responses 20-150 words. Generation is vectorized
(numpy sampling, Arrow ``binary_join``) and streams file by file: only the planted rows and the
rows they copy are held in memory.

Planted kinds (rows ~0.7 % of the train rows per dedup kind, ~0.6 % per contamination kind):

=============================  ==================================================  =======================
kind                           planted train row                                   expected reason
=============================  ==================================================  =======================
exact_duplicate                identical copy of a train row (same file, or        exact_duplicate
                               another file of the same split and dimension)
cosmetic_duplicate             copy with case / whitespace / punctuation /          exact_duplicate
                               apostrophe / NBSP / full-width edits everywhere
swapped_duplicate              copy with chosen and rejected swapped                conflicting_duplicate
near_duplicate_same_responses  8-30 word prompt with typo-level edits (one          near_duplicate
                               character edit in max(1, L // 8) words), same responses
near_duplicate_new_responses   the same with new responses (a duplicate only for    near_duplicate
                               prompt-level dedup, ``DedupConfig(prompt_dedup=True)``)
contam_exact                   a test prompt (HH: the whole test context) copied    contaminated_exact
                               into a train row of the same dataset
contam_cosmetic                the same with cosmetic edits                         contaminated_exact
contam_near                    an 8-30 word test prompt with typo-level edits       contaminated_near
contam_ngram                   a >= 20 word test prompt embedded in 5-15 words      contaminated_ngram
                               of new text on each side
contam_cross_pku_to_hh         a PKU test prompt as an HH train first human turn    contaminated_exact
contam_cross_hh_first_to_pku   an HH test first human turn as a PKU train prompt    contaminated_exact
contam_cross_hh_later_to_pku   an HH test later (2nd-4th) human turn as a PKU       contaminated_turn
                               train prompt
contam_short                   an 8-12 word test prompt copied exactly (PKU->PKU,   contaminated_exact
                               HH->HH, PKU->HH first turn, HH->PKU)
hard_template_contam           a train prompt from the template of a test prompt    (kept)
                               with one slot of 1-2 words changed (8-20 words)
hard_template_dedup            the same between two train rows (prompt_dedup)       (kept)
hard_generic_turn              an HH train conversation sharing only a generic      (kept)
                               later turn ("Yes, go on.") with a test one
=============================  ==================================================  =======================

Hard negatives are different prompts: removing one is a false positive. Every original is used by exactly one plant, so planted rows never duplicate each other.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.schema import HARM_CATEGORIES
from curation.datasets import hh_rlhf, pku_saferlhf
from curation.match.near_dup import is_typo

__all__ = [
    "CONTAM_KINDS",
    "DEDUP_KINDS",
    "EXPECTED_REASON",
    "HARD_NEGATIVE_KINDS",
    "SynthConfig",
    "generate",
]

#: Upstream row counts at scale 1.0.
HH_SIZES = {
    ("harmless-base", "train"): 42_537,
    ("harmless-base", "test"): 2_312,
    ("helpful-base", "train"): 43_835,
    ("helpful-base", "test"): 2_354,
    ("helpful-online", "train"): 22_007,
    ("helpful-online", "test"): 1_137,
    ("helpful-rejection-sampled", "train"): 52_421,
    ("helpful-rejection-sampled", "test"): 2_749,
}
PKU_SIZES = {
    ("Alpaca-7B", "train"): 27_393,
    ("Alpaca-7B", "test"): 3_036,
    ("Alpaca2-7B", "train"): 25_564,
    ("Alpaca2-7B", "test"): 2_848,
    ("Alpaca3-8B", "train"): 20_950,
    ("Alpaca3-8B", "test"): 2_327,
}
RED_TEAM_ROWS = 38_961
MIN_FILE_ROWS = 20

DEDUP_KINDS = (
    "exact_duplicate",
    "cosmetic_duplicate",
    "swapped_duplicate",
    "near_duplicate_same_responses",
    "near_duplicate_new_responses",
)
CONTAM_KINDS = (
    "contam_exact",
    "contam_cosmetic",
    "contam_near",
    "contam_ngram",
    "contam_cross_pku_to_hh",
    "contam_cross_hh_first_to_pku",
    "contam_cross_hh_later_to_pku",
    "contam_short",
)
#: Hard negatives: planted rows that a correct curator must KEEP (different prompts that share a
#: template, generic turns shared by unrelated conversations).
HARD_NEGATIVE_KINDS = ("hard_template_contam", "hard_template_dedup", "hard_generic_turn")
#: Generic follow-up turns, as labelled in the real rows (bench/labels/turn.jsonl: all false).
GENERIC_TURNS = (
    "Yes, go on.",
    "But why not?",
    "Tell me more",
    "All right, thanks.",
    "Those are good ideas!",
    "Yes it is.",
    "How do I do it?",
    "Thanks for the help",
    "That sounds good",
    "Any other advice?",
)
EXPECTED_REASON = {
    "exact_duplicate": "exact_duplicate",
    "cosmetic_duplicate": "exact_duplicate",
    "swapped_duplicate": "conflicting_duplicate",
    "near_duplicate_same_responses": "near_duplicate",
    "near_duplicate_new_responses": "near_duplicate",
    "contam_exact": "contaminated_exact",
    "contam_cosmetic": "contaminated_exact",
    "contam_near": "contaminated_near",
    "contam_ngram": "contaminated_ngram",
    "contam_cross_pku_to_hh": "contaminated_exact",
    "contam_cross_hh_first_to_pku": "contaminated_exact",
    "contam_cross_hh_later_to_pku": "contaminated_turn",
    "contam_short": "contaminated_exact",
    **{kind: None for kind in HARD_NEGATIVE_KINDS},
}

HUMAN, ASSISTANT = "\n\nHuman: ", "\n\nAssistant: "
HARMLESS_SUBSETS = ("harmless-base",)
PROMPT_SOURCES = ("Alpaca3-70B", "Alpaca-7B", "Alpaca2-7B", "Alpaca3-8B")
CHUNK_ROWS = 2048


@dataclass(frozen=True)
class SynthConfig:
    """Generator parameters (see the module docstring)."""

    scale: float = 1.0
    seed: int = 0
    vocab_size: int = 60_000
    dedup_rate: float = 0.007  # planted rows per dedup kind / train rows
    contam_rate: float = 0.006  # planted rows per contamination kind / train rows
    min_per_kind: int = 4
    gzip_level: int = 1


# --------------------------------------------------------------------------------------------
# Words and texts
# --------------------------------------------------------------------------------------------

ONSETS = (
    *("", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w"),
    *("y", "z", "bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "kl", "pl", "pr"),
    *("sc", "sh", "sk", "sl", "sm", "sn", "sp", "st", "sw", "th", "tr", "wh"),
)
NUCLEI = ("a", "e", "i", "o", "u", "ai", "au", "ea", "ee", "ei", "ia", "io", "oa", "oo", "ou", "ue")
CODAS = (
    *("", "", "", "b", "d", "k", "l", "m", "n", "p", "r", "s", "t", "x"),
    *("nd", "ng", "nt", "rk", "rt", "sk", "st"),
)
#: Token variants: word + separator. 0-2 inside a text, 3-4 end a text.
_VARIANTS = (" ", ", ", ". ", "?", ".")
_RESERVED = frozenset({"human", "assistant"})


class Vocabulary:
    """Seeded pseudo-words and vectorized text sampling."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        words: dict[str, None] = {}
        while len(words) < size:
            m = 2 * size
            n_syl = rng.choice(np.array([1, 2, 3, 4]), m, p=[0.3, 0.5, 0.17, 0.03])
            o = rng.integers(0, len(ONSETS), (m, 4))
            v = rng.integers(0, len(NUCLEI), (m, 4))
            c = rng.integers(0, len(CODAS), (m, 4))
            for i in range(m):
                w = "".join(
                    ONSETS[o[i, j]] + NUCLEI[v[i, j]] + CODAS[c[i, j]] for j in range(n_syl[i])
                )
                if len(w) >= 2 and w not in _RESERVED:
                    words[w] = None
                if len(words) >= size:
                    break
        self.words = list(words)
        # Zipf-like frequencies with a flat head: p(rank) ~ 1 / (rank + 100); sum p^2 ~ 2e-4
        weights = 1.0 / (np.arange(size) + 100.0)
        self.cdf = np.cumsum(weights / weights.sum())
        self.cdf[-1] = 1.0
        self.tokens = pa.array([w + s for w in self.words for s in _VARIANTS], pa.string())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` word indices."""
        return np.minimum(np.searchsorted(self.cdf, rng.random(n), side="right"), len(self.cdf) - 1)

    def word(self, rng: np.random.Generator, avoid: str = "") -> str:
        """One random word different from ``avoid`` (case-insensitive)."""
        while True:
            w = self.words[int(self.sample(rng, 1)[0])]
            if w != avoid.lower():
                return w

    def texts(
        self, rng: np.random.Generator, lengths: np.ndarray, question: np.ndarray | bool
    ) -> list[str]:
        """Texts of ``lengths[i]`` words (capitalized, light punctuation, ends with ? or .)."""
        lengths = np.asarray(lengths, np.int64)
        if len(lengths) == 0:
            return []
        total = int(lengths.sum())
        words = self.sample(rng, total)
        r = rng.random(total)
        variant = np.where(r < 0.05, 1, np.where(r < 0.085, 2, 0))
        ends = np.cumsum(lengths) - 1
        variant[ends] = np.where(np.broadcast_to(question, lengths.shape), 3, 4)
        tokens = self.tokens.take(pa.array(words * len(_VARIANTS) + variant))
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())
        joined = pc.binary_join(pa.ListArray.from_arrays(offsets, tokens), "")
        return pc.utf8_capitalize(joined).to_pylist()


def prompt_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    """Human-turn / prompt lengths: 35 % 8-15, 40 % 16-30, 25 % 31-60 words."""
    u = rng.random(n)
    return np.where(
        u < 0.35,
        rng.integers(8, 16, n),
        np.where(u < 0.75, rng.integers(16, 31, n), rng.integers(31, 61, n)),
    )


def response_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    """Response lengths 20-150 words, skewed short (mean ~68)."""
    return 20 + np.floor(131 * rng.random(n) ** 1.7).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass
class HHRow:
    """An HH preference line: context turns (human, assistant, ..., human) and two responses."""

    turns: list[str]
    chosen: str
    rejected: str

    def transcript(self, response: str) -> str:
        parts = [(HUMAN if i % 2 == 0 else ASSISTANT) + t for i, t in enumerate(self.turns)]
        return "".join(parts) + ASSISTANT + response

    def line(self) -> bytes:
        return orjson.dumps(
            {"chosen": self.transcript(self.chosen), "rejected": self.transcript(self.rejected)}
        )

    @property
    def human_turns(self) -> list[str]:
        return self.turns[0::2]


@dataclass
class PKURow:
    """A PKU-SafeRLHF row (current schema); sha256 fields are computed when serialized."""

    prompt: str
    responses: tuple[str, str]
    sources: tuple[str, str, str]
    safe: tuple[bool, bool]
    severity: tuple[int, int]
    categories: tuple[tuple[bool, ...], tuple[bool, ...]]
    better: int
    safer: int

    def line(self) -> bytes:
        obj: dict = {
            "prompt": self.prompt,
            "response_0": self.responses[0],
            "response_1": self.responses[1],
            "prompt_source": self.sources[0],
            "response_0_source": self.sources[1],
            "response_1_source": self.sources[2],
            "is_response_0_safe": self.safe[0],
            "is_response_1_safe": self.safe[1],
            "response_0_harm_category": dict(zip(HARM_CATEGORIES, self.categories[0], strict=True)),
            "response_1_harm_category": dict(zip(HARM_CATEGORIES, self.categories[1], strict=True)),
            "response_0_severity_level": self.severity[0],
            "response_1_severity_level": self.severity[1],
            "better_response_id": self.better,
            "safer_response_id": self.safer,
        }
        for i in (0, 1):
            digest = hashlib.sha256((self.prompt + self.responses[i]).encode("utf-8"))
            obj[f"response_{i}_sha256"] = digest.hexdigest()
        return orjson.dumps(obj)


def hh_rows(
    vocab: Vocabulary,
    rng: np.random.Generator,
    n: int,
    *,
    n_turns: np.ndarray | int | None = None,
    first_len: np.ndarray | None = None,
    first_turns: list[str] | None = None,
) -> list[HHRow]:
    """``n`` fresh HH rows with 1-4 human turns (or ``n_turns``); the first human turn can be
    given a length (``first_len``) or a text (``first_turns``)."""
    if n == 0:
        return []
    if n_turns is None:
        k = rng.choice(np.array([1, 2, 3, 4]), n, p=[0.4, 0.3, 0.18, 0.12])
    else:
        k = np.broadcast_to(np.asarray(n_turns, np.int64), (n,)).copy()
    human_len = prompt_lengths(rng, int(k.sum()))
    first_index = np.concatenate([[0], np.cumsum(k)[:-1]])
    if first_len is not None:
        human_len[first_index] = first_len
    humans = vocab.texts(rng, human_len, True)
    assistants = vocab.texts(rng, response_lengths(rng, int(k.sum() - n) + 2 * n), False)
    rows, h, a = [], 0, 0
    for i in range(n):
        turns = []
        for j in range(int(k[i])):
            if j:
                turns.append(assistants[a])
                a += 1
            turns.append(humans[h])
            h += 1
        if first_turns is not None:
            turns[0] = first_turns[i]
        rows.append(HHRow(turns, assistants[a], assistants[a + 1]))
        a += 2
    return rows


def pku_labels(rng: np.random.Generator, n: int, symmetric: bool = False) -> dict[str, np.ndarray]:
    """Consistent PKU labels for ``n`` rows; ``symmetric`` gives both responses the same safety
    and severity (so swapping the ids is label-consistent)."""
    safe = rng.random((n, 2)) < 0.45
    severity = np.where(safe, 0, rng.integers(1, 4, (n, 2)))
    if symmetric:
        safe[:, 1] = safe[:, 0]
        severity[:, 1] = severity[:, 0]
    n_cat = rng.integers(1, 4, (n, 2))
    ranks = rng.random((n, 2, len(HARM_CATEGORIES))).argsort(-1).argsort(-1)
    categories = (ranks < n_cat[..., None]) & ~safe[..., None]
    better = rng.integers(0, 2, n)
    tie = rng.integers(0, 2, n)
    lower = np.where(
        severity[:, 0] < severity[:, 1], 0, np.where(severity[:, 1] < severity[:, 0], 1, tie)
    )
    safer = np.where(safe[:, 0] != safe[:, 1], np.where(safe[:, 0], 0, 1), lower)
    return {
        "safe": safe,
        "severity": severity,
        "categories": categories,
        "better": better,
        "safer": safer,
    }


def pku_rows(
    vocab: Vocabulary,
    rng: np.random.Generator,
    n: int,
    config: str | list[str],
    *,
    prompts: list[str] | None = None,
    prompt_len: np.ndarray | None = None,
    symmetric: bool = False,
) -> list[PKURow]:
    """``n`` fresh label-consistent PKU rows of ``config`` (one name or one per row)."""
    if n == 0:
        return []
    configs = [config] * n if isinstance(config, str) else config
    if prompts is None:
        lengths = prompt_len if prompt_len is not None else prompt_lengths(rng, n)
        prompts = vocab.texts(rng, lengths, True)
    responses = vocab.texts(rng, response_lengths(rng, 2 * n), False)
    labels = pku_labels(rng, n, symmetric)
    source = rng.integers(0, len(PROMPT_SOURCES), n)
    safe, sev, cat = labels["safe"].tolist(), labels["severity"].tolist(), labels["categories"]
    better, safer = labels["better"].tolist(), labels["safer"].tolist()
    rows = []
    for i in range(n):
        rows.append(
            PKURow(
                prompts[i],
                (responses[2 * i], responses[2 * i + 1]),
                (PROMPT_SOURCES[source[i]], configs[i], configs[i]),
                (safe[i][0], safe[i][1]),
                (sev[i][0], sev[i][1]),
                (tuple(cat[i, 0].tolist()), tuple(cat[i, 1].tolist())),
                better[i],
                safer[i],
            )
        )
    return rows


# --------------------------------------------------------------------------------------------
# Text edits
# --------------------------------------------------------------------------------------------


def _split_word(token: str) -> tuple[str, str]:
    """``"Word,"`` -> ``("Word", ",")`` (our tokens are letters followed by punctuation)."""
    end = len(token)
    while end and not token[end - 1].isalpha():
        end -= 1
    return token[:end], token[end:]


_SEPS = (" ", "  ", "\t", " \n ", "\u00a0", "   ")
_SEP_P = np.array([0.72, 0.1, 0.05, 0.05, 0.05, 0.03])
_EXTRA_PUNCT = ("!", "...", ";", ",", " -", "?!", ":", ")")


def cosmetic(text: str, rng: np.random.Generator) -> str:
    """Case, whitespace, punctuation, apostrophe, NBSP and full-width edits that leave the
    :mod:`curation.core.textnorm` normal form unchanged; always changes the text."""
    tokens = text.split(" ")
    out = []
    mode = rng.integers(0, 3)  # 0: per-word case flips, 1: all lower, 2: all upper
    for token in tokens:
        word, punct = _split_word(token)
        r = rng.random(6)
        if mode == 1:
            word = word.lower()
        elif mode == 2:
            word = word.upper()
        elif r[0] < 0.25:
            word = word.swapcase() if r[0] < 0.1 else word.capitalize()
        if len(word) > 3 and r[1] < 0.05:  # an apostrophe inside the word is deleted
            i = int(rng.integers(1, len(word) - 1))
            word = word[:i] + ("'" if r[1] < 0.03 else "\u2019") + word[i:]
        if word and r[2] < 0.02:  # one full-width letter (NFKC folds it)
            i = int(rng.integers(0, len(word)))
            if word[i].isascii() and word[i].isalpha():
                word = word[:i] + chr(ord(word[i]) + 0xFEE0) + word[i + 1 :]
        if r[3] < 0.12:
            punct = ""
        elif r[3] < 0.22:
            punct += _EXTRA_PUNCT[int(rng.integers(0, len(_EXTRA_PUNCT)))]
        if r[4] < 0.03:
            word = '"' + word
        out.append(word + punct)
    seps = rng.choice(len(_SEPS), max(len(out) - 1, 0), p=_SEP_P)
    parts = [out[0]]
    for sep, token in zip(seps.tolist(), out[1:], strict=True):
        parts.append(_SEPS[sep] + token)
    result = "".join(parts)
    if rng.random() < 0.3:
        result = result + "!!"
    if rng.random() < 0.2:
        result = "  " + result
    if result == text:
        result = result + " !"
    return result


def _typo(word: str, rng: np.random.Generator) -> str:
    """One character edit inside ``word`` (>= 4 letters): swap, drop, double or replace."""
    i = int(rng.integers(1, len(word) - 1))
    op = int(rng.integers(0, 4))
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == 1:
        return word[:i] + word[i + 1 :]
    if op == 2:
        return word[:i] + word[i] + word[i:]
    new = (
        "aeiou"[int(rng.integers(0, 5))]
        if word[i] not in "aeiou"
        else "rstln"[int(rng.integers(0, 5))]
    )
    return word[:i] + new + word[i + 1 :]


def typos(text: str, rng: np.random.Generator) -> tuple[str, int]:
    """Typo-level edits: one character edit in each of ``max(1, L // 8)`` words of >= 4 letters
    (what :func:`curation.match.near_dup.edit_verdict` accepts at any length). Returns the text and
    the number of edited words."""
    tokens = text.split(" ")
    eligible = [i for i, t in enumerate(tokens) if len(_split_word(t)[0]) >= 5]
    k = min(len(eligible), max(1, len(tokens) // 8))
    for pos in rng.choice(eligible, k, replace=False).tolist() if k else []:
        word, punct = _split_word(tokens[pos])
        new = _typo(word, rng)
        tokens[pos] = (new if new.lower() != word.lower() else word + "x") + punct
    return " ".join(tokens), k


def substitute(text: str, rng: np.random.Generator, vocab: Vocabulary, k: int) -> str:
    """Replace ``k`` distinct words of ``text`` by other vocabulary words (same word count)."""
    tokens = text.split(" ")
    for pos in rng.choice(len(tokens), k, replace=False).tolist():
        word, punct = _split_word(tokens[pos])
        new = vocab.word(rng, avoid=word)
        tokens[pos] = (new.capitalize() if word[:1].isupper() else new) + punct
    return " ".join(tokens)


# --------------------------------------------------------------------------------------------
# Files and planting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilePlan:
    dataset: str
    subset: str
    split: str
    relpath: str  # inside the dataset root, as curation.ingest.sources
    root: str  # "hh-rlhf" or "PKU-SafeRLHF"
    rows: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dataset, self.subset, self.split)

    @property
    def dimension(self) -> str | None:
        if self.dataset == pku_saferlhf.NAME:
            return None
        return "harmless" if self.subset in HARMLESS_SUBSETS else "helpful"


def _scaled(n: int, scale: float) -> int:
    return max(MIN_FILE_ROWS, round(n * scale))


def file_plans(scale: float) -> list[FilePlan]:
    """The preference files of both mirrors with their row counts at ``scale``."""
    plans = []
    for f in hh_rlhf.DATASET.files():
        if f.kind == "hh_preference":
            n = _scaled(HH_SIZES[(f.subset, f.split)], scale)
            plans.append(FilePlan(f.dataset, f.subset, f.split, f.relpath, "hh-rlhf", n))
    for f in pku_saferlhf.DATASET.files():
        n = _scaled(PKU_SIZES[(f.subset, f.split)], scale)
        plans.append(FilePlan(f.dataset, f.subset, f.split, f.relpath, "PKU-SafeRLHF", n))
    return plans


Row = HHRow | PKURow


@dataclass
class Planner:
    """Chooses planted positions, builds the planted rows and their ground truth."""

    vocab: Vocabulary
    rng: np.random.Generator
    files: list[FilePlan]
    specials: dict[tuple[str, str, str], dict[int, Row]] = field(default_factory=dict)
    truth: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pools = {f.key: self.rng.permutation(f.rows).tolist() for f in self.files}
        self.by_key = {f.key: f for f in self.files}

    # ---- positions -------------------------------------------------------------------------

    def _group(self, dataset: str, split: str, dimension: str | None = None) -> list[FilePlan]:
        return [
            f
            for f in self.files
            if f.dataset == dataset
            and f.split == split
            and (dimension is None or f.dimension == dimension)
        ]

    def _pick_file(self, group: list[FilePlan]) -> FilePlan | None:
        sizes = np.array([len(self.pools[f.key]) for f in group], np.float64)
        if sizes.sum() == 0:
            return None
        return group[int(self.rng.choice(len(group), p=sizes / sizes.sum()))]

    def _take(self, f: FilePlan | None) -> tuple[FilePlan, int] | None:
        if f is None or not self.pools[f.key]:
            return None
        return f, self.pools[f.key].pop()

    def _put(self, where: tuple[FilePlan, int], row: Row) -> None:
        self.specials.setdefault(where[0].key, {})[where[1]] = row

    def _record(self, kind: str, plant: tuple[FilePlan, int], orig: tuple[FilePlan, int], detail):
        f, line = plant
        o, oline = orig
        dims = [f.dimension] if f.dimension else ["helpful", "harmless"]
        for dim in dims:
            self.truth.append(
                {
                    "kind": kind,
                    "expected_reason": EXPECTED_REASON[kind],
                    "dataset": f.dataset,
                    "subset": f.subset,
                    "split": f.split,
                    "source_file": f.relpath,
                    "source_line": line,
                    "dimension": dim,
                    "original_dataset": o.dataset,
                    "original_subset": o.subset,
                    "original_split": o.split,
                    "original_source_file": o.relpath,
                    "original_source_line": oline,
                    "original_dimension": dim
                    if kind in DEDUP_KINDS or kind == "hard_template_dedup"
                    else None,
                    "detail": detail,
                }
            )

    def _positions(self, n: int, orig_group, plant_group) -> list[tuple]:
        """``n`` (original, plant) positions; ``plant_group(orig_file)`` gives the plant files."""
        out = []
        for _ in range(n):
            orig = self._take(self._pick_file(orig_group))
            if orig is None:
                break
            plant = self._take(self._pick_file(plant_group(orig[0])))
            if plant is None:
                self.pools[orig[0].key].append(orig[1])
                break
            out.append((orig, plant))
        return out

    # ---- dedup kinds -----------------------------------------------------------------------

    def _dedup_plant_group(self, orig: FilePlan) -> list[FilePlan]:
        if self.rng.random() < 0.5:
            return [orig]
        return self._group(orig.dataset, "train", orig.dimension)

    def plan_dedup(self, kind: str, n: int) -> None:
        n_hh = round(n * 0.6)
        near = kind.startswith("near_duplicate")
        for dataset, m in ((hh_rlhf.NAME, n_hh), (pku_saferlhf.NAME, n - n_hh)):
            group = self._group(dataset, "train")
            pos = self._positions(m, group, self._dedup_plant_group)
            m = len(pos)
            lengths = self.rng.integers(8, 31, m) if near else None
            if dataset == hh_rlhf.NAME:
                originals: list[Row] = hh_rows(
                    self.vocab,
                    self.rng,
                    m,
                    n_turns=1 if near else None,
                    first_len=lengths,
                )
            else:
                originals = pku_rows(
                    self.vocab,
                    self.rng,
                    m,
                    [o.subset for (o, _), _ in pos],
                    prompt_len=lengths,
                    symmetric=kind == "swapped_duplicate",
                )
            fresh = self._fresh_like(originals, [p for _, p in pos])
            for (orig, plant), row, new in zip(pos, originals, fresh, strict=True):
                planted, detail = self._dedup_row(kind, row, new, plant[0])
                self._put(orig, row)
                self._put(plant, planted)
                self._record(kind, plant, orig, detail)

    def _fresh_like(self, originals: list[Row], plants: list[tuple[FilePlan, int]]) -> list[Row]:
        """Fresh rows (new responses / labels) of the same dataset, for kinds that need them."""
        if not originals:
            return []
        if isinstance(originals[0], HHRow):
            return hh_rows(self.vocab, self.rng, len(originals), n_turns=1, first_len=8)
        return pku_rows(self.vocab, self.rng, len(originals), [f.subset for f, _ in plants])

    def _dedup_row(self, kind: str, row: Row, fresh: Row, plant_file: FilePlan) -> tuple[Row, str]:
        if kind == "exact_duplicate":
            return _retag(row, plant_file), ""
        if kind == "cosmetic_duplicate":
            return _retag(_cosmetic_row(row, self.rng), plant_file), ""
        if kind == "swapped_duplicate":
            if isinstance(row, HHRow):
                return HHRow(list(row.turns), row.rejected, row.chosen), ""
            return _retag(replace(row, better=1 - row.better, safer=1 - row.safer), plant_file), ""
        prompt = row.turns[0] if isinstance(row, HHRow) else row.prompt
        new_prompt, k = typos(prompt, self.rng)
        detail = f"{k} typo(s)"
        base = row if kind == "near_duplicate_same_responses" else fresh
        if isinstance(base, HHRow):
            return HHRow([new_prompt], base.chosen, base.rejected), detail
        return _retag(replace(base, prompt=new_prompt), plant_file), detail

    # ---- contamination kinds ---------------------------------------------------------------

    def plan_contam(self, kind: str, n: int) -> None:
        variants = self._contam_variants(kind, n)
        for (src, dst, n_turns, lengths, label), m in variants:
            pos = self._positions(
                m, self._group(src, "test"), lambda _o, dst=dst: self._group(dst, "train")
            )
            m = len(pos)
            if m == 0:
                continue
            lens = lengths(m) if lengths is not None else None
            if n_turns == "multi":
                n_turns = self.rng.integers(2, 5, m)
            if src == hh_rlhf.NAME:
                originals: list[Row] = hh_rows(
                    self.vocab, self.rng, m, n_turns=n_turns, first_len=lens
                )
            else:
                originals = pku_rows(
                    self.vocab, self.rng, m, [o.subset for (o, _), _ in pos], prompt_len=lens
                )
            texts, details = self._contam_texts(kind, originals)
            plants = [p for _, p in pos]
            if dst == hh_rlhf.NAME:
                single = kind in ("contam_near", "contam_ngram") or (
                    kind == "contam_short" and src == hh_rlhf.NAME
                )
                if kind in ("contam_exact", "contam_cosmetic") and src == hh_rlhf.NAME:
                    fresh = hh_rows(self.vocab, self.rng, m, n_turns=1, first_len=8)
                    planted: list[Row] = [
                        HHRow(list(t), f.chosen, f.rejected)
                        for t, f in zip(texts, fresh, strict=True)
                    ]
                else:
                    planted = hh_rows(
                        self.vocab,
                        self.rng,
                        m,
                        n_turns=1 if single else self.rng.integers(1, 4, m),
                        first_turns=texts,
                    )
            else:
                planted = pku_rows(
                    self.vocab, self.rng, m, [f.subset for f, _ in plants], prompts=texts
                )
            for (orig, plant), row, new, detail in zip(
                pos, originals, planted, details, strict=True
            ):
                self._put(orig, row)
                self._put(plant, new)
                self._record(kind, plant, orig, f"{label}{detail}")

    # ---- hard negatives --------------------------------------------------------------------

    def _template_prompts(self, m: int, per_template: int = 4) -> tuple[list[str], list[str]]:
        """``m`` pairs of 8-20 word prompts from shared templates that differ in one slot of
        1-2 words (different prompts: "home address for <name>"); each template is used by up
        to ``per_template`` pairs, as real templates are."""
        a, b = [], []
        template: tuple[list[str], list[str]] = ([], [])
        used: list[str] = []  # slot words of the current template: no two are typo variants
        for i in range(m):
            if i % per_template == 0:
                used = []
                pre = [
                    self.vocab.words[j]
                    for j in self.vocab.sample(self.rng, int(self.rng.integers(4, 11)))
                ]
                suf = [
                    self.vocab.words[j]
                    for j in self.vocab.sample(self.rng, int(self.rng.integers(2, 8)))
                ]
                template = (pre, suf)
            width = int(self.rng.integers(1, 3))
            while True:
                slot_a = [self.vocab.word(self.rng) for _ in range(width)]
                slot_b = [self.vocab.word(self.rng, avoid=w) for w in slot_a]
                new = [*slot_a, *slot_b]
                if not any(
                    x == y or is_typo(x, y)
                    for j, x in enumerate(new)
                    for y in [*used, *new[j + 1 :]]
                ):
                    used.extend(new)
                    break
            pre, suf = template
            a.append(" ".join([*pre, *slot_a, *suf]).capitalize() + "?")
            b.append(" ".join([*pre, *slot_b, *suf]).capitalize() + "?")
        return a, b

    def plan_hard(self, kind: str, n: int) -> None:
        """Hard negatives: template siblings (test -> train, or train -> train for dedup with
        ``prompt_dedup``) and generic later turns shared by unrelated conversations."""
        if kind == "hard_generic_turn":
            self._plan_generic_turns(n)
            return
        contam = kind == "hard_template_contam"
        for dataset, m in ((hh_rlhf.NAME, n - n // 2), (pku_saferlhf.NAME, n // 2)):
            pos = self._positions(
                m,
                self._group(dataset, "test" if contam else "train"),
                (lambda _o, d=dataset: self._group(d, "train"))
                if contam
                else self._dedup_plant_group,
            )
            m = len(pos)
            first, second = self._template_prompts(m)
            if dataset == hh_rlhf.NAME:
                originals: list[Row] = hh_rows(
                    self.vocab, self.rng, m, n_turns=1, first_turns=first
                )
                planted: list[Row] = hh_rows(self.vocab, self.rng, m, n_turns=1, first_turns=second)
            else:
                originals = pku_rows(
                    self.vocab, self.rng, m, [o.subset for (o, _), _ in pos], prompts=first
                )
                planted = pku_rows(
                    self.vocab, self.rng, m, [p.subset for _, (p, _) in pos], prompts=second
                )
            for (orig, plant), row, new in zip(pos, originals, planted, strict=True):
                self._put(orig, row)
                self._put(plant, new)
                self._record(kind, plant, orig, "template sibling: one slot differs")

    def _plan_generic_turns(self, n: int) -> None:
        pos = self._positions(
            n, self._group(hh_rlhf.NAME, "test"), lambda _o: self._group(hh_rlhf.NAME, "train")
        )
        m = len(pos)
        originals = hh_rows(self.vocab, self.rng, m, n_turns=self.rng.integers(2, 4, m))
        planted = hh_rows(self.vocab, self.rng, m, n_turns=self.rng.integers(2, 4, m))
        for (orig, plant), row, new in zip(pos, originals, planted, strict=True):
            generic = GENERIC_TURNS[int(self.rng.integers(0, len(GENERIC_TURNS)))]
            row.turns[2] = generic  # the second human turn
            new.turns[2 * int(self.rng.integers(1, len(new.human_turns)))] = generic
            self._put(orig, row)
            self._put(plant, new)
            self._record("hard_generic_turn", plant, orig, f"shares {generic!r}")

    def _contam_variants(self, kind: str, n: int):
        """``((source dataset, target dataset, n_turns, lengths(m), label), rows)`` parts."""
        hh, pku = hh_rlhf.NAME, pku_saferlhf.NAME

        def between(lo: int, hi: int):
            return lambda m: self.rng.integers(lo, hi + 1, m)

        half = n // 2
        if kind in ("contam_exact", "contam_cosmetic"):
            return [
                ((hh, hh, None, None, "hh->hh"), n - half),
                ((pku, pku, None, None, "pku->pku"), half),
            ]
        if kind == "contam_near":
            lens = between(8, 30)
            return [
                ((hh, hh, 1, lens, "hh->hh"), n - half),
                ((pku, pku, None, lens, "pku->pku"), half),
            ]
        if kind == "contam_ngram":
            lens = between(20, 60)
            return [
                ((hh, hh, 1, lens, "hh->hh"), n - half),
                ((pku, pku, None, lens, "pku->pku"), half),
            ]
        if kind == "contam_cross_pku_to_hh":
            return [((pku, hh, None, None, "pku->hh first turn"), n)]
        if kind == "contam_cross_hh_first_to_pku":
            return [((hh, pku, None, None, "hh first turn->pku"), n)]
        if kind == "contam_cross_hh_later_to_pku":
            return [((hh, pku, "multi", None, "hh later turn->pku"), n)]
        if kind == "contam_short":
            lens = between(8, 12)
            q = n // 4
            return [
                ((pku, pku, None, lens, "pku->pku"), n - 3 * q),
                ((hh, hh, 1, lens, "hh->hh"), q),
                ((pku, hh, None, lens, "pku->hh first turn"), q),
                ((hh, pku, 1, lens, "hh->pku"), q),
            ]
        raise ValueError(kind)

    def _contam_texts(self, kind: str, originals: list[Row]) -> tuple[list, list[str]]:
        """The copied text per original (HH within-dataset exact/cosmetic: the context turns)."""
        texts, details = [], []
        for row in originals:
            detail = ""
            prompt = row.turns[0] if isinstance(row, HHRow) else row.prompt
            if kind == "contam_exact":
                text = list(row.turns) if isinstance(row, HHRow) else prompt
            elif kind == "contam_cosmetic":
                if isinstance(row, HHRow):
                    text = [cosmetic(t, self.rng) for t in row.turns]
                else:
                    text = cosmetic(prompt, self.rng)
            elif kind == "contam_near":
                text, k = typos(prompt, self.rng)
                detail = f", {k} typo(s)"
            elif kind == "contam_ngram":
                a, b = self.rng.integers(5, 16, 2)
                pre, post = self.vocab.texts(self.rng, np.array([a, b]), False)
                text = f"{pre} {prompt} {post}"
                detail = f", +{a}/{b} words around"
            elif kind == "contam_cross_hh_later_to_pku":
                assert isinstance(row, HHRow)
                humans = row.human_turns
                j = int(self.rng.integers(1, len(humans)))
                text, detail = humans[j], f", human turn {j + 1} of {len(humans)}"
            else:
                text = prompt
            texts.append(text)
            details.append(detail)
        return texts, details


def _retag(row: Row, plant_file: FilePlan) -> Row:
    """A PKU row copied into another config gets that config's response sources."""
    if isinstance(row, PKURow) and row.sources[1] != plant_file.subset:
        return replace(row, sources=(row.sources[0], plant_file.subset, plant_file.subset))
    return row


def _cosmetic_row(row: Row, rng: np.random.Generator) -> Row:
    if isinstance(row, HHRow):
        return HHRow(
            [cosmetic(t, rng) for t in row.turns],
            cosmetic(row.chosen, rng),
            cosmetic(row.rejected, rng),
        )
    return replace(
        row,
        prompt=cosmetic(row.prompt, rng),
        responses=(cosmetic(row.responses[0], rng), cosmetic(row.responses[1], rng)),
    )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _open(path: Path, level: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = open(path, "wb")  # noqa: SIM115 - closed by the caller via the returned pair
    if path.suffix == ".gz":
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0), raw
    return raw, raw


def _write_preference_file(
    out: Path,
    f: FilePlan,
    vocab: Vocabulary,
    rng: np.random.Generator,
    specials: dict[int, Row],
    level: int,
) -> None:
    handle, raw = _open(out / f.root / f.relpath, level)
    try:
        for start in range(0, f.rows, CHUNK_ROWS):
            m = min(CHUNK_ROWS, f.rows - start)
            if f.dataset == hh_rlhf.NAME:
                rows: list[Row] = hh_rows(vocab, rng, m)
            else:
                rows = pku_rows(vocab, rng, m, f.subset)
            lines = [specials.get(start + j, row).line() for j, row in enumerate(rows)]
            handle.write(b"\n".join(lines) + b"\n")
    finally:
        handle.close()
        raw.close()


def _red_team_objects(vocab: Vocabulary, rng: np.random.Generator, n: int) -> Iterator[dict]:
    models = ("plain lm", "context distillation", "rejection sampling", "rlhf")
    params = ("2.7B", "13B", "52B")
    for start in range(0, n, CHUNK_ROWS):
        m = min(CHUNK_ROWS, n - start)
        rows = hh_rows(vocab, rng, m)
        tasks = vocab.texts(rng, rng.integers(5, 20, m), False)
        scores = np.round(rng.normal(0.0, 1.5, (m, 2)), 2).tolist()
        rating = rng.integers(0, 5, m).tolist()
        model = rng.integers(0, len(models), m).tolist()
        size = rng.integers(0, len(params), m).tolist()
        upworker = (rng.random(m) < 0.5).tolist()
        member = rng.integers(0, 400, m).tolist()
        for i, row in enumerate(rows):
            yield {
                "transcript": row.transcript(row.chosen),
                "min_harmlessness_score_transcript": scores[i][0],
                "num_params": params[size[i]],
                "model_type": models[model[i]],
                "rating": float(rating[i]),
                "task_description": tasks[i],
                "task_description_harmlessness_score": scores[i][1],
                "red_team_member_id": member[i],
                "is_upworker": upworker[i],
                "tags": None,
            }


def _write_red_team(out: Path, vocab: Vocabulary, rng: np.random.Generator, n: int, level: int):
    handle, raw = _open(out / "hh-rlhf" / "red-team-attempts" / "red_team_attempts.jsonl.gz", level)
    try:
        handle.write(b"[\n")
        for i, obj in enumerate(_red_team_objects(vocab, rng, n)):
            handle.write((b",\n" if i else b"") + orjson.dumps(obj, option=orjson.OPT_INDENT_2))
        handle.write(b"\n]\n")
    finally:
        handle.close()
        raw.close()


def plant_counts(config: SynthConfig, files: list[FilePlan]) -> dict[str, int]:
    """Planted rows per kind."""
    train = sum(f.rows for f in files if f.split == "train")
    counts = {}
    for kind in DEDUP_KINDS:
        counts[kind] = max(config.min_per_kind, round(config.dedup_rate * train))
    for kind in (*CONTAM_KINDS, *HARD_NEGATIVE_KINDS):
        counts[kind] = max(config.min_per_kind, round(config.contam_rate * train))
    return counts


def generate(out: str | Path, config: SynthConfig = SynthConfig()) -> dict:
    """Write the synthetic mirrors, ``ground_truth.jsonl`` and ``synth_info.json`` into ``out``;
    returns the info dict."""
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = Vocabulary(np.random.default_rng([config.seed, 0]), config.vocab_size)
    files = file_plans(config.scale)
    planner = Planner(vocab, np.random.default_rng([config.seed, 1]), files)
    wanted = plant_counts(config, files)
    for kind in DEDUP_KINDS:
        planner.plan_dedup(kind, wanted[kind])
    for kind in CONTAM_KINDS:
        planner.plan_contam(kind, wanted[kind])
    for kind in HARD_NEGATIVE_KINDS:
        planner.plan_hard(kind, wanted[kind])
    planned = time.perf_counter()
    for index, f in enumerate(files):
        rng = np.random.default_rng([config.seed, 2, index])
        specials = planner.specials.get(f.key, {})
        _write_preference_file(out, f, vocab, rng, specials, config.gzip_level)
    red_team = _scaled(RED_TEAM_ROWS, config.scale)
    _write_red_team(
        out, vocab, np.random.default_rng([config.seed, 3]), red_team, config.gzip_level
    )
    with open(out / "ground_truth.jsonl", "wb") as handle:
        for record in planner.truth:
            handle.write(orjson.dumps(record) + b"\n")
    planted_rows: dict[str, int] = {}
    planted_pairs: dict[str, int] = {}
    seen = set()
    for r in planner.truth:
        planted_pairs[r["kind"]] = planted_pairs.get(r["kind"], 0) + 1
        key = (r["kind"], r["source_file"], r["source_line"], r["dataset"])
        if key not in seen:
            seen.add(key)
            planted_rows[r["kind"]] = planted_rows.get(r["kind"], 0) + 1
    info = {
        "scale": config.scale,
        "seed": config.seed,
        "vocab_size": config.vocab_size,
        "files": {f"{f.root}/{f.relpath}": f.rows for f in files},
        "red_team_rows": red_team,
        "planted_rows": planted_rows,
        "planted_pairs": planted_pairs,
        "seconds": {
            "plan": round(planned - started, 2),
            "total": round(time.perf_counter() - started, 2),
        },
    }
    (out / "synth_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = upstream sizes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    info = generate(args.out, SynthConfig(scale=args.scale, seed=args.seed))
    rows = sum(info["files"].values())
    print(
        f"wrote {rows:,} preference rows in {len(info['files'])} files + "
        f"{info['red_team_rows']:,} red-team transcripts to {args.out} "
        f"in {info['seconds']['total']:.1f} s"
    )
    for kind, n in info["planted_rows"].items():
        print(f"  {kind:32s} {n:6,d} rows  {info['planted_pairs'][kind]:6,d} pairs")


if __name__ == "__main__":
    main()
