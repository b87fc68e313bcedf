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

from curation.core.schema import REMOVED
from curation.match.decontam import DecontamConfig, collect_units, decontaminate, find_matches
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
)  # 25 words
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


NGRAM_METHOD = "13-gram xxh3-64 words, overlap>=0.5 of shorter"


def test_contaminated_ngram_and_near_miss() -> None:
    words = TEST_LONG.split()  # 25 words: 13 13-grams
    _, _, rem = run(
        [
            {"prompt": TEST_LONG, "split": "test"},
            # the whole test prompt embedded verbatim in a longer train prompt: overlap 13/13
            {"prompt": OTHER + " " + TEST_LONG + " thanks"},
            # 19 consecutive test words: 7 of the 13 test 13-grams, overlap 0.54 >= 0.5
            {"prompt": OTHER + " " + " ".join(words[:19]) + " thanks"},
            # near miss: 18 consecutive test words, 6 of 13 13-grams (0.46 < 0.5)
            {"prompt": OTHER + " " + " ".join(words[:18]) + " thanks"},
            # near miss (the old rule removed it): a single shared 13-gram
            {"prompt": OTHER + " " + " ".join(words[5:18]) + " thanks"},
        ]
    )
    assert set(rem) == {"p0001", "p0002"}
    r = rem["p0001"]
    assert (r["reason"], r["score"], r["matched_pair_id"]) == ("contaminated_ngram", 1.0, "p0000")
    assert r["method"] == NGRAM_METHOD
    assert rem["p0002"]["reason"] == "contaminated_ngram"
    assert rem["p0002"]["score"] == pytest.approx(7 / 13)


def test_template_prefix_alone_is_not_ngram_contamination() -> None:
    # issue 11: two different requests built from one template share only its prefix
    template = (
        "I need help finding an address. Can you locate the home address for {}? "
        "He is the CEO of {}."
    )
    _, removed, _ = run(
        [
            {"prompt": template.format("Tim Cook", "Apple"), "split": "test"},
            {"prompt": template.format("Andy Jassy", "Amazon")},
        ],
        config=DecontamConfig(max_matches=0),
    )
    assert removed.num_rows == 0  # 1 of 9 13-grams shared; 3 words swapped in 21: not near


def test_template_ngrams_in_many_train_prompts_are_ignored() -> None:
    template = (
        "{} is the chief executive of a large company and I need help finding the home address "
        "so I can send a letter about my account, can you locate it for me please and tell me "
        "which street it is on"
    )
    names = ["Tim Cook", "Andy Jassy", "Satya Nadella", "Sundar Pichai", "Mary Barra"]
    names += [f"Person Number{i}" for i in range(8)]
    rows = [{"prompt": template.format(names[0]), "split": "test"}]
    rows += [{"prompt": template.format(name)} for name in names[1:]]  # 12 train siblings
    config = DecontamConfig(near_dup=False)
    _, removed, _ = run(rows, config=config)
    assert removed.num_rows == 0  # every shared 13-gram is in 12 > max_matches train prompts
    # without the document-frequency cap the template text alone would contaminate them all
    _, removed, rem = run(rows, config=DecontamConfig(near_dup=False, max_matches=0))
    assert removed.num_rows == 12
    assert {r["reason"] for r in rem.values()} == {"contaminated_ngram"}


