"""Paraphrased test prompts (issue 25): the static embedding, the neighbour search, the labelled
real candidates (precision and recall per threshold) and the report-only default."""

from __future__ import annotations

import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from assets.resources import CurationSettings
from bench import eval_paraphrase, eval_real
from curation.core.schema import PARAPHRASES
from curation.core.textnorm import normalize_array
from curation.match import paraphrase
from curation.match.decontam import DecontamConfig, decontaminate, decontaminate_and_report
from curation.match.near_dup import tokenize
from curation.publish.card import render_card

#: Per threshold, the least precision and recall on every partition of the labelled real rows
#: (bench/labels/paraphrase.jsonl; the measured figures are in docs/benchmarks.md).
EXPECTED = {0.8: (0.4, 1.0), 0.85: (0.6, 0.6), 0.9: (0.7, 0.2), 0.95: (1.0, 0.1)}


@pytest.fixture(scope="module")
def universe() -> pa.Table:
    return eval_real.load_universe_pairs()


@pytest.fixture(scope="module")
def openings(universe: pa.Table) -> list[str]:
    """The distinct normalized openings of every real sample conversation."""
    first = [t[0]["text"] for t in universe["prompt_turns"].to_pylist()]
    return sorted(set(normalize_array(pa.array(first, pa.large_string())).to_pylist()))


@pytest.fixture(scope="module")
def scores(universe: pa.Table) -> dict:
    return eval_paraphrase.evaluate(tuple(EXPECTED), universe)


@pytest.fixture(scope="module")
def halves(universe: pa.Table):
    """The halves partition without its ``conv`` column, and the conversation of each pair."""
    pairs = eval_real.with_split(universe, "halves")
    conv = dict(zip(pairs["pair_id"].to_pylist(), pairs["conv"].to_pylist(), strict=True))
    return pairs.drop_columns(["conv"]), conv


def test_embedding_is_wordllamas_and_loads_offline(openings: list[str]) -> None:
    """The bag-of-words embedding equals WordLlama's own (padded token means), on real texts;
    the model comes from the installed wheel with downloads disabled."""
    import wordllama
    from wordllama import WordLlama

    texts = [*openings[:300], "the 14 words", "a"]
    model = WordLlama.load(
        config=paraphrase.MODEL,
        dim=paraphrase.MODEL_DIMS,
        cache_dir=pathlib.Path(wordllama.__file__).parent,
        disable_download=True,
    )
    ours = paraphrase.embed(texts)
    assert np.abs(ours - model.embed(texts, norm=True)).max() < 1e-5
    assert not paraphrase.embed(["", None]).any()  # no tokens: similar to nothing


def test_embedding_from_word_hashes_is_the_embedding_of_the_texts(openings: list[str]) -> None:
    """The decontamination embeds openings from the word hashes it already holds and a
    vocabulary of their words (no text read again): the same vectors as from the texts, on the
    real openings; a word missing from the vocabulary is an error, not a silent zero."""
    texts = pa.array(openings, pa.large_string())
    words = tokenize(texts, seed=7)
    vocabulary = paraphrase.Vocabulary()
    for start in range(0, len(texts), 500):  # batch by batch, as collect_units adds them
        vocabulary.add(texts.slice(start, 500))
    ids = np.arange(len(texts))[::-1]  # any order
    from_hashes = paraphrase.embed_words(words, ids, vocabulary, seed=7).vectors()
    from_texts = paraphrase.embed_texts(texts.take(pa.array(ids))).vectors()
    assert np.abs(from_hashes - from_texts).max() < 1e-6
    partial = paraphrase.Vocabulary()
    partial.add(texts.slice(0, 10))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        paraphrase.embed_words(words, ids, partial, seed=7)


