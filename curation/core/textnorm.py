"""Text normalization used only for *matching* (dedup, decontamination); published text is untouched.

The normalized form of a text is, in order:

1. **Unicode NFKC** (compatibility composition): full-width letters, ligatures (``ﬁ``),
   superscripts, non-breaking and other exotic spaces fold to their plain equivalents, so text
   copied through different editors or keyboards compares equal.
2. **Case folding**: Unicode lowercase (``utf8_lower``) plus the two full case-folding mappings
   that lowercasing misses and that occur in practice, ``ß → ss`` and final sigma ``ς → σ``.
3. **Apostrophes deleted** (``'`` ````` ``‘`` ``’`` ``ʼ``): ``don't``, ``don’t`` and ``dont``
   become the same token instead of ``don t`` vs ``dont``.
4. **Every other character that is not a letter, a digit or a combining mark becomes a space**
   (Unicode classes ``\\p{L}``, ``\\p{N}``, ``\\p{M}``): punctuation, symbols, emoji, control
   characters and all whitespace. Cosmetic punctuation edits (``"Hi!!"`` vs ``"hi"``, quotes,
   markdown bullets) therefore match, while alphanumerics of every script (CJK, Cyrillic,
   Devanagari with its combining vowel signs, ...) are kept.
5. **Whitespace collapsed** to single ASCII spaces and trimmed, so the normalized text is a
   sequence of words separated by exactly one space (``""`` when nothing is left).

Speed: the corpus is ~0.6 GB of text, so the normalization is vectorized. Rows that are pure
ASCII (the vast majority) take a fast path: one ``bytes.translate`` over the whole Arrow data
buffer does steps 2-4 at memory speed (NFKC is the identity on ASCII). Only non-ASCII rows go
through ``pyarrow.compute.utf8_normalize``/``utf8_lower`` and a Rust ``regex`` replacement
(polars). Step 5 is two polars string passes over everything. Both paths implement exactly the
same function (``tests/test_textnorm.py`` checks the fast path against the general one), and
:func:`normalize_text` is the same code applied to a one-element array.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.parallel import parallel_map

__all__ = ["normalize_array", "normalize_text", "parallel_map"]

#: Arrays larger than this are processed as two halves on the shared thread pool
#: (:func:`curation.core.parallel.parallel_map`).
PARALLEL_BYTES = 16 << 20


def halves(values: pa.Array) -> list[pa.Array]:
    """``values`` as two zero-copy slices (one when it is small)."""
    n = len(values)
    if n < 2 or values.nbytes < PARALLEL_BYTES:
        return [values]
    return [values.slice(0, n // 2), values.slice(n // 2)]


#: Characters deleted outright (apostrophes), see step 3 of the module docstring.
APOSTROPHES = "'`\u2018\u2019\u02bc"
#: Full case folding mappings that ``utf8_lower`` does not apply.
_CASEFOLD_EXTRA = {"\u00df": "ss", "\u03c2": "\u03c3"}
#: Any run of characters that are neither letters, digits nor combining marks.
_NON_WORD = r"[^\p{L}\p{N}\p{M}]+"
#: Placeholder the ASCII fast path writes for an apostrophe before it is deleted.
_DELETE = "\x01"


def _ascii_table() -> bytes:
    table = bytearray(b" " * 256)  # every byte not listed below becomes a space
    for c in b"abcdefghijklmnopqrstuvwxyz0123456789":
        table[c] = c
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[c] = c + 32
    for c in (ord("'"), ord("`")):
        table[c] = ord(_DELETE)
    return bytes(table)


_ASCII_TABLE = _ascii_table()


def _as_large_string(values: pa.Array | pa.ChunkedArray | pl.Series) -> pa.LargeStringArray:
    if isinstance(values, pl.Series):
        values = values.to_arrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], values.type)
    if not isinstance(values, pa.Array):
        values = pa.array(values, pa.large_string())
    if values.type != pa.large_string():
        values = values.cast(pa.large_string())
    return values


def _general(values: pa.Array) -> pa.Array:
    """Steps 1-4 for arbitrary Unicode text (used for non-ASCII rows)."""
    values = pc.utf8_lower(pc.utf8_normalize(values, "NFKC"))
    series = pl.Series(values).str.replace_many(
        list(_CASEFOLD_EXTRA), list(_CASEFOLD_EXTRA.values())
    )
    series = series.str.replace_all(f"[{APOSTROPHES}]", "").str.replace_all(_NON_WORD, " ")
    return _as_large_string(series)


def _ascii_fast(values: pa.LargeStringArray) -> pa.LargeStringArray:
    """Steps 2-4 as one byte translation of the data buffer; exact for ASCII rows only.

    Bytes >= 0x80 become spaces, so non-ASCII rows come out as valid (garbage) ASCII and must be
    replaced by the general path.
    """
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], np.int64, n + 1, values.offset * 8)
    start, end = int(offsets[0]), int(offsets[-1])
    data = values.buffers()[2]
    raw = memoryview(data)[start:end] if data is not None else memoryview(b"")
    translated = bytes(raw).translate(_ASCII_TABLE)
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets - start), pa.py_buffer(translated)
    )


def _finish(values: pa.Array) -> pa.Array:
    """Step 3 cleanup for the fast path and step 5 (collapse and trim spaces)."""
    series = (
        pl.Series(values)
        .str.replace_all(_DELETE, "", literal=True)
        .str.replace_all(" {2,}", " ")
        .str.strip_chars(" ")
    )
    return _as_large_string(series)


def normalize_array(
    values: pa.Array | pa.ChunkedArray | pl.Series, *, _force_general: bool = False
) -> pa.LargeStringArray:
    """Normalize every string of ``values`` (see the module docstring); nulls stay null.

    Returns a ``large_string`` array of the same length. Large inputs are normalized as two
    halves on the shared thread pool.
    """
    values = _as_large_string(values)
    if len(values) == 0:
        return pa.array([], pa.large_string())
    parts = parallel_map(lambda v: _normalize(v, _force_general), halves(values))
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


def _normalize(values: pa.LargeStringArray, force_general: bool) -> pa.LargeStringArray:
    if force_general:
        out = _general(values)
    else:
        out = _ascii_fast(values)
        non_ascii = pc.fill_null(pc.invert(pc.string_is_ascii(values)), False)
        if pc.any(non_ascii).as_py():
            out = pc.replace_with_mask(out, non_ascii, _general(values.filter(non_ascii)))
    out = _finish(out)
    if values.null_count:
        out = pc.if_else(pc.is_null(values), pa.scalar(None, pa.large_string()), out)
    return out


#: Stage-table column holding ``normalize_array(prompt)``, computed once by
#: :func:`curation.normalize.normalize.with_pair_ids` and reused by dedup and decontamination (releases
#: drop it: it is not in :data:`curation.core.schema.PAIRS`).
NORMALIZED_PROMPT = "prompt_normalized"


def normalized_prompts(pairs: pa.Table) -> pa.LargeStringArray:
    """``normalize_array(pairs["prompt"])``, taken from :data:`NORMALIZED_PROMPT` when present."""
    if NORMALIZED_PROMPT in pairs.column_names:
        return _as_large_string(pairs[NORMALIZED_PROMPT])
    return normalize_array(pairs["prompt"])


def normalize_text(text: str) -> str:
    """Normalize one string; identical to :func:`normalize_array` on a one-element array."""
    return normalize_array(pa.array([text], pa.large_string()))[0].as_py()
