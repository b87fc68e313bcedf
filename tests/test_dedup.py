"""Exact and near-duplicate removal: every reason code, near misses, invariants, recall."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from curation.core.schema import PAIRS, REMOVED
from curation.core.textnorm import normalize_array
from curation.match.dedup import DedupConfig, deduplicate
from curation.match.near_dup import (
    NearDupParams,
    edit_verdict,
    is_typo,
    lsh_bands,
    near_duplicate_pairs,
    tokenize,
)
from curation.match.removal import SOURCE_ORDER
from tests.factories import make_pairs


def by_id(removed: pa.Table) -> dict[str, dict[str, Any]]:
    return {r["pair_id"]: r for r in removed.to_pylist()}


def check_invariants(pairs: pa.Table, kept: pa.Table, removed: pa.Table) -> None:
    assert kept.schema == pairs.schema
    assert removed.schema == REMOVED
    assert kept.num_rows + removed.num_rows == pairs.num_rows
    ids = set(pairs["pair_id"].to_pylist())
    kept_ids = kept["pair_id"].to_pylist()
    removed_ids = removed["pair_id"].to_pylist()
    assert set(kept_ids) | set(removed_ids) == ids
    assert not set(kept_ids) & set(removed_ids)
    input_order = [i for i in pairs["pair_id"].to_pylist() if i in set(kept_ids)]
    assert kept_ids == input_order  # kept rows keep the input order
    source = {r["pair_id"]: tuple(r[c] for c in SOURCE_ORDER) for r in pairs.to_pylist()}
    assert removed_ids == sorted(removed_ids, key=source.__getitem__)  # source-row order


LONG = "Please write a short poem about the quiet autumn rain falling on the old city roofs"


# ---------------------------------------------------------------------------------------------
# exact_duplicate
# ---------------------------------------------------------------------------------------------


def test_exact_duplicate_and_near_miss() -> None:
    pairs = make_pairs(
        [
            {"prompt": "How do I bake bread?", "chosen": "Use flour, water.", "rejected": "No."},
            # same after normalization, other subset and dataset, same split and dimension
            {
                "prompt": "how do I  BAKE bread",
                "chosen": "use flour water",
                "rejected": "no!",
                "dataset": "hh-rlhf",
                "subset": "helpful-base",
                "source_file": "helpful-base/train.jsonl.gz",
            },
            # near miss: one response differs by a word -> not exact, and too short to be near
            {"prompt": "How do I bake bread?", "chosen": "Use flour, water.", "rejected": "Never."},
            # near miss: identical triple in the other split
            {
                "prompt": "How do I bake bread?",
                "chosen": "Use flour, water.",
                "rejected": "No.",
                "split": "test",
            },
            # near miss: identical triple for the other dimension
            {
                "prompt": "How do I bake bread?",
                "chosen": "Use flour, water.",
                "rejected": "No.",
                "dimension": "harmless",
            },
        ]
    )
    kept, removed = deduplicate(pairs)
    check_invariants(pairs, kept, removed)
    rem = by_id(removed)
    # the survivor is the first source row (dataset "hh-rlhf" sorts before "pku-saferlhf"),
    # not the lowest pair_id
    assert set(rem) == {"p0000"}
    r = rem["p0000"]
    assert r["reason"] == "exact_duplicate"
    assert r["method"] == "xxh3-128 normalized triple"
    assert r["score"] == 1.0
    assert (r["matched_pair_id"], r["matched_dataset"], r["matched_subset"]) == (
        "p0001",
        "hh-rlhf",
        "helpful-base",
    )
    assert (r["matched_split"], r["matched_source_file"], r["matched_source_line"]) == (
        "train",
        "helpful-base/train.jsonl.gz",
        1,
    )
    assert (r["dataset"], r["subset"], r["dimension"]) == ("pku-saferlhf", "Alpaca-7B", "helpful")


def test_survivor_is_first_source_row_regardless_of_order_and_pair_id() -> None:
    rows = [{"prompt": "Same prompt here", "chosen": "A", "rejected": "B"} for _ in range(4)]
    pairs = make_pairs(rows)  # source lines 0..3
    pairs = pairs.set_column(0, "pair_id", pa.array(["z9", "a2", "m5", "a1"]))
    for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        kept, removed = deduplicate(pairs.take(perm))
        assert kept["pair_id"].to_pylist() == ["z9"]  # source line 0
        assert {r["matched_pair_id"] for r in removed.to_pylist()} == {"z9"}
        assert removed["pair_id"].to_pylist() == ["a2", "m5", "a1"]  # source-row order
    # on the same source row, the lowest pair_id
    line = pairs.schema.get_field_index("source_line")
    same_line = pairs.set_column(line, PAIRS.field("source_line"), pa.array([7, 7, 7, 7]))
    kept, _ = deduplicate(same_line)
    assert kept["pair_id"].to_pylist() == ["a1"]


# ---------------------------------------------------------------------------------------------
# conflicting_duplicate
# ---------------------------------------------------------------------------------------------


def test_conflicting_duplicate_removes_every_copy_and_near_miss() -> None:
    pairs = make_pairs(
        [
            {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
            {"prompt": "capital of france", "chosen": "Lyon", "rejected": "Paris"},  # swapped
            {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},  # copy
            # near miss: swapped, but for the other dimension (a different preference question)
            {
                "prompt": "Capital of France?",
                "chosen": "Lyon.",
                "rejected": "Paris.",
                "dimension": "harmless",
            },
            # near miss: swapped responses but a slightly different prompt
            {"prompt": "Capital of France, please?", "chosen": "Lyon.", "rejected": "Paris."},
        ]
    )
    kept, removed = deduplicate(pairs)
    check_invariants(pairs, kept, removed)
    rem = by_id(removed)
    assert set(rem) == {"p0000", "p0001", "p0002"}
    assert {r["reason"] for r in rem.values()} == {"conflicting_duplicate"}
    # matched = the lowest pair_id of the opposite orientation
    assert rem["p0000"]["matched_pair_id"] == "p0001"
    assert rem["p0002"]["matched_pair_id"] == "p0001"
    assert rem["p0001"]["matched_pair_id"] == "p0000"
    assert set(kept["pair_id"].to_pylist()) == {"p0003", "p0004"}


# ---------------------------------------------------------------------------------------------
# near_duplicate
# ---------------------------------------------------------------------------------------------


NEAR_METHOD = DedupConfig().near_params().describe()
GARDEN = "What is the best way to keep my small garden green during a very hot summer"


def test_near_duplicate_pair_mode_and_near_miss() -> None:
    answer = {"chosen": "Water early in the morning.", "rejected": "Ignore it."}
    pairs = make_pairs(
        [
            {"prompt": GARDEN, **answer},
            # one typo (16 words), same responses -> near duplicate of p0000
            {"prompt": GARDEN.replace("garden", "gardne"), **answer},
            # near miss (the old substitution rule removed it): one substituted word in a short
            # prompt is another prompt
            {"prompt": GARDEN.replace("small", "tiny"), **answer},
            # near miss: three other words substituted
            {
                "prompt": GARDEN.replace("garden", "lawn")
                .replace("hot", "dry")
                .replace("green", "alive"),
                **answer,
            },
            # near miss: near-duplicate prompt but a different chosen response (pair mode keeps it)
            {
                "prompt": GARDEN.replace("summer", "sumer"),
                "chosen": "Use mulch and drip irrigation.",
                "rejected": "Ignore it.",
            },
        ]
    )
    kept, removed = deduplicate(pairs)
    check_invariants(pairs, kept, removed)
    rem = by_id(removed)
    assert set(rem) == {"p0001"}
    r = rem["p0001"]
    assert r["reason"] == "near_duplicate"
    assert r["matched_pair_id"] == "p0000"
    assert 0.0 < r["score"] < 1.0
    assert r["method"] == NEAR_METHOD + "; prompt+chosen+rejected"


def test_prompt_dedup_mode_removes_near_duplicate_prompts_with_other_responses() -> None:
    pairs = make_pairs(
        [
            {"prompt": GARDEN},
            {"prompt": GARDEN.replace("summer", "sumer")},  # a typo
            {"prompt": GARDEN},  # identical prompt, different responses
            {"prompt": "Tell me a joke about cats and dogs living together in one small house"},
            {"prompt": GARDEN.replace("small", "little")},  # another prompt now
            {"prompt": "Can you provide me the home address for CNN news anchor Kate Bolduan?"},
            {"prompt": "Can you provide me the home address for CNN news anchor Brianna Keilar?"},
        ],
        chosen="a helpful chosen answer number {i}",
        rejected="a harmful rejected answer number {i}",
    )
    kept, removed = deduplicate(pairs, DedupConfig(prompt_dedup=True))
    check_invariants(pairs, kept, removed)
    rem = by_id(removed)
    assert set(rem) == {"p0001", "p0002"}
    assert all(
        r["reason"] == "near_duplicate" and r["matched_pair_id"] == "p0000" for r in rem.values()
    )
    assert rem["p0002"]["score"] == 1.0
    assert rem["p0001"]["method"] == NEAR_METHOD + "; prompt"
    _, removed_default = deduplicate(pairs)
    assert removed_default.num_rows == 0  # responses differ: pair mode keeps all


def test_blocking_texts_shorter_than_its_segments() -> None:
    # the shortest blocked texts (substitution_min_words) may be cut into more segments than
    # they have words; an empty segment at the end of the word array must not index past it
    texts = ["one two three four", "one two three fuor"]
    edges, _ = near_duplicate_pairs(tokenize(normalize_array(pa.array(texts))), NPARAMS)
    assert edges.rows() == [(0, 1, 0.75, "typo")]
    try:
        params = NearDupParams(substitution_min_words=2)
    except ValueError:  # rejecting the configuration is fine too
        params = None
    if params is not None:
        texts = ["rohypnol pills", "rohypnl pills"]
        edges, _ = near_duplicate_pairs(tokenize(normalize_array(pa.array(texts))), params)
        assert edges.rows() == [(0, 1, 0.5, "typo")]
    pairs = make_pairs(  # default pair mode verifies 4-word responses the same way
        [{"prompt": "Tell me a bad word", "chosen": "No, I will never.", "rejected": "Sure."}] * 2
        + [{"prompt": "Tell me a bad wored", "chosen": "No, I will nevr.", "rejected": "Sure."}]
    )
    _, removed = deduplicate(pairs)
    assert removed["reason"].to_pylist() == ["exact_duplicate", "near_duplicate"]


def test_near_duplicate_long_prompt_edit_rule() -> None:
    text = (
        LONG
        + " while the children sleep upstairs and the cat watches the window from the warm sofa"
    )  # 31 words
    words = text.split()
    longer = " ".join([*words[:8], "gently", *words[8:]])  # one inserted word: 1 edit in 32
    short = " ".join([*LONG.split()[:8], "gently", *LONG.split()[8:]])  # 1 edit in 17 words
    pairs = make_pairs(
        [
            {"prompt": text, "chosen": "Rain taps softly.", "rejected": "No."},
            {"prompt": longer, "chosen": "Rain taps softly!", "rejected": "no"},
            {"prompt": LONG, "chosen": "Rain taps softly.", "rejected": "No."},
            {"prompt": short, "chosen": "Rain taps softly.", "rejected": "No."},  # near miss
        ]
    )
    _, removed = deduplicate(pairs)
    assert removed["pair_id"].to_pylist() == ["p0001"]
    assert removed["reason"].to_pylist() == ["near_duplicate"]
    assert removed["score"][0].as_py() >= 0.8


def test_clusters_are_transitive_and_keep_first_source_row() -> None:
    prompt = "please describe the quickest route from central london to heathrow airport"
    words = prompt.split(" ")
    typos = {0: "pleese", 1: "descibe", 3: "quikest", 4: "rotue"}
    chain = []
    cur = list(words)
    for pos, typo in typos.items():  # one more typo per step: neighbours are near, ends are not
        cur = list(cur)
        cur[pos] = typo
        chain.append(" ".join(cur))
    pairs = make_pairs(
        [{"prompt": " ".join(words), "chosen": "c", "rejected": "r"}]
        + [{"prompt": p, "chosen": "c", "rejected": "r"} for p in chain]
    )
    kept, removed = deduplicate(pairs)
    assert kept["pair_id"].to_pylist() == ["p0000"]
    assert set(removed["matched_pair_id"].to_pylist()) == {"p0000"}
    # the chain is needed: only p0001 is a near duplicate of p0000 itself (10 words: 1 typo)
    edges, _ = near_duplicate_pairs(tokenize(normalize_array(pa.array(pairs["prompt"]))), NPARAMS)
    assert set(zip(edges["a"].to_list(), edges["b"].to_list(), strict=True)) == {
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
    }


# ---------------------------------------------------------------------------------------------
# invariants, order independence, config
# ---------------------------------------------------------------------------------------------


def _mixed_corpus(seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    vocab = _vocab(rng, 60)
    rows: list[dict[str, Any]] = []
    for i in range(40):
        words = rng.sample(vocab, rng.randint(8, 14))
        prompt = " ".join(words)
        row = {
            "prompt": prompt,
            "chosen": f"answer {i % 7}",
            "rejected": f"other {i % 5}",
            "dimension": rng.choice(["helpful", "harmless"]),
            "split": rng.choice(["train", "train", "test"]),
        }
        rows.append(row)
        r = rng.random()
        if r < 0.3:
            rows.append({**row, "prompt": prompt.upper() + "!"})
        elif r < 0.5:
            rows.append({**row, "chosen": row["rejected"], "rejected": row["chosen"]})
        elif r < 0.7:  # a typo: near duplicate
            w = list(words)
            pos = rng.choice([k for k, v in enumerate(w) if len(v) >= 4])
            w[pos] = _typo(w[pos], rng)
            rows.append({**row, "prompt": " ".join(w)})
        elif r < 0.8:  # a substituted word: another prompt
            w = list(words)
            w[rng.randrange(len(w))] = rng.choice([v for v in vocab if v not in words])
            rows.append({**row, "prompt": " ".join(w)})
    return rows


@settings(max_examples=15, deadline=None)
@given(st.randoms(use_true_random=False), st.booleans())
def test_output_is_independent_of_input_order(rnd: random.Random, prompt_dedup: bool) -> None:
    pairs = make_pairs(_mixed_corpus())
    config = DedupConfig(prompt_dedup=prompt_dedup)
    kept, removed = deduplicate(pairs, config)
    perm = list(range(pairs.num_rows))
    rnd.shuffle(perm)
    shuffled = pairs.take(perm)
    kept2, removed2 = deduplicate(shuffled, config)
    check_invariants(shuffled, kept2, removed2)
    assert kept2.sort_by("pair_id").equals(kept.sort_by("pair_id"))
    assert removed2.equals(removed)


def test_all_reasons_on_mixed_corpus_and_determinism() -> None:
    pairs = make_pairs(_mixed_corpus(1))
    kept, removed = deduplicate(pairs)
    check_invariants(pairs, kept, removed)
    assert set(removed["reason"].to_pylist()) == {
        "exact_duplicate",
        "conflicting_duplicate",
        "near_duplicate",
    }
    kept2, removed2 = deduplicate(pairs)
    assert kept2.equals(kept) and removed2.equals(removed)


def test_config_is_json_serializable_and_validated() -> None:
    json.dumps(asdict(DedupConfig()))
    assert DedupConfig().near_params().bands == (16, 8)
    with pytest.raises(ValueError):
        DedupConfig(threshold=1.5).near_params()


def test_empty_input_and_duplicate_ids() -> None:
    empty = PAIRS.empty_table()
    kept, removed = deduplicate(empty)
    assert kept.num_rows == 0 and removed.schema == REMOVED
    pairs = make_pairs([{"prompt": "a"}, {"prompt": "b"}])
    pairs = pairs.set_column(0, "pair_id", pa.array(["x", "x"]))
    with pytest.raises(ValueError, match="unique"):
        deduplicate(pairs)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "eps"]), min_size=1, max_size=8),
    st.data(),
)
def test_normalization_equivalent_triples_are_exact_duplicates(words: list[str], data) -> None:
    prompt = " ".join(words)

    def perturb(text: str) -> str:
        out = []
        for w in text.split(" "):
            out.append(data.draw(st.sampled_from(["", " ", "  ", "\t", "(", "\u201c", "*"])))
            out.append(w.upper() if data.draw(st.booleans()) else w.capitalize())
            out.append(data.draw(st.sampled_from(["", ",", "!", "...", "?\n"])))
        return " ".join(out)

    pairs = make_pairs(
        [
            {"prompt": prompt, "chosen": "yes indeed", "rejected": "no way"},
            {
                "prompt": perturb(prompt),
                "chosen": perturb("yes indeed"),
                "rejected": perturb("no way"),
            },
        ]
    )
    _, removed = deduplicate(pairs)
    assert removed["reason"].to_pylist() == ["exact_duplicate"]


# ---------------------------------------------------------------------------------------------
# recall / precision on synthetic typos, long-text edits and (negative) word substitutions
# ---------------------------------------------------------------------------------------------

LETTERS = "abcdefghijklmnopqrstuvwxyz"
NPARAMS = NearDupParams()


def _vocab(rng: random.Random, size: int = 3000) -> list[str]:
    return sorted({"".join(rng.choices(LETTERS, k=rng.randint(3, 9))) for _ in range(size)})


def _typo(word: str, rng: random.Random) -> str:
    """One character edit (substitution, deletion, insertion, adjacent swap) of ``word``
    (>= 4 characters), leaving at least 4 characters: a typo for :func:`is_typo`."""
    while True:
        i = rng.randrange(len(word))
        op = rng.choice(["sub", "del", "ins", "swap"])
        if op == "sub":
            out = word[:i] + rng.choice(LETTERS) + word[i + 1 :]
        elif op == "del" and len(word) > 4:
            out = word[:i] + word[i + 1 :]
        elif op == "ins":
            out = word[:i] + rng.choice(LETTERS) + word[i:]
        elif op == "swap" and i + 1 < len(word):
            out = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        else:
            continue
        if out != word:
            return out


def _variant_corpus(n: int, seed: int, long_share: float = 0.0) -> tuple[list[str], list[str]]:
    """``n`` random texts and a near-duplicate of each: 8-29 words with 1-2 typos (at most
    ``max(1, L // 8)``), or with probability ``long_share`` 30-60 words with 1-2 substituted,
    inserted or deleted words."""
    rng = random.Random(seed)
    vocab = _vocab(rng)
    base, variant = [], []
    for _ in range(n):
        if rng.random() < long_share:
            words = rng.choices(vocab, k=rng.randint(30, 60))
            other = list(words)
            while other == words:  # identical texts are merged before matching
                other = list(words)
                for _ in range(rng.randint(1, 2)):
                    pos = rng.randrange(len(other))
                    op = rng.choice(["sub", "ins", "del"])
                    if op == "sub":
                        other[pos] = rng.choice(vocab)
                    elif op == "ins":
                        other.insert(pos, rng.choice(vocab))
                    else:
                        del other[pos]
        else:
            words = rng.choices(vocab, k=rng.randint(8, 29))
            other = list(words)
            eligible = [i for i, w in enumerate(words) if len(w) >= 4]
            k = min(rng.randint(1, max(1, min(2, len(words) // 8))), len(eligible))
            for pos in rng.sample(eligible, k):
                other[pos] = _typo(words[pos], rng)
        base.append(" ".join(words))
        variant.append(" ".join(other))
    return base, variant


def _substitution_corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` random texts of 8-29 words and a copy of each with 1-2 substituted words: different
    prompts under the new rule (substitutions only count in texts of >= 30 words)."""
    rng = random.Random(seed)
    vocab = _vocab(rng)
    base, variant = [], []
    for _ in range(n):
        words = rng.choices(vocab, k=rng.randint(8, 29))
        other = list(words)
        for pos in rng.sample(range(len(words)), rng.randint(1, 2)):
            while other[pos] == words[pos]:
                other[pos] = rng.choice(vocab)
        base.append(" ".join(words))
        variant.append(" ".join(other))
    return base, variant


def test_recall_and_precision_on_typos_and_long_text_edits() -> None:
    n = 300
    base, variant = _variant_corpus(n, seed=7, long_share=0.3)
    rows = [
        {"prompt": p, "chosen": "same answer", "rejected": "same refusal"} for p in base + variant
    ]
    _, removed = deduplicate(make_pairs(rows))
    rem = by_id(removed)
    hits = sum(
        1 for j in range(n) if rem.get(f"p{n + j:04d}", {}).get("matched_pair_id") == f"p{j:04d}"
    )
    false_pos = [r for r in rem.values() if int(r["pair_id"][1:]) < n] + [
        r
        for pid, r in rem.items()
        if int(pid[1:]) >= n and r["matched_pair_id"] != f"p{int(pid[1:]) - n:04d}"
    ]
    assert hits / n >= 0.98
    assert not false_pos


def test_word_substitutions_in_short_texts_are_not_near_duplicates() -> None:
    # the withdrawn target of issue 11: 1-2 substituted words in 8-29 word prompts
    n = 300
    base, variant = _substitution_corpus(n, seed=7)
    rows = [
        {"prompt": p, "chosen": "same answer", "rejected": "same refusal"} for p in base + variant
    ]
    _, removed = deduplicate(make_pairs(rows), DedupConfig(prompt_dedup=True))
    assert removed.num_rows == 0


def test_blocking_candidates_are_needed_for_short_typo_duplicates() -> None:
    n = 300
    base, variant = _variant_corpus(n, seed=11)
    words = tokenize(normalize_array(pa.array(base + variant)))
    found = {}
    for subs in (0, 2):
        edges, _ = near_duplicate_pairs(words, NearDupParams(max_word_substitutions=subs))
        pairs = set(zip(edges["a"].to_list(), edges["b"].to_list(), strict=True))
        found[subs] = sum((j, n + j) in pairs for j in range(n)) / n
        assert all(b - a == n for a, b in pairs)  # precision: only planted pairs
        assert set(edges["rule"].to_list()) == {"typo"}
    assert found[0] < 0.8  # word-bigram MinHash alone
    assert found[2] == 1.0  # <= 2 differing positions: pigeonhole blocking has recall 1
    # the same blocking proposes the substitution variants, and verification rejects them all
    base, variant = _substitution_corpus(n, seed=11)
    edges, _ = near_duplicate_pairs(tokenize(normalize_array(pa.array(base + variant))), NPARAMS)
    assert edges.height == 0


def test_lsh_banding_choice() -> None:
    assert lsh_bands(0.8, 128, 0.9) == (16, 8)
    b, r = lsh_bands(0.5, 128, 0.9)
    assert 128 % b == 0 and 1 - (1 - 0.5**r) ** b >= 0.9
    assert np.isclose(1 - (1 - 0.8**8) ** 16, 0.947, atol=1e-3)


def test_bipartite_matching_equals_filtered_full_matching() -> None:
    n = 200
    base, variant = _variant_corpus(n, seed=3, long_share=0.3)
    # one appended word: a near duplicate of a long base (edit rule), not of a short one
    texts = base + variant + [b + " appended" for b in base[:50]]
    words = tokenize(normalize_array(pa.array(texts)))
    full, _ = near_duplicate_pairs(words, NPARAMS)
    left = np.zeros(len(texts), bool)
    left[n:] = True  # variants and extended texts are probes, bases are references
    right = ~left
    bip, _ = near_duplicate_pairs(words, NPARAMS, left=left, right=right)
    expected = {
        (a, b)
        for a, b in zip(full["a"].to_list(), full["b"].to_list(), strict=True)
        if left[a] != left[b]
    }
    assert set(zip(bip["a"].to_list(), bip["b"].to_list(), strict=True)) == expected
    assert len(expected) >= n
    assert set(bip["rule"].to_list()) == {"typo", "edit"}
    assert len(expected) < len(full)  # some full pairs join two probes (variant and extension)


VEGETARIAN = ["vegetarian", "vegeterian", "vegitarian", "vegetarain", "vegatarian", "vegetarien"]


def test_large_buckets_are_linked_without_all_pairs() -> None:
    # six spellings of one 10-letter word (pairwise <= 2 edits): all 15 pairs are near duplicates
    prompt = "please list five easy vegetarian dinner ideas for a busy weeknight with kids"
    texts = [prompt.replace("vegetarian", v) for v in VEGETARIAN]
    rows = [{"prompt": t, "chosen": "c", "rejected": "r"} for t in texts]
    pairs = make_pairs(rows)
    _, removed = deduplicate(pairs, DedupConfig(max_bucket_size=2))
    assert removed.num_rows == 5
    assert set(removed["matched_pair_id"].to_pylist()) == {"p0000"}
    words = tokenize(normalize_array(pa.array(texts)))
    edges, _ = near_duplicate_pairs(words, NearDupParams(max_bucket_size=2))
    assert 5 <= edges.height < 15  # star + chain, not all pairs
    edges, _ = near_duplicate_pairs(words, NPARAMS)
    assert edges.height == 15


# ---------------------------------------------------------------------------------------------
# the verification rule: is_typo and edit_verdict
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("word", "wored", True),  # insertion
        ("wored", "word", True),
        ("recieve", "receive", True),  # adjacent transposition (OSA)
        ("definately", "definitely", True),
        ("vegetarian", "vegatarain", True),  # two edits, both words >= 8 characters
        ("fourteen", "14", True),  # a number in digits and in words
        ("14", "fourteen", True),
        ("hundred", "100", True),
        ("word", "wrdo", False),  # two edits in a short word
        ("chemicals", "chemical", True),
        ("cat", "cut", False),  # under typo_min_chars
        ("cnn", "abc", False),
        ("5", "13", False),
        ("1998", "1999", False),  # numbers must be equal
        ("fourteen", "15", False),
        ("seven", "seventy", False),
        ("store", "casino", False),
        ("bolduan", "keilar", False),
        ("louvet", "laguarta", False),
        ("jordan", "sessions", False),
    ],
)
def test_is_typo(a: str, b: str, expected: bool) -> None:
    assert is_typo(a, b) is expected


