"""Reading preference data in TRL's format: a team's own data, declared without code.

TRL's preference type ("Dataset formats and types", https://huggingface.co/docs/trl/dataset_formats)
comes in two formats, each with an explicit or an implicit prompt, so a row has one of four
**forms**:

=========================  ==================================================================
``standard``               ``{"prompt": str, "chosen": str, "rejected": str}``
``standard_implicit``      ``{"chosen": str, "rejected": str}``: the prompt is their common
                           prefix (TRL's ``extract_prompt``, below)
``conversational``         ``{"prompt": [messages], "chosen": [messages], "rejected": [messages]}``
``conversational_implicit``  ``{"chosen": [messages], "rejected": [messages]}``: the prompt is
                           the messages before the final one
=========================  ==================================================================

A message is ``{"role": "user" | "assistant" | "system", "content": str}``. The form is
detected per row; a file's form is that of most of its rows (ties: the first in :data:`FORMS`),
and rows of another form are quarantined as ``mixed_forms`` (one file, one form, as TRL's
trainers expect of a dataset).

Every row becomes the columns our pairs are made of: ``prompt_turns`` (our turn roles: ``user``
-> ``human``), ``prompt`` (a conversational prompt rendered as an HH transcript,
``"\\n\\nHuman: ...\\n\\nAssistant: ..."``, so the matching stages compare it with HH and PKU
prompts like any other; a standard prompt as given), ``chosen`` and ``rejected`` (the response
texts), ``form``, and ``rejected_prompt`` (an implicit conversational row's prompt as its
rejected side gives it, for the ``context_mismatch`` rule). Structural faults are parse
failures with reason codes (``missing_field``, ``wrong_type``, ``missing_role``,
``unknown_role``, ``response_not_assistant``, ``mixed_forms``); the content rules (empty
content, a prompt not ending with a user turn, identical responses, mismatched implicit
prompts) are the ``trl`` rule family of :mod:`curation.core.rules`.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from curation.core.jsonl import (
    SOURCE_LINE,
    BadLine,
    ParsedFile,
    decode_raw,
    line_bounds,
    strict_check,
)
from curation.core.schema import TURN

FORMS = ("conversational", "conversational_implicit", "standard", "standard_implicit")
#: TRL's message roles -> the turn roles of our pairs (``curation.publish.trl.TRL_ROLES`` maps back).
OUR_ROLES = {"user": "human", "assistant": "assistant", "system": "system"}
#: The speaker of each of our roles in a rendered transcript (HH's markers for human/assistant).
SPEAKERS = {"human": "Human", "assistant": "Assistant", "system": "System"}

#: The parsed table of a TRL file (before the rules add their verdicts).
TRL_ROWS = pa.schema(
    [
        ("form", pa.string()),
        ("prompt", pa.string()),
        ("prompt_turns", pa.list_(TURN)),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("rejected_prompt", pa.string()),
        (SOURCE_LINE, pa.int64()),
    ]
)
#: The dimension of a TRL dataset's pairs when its declaration names none.
DEFAULT_DIMENSION = "preference"
#: File name endings read as parquet (everything else is JSON Lines, gzip or not).
PARQUET_SUFFIXES = (".parquet",)


class RowError(ValueError):
    """Why one row cannot be read: a parse-failure reason code and a detail."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def parse_trl(data: bytes, name: str) -> ParsedFile:
    """Parse a TRL preference file (``name`` decides the container: parquet or JSON Lines)."""
    if name.endswith(PARQUET_SUFFIXES):
        return _parsed(_parquet_objects(data))
    return _parsed(_jsonl_objects(data))


def empty_rows() -> pa.Table:
    """The parsed table of a file without rows."""
    return TRL_ROWS.empty_table()


# ---------------------------------------------------------------------------- containers


def _jsonl_objects(data: bytes) -> Iterator[tuple[int, Any, str]]:
    """``(line, decoded value or RowError, raw line)`` of each non-blank line."""
    starts, ends, nonblank = line_bounds(data)
    for line, (start, end, keep) in enumerate(zip(starts, ends, nonblank, strict=True)):
        if not keep:
            continue
        raw = data[int(start) : int(end)]
        text = decode_raw(raw)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield line, RowError("invalid_utf8", str(exc)), text
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield line, RowError("invalid_json", str(exc)), text
            continue
        code, detail = strict_check(raw)  # a key given twice
        yield line, RowError(code, detail) if code else value, text


def _parquet_objects(data: bytes) -> Iterator[tuple[int, Any, str]]:
    """``(row index, row as a dict, row as JSON)`` of each row of a parquet file."""
    table = pq.read_table(io.BytesIO(data))
    for index, row in enumerate(table.to_pylist()):
        yield index, row, orjson.dumps(row, default=str).decode()


# ---------------------------------------------------------------------------- rows


def _parsed(objects: Iterable[tuple[int, Any, str]]) -> ParsedFile:
    """The rows of one file: the majority form's rows, the others quarantined."""
    rows: list[tuple[int, dict[str, Any], str]] = []
    bad: list[BadLine] = []
    count = 0
    for line, value, raw in objects:
        count += 1
        try:
            if isinstance(value, RowError):
                raise value
            rows.append((line, _row(value), raw))
        except RowError as exc:
            bad.append(BadLine(line, exc.code, raw, exc.detail))
    forms = Counter(row["form"] for _, row, _ in rows)
    form = max(FORMS, key=lambda f: (forms[f], -FORMS.index(f))) if forms else FORMS[0]
    kept = []
    for line, row, raw in rows:
        if row["form"] == form:
            kept.append({**row, SOURCE_LINE: line})
        else:
            bad.append(BadLine(line, "mixed_forms", raw, f"{row['form']} in a {form} file"))
    table = pa.Table.from_pylist(kept, schema=TRL_ROWS)
    return ParsedFile(table, sorted(bad, key=lambda b: b.line), rows_read=count)


