"""The per-file ingest report carried in an ingested table's schema metadata, and what it implies."""

from __future__ import annotations

import json

import pyarrow as pa

REPORT_KEY = b"rlhf_curation.report"


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
