"""The synthetic benchmark corpus (bench.synth) and its dedup/decontamination scoring (bench.eval_dedup)."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pytest

from bench import eval_dedup, synth
from curation.core.schema import REMOVED
from curation.ingest.ingest import ingest_file
from curation.ingest.sources import all_files
from curation.match.decontam import DecontamConfig
from curation.match.dedup import DedupConfig

SCALE = 0.01


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "synth_info.json"  # holds timings
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    synth.generate(out, synth.SynthConfig(scale=SCALE, seed=7))
    return out


@pytest.fixture(scope="module")
def results(corpus: Path) -> dict:
    return eval_dedup.evaluate(
        corpus, {"default": DedupConfig(), "prompt_dedup": DedupConfig(prompt_dedup=True)}
    )


def test_layout_is_ingestible_without_quarantine(corpus: Path) -> None:
    plans = {(f.dataset, f.relpath): f.rows for f in synth.file_plans(SCALE)}
    for source in all_files():
        root = corpus / eval_dedup.ROOTS[source.dataset]
        assert (root / source.relpath).is_file(), source.relpath
        result = ingest_file(source, str(root))
        report = result.report
        assert report.present and report.rows_quarantined == 0, (source.relpath, report)
        assert report.warnings_by_reason == {}, (source.relpath, report.warnings_by_reason)
        if source.kind == "hh_red_team":
            assert report.rows_read == synth._scaled(synth.RED_TEAM_ROWS, SCALE)
        else:
            assert report.rows_read == plans[(source.dataset, source.relpath)]
    # the red-team file is ONE JSON array, as upstream
    with gzip.open(corpus / "hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz", "rb") as f:
        assert f.read(1) == b"["


def test_row_counts_scale() -> None:
    full = {(f.dataset, f.subset, f.split): f.rows for f in synth.file_plans(1.0)}
    assert full[("hh-rlhf", "harmless-base", "train")] == 42_537
    assert full[("hh-rlhf", "helpful-rejection-sampled", "test")] == 2_749
    pku = [n for (d, _, s), n in full.items() if d == "pku-saferlhf"]
    assert sum(pku) == 73_907 + 8_211
    for scale in (0.2, 0.05):
        scaled = {(f.dataset, f.subset, f.split): f.rows for f in synth.file_plans(scale)}
        for key, n in full.items():
            assert scaled[key] == max(synth.MIN_FILE_ROWS, round(n * scale))
    small = synth.file_plans(0.2)
    counts = synth.plant_counts(synth.SynthConfig(scale=0.2), small)
    assert min(counts.values()) >= 250  # a few hundred planted rows per kind at scale 0.2


def test_same_seed_same_bytes(corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synth.generate(again, synth.SynthConfig(scale=SCALE, seed=7))
    assert _digests(again) == _digests(corpus)
    other = tmp_path / "other"
    synth.generate(other, synth.SynthConfig(scale=SCALE, seed=8))
    assert _digests(other) != _digests(corpus)


def test_ground_truth_references_existing_rows(corpus: Path) -> None:
    pairs, _, counts = eval_dedup.load_pairs(corpus)
    assert counts["rows_quarantined"] == 0
    keys = set(
        zip(
            pairs["dataset"].to_pylist(),
            pairs["source_file"].to_pylist(),
            pairs["source_line"].to_pylist(),
            pairs["dimension"].to_pylist(),
            strict=True,
        )
    )
    rows = {k[:3] for k in keys}
    truth = eval_dedup.load_truth(corpus)
    assert {t["kind"] for t in truth} == {
        *synth.DEDUP_KINDS,
        *synth.CONTAM_KINDS,
        *synth.HARD_NEGATIVE_KINDS,
    }
    planted = set()
    for t in truth:
        key = (t["dataset"], t["source_file"], t["source_line"], t["dimension"])
        assert key in keys, t
        assert t["split"] == "train"
        orig = (t["original_dataset"], t["original_source_file"], t["original_source_line"])
        assert orig in rows, t
        if t["kind"] in (*synth.DEDUP_KINDS, "hard_template_dedup"):
            assert (*orig, t["dimension"]) in keys
            assert t["original_split"] == "train"
        else:
            assert t["original_split"] == "test"
        assert key not in planted, "a pair is planted once"
        planted.add(key)


def test_evaluation_meets_targets(results: dict) -> None:
    assert results["counts"]["rows_quarantined"] == 0
    for name, run in results["runs"].items():
        kinds = run["kinds"]
        for kind in ("exact_duplicate", "cosmetic_duplicate", "swapped_duplicate"):
            assert kinds[kind]["planted"] > 0
            assert kinds[kind]["recall"] == 1.0, (name, kind, kinds[kind])
        for kind, k in kinds.items():
            if k["expected_reason"] == "contaminated_exact":
                assert k["recall"] == 1.0, (name, kind, k)
        for reason, r in run["reasons"].items():
            assert r["removed"] > 0, (name, reason)
            assert r["precision"] >= 0.99, (name, reason, r)
        assert run["targets_missed"] == [], (name, run["targets_missed"])
        for kind in synth.HARD_NEGATIVE_KINDS:  # different prompts: never removed
            assert kinds[kind]["planted"] > 0 and kinds[kind]["wrong_removals"] == 0, (name, kind)
    # a near-duplicate prompt with new responses is a duplicate only for prompt-level dedup
    assert results["runs"]["default"]["kinds"]["near_duplicate_new_responses"]["found"] == 0
    assert results["runs"]["prompt_dedup"]["kinds"]["near_duplicate_new_responses"]["recall"] == 1
    report = eval_dedup.format_report(results)
    assert "contam_cross_hh_later_to_pku" in report and "precision" in report


def _removed(rows: list[dict]) -> pa.Table:
    full = [
        {
            "pair_id": f"id{i}",
            "split": "train",
            "subset": "x",
            "method": "m",
            "score": 1.0,
            "matched_pair_id": "m",
            "matched_subset": "x",
            "matched_split": "train",
            **r,
        }
        for i, r in enumerate(rows)
    ]
    return pa.Table.from_pylist(full, schema=REMOVED)


def test_score_counts_wrong_matches_and_unplanted_removals_as_false_positives() -> None:
    truth = [
        {
            "kind": "exact_duplicate",
            "dataset": "hh-rlhf",
            "source_file": "a",
            "source_line": 1,
            "dimension": "helpful",
            "original_dataset": "hh-rlhf",
            "original_source_file": "a",
            "original_source_line": 2,
            "original_dimension": "helpful",
        },
        {
            "kind": "contam_exact",
            "dataset": "hh-rlhf",
            "source_file": "a",
            "source_line": 3,
            "dimension": "helpful",
            "original_dataset": "hh-rlhf",
            "original_source_file": "t",
            "original_source_line": 0,
            "original_dimension": None,
        },
    ]

    def row(line, mfile, mline, reason):
        return {
            "dataset": "hh-rlhf",
            "source_file": "a",
            "source_line": line,
            "dimension": "helpful",
            "reason": reason,
            "matched_dataset": "hh-rlhf",
            "matched_source_file": mfile,
            "matched_source_line": mline,
        }

    # the original (not the planted copy) is removed, matched to the planted copy: found
    dedup = _removed([row(2, "a", 1, "exact_duplicate"), row(9, "a", 1, "exact_duplicate")])
    decontam = _removed([row(3, "t", 5, "contaminated_exact")])  # wrong test row
    result = eval_dedup.score(truth, dedup, decontam)
    assert result["kinds"]["exact_duplicate"]["recall"] == 1.0
    assert result["reasons"]["exact_duplicate"]["precision"] == 0.5
    assert result["kinds"]["contam_exact"]["found"] == 0
    assert result["reasons"]["contaminated_exact"]["false_positive"] == 1
    assert result["kinds"]["contam_exact"]["wrong_removals"] == 1
    misses = eval_dedup.check_targets(result)
    assert any("precision exact_duplicate" in m for m in misses)
    assert any("recall contam_exact" in m for m in misses)


def test_decontam_config_is_recorded(results: dict) -> None:
    run = results["runs"]["default"]
    assert run["config"]["decontam"] == DecontamConfig().__dict__
    assert set(run["seconds"]) == {"dedup", "decontam", "score"}


GOLDEN = Path(__file__).parent / "golden" / "synth_decisions.csv"
_DECISION_COLUMNS = ["stage", "removed", "reason", "score", "matched", "method"]


def decision_lines(stage: str, removed: pa.Table) -> list[str]:
    """One readable CSV line per removal: who (dataset/file:line dimension), why, score, match."""
    lines = []
    for r in removed.to_pylist():
        who = f"{r['dataset']}/{r['source_file']}:{r['source_line']} {r['dimension']}"
        match = f"{r['matched_dataset']}/{r['matched_source_file']}:{r['matched_source_line']}"
        lines.append(
            ",".join([stage, who, r["reason"], f"{r['score']:.4f}", match, f'"{r["method"]}"'])
        )
    return sorted(lines)


def test_detection_decisions_are_identical_to_the_recorded_ones(corpus: Path) -> None:
    """Every dedup and decontamination decision on the scale-0.01, seed-7 corpus, as a table
    (``tests/golden/synth_decisions.csv``). A change shows as the lines added and removed;
    regenerate with ``RLHF_UPDATE_GOLDEN=1 pytest tests/test_synth.py`` when a rule changes on
    purpose, and say why in the commit."""
    from curation.match.decontam import decontaminate
    from curation.match.dedup import deduplicate

    pairs, _, _ = eval_dedup.load_pairs(corpus)
    kept, dedup_removed = deduplicate(pairs)
    _, decontam_removed = decontaminate(kept)
    got = decision_lines("dedup", dedup_removed) + decision_lines("decontam", decontam_removed)
    if os.environ.get("RLHF_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(",".join(_DECISION_COLUMNS) + "\n" + "\n".join(got) + "\n")
    want = GOLDEN.read_text().splitlines()[1:]
    added = sorted(set(got) - set(want))
    lost = sorted(set(want) - set(got))
    assert not added and not lost, {"new decisions": added[:20], "lost decisions": lost[:20]}
