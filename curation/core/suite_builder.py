"""Building Great Expectations suites: the expectation families and the type names they use.

A suite is built with a :class:`SuiteBuilder` (each expectation tagged with its family in
``meta``); the datasets' modules define their raw-file suites with it and
:mod:`curation.validate.gx_validate` the output contract, ``curated_pairs``. Great Expectations is
imported lazily (:func:`gx_quiet`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

ID_COLUMNS = ("source_file", "source_line")

# Type names as GX's pandas type checks understand them: each name is resolved with
# ``np.dtype(name).type`` and a small map of Python builtins ("str" -> str, "int" -> int, ...).
# For a non-object column GX compares the column dtype once (no per-row failures); for an object
# column (e.g. a bool column holding "yes") it checks ``isinstance`` row by row.
STR_TYPES = ["str"]
BOOL_TYPES = ["bool"]
INT_TYPES = ["int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOAT_TYPES = ["float", "float16", "float32", "float64"]
NUMBER_TYPES = FLOAT_TYPES + INT_TYPES
LIST_TYPES = ["list"]  # numpy arrays (pyarrow list -> pandas) are converted to lists first

NON_BLANK = r"\S"  # at least one non-whitespace character: rejects "" and "   "
SHA256_HEX = r"^[0-9a-f]{64}$"


def gx_quiet():
    """Import great_expectations quietly (no chatty loggers); analytics are off in the context's
    own config (``curation.validate.gx_validate``), not through the environment."""
    import great_expectations
    from great_expectations.execution_engine import pandas_execution_engine

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    # GX fingerprints every in-memory batch under 1 GB (pandas hash of every cell + md5) only to
    # label it; for our frames that was ~8 s of a full-scale run. Turn the fingerprint off.
    pandas_execution_engine.HASH_THRESHOLD = 0
    return great_expectations


class SuiteBuilder:
    """Collects expectations for one suite, tagging each with its family in ``meta``."""

    def __init__(self) -> None:
        self._gxe = gx_quiet().expectations
        self.items: list[Any] = []

    def add(self, family: str, cls_name: str, **kwargs: Any) -> None:
        cls = getattr(self._gxe, cls_name)
        self.items.append(cls(meta={"family": family}, **kwargs))

    def exists(self, *columns: str) -> None:
        for column in columns:
            self.add("presence", "ExpectColumnToExist", column=column)

    def types(self, types: list[str], *columns: str) -> None:
        for column in columns:
            if len(types) == 1:
                self.add("type", "ExpectColumnValuesToBeOfType", column=column, type_=types[0])
            else:
                self.add("type", "ExpectColumnValuesToBeInTypeList", column=column, type_list=types)

    def not_null(self, *columns: str) -> None:
        for column in columns:
            self.add("not_null", "ExpectColumnValuesToNotBeNull", column=column)

    def non_blank(self, *columns: str) -> None:
        for column in columns:
            self.add("non_empty", "ExpectColumnValuesToMatchRegex", column=column, regex=NON_BLANK)

    def in_set(self, values: Sequence[Any], *columns: str) -> None:
        for column in columns:
            self.add(
                "value_set", "ExpectColumnValuesToBeInSet", column=column, value_set=list(values)
            )

    def between(self, lo: float | None, hi: float | None, *columns: str) -> None:
        for column in columns:
            self.add(
                "range", "ExpectColumnValuesToBeBetween", column=column, min_value=lo, max_value=hi
            )

    def regex(self, pattern: str, *columns: str) -> None:
        for column in columns:
            self.add("format", "ExpectColumnValuesToMatchRegex", column=column, regex=pattern)

    def required_text(self, *columns: str) -> None:
        """Present, string, non-null, non-blank."""
        self.exists(*columns)
        self.types(STR_TYPES, *columns)
        self.not_null(*columns)
        self.non_blank(*columns)

    def provenance(self) -> None:
        """``source_file`` (non-null str) and ``source_line`` (non-null int >= 0)."""
        self.exists(*ID_COLUMNS)
        self.types(STR_TYPES, "source_file")
        self.types(INT_TYPES, "source_line")
        self.not_null(*ID_COLUMNS)
        self.between(0, None, "source_line")
