"""Stage 2, validate + normalize: split quarantined rows off and map both datasets to one pair table."""

import json
import os

import dagster as dg
import pyarrow as pa

from assets.keys import INGEST_KEYS
from assets.metadata import counts_markdown, preview, stage_out, table_metadata
from assets.resources import CurationSettings
from curation.accounting import sum_counts
from curation.ingest import require_recognisable
from curation.normalize import PAIRS_STAGE, normalize_file
from curation.parallel import in_threads
from curation.schema import QUARANTINE, RED_TEAM
from curation.sources import SourceError

VALIDATE_GROUP = "validate"
SOURCE_FILES = pa.schema([("report", pa.string())])


@dg.multi_asset(
    pool="rlhf_stage",
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
def validate_and_normalize(
    context: dg.AssetExecutionContext, settings: CurationSettings, **raw_tables: pa.Table
):
    """Split every ingested file into curated-bound rows and quarantine, then normalize.

    Files are independent (a ``pair_id`` repeat suffix never spans two files), so they are
    normalized on ``settings.ingest_threads`` threads and concatenated in name order.
    """
    pairs, quarantined, red_team, reports = [], [], [], []
    workers = settings.ingest_threads or os.cpu_count() or 1
    done = dict(
        in_threads(
            lambda n: normalize_file(raw_tables[n]), sorted(raw_tables), workers, ordered=False
        )
    )
    for name in sorted(done):
        report, bad, good = done.pop(name)
        reports.append(report)
        quarantined.append(bad)
        if "transcript_id" in good.column_names:
            red_team.append(good)
        else:
            pairs.append((report["split"] or "", len(pairs), good))
    try:
        require_recognisable(reports)
    except SourceError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    # test files first, then train: each split is one contiguous run of rows, so the release
    # writes its split folders from zero-copy slices
    pair_table = pa.concat_tables([PAIRS_STAGE.empty_table(), *(t for *_, t in sorted(pairs))])
    quarantine = pa.concat_tables([QUARANTINE.empty_table(), *quarantined])
    red_team_table = pa.concat_tables([RED_TEAM.empty_table(), *red_team])
    source_files = pa.table({"report": [json.dumps(r) for r in reports]}, schema=SOURCE_FILES)
    by_reason = sum_counts(reports, "quarantine_by_reason")
    absent = [r["relpath"] for r in reports if not r["present"]]
    yield dg.Output(
        pair_table,
        "normalized_pairs",
        metadata={**table_metadata(pair_table), "preview": preview(pair_table)},
    )
    yield dg.Output(
        quarantine,
        "quarantine",
        metadata={
            **table_metadata(quarantine),
            "by_reason": counts_markdown(by_reason),
        },
    )
    yield dg.Output(red_team_table, "red_team", metadata=table_metadata(red_team_table))
    yield dg.Output(
        source_files,
        "source_files",
        metadata={
            **table_metadata(source_files),
            "files_present": len(reports) - len(absent),
            "files_absent": dg.MetadataValue.md("\n".join(f"- `{a}`" for a in absent) or "_none_"),
            "rows_read": sum(r["rows_read"] for r in reports),
        },
    )