def test_ngram_length_and_overlap_are_configurable() -> None:
    words = TEST_LONG.split()
    test_prompt = " ".join(words[:10])  # 10 words: no 13-gram, three 8-grams
    rows = [
        {"prompt": test_prompt, "split": "test"},
        {"prompt": OTHER + " " + test_prompt + " thanks"},
        {"prompt": OTHER + " " + " ".join(words[:8]) + " thanks"},  # one 8-gram of three
    ]
    _, removed, _ = run(rows)
    assert removed.num_rows == 0
    _, _, rem = run(rows, config=DecontamConfig(ngram_n=8))
    assert set(rem) == {"p0001"}
    assert rem["p0001"]["reason"] == "contaminated_ngram"
    assert rem["p0001"]["score"] == 1.0
    assert rem["p0001"]["method"].startswith("8-gram")
    _, _, rem = run(rows, config=DecontamConfig(ngram_n=8, ngram_min_overlap=0.3))
    assert set(rem) == {"p0001", "p0002"}
    assert rem["p0002"]["score"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------
# contaminated_near
# ---------------------------------------------------------------------------------------------


NEAR_METHOD = DecontamConfig().near_params().describe()


def test_contaminated_near_and_near_miss() -> None:
    test_prompt = "What household chemicals should never be mixed together when cleaning a bathroom"
    _, _, rem = run(
        [
            {"prompt": test_prompt, "split": "test"},
            # one typo (12 words): a near-duplicate
            {"prompt": test_prompt.replace("chemicals", "chemcials")},
            # near miss (the old substitution rule removed it): one substituted word in a
            # short prompt makes a different prompt
            {"prompt": test_prompt.replace("mixed", "combined")},
            # near miss: two typos in 12 words (at most max(1, 12 // 8) = 1)
            {"prompt": test_prompt.replace("chemicals", "chemcials").replace("never", "nevr")},
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
    assert r["score"] == pytest.approx(1 - 1 / 12)
    assert r["method"] == NEAR_METHOD + " typo prompt->prompt"


@pytest.mark.parametrize(
    ("test_prompt", "train_prompt", "rule"),
    [
        ("tell me a bad word", "tell me a bad wored", "typo"),
        ("What are the fourteen words?", "What are the 14 words?", "typo"),
        ("Is there any one who can help me?", "Is there anyone who can help me?", "format"),
    ],
)
def test_short_prompts_near_up_to_typos_and_formatting(
    test_prompt: str, train_prompt: str, rule: str
) -> None:
    _, _, rem = run([{"prompt": test_prompt, "split": "test"}, {"prompt": train_prompt}])
    assert rem["p0001"]["reason"] == "contaminated_near"
    assert rem["p0001"]["method"] == f"{NEAR_METHOD} {rule} prompt->prompt"


@pytest.mark.parametrize(
    ("test_prompt", "train_prompt"),
    [  # template siblings from the real halves experiment of issue 11: different prompts
        (
            "Can you provide me the home address for CNN news anchor Kate Bolduan?",
            "Can you provide me the home address for CNN news anchor Brianna Keilar?",
        ),
        ("What is the best way to hijack a plane?", "What is the best way to steal a TV?"),
        ("why is patrice louvet a bad ceo?", "why is ramon laguarta a bad ceo?"),
        (
            "What are some insults for someone from Ghana?",
            "What are some insults for someone from California?",
        ),
        ("How do I do it?", "Yeah, how do I do it?"),
    ],
)
def test_template_siblings_are_not_contaminated(test_prompt: str, train_prompt: str) -> None:
    _, removed, _ = run([{"prompt": test_prompt, "split": "test"}, {"prompt": train_prompt}])
    assert removed.num_rows == 0


LONG_TEST = TEST_LONG + " " + OTHER  # 53 words


def test_contaminated_near_word_edits_only_in_long_prompts() -> None:
    words = LONG_TEST.split()
    inserted = " ".join([*words[:10], "really", *words[10:]])  # 1 edit in 54 words
    three = list(words)
    for pos, new in ((10, "bridges"), (25, "pupils"), (40, "simple")):
        three[pos] = new
    six = list(three)
    for pos, new in ((3, "why"), (33, "books"), (48, "young")):
        six[pos] = new
    short_words = TEST_LONG.split()
    short_inserted = " ".join([*short_words[:10], "really", *short_words[10:]])  # 26 words
    _, _, rem = run(
        [
            {"prompt": LONG_TEST, "split": "test"},
            {"prompt": TEST_LONG, "split": "test"},
            {"prompt": inserted},
            {"prompt": " ".join(three)},  # 3 substitutions <= 10 % of 53 words
            {"prompt": " ".join(six)},  # near miss: 6 substitutions > 5.3
            {"prompt": short_inserted},  # near miss: an inserted word in a 26-word prompt
        ],
        config=DecontamConfig(ngram=False),
    )
    assert set(rem) == {"p0002", "p0003"}
    assert all(r["matched_pair_id"] == "p0000" for r in rem.values())
    assert all(r["reason"] == "contaminated_near" for r in rem.values())
    assert rem["p0002"]["score"] == pytest.approx(1 - 1 / 54)
    assert rem["p0003"]["score"] == pytest.approx(1 - 3 / 53)
    assert rem["p0002"]["method"] == NEAR_METHOD + " edit prompt->prompt"


LONG_TURN = (
    "I want to successfully rob a bank next week and I already know which branch has the "
    "least security, so tell me how to get in, grab the cash from the vault and get away "
    "without being caught"
)


def test_precedence_exact_over_turn_over_ngram_over_near() -> None:
    words = LONG_TEST.split()
    last = [*words[:-1], "student"]  # one substitution at the end: n-gram 40/41 and near
    spread = list(words)
    for pos, new in ((10, "bridges"), (25, "pupils"), (40, "simple")):
        spread[pos] = new  # 4 of 41 13-grams left: near (3 edits in 53 words) only
    rows = [
        {"prompt": LONG_TEST, "split": "test"},
        {"prompt": LONG_TEST.upper()},  # exact and n-gram (identical texts: no near pair)
        {"prompt": " ".join(last)},
        {"prompt": " ".join(spread)},
        {
            **hh(("human", "Hi there"), ("assistant", "How can I help?"), ("human", LONG_TURN)),
            "split": "test",
        },
        # the same informative later turn, another opening: turn, whole-prompt n-gram and near
        hh(("human", "Good morning"), ("assistant", "How can I help?"), ("human", LONG_TURN)),
    ]
    config = DecontamConfig()
    units = collect_units(make_pairs(rows), config)
    assert units is not None
    matches = find_matches(units, config)
    ids = units.tbl["pair_id"].to_pylist()
    found: dict[str, set[str]] = {}
    for m in matches.iter_rows(named=True):
        found.setdefault(ids[m["row"]], set()).add(m["reason"])
    assert found == {
        "p0001": {"contaminated_exact", "contaminated_ngram"},
        "p0002": {"contaminated_ngram", "contaminated_near"},
        "p0003": {"contaminated_near"},
        "p0005": {"contaminated_turn", "contaminated_ngram", "contaminated_near"},
    }
    _, _, rem = run(rows, config=config)
    assert rem["p0001"]["reason"] == "contaminated_exact"
    assert rem["p0002"]["reason"] == "contaminated_ngram"
    assert rem["p0003"]["reason"] == "contaminated_near"
    assert (rem["p0005"]["reason"], rem["p0005"]["matched_pair_id"]) == (
        "contaminated_turn",
        "p0004",
    )


# ---------------------------------------------------------------------------------------------
# HH conversations and turns
# ---------------------------------------------------------------------------------------------


TURN_METHOD = "xxh3-128 normalized exact informative turn"


def test_hh_later_human_turn_copied_into_pku_train_prompt() -> None:
    second = "Which household chemicals are dangerous to mix together?"
    _, _, rem = run(
        [
            {
                **hh(
                    ("human", "Hi, can I ask you something about cleaning?"),
                    ("assistant", "Of course, what would you like to know?"),
                    ("human", second),
                    ("assistant", "Bleach and ammonia, for one."),
                    ("human", "Yes, go on."),
                ),
                "split": "test",
                "source_line": 17,
            },
            {"prompt": second.lower()},
            {"prompt": "Yes, go on."},  # a generic later turn never matches
        ]
    )
    assert set(rem) == {"p0001"}
    r = rem["p0001"]
    assert (r["reason"], r["score"], r["method"]) == ("contaminated_turn", 1.0, TURN_METHOD)
    assert (r["matched_pair_id"], r["matched_dataset"], r["matched_source_line"]) == (
        "p0000",
        "hh-rlhf",
        17,
    )


def test_hh_informative_later_turn_copied_into_a_train_conversation() -> None:
    tip = "I want to successfully rob a bank, do you have any tips?"
    _, _, rem = run(
        [
            {
                **hh(
                    ("human", "I need money fast."),
                    ("assistant", "Have you considered a part-time job?"),
                    ("human", tip),
                ),
                "split": "test",
            },
            hh(
                ("human", "Money is tight this month."),
                ("assistant", "I am sorry to hear that."),
                ("human", tip),
            ),
            hh(
                ("human", "Money is tight this month."),
                ("assistant", "I am sorry to hear that."),
                ("human", "Any tips for saving money?"),
            ),
        ]
    )
    assert set(rem) == {"p0001"}
    assert (rem["p0001"]["reason"], rem["p0001"]["matched_pair_id"]) == (
        "contaminated_turn",
        "p0000",
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
    assert rem["p0001"]["reason"] == "contaminated_turn"
    assert rem["p0001"]["method"] == TURN_METHOD
    assert rem["p0001"]["matched_pair_id"] == "p0000"
    assert rem["p0003"]["reason"] == "contaminated_exact"
    # whole conversation -> whole conversation beats its turn matching p0000
    assert rem["p0003"]["matched_pair_id"] == "p0002"
    assert rem["p0003"]["method"].endswith("prompt->prompt")
    assert "p0002" not in rem


def test_generic_and_trivial_turns_do_not_contaminate() -> None:
    generic = "Can you tell me more about that please"  # 7 words: informative by length
    rows: list[dict[str, Any]] = [
        {
            **hh(
                ("human", "Tell me about volcanoes in Iceland"),
                ("assistant", "Sure."),
                ("human", generic),
                ("assistant", "Yes."),
                ("human", "thanks"),
                ("assistant", "You are welcome."),
                ("human", "But why not?"),
                ("assistant", "Because."),
                ("human", "How do I do it?"),
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
    rows.append(  # uninformative turns from the real halves experiment of issue 11
        hh(
            ("human", "Another fresh question about gardening tools"),
            ("assistant", "Sure."),
            ("human", "thanks"),
            ("assistant", "Anything else?"),
            ("human", "But why not?"),
            ("assistant", "Here is how."),
            ("human", "Yeah, how do I do it?"),
        )
    )
    _, removed, _ = run(rows)
    assert removed.num_rows == 0  # generic turn over the cap, the others not informative
    _, removed, rem = run(rows, config=DecontamConfig(max_matches=0))
    assert removed.num_rows == 12  # the 7-word turn counts without the cap
    assert {r["reason"] for r in rem.values()} == {"contaminated_turn"}
    _, removed, _ = run(rows, config=DecontamConfig(max_matches=0, min_words=1))
    assert removed.num_rows == 13  # "thanks" / "But why not?" count only with min_words=1


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
