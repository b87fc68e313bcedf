"""One upstream file of a dataset: the record a dataset's module lists its files with
(:meth:`curation.datasets.base.PreferenceDataset.files`) and every stage names a file by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceFile:
    """One upstream file of a mirror: which dataset/subset/split it holds and its relative path.

    ``kind`` names the file's format within its dataset (e.g. HH-style preference lines or
    red-team transcripts); only the dataset's own module interprets it.
    """

    dataset: str
    subset: str
    split: str | None
    relpath: str
    kind: str

    @property
    def key(self) -> str:
        """A short identifier usable as a Dagster asset name suffix."""
        parts = [self.dataset, self.subset] + ([self.split] if self.split else [])
        return "__".join(p.lower().replace("-", "_") for p in parts)


def file_name(dataset: str, relpath: str) -> str:
    """The name of an upstream file in ``expected_files`` / ``allow_missing_files``:
    ``<dataset>/<relpath>``, e.g. ``<dataset>/harmless-base/train.jsonl.gz``."""
    return f"{dataset}/{relpath}"
