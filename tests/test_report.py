"""The one table renderer (curation.core.report): Markdown and plain text over the same rows."""

from __future__ import annotations

from curation.core.report import format_value, markdown_table, plain_table

HEADER = ["reason", "rows"]
ROWS = [["a|b", 1234], ["two\nlines", None], ["`code`", 0.123456]]


def test_markdown_table_formats_escapes_and_aligns():
    assert markdown_table(HEADER, ROWS, right=[1]).splitlines() == [
        "| reason | rows |",
        "|---|---:|",
        "| a\\|b | 1,234 |",
        "| two lines | None |",
        "| `code` | 0.1235 |",
    ]


def test_markdown_table_takes_a_cell_formatter():
    table = markdown_table(["x"], [["abcdef"]], cell=lambda v: str(v)[:3])
    assert table == "| x |\n|---|\n| abc |"


def test_plain_table_pads_and_right_aligns_numbers():
    rows = [["pairs", "1,234", None], ["removed", 5, "+3"]]
    assert plain_table(["table", "rows", "delta"], rows).splitlines() == [
        "table    rows   delta",
        "-------  -----  -----",
        "pairs    1,234",
        "removed      5     +3",
    ]


def test_format_value():
    assert [format_value(v) for v in (True, 12345, 2.0, "x")] == ["True", "12,345", "2", "x"]
