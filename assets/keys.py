"""Asset keys shared by the stage modules (so that no stage module imports another)."""

import dagster as dg

from curation.sources import SourceFile, all_files

RELEASE_KEY = dg.AssetKey("release")
#: Metadata key of an ingest materialization: the data version of the upstream file it read.
FINGERPRINT = "fingerprint"


def ingest_asset_key(source: SourceFile) -> dg.AssetKey:
    """The asset key of a source file's ingest asset."""
    return dg.AssetKey(f"raw_{source.key}")


def upstream_asset_key(source: SourceFile) -> dg.AssetKey:
    """The asset key of the observable source asset standing for the upstream file itself."""
    return dg.AssetKey(f"upstream_{source.key}")


INGEST_KEYS = [ingest_asset_key(source) for source in all_files()]
"""The ingest asset of every upstream file, in :func:`curation.sources.all_files` order."""
UPSTREAM_KEYS = [upstream_asset_key(source) for source in all_files()]
"""The observable source asset of every upstream file, in the same order."""
