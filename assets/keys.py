"""Asset keys and groups shared by the stage modules (so that no stage module imports another).

An upstream file and its ingested rows are named by their dataset and a short label,
``<subset>_<split>`` (``helpful_online_test``, ``alpaca2_7b_train``, ``red_team_attempts``):

* the upstream file (observable source asset): ``hh_rlhf/upstream/helpful_online_test``;
* its ingested rows: ``hh_rlhf/raw/helpful_online_test``;

both in the asset group ``ingest/hh_rlhf`` (``ingest/pku_saferlhf``), a nested group of
``ingest``. The asset graph shows a key's last part: at most 31 characters there, so every file
reads in full (Dagster's UI cuts longer names in the middle), and the two datasets, the upstream
files and the ingested tables each sit in their own key folder and group. The stage assets
after ingest (``normalized_pairs`` ... ``release``) keep one-part keys.
"""

import dagster as dg

from curation.ingest.sources import SourceFile, all_files

RELEASE_KEY = dg.AssetKey("release")
#: Metadata key of an ingest materialization: the data version of the upstream file it read.
FINGERPRINT = "fingerprint"
#: The parent group of the per-dataset ingest groups.
INGEST_GROUP = "ingest"
#: The longest key part the Dagster UI's asset graph shows without cutting it.
GRAPH_LABEL_MAX = 31


def _identifier(text: str) -> str:
    return text.lower().replace("-", "_")


def file_label(source: SourceFile) -> str:
    """The short name of an upstream file within its dataset: ``<subset>_<split>``."""
    return "_".join(_identifier(p) for p in (source.subset, source.split) if p)


def dataset_prefix(source: SourceFile) -> str:
    """The key prefix of a dataset's files: ``hh_rlhf``, ``pku_saferlhf``."""
    return _identifier(source.dataset)


def ingest_group(source: SourceFile) -> str:
    """The asset group of a file's upstream and ingest assets: ``ingest/<dataset>``."""
    return f"{INGEST_GROUP}/{dataset_prefix(source)}"


def ingest_asset_key(source: SourceFile) -> dg.AssetKey:
    """The asset key of a source file's ingest asset: ``<dataset>/raw/<subset>_<split>``."""
    return dg.AssetKey([dataset_prefix(source), "raw", file_label(source)])


def upstream_asset_key(source: SourceFile) -> dg.AssetKey:
    """The asset key of the observable source asset standing for the upstream file itself:
    ``<dataset>/upstream/<subset>_<split>``."""
    return dg.AssetKey([dataset_prefix(source), "upstream", file_label(source)])


def ingest_keys() -> list[dg.AssetKey]:
    """The ingest asset of every upstream file of the registered datasets (declared ones
    included), in :func:`curation.ingest.sources.all_files` order."""
    return [ingest_asset_key(source) for source in all_files()]


def upstream_keys() -> list[dg.AssetKey]:
    """The observable source asset of every upstream file, in the same order."""
    return [upstream_asset_key(source) for source in all_files()]


INGEST_KEYS = ingest_keys()
"""The ingest assets of the built-in datasets (the graph without a settings file)."""
UPSTREAM_KEYS = upstream_keys()
"""The observable source assets of the built-in datasets."""
