"""Reference prompts for decontamination beyond the test pairs (Dagster-free).

* **Extra reference sets**: user-supplied evaluation prompts (JSONL or parquet). A reference
  file shapes the release (its prompts decide which train pairs are removed), so what was read
  is reported like a source file: size and sha256 of the stored bytes, prompts read. The release
  records these reports and hashes the sha256s into its id.
* **Quarantined test rows** (:func:`quarantined_test_prompts`): a test row quarantined for a
  label or format defect (an empty response, a turn-order fault, a bad label) is not a pair,
  but a team evaluating on the upstream test file still asks its prompt. Every test row whose
  prompt can be parsed from its raw line stays a reference (``docs/dedup.md`` §4).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass

import fsspec
import fsspec.compression
import fsspec.utils
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.core.schema import TURN
from curation.datasets import dataset

#: The columns of the ``reference_files`` stage table (one row per reference set).
REFERENCE_FILES = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("spec", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
    ]
)


@dataclass(frozen=True)
class ReferenceReport:
    """What the manifest records about one reference file."""

    name: str  # the file name: the ``matched_dataset`` of the pairs it removes
    spec: str  # ``uri#field`` as configured
    field: str
    size: int  # bytes as stored
    sha256: str  # of the stored bytes
    rows: int  # prompts read

    def to_dict(self) -> dict:
        """JSON-serializable form."""
        return asdict(self)


@dataclass(frozen=True)
class ReferenceSet:
    """The prompts of one reference file and its report."""

    prompts: list[str]
    report: ReferenceReport


def read_reference_set(spec: str, storage_options: dict | None = None) -> ReferenceSet:
    """Read ``uri#field`` (default field ``prompt``): its prompts and its report.

    ``.parquet`` files are read with pyarrow, anything else as JSON Lines (``.gz`` decompressed).
    A missing field or an unreadable line raises ``ValueError`` naming the file and line.
    """
    uri, _, field = spec.partition("#")
    field = field or "prompt"
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    with fsspec.open(uri, "rb", **(storage_options or {})) as handle:
        raw = handle.read()
    if uri.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(raw), columns=[field])
        prompts = [p for p in table.column(field).to_pylist() if p]
    else:
        prompts = _jsonl_prompts(uri, _decompressed(uri, raw), field)
    report = ReferenceReport(
        name=name,
        spec=spec,
        field=field,
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        rows=len(prompts),
    )
    return ReferenceSet(prompts, report)


def _decompressed(uri: str, raw: bytes) -> bytes:
    """``raw`` decompressed by the codec its name implies (``.gz``, ``.bz2``, ``.zst``, ...)."""
    codec = fsspec.utils.infer_compression(uri)
    if codec is None:
        return raw
    with fsspec.compression.compr[codec](io.BytesIO(raw)) as stream:
        return stream.read()


def _jsonl_prompts(uri: str, data: bytes, field: str) -> list[str]:
    prompts = []
    for index, line in enumerate(data.splitlines()):
        if not line.strip():
            continue
        try:
            prompts.append(orjson.loads(line)[field])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{uri}: line {index}: no string field {field!r}: {exc}") from exc
    return [p for p in prompts if isinstance(p, str) and p]


def load_reference_set(spec: str, storage_options: dict | None = None) -> tuple[str, list[str]]:
    """``(name, prompts)`` of ``uri#field`` (see :func:`read_reference_set`)."""
    found = read_reference_set(spec, storage_options)
    return found.report.name, found.prompts


def reference_table(reports: list[ReferenceReport]) -> pa.Table:
    """The ``reference_files`` stage table of ``reports``."""
    return pa.Table.from_pylist([r.to_dict() for r in reports], schema=REFERENCE_FILES)


def manifest_references(table: pa.Table) -> list[dict]:
    """The ``references`` section of a release manifest, from a ``reference_files`` table."""
    return sorted(table.to_pylist(), key=lambda r: (r["name"], r["spec"]))


#: The prompts of quarantined test rows (:func:`quarantined_test_prompts`): where the row is
#: and its prompt, as a pair would have it (HH: the conversation before the final Assistant
#: turn; PKU: the prompt, one human turn).
QUARANTINED_PROMPTS = pa.schema(
    [
        ("dataset", pa.string()),
        ("subset", pa.string()),
        ("split", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("prompt", pa.string()),
        ("prompt_turns", pa.list_(TURN)),
    ]
)


def _raw_object(raw: str | None) -> dict | None:
    try:
        found = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def quarantined_test_prompts(quarantine: pa.Table) -> pa.Table:
    """The prompts of the quarantined **test** rows of ``quarantine`` (schema
    :data:`~curation.core.schema.QUARANTINE`) that can be parsed from their raw line, in the
    :data:`QUARANTINED_PROMPTS` schema. A row whose line is not a JSON object, or has no prompt
    (an HH transcript without a human turn before a final Assistant turn, a PKU row without a
    ``prompt`` string) is left out: there is nothing to compare with.
    """
    test = quarantine.filter(pc.fill_null(pc.equal(quarantine["split"], "test"), False))
    rows = []
    for row in test.to_pylist():
        obj = _raw_object(row["raw_line"])
        if obj is None:
            continue
        found = dataset(row["dataset"]).raw_prompt(obj)
        if found is None:
            continue
        prompt, turns = found
        rows.append(
            {
                **{k: row[k] for k in ("dataset", "subset", "split", "source_file", "source_line")},
                "prompt": prompt,
                "prompt_turns": turns,
            }
        )
    return pa.Table.from_pylist(rows, schema=QUARANTINED_PROMPTS)
