"""The TRL preference view of a release: the published pairs in the conversational preference
format of Hugging Face TRL (``DPOTrainer``, ``RewardTrainer``).

TRL's format ("Dataset formats and types", https://huggingface.co/docs/trl/dataset_formats,
conversational preference with an explicit prompt)::

    {"prompt": [{"role": "user", "content": "What color is the sky?"}],
     "chosen": [{"role": "assistant", "content": "It is blue."}],
     "rejected": [{"role": "assistant", "content": "It is green."}]}

One view row per pair, in the pairs' order: ``prompt`` is the pair's ``prompt_turns`` with roles
in TRL's names (``human`` -> ``user``), ``chosen`` and ``rejected`` are one assistant message
each, and ``pair_id``, ``dataset``, ``subset``, ``split`` and ``dimension`` join the row back to
``pairs``. The view is a pure function of the pairs (no setting changes it), so the release id,
which covers the pairs' inputs and this code (the code version), needs nothing more.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: The table name of the view in a release (``trl/<split>/part-NNNNN.parquet``).
TRL_VIEW = "trl"
#: The pairs table the view is derived from.
VIEW_OF = "pairs"

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

#: TRL's conversational preference columns first, then the columns joining a row back to pairs.
TRL_PREFERENCE = pa.schema(
    [
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("pair_id", pa.string()),
        ("dataset", pa.string()),
        ("subset", pa.string()),
        ("split", pa.string()),
        ("dimension", pa.string()),
    ]
)

#: The pair columns the view reads.
SOURCE_COLUMNS = (
    "pair_id",
    "dataset",
    "subset",
    "split",
    "dimension",
    "prompt_turns",
    "chosen",
    "rejected",
)

#: Our turn roles -> TRL's message roles (``user``/``assistant``/``system``); HH and PKU prompt
#: turns use ``human`` and ``assistant``.
TRL_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "system": "system"}


@cache
def _role_arrays() -> tuple[pa.Array, pa.Array]:
    """:data:`TRL_ROLES` as two Arrow arrays, built on first use: ``pa.array`` imports pandas,
    which ``rlhf-curate releases`` (importing this module through the publisher) must not."""
    return pa.array(list(TRL_ROLES), pa.string()), pa.array(list(TRL_ROLES.values()), pa.string())


class ViewError(ValueError):
    """A pair cannot be written in TRL's format; the message names the pair and the field."""


def trl_preference_view(pairs: pa.Table) -> pa.Table:
    """The TRL view (:data:`TRL_PREFERENCE`) of ``pairs`` (a table with :data:`SOURCE_COLUMNS`),
    row for row. ``ViewError`` for a pair without prompt turns or with a role TRL has no name
    for (validated pairs have neither)."""
    missing = [c for c in SOURCE_COLUMNS if c not in pairs.column_names]
    if missing:
        raise ViewError(f"pairs lack the columns {missing} the TRL view reads")
    ids = pairs.column("pair_id")
    columns = {
        "prompt": _chunked(pairs.column("prompt_turns"), ids, _prompt_messages),
        "chosen": _chunked(pairs.column("chosen"), ids, _assistant_message),
        "rejected": _chunked(pairs.column("rejected"), ids, _assistant_message),
    }
    for name in ("pair_id", "dataset", "subset", "split", "dimension"):
        columns[name] = pairs.column(name).cast(pa.string())
    return pa.table(columns, schema=TRL_PREFERENCE)


def _chunked(column: pa.ChunkedArray, ids: pa.ChunkedArray, convert) -> pa.ChunkedArray:
    """``convert`` applied to each chunk of ``column`` (with the pair ids of its rows)."""
    out, start = [], 0
    for chunk in column.chunks:
        out.append(convert(chunk, ids.slice(start, len(chunk))))
        start += len(chunk)
    return pa.chunked_array(out, type=MESSAGES)


def _prompt_messages(turns: pa.ListArray, ids: pa.ChunkedArray) -> pa.ListArray:
    """``prompt_turns`` (``list<{role, text}>``) as TRL messages (``list<{role, content}>``)."""
    if turns.null_count:
        first = pc.index(pc.is_null(turns), True).as_py()
        raise ViewError(f"pair {ids[first].as_py()!r}: prompt_turns is null")
    flat = pc.list_flatten(turns)
    roles = pc.struct_field(flat, "role")
    ours, theirs = _role_arrays()
    where = pc.index_in(roles, value_set=ours)
    if where.null_count:
        _unknown_role(turns, roles, where, ids)
    messages = pa.StructArray.from_arrays(
        [theirs.take(where), pc.struct_field(flat, "text")], fields=list(MESSAGE)
    )
    return pa.ListArray.from_arrays(_offsets(pc.list_value_length(turns)), messages, MESSAGES)


def _assistant_message(texts: pa.Array, ids: pa.ChunkedArray) -> pa.ListArray:
    """Each response as a list of one assistant message."""
    n = len(texts)
    role = pa.array(np.full(n, "assistant", dtype=object), pa.string())
    messages = pa.StructArray.from_arrays([role, texts.cast(pa.string())], fields=list(MESSAGE))
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), messages, MESSAGES)


def _offsets(lengths: pa.Array) -> pa.Array:
    """List offsets of lists of ``lengths`` items."""
    counts = lengths.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ViewError(f"{offsets[-1]} prompt turns in one chunk exceed a list's int32 offsets")
    return pa.array(offsets.astype(np.int32))


def _unknown_role(
    turns: pa.ListArray, roles: pa.Array, where: pa.Array, ids: pa.ChunkedArray
) -> None:
    """Raise naming the first pair with a role outside :data:`TRL_ROLES`."""
    position = pc.index(pc.is_null(where), True).as_py()
    row = pc.list_parent_indices(turns)[position].as_py()
    raise ViewError(
        f"pair {ids[row].as_py()!r}: prompt turn role {roles[position].as_py()!r} has no TRL "
        f"name (known: {sorted(TRL_ROLES)})"
    )
