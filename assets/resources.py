"""Dagster resources: where the sources are, where releases go, and the curation settings.

Secrets (AWS keys) come from environment variables through ``dg.EnvVar`` in
``pipelines/definitions.py``; they are only handed to fsspec/boto3 and never logged or put in
metadata (:meth:`StoreResource.describe` shows the URI and endpoint only).
"""

from typing import Any

import dagster as dg
from pydantic import Field

from curation import parallel
from curation.contract import DEFAULT_SAMPLE_ROWS
from curation.rules import resolve_levels


def _aws_options(
    endpoint_url: str | None, key: str | None, secret: str | None, region: str | None
) -> dict[str, Any]:
    """fsspec/s3fs storage options; empty values are left to boto's own environment lookup."""
    options: dict[str, Any] = {}
    if key:
        options["key"] = key
    if secret:
        options["secret"] = secret
    client_kwargs = {}
    if endpoint_url:
        client_kwargs["endpoint_url"] = endpoint_url
    if region:
        client_kwargs["region_name"] = region
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options


class AwsCredentials(dg.ConfigurableResource):
    """S3 endpoint and credentials (all optional: boto's default chain applies when unset)."""

    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str | None = None

    def storage_options(self, uri: str) -> dict[str, Any]:
        """Storage options for ``uri`` (empty unless it is ``s3://``)."""
        if not uri.startswith(("s3://", "s3a://")):
            return {}
        return _aws_options(
            self.endpoint_url, self.access_key_id, self.secret_access_key, self.region
        )


class SourcesResource(dg.ConfigurableResource):
    """The two upstream mirrors (URIs in the upstream layouts) and their pinned revisions."""

    hh_rlhf_uri: str = Field(description="Root of an HH-RLHF mirror (path, s3://, hf://, https://)")
    pku_saferlhf_uri: str = Field(description="Root of a PKU-SafeRLHF mirror")
    hh_rlhf_revision: str | None = None
    pku_saferlhf_revision: str | None = None
    aws: dg.ResourceDependency[AwsCredentials]

    def root(self, dataset: str) -> tuple[str, str | None]:
        """(URI, revision) of the mirror holding ``dataset``."""
        if dataset == "hh-rlhf":
            return self.hh_rlhf_uri, self.hh_rlhf_revision
        return self.pku_saferlhf_uri, self.pku_saferlhf_revision


class StoreResource(dg.ConfigurableResource):
    """The curated object store: a local folder (default ``./warehouse``) or ``s3://bucket/prefix``."""

    uri: str = Field(description="CURATED_STORE_URI")
    aws: dg.ResourceDependency[AwsCredentials]

    def storage_options(self) -> dict[str, Any]:
        """fsspec storage options for the store (credentials included; never log them)."""
        return self.aws.storage_options(self.uri)

    def describe(self) -> dict[str, str]:
        """What may be shown in logs and metadata: the URI and the endpoint, no secrets."""
        return {"store_uri": self.uri, "endpoint_url": self.aws.endpoint_url or ""}


class CurationSettings(dg.ConfigurableResource):
    """Rule levels, dedup/decontamination parameters and check thresholds.

    ``rule_levels`` overrides the default level (``error`` | ``warn`` | ``off``) of row rules by
    reason code (see ``curation.rules``); ``dedup`` and ``decontam`` override fields of
    ``curation.dedup.DedupConfig`` and ``curation.decontam.DecontamConfig``.
    """

    rule_levels: dict[str, str] = Field(default_factory=dict)
    dedup: dict[str, Any] = Field(default_factory=dict)
    decontam: dict[str, Any] = Field(default_factory=dict)
    extra_reference_uris: list[str] = Field(
        default_factory=list,
        description="Extra evaluation-prompt sets: 'uri#field' (JSONL or parquet) to decontaminate against",
    )
    quarantine_error_rate: float = 0.05
    quarantine_warn_rate: float = 0.005
    threads: int = Field(
        default=0,
        description="Threads of the one curation thread pool (curation.parallel: ingest, "
        "normalization, matching, release encoding); 0: one per CPU.",
    )
    ingest_threads: int = Field(
        default=0, description="Files ingested at once in the ingest step (0: one per CPU)."
    )
    gx_sample_rows: int = Field(
        default=DEFAULT_SAMPLE_ROWS,
        description="Rows per table Great Expectations validates in full (plus every row the "
        "Arrow pass flagged); row-level expectations always cover every row. 0: GX on all rows.",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Size the shared curation thread pool from :attr:`threads` (once per run process)."""
        parallel.configure(self.threads)

    def levels(self) -> dict[str, str]:
        """The effective level of every rule."""
        return resolve_levels(self.rule_levels)
