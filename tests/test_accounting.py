"""Row accounting and count sums (curation.publish.accounting): one computation for check and release."""

from __future__ import annotations

import pyarrow as pa

from curation.publish.accounting import account, account_release, sum_counts

REPORTS = [
    {"dataset": "hh-rlhf", "subset": "harmless-base", "rows_read": 10, "rows_quarantined": 2},
    {"dataset": "pku-saferlhf", "subset": "Alpaca-7B", "rows_read": 5, "rows_quarantined": 1},
    {"dataset": "hh-rlhf", "subset": "red-team-attempts", "rows_read": 4, "rows_quarantined": 1},
]


def rows(n: int) -> pa.Table:
    return pa.table({"x": list(range(n))})


def test_account_release_counts_the_tables_it_is_given():
    # pairs emitted: 8 HH + 2 * 4 PKU = 16 = 13 kept + 2 + 1 removed
    figures = account_release(
        REPORTS, pairs=rows(13), removed=[rows(2), rows(1)], quarantine=rows(4), red_team=rows(3)
    )
    assert figures["ok"] and figures["pairs_emitted"] == 16 and figures["pairs_removed"] == 3
    assert figures == account(
        REPORTS, pairs_kept=13, pairs_removed=3, quarantine_rows=4, red_team_rows=3
    )
    broken = account_release(
        REPORTS, pairs=rows(13), removed=[rows(2)], quarantine=rows(4), red_team=rows(3)
    )
    assert not broken["ok"]
    assert broken["identities"]["pairs_emitted_equals_kept_plus_removed"] is False


def test_sum_counts_adds_per_code_in_code_order():
    reports = [{"by": {"b": 2, "a": 1}}, {"by": {}}, {"by": {"b": 3, "c": 0}}]
    assert list(sum_counts(reports, "by").items()) == [("a", 1), ("b", 5), ("c", 0)]
    assert sum_counts([], "by") == {}
