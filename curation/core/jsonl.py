"""Parse upstream JSON Lines (and JSON arrays) into Arrow tables, keeping every bad line with a reason.

Fast path: pyarrow's multithreaded JSON reader with an explicit schema reads a clean file in one
call. When the reader refuses the file (a line that is not JSON, not an object, has a wrongly typed
field, or is not UTF-8), the slow path checks each line with orjson to find the culprits, records
them with a reason code, and re-reads only the good lines with pyarrow. Either way the result
accounts for every non-blank line: ``rows_read == table.num_rows + len(bad)``.

The fast path is trusted only when every non-blank line looks like one object (starts with ``{``
and ends with ``}``) and the reader returned one row per line; otherwise an object split over two
lines next to two objects on one line could shift ``source_line``.

Keys that are not in the spec are never dropped silently: :attr:`ParsedFile.unknown_keys` counts
the rows carrying each of them (nested ones as ``field.key``). A struct field marked ``closed``
(e.g. the PKU harm categories) quarantines a row with an unknown member key.

Reason codes: ``invalid_utf8``, ``invalid_json``, ``not_an_object``, ``missing_field``,
``wrong_type``, ``int_out_of_range`` (an integer that does not fit its Arrow type),
``duplicate_key`` (a key given twice in one object), and the ``closed_reason`` of a closed struct.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

SOURCE_LINE = "source_line"
WHITESPACE = np.array([9, 10, 13, 32], dtype=np.uint8)


@dataclass(frozen=True)
class FieldSpec:
    """An expected top-level field: its Arrow type and whether a row without it is bad."""

    name: str
    type: pa.DataType
    required: bool = True
    #: For a struct field: the reason code of a row whose value has a key outside the struct's
    #: fields (``None``: unknown member keys are only counted).
    closed_reason: str | None = None


@dataclass(frozen=True)
class BadLine:
    """A line that could not become a row: its 0-based line number, reason code and text."""

    line: int
    reason: str
    raw: str
    detail: str = ""


@dataclass
class ParsedFile:
    """Rows parsed from one file (``table`` has the spec's columns plus ``source_line``)."""

    table: pa.Table
    bad: list[BadLine] = field(default_factory=list)
    rows_read: int = 0
    blank_lines: int = 0
    #: Keys not in the spec -> number of rows carrying them (nested keys as ``field.key``).
    unknown_keys: dict[str, int] = field(default_factory=dict)


def arrow_schema(specs: Iterable[FieldSpec]) -> pa.Schema:
    """The Arrow schema of a list of field specs."""
    return pa.schema([pa.field(s.name, s.type) for s in specs])


def line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start offsets, end offsets (exclusive, without the newline) and a non-blank mask per line.

    Only lines that are empty or start with whitespace are inspected one by one (JSON lines
    start with ``{``), so this costs one pass of ``buf == 10`` over the bytes.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
    ends = np.concatenate((newlines, [len(buf)])).astype(np.int64)
    if len(buf) and buf[-1] == 10:  # the trailing newline does not open a line
        starts, ends = starts[:-1], ends[:-1]
    elif not len(buf):
        starts, ends = starts[:0], ends[:0]
    nonblank = ends > starts
    first = buf[np.minimum(starts, max(len(buf) - 1, 0))] if len(buf) else buf[:0]
    suspicious = np.flatnonzero(nonblank & np.isin(first, WHITESPACE))
    for i in suspicious.tolist():
        nonblank[i] = bool(data[starts[i] : ends[i]].strip(b" \t\r"))
    return starts, ends, nonblank


def decode_raw(line: bytes) -> str:
    """A line as text for the quarantine table, keeping undecodable bytes visible."""
    return line.decode("utf-8", errors="backslashreplace")


def parse_jsonl(data: bytes, specs: list[FieldSpec]) -> ParsedFile:
    """Parse JSON Lines ``data`` against ``specs`` (see the module docstring).

    Raises ``pyarrow.ArrowInvalid`` only when Arrow refuses lines that every per-line check
    accepted (the caller names the file).
    """
    schema = arrow_schema(specs)
    starts, ends, nonblank = line_bounds(data)
    lines = np.flatnonzero(nonblank)
    rows_read, blank = len(lines), int((~nonblank).sum())
    if rows_read == 0:
        table = schema.empty_table().append_column(SOURCE_LINE, pa.array([], pa.int64()))
        return ParsedFile(table, [], 0, blank)
    longest = int((ends - starts).max())
    unknown: dict[str, int] = {}
    try:
        if not _one_object_per_line(data, starts, ends, lines):
            raise pa.ArrowInvalid("a line does not hold exactly one object")
        table = _read_block(data, schema, longest, infer=True)
        if table.num_rows != rows_read:
            raise pa.ArrowInvalid("row count differs from line count")
        # the reader copies invalid UTF-8 inside a JSON string into the column unchecked; a full
        # validation finds it (simdutf, ~GB/s) and sends the file to the per-line checks
        table.validate(full=True)
        good_lines = lines
        bad: list[BadLine] = []
        table, unknown = _split_unknown(table, specs)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        good_lines, bad, unknown = _check_lines(data, starts, ends, lines, specs)
        table, good_lines, bad = _read_good(data, starts, ends, good_lines, bad, schema, longest)
    table = table.append_column(SOURCE_LINE, pa.array(good_lines, pa.int64()))
    table, closed = _drop_closed(table, specs, data, starts, ends)
    table, missing = _drop_missing(table, specs, data, starts, ends)
    bad = sorted(bad + closed + missing, key=lambda b: b.line)
    return ParsedFile(table, bad, rows_read, blank, dict(sorted(unknown.items())))


def _one_object_per_line(
    data: bytes, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray
) -> bool:
    """True when every non-blank line starts with ``{`` and ends with ``}`` (trailing ``\\r`` or
    spaces allowed): the shape of a JSON Lines file the fast path may trust."""
    buf = np.frombuffer(data, dtype=np.uint8)
    first, last = buf[starts[lines]], buf[ends[lines] - 1]
    odd = np.flatnonzero((first != ord("{")) | (last != ord("}")))
    for i in lines[odd].tolist():
        text = data[starts[i] : ends[i]].strip(b" \t\r")
        if not (text.startswith(b"{") and text.endswith(b"}")):
            return False
    return True


def _read_good(
    data: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    good_lines: np.ndarray,
    bad: list[BadLine],
    schema: pa.Schema,
    longest: int,
) -> tuple[pa.Table, np.ndarray, list[BadLine]]:
    """Read the lines the per-line checks accepted; if Arrow still refuses them, run the strict
    checks (duplicate keys) on those lines and read again."""

    def read(rows: np.ndarray) -> pa.Table:
        if not len(rows):
            return schema.empty_table()
        return _read_block(b"\n".join(data[starts[i] : ends[i]] for i in rows), schema, longest)

    try:
        return read(good_lines), good_lines, bad
    except pa.ArrowInvalid:
        keep: list[int] = []
        for i in good_lines.tolist():
            raw = data[starts[i] : ends[i]]
            reason, detail = strict_check(raw)
            if reason is None:
                keep.append(i)
            else:
                bad.append(BadLine(i, reason, decode_raw(raw), detail))
        good_lines = np.array(keep, dtype=np.int64)
        return read(good_lines), good_lines, bad


def strict_check(raw: bytes) -> tuple[str | None, str]:
    """Checks orjson does not make: a key given twice in one object (``duplicate_key``)."""

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except _DuplicateKey as exc:
        return "duplicate_key", f"{exc.args[0]} given twice"
    except ValueError as exc:
        return "invalid_json", str(exc)
    return None, ""


class _DuplicateKey(ValueError):
    """A key given twice in one JSON object."""


def _read_block(data: bytes, schema: pa.Schema, longest: int, infer: bool = False) -> pa.Table:
    block = max(1 << 20, 1 << int(np.ceil(np.log2(longest + 2))))
    return pj.read_json(
        io.BytesIO(data),
        read_options=pj.ReadOptions(block_size=block),
        parse_options=pj.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="infer" if infer else "ignore"
        ),
    )


def _split_unknown(table: pa.Table, specs: list[FieldSpec]) -> tuple[pa.Table, dict[str, int]]:
    """Count keys Arrow inferred beyond the spec; drop unknown top-level columns.

    Unknown members of a closed struct stay in the table for :func:`_drop_closed`; those of an
    open struct are counted and dropped.
    """
    by_name = {s.name: s for s in specs}
    unknown: dict[str, int] = {}
    for name in table.column_names:
        column = table.column(name)
        spec = by_name.get(name)
        if spec is None:
            unknown[name] = len(column) - column.null_count
            continue
        if not pa.types.is_struct(column.type) or column.type == spec.type:
            continue
        known = {f.name for f in spec.type}
        for child in column.type:
            if child.name not in known:
                values = pc.struct_field(column, [column.type.get_field_index(child.name)])
                unknown[f"{name}.{child.name}"] = len(values) - values.null_count
        if spec.closed_reason is None:
            table = table.set_column(
                table.column_names.index(name), name, _declared_struct(column, spec.type)
            )
    extra = [n for n in table.column_names if n not in by_name]
    return table.drop_columns(extra), {k: v for k, v in unknown.items() if v}


def _declared_struct(column: pa.ChunkedArray, typ: pa.StructType) -> pa.ChunkedArray:
    """A struct column reduced to the declared fields of ``typ``."""
    chunks = []
    for chunk in column.chunks:
        children = [chunk.field(f.name) for f in typ]
        chunks.append(pa.StructArray.from_arrays(children, fields=list(typ), mask=chunk.is_null()))
    return pa.chunked_array(chunks, typ)


def _drop_closed(
    table: pa.Table, specs: list[FieldSpec], data: bytes, starts: np.ndarray, ends: np.ndarray
) -> tuple[pa.Table, list[BadLine]]:
    """Move rows whose closed struct fields carry an unknown member key to bad lines."""
    bad_mask = np.zeros(table.num_rows, dtype=bool)
    detail: dict[int, str] = {}
    reason: dict[int, str] = {}
    for spec in specs:
        if spec.closed_reason is None or spec.name not in table.column_names:
            continue
        column = table.column(spec.name)
        if column.type == spec.type:
            continue
        known = {f.name for f in spec.type}
        for child in column.type:
            if child.name in known:
                continue
            values = pc.struct_field(column, [column.type.get_field_index(child.name)])
            hit = np.asarray(pc.is_valid(values).to_numpy(zero_copy_only=False), bool)
            for row in np.flatnonzero(hit & ~bad_mask):
                reason[int(row)], detail[int(row)] = (
                    spec.closed_reason,
                    f"{spec.name}: {child.name}",
                )
            bad_mask |= hit
        table = table.set_column(
            table.column_names.index(spec.name), spec.name, _declared_struct(column, spec.type)
        )
    if not bad_mask.any():
        return table, []
    lines = table.column(SOURCE_LINE).to_numpy()
    bad = [
        BadLine(
            int(lines[row]),
            reason[int(row)],
            decode_raw(data[starts[lines[row]] : ends[lines[row]]]),
            detail[int(row)],
        )
        for row in np.flatnonzero(bad_mask)
    ]
    return table.filter(pa.array(~bad_mask)), bad


def _check_lines(
    data: bytes, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray, specs: list[FieldSpec]
) -> tuple[np.ndarray, list[BadLine], dict[str, int]]:
    good: list[int] = []
    bad: list[BadLine] = []
    unknown: dict[str, int] = {}
    for i in lines.tolist():
        raw = data[starts[i] : ends[i]]
        reason, detail, obj = _check_line(raw, specs)
        if isinstance(obj, dict):
            for key in unknown_keys(obj, specs):
                unknown[key] = unknown.get(key, 0) + 1
        if reason is None:
            good.append(i)
        else:
            bad.append(BadLine(i, reason, decode_raw(raw), detail))
    return np.array(good, dtype=np.int64), bad, unknown


def _check_line(raw: bytes, specs: list[FieldSpec]) -> tuple[str | None, str, object]:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "invalid_utf8", f"byte {exc.start}", None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return "invalid_json", str(exc), None
    return (*check_object(obj, specs), obj)


def check_line(raw: bytes, specs: list[FieldSpec]) -> tuple[str | None, str]:
    """Why one line cannot be a row (reason code and detail), or ``(None, "")`` when it can."""
    reason, detail, _ = _check_line(raw, specs)
    return reason, detail


def unknown_keys(obj: Mapping[str, object], specs: list[FieldSpec]) -> list[str]:
    """Keys of a decoded object that the spec does not know (nested ones as ``field.key``)."""
    names, structs, _ = _index(specs)
    out = [] if names.issuperset(obj) else [key for key in obj if key not in names]
    for name, known in structs:
        value = obj.get(name)
        if isinstance(value, dict) and not known.issuperset(value):
            out.extend(f"{name}.{key}" for key in value if key not in known)
    return out


_SpecIndex = tuple[frozenset[str], list[tuple[str, frozenset[str]]], frozenset[str]]
_INDEXES: dict[int, tuple[list[FieldSpec], _SpecIndex]] = {}


def _index(specs: list[FieldSpec]) -> _SpecIndex:
    """Per spec list (cached by identity; the list is kept so its id is never reused): the field
    names, the struct fields with their member names, and the fields whose type holds an integer
    (the only ones :func:`_in_range` must look at)."""
    cached = _INDEXES.get(id(specs))
    if cached is not None and cached[0] is specs:
        return cached[1]
    names = frozenset(s.name for s in specs)
    structs = [
        (s.name, frozenset(f.name for f in s.type)) for s in specs if pa.types.is_struct(s.type)
    ]
    ints = frozenset(s.name for s in specs if _holds_int(s.type))
    _INDEXES[id(specs)] = (specs, (names, structs, ints))
    return names, structs, ints


def _holds_int(typ: pa.DataType) -> bool:
    if pa.types.is_integer(typ):
        return True
    if pa.types.is_struct(typ):
        return any(_holds_int(f.type) for f in typ)
    if pa.types.is_list(typ):
        return _holds_int(typ.value_type)
    return False


def check_object(obj: object, specs: list[FieldSpec]) -> tuple[str | None, str]:
    """Why a decoded JSON value cannot be a row, or ``(None, "")`` when it can."""
    if not isinstance(obj, dict):
        return "not_an_object", type(obj).__name__
    ints = _index(specs)[2]
    for spec in specs:
        value = obj.get(spec.name)
        if value is None:
            if spec.required:
                return "missing_field", spec.name
            continue
        if not _fits(value, spec.type):
            return "wrong_type", f"{spec.name}: {type(value).__name__} is not {spec.type}"
        if spec.name in ints and not _in_range(value, spec.type):
            return "int_out_of_range", f"{spec.name}: {value} does not fit {spec.type}"
        if spec.closed_reason is not None and isinstance(value, dict):
            extra = sorted(set(value) - {f.name for f in spec.type})
            if extra:
                return spec.closed_reason, f"{spec.name}: {', '.join(extra)}"
    return None, ""


def _in_range(value: object, typ: pa.DataType) -> bool:
    """Whether every integer inside ``value`` fits the width of its Arrow integer type."""
    if pa.types.is_integer(typ):
        info = np.iinfo(typ.to_pandas_dtype())
        return int(info.min) <= value <= int(info.max)  # type: ignore[operator]
    if pa.types.is_struct(typ) and isinstance(value, dict):
        return all(value.get(f.name) is None or _in_range(value[f.name], f.type) for f in typ)
    if pa.types.is_list(typ) and isinstance(value, list):
        return all(v is None or _in_range(v, typ.value_type) for v in value)
    return True


def _fits(value: object, typ: pa.DataType) -> bool:
    if pa.types.is_string(typ):
        return isinstance(value, str)
    if pa.types.is_boolean(typ):
        return isinstance(value, bool)
    if pa.types.is_integer(typ):
        return isinstance(value, int) and not isinstance(value, bool)
    if pa.types.is_floating(typ):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if pa.types.is_struct(typ):
        return isinstance(value, dict) and all(
            value.get(f.name) is None or _fits(value[f.name], f.type) for f in typ
        )
    if pa.types.is_list(typ):
        return isinstance(value, list) and all(v is None or _fits(v, typ.value_type) for v in value)
    return True


def divert(
    table: pa.Table, mask: np.ndarray, reason: str, detail: str, data: bytes
) -> tuple[pa.Table, list[BadLine]]:
    """Move the rows of ``table`` (parsed from ``data``) selected by ``mask`` to bad lines."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return table, []
    starts, ends, _ = line_bounds(data)
    lines = table.column(SOURCE_LINE).to_numpy()
    bad = [
        BadLine(int(lines[r]), reason, decode_raw(data[starts[lines[r]] : ends[lines[r]]]), detail)
        for r in np.flatnonzero(mask)
    ]
    return table.filter(pa.array(~mask)), bad


def require_fields(
    table: pa.Table, specs: list[FieldSpec], data: bytes
) -> tuple[pa.Table, list[BadLine]]:
    """Move rows of ``table`` (parsed from ``data``) missing a required field of ``specs`` to bad
    lines (``missing_field``)."""
    starts, ends, _ = line_bounds(data)
    return _drop_missing(table, specs, data, starts, ends)


def _drop_missing(
    table: pa.Table, specs: list[FieldSpec], data: bytes, starts: np.ndarray, ends: np.ndarray
) -> tuple[pa.Table, list[BadLine]]:
    """Move rows whose required fields (or struct members) are null to bad lines."""
    missing = np.zeros(table.num_rows, dtype=bool)
    first_missing: dict[int, str] = {}
    for spec in specs:
        if not spec.required:
            continue
        column = table.column(spec.name)
        null = _null_mask(column, spec.type)
        for row in np.flatnonzero(null & ~missing):
            first_missing[int(row)] = spec.name
        missing |= null
    if not missing.any():
        return table, []
    source_lines = table.column(SOURCE_LINE).to_numpy()
    bad = [
        BadLine(
            int(source_lines[row]),
            "missing_field",
            decode_raw(data[starts[source_lines[row]] : ends[source_lines[row]]]),
            first_missing[int(row)],
        )
        for row in np.flatnonzero(missing)
    ]
    return table.filter(pa.array(~missing)), bad


def _null_mask(column: pa.ChunkedArray, typ: pa.DataType) -> np.ndarray:
    mask = pc.is_null(column).to_numpy(zero_copy_only=False)
    if pa.types.is_struct(typ):
        for child in range(typ.num_fields):
            mask |= pc.is_null(pc.struct_field(column, [child])).to_numpy(zero_copy_only=False)
    return mask


_SPACE = re.compile(r"[ \t\n\r]*")


class _Decoder:
    """The standard library's JSON scanner with two checks orjson cannot make: NaN/Infinity
    (accepted by ``json`` but not JSON) and a key given twice in one object."""

    def __init__(self) -> None:
        self.non_finite: str | None = None
        self.duplicate: str | None = None
        self.decoder = json.JSONDecoder(
            object_pairs_hook=self._pairs, parse_constant=self._constant
        )

    def _pairs(self, items: list[tuple[str, object]]) -> dict:
        out = dict(items)
        if len(out) != len(items) and self.duplicate is None:
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    self.duplicate = key
                    break
                seen.add(key)
        return out

    def _constant(self, name: str) -> float:
        self.non_finite = self.non_finite or name
        return float(name.replace("Infinity", "inf"))

    def decode(self, text: str, pos: int) -> tuple[object, int, str | None, str]:
        """Decode one value at ``pos``: (value, end, reason or None, detail)."""
        self.non_finite = self.duplicate = None
        value, end = self.decoder.raw_decode(text, pos)
        if self.non_finite is not None:
            return value, end, "non_finite_number", f"{self.non_finite} is not a JSON number"
        if self.duplicate is not None:
            return value, end, "duplicate_key", f"{self.duplicate} given twice"
        return value, end, None, ""


def iter_json_values(data: bytes) -> Iterator[tuple[int, object, str]]:
    """Values of a (decompressed) file that is one JSON array or JSON Lines.

    Yields ``(index, value, raw_text)``: for an array the index is the element's position and the
    raw text the element as written; for JSON Lines the 0-based line number and the line (blank
    lines are skipped, not counted as values). A value that cannot be a row is yielded as a
    :class:`BadLine` (``invalid_utf8``, ``invalid_json``, ``non_finite_number``,
    ``duplicate_key``). A malformed array raises ``ValueError`` (the caller names the file).
    """
    decoder = _Decoder()
    head = data[:4096].lstrip()
    if head[:1] == b"[":
        text = data.decode("utf-8")
        del data  # freed here when the caller passed the only reference
        yield from _array_values(text, decoder)
        return
    starts, ends, nonblank = line_bounds(data)
    for index in np.flatnonzero(nonblank).tolist():
        raw = data[starts[index] : ends[index]]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield index, BadLine(index, "invalid_utf8", decode_raw(raw), f"byte {exc.start}"), ""
            continue
        try:
            start = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
            value, end, reason, detail = decoder.decode(text, start)
            if text[end:].strip(" \t\r"):
                raise json.JSONDecodeError("extra data after the value", text, end)
        except json.JSONDecodeError as exc:
            yield index, BadLine(index, "invalid_json", text, str(exc)), text
            continue
        yield index, (BadLine(index, reason, text, detail) if reason else value), text


def _array_values(text: str, decoder: _Decoder) -> Iterator[tuple[int, object, str]]:
    pos = _SPACE.match(text, text.index("[") + 1).end()  # type: ignore[union-attr]
    index = 0
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            try:
                value, end, reason, detail = decoder.decode(text, pos)
            except json.JSONDecodeError as exc:
                raise ValueError(f"element {index} (character {exc.pos}): {exc.msg}") from exc
            raw = text[pos:end]
            yield index, (BadLine(index, reason, raw, detail) if reason else value), raw
            index += 1
            pos = _SPACE.match(text, end).end()  # type: ignore[union-attr]
            if text.startswith(",", pos):
                pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                raise ValueError(f"after element {index - 1} (character {pos}): expected , or ]")
    if text[pos:].strip(" \t\n\r"):
        raise ValueError(f"character {pos}: data after the closing ]")
