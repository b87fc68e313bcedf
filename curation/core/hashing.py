"""The xxh3-128 digests of strings, hashed straight from Arrow buffers: ``pair_id`` (normalize),
the distinct texts of matching (:mod:`curation.match.text_index`, dedup) and a release's profile."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xxhash

__all__ = ["text_hash128", "xxh3_128_digests"]


def xxh3_128_digests(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``(n, 16)`` uint8: the xxh3-128 digest of every string of ``values`` (UTF-8 bytes; nulls
    hash like ``""``), each hashed straight from the Arrow data buffer, without Python strings."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type != pa.large_string():
        values = values.cast(pa.large_string())
    n = len(values)
    if n == 0:
        return np.zeros((0, 16), np.uint8)
    offs = np.frombuffer(values.buffers()[1], np.int64, n + 1, values.offset * 8)
    data = values.buffers()[2]
    mv = memoryview(data) if data is not None else memoryview(b"")
    digest = xxhash.xxh3_128_digest
    raw = b"".join(
        [digest(mv[a:b]) for a, b in zip(offs[:-1].tolist(), offs[1:].tolist(), strict=True)]
    )
    return np.frombuffer(raw, np.uint8).reshape(n, 16)


def text_hash128(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """xxh3-128 of every string of ``values`` (nulls hash like ``""``) as ``(high, low)`` u64."""
    both = xxh3_128_digests(values).view(">u8").astype(np.uint64)
    return both[:, 0].copy(), both[:, 1].copy()
