"""Ingest one upstream file: read, parse, run the row rules, and keep every row with its verdict.

The result table has the upstream fields (null for lines that did not parse) plus
``dataset, subset, split, source_file, source_line``, ``quarantine_reasons`` (error codes; empty
for rows that go on), ``warning_reasons`` and ``raw_line`` (the line as read, only for
quarantined rows). Rows read = rows of this table, always.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TypeVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from curation.core import rules
from curation.core.bounds import InvalidConfig, quoted
from curation.core.jsonl import (
    SOURCE_LINE,
    BadLine,
    FieldSpec,
    ParsedFile,
    arrow_schema,
    check_object,
    decode_raw,
    iter_json_values,
    line_bounds,
    unknown_keys,
)
from curation.core.parallel import in_threads
from curation.core.redact import redact_uri
from curation.core.source_file import file_name
from curation.datasets import dataset_of, resolve_levels, upstream_rows
from curation.datasets.base import ObjectNormalizer
from curation.ingest.sources import (
    DEFAULT_POLICY,
    RawFile,
    ReadPolicy,
    SourceError,
    SourceFile,
    all_files,
    file_uri,
    is_glob,
    matching_files,
    read_raw,
)
from curation.ingest.upstream import (
    ABSENT,
    content_fingerprint,
    fingerprint_is_content,
    group_fingerprint,
    source_fingerprint,
)

log = logging.getLogger(__name__)

REASONS, WARNINGS, RAW_LINE = "quarantine_reasons", "warning_reasons", "raw_line"
REASON_LIST = pa.list_(pa.string())


@dataclass
class FileReport:
    """What the manifest and the asset metadata record about one ingested source file."""

    dataset: str
    subset: str
    split: str | None
    relpath: str
    uri: str
    revision: str | None
    present: bool
    size: int = 0
    sha256: str = ""
    #: Its data version when read (``curation.ingest.upstream``): what the next observation compares.
    fingerprint: str = ""
    compression: str = ""
    schema_variant: str = ""
    rows_read: int = 0
    blank_lines: int = 0
    rows_quarantined: int = 0
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    warnings_by_reason: dict[str, int] = field(default_factory=dict)
    #: Keys outside the data contract -> rows carrying them (never dropped silently).
    unknown_keys: dict[str, int] = field(default_factory=dict)
    #: The files a glob matched (``relpath``, ``sha256``, ``size``, ``rows_read``); empty for
    #: a source file that is one file.
    members: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serializable form (``members`` only when a glob matched files)."""
        out = asdict(self)
        if not self.members:
            del out["members"]
        return out


@dataclass
class IngestResult:
    """An ingested file: its table (see module docstring) and its report."""

    table: pa.Table
    report: FileReport


def is_large(source: SourceFile) -> bool:
    """Whether ingesting ``source`` alone holds several hundred MB (its dataset says: e.g. the
    HH train files, whose decompressed JSON, parsed table and output table are in memory
    together)."""
    return dataset_of(source).is_large(source)


def _parsed_in_python(source: SourceFile) -> bool:
    """Whether ``source`` may be one JSON array, parsed element by element in Python."""
    return dataset_of(source).array_reader(source) is not None


def ingest_order(files: Sequence[SourceFile]) -> list[SourceFile]:
    """The order in which to start ingesting ``files`` when at most one :func:`is_large` file may
    run at a time: a JSON array first (parsed in Python, the longest small file), then each
    large file (the most upstream rows first) followed by one small one, so that the other threads
    have small files to work on while the large ones run one after another; the rest (test
    splits) last."""
    large = sorted(  # the longest first: the small files finish beside the last large ones
        (f for f in files if is_large(f)),
        key=lambda f: -UPSTREAM_ROWS.get(file_name(f.dataset, f.relpath), 0),
    )
    small = sorted(
        (f for f in files if not is_large(f)),
        key=lambda f: (not _parsed_in_python(f), f.split == "test"),
    )
    head = small[:1] if small and _parsed_in_python(small[0]) else []
    rest = small[len(head) :]
    order = list(head)
    for i, f in enumerate(large):
        order.append(f)
        order.extend(rest[i : i + 1])
    return order + rest[len(large) :]


R = TypeVar("R")


