"""Schema validation of pipeline DataFrames with Great Expectations 1.x expectation suites.

One suite per data contract lives in ``expectations/<name>.json`` (GX's own JSON form of an
``ExpectationSuite``). :func:`validate_frame` runs a suite against a pandas DataFrame (or a pyarrow
table) through one cached, ephemeral GX context and returns a :class:`SuiteResult` whose failure
samples carry ``source_file``/``source_line`` so every failing row can be traced to its input line.

No Dagster import here: the asset checks wrap this module. Great Expectations is imported lazily
(it takes ~3 s to import) and its progress bars and logging are silenced.

The JSON suites are generated from :func:`build_suites`; after changing a suite definition run
``python -m curation.validate.gx_validate write-suites`` (a test fails while the JSON files are stale).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from curation.core.schema import DIMENSIONS, HARM_CATEGORIES, PAIRS, SEVERITY_LEVELS, SPLITS
from curation.core.suite_builder import (
    BOOL_TYPES,
    ID_COLUMNS,
    INT_TYPES,
    LIST_TYPES,
    STR_TYPES,
    SuiteBuilder,
    gx_quiet,
)
from curation.datasets import REGISTRY, dataset_names, declared
from curation.datasets.base import SuiteDef
from curation.datasets.pku_format import HARM_CATEGORY_COLUMNS
from expectations import SUITE_DIR

if TYPE_CHECKING:  # pragma: no cover
    import great_expectations as gx

logger = logging.getLogger(__name__)

#: Every suite stored in ``expectations/``: the built-in datasets' raw-file suites and
#: ``curated_pairs``. A declared dataset's suite is built from its declaration when loaded.
SUITE_NAMES = (*(name for d in REGISTRY for name in d.suites()), "curated_pairs")
MAX_SAMPLE_CHARS = 200

#: Suite name -> JSON file.
SUITES: dict[str, Path] = {name: SUITE_DIR / f"{name}.json" for name in SUITE_NAMES}


def suite_definitions() -> dict[str, SuiteDef]:
    """Every suite's notes and builder function: each dataset's raw-file suites (in registry
    order) and the output contract, ``curated_pairs``."""
    defs: dict[str, SuiteDef] = {}
    for dataset in REGISTRY:
        defs.update(dataset.suites())
    defs["curated_pairs"] = (
        "Curated preference pairs (curation.core.schema.PAIRS); chosen != rejected is a row rule.",
        _curated_pairs,
    )
    return defs


def _curated_pairs(b: SuiteBuilder) -> None:
    """The output contract: the ``PAIRS`` columns, their types, values and ``pair_id`` unique."""
    b.exists(*PAIRS.names)
    b.types(STR_TYPES, "pair_id", "source_file", "subset")
    b.not_null("pair_id", "source_file", "source_line", "dataset", "split", "dimension")
    b.add("unique", "ExpectColumnValuesToBeUnique", column="pair_id")
    b.in_set(list(dataset_names()), "dataset")
    b.in_set(list(SPLITS), "split")
    b.in_set(list(DIMENSIONS), "dimension")
    for column in ("prompt", "chosen", "rejected"):
        b.types(STR_TYPES, column)
        b.not_null(column)
        b.non_blank(column)
    b.types(INT_TYPES, "source_line")
    b.between(0, None, "source_line")
    b.types(BOOL_TYPES, "chosen_is_safe", "rejected_is_safe")
    b.types(LIST_TYPES, "prompt_turns", "chosen_harm_categories", "rejected_harm_categories")
    b.between(
        min(SEVERITY_LEVELS), max(SEVERITY_LEVELS), "chosen_severity", "rejected_severity"
    )  # nulls allowed (datasets without safety labels)


def build_suites() -> dict[str, gx.ExpectationSuite]:
    """The expectation suites as Python objects (source of the JSON files)."""
    gx = gx_quiet()
    suites = {}
    for name, (notes, define) in suite_definitions().items():
        builder = SuiteBuilder()
        define(builder)
        suites[name] = gx.ExpectationSuite(
            name=name,
            expectations=builder.items,
            meta={"great_expectations_version": gx.__version__, "contract": name},
            notes=notes,
        )
    return suites


def write_suites(directory: Path = SUITE_DIR) -> list[Path]:
    """(Re)write every suite's JSON file from :func:`build_suites`."""
    written = []
    for name, suite in build_suites().items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(suite.to_json_dict(), indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def _declared_suites() -> dict[str, SuiteDef]:
    """The suites of the datasets a settings file declares (generated, never stored)."""
    return {name: suite for d in declared() for name, suite in d.suites().items()}


def _suite_json(name: str, notes: str, define: Any) -> dict[str, Any]:
    """A suite built from its definition, as the JSON a stored one holds."""
    gx = gx_quiet()
    builder = SuiteBuilder()
    define(builder)
    suite = gx.ExpectationSuite(
        name=name,
        expectations=builder.items,
        meta={"contract": name, "generated_from": "a dataset declared in the settings file"},
        notes=notes,
    )
    return suite.to_json_dict()


def load_suite_json(name: str) -> dict[str, Any]:
    """The raw JSON dict of suite ``name``: a stored suite (``curated_pairs`` also admitting
    the declared datasets' names), or a declared dataset's, generated."""
    generated = _declared_suites()
    if name in generated:
        return _suite_json(name, *generated[name])
    try:
        path = SUITES[name]
    except KeyError:
        known = sorted([*SUITES, *generated])
        raise KeyError(f"unknown suite {name!r}; known: {known}") from None
    data = json.loads(path.read_text())
    if name == "curated_pairs" and declared():
        _admit_declared_names(data)
    return data


def _admit_declared_names(suite: dict[str, Any]) -> None:
    """Add the declared datasets to the ``dataset`` value set of the ``curated_pairs`` suite."""
    for expectation in suite.get("expectations", []):
        kwargs = expectation.get("kwargs", {})
        if kwargs.get("column") == "dataset" and "value_set" in kwargs:
            kwargs["value_set"] = [*kwargs["value_set"], *(d.name for d in declared())]


def load_suite(name: str) -> gx.ExpectationSuite:
    """Load suite ``name`` from its JSON file.

    GX 1.24 *drops* (and only logs) an expectation whose ``type`` it does not know while building
    a suite from dicts, so the count is checked here and a mismatch raises ``ValueError``.
    """
    gx = gx_quiet()
    data = load_suite_json(name)
    suite = gx.ExpectationSuite(**data)
    if len(suite.expectations) != len(data.get("expectations", [])):
        raise ValueError(
            f"suite {name!r}: {len(data['expectations'])} expectations in "
            f"{SUITES.get(name, 'its definition')}, only {len(suite.expectations)} loaded"
        )
    return suite


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def _arrays_to_lists(series: pd.Series) -> pd.Series:
    """numpy-array cells (what pyarrow list columns become) -> Python lists; None stays."""
    return series.map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)


