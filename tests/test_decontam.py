"""Train-against-test decontamination: every reason code, near misses, HH turns, invariants."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.decontam import DecontamConfig, decontaminate
from curation.schema import REMOVED
from tests.factories import make_pairs as _make_pairs


def hh(*turns: tuple[str, str]) -> dict[str, Any]:
    """Fields of an HH row whose prompt is the conversation ``turns`` ((role, text) pairs)."""
    prompt = "".join(
        f"\n\n{'Human' if role == 'human' else 'Assistant'}: {text}" for role, text in turns
    )
    return {
        "dataset": "hh-rlhf",
        "subset": "harmless-base",
        "dimension": "harmless",
        "source_file": "harmless-base/train.jsonl.gz",
        "prompt": prompt,
        "prompt_turns": [{"role": role, "text": text} for role, text in turns],
    }


def run(rows: list[dict[str, Any]], **kwargs: Any) -> tuple[pa.Table, pa.Table, dict[str, dict]]:
    pairs = make_pairs(rows)
    kept, removed = decontaminate(pairs, **kwargs)
    assert kept.schema == pairs.schema
    assert removed.schema == REMOVED
    assert kept.num_rows + removed.num_rows == pairs.num_rows
    all_ids = set(pairs["pair_id"].to_pylist())
    assert set(kept["pair_id"].to_pylist()) | set(removed["pair_id"].to_pylist()) == all_ids
    assert not set(kept["pair_id"].to_pylist()) & set(removed["pair_id"].to_pylist())
    assert set(removed["split"].to_pylist()) <= {"train"}
    return kept, removed, {r["pair_id"]: r for r in removed.to_pylist()}


TEST_LONG = (
    "Explain in detail how the ancient Romans built their aqueducts and which materials "
    "they used to keep the water flowing across valleys for many miles"
)  # 26 words
OTHER = (
    "I am writing a school report about engineering history and my teacher asked for sources "
    "so please keep it simple and friendly for a twelve year old reader"
)


# ---------------------------------------------------------------------------------------------
# contaminated_exact
# ---------------------------------------------------------------------------------------------


def test_contaminated_exact_and_near_miss() -> None:
    kept, _, rem = run(
        [
            {"prompt": "How do I pick a lock?", "split": "test"},
            {"prompt": "how do i PICK a lock"},  # exact after normalization
            {"prompt": "How do I pick a door?"},  # near miss: 1 of 6 words changed
        ]
    )
    assert set(rem) == {"p0001"}
    r = rem["p0001"]
    assert r["reason"] == "contaminated_exact"
    assert r["score"] == 1.0
    assert r["method"].startswith("xxh3-128 normalized exact")
    assert (r["matched_pair_id"], r["matched_dataset"], r["matched_split"]) == (
        "p0000",
        "pku-saferlhf",
        "test",
    )
    assert (r["matched_subset"], r["matched_source_line"]) == ("Alpaca-7B", 0)
    assert kept["pair_id"].to_pylist() == ["p0000", "p0002"]


def test_short_prompt_exact_fallback_only() -> None:
    # under 13 words no n-gram can match: only the whole text, exactly
    _, _, rem = run(
        [
            {"prompt": "Write a haiku about frogs", "split": "test"},
            {"prompt": "Write a haiku about frogs."},
            {"prompt": OTHER + " Write a haiku about frogs and then explain it"},
        ]
    )
    assert set(rem) == {"p0001"}
    assert rem["p0001"]["reason"] == "contaminated_exact"


# ---------------------------------------------------------------------------------------------
# contaminated_ngram
# ---------------------------------------------------------------------------------------------


def test_contaminated_ngram_and_near_miss() -> None:
    words = TEST_LONG.split()
    _, _, rem = run(
        [
            {"prompt": TEST_LONG, "split": "test"},
            {"prompt": OTHER + " " + " ".join(words[5:18]) + " thanks"},  # 13 shared words
            {"prompt": OTHER + " " + " ".join(words[5:17]) + " thanks"},  # near miss: 12
        ]
    )
    assert set(rem) == {"p0001"}
    r = rem["p0001"]
    assert (r["reason"], r["score"], r["matched_pair_id"]) == ("contaminated_ngram", 13.0, "p0000")
    assert r["method"] == "13-gram xxh3-64 words"


def test_ngram_length_is_configurable() -> None:
    words = TEST_LONG.split()
    _, _, rem = run(
        [
            {"prompt": TEST_LONG, "split": "test"},
            {"prompt": OTHER + " " + " ".join(words[5:13])},
        ],
        config=DecontamConfig(ngram_n=8),
    )
    assert rem["p0001"]["reason"] == "contaminated_ngram"
    assert rem["p0001"]["score"] == 8.0


# ---------------------------------------------------------------------------------------------
# contaminated_near
# ---------------------------------------------------------------------------------------------


def test_contaminated_near_and_near_miss() -> None:
    test_prompt = "What household chemicals should never be mixed together when cleaning a bathroom"
    _, _, rem = run(
        [
            {"prompt": test_prompt, "split": "test"},
            # one substituted word in the middle (12 words, bigram J = 0.71): substitution rule
            {"prompt": test_prompt.replace("mixed", "combined")},
            # near miss: three substituted words
            {
                "prompt": test_prompt.replace("bathroom", "kitchen")
                .replace("never", "not")
                .replace("chemicals", "products")
            },
        ]
    )
    assert set(rem) == {"p0001"}
    r = rem["p0001"]
    assert r["reason"] == "contaminated_near"
    assert r["matched_pair_id"] == "p0000"
    assert 0.0 < r["score"] < 1.0
    assert r["method"].startswith("word-substitution<=2")


def test_contaminated_near_by_minhash_jaccard() -> None:
    words = TEST_LONG.split()
    inserted = " ".join([*words[:10], "really", *words[10:]])  # J = 0.93, no shared 13-gram?
    _, _, rem = run(
        [
            {"prompt": TEST_LONG, "split": "test"},
            {"prompt": inserted},
        ],
        config=DecontamConfig(ngram=False),
    )
    r = rem["p0001"]
    assert r["reason"] == "contaminated_near"
    assert r["score"] >= 0.8
    assert r["method"].startswith("minhash-lsh word2 128perm b16r8")


def test_precedence_exact_over_ngram_over_near() -> None:
    _, _, rem = run(
        [
            {"prompt": TEST_LONG, "split": "test"},
            {"prompt": TEST_LONG.upper()},  # exact, ngram and near all match
            {"prompt": TEST_LONG.replace("Romans", "Greeks")},  # ngram and near
        ]
    )
    assert rem["p0001"]["reason"] == "contaminated_exact"
    assert rem["p0002"]["reason"] == "contaminated_ngram"


# ---------------------------------------------------------------------------------------------
# HH conversations and turns
# ---------------------------------------------------------------------------------------------


def test_hh_later_human_turn_copied_into_pku_train_prompt() -> None:
    second = "Which household chemicals are dangerous to mix together?"
    _, _, rem = run(
        [
            {
                **hh(
                    ("human", "Hi, can I ask you something about cleaning?"),
                    ("assistant", "Of course, what would you like to know?"),
                    ("human", second),
                ),
                "split": "test",
                "source_line": 17,
            },
            {"prompt": second.lower()},
        ]
    )
    r = rem["p0001"]
    assert r["reason"] == "contaminated_exact"
    assert r["method"].endswith("prompt->turn")
    assert (r["matched_pair_id"], r["matched_dataset"], r["matched_source_line"]) == (
        "p0000",
        "hh-rlhf",
        17,
    )


def test_hh_train_turn_matching_a_pku_test_prompt_and_whole_conversation() -> None:
    question = "How can I get back at my coworker without anyone finding out?"
    convo = hh(
        ("human", "I had a rough day at work."),
        ("assistant", "I'm sorry to hear that."),
        ("human", question),
    )
    _, _, rem = run(
        [
            {"prompt": question, "split": "test"},
            hh(  # its second human turn is the PKU test prompt
                ("human", "My manager keeps ignoring my emails."),
                ("assistant", "That sounds frustrating."),
                ("human", question),
            ),
            {**convo, "split": "test"},
            {**convo},  # whole conversation equals a test conversation
        ]
    )
    assert rem["p0001"]["reason"] == "contaminated_exact"
    assert rem["p0001"]["method"].endswith("turn->prompt")
    assert rem["p0001"]["matched_pair_id"] == "p0000"
    assert rem["p0003"]["reason"] == "contaminated_exact"
    # whole conversation -> whole conversation beats its turn matching p0000
    assert rem["p0003"]["matched_pair_id"] == "p0002"
    assert rem["p0003"]["method"].endswith("prompt->prompt")
    assert "p0002" not in rem


def test_generic_and_trivial_turns_do_not_contaminate() -> None:
    generic = "Can you tell me more about that please"
    rows: list[dict[str, Any]] = [
        {
            **hh(
                ("human", "Tell me about volcanoes in Iceland"),
                ("assistant", "Sure."),
                ("human", generic),
                ("assistant", "Yes."),
                ("human", "thanks"),
            ),
            "split": "test",
        },
    ]
    for i in range(12):  # the generic turn occurs in 12 different train conversations
        rows.append(
            hh(
                ("human", f"Tell me about topic number {i} in history"),
                ("assistant", "Okay."),
                ("human", generic),
            )
        )
    rows.append(
        hh(
            ("human", "Another fresh question about gardening tools"),
            ("assistant", "Sure."),
            ("human", "thanks"),
        )
    )
    _, removed, _ = run(rows)
    assert removed.num_rows == 0  # generic turn over the cap, "thanks" under min_turn_words
    _, removed, _ = run(rows, config=DecontamConfig(max_matches=0, min_turn_words=1))
    assert removed.num_rows == 13


def test_test_rows_are_never_removed() -> None:
    rows = [
        {"prompt": "Tell me a fun fact about octopuses", "split": "test"},
        {"prompt": "Tell me a fun fact about octopuses", "split": "test"},
        {"prompt": "Tell me a fun fact about octopuses!", "split": "test", "dimension": "harmless"},
        {"prompt": "Tell me a fun fact about octopuses"},
    ]
    kept, _, rem = run(rows, extra_references=[("bench", ["tell me a fun fact about octopuses"])])
    assert set(rem) == {"p0003"}
    assert kept["pair_id"].to_pylist() == ["p0000", "p0001", "p0002"]


# ---------------------------------------------------------------------------------------------
# extra reference sets
# ---------------------------------------------------------------------------------------------


def test_extra_references() -> None:
    _, _, rem = run(
        [
            {"prompt": "What is the boiling point of water at sea level?"},
            {"prompt": "Unrelated prompt about painting a fence blue"},
            {"prompt": "What is the boiling point of water in Denver?"},  # near miss (short)
        ],
        extra_references=[
            ("mt-bench", ["Write a sonnet", "Summarize this article"]),
            ("my-evals", ["Nothing here", "what is the boiling point of water at sea level"]),
        ],
    )
    assert set(rem) == {"p0000"}
    r = rem["p0000"]
    assert r["reason"] == "contaminated_exact"
    assert (r["matched_dataset"], r["matched_source_line"]) == ("my-evals", 1)
    assert r["matched_pair_id"] is None and r["matched_subset"] is None
    assert r["matched_split"] is None and r["matched_source_file"] is None


def test_no_references_means_nothing_removed() -> None:
    kept, removed, _ = run([{"prompt": "alpha"}, {"prompt": "alpha"}])
    assert removed.num_rows == 0 and kept.num_rows == 2


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

VOCAB = ["river", "stone", "light", "quiet", "market", "seven", "orange", "build", "north", "glass"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=20), st.data())
def test_normalization_equivalent_prompts_always_match(words: list[str], data) -> None:
    pieces = []
    for w in words:
        pieces.append(
            data.draw(st.sampled_from(["", " ", "  ", "\n", "\u00a0", " (", ' "', " - "]))
        )
        pieces.append(data.draw(st.sampled_from([w, w.upper(), w.title()])))
        pieces.append(data.draw(st.sampled_from(["", ",", ".", "!", "?", ";", ")", '"'])))
    perturbed = " ".join(pieces)
    _, _, rem = run([{"prompt": " ".join(words), "split": "test"}, {"prompt": perturbed}])
    assert rem["p0001"]["reason"] == "contaminated_exact"


def _corpus(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    vocab = [f"t{i}" for i in range(80)]
    rows: list[dict[str, Any]] = []
    tests = []
    for i in range(30):
        text = " ".join(rng.sample(vocab, rng.randint(5, 20)))
        if i % 3 == 0:
            rows.append({"prompt": text, "split": "test"})
            tests.append(text)
        else:
            rows.append({"prompt": text})
    for t in tests:
        w = t.split()
        rows.append({"prompt": t.upper()})
        w[0] = "zz"
        rows.append({"prompt": " ".join(w)})
        rows.append({"prompt": "lead in words " + t + " and more"})
    return rows


@settings(max_examples=10, deadline=None)
@given(st.randoms(use_true_random=False))
def test_output_is_independent_of_input_order(rnd: random.Random) -> None:
    pairs = make_pairs(_corpus(3))
    extras = [("x", ["t1 t2 t3 t4 t5 t6 t7 t8"])]
    kept, removed = decontaminate(pairs, extra_references=extras)
    assert removed.num_rows > 0
    perm = list(range(pairs.num_rows))
    rnd.shuffle(perm)
    kept2, removed2 = decontaminate(pairs.take(perm), extra_references=extras)
    assert kept2.sort_by("pair_id").equals(kept.sort_by("pair_id"))
    assert removed2.equals(removed)


def test_config_is_json_serializable() -> None:
    config = DecontamConfig()
    assert json.loads(json.dumps(asdict(config)))["ngram_n"] == 13
    with pytest.raises(ValueError):
        DecontamConfig(threshold=0).near_params()


def make_pairs(rows: list[dict[str, Any]]) -> pa.Table:
    """PAIRS rows with the same responses everywhere (only prompts matter here)."""
    return _make_pairs(rows, chosen="a helpful answer", rejected="an unhelpful answer")
