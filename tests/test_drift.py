"""The drift statistics and thresholds (``curation.publish.drift``) on the real PKU label counts.

The counts are those of the 45 real PKU-SafeRLHF rows of the sample (harmless dimension),
measured by the pipeline (``tests/test_release_drift.py`` publishes them); scaled to the real
dataset's size (about 82K rows, x1800) they show what the label checks see at scale.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from curation.core.bounds import InvalidConfig
from curation.publish.drift import (
    ERROR,
    PASS,
    WARN,
    DriftConfig,
    check_labels,
    check_quarantine,
    check_rows,
    check_schema,
    chi_square,
    compare_releases,
    psi,
)

#: Alpaca-7B/harmless label counts of the real sample (baseline), and after flipping
#: ``safer_response_id`` on every fifth row (the pipeline test's change).
REAL = {
    "safety": {"safe/safe": 22, "safe/unsafe": 6, "unsafe/unsafe": 17},
    "chosen_severity": {"0": 28, "1": 2, "2": 13, "3": 2},
    "rejected_severity": {"0": 22, "1": 2, "2": 19, "3": 2},
}
FLIPPED = {
    "safety": {"safe/safe": 22, "safe/unsafe": 6, "unsafe/unsafe": 17},
    "chosen_severity": {"0": 28, "1": 1, "2": 15, "3": 1},
    "rejected_severity": {"0": 22, "1": 3, "2": 17, "3": 3},
}
SCALE = 1800  # 45 rows -> ~81K, the real size of PKU-SafeRLHF


def scaled(counts: dict, factor: int = SCALE) -> dict:
    return {family: {k: v * factor for k, v in c.items()} for family, c in counts.items()}


def profile(labels: dict) -> dict:
    return {"labels": {"Alpaca-7B/harmless": labels}}


def test_psi_and_chi_square_on_known_values():
    assert psi({"a": 50, "b": 50}, {"a": 50, "b": 50}) == 0
    # shares 0.5/0.5 -> 0.9/0.1: (0.4 ln 1.8) + (-0.4 ln 0.2)
    assert psi({"a": 50, "b": 50}, {"a": 90, "b": 10}) == pytest.approx(
        0.4 * np.log(1.8) + 0.4 * np.log(5)
    )
    statistic, p_value = chi_square({"a": 50, "b": 50}, {"a": 90, "b": 10})
    assert statistic == pytest.approx(800 / 21) and p_value < 1e-8  # 2x2 Pearson, no correction
    assert chi_square({"a": 5}, {"a": 7}) == (0.0, 1.0)  # one category: nothing to test


def test_real_label_counts_do_not_drift_by_sampling_noise():
    """A fresh sample of the same real distribution, at the real size, fires nothing."""
    rng = np.random.default_rng(0)
    noisy = {}
    for family, counts in scaled(REAL).items():
        keys, values = list(counts), np.array(list(counts.values()), dtype=float)
        drawn = rng.multinomial(int(values.sum()), values / values.sum())
        noisy[family] = dict(zip(keys, drawn.tolist(), strict=True))
    result = check_labels(profile(scaled(REAL)), profile(noisy), DriftConfig())
    assert result.severity == PASS and result.compared == 4  # safety, 2 severities, harm


def test_a_flipped_fifth_is_invisible_to_label_counts_even_at_scale():
    """Flipping ``safer_response_id`` on a fifth of the real rows moves the chosen severity
    histogram by a PSI of ~0.04 even at 81K rows: significant, but under the WARN level; that
    is why releases also compare pairs (``drift_pairs``)."""
    result = check_labels(profile(scaled(REAL)), profile(scaled(FLIPPED)), DriftConfig())
    assert result.severity == PASS
    assert 0.02 < psi(scaled(REAL)["chosen_severity"], scaled(FLIPPED)["chosen_severity"]) < 0.1


def test_a_safety_label_shift_fires_at_scale_but_not_on_45_rows():
    """A fifth of the pairs whose chosen response was safe now chosen unsafe: an ERROR at the
    real size; on the 45 sample rows the same shares are not significant."""
    shifted = dict(
        REAL, safety={"safe/safe": 18, "safe/unsafe": 1, "unsafe/safe": 9, "unsafe/unsafe": 17}
    )
    big = check_labels(profile(scaled(REAL)), profile(scaled(shifted)), DriftConfig())
    assert big.severity == ERROR
    [finding] = big.findings
    assert finding.key == "Alpaca-7B/harmless: safety" and finding.p_value < 1e-100
    assert finding.new["unsafe/safe"] == pytest.approx(9 / 45, abs=1e-4)
    small = check_labels(profile(REAL), profile(shifted), DriftConfig())
    assert small.severity in (PASS, WARN)


def test_rows_files_and_quarantine_levels():
    old = {
        "rows": {"hh-rlhf/harmless-base/test/harmless": 796, "pku/x/test/helpful": 15},
        "files": {
            "hh-rlhf/a.jsonl.gz": {"present": True, "rows": 800, "quarantined": {"bad": 4}},
            "hh-rlhf/red-team-attempts/r.jsonl.gz": {
                "present": True,
                "rows": 120,
                "quarantined": {},
            },
        },
    }
    new = {
        "rows": {"hh-rlhf/harmless-base/test/harmless": 740, "pku/x/test/helpful": 3},
        "files": {
            "hh-rlhf/a.jsonl.gz": {"present": True, "rows": 800, "quarantined": {"bad": 60}},
            "hh-rlhf/red-team-attempts/r.jsonl.gz": {
                "present": False,
                "rows": 0,
                "quarantined": {},
            },
        },
    }
    rows = check_rows(old, new, DriftConfig(), ["hh-rlhf/red-team-attempts/*"])
    assert [(f.key, f.severity) for f in rows.findings] == [
        ("hh-rlhf/red-team-attempts/r.jsonl.gz", WARN),  # vanished, allowed
        ("hh-rlhf/harmless-base/test/harmless", WARN),  # -7.0 %; pku 15 -> 3 is under min_rows
    ]
    assert check_rows(old, new, DriftConfig()).findings[0].severity == ERROR  # not allowed
    quarantine = check_quarantine(old, new, DriftConfig())
    [finding] = quarantine.findings
    assert finding.severity == ERROR and (finding.previous, finding.new) == (0.005, 0.075)


def test_schema_changes_are_errors_unless_declared():
    def manifest(columns):
        return {"tables": {"pairs": {"schema": [{"name": n, "type": t} for n, t in columns]}}}

    old = manifest([("pair_id", "string"), ("score", "double")])
    new = manifest([("pair_id", "large_string"), ("extra", "int64")])
    result = check_schema(old, new, DriftConfig())
    assert {(f.key, f.detail) for f in result.findings} == {
        ("pairs.pair_id", "column retyped string -> large_string"),
        ("pairs.score", "column removed"),
        ("pairs.extra", "column added"),
    }
    assert result.severity == ERROR
    assert check_schema(old, new, DriftConfig(allow_schema_change=True)).severity == WARN


def test_a_new_table_is_a_warning_and_a_vanished_table_an_error():
    """The first release with the TRL view adds a table: no reader of the other tables breaks,
    so it must not hold ``latest`` (it did: one ERROR per column of the new table)."""
    pairs = {"schema": [{"name": "pair_id", "type": "string"}]}
    trl = {"schema": [{"name": "prompt", "type": "list"}, {"name": "pair_id", "type": "string"}]}
    old, new = {"tables": {"pairs": pairs}}, {"tables": {"pairs": pairs, "trl": trl}}
    added = check_schema(old, new, DriftConfig())
    assert [(f.key, f.severity, f.detail) for f in added.findings] == [("trl", WARN, "table added")]
    assert added.severity == WARN
    gone = check_schema(new, old, DriftConfig())
    assert gone.severity == ERROR
    assert {f.key for f in gone.findings} == {"trl.prompt", "trl.pair_id"}


def test_a_first_release_is_a_baseline():
    results = compare_releases(None, {"profile": {"rows": {}}})
    assert all(r.baseline and r.passed for r in results)


@given(counts=st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 10_000), min_size=2))
def test_a_distribution_never_drifts_from_itself(counts):
    assert psi(counts, counts) == pytest.approx(0, abs=1e-12)
    assert chi_square(counts, counts)[1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"rows_warn": 0.5, "rows_error": 0.2}, "rows_warn"),
        ({"p_warn": 0.0001, "p_error": 0.001}, "p_error"),
        ({"psi_warn": -1}, "psi_warn"),
        ({"min_rows": -1}, "min_rows"),
    ],
)
def test_bad_thresholds_are_refused(values, named):
    with pytest.raises(InvalidConfig, match=named):
        DriftConfig(**values)


def test_promote_from_the_cli_moves_a_held_release_to_latest(tmp_path):
    """A release held by an ERROR drift (published through the library with two profiles: a
    file's pairs fell by 30 %), accepted with the real ``rlhf-curate releases promote``."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from curation.publish.release import publish_release
    from tests.test_release import SOURCES, make_tables

    store = tmp_path / "store"

    def publish(pairs: int, config: dict):
        profile = {"rows": {"hh-rlhf/harmless-base/test/harmless": pairs}, "files": {}}
        return publish_release(
            str(store),
            make_tables(),
            sources=SOURCES,
            config=config,
            code_version="test",
            counts={},
            checks={},
            profile=profile,
        )

    baseline = publish(800, {"v": 1})
    held = publish(560, {"v": 2})
    assert held.held and not baseline.held
    latest = json.loads((store / "latest.json").read_text())["release_id"]
    assert latest == baseline.release_id
    cli = Path(sys.executable).parent / "rlhf-curate"
    done = subprocess.run(
        [
            str(cli),
            "releases",
            "promote",
            held.release_id[:8],
            "--reason",
            "trimmed upstream",
            "--by",
            "a.reviewer",
            "--store",
            str(store),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"release {held.release_id} promoted by a.reviewer" in done.stdout
    assert json.loads((store / "latest.json").read_text())["release_id"] == held.release_id
    record = json.loads((store / "releases" / f"{held.release_id}.promotion.json").read_text())
    assert (record["by"], record["reason"], record["latest_before"]) == (
        "a.reviewer",
        "trimmed upstream",
        baseline.release_id,
    )
