"""The 15 upstream files as observable source assets, observed together in one step.

Observing records each file's fingerprint (``curation.ingest.upstream``) as its data version: sha256 for
local files, the ETag for S3/HTTP, the dataset repo's commit for ``hf://``. An observation with a
new data version is what marks the file's ingest asset (and what follows) as updated for
declarative automation; an unchanged file is not an update.
"""

import warnings

import dagster as dg

from assets.keys import ingest_group, upstream_asset_key
from assets.resources import SourcesResource
from curation.datasets import dataset_names
from curation.ingest.sources import all_files, file_uri
from curation.ingest.upstream import dataset_fingerprints


def _spec(source) -> dg.AssetSpec:
    return dg.AssetSpec(
        upstream_asset_key(source),
        group_name=ingest_group(source),
        description=f"The upstream file `{source.relpath}` ({source.dataset}) in the configured "
        "mirror; observing it records its fingerprint (sha256 / ETag / hf commit) as data version.",
        kinds={"file"},
        metadata={"relpath": source.relpath, "dataset": source.dataset},
    )


def observe_files(sources: SourcesResource, selected) -> list[dg.ObserveResult]:
    """One :class:`dg.ObserveResult` per selected upstream file (one Hub call per dataset)."""
    results = []
    for dataset in dataset_names():
        files = [
            f for f in all_files() if f.dataset == dataset and upstream_asset_key(f) in selected
        ]
        if not files:
            continue
        root, revision = sources.root(dataset)
        prints = dataset_fingerprints(
            [f.relpath for f in files], root, revision, sources.storage_options(root)
        )
        for f in files:
            results.append(
                dg.ObserveResult(
                    asset_key=upstream_asset_key(f),
                    data_version=dg.DataVersion(prints[f.relpath]),
                    metadata={
                        "uri": file_uri(root, f.relpath, revision),
                        "fingerprint": prints[f.relpath],
                    },
                )
            )
    return results


def build_upstream_files(
    automation_condition: dg.AutomationCondition | None = None,
) -> dg.AssetsDefinition:
    """The multi observable source asset of all upstream files (``automation_condition`` on each)."""
    specs = [_spec(s) for s in all_files()]
    if automation_condition is not None:
        specs = [s.replace_attributes(automation_condition=automation_condition) for s in specs]

    with warnings.catch_warnings():  # observable source assets are "beta" in Dagster 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.multi_observable_source_asset(
            name="upstream_files",
            specs=specs,
            can_subset=True,
            description="Fingerprint every upstream file of both mirrors in one step.",
        )
        def upstream_files(context: dg.AssetExecutionContext, sources: SourcesResource):
            yield from observe_files(sources, context.selected_asset_keys)

    return upstream_files