def _has_array_cells(series: pd.Series) -> bool:
    if series.dtype != object:
        return False
    first = series.first_valid_index()
    return first is not None and isinstance(series.at[first], np.ndarray)


def flattened(table: pa.Table) -> pa.Table:
    """Struct columns flattened (repeatedly, for nested structs) to dotted columns."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    return table


def frame_for_validation(table: pa.Table) -> pd.DataFrame:
    """A pyarrow table as the DataFrame the suites expect.

    Struct columns are flattened (repeatedly, for nested structs) to dotted columns, e.g.
    ``response_0_harm_category.Violence``; list columns become Python lists (pyarrow gives numpy
    arrays, which GX's type names cannot express).
    """
    table = flattened(table)
    # pandas 3 keeps string columns Arrow-backed *with their chunking*; GX's row filters over
    # thousands of chunks are ~10x slower than over one, so combine first.
    df = table.combine_chunks().to_pandas()
    for f in table.schema:
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            df[f.name] = _arrays_to_lists(df[f.name])
    return df


def flatten_harm_categories(
    df: pd.DataFrame, columns: Iterable[str] = HARM_CATEGORY_COLUMNS
) -> pd.DataFrame:
    """Expand dict-valued harm-category columns into ``<column>.<Category>`` columns.

    For frames built from JSON records (``pd.DataFrame(records)``) rather than from pyarrow. One
    column per key seen in any row (upstream categories first), so a category absent from every
    row yields no column (like ``pa.Table.flatten``) and the suite reports it missing; a key
    absent from some rows yields nulls there. Returns a new frame; the dict column is dropped.
    """
    out = df
    for column in columns:
        if column not in out.columns:
            continue
        values = [v if isinstance(v, Mapping) else {} for v in out[column].tolist()]
        expanded = pd.DataFrame(values, index=out.index)
        known = [c for c in HARM_CATEGORIES if c in expanded.columns]
        extra = [c for c in expanded.columns if c not in HARM_CATEGORIES]
        expanded = expanded[known + extra].add_prefix(f"{column}.")
        position = list(out.columns).index(column)
        left, right = out.iloc[:, :position], out.iloc[:, position + 1 :]
        out = pd.concat([left, expanded, right], axis=1)
    return out


def _chunked(series: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow data behind an Arrow-backed column if it has several chunks."""
    data = getattr(series.array, "_pa_array", None)
    return data if isinstance(data, pa.ChunkedArray) and data.num_chunks > 1 else None


def _rechunked(series: pd.Series) -> pd.Series:
    data = _chunked(series)
    try:
        array = pd.array(data.combine_chunks(), dtype=series.dtype)
    except (TypeError, ValueError, pa.ArrowException):  # pragma: no cover - keep as is
        return series
    return pd.Series(array, index=series.index, name=series.name)


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    """RangeIndex, array cells -> lists, one Arrow chunk per Arrow-backed column."""
    if not isinstance(df.index, pd.RangeIndex) or df.index.start != 0 or df.index.step != 1:
        df = df.reset_index(drop=True)
    array_columns = [c for c in df.columns if _has_array_cells(df[c])]
    chunked_columns = [c for c in df.columns if _chunked(df[c]) is not None]
    if array_columns or chunked_columns:
        df = df.copy(deep=False)
        for column in array_columns:
            df[column] = _arrays_to_lists(df[column])
        for column in chunked_columns:
            df[column] = _rechunked(df[column])
    return df


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, size-bounded copy of a cell value."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, str):
        if len(value) > MAX_SAMPLE_CHARS:
            return value[:MAX_SAMPLE_CHARS] + f"…(+{len(value) - MAX_SAMPLE_CHARS} chars)"
        return value
    if depth < 3 and isinstance(value, list | tuple):
        items = [_jsonable(v, depth + 1) for v in value[:20]]
        return [*items, f"…(+{len(value) - 20} items)"] if len(value) > 20 else items
    if depth < 3 and isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in list(value.items())[:40]}
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return _jsonable(str(value), depth + 1)


