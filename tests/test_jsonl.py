"""Line splitting and JSON Lines parsing agree with a naive reference on arbitrary bytes."""

from __future__ import annotations

import json

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from curation.core.jsonl import FieldSpec, line_bounds, parse_jsonl


@given(
    st.lists(st.sampled_from([b"", b" ", b"\t \r", b"{}", b' {"a": 1}', b"x", b"\r"]), max_size=12),
    st.booleans(),
)
def test_line_bounds_match_naive_split(parts: list[bytes], trailing: bool):
    data = b"\n".join(parts) + (b"\n" if trailing and parts else b"")
    starts, ends, nonblank = line_bounds(data)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines = lines[:-1]
    if not data:
        lines = []
    assert [data[s:e] for s, e in zip(starts, ends, strict=True)] == lines
    assert nonblank.tolist() == [bool(line.strip(b" \t\r")) for line in lines]


@given(
    st.lists(
        st.text(st.characters(exclude_characters="\n", exclude_categories=("Cs",)), max_size=30),
        max_size=20,
    )
)
def test_parse_jsonl_accounts_for_every_line(texts: list[str]):
    lines = [json.dumps({"a": t}) if i % 3 else t for i, t in enumerate(texts)]
    data = "\n".join(lines).encode()
    parsed = parse_jsonl(data, [FieldSpec("a", pa.string())])
    nonblank = sum(1 for line in data.split(b"\n") if line.strip(b" \t\r"))
    assert parsed.rows_read == nonblank == parsed.table.num_rows + len(parsed.bad)
    good = dict(
        zip(parsed.table["source_line"].to_pylist(), parsed.table["a"].to_pylist(), strict=True)
    )
    for line, value in good.items():
        assert json.loads(lines[line])["a"] == value