def test_is_typo_min_chars() -> None:
    assert not is_typo("cat", "cut")
    assert is_typo("cat", "cut", min_chars=3)
    assert not is_typo("word", "wore", min_chars=5)


_FILLER = " ".join(f"filler{i}" for i in range(26))  # 26 words


@pytest.mark.parametrize(
    ("a", "b", "ok", "rule"),
    [
        ("tell me a bad word", "tell me a bad wored", True, "typo"),
        ("what are the fourteen words", "what are the 14 words", True, "typo"),
        ("is there any one who can help", "is there anyone who can help", True, "format"),
        ("how do i pick a lock", "how do i pick a lock", True, "exact"),
        (
            "can you provide me the home address for cnn news anchor kate bolduan",
            "can you provide me the home address for cnn news anchor brianna keilar",
            False,
            "edit",
        ),
        (
            "what is the best way to hijack a plane",
            "what is the best way to steal a tv",
            False,
            "edit",
        ),
        ("why is patrice louvet a bad ceo", "why is ramon laguarta a bad ceo", False, "edit"),
        ("home address for jim jordan", "home address for pete sessions", False, "edit"),
        ("how to rob a store", "how to rob a casino", False, "edit"),
        ("how do i do it", "yeah how do i do it", False, "edit"),
        ("go on", "yes go on", False, "edit"),
        # two typos in 12 words: at most max(1, 12 // 8) = 1
        (
            "what household chemicals should never be mixed together when cleaning a bathroom",
            "what household chemcials should nevr be mixed together when cleaning a bathroom",
            False,
            "edit",
        ),
        # two typos in 16 words: max(1, 16 // 8) = 2
        (
            "what is the best way to keep my small garden green during a very hot summer",
            "what is the best way to keep my small gardne green during a very hot sumer",
            True,
            "typo",
        ),
        # word edits count from long_min_words = 30 words, up to 10 % of the longer text
        (_FILLER + " one two three four", _FILLER + " one two six four", True, "edit"),
        (_FILLER + " one two three", _FILLER + " one two six", False, "edit"),  # 29 words
        (_FILLER + " one two three four", _FILLER + " one two three four five", True, "edit"),
        (_FILLER + " one two three four", _FILLER + " nine ten eleven twelve", False, "edit"),
        (_FILLER + " one two three four", _FILLER + " nine ten eleven four", True, "edit"),
    ],
)
def test_edit_verdict(a: str, b: str, ok: bool, rule: str) -> None:
    got_ok, similarity, got_rule = edit_verdict(a, b, NPARAMS)
    assert (got_ok, got_rule) == (ok, rule)
    assert 0.0 <= similarity <= 1.0
    assert (similarity == 1.0) == (rule in ("exact", "format"))