@dataclass(frozen=True)
class SuiteResult:
    """Outcome of one suite on one frame.

    ``failures`` holds one dict per failing expectation: ``expectation`` (GX type), ``column``,
    ``kwargs`` (JSON-safe, without GX's ``batch_id``), ``unexpected_count`` and
    ``unexpected_percent`` (``None`` for column-level checks such as a dtype mismatch or a missing
    column), ``sample`` (up to ``sample_size`` failing rows as ``{source_file, source_line,
    value}``), ``observed_value`` (column-level checks) and ``exception`` (message if GX raised,
    e.g. for a column that does not exist).
    """

    suite: str
    success: bool
    evaluated: int
    failed: int
    rows: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    validated_rows: int | None = None

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-serializable dict (e.g. for ``dagster.MetadataValue.json``)."""
        return json.loads(json.dumps(asdict(self), default=str))

    def to_markdown(self, max_rows: int = 50) -> str:
        """A Markdown summary with a table of the failing expectations."""
        status = "passed" if self.success else "FAILED"
        head = (
            f"**Suite `{self.suite}` {status}**: {self.failed} of {self.evaluated} expectations "
            f"failed on {self.rows} rows."
        )
        if self.validated_rows is not None and self.validated_rows < self.rows:
            head += (
                f" Row-level expectations were evaluated on all rows; GX ran the whole suite on"
                f" a seeded sample of {self.validated_rows} rows."
            )
        if not self.failures:
            return head + "\n"
        lines = [
            head,
            "",
            "| expectation | column | unexpected | % | detail | sample (source_file:source_line → value) |",
            "|---|---|---:|---:|---|---|",
        ]
        for failure in self.failures[:max_rows]:
            pct = failure.get("unexpected_percent")
            sample = "; ".join(
                f"{s.get('source_file')}:{s.get('source_line')} → {_short(s.get('value'))}"
                for s in failure.get("sample", [])[:3]
            )
            detail = failure.get("exception") or ""
            if not detail and failure.get("observed_value") is not None:
                detail = f"observed {failure['observed_value']}"
            if not detail:
                detail = _short(
                    {k: v for k, v in failure.get("kwargs", {}).items() if k != "column"}, 60
                )
            cells = [
                f"`{failure['expectation']}`",
                f"`{failure.get('column')}`" if failure.get("column") is not None else "",
                "" if failure.get("unexpected_count") is None else str(failure["unexpected_count"]),
                "" if pct is None else f"{pct:.3g}",
                detail,
                sample,
            ]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        if len(self.failures) > max_rows:
            lines.append(f"\n… and {len(self.failures) - max_rows} more failing expectations.")
        return "\n".join(lines) + "\n"


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _exception_message(info: Any) -> str | None:
    """GX reports exceptions either flat or keyed by metric id; return the first message."""
    if not info:
        return None
    if isinstance(info, Mapping) and "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    if isinstance(info, Mapping):
        for sub in info.values():
            message = _exception_message(sub)
            if message:
                return message
    return None


def _sample(
    result: Mapping[str, Any],
    column: str | None,
    df: pd.DataFrame,
    id_columns: Sequence[str],
    index_columns: Sequence[str],
    sample_size: int,
) -> list[dict[str, Any]]:
    entries = result.get("partial_unexpected_index_list") or []
    sample = []
    for entry in entries[:sample_size]:
        row: dict[str, Any] = {}
        if isinstance(entry, Mapping):  # GX gave {id columns..., column: value}
            for name in id_columns:
                row[name] = _jsonable(entry.get(name)) if name in index_columns else None
            value = entry.get(column)
        else:  # positional index (no id columns in the frame)
            position = int(entry)
            row["index"] = position
            for name in id_columns:
                row[name] = None
            value = df[column].iat[position] if column in df.columns else None
        row["value"] = _jsonable(value)
        sample.append(row)
    return sample


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

_LOCK = threading.RLock()
#: Tries of the background GX import (:func:`warm_up`) before it leaves it to the validation.
WARM_UP_ATTEMPTS = 3
_STATE: dict[str, Any] = {}


def _batch_definition():
    """One ephemeral context + pandas datasource per process (cached)."""
    if "batch_definition" not in _STATE:
        context = _context()
        asset = context.data_sources.add_pandas("curation").add_dataframe_asset("frame")
        _STATE["context"] = context
        _STATE["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole_frame")
    return _STATE["batch_definition"]


def _context():
    """An ephemeral GX context (in-memory stores) with analytics and progress bars off in its
    project config (``analytics_enabled=False``: nothing read from or written to the
    environment)."""
    gx = gx_quiet()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        analytics_enabled=False,
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def warm_up() -> threading.Thread:
    """Import GX and build its context on a background thread (~3 s), e.g. while the Arrow
    pass of :mod:`curation.validate.contract` runs; :func:`validate_frame` waits for it.

    SQLAlchemy's ORM is imported here first, on the calling thread: GX imports it too, and while
    the warm-up thread was half-way through that import, Dagster's event-log queries on the
    calling thread hit the half-initialized ``sqlalchemy.orm.exc`` (``AttributeError: partially
    initialized module``) and the check step failed.
    """
    importlib.import_module("sqlalchemy.orm")

    def run() -> None:
        with _LOCK:
            for attempt in range(WARM_UP_ATTEMPTS):
                try:
                    _batch_definition()
                    return
                except ImportError as exc:
                    # CPython's path-entry finders can miss an installed package while another
                    # thread refreshes the import caches; the import is tried again, and when it
                    # keeps failing the validation imports GX itself and raises there.
                    logger.debug("GX warm-up, attempt %d: %s", attempt + 1, exc)
                    importlib.invalidate_caches()
                    time.sleep(0.2)

    thread = threading.Thread(target=run, name="gx-warm-up")  # never killed mid-import
    thread.start()
    return thread


def _release(batch: Any) -> None:
    """Drop GX's references to the frame and its metrics (every batch has the same id)."""
    try:
        engine = batch.data.execution_engine
        engine._metric_cache.clear()
        engine.batch_manager.reset_batch_cache()
        engine.batch_manager._batch_data_cache.clear()
    except AttributeError:  # pragma: no cover - internals moved; only memory is at stake
        pass


