"""Extra reference sets for decontamination: user-supplied evaluation prompts (JSONL or parquet)."""

from __future__ import annotations

import fsspec
import orjson
import pyarrow.parquet as pq


def load_reference_set(spec: str, storage_options: dict | None = None) -> tuple[str, list[str]]:
    """Load ``uri#field`` as ``(name, prompts)``; the name is the file name.

    ``.parquet`` files are read with pyarrow, anything else as JSON Lines. A missing field or an
    unreadable line raises ``ValueError`` naming the file and line.
    """
    uri, _, field = spec.partition("#")
    field = field or "prompt"
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    with fsspec.open(uri, "rb", compression="infer", **(storage_options or {})) as handle:
        if uri.endswith(".parquet"):
            table = pq.read_table(handle, columns=[field])
            return name, [p for p in table.column(field).to_pylist() if p]
        prompts = []
        for index, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                prompts.append(orjson.loads(line)[field])
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{uri}: line {index}: no string field {field!r}: {exc}") from exc
    return name, [p for p in prompts if isinstance(p, str) and p]