def test_two_stage_search_finds_what_the_exact_search_finds(
    openings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The principal-axes filter loses no pair of the exact search on the real openings."""
    refs = paraphrase.embed_texts(openings[::2])
    probes = paraphrase.embed_texts(openings[1::2])
    monkeypatch.setattr(paraphrase, "QUERY_BLOCK", 100)  # several blocks, same result
    for threshold in (0.8, 0.85):
        monkeypatch.setattr(paraphrase, "FILTER_MIN_REFS", 10**9)
        exact = paraphrase.nearest(refs, probes, threshold)
        monkeypatch.setattr(paraphrase, "FILTER_MIN_REFS", 0)
        filtered = paraphrase.nearest(refs, probes, threshold)
        assert len(exact[0]) >= 10, threshold
        for a, b in zip(exact, filtered, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5)
        probe, _, score, rank = exact
        assert (score >= threshold).all() and (rank <= paraphrase.NEIGHBOURS).all()
        assert (np.diff(score[probe == probe[0]]) <= 0).all()  # nearest first


def test_labels_cover_every_category() -> None:
    categories = [r["category"] for r in eval_paraphrase.load_labels().values()]
    for category in ("paraphrase", "sibling", "more_specific", "generic", "different"):
        assert categories.count(category) >= 5, category


@pytest.mark.parametrize("threshold", list(EXPECTED))
def test_precision_and_recall_on_labelled_real_rows(scores: dict, threshold: float) -> None:
    least_precision, least_recall = EXPECTED[threshold]
    for split, by_threshold in scores.items():
        s = by_threshold[threshold]
        assert "unlabelled" not in s.wrong, (split, threshold)  # every link was read
        assert s.positives >= 20, split
        assert s.precision >= least_precision, (split, threshold, s.wrong)
        assert s.recall >= least_recall, (split, threshold, s.missed_examples)


def test_default_reports_and_removes_nothing_more(halves) -> None:
    """Report-only by default: the removals are those of the rules alone, and the report
    lists the labelled paraphrase "how do i steal a car" (train) / "how can i steal a car"."""
    pairs, conv = halves
    _, rules_only = decontaminate(pairs, DecontamConfig(paraphrase="off"))
    result = decontaminate_and_report(pairs)
    assert result.removed.equals(rules_only)
    assert "contaminated_paraphrase" not in result.removed["reason"].to_pylist()
    report = result.paraphrases
    assert report.schema == PARAPHRASES and report.num_rows >= 20
    assert not pc.any(report["removed"]).as_py()
    assert not set(report["pair_id"].to_pylist()) & set(rules_only["pair_id"].to_pylist())
    assert (pc.min(report["score"]).as_py() or 0) >= paraphrase.THRESHOLD
    texts = set(zip(report["text"].to_pylist(), report["matched_text"].to_pylist(), strict=True))
    assert ("how do i steal a car", "how can i steal a car") in texts
    assert {conv[p] for p in report["pair_id"].to_pylist()} <= {
        c for c in conv.values() if eval_real.SPLITS["halves"](c)
    }


def test_remove_mode_removes_the_reported_pairs(halves) -> None:
    pairs, _ = halves
    config = DecontamConfig(paraphrase="remove")
    result = decontaminate_and_report(pairs, config)
    _, rules_only = decontaminate(pairs, DecontamConfig(paraphrase="off"))
    removed = result.removed
    by_rule = removed.filter(pc.invert(pc.equal(removed["reason"], "contaminated_paraphrase")))
    assert by_rule.equals(rules_only)
    dropped = removed.filter(pc.equal(removed["reason"], "contaminated_paraphrase"))
    assert set(dropped["pair_id"].to_pylist()) == set(result.paraphrases["pair_id"].to_pylist())
    assert pc.all(result.paraphrases["removed"]).as_py()
    assert set(dropped["matched_split"].to_pylist()) == {"test"}
    assert result.kept.num_rows + removed.num_rows == pairs.num_rows


def test_settings_refuse_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match=r"decontam\.paraphrase: 'delete' is not one of 'off'"):
        CurationSettings(decontam={"paraphrase": "delete"})
    config = CurationSettings(decontam={"paraphrase": "remove", "paraphrase_threshold": 0.9})
    assert config.decontam_config().paraphrase == "remove"


def test_card_section_says_what_was_done(halves) -> None:
    """The card shows the counts per dataset pair and the closest links; it says whether the
    pairs were kept or removed; a release without links says so; an older one has no section."""
    pairs, _ = halves
    report = decontaminate_and_report(pairs).paraphrases

    def card(mode: str, table: pa.Table | None) -> str:
        manifest = {"release_id": "r1", "config": {"decontam": {"paraphrase": mode}}}
        tables = {} if table is None else {"paraphrases": table}
        return render_card({**manifest, "tables": {}}, tables)[0]

    kept = card("report", report)
    assert "## Paraphrased test prompts" in kept and "These pairs are **kept**" in kept
    assert f"| hh-rlhf | hh-rlhf | {report.num_rows} |" in kept
    assert "| 0.975 | how do i steal a car | how can i steal a car |" in kept
    assert "were **removed**" in card("remove", report)
    assert "No train pair was linked" in card("report", PARAPHRASES.empty_table())
    assert "Paraphrased" not in card("report", None)
    assert "The search was off" in card("off", PARAPHRASES.empty_table())
