"""Matching on real text: the labelled real-data evaluation (bench/labels) and the halves
experiment of issue 11, on the real HH-RLHF and PKU-SafeRLHF rows bundled in sample_data."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bench import eval_real
from curation.ingest.ingest import ingest_file
from curation.ingest.sources import all_files
from curation.match.decontam import DecontamConfig, decontaminate
from curation.match.dedup import DedupConfig, deduplicate
from curation.normalize.normalize import pairs_from, split_verdicts, with_pair_ids

MIN_PRECISION = MIN_RECALL = 0.98


@pytest.fixture(scope="module")
def universe() -> pa.Table:
    return eval_real.load_universe_pairs()


@pytest.fixture(scope="module")
def results(universe: pa.Table) -> dict[str, dict[str, eval_real.FamilyScore]]:
    return eval_real.evaluate(DecontamConfig(), universe)


@pytest.fixture(scope="module")
def halves_removed(universe: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Issue 11's experiment, once: the halves pairs (with ``conv``) and what decontamination
    removes from them."""
    pairs = eval_real.with_split(universe, "halves")
    _, removed = decontaminate(pairs.drop_columns(["conv"]))
    return pairs, removed


def test_labels_cover_every_family(results: dict) -> None:
    """The evaluation has real positives for every family (it cannot pass by finding nothing)."""
    for family, least in {"exact": 50, "turn": 20, "ngram": 40, "any": 60}.items():
        for split, scores in results.items():
            assert scores[family].positives >= least, (split, family, scores[family].positives)
    assert sum(scores["near"].positives for scores in results.values()) >= 3


@pytest.mark.parametrize("family", (*eval_real.FAMILIES, "any"))
def test_precision_and_recall_on_labelled_real_rows(results: dict, family: str) -> None:
    for split, scores in results.items():
        s = scores[family]
        assert s.precision >= MIN_PRECISION, (split, family, s.wrong_examples)
        assert s.recall >= MIN_RECALL, (split, family, s.missed_examples)


def test_labels_can_fail_the_old_rules(universe: pa.Table) -> None:
    """The same evaluation scores the rules this replaced below the bar: a loose near-duplicate
    (one substituted word in a short prompt) joins template siblings."""
    truth = eval_real.load_truth(universe)
    loose = DecontamConfig(long_min_words=8, max_edit_fraction=0.2)
    scores = eval_real.evaluate_split(universe, truth, eval_real.SPLITS["halves"], loose)
    assert scores["near"].precision < MIN_PRECISION, scores["near"].wrong_examples


def _removed_prompt(removed: pa.Table, pairs: pa.Table, needle: str) -> bool:
    ids = set(removed["pair_id"].to_pylist())
    hit = pc.match_substring(pairs["prompt"], needle, ignore_case=True)
    rows = pairs.filter(pc.and_(hit, pc.equal(pairs["split"], "train")))
    assert rows.num_rows, f"no train prompt contains {needle!r}"
    return any(pid in ids for pid in rows["pair_id"].to_pylist())


@pytest.mark.parametrize(
    "needle",
    [
        "home address for CNN news anchor Kate Bolduan",
        "best way to hijack a plane",
        "insults for someone from Ghana",
        "become a scary clown",
        "patrice louvet a bad ceo",
    ],
)
def test_halves_keeps_template_siblings(halves_removed: tuple, needle: str) -> None:
    """Issue 11's experiment: the other half holds a sibling from the same template."""
    pairs, removed = halves_removed
    assert not _removed_prompt(removed, pairs, needle)


@pytest.mark.parametrize("needle", ["How can I control my husband?", "What is rohypnol?"])
def test_halves_removes_real_leaks(halves_removed: tuple, needle: str) -> None:
    pairs, removed = halves_removed
    assert _removed_prompt(removed, pairs, needle)


def test_halves_removals_are_all_labelled_leaks(universe: pa.Table, halves_removed: tuple) -> None:
    """Every train pair removed in the halves experiment is a labelled leak, and generic turns
    such as "Yes, go on." never decide a removal."""
    pairs, removed = halves_removed
    truth = eval_real.load_truth(universe)
    conv = dict(zip(pairs["pair_id"].to_pylist(), pairs["conv"].to_pylist(), strict=True))
    links = {
        frozenset((conv[a], conv[b]))
        for a, b in zip(
            removed["pair_id"].to_pylist(), removed["matched_pair_id"].to_pylist(), strict=True
        )
    }
    near = eval_real._near_positive_convs(pairs, truth)
    assert links and links <= truth.leak | near, links - truth.leak - near
    assert set(removed["reason"].to_pylist()) <= {"contaminated_exact", "contaminated_near"}


def _pku_rows_with_near_copies(tmp_path: Path) -> pa.Table:
    """The real PKU sample rows plus, for each, a copy whose prompt has one typo."""
    src = Path("sample_data/PKU-SafeRLHF")
    root = tmp_path / "PKU-SafeRLHF"
    shutil.copytree(src, root)
    train = root / "data/Alpaca-7B/train.jsonl"
    lines = train.read_bytes().splitlines()
    copies = []
    for line in lines:
        row = json.loads(line)
        word = next(w for w in row["prompt"].split() if len(w) >= 6 and w.isalpha())
        row["prompt"] = row["prompt"].replace(word, word[0] + word[2] + word[1] + word[3:], 1)
        for k in (0, 1):  # upstream convention: sha256 of prompt + response
            text = row["prompt"] + row[f"response_{k}"]
            row[f"response_{k}_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        copies.append(json.dumps(row).encode())
    train.write_bytes(b"\n".join(lines + copies) + b"\n")
    tables = []
    for source in all_files():
        if source.dataset == "pku-saferlhf" and (root / source.relpath).exists():
            ok, _ = split_verdicts(ingest_file(source, str(root)).table)
            tables.append(pairs_from(ok))
    return with_pair_ids(pa.concat_tables(tables))


def test_pku_row_keeps_or_loses_both_pairs(tmp_path: Path) -> None:
    """Issue 11 item 4: with prompt_dedup the two pairs of a PKU row stay or go together."""
    pairs = _pku_rows_with_near_copies(tmp_path)
    kept, removed = deduplicate(pairs, DedupConfig(prompt_dedup=True))
    assert removed.num_rows > 0
    per_row: dict[tuple, int] = {}
    for f, line in zip(
        kept["source_file"].to_pylist(), kept["source_line"].to_pylist(), strict=True
    ):
        per_row[(f, line)] = per_row.get((f, line), 0) + 1
    assert set(per_row.values()) == {2}
    # the survivors are the original rows (first source lines), the typo copies are removed
    removed_lines = set(removed["source_line"].to_pylist())
    assert min(removed_lines) >= 30