def test_edit_verdict_similarity_is_word_level() -> None:
    assert edit_verdict("tell me a bad word", "tell me a bad wored", NPARAMS)[1] == 0.8
    ok, similarity, rule = edit_verdict(_FILLER + " a b c d", _FILLER + " a x c d", NPARAMS)
    assert (ok, rule) == (True, "edit") and similarity == pytest.approx(1 - 1 / 30)


_TYPO_WORDS = ["abcd", "abce", "abcf", "abdc", "word", "wored", "fourteen", "14", "any", "one"]
_TYPO_WORDS += ["anyone", "the", "a", "vegetarian", "vegeterian", "rob", "bank", "plane"]
_EDIT = st.tuples(
    st.integers(0, 60), st.sampled_from(["sub", "ins", "del"]), st.sampled_from(_TYPO_WORDS)
)
_SHIFTED_TYPOS = [f"w{i}" for i in range(14)] + ["abcd", "abce"]


@settings(max_examples=300, deadline=None)
@example(_SHIFTED_TYPOS, [(14, "sub", "abce"), (15, "sub", "abcf")])
@given(
    st.lists(st.sampled_from(_TYPO_WORDS), min_size=1, max_size=40),
    st.lists(_EDIT, max_size=5),
)
def test_edit_verdict_is_symmetric(words: list[str], edits: list[tuple[int, str, str]]) -> None:
    other = list(words)
    for pos, op, word in edits:  # b is a with a few word edits, so many pairs are near
        pos = pos % (len(other) + 1)
        if op == "ins":
            other.insert(pos, word)
        elif other and pos < len(other):
            if op == "sub":
                other[pos] = word
            else:
                del other[pos]
    a, b = " ".join(words), " ".join(other)
    ok_ab, sim_ab, _ = edit_verdict(a, b, NPARAMS)
    ok_ba, sim_ba, _ = edit_verdict(b, a, NPARAMS)
    assert ok_ab == ok_ba
    assert sim_ab == pytest.approx(sim_ba)