def _row(value: Any) -> dict[str, Any]:
    """One decoded row in our columns (see the module docstring); ``RowError`` otherwise."""
    if not isinstance(value, dict):
        raise RowError("not_an_object", type(value).__name__)
    for key in ("chosen", "rejected"):
        if value.get(key) is None:
            raise RowError("missing_field", key)
    chosen, rejected, prompt = value["chosen"], value["rejected"], value.get("prompt")
    if isinstance(chosen, str):
        return _standard(prompt, chosen, _text(rejected, "rejected"))
    if isinstance(chosen, list):
        return _conversational(prompt, _messages(chosen, "chosen"), rejected)
    raise RowError("wrong_type", f"chosen: {type(chosen).__name__} is not a string or a list")


def _standard(prompt: Any, chosen: str, rejected: str) -> dict[str, Any]:
    if prompt is None:
        prompt, chosen, rejected = extract_prompt(chosen, rejected)
        form = "standard_implicit"
    else:
        prompt, form = _text(prompt, "prompt"), "standard"
    return _columns(form, prompt, transcript_turns(prompt), chosen, rejected, prompt)


def _conversational(prompt: Any, chosen: list[dict], rejected: Any) -> dict[str, Any]:
    if not isinstance(rejected, list):
        raise RowError("wrong_type", f"rejected: {type(rejected).__name__} is not a list")
    rejected = _messages(rejected, "rejected")
    if prompt is None:
        form = "conversational_implicit"
        turns, chosen = chosen[:-1], chosen[-1:]
        rejected_turns, rejected = rejected[:-1], rejected[-1:]
    else:
        if not isinstance(prompt, list):
            raise RowError("wrong_type", f"prompt: {type(prompt).__name__} is not a list")
        form, turns = "conversational", _messages(prompt, "prompt")
        rejected_turns = turns
    for key, messages in (("chosen", chosen), ("rejected", rejected)):
        if [m["role"] for m in messages] != ["assistant"]:
            roles = [m["role"] for m in messages]
            raise RowError("response_not_assistant", f"{key}: roles {roles}, not one assistant")
    return _columns(
        form,
        render(turns),
        turns,
        chosen[0]["text"],
        rejected[0]["text"],
        render(rejected_turns),
    )


def _columns(
    form: str, prompt: str, turns: list[dict], chosen: str, rejected: str, rejected_prompt: str
) -> dict[str, Any]:
    return {
        "form": form,
        "prompt": prompt,
        "prompt_turns": turns,
        "chosen": chosen,
        "rejected": rejected,
        "rejected_prompt": rejected_prompt,
    }


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise RowError("wrong_type", f"{key}: {type(value).__name__} is not a string")
    return value


def _messages(value: list, key: str) -> list[dict[str, str]]:
    """TRL messages as our turns (``{role, text}``, our role names)."""
    turns = []
    for index, message in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(message, dict):
            raise RowError("wrong_type", f"{where}: {type(message).__name__} is not a message")
        role = message.get("role")
        if role is None:
            raise RowError("missing_role", f"{where} has no role")
        if role not in OUR_ROLES:
            raise RowError(
                "unknown_role", f"{where}: role {role!r} is not one of {list(OUR_ROLES)}"
            )
        if message.get("content") is None:
            raise RowError("missing_field", f"{where}.content")
        turns.append({"role": OUR_ROLES[role], "text": _text(message["content"], where)})
    if not turns:
        raise RowError("missing_field", f"{key} is an empty list")
    return turns


#: A speaker marker of an HH-style transcript inside a standard prompt.
_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_ROLE_OF = {"Human": "human", "Assistant": "assistant"}


def transcript_turns(prompt: str) -> list[dict[str, str]]:
    """The turns of a standard prompt: an HH-style transcript (``"\n\nHuman: q\n\nAssistant:"``,
    TRL's own standard form of HH-RLHF) split at its speaker markers, so that matching compares
    its turns with every other dataset's (a final ``Assistant:`` is the response cue, with the
    words both responses start with in an implicit prompt, not a turn); any other text is one
    human turn."""
    parts = _MARKER.split(prompt)
    if parts[0].strip() or len(parts) < 3:
        return [{"role": "human", "text": prompt}]
    turns = [
        {"role": _ROLE_OF[speaker], "text": text[1:] if text.startswith(" ") else text}
        for speaker, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if turns[-1]["role"] == "assistant":
        turns.pop()
    if not turns or turns[0]["role"] != "human":
        return [{"role": "human", "text": prompt}]
    return turns


def row_columns(value: Any) -> dict[str, Any]:
    """One decoded TRL row in our columns; ``ValueError`` (:class:`RowError`) otherwise."""
    return _row(value)


def render(turns: list[dict[str, str]]) -> str:
    """Turns as an HH transcript: ``"\\n\\nHuman: q\\n\\nAssistant: a"``."""
    return "".join(f"\n\n{SPEAKERS[t['role']]}: {t['text']}" for t in turns)


def extract_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)`` of an implicit-prompt standard row: the prompt is the
    longest common prefix of the two texts, without the space before the responses. TRL's
    ``extract_prompt`` (``trl/data_utils.py``, huggingface/trl commit f2cd577, Apache-2.0), so
    a row is split where TRL's trainers split it."""
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if chosen[idx - 1] == " ":
                idx -= 1
            break
    return chosen[:idx], chosen[idx:], rejected[idx:]
