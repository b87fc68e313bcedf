"""Stage 3, curate: exact/near-duplicate removal, then train-vs-test decontamination."""

import dagster as dg
import numpy as np
import pyarrow as pa

from assets.metadata import PREVIEW_COLUMNS, counts_markdown, preview, stage_out, table_metadata
from assets.resources import AwsCredentials, CurationSettings
from curation.core.selection import RowSelection
from curation.core.stage_table import StageTable, take_rows
from curation.match.decontam import decontaminate_and_report
from curation.match.dedup import deduplicate
from curation.match.paraphrase import paraphrase_markdown
from curation.match.references import (
    quarantined_test_prompts,
    read_reference_set,
    reference_table,
)
from curation.publish.accounting import reason_counts

CURATE_GROUP = "curate"


def _head(kept: RowSelection, n: int = 5) -> pa.Table:
    """The first ``n`` kept rows, preview columns only (reads just the first batch)."""
    columns = [c for c in PREVIEW_COLUMNS if c in kept.schema.names] or kept.schema.names[:6]
    return take_rows(kept.table, np.flatnonzero(kept.keep)[:n], columns)


def _outputs(
    kept: RowSelection,
    removed: pa.Table,
    kept_name: str,
    removed_name: str,
    removed_metadata: dict | None = None,
):
    """The kept rows (written by the IO manager batch by batch) and the audit table."""
    counts = reason_counts(removed)
    yield dg.Output(
        kept,
        kept_name,
        metadata={**table_metadata(kept), "preview": preview(_head(kept))},
    )
    yield dg.Output(
        removed,
        removed_name,
        metadata={
            **table_metadata(removed),
            "removed_by_reason": counts_markdown(counts),
            "preview": preview(removed),
            **(removed_metadata or {}),
        },
    )


@dg.multi_asset(
    pool="rlhf_stage",
    ins={"normalized_pairs": dg.AssetIn()},
    outs={
        "deduplicated_pairs": stage_out(
            CURATE_GROUP, "Pairs after exact, swapped (conflicting) and near-duplicate removal."
        ),
        "dedup_removed": stage_out(
            CURATE_GROUP, "Audit rows of pairs removed by dedup, with what they matched."
        ),
    },
)
def deduplicate_pairs(settings: CurationSettings, normalized_pairs: StageTable):
    """Deduplicate within each split, across subsets and datasets (reads the pairs batch by
    batch: ids and hashes are kept, texts re-read only for candidates)."""
    kept, removed = deduplicate(normalized_pairs, settings.dedup_config(), lazy=True)
    yield from _outputs(kept, removed, "deduplicated_pairs", "dedup_removed")


@dg.multi_asset(
    pool="rlhf_stage",
    ins={"deduplicated_pairs": dg.AssetIn(), "quarantine": dg.AssetIn()},
    outs={
        "curated_pairs": stage_out(
            CURATE_GROUP,
            "The curated pairs: no train prompt matches a test prompt of any dataset.",
        ),
        "decontam_removed": stage_out(
            CURATE_GROUP,
            "Audit rows of train pairs removed as contaminated, with the test row matched.",
        ),
        "paraphrases": stage_out(
            CURATE_GROUP,
            "Train pairs whose opening reads like a test opening in other words (static "
            "embeddings): a report, removed only with decontam.paraphrase = remove.",
        ),
        "reference_files": stage_out(
            CURATE_GROUP,
            "The extra reference files read (size, sha256, prompts): the release records them "
            "and hashes their contents into its id.",
        ),
    },
)
def decontaminate_pairs(
    settings: CurationSettings,
    aws: AwsCredentials,
    deduplicated_pairs: StageTable,
    quarantine: pa.Table,
):
    """Remove train pairs whose prompt matches any test prompt: of a test pair, of a quarantined
    test row whose prompt parses, or of an extra reference set."""
    extras = [
        read_reference_set(spec, aws.storage_options(spec))
        for spec in settings.extra_reference_uris
    ]
    quarantined = quarantined_test_prompts(quarantine)
    config = settings.decontam_config()
    result = decontaminate_and_report(
        deduplicated_pairs,
        config,
        [(extra.report.name, extra.prompts) for extra in extras],
        quarantined,
        lazy=True,
    )
    yield from _outputs(
        result.kept,
        result.removed,
        "curated_pairs",
        "decontam_removed",
        {"quarantined_test_references": dg.MetadataValue.int(quarantined.num_rows)},
    )
    by_dataset, top = paraphrase_markdown(result.paraphrases)
    yield dg.Output(
        result.paraphrases,
        "paraphrases",
        metadata={
            **table_metadata(result.paraphrases),
            "mode": config.paraphrase,
            "threshold": config.paraphrase_threshold,
            "by_dataset": dg.MetadataValue.md(by_dataset),
            "top_examples": dg.MetadataValue.md(top),
        },
    )
    references = reference_table([extra.report for extra in extras])
    yield dg.Output(references, "reference_files", metadata=table_metadata(references))
