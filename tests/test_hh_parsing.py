"""HH transcript parsing: prompt = everything before the final Assistant turn; turns alternate."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation.datasets import hh_format as hh


def parse_one(text: str) -> dict:
    return hh.parse_transcripts(pa.array([text])).to_dicts()[0]


def test_multi_turn_prompt_is_everything_before_last_assistant_turn():
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to bake?\n\nAssistant: Mix flour."
    row = parse_one(text)
    assert row["prompt"] == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to bake?"
    assert row["response"] == "Mix flour."
    assert row["roles"] == "HAHA"
    assert row["prompt_turns"] == [
        {"role": "human", "text": "hi"},
        {"role": "assistant", "text": "hello"},
        {"role": "human", "text": "how to bake?"},
    ]
    assert text == row["prompt"] + hh.ASSISTANT + " " + row["response"]


def test_inline_human_word_is_text_not_a_turn():
    row = parse_one("\n\nHuman: say Human: twice\n\nAssistant: ok  Human: fine")
    assert row["roles"] == "HA"
    assert row["response"] == "ok  Human: fine"


def test_only_one_leading_space_is_stripped():
    assert parse_one("\n\nHuman: q\n\nAssistant:   a")["response"] == "  a"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("\n\nHuman: a\n\nAssistant: b", True),
        ("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d", True),
        ("preamble\n\nHuman: a\n\nAssistant: b", False),
        ("\n\nAssistant: a\n\nHuman: b\n\nAssistant: c", False),
        ("\n\nHuman: a\n\nAssistant: b\n\nAssistant: c", False),
        ("\n\nHuman: a\n\nAssistant: b\n\nHuman: c", False),
        ("no markers at all", False),
    ],
)
def test_well_formed(text: str, ok: bool):
    assert hh.well_formed(hh.parse_transcripts(pa.array([text]))).to_list() == [ok]


def test_prompt_null_when_last_turn_is_human():
    row = parse_one("\n\nHuman: a\n\nAssistant: b\n\nHuman: c")
    assert row["prompt"] is None and row["response"] is None


@pytest.mark.parametrize(
    "transcript",
    [
        "\n\nHuman: hi\n\nAssistant: hello",
        "\n\nHuman: a\n\nAssistant:  two spaces\n\nHuman: b\n\nAssistant: last one",
        "\n\nHuman: q\n\nAssistant:",
        "\n\nHuman: Assistant: inline\n\nAssistant: Human: inline too",
    ],
)
def test_final_responses_equal_the_full_parse_on_well_formed_transcripts(transcript):
    import pyarrow as pa

    from curation.datasets import hh_format as hh

    parsed = hh.parse_transcripts(pa.array([transcript]))
    assert hh.well_formed(parsed).to_list() == [True]
    assert hh.final_responses(pa.array([transcript])).to_list() == parsed["response"].to_list()
