"""Parse upstream JSON Lines (and JSON arrays) into Arrow tables, keeping every bad line with a reason.

Fast path: pyarrow's multithreaded JSON reader with an explicit schema reads a clean file in one
call. When the reader refuses the file (a line that is not JSON, not an object, has a wrongly typed
field, or is not UTF-8), the slow path checks each line with orjson to find the culprits, records
them with a reason code, and re-reads only the good lines with pyarrow. Either way the result
accounts for every non-blank line: ``rows_read == table.num_rows + len(bad)``.

Reason codes: ``invalid_utf8``, ``invalid_json``, ``not_an_object``, ``missing_field``,
``wrong_type``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
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
    """Parse JSON Lines ``data`` against ``specs`` (see the module docstring)."""
    schema = arrow_schema(specs)
    starts, ends, nonblank = line_bounds(data)
    lines = np.flatnonzero(nonblank)
    rows_read, blank = len(lines), int((~nonblank).sum())
    if rows_read == 0:
        table = schema.empty_table().append_column(SOURCE_LINE, pa.array([], pa.int64()))
        return ParsedFile(table, [], 0, blank)
    longest = int((ends - starts).max())
    try:
        table = _read_block(data, schema, longest)
        if table.num_rows != rows_read:
            raise pa.ArrowInvalid("row count differs from line count")
        good_lines = lines
        bad: list[BadLine] = []
    except (pa.ArrowInvalid, UnicodeDecodeError):
        good_lines, bad = _check_lines(data, starts, ends, lines, specs)
        good = b"\n".join(data[starts[i] : ends[i]] for i in good_lines)
        table = _read_block(good, schema, longest) if len(good_lines) else schema.empty_table()
    table = table.append_column(SOURCE_LINE, pa.array(good_lines, pa.int64()))
    table, missing = _drop_missing(table, specs, data, starts, ends)
    bad = sorted(bad + missing, key=lambda b: b.line)
    return ParsedFile(table, bad, rows_read, blank)


def _read_block(data: bytes, schema: pa.Schema, longest: int) -> pa.Table:
    block = max(1 << 20, 1 << int(np.ceil(np.log2(longest + 2))))
    return pj.read_json(
        io.BytesIO(data),
        read_options=pj.ReadOptions(block_size=block),
        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )


def _check_lines(
    data: bytes, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray, specs: list[FieldSpec]
) -> tuple[np.ndarray, list[BadLine]]:
    good: list[int] = []
    bad: list[BadLine] = []
    for i in lines.tolist():
        raw = data[starts[i] : ends[i]]
        reason, detail = check_line(raw, specs)
        if reason is None:
            good.append(i)
        else:
            bad.append(BadLine(i, reason, decode_raw(raw), detail))
    return np.array(good, dtype=np.int64), bad


def check_line(raw: bytes, specs: list[FieldSpec]) -> tuple[str | None, str]:
    """Why one line cannot be a row (reason code and detail), or ``(None, "")`` when it can."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "invalid_utf8", f"byte {exc.start}"
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return "invalid_json", str(exc)
    return check_object(obj, specs)


def check_object(obj: object, specs: list[FieldSpec]) -> tuple[str | None, str]:
    """Why a decoded JSON value cannot be a row, or ``(None, "")`` when it can."""
    if not isinstance(obj, dict):
        return "not_an_object", type(obj).__name__
    for spec in specs:
        value = obj.get(spec.name)
        if value is None:
            if spec.required:
                return "missing_field", spec.name
            continue
        if not _fits(value, spec.type):
            return "wrong_type", f"{spec.name}: {type(value).__name__} is not {spec.type}"
    return None, ""


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


def iter_json_values(stream: io.BufferedIOBase) -> Iterator[tuple[int, object, bytes | None]]:
    """Stream values from a file that is one JSON array or JSON Lines.

    Yields ``(index, value, raw_line)``: for an array the index is the element's position and
    the raw text is not kept (``None``); for JSON Lines it is the 0-based line number and the
    line. Undecodable lines yield the reason code as a :class:`BadLine` value. A malformed array
    raises ``ValueError`` (the caller names the file).
    """
    import ijson

    head = stream.read(4096)
    first = head.lstrip()[:1]
    rest = io.BufferedReader(_Prepend(head, stream), buffer_size=1 << 20)
    if first == b"[":
        for index, value in enumerate(ijson.items(rest, "item", use_float=True)):
            yield index, value, None
        return
    for index, raw in enumerate(rest):
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        try:
            raw.decode("utf-8")
            yield index, orjson.loads(raw), raw
        except UnicodeDecodeError:
            yield index, BadLine(index, "invalid_utf8", decode_raw(raw)), raw
        except orjson.JSONDecodeError as exc:
            yield index, BadLine(index, "invalid_json", decode_raw(raw), str(exc)), raw


class _Prepend(io.RawIOBase):
    """A raw stream that first returns ``head`` then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: io.BufferedIOBase) -> None:
        self._head, self._stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        chunk = self._stream.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)