def _suite(name: str):
    cache = _STATE.setdefault("suites", {})
    key = (name, dataset_names())  # curated_pairs admits the declared datasets of the moment
    if key not in cache:
        cache[key] = load_suite(name)
    return cache[key]


def validate_frame(
    df: pd.DataFrame | pa.Table,
    suite_name: str,
    *,
    id_columns: Sequence[str] = ID_COLUMNS,
    sample_size: int = 10,
    complete_index: bool = False,
) -> SuiteResult:
    """Validate ``df`` against suite ``suite_name`` and summarize the failures.

    A pyarrow table is converted with :func:`frame_for_validation`. Failure samples carry the
    ``id_columns`` values of the failing rows (``None`` if the frame lacks them).
    ``complete_index``: also return every failing row's ``id_columns`` (GX ``COMPLETE`` format)
    as ``failure["_index"]``.
    """
    if isinstance(df, pa.Table):
        df = frame_for_validation(df)
    df = _normalize(df)
    index_columns = [c for c in id_columns if c in df.columns]
    result_format: dict[str, Any] = {
        "result_format": "COMPLETE" if complete_index else "SUMMARY",
        "partial_unexpected_count": max(int(sample_size), 1),
    }
    if index_columns:
        result_format["unexpected_index_column_names"] = index_columns
    with _LOCK:
        suite = _suite(suite_name)
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
        try:
            validation = batch.validate(suite, result_format=result_format)
        finally:
            _release(batch)

    failures = []
    for item in validation.results:
        if item.success:
            continue
        config = item.expectation_config
        kwargs = {k: v for k, v in dict(config.kwargs).items() if k != "batch_id"}
        column = kwargs.get("column")
        result = dict(item.result or {})
        observed = result.get("observed_value")
        if complete_index:
            extra = {"_index": list(result.get("unexpected_index_list") or [])}
        else:
            extra = {}
        failures.append(
            {
                **extra,
                "expectation": config.type,
                "column": column,
                "kwargs": _jsonable(kwargs),
                "unexpected_count": _jsonable(result.get("unexpected_count")),
                "unexpected_percent": _jsonable(result.get("unexpected_percent")),
                "sample": _sample(result, column, df, id_columns, index_columns, sample_size),
                "observed_value": None if observed is None else _jsonable(observed),
                "exception": _exception_message(item.exception_info),
            }
        )
    evaluated = len(validation.results)
    return SuiteResult(
        suite=suite_name,
        success=bool(validation.success),
        evaluated=evaluated,
        failed=len(failures),
        rows=len(df),
        failures=failures,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m curation.validate.gx_validate write-suites`` regenerates ``expectations/*.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["write-suites"]:
        print("usage: python -m curation.validate.gx_validate write-suites", file=sys.stderr)
        return 2
    for path in write_suites():
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
