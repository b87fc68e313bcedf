"""PKU-SafeRLHF: field specs of the current and the v0 schema, and schema detection.

Current upstream rows carry two responses with safety meta-labels, 19 named harm-category
booleans per response, a severity level (0..3) per response, ``better_response_id``,
``safer_response_id`` and ``response_N_sha256`` = SHA-256 hex of UTF-8 ``prompt + response_N``.
The older v0 schema has only prompt, the two responses, the two ``is_response_N_safe`` flags and
the two ids; it is accepted and normalized with the labels it has (severity and categories null).

The layout is decided per row, then per file by majority (:func:`majority_variant`): a file is
read with the union of both layouts, a row counts as current when it has any current-only marker
key, the file takes the layout of most of its rows (current on a tie), and the rows of the other
layout are quarantined as ``schema_variant_mismatch``. One row can never change how the others
are read. A harm-category key outside the 19 known names quarantines its row
(``unknown_harm_category``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.jsonl import FieldSpec
from curation.core.schema import HARM_CATEGORIES

HARM_STRUCT = pa.struct([(name, pa.bool_()) for name in HARM_CATEGORIES])

V0_FIELDS = [
    FieldSpec("prompt", pa.string()),
    FieldSpec("response_0", pa.string()),
    FieldSpec("response_1", pa.string()),
    FieldSpec("is_response_0_safe", pa.bool_()),
    FieldSpec("is_response_1_safe", pa.bool_()),
    FieldSpec("better_response_id", pa.int64()),
    FieldSpec("safer_response_id", pa.int64()),
]

CURRENT_FIELDS = [
    *V0_FIELDS[:3],
    FieldSpec("prompt_source", pa.string(), required=False),
    FieldSpec("response_0_source", pa.string(), required=False),
    FieldSpec("response_1_source", pa.string(), required=False),
    *V0_FIELDS[3:5],
    FieldSpec("response_0_harm_category", HARM_STRUCT, closed_reason="unknown_harm_category"),
    FieldSpec("response_1_harm_category", HARM_STRUCT, closed_reason="unknown_harm_category"),
    FieldSpec("response_0_severity_level", pa.int64()),
    FieldSpec("response_1_severity_level", pa.int64()),
    *V0_FIELDS[5:],
    FieldSpec("response_0_sha256", pa.string()),
    FieldSpec("response_1_sha256", pa.string()),
]

#: Keys whose presence marks the current schema (absent in v0).
CURRENT_MARKERS = (
    "response_0_harm_category",
    "response_1_harm_category",
    "response_0_severity_level",
    "response_1_severity_level",
    "response_0_sha256",
    "response_1_sha256",
)
_V0_NAMES = {f.name for f in V0_FIELDS}

#: Both layouts at once: the v0 fields required, the current-only fields optional.
UNION_FIELDS = [
    f if f.name in _V0_NAMES else FieldSpec(f.name, f.type, False, f.closed_reason)
    for f in CURRENT_FIELDS
]


#: The two harm-category struct columns of the current layout.
HARM_CATEGORY_COLUMNS = ("response_0_harm_category", "response_1_harm_category")


def harm_category_columns(prefixes: Iterable[str] = HARM_CATEGORY_COLUMNS) -> list[str]:
    """The flattened ``<prefix>.<Category Name>`` columns, prefix-major, upstream key order."""
    return [f"{prefix}.{name}" for prefix in prefixes for name in HARM_CATEGORIES]


def majority_variant(table: pa.Table) -> tuple[str, np.ndarray]:
    """The layout of most rows of a table read with :data:`UNION_FIELDS`, and the mask of the
    rows of the other layout (to quarantine as ``schema_variant_mismatch``).

    A row is current when any of :data:`CURRENT_MARKERS` is non-null; ties go to current.
    """
    current = np.zeros(table.num_rows, dtype=bool)
    for name in CURRENT_MARKERS:
        current |= np.asarray(pc.is_valid(table.column(name)).to_numpy(zero_copy_only=False))
    n_current = int(current.sum())
    if n_current * 2 >= table.num_rows:
        return "current", ~current
    return "v0", current


def fields_for(variant: str) -> list[FieldSpec]:
    """The field specs of a schema variant."""
    return CURRENT_FIELDS if variant == "current" else V0_FIELDS
