"""Exact and near-duplicate removal: every reason code, near misses, invariants, recall."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.dedup import DedupConfig, deduplicate
from curation.near_dup import NearDupParams, lsh_bands, near_duplicate_pairs, tokenize
from curation.schema import PAIRS, REMOVED
from curation.textnorm import normalize_array
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
    assert removed_ids == sorted(removed_ids)


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
    assert set(rem) == {"p0001"}
    r = rem["p0001"]
    assert r["reason"] == "exact_duplicate"
    assert r["method"] == "xxh3-128 normalized triple"
    assert r["score"] == 1.0
    assert (r["matched_pair_id"], r["matched_dataset"], r["matched_subset"]) == (
        "p0000",
        "pku-saferlhf",
        "Alpaca-7B",
    )
    assert (r["matched_split"], r["matched_source_file"], r["matched_source_line"]) == (
        "train",
        "Alpaca-7B/train.jsonl",
        0,
    )
    assert (r["dataset"], r["subset"], r["dimension"]) == ("hh-rlhf", "helpful-base", "helpful")


def test_survivor_is_lowest_pair_id_regardless_of_order() -> None:
    rows = [{"prompt": "Same prompt here", "chosen": "A", "rejected": "B"} for _ in range(4)]
    pairs = make_pairs(rows)
    pairs = pairs.set_column(0, "pair_id", pa.array(["z9", "a2", "m5", "a1"]))
    kept, removed = deduplicate(pairs)
    assert kept["pair_id"].to_pylist() == ["a1"]
    assert {r["matched_pair_id"] for r in removed.to_pylist()} == {"a1"}


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
        ]
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


def test_clusters_are_transitive_and_keep_lowest_pair_id() -> None:
    words = "please describe the quickest route from central london to heathrow airport".split()
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
            pos = rng.randrange(len(w))
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
# recall / precision on synthetic substitutions
# ---------------------------------------------------------------------------------------------


def _substitution_corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = sorted({"".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(3000)})
    base, variant = [], []
    for _ in range(n):
        words = rng.choices(vocab, k=rng.randint(8, 30))
        other = list(words)
        for pos in rng.sample(range(len(words)), rng.randint(1, 2)):
            while other[pos] == words[pos]:
                other[pos] = rng.choice(vocab)
        base.append(" ".join(words))
        variant.append(" ".join(other))
    return base, variant


def test_recall_and_precision_on_word_substitutions() -> None:
    n = 300
    base, variant = _substitution_corpus(n, seed=7)
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
    assert hits / n >= 0.95
    assert not false_pos


def test_minhash_alone_misses_short_substitutions_which_the_rule_catches() -> None:
    n = 300
    base, variant = _substitution_corpus(n, seed=11)
    words = tokenize(normalize_array(pa.array(base + variant)))
    found = {}
    for subs in (0, 2):
        edges, _ = near_duplicate_pairs(words, NearDupParams(max_word_substitutions=subs))
        pairs = set(zip(edges["a"].to_list(), edges["b"].to_list(), strict=True))
        found[subs] = sum((j, n + j) in pairs for j in range(n)) / n
        assert all(b - a == n for a, b in pairs)  # precision: only planted pairs
    assert found[0] < 0.6  # word-bigram MinHash alone (brief: word 5-grams find ~37 %)
    assert found[2] >= 0.95


def test_lsh_banding_choice() -> None:
    assert lsh_bands(0.8, 128, 0.9) == (16, 8)
    b, r = lsh_bands(0.5, 128, 0.9)
    assert 128 % b == 0 and 1 - (1 - 0.5**r) ** b >= 0.9
    assert np.isclose(1 - (1 - 0.8**8) ** 16, 0.947, atol=1e-3)


def test_bipartite_matching_equals_filtered_full_matching() -> None:
    n = 200
    base, variant = _substitution_corpus(n, seed=3)
    texts = base + variant + [b + " extra words appended at the very end" for b in base[:50]]
    words = tokenize(normalize_array(pa.array(texts)))
    params = NearDupParams()
    full, _ = near_duplicate_pairs(words, params)
    left = np.zeros(len(texts), bool)
    left[n:] = True  # variants and extended texts are probes, bases are references
    right = ~left
    bip, _ = near_duplicate_pairs(words, params, left=left, right=right)
    expected = {
        (a, b)
        for a, b in zip(full["a"].to_list(), full["b"].to_list(), strict=True)
        if left[a] != left[b]
    }
    assert set(zip(bip["a"].to_list(), bip["b"].to_list(), strict=True)) == expected
    assert len(expected) >= n


def test_large_buckets_are_linked_without_all_pairs() -> None:
    prompt = "please list five easy vegetarian dinner ideas for a busy weeknight with kids"
    rows = [
        {"prompt": prompt.replace("five", f"{k}"), "chosen": "c", "rejected": "r"} for k in range(6)
    ]
    pairs = make_pairs(rows)
    _, removed = deduplicate(pairs, DedupConfig(max_bucket_size=2))
    assert removed.num_rows == 5
    assert set(removed["matched_pair_id"].to_pylist()) == {"p0000"}
