"""Dagster resources: where the sources are, where releases go, and the curation settings.

Secrets (AWS keys, ``SOURCES_HTTP_HEADERS``, a source URI as set with its credentials) come
from environment variables through ``dg.EnvVar`` in ``pipelines/definitions.py``, so the run
config and the job snapshot hold the variable's name, never its value; they are only handed to
fsspec/boto3 as storage options and never logged or put in metadata
(:meth:`StoreResource.describe` shows the redacted URI and the endpoint only).
"""

import dataclasses
import typing
from typing import Any

import dagster as dg
from pydantic import Field, TypeAdapter, ValidationError, field_validator

from curation import memory, parallel
from curation.contract import DEFAULT_SAMPLE_ROWS
from curation.decontam import DecontamConfig
from curation.dedup import DedupConfig
from curation.redact import has_credentials, redact_uri
from curation.report import QUARANTINE_ERROR_RATE, QUARANTINE_WARN_RATE
from curation.rules import resolve_levels
from curation.sources import SourceError, mirror_storage_options


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


#: Where the credentials of a source mirror may be set (``docs/operations.md``, Security).
CREDENTIALS_HINT = (
    "set them in the environment: in HH_RLHF_URI/PKU_SAFERLHF_URI themselves, "
    "SOURCES_HTTP_HEADERS, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
)


class SourceCredentials(dg.ConfigurableResource):
    """Credentials of the source mirrors, from the environment only (``dg.EnvVar``, so run config
    and job snapshots hold the variables' names); a resource of its own, so that run config
    naming other sources (``rlhf-curate run --hh``) leaves it in place.

    ``hh_rlhf_uri``/``pku_saferlhf_uri`` are ``$HH_RLHF_URI``/``$PKU_SAFERLHF_URI`` as set, with
    the credentials in them (user info, query string); a mirror whose redacted URI is one of
    theirs is read with them. ``http_headers`` is ``$SOURCES_HTTP_HEADERS`` (a JSON object of
    headers), sent to both mirrors when they are http(s).
    """

    hh_rlhf_uri: str | None = None
    pku_saferlhf_uri: str | None = None
    http_headers: str | None = None

    def storage_options(self, uri: str) -> dict[str, Any]:
        """fsspec storage options with the credentials that reading ``uri`` needs (never log
        them; ``curation.sources.mirror_storage_options``)."""
        configured = (self.hh_rlhf_uri, self.pku_saferlhf_uri)
        return mirror_storage_options(uri, configured, self.http_headers)


#: Where the credentials of a source mirror may be set (``docs/operations.md``, Security).
CREDENTIALS_HINT = (
    "set them in the environment: in HH_RLHF_URI/PKU_SAFERLHF_URI themselves, "
    "SOURCES_HTTP_HEADERS, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
)


class SourcesResource(dg.ConfigurableResource):
    """The two upstream mirrors (URIs in the upstream layouts) and their pinned revisions.

    The URIs are recorded (run config, run tags, metadata, the release), so they hold no
    credentials: a mirror's credentials come from the environment only (:class:`AwsCredentials`,
    :class:`SourceCredentials`) and reach fsspec through :meth:`storage_options`.
    """

    hh_rlhf_uri: str = Field(
        description="Root of an HH-RLHF mirror (path, s3://, hf://, https://), without credentials"
    )
    pku_saferlhf_uri: str = Field(description="Root of a PKU-SafeRLHF mirror, without credentials")
    hh_rlhf_revision: str | None = None
    pku_saferlhf_revision: str | None = None
    aws: dg.ResourceDependency[AwsCredentials]
    credentials: dg.ResourceDependency[SourceCredentials]

    def root(self, dataset: str) -> tuple[str, str | None]:
        """(URI, revision) of the mirror holding ``dataset``; a URI with credentials in it (given
        as run config, hence recorded) is a :class:`SourceError` naming its redacted form."""
        if dataset == "hh-rlhf":
            uri, revision = self.hh_rlhf_uri, self.hh_rlhf_revision
        else:
            uri, revision = self.pku_saferlhf_uri, self.pku_saferlhf_revision
        if has_credentials(uri):
            raise SourceError(
                f"{redact_uri(uri)}: credentials in a source URI of the run config are refused "
                f"(they would be recorded); {CREDENTIALS_HINT}"
            )
        return uri, revision

    def storage_options(self, uri: str) -> dict[str, Any]:
        """fsspec storage options to read ``uri`` (a mirror root or a file under it): the AWS
        options for ``s3://`` plus the mirror's own credentials (never log them)."""
        return {**self.aws.storage_options(uri), **self.credentials.storage_options(uri)}


