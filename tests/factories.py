"""Small PAIRS tables for pure-function tests."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.core.schema import PAIRS

LABELS = (
    "chosen_is_safe",
    "rejected_is_safe",
    "chosen_severity",
    "rejected_severity",
    "chosen_harm_categories",
    "rejected_harm_categories",
)


def make_pairs(
    rows: list[dict[str, Any]],
    chosen: str = "chosen answer number {i}",
    rejected: str = "rejected answer number {i}",
) -> pa.Table:
    """A PAIRS table; unspecified fields get defaults (``{i}`` is the row index), labels null."""
    cols: dict[str, list[Any]] = {f.name: [] for f in PAIRS}
    for i, row in enumerate(rows):
        rec = {
            "pair_id": f"p{i:04d}",
            "dataset": "pku-saferlhf",
            "subset": "Alpaca-7B",
            "split": "train",
            "source_file": "Alpaca-7B/train.jsonl",
            "source_line": i,
            "dimension": "helpful",
            "chosen": chosen.format(i=i),
            "rejected": rejected.format(i=i),
            **row,
        }
        rec.setdefault("prompt_turns", [{"role": "human", "text": rec["prompt"]}])
        for label in LABELS:
            rec.setdefault(label, None)
        for f in PAIRS:
            cols[f.name].append(rec[f.name])
    return pa.table(cols, schema=PAIRS)
