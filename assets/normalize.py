"""Stage 2, validate + normalize: split quarantined rows off and map both datasets to one pair table."""

import json

import dagster as dg
import pyarrow as pa

from assets.ingest import INGEST_KEYS, report_of
from assets.metadata import counts_markdown, preview, stage_out
from curation.ingest import require_recognisable
from curation.normalize import (
    pairs_from,
    quarantine_rows,
    red_team_rows,
    split_verdicts,
    with_pair_ids,
)
from curation.schema import PAIRS, QUARANTINE, RED_TEAM
from curation.sources import SourceError

VALIDATE_GROUP = "validate"
SOURCE_FILES = pa.schema([("report", pa.string())])


@dg.multi_asset(
    ins={key.path[-1]: dg.AssetIn(key) for key in INGEST_KEYS},
    outs={
        "normalized_pairs": stage_out(
            VALIDATE_GROUP,
            "Valid rows of both datasets as one preference-pair table (before dedup).",
        ),
        "quarantine": stage_out(
            VALIDATE_GROUP, "Rows that failed an ERROR rule, with reason codes and the raw line."
        ),
        "red_team": stage_out(VALIDATE_GROUP, "HH red-team attempts with parsed turns."),
        "source_files": stage_out(
            VALIDATE_GROUP, "One JSON report per upstream file: URI, revision, size, sha256, rows."
        ),
    },
)
def validate_and_normalize(context: dg.AssetExecutionContext, **raw_tables: pa.Table):
    """Split every ingested file into curated-bound rows and quarantine, then normalize."""
    pairs, quarantined, red_team, reports = [], [], [], []
    for name in sorted(raw_tables):
        table = raw_tables[name]
        reports.append(report_of(table))
        good, bad = split_verdicts(table)
        quarantined.append(quarantine_rows(bad))
        if "transcript" in table.column_names:
            red_team.append(red_team_rows(good))
        else:
            pairs.append(pairs_from(good))
    try:
        require_recognisable(reports)
    except SourceError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    pair_table = with_pair_ids(pa.concat_tables([PAIRS.empty_table(), *pairs]))
    quarantine = pa.concat_tables([QUARANTINE.empty_table(), *quarantined])
    red_team_table = pa.concat_tables([RED_TEAM.empty_table(), *red_team])
    source_files = pa.table({"report": [json.dumps(r) for r in reports]}, schema=SOURCE_FILES)
    by_reason: dict[str, int] = {}
    for r in reports:
        for code, n in r["quarantine_by_reason"].items():
            by_reason[code] = by_reason.get(code, 0) + n
    absent = [r["relpath"] for r in reports if not r["present"]]
    yield dg.Output(
        pair_table,
        "normalized_pairs",
        metadata={"dagster/row_count": pair_table.num_rows, "preview": preview(pair_table)},
    )
    yield dg.Output(
        quarantine,
        "quarantine",
        metadata={
            "dagster/row_count": quarantine.num_rows,
            "by_reason": counts_markdown(by_reason),
        },
    )
    yield dg.Output(
        red_team_table, "red_team", metadata={"dagster/row_count": red_team_table.num_rows}
    )
    yield dg.Output(
        source_files,
        "source_files",
        metadata={
            "files_present": len(reports) - len(absent),
            "files_absent": dg.MetadataValue.md("\n".join(f"- `{a}`" for a in absent) or "_none_"),
            "rows_read": sum(r["rows_read"] for r in reports),
        },
    )
