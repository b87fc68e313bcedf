"""Anthropic HH-RLHF: field specs and vectorized transcript parsing.

A transcript is ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` with any number of turns. Only the
exact markers ``"\\n\\nHuman:"`` and ``"\\n\\nAssistant:"`` open a turn (a ``"Human:"`` inside a
line is text). The text of a turn is what follows its marker with one leading space removed.
The *prompt* of a preference line is the transcript before its final ``"\\n\\nAssistant:"``
marker, kept byte-for-byte as in the source; the *response* is the final Assistant turn's text.

Parsing is vectorized with polars: markers are replaced by a record separator, split into lists,
and roles/texts extracted with list expressions; no Python loop per row.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from curation.core.jsonl import FieldSpec

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_SEP = "\x1e"

PREFERENCE_FIELDS = [FieldSpec("chosen", pa.string()), FieldSpec("rejected", pa.string())]

RED_TEAM_FIELDS = [
    FieldSpec("transcript", pa.string()),
    FieldSpec("min_harmlessness_score_transcript", pa.float64(), required=False),
    FieldSpec("num_params", pa.string(), required=False),
    FieldSpec("model_type", pa.string(), required=False),
    FieldSpec("rating", pa.float64(), required=False),
    FieldSpec("task_description", pa.string(), required=False),
    FieldSpec("task_description_harmlessness_score", pa.float64(), required=False),
    FieldSpec("red_team_member_id", pa.string(), required=False),
    FieldSpec("is_upworker", pa.bool_(), required=False),
    FieldSpec("tags", pa.list_(pa.string()), required=False),
]


#: Other spellings of red-team keys -> the published column. Upstream's file writes
#: ``task_descripton_...`` (sic); its dataset card writes ``task_description_...``.
RED_TEAM_ALIASES = {"task_descripton_harmlessness_score": "task_description_harmlessness_score"}


def normalize_red_team(obj: dict) -> tuple[dict, str | None, str]:
    """A red-team object with its keys in the published spelling and ``red_team_member_id`` as a
    string (upstream descriptions give it as int or as string).

    Returns ``(object, reason, detail)``; the reason is ``conflicting_fields`` when both spellings
    of a key are present with different values, else ``None``.
    """
    out = dict(obj)
    for alias, name in RED_TEAM_ALIASES.items():
        if alias not in out:
            continue
        value = out.pop(alias)
        if out.get(name) is not None and value is not None and out[name] != value:
            return out, "conflicting_fields", f"{alias}={value!r} but {name}={out[name]!r}"
        if out.get(name) is None:
            out[name] = value
    member = out.get("red_team_member_id")
    if isinstance(member, int) and not isinstance(member, bool):
        out["red_team_member_id"] = str(member)
    return out, None, ""


def parse_transcripts(texts: pa.Array | pa.ChunkedArray | pl.Series) -> pl.DataFrame:
    """Parse transcripts into turns, vectorized.

    Returns one row per input with columns:
    ``preamble`` (text before the first marker; ``""`` when well-formed),
    ``roles`` (one letter per turn, e.g. ``"HAHA"``),
    ``turns`` (list of ``{role, text}`` for every turn),
    ``prompt`` (the transcript before the final ``"\\n\\nAssistant:"`` marker, or null when the
    last turn is not an Assistant turn), ``prompt_turns`` (the turns of the prompt) and
    ``response`` (the final turn's text, or null when it is not an Assistant turn).
    """
    text = (
        texts
        if isinstance(texts, pl.Series)
        else pl.Series(pa.chunked_array([texts]) if isinstance(texts, pa.Array) else texts)
    )
    parts = (
        text.str.replace_all(HUMAN, _SEP + "H", literal=True)
        .str.replace_all(ASSISTANT, _SEP + "A", literal=True)
        .str.split(_SEP)
    )
    frame = pl.DataFrame({"text": text, "parts": parts})
    turn = pl.struct(
        role=pl.when(pl.element().str.starts_with("H"))
        .then(pl.lit("human"))
        .otherwise(pl.lit("assistant")),
        text=pl.element().str.slice(1).str.strip_prefix(" "),
    )
    body = pl.col("parts").list.slice(1)
    parsed = frame.select(
        preamble=pl.col("parts").list.first(),
        roles=body.list.eval(pl.element().str.slice(0, 1)).list.join(""),
        turns=body.list.eval(turn),
        last_raw=body.list.last(),
        text=pl.col("text"),
    )
    ends_with_assistant = pl.col("last_raw").str.starts_with("A")
    tail_chars = pl.col("last_raw").str.len_chars() - 1 + len(ASSISTANT)
    return parsed.select(
        "preamble",
        "roles",
        "turns",
        prompt=pl.when(ends_with_assistant).then(
            pl.col("text").str.slice(0, pl.col("text").str.len_chars() - tail_chars)
        ),
        prompt_turns=pl.when(ends_with_assistant).then(
            pl.col("turns").list.slice(0, pl.col("turns").list.len() - 1)
        ),
        response=pl.when(ends_with_assistant).then(
            pl.col("last_raw").str.slice(1).str.strip_prefix(" ")
        ),
    )


def final_responses(texts: pa.Array | pa.ChunkedArray) -> pl.Series:
    """The final Assistant turn's text of each *well-formed* transcript (see :func:`well_formed`).

    Equal to ``parse_transcripts(texts)["response"]`` on transcripts that passed the turn-order
    rule, at a fraction of the cost (no turn lists): the text after the last
    ``"\n\nAssistant:"`` marker, one leading space removed.
    """
    text = pl.Series(pa.chunked_array([texts]) if isinstance(texts, pa.Array) else texts)
    return text.str.split(ASSISTANT).list.last().str.strip_prefix(" ")


def well_formed(parsed: pl.DataFrame) -> pl.Series:
    """True where a parsed transcript starts with Human, alternates, and ends with Assistant."""
    return (parsed["preamble"] == "") & parsed["roles"].str.contains(r"^(HA)+$")