def ingest_in_threads(
    work: Callable[[SourceFile], R], files: Sequence[SourceFile], workers: int
) -> Iterator[tuple[SourceFile, R]]:
    """``(file, work(file))`` for every file, ``workers`` at a time on the shared pool, as they
    finish: started in :func:`ingest_order`, and at most one :func:`is_large` file at a time
    (two at once put the scale-1.0 ingest step at up to 1,533 MiB; ``docs/benchmarks.md``)."""
    one_large_file = threading.Semaphore(1)

    def gated(source: SourceFile) -> R:
        if not is_large(source):
            return work(source)
        with one_large_file:
            return work(source)

    yield from in_threads(gated, ingest_order(files), workers, ordered=False)


def ingest_file(
    source: SourceFile,
    root: str,
    *,
    revision: str | None = None,
    levels: Mapping[str, str] | None = None,
    storage_options: dict | None = None,
    policy: ReadPolicy = DEFAULT_POLICY,
) -> IngestResult:
    """Read and validate one upstream file of the mirror at ``root``.

    A missing file yields an empty table and a report with ``present=False`` (logged). An
    unreadable file (corrupt gzip, empty file, malformed JSON array), a file larger than
    ``policy.max_decompressed_bytes`` or a symbolic link out of the mirror (``policy``,
    :func:`curation.ingest.sources.read_raw`) raises :class:`~curation.ingest.sources.SourceError` naming it.
    """
    if is_glob(source.relpath):
        return _ingest_matches(
            source,
            root,
            revision=revision,
            levels=levels,
            storage_options=storage_options,
            policy=policy,
        )
    levels = resolve_levels(levels)
    plugin = dataset_of(source)
    read_uri = file_uri(root, source.relpath, revision)
    uri = redact_uri(read_uri)  # what is recorded and quoted: never a credential
    report = FileReport(
        source.dataset, source.subset, source.split, source.relpath, uri, revision, False
    )
    # a remote file's ETag (or hf commit) is taken before reading: if the file changes meanwhile,
    # the next observation differs from it and the file is read again
    remote = (
        None
        if fingerprint_is_content(read_uri, root)
        else source_fingerprint(root, source.relpath, revision, storage_options)
    )
    raw = read_raw(read_uri, storage_options, root=root, policy=policy)
    if raw is None:
        log.info("%s: not in the mirror; skipping %s", uri, source.key)
        report.fingerprint = ABSENT
        empty = plugin.empty_table(source)
        empty = _empty(plugin.fields(source)) if empty is None else empty
        return IngestResult(_finish(empty, source, [], {}, levels, None), report)
    report.present, report.size, report.sha256 = True, raw.size, raw.sha256
    report.fingerprint = remote or content_fingerprint(raw.sha256)
    report.compression = raw.compression
    if raw.size == 0:
        raise SourceError(f"{uri}: file is empty (0 bytes)")
    holder = [raw]  # the only reference from here: the stored bytes are freed once decompressed
    del raw
    data: bytes | None = None  # decompressed JSON Lines, kept to copy quarantined raw lines
    variant = "current"
    bound = policy.max_decompressed_bytes
    try:
        normalize = plugin.array_reader(source)
        if normalize is not None:
            parsed = _parse_array_or_lines(holder, uri, plugin.fields(source), bound, normalize)
        else:
            data = holder.pop().decompress(bound)
            parsed, variant = plugin.reader(source)(data)
            if not plugin.keeps_lines(source):
                data = None  # rows without a line of their own: quarantined ones re-serialized
    except (pa.ArrowException, ValueError) as exc:  # never a bare Arrow error without the file
        raise SourceError(f"{uri}: cannot parse: {exc}") from exc
    report.schema_variant, report.rows_read = variant, parsed.rows_read
    report.blank_lines, report.unknown_keys = parsed.blank_lines, parsed.unknown_keys
    for key, count in parsed.unknown_keys.items():
        log.warning("%s: key %r (not in the data contract) in %d rows", uri, key, count)
    if parsed.rows_read == 0:
        raise SourceError(f"{uri}: no rows (only blank lines)")
    try:
        masks = _masks(source, parsed.table)
        table = _finish(parsed.table, source, parsed.bad, masks, levels, data)
    except pa.ArrowException as exc:  # e.g. a capacity error: name the file
        raise SourceError(f"{uri}: cannot build its table: {exc}") from exc
    _count(table, report)
    return IngestResult(table, report)