class StoreResource(dg.ConfigurableResource):
    """The curated object store: a local folder (default ``./warehouse``) or ``s3://bucket/prefix``."""

    uri: str = Field(description="CURATED_STORE_URI")
    aws: dg.ResourceDependency[AwsCredentials]

    def storage_options(self) -> dict[str, Any]:
        """fsspec storage options for the store (credentials included; never log them)."""
        return self.aws.storage_options(self.uri)

    def describe(self) -> dict[str, str]:
        """What may be shown in logs and metadata: the redacted URI and the endpoint."""
        return {
            "store_uri": redact_uri(self.uri),
            "endpoint_url": redact_uri(self.aws.endpoint_url or ""),
        }


class CurationSettings(dg.ConfigurableResource):
    """Rule levels, dedup/decontamination parameters and check thresholds.

    ``rule_levels`` overrides the default level (``error`` | ``warn`` | ``off``) of row rules by
    reason code (see ``curation.rules``); ``dedup`` and ``decontam`` override fields of
    ``curation.dedup.DedupConfig`` and ``curation.decontam.DecontamConfig``. Unknown keys and
    values of the wrong type are refused when the resource is built (before any step runs).
    """

    rule_levels: dict[str, str] = Field(default_factory=dict)
    dedup: dict[str, Any] = Field(default_factory=dict)
    decontam: dict[str, Any] = Field(default_factory=dict)
    extra_reference_uris: list[str] = Field(
        default_factory=list,
        description="Extra evaluation-prompt sets: 'uri#field' (JSONL or parquet) to decontaminate against",
    )
    quarantine_error_rate: float = Field(
        default=QUARANTINE_ERROR_RATE,
        description="quarantine_rate check: ERROR above this share of a file's rows quarantined "
        "(curation.report.QUARANTINE_ERROR_RATE: the measured real rate and why).",
    )
    quarantine_warn_rate: float = Field(
        default=QUARANTINE_WARN_RATE,
        description="quarantine_rate check: WARN above this share of a file's rows quarantined "
        "(curation.report.QUARANTINE_WARN_RATE).",
    )
    threads: int = Field(
        default=0,
        description="Threads of the one curation thread pool (curation.parallel: ingest, "
        "normalization, matching, release encoding); 0: one per CPU.",
    )
    ingest_threads: int = Field(
        default=0, description="Files ingested at once in the ingest step (0: one per CPU)."
    )
    expected_files: list[str] | None = Field(
        default=None,
        description="Upstream files that must be in the mirrors, as '<dataset>/<relpath>' globs "
        "(e.g. 'pku-saferlhf/data/Alpaca-7B/*'); an absent one fails the run. Unset: every "
        "upstream file is expected and an absent one is a warning.",
    )
    allow_missing_files: list[str] = Field(
        default_factory=list,
        description="'<dataset>/<relpath>' globs of files that may be absent, even when the "
        "previous release had them (otherwise a vanished file fails the run).",
    )
    malloc_mmap_threshold: int = Field(
        default=memory.DEFAULT_MMAP_THRESHOLD,
        description="Bytes from which glibc gives every allocation its own mapping, returned to "
        "the OS when freed (curation.memory: fixed, not raised as blocks are freed); 0: leave "
        "glibc's dynamic threshold.",
    )
    gx_sample_rows: int = Field(
        default=DEFAULT_SAMPLE_ROWS,
        description="Rows per table Great Expectations validates in full (plus every row the "
        "Arrow pass flagged); row-level expectations always cover every row. 0: GX on all rows.",
    )

    @field_validator("extra_reference_uris")
    @classmethod
    def _no_credentials(cls, value: list[str]) -> list[str]:
        for spec in value:
            if has_credentials(spec):  # the settings are recorded (run config, the release)
                raise ValueError(
                    f"{redact_uri(spec)}: credentials in a reference URI are refused (they "
                    "would be recorded); give them as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                )
        return value

    @field_validator("rule_levels")
    @classmethod
    def _known_rules(cls, value: dict[str, str]) -> dict[str, str]:
        resolve_levels(value)  # ValueError naming the unknown rule or level
        return value

    @field_validator("dedup")
    @classmethod
    def _dedup_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        return overrides_of(DedupConfig, value, "dedup")

    @field_validator("decontam")
    @classmethod
    def _decontam_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        return overrides_of(DecontamConfig, value, "decontam")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Once per run process: size the shared curation thread pool from :attr:`threads` and
        pin glibc's mmap threshold (:attr:`malloc_mmap_threshold`)."""
        parallel.configure(self.threads)
        memory.pin_mmap_threshold(self.malloc_mmap_threshold)

    def levels(self) -> dict[str, str]:
        """The effective level of every rule."""
        return resolve_levels(self.rule_levels)

    def dedup_config(self) -> DedupConfig:
        """The dedup config with this resource's overrides."""
        return dataclasses.replace(DedupConfig(), **self.dedup)

    def decontam_config(self) -> DecontamConfig:
        """The decontamination config with this resource's overrides."""
        return dataclasses.replace(DecontamConfig(), **self.decontam)

    def release_config(self) -> dict:
        """The curation config that, with the sources and the code version, names a release."""
        return {
            "rule_levels": self.levels(),
            "dedup": dataclasses.asdict(self.dedup_config()),
            "decontam": dataclasses.asdict(self.decontam_config()),
            "extra_reference_uris": list(self.extra_reference_uris),
        }


SETTINGS_FIELDS = frozenset(CurationSettings.model_fields)
"""The keys a ``--config`` file (or ``resources.settings.config`` run config) may use."""


def overrides_of(cls: type, value: dict[str, Any], name: str) -> dict[str, Any]:
    """``value`` checked against the fields of the dataclass ``cls``: known keys, right types.

    Raises ``ValueError`` naming the key (``dedup.prompt_dedup``) and the expected type.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - fields)
    if unknown:
        raise ValueError(f"unknown {name} key(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    out = {}
    for key, item in value.items():
        try:
            out[key] = TypeAdapter(hints[key]).validate_python(item, strict=True)
        except ValidationError as exc:
            raise ValueError(
                f"{name}.{key}: {item!r} is not a valid {getattr(hints[key], '__name__', hints[key])}"
                f" ({exc.errors()[0]['msg']})"
            ) from None
    return out


def settings_from_mapping(config: dict[str, Any]) -> CurationSettings:
    """A :class:`CurationSettings` from a mapping with its field names as keys.

    Raises ``ValueError`` for unknown keys and bad values (pydantic's message names the field).
    """
    if not isinstance(config, dict):
        raise ValueError(f"settings must be a mapping of CurationSettings fields, got {config!r}")
    unknown = sorted(set(config) - SETTINGS_FIELDS)
    if unknown:
        raise ValueError(f"unknown settings key(s) {unknown}; known: {sorted(SETTINGS_FIELDS)}")
    try:
        return CurationSettings(**config)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid settings: {problems}") from None
