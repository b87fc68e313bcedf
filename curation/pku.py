"""PKU-SafeRLHF: field specs of the current and the v0 schema, and schema detection.

Current upstream rows carry two responses with safety meta-labels, 19 named harm-category
booleans per response, a severity level (0..3) per response, ``better_response_id``,
``safer_response_id`` and ``response_N_sha256`` = SHA-256 hex of UTF-8 ``prompt + response_N``.
The older v0 schema has only prompt, the two responses, the two ``is_response_N_safe`` flags and
the two ids; it is accepted and normalized with the labels it has (severity and categories null).
"""

from __future__ import annotations

import orjson
import pyarrow as pa

from curation.jsonl import FieldSpec
from curation.schema import HARM_CATEGORIES

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
    FieldSpec("response_0_harm_category", HARM_STRUCT),
    FieldSpec("response_1_harm_category", HARM_STRUCT),
    FieldSpec("response_0_severity_level", pa.int64()),
    FieldSpec("response_1_severity_level", pa.int64()),
    *V0_FIELDS[5:],
    FieldSpec("response_0_sha256", pa.string()),
    FieldSpec("response_1_sha256", pa.string()),
]

#: Keys whose presence marks the current schema (absent in v0).
CURRENT_MARKERS = ("response_0_harm_category", "response_0_severity_level", "response_0_sha256")


def detect_variant(data: bytes) -> str:
    """``"current"`` or ``"v0"``, from the first line that decodes to a JSON object.

    A file whose first object has any of the current-schema keys is read with the current
    schema (so a row of such a file that lacks them is ``missing_field``); otherwise v0.
    """
    for line in data.split(b"\n", 200)[:200]:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return "current" if any(k in obj for k in CURRENT_MARKERS) else "v0"
    return "current"


def fields_for(variant: str) -> list[FieldSpec]:
    """The field specs of a schema variant."""
    return CURRENT_FIELDS if variant == "current" else V0_FIELDS