def _ingest_matches(
    source: SourceFile,
    root: str,
    *,
    revision: str | None,
    levels: Mapping[str, str] | None,
    storage_options: dict | None,
    policy: ReadPolicy,
) -> IngestResult:
    """Every file a glob source matches, each read as one source file, in one table (each row
    names its own file in ``source_file``) and one report: sizes, rows and reasons summed, a
    sha256 and fingerprint over the matched files' (``members`` lists them). No match is an
    absent file."""
    names = matching_files(root, source.relpath, revision, storage_options)
    uri = redact_uri(file_uri(root, source.relpath, revision))
    report = FileReport(
        source.dataset, source.subset, source.split, source.relpath, uri, revision, False
    )
    if not names:
        log.info("%s: no file matches; skipping %s", uri, source.key)
        report.fingerprint = ABSENT
        plugin = dataset_of(source)
        empty = plugin.empty_table(source)
        empty = _empty(plugin.fields(source)) if empty is None else empty
        return IngestResult(_finish(empty, source, [], {}, resolve_levels(levels), None), report)
    results = [
        ingest_file(
            replace(source, relpath=name),
            root,
            revision=revision,
            levels=levels,
            storage_options=storage_options,
            policy=policy,
        )
        for name in names
    ]
    table = pa.concat_tables([r.table for r in results], promote_options="default")
    _merge_reports(report, [r.report for r in results])
    return IngestResult(table, report)


def _merge_reports(report: FileReport, parts: list[FileReport]) -> None:
    """Fill the report of a glob source from the reports of the files it matched."""
    report.present = any(p.present for p in parts)
    report.members = [
        {"relpath": p.relpath, "sha256": p.sha256, "size": p.size, "rows_read": p.rows_read}
        for p in parts
    ]
    report.size = sum(p.size for p in parts)
    report.sha256 = hashlib.sha256(
        "".join(f"{p.relpath}\t{p.sha256}\n" for p in parts).encode()
    ).hexdigest()
    report.fingerprint = group_fingerprint({p.relpath: p.fingerprint for p in parts})
    report.compression = ",".join(sorted({p.compression for p in parts if p.compression}))
    report.schema_variant = ",".join(sorted({p.schema_variant for p in parts if p.schema_variant}))
    for name in ("rows_read", "blank_lines", "rows_quarantined"):
        setattr(report, name, sum(getattr(p, name) for p in parts))
    for name in ("quarantine_by_reason", "warnings_by_reason", "unknown_keys"):
        merged: dict[str, int] = {}
        for p in parts:
            for key, count in getattr(p, name).items():
                merged[key] = merged.get(key, 0) + count
        setattr(report, name, merged)


def _empty(specs: list[FieldSpec]) -> pa.Table:
    return arrow_schema(specs).empty_table().append_column(SOURCE_LINE, pa.array([], pa.int64()))


#: Rows the row rules see at once: the rules are row-wise, and their intermediates (HH turn
#: lists are several times the text) stay small when a file is checked slice by slice.
RULE_SLICE_ROWS = 2048


def _masks(source: SourceFile, table: pa.Table) -> dict[str, np.ndarray]:
    """The rule masks of every row, computed on zero-copy slices of ``table``."""
    if table.num_rows == 0:
        return {}
    rule = dataset_of(source).rule_family(source)
    parts = [
        rule(table.slice(start, RULE_SLICE_ROWS))
        for start in range(0, table.num_rows, RULE_SLICE_ROWS)
    ]
    return {code: np.concatenate([part[code] for part in parts]) for code in parts[0]}


def _finish(
    good: pa.Table,
    source: SourceFile,
    bad: list[BadLine],
    masks: Mapping[str, np.ndarray],
    levels: Mapping[str, str],
    data: bytes | None,
) -> pa.Table:
    """Attach verdicts to parsed rows, append unparseable lines, add source columns."""
    active = {code: m for code, m in masks.items() if levels.get(code) != rules.OFF}
    errors, warnings = rules.reasons_by_level(active, levels, good.num_rows)
    quarantined = pc.greater(pc.list_value_length(errors), 0)
    raw_lines = _raw_lines(good, quarantined, data) if good.num_rows else pa.array([], pa.string())
    good = good.append_column(REASONS, errors).append_column(WARNINGS, warnings)
    good = good.append_column(RAW_LINE, raw_lines)
    if bad:
        failed = {
            SOURCE_LINE: pa.array([b.line for b in bad], pa.int64()),
            REASONS: pa.array([[rules.parse_failure(b.reason)] for b in bad], REASON_LIST),
            WARNINGS: pa.array([[] for _ in bad], REASON_LIST),
            RAW_LINE: pa.array([b.raw for b in bad], pa.string()),
        }
        columns = {
            name: failed.get(name, pa.nulls(len(bad), good.schema.field(name).type))
            for name in good.column_names
        }
        good = pa.concat_tables([good, pa.table(columns, schema=good.schema)])
        good = good.sort_by(SOURCE_LINE)
    n = good.num_rows
    constants = {
        "dataset": source.dataset,
        "subset": source.subset,
        "split": source.split,
        "source_file": source.relpath,
    }
    for index, (name, value) in enumerate(constants.items()):
        good = good.add_column(index, name, pa.array([value] * n, pa.string()))
    return good


