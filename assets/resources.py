"""Dagster resources: where the sources are, where releases go, and the curation settings.

Secrets (AWS keys, ``SOURCES_HTTP_HEADERS``, a source URI as set with its credentials) come
from environment variables through ``dg.EnvVar`` in ``pipelines/definitions.py``, so the run
config and the job snapshot hold the variable's name, never its value; they are only handed to
fsspec/boto3 as storage options and never logged or put in metadata
(:meth:`StoreResource.describe` shows the redacted URI and the endpoint only).
"""

import dataclasses
from typing import Any

import dagster as dg
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from curation.core import memory, parallel
from curation.core.bounds import InvalidConfig, describe_range, key_text, quoted
from curation.core.memory import MAX_MMAP_THRESHOLD
from curation.core.redact import has_credentials, redact_uri
from curation.core.report import QUARANTINE_ERROR_RATE, QUARANTINE_WARN_RATE
from curation.datasets import REGISTRY, resolve_levels
from curation.datasets import dataset as registered_dataset
from curation.ingest.ingest import check_patterns
from curation.ingest.sources import (
    DECOMPRESSED_BYTES_CEILING,
    MAX_DECOMPRESSED_BYTES,
    ReadPolicy,
    SourceError,
    mirror_storage_options,
)
from curation.match.decontam import DecontamConfig
from curation.match.dedup import DedupConfig
from curation.publish.drift import DriftConfig
from curation.validate.contract import DEFAULT_SAMPLE_ROWS


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
    f"set them in the environment: in {'/'.join(d.uri_variable for d in REGISTRY)} themselves, "
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
        them; ``curation.ingest.sources.mirror_storage_options``)."""
        configured = tuple(getattr(self, d.uri_field) for d in REGISTRY)
        return mirror_storage_options(uri, configured, self.http_headers)


#: Where the credentials of a source mirror may be set (``docs/operations.md``, Security).
CREDENTIALS_HINT = (
    f"set them in the environment: in {'/'.join(d.uri_variable for d in REGISTRY)} themselves, "
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
        plugin = registered_dataset(dataset)
        declared = plugin.declared_root()
        if declared is not None:  # a dataset of the settings file, checked when declared
            return declared
        uri, revision = getattr(self, plugin.uri_field), getattr(self, plugin.revision_field)
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
    reason code (see ``curation.core.rules``); ``dedup`` and ``decontam`` override fields of
    ``curation.match.dedup.DedupConfig`` and ``curation.match.decontam.DecontamConfig``, whose valid ranges
    are declared there. Every numeric field here declares its range too. Unknown keys, values of
    the wrong type and values out of range are refused when the resource is built (before any
    step runs), every one of them (:func:`settings_problems` lists them one per line).
    """

    rule_levels: dict[str, str] = Field(default_factory=dict)
    dedup: dict[str, Any] = Field(default_factory=dict)
    decontam: dict[str, Any] = Field(default_factory=dict)
    drift: dict[str, Any] = Field(
        default_factory=dict,
        description="Thresholds of the release-over-release checks (curation.publish.drift.DriftConfig): "
        "rows_warn/rows_error, quarantine_*, removed_*, p_*, psi_*, min_rows, "
        "allow_schema_change (docs/validation.md).",
    )
    extra_reference_uris: list[str] = Field(
        default_factory=list,
        description="Extra evaluation-prompt sets: 'uri#field' (JSONL or parquet) to decontaminate against",
    )
    quarantine_error_rate: float = Field(
        default=QUARANTINE_ERROR_RATE,
        ge=0,
        le=1,
        strict=True,
        description="quarantine_rate check: ERROR above this share of a file's rows quarantined "
        "(curation.core.report.QUARANTINE_ERROR_RATE: the measured real rate and why). A share, in "
        "[0, 1]; 1 never errors.",
    )
    quarantine_warn_rate: float = Field(
        default=QUARANTINE_WARN_RATE,
        ge=0,
        le=1,
        strict=True,
        validate_default=True,  # checked against quarantine_error_rate even when not given
        description="quarantine_rate check: WARN above this share of a file's rows quarantined "
        "(curation.core.report.QUARANTINE_WARN_RATE). In [0, quarantine_error_rate]: a warning "
        "threshold above the error threshold could never warn.",
    )
    threads: int = Field(
        default=0,
        ge=0,
        strict=True,
        description="Threads of the one curation thread pool (curation.core.parallel: ingest, "
        "normalization, matching, release encoding); 0: one per CPU.",
    )
    ingest_threads: int = Field(
        default=0,
        ge=0,
        strict=True,
        description="Files ingested at once in the ingest step (0: one per CPU).",
    )
    expected_files: list[str] | None = Field(
        default=None,
        description="Upstream files that must be in the mirrors, as '<dataset>/<relpath>' globs "
        "(e.g. 'pku-saferlhf/data/Alpaca-7B/*'); an absent one fails the run. Unset: every "
        "upstream file is expected and an absent one is a warning. Each glob must match an "
        "upstream file.",
    )
    allow_missing_files: list[str] = Field(
        default_factory=list,
        description="'<dataset>/<relpath>' globs of files that may be absent, even when the "
        "previous release had them (otherwise a vanished file fails the run). Each glob must "
        "match an upstream file.",
    )
    malloc_mmap_threshold: int = Field(
        default=memory.DEFAULT_MMAP_THRESHOLD,
        ge=0,
        le=MAX_MMAP_THRESHOLD,
        strict=True,
        description="Bytes from which glibc gives every allocation its own mapping, returned to "
        "the OS when freed (curation.core.memory: fixed, not raised as blocks are freed); 0: leave "
        "glibc's dynamic threshold. At most 32 MiB, glibc's documented maximum on 64-bit "
        "(DEFAULT_MMAP_THRESHOLD_MAX, mallopt(3)).",
    )
    gx_sample_rows: int = Field(
        default=DEFAULT_SAMPLE_ROWS,
        ge=0,
        strict=True,
        description="Rows per table Great Expectations validates in full (plus every row the "
        "Arrow pass flagged); row-level expectations always cover every row. 0: GX on all rows.",
    )
    max_decompressed_bytes: int = Field(
        default=MAX_DECOMPRESSED_BYTES,
        gt=0,
        le=DECOMPRESSED_BYTES_CEILING,
        description="Bytes one source file may decompress to (or weigh, uncompressed); more fails "
        "the run naming the file, and decompression stops there (a gzip bomb). Default 1 GiB, "
        "five times the largest upstream file (curation.ingest.sources.MAX_DECOMPRESSED_BYTES).",
    )
    allow_links_outside_mirror: bool = Field(
        default=False,
        description="Read a local source file even when it, or a folder on its path, is a "
        "symbolic link resolving outside the mirror root (otherwise an error naming the link).",
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
        try:
            resolve_levels(value)  # every unknown rule or level
        except InvalidConfig as exc:
            raise InvalidConfig([f"rule_levels.{p}" for p in exc.problems]) from None
        return value

    @field_validator("dedup")
    @classmethod
    def _dedup_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        return overrides_of(DedupConfig, value, "dedup")

    @field_validator("decontam")
    @classmethod
    def _decontam_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        return overrides_of(DecontamConfig, value, "decontam")

    @field_validator("drift")
    @classmethod
    def _drift_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        return overrides_of(DriftConfig, value, "drift")

    @field_validator("extra_reference_uris")
    @classmethod
    def _reference_specs(cls, value: list[str]) -> list[str]:
        problems = [
            f"extra_reference_uris[{i}]: {quoted(spec)} names no file ('uri#field')"
            for i, spec in enumerate(value)
            if not spec.partition("#")[0].strip()
        ]
        if problems:
            raise InvalidConfig(problems)
        return value

    @field_validator("expected_files", "allow_missing_files")
    @classmethod
    def _known_files(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        check_patterns(value or [], info.field_name)  # every glob matching no upstream file
        return value

    @field_validator("quarantine_warn_rate")
    @classmethod
    def _warn_below_error(cls, value: float, info: ValidationInfo) -> float:
        error_rate = info.data.get("quarantine_error_rate")  # absent when it was invalid itself
        if error_rate is not None and value > error_rate:
            raise InvalidConfig(
                [
                    f"quarantine_warn_rate: {value} is out of range: must not exceed "
                    f"quarantine_error_rate ({error_rate})"
                ]
            )
        return value

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Once per run process: size the shared curation thread pool from :attr:`threads` and
        pin glibc's mmap threshold (:attr:`malloc_mmap_threshold`)."""
        parallel.configure(self.threads)
        memory.pin_mmap_threshold(self.malloc_mmap_threshold)

    def levels(self) -> dict[str, str]:
        """The effective level of every rule."""
        return resolve_levels(self.rule_levels)

    def read_policy(self) -> ReadPolicy:
        """What a source file may be: its decompressed size, links out of its mirror."""
        return ReadPolicy(self.max_decompressed_bytes, self.allow_links_outside_mirror)

    def dedup_config(self) -> DedupConfig:
        """The dedup config with this resource's overrides."""
        return dataclasses.replace(DedupConfig(), **self.dedup)

    def decontam_config(self) -> DecontamConfig:
        """The decontamination config with this resource's overrides."""
        return dataclasses.replace(DecontamConfig(), **self.decontam)

    def drift_config(self) -> DriftConfig:
        """The release-over-release thresholds with this resource's overrides."""
        return dataclasses.replace(DriftConfig(), **self.drift)

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
    """``value`` checked against the fields of the config dataclass ``cls``: known keys, right
    types, values in the ranges ``cls`` declares (it checks them itself when built).

    Raises :class:`~curation.core.bounds.InvalidConfig` with one line per problem, each naming the
    key (``dedup.threshold: 1.5 is out of range: must be in (0, 1]``).
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    problems = [
        f"{name}.{key_text(key)}: unknown key; known: {sorted(fields)}"
        for key in value
        if key not in fields
    ]
    try:
        built = cls(**{key: item for key, item in value.items() if key in fields})
    except InvalidConfig as exc:
        problems += [f"{name}.{problem}" for problem in exc.problems]
    if problems:
        raise InvalidConfig(problems)
    return {key: getattr(built, key) for key in value}  # as built: ``threshold: 1`` is 1.0


def _location(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a dotted key."""
    return ".".join(key_text(part) for part in loc) or "settings"


def _problem_lines(error: Any) -> list[str]:
    """One line per problem of one pydantic error: a range names the declared range, a
    validator's :class:`~curation.core.bounds.InvalidConfig` brings its own lines."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidConfig):
        return cause.problems
    where = _location(error["loc"])
    if error["type"] in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        field = CurationSettings.model_fields[error["loc"][0]]
        span = describe_range(field.metadata)
        return [f"{where}: {quoted(error['input'])} is out of range: must be {span}"]
    if isinstance(cause, ValueError):
        return [f"{where}: {cause}"]
    return [f"{where}: {quoted(error['input'])} is invalid: {error['msg']}"]


def settings_problems(config: Any) -> list[str]:
    """Every problem of a mapping of :class:`CurationSettings` fields, one line each (empty when
    it is valid): unknown keys, wrong types, values out of their declared ranges."""
    if not isinstance(config, dict):
        kind = "a list" if isinstance(config, list) else quoted(config)
        return [f"settings must be a mapping of CurationSettings fields (key: value), not {kind}"]
    problems = [
        f"{key_text(key)}: unknown settings key; known: {sorted(SETTINGS_FIELDS)}"
        for key in config
        if key not in SETTINGS_FIELDS
    ]
    try:
        CurationSettings(**{k: v for k, v in config.items() if k in SETTINGS_FIELDS})
    except ValidationError as exc:
        problems += [line for error in exc.errors() for line in _problem_lines(error)]
    return problems


def settings_from_mapping(config: dict[str, Any]) -> CurationSettings:
    """A :class:`CurationSettings` from a mapping with its field names as keys.

    Raises :class:`~curation.core.bounds.InvalidConfig` (a ``ValueError``) listing every unknown key
    and bad value, one line each.
    """
    problems = settings_problems(config)
    if problems:
        raise InvalidConfig(problems)
    return CurationSettings(**config)
