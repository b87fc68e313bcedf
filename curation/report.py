"""The per-file ingest report carried in an ingested table's schema metadata, and what it implies."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

REPORT_KEY = b"rlhf_curation.report"

#: Thresholds of the ``quarantine_rate`` check: the share of a file's rows read that the rules
#: quarantine. Measured on the real rows in ``../shared/data`` with the rules of this code
#: (``docs/validation.md``, "Quarantine-rate thresholds"):
#:
#: * HH-RLHF ``harmless-base/test.jsonl.gz``, the complete upstream file: 13 of 2,312 rows,
#:   0.56 % (95 % Wilson interval 0.33-0.96 %; ``bad_turn_order`` 9, ``context_mismatch`` 5,
#:   ``empty_response`` 4, some rows break two rules); its halves in ``sample_data``: 4 of 800
#:   (0.50 %) and 9 of 1,512 (0.60 %);
#: * PKU-SafeRLHF ``Alpaca-7B/test.jsonl``, first 45 rows: 0 of 45 (1 warning).
#:
#: WARN above 0.5 % sits at the real HH rate, so a clean upstream HH file can warn (the complete
#: ``harmless-base/test`` does, at 0.56 %): a prompt to read the file's ``by_reason`` table,
#: never blocking. ERROR above 5 % is nine times the measured rate and five times the top of its
#: interval: only a format change or a parser regression quarantines that many rows.
QUARANTINE_WARN_RATE = 0.005
QUARANTINE_ERROR_RATE = 0.05


def report_of(table: pa.Table) -> dict:
    """The file report stored in an ingested table's schema metadata."""
    return json.loads((table.schema.metadata or {})[REPORT_KEY])


def suite_for(report: dict) -> str:
    """The GX suite of an ingested file, from its dataset, subset and detected schema variant."""
    if report["subset"] == "red-team-attempts":
        return "hh_red_team_raw"
    if report["dataset"] == "hh-rlhf":
        return "hh_preference_raw"
    return "pku_saferlhf_v0_raw" if report["schema_variant"] == "v0" else "pku_saferlhf_raw"


def quarantine_rate(report: Mapping[str, Any]) -> float:
    """The share of a file's rows read that were quarantined (0 for a file with no rows)."""
    read = report["rows_read"]
    return report["rows_quarantined"] / read if read else 0.0