def _raw_lines(table: pa.Table, quarantined: pa.Array, data: bytes | None) -> pa.Array:
    """The raw text of quarantined rows (null for the others).

    JSON Lines rows get their line as read; JSON-array elements (no line of their own) get the
    object re-serialized with orjson.
    """
    values: list[str | None] = [None] * table.num_rows
    rows = np.flatnonzero(quarantined.to_numpy(zero_copy_only=False))
    if not len(rows):
        return pa.array(values, pa.string())
    if data is None:
        objects = table.take(pa.array(rows)).drop_columns([SOURCE_LINE]).to_pylist()
        for row, obj in zip(rows, objects, strict=True):
            values[row] = orjson.dumps(obj).decode()
    else:
        starts, ends, _ = line_bounds(data)
        lines = table.column(SOURCE_LINE).to_numpy()
        for row in rows:
            values[row] = decode_raw(data[starts[lines[row]] : ends[lines[row]]])
    return pa.array(values, pa.string())


def _parse_array_or_lines(
    holder: list[RawFile],
    uri: str,
    specs: list[FieldSpec],
    max_bytes: int,
    normalize: ObjectNormalizer,
) -> ParsedFile:
    """Parse the file in ``holder`` (taken out of it, so that its bytes are freed as soon as they
    are decoded; at most ``max_bytes`` of them), a JSON array (upstream red-team layout) or JSON
    Lines, into a table.

    Keys are normalized first (``normalize``, the dataset's, e.g.
    :func:`curation.datasets.hh_format.normalize_red_team`); keys outside the spec are
    counted in :attr:`ParsedFile.unknown_keys`.
    """
    names = [s.name for s in specs]
    columns: dict[str, list] = {name: [] for name in names}
    lines: list[int] = []
    bad: list[BadLine] = []
    unknown: dict[str, int] = {}
    # lazily, one element's text at a time; the generator holds the only reference to the bytes
    values = iter_json_values(holder.pop().decompress(max_bytes))
    try:
        for index, value, text in values:
            if isinstance(value, BadLine):
                bad.append(value)
                continue
            reason, detail = None, ""
            if isinstance(value, dict):
                value, reason, detail = normalize(value)
                for key in unknown_keys(value, specs):
                    unknown[key] = unknown.get(key, 0) + 1
            if reason is None:
                reason, detail = check_object(value, specs)
            if reason is not None:
                bad.append(BadLine(index, reason, text, detail))
                continue
            lines.append(index)
            for name in names:
                columns[name].append(value.get(name))
    except (UnicodeDecodeError, ValueError) as exc:  # a malformed array: the file is unreadable
        raise SourceError(f"{uri}: unreadable JSON array or stream: {exc}") from exc
    schema = arrow_schema(specs)
    table = pa.table({n: pa.array(columns[n], schema.field(n).type) for n in names}, schema=schema)
    table = table.append_column(SOURCE_LINE, pa.array(lines, pa.int64()))
    return ParsedFile(table, bad, len(lines) + len(bad), 0, dict(sorted(unknown.items())))


def _count(table: pa.Table, report: FileReport) -> None:
    for column, target in (
        (REASONS, report.quarantine_by_reason),
        (WARNINGS, report.warnings_by_reason),
    ):
        flat = pc.list_flatten(table.column(column))
        if len(flat):
            counts = pc.value_counts(flat).to_pylist()
            target.update(
                {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])}
            )
    report.rows_quarantined = int(
        pc.sum(pc.greater(pc.list_value_length(table.column(REASONS)), 0)).as_py() or 0
    )


#: Rows of the real upstream files where their datasets know them (``upstream_rows``), by
#: ``<dataset>/<relpath>``; other files are not compared.
UPSTREAM_ROWS = upstream_rows()


def upstream_row_differences(reports: list[dict]) -> list[dict]:
    """Present files whose rows read differ from :data:`UPSTREAM_ROWS`:
    ``[{file, rows, upstream}]`` (absent files and files without a known count are skipped)."""
    out = []
    for report in sorted(reports, key=lambda r: (r["dataset"], r["relpath"])):
        name = file_name(report["dataset"], report["relpath"])
        upstream = UPSTREAM_ROWS.get(name)
        if report["present"] and upstream is not None and report["rows_read"] != upstream:
            out.append({"file": name, "rows": report["rows_read"], "upstream": upstream})
    return out


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def check_patterns(patterns: list[str], what: str) -> None:
    """Raise :class:`~curation.core.bounds.InvalidConfig` (a ``ValueError``), one line per pattern
    that matches no upstream file (a typo in the config)."""
    names = [file_name(s.dataset, s.relpath) for s in all_files()]
    problems = [
        f"{what}: {quoted(p)} matches no upstream file; names look like {names[0]!r} or "
        f"{names[-1]!r}"
        for p in patterns
        if not any(fnmatch.fnmatchcase(n, p) for n in names)
    ]
    if problems:
        raise InvalidConfig(problems)


@dataclass
class PresenceVerdict:
    """Absent upstream files sorted by consequence: errors fail the run, warnings are shown."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_presence(
    absent: list[str],
    *,
    expected: list[str] | None,
    allow_missing: list[str],
    previous: tuple[str, set[str]] | None,
) -> PresenceVerdict:
    """What the absence of each of the files ``absent`` (``<dataset>/<relpath>`` names) means.

    * A file the previous release had that is gone now is an error unless ``allow_missing``
      matches it (a vanished file would otherwise silently drop its rows from the new release).
    * A file the config lists in ``expected`` is an error unless ``allow_missing`` matches it.
    * With ``expected`` unset every upstream file is expected, and an absent one is a warning
      (a sample or a partial mirror is legitimate, but never silent).
    """
    verdict = PresenceVerdict()
    for name in sorted(absent):
        if _matches(name, allow_missing):
            continue
        if previous is not None and name in previous[1]:
            verdict.errors.append(
                f"{name}: in the previous release {previous[0]} but absent now "
                "(add it to allow_missing_files if that is intended)"
            )
        elif expected is not None and _matches(name, expected):
            verdict.errors.append(f"{name}: listed in expected_files but absent from the mirror")
        elif expected is None:
            verdict.warnings.append(f"{name}: absent from the mirror")
    return verdict


def require_recognisable(reports: list[dict]) -> None:
    """Raise :class:`SourceError` naming the mirror URI when a dataset has no file at all."""
    by_dataset: dict[str, list[dict]] = {}
    for report in reports:
        by_dataset.setdefault(report["dataset"], []).append(report)
    for dataset, items in sorted(by_dataset.items()):
        if not any(r["present"] for r in items):
            root = items[0]["uri"][: -len(items[0]["relpath"]) - 1]
            expected = ", ".join(r["relpath"] for r in items[:3])
            raise SourceError(
                f"{root}: no recognisable {dataset} files in this mirror (expected e.g. {expected})"
            )


def manifest_sources(reports: list[dict]) -> list[dict]:
    """File reports grouped per dataset mirror, as the release manifest records its sources.

    ``[{name, dataset, uri, revision, files: [{path, present, size, sha256, rows, ...}]}]``;
    absent files are listed with ``present: false``.
    """
    by_dataset: dict[str, dict] = {}
    for report in sorted(reports, key=lambda r: (r["dataset"], r["relpath"])):
        root = report["uri"][: -len(report["relpath"]) - 1]
        entry = by_dataset.setdefault(
            report["dataset"],
            {
                "name": report["dataset"],
                "dataset": report["dataset"],
                "uri": root,
                "revision": report["revision"],
                "files": [],
            },
        )
        entry["files"].append(
            {
                "path": report["relpath"],
                "present": report["present"],
                "size": report["size"],
                "sha256": report["sha256"],
                "fingerprint": report.get("fingerprint", ""),
                "rows": report["rows_read"],
                "compression": report["compression"],
                "schema_variant": report["schema_variant"],
                "subset": report["subset"],
                "split": report["split"],
                "rows_quarantined": report["rows_quarantined"],
                "quarantine_by_reason": report.get("quarantine_by_reason", {}),
                "warnings_by_reason": report.get("warnings_by_reason", {}),
                "blank_lines": report["blank_lines"],
                "unknown_keys": report.get("unknown_keys", {}),
                # the files a glob matched (a declared dataset's split)
                **({"members": report["members"]} if report.get("members") else {}),
            }
        )
    return list(by_dataset.values())
