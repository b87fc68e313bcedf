"""The profile of a release: the small set of numbers two releases are compared on.

Computed once when a release is published and kept in its manifest (``profile``), so that the
next release, ``releases diff`` and the card compare with it without reading the previous
release's data (:mod:`curation.publish.drift`). Everything is counts (JSON integers), so two profiles can
be compared with exact tests:

- ``rows``: curated pairs per ``dataset/subset/split/dimension``;
- ``files``: per source file, whether it was present, rows read, rows quarantined per reason
  (ERROR rules) and rows flagged per reason (WARN rules, e.g. a PKU label inconsistency);
- ``kept`` and ``removed``: curated pairs kept, removed pairs per reason;
- ``labels``: per PKU-SafeRLHF ``config/dimension``, the safety of the chosen and rejected
  responses (4 cells), the severity histograms of the chosen and of the rejected responses and
  the harm-category frequencies of both responses;
- ``lengths``: per dataset, prompt and response (chosen and rejected) lengths in characters as
  p5/p50/p95 quantiles (for people) and a histogram over power-of-two bins (for the tests);

Beside the profile, :func:`pair_keys` gives every pair a key that ignores which response is
chosen (the prompt and the two responses, unordered) and the key of its chosen response; the
release stores them (``_profile/pair_keys.parquet``, 32 bytes a pair), so the next release can
count pairs whose chosen and rejected responses were swapped (``curation.publish.drift.swapped_pairs``) (a flipped label the distributions
may not show: a pair of two safe or two equally unsafe responses changes no count).

Reading is column by column and batch by batch (a stage table is never read whole); on the
benchmark corpus the profile costs what ``docs/benchmarks.md`` records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.hashing import text_hash128
from curation.core.stage_table import StageTable
from curation.datasets import REGISTRY

PROFILE_VERSION = 1
#: Quantiles of the length summaries.
QUANTILES = (0.05, 0.5, 0.95)
#: Length histogram bins: [0, 1), [1, 2), [2, 4), ... [2^19, inf) characters.
LENGTH_BINS = 21
SAFETY_CELLS = ("safe/safe", "safe/unsafe", "unsafe/safe", "unsafe/unsafe")
_BATCH_ROWS = 64 * 1024

ProfileTable = pa.Table | StageTable


#: The datasets whose pairs carry safety labels, severity levels and harm categories.
_LABELLED = pa.array([d.name for d in REGISTRY if d.harm_labels], pa.string())


def _batches(table: ProfileTable, columns: Sequence[str]) -> Iterator[pa.Table]:
    """``columns`` of ``table`` a batch of rows at a time (a stage table is never read whole)."""
    if isinstance(table, StageTable):
        yield from table.copied_batches(list(columns))
        return
    selected = table.select(list(columns))
    for start in range(0, max(selected.num_rows, 1), _BATCH_ROWS):
        yield selected.slice(start, _BATCH_ROWS)


def _key(*parts: Any) -> str:
    return "/".join("none" if p is None else str(p) for p in parts)


def row_counts(pairs: ProfileTable) -> dict[str, int]:
    """Pairs per ``dataset/subset/split/dimension``."""
    keys = ["dataset", "subset", "split", "dimension"]
    total: Counter[str] = Counter()
    for batch in _batches(pairs, keys):
        for row in batch.group_by(keys).aggregate([([], "count_all")]).to_pylist():
            total[_key(*(row[k] for k in keys))] += row["count_all"]
    return dict(sorted(total.items()))


def _grouped(table: pa.Table, keys: list[str]) -> list[dict[str, Any]]:
    return table.group_by(keys).aggregate([([], "count_all")]).to_pylist()


def label_counts(pairs: ProfileTable) -> dict[str, dict[str, dict[str, int]]]:
    """Per PKU ``config/dimension``: ``safety`` (chosen/rejected safe or unsafe),
    ``chosen_severity`` and ``rejected_severity`` (levels) and ``harm`` (both responses'
    categories) counts."""
    columns = [
        "dataset",
        "subset",
        "dimension",
        "chosen_is_safe",
        "rejected_is_safe",
        "chosen_severity",
        "rejected_severity",
        "chosen_harm_categories",
        "rejected_harm_categories",
    ]
    out: dict[str, dict[str, Counter[str]]] = {}

    def add(row: Mapping[str, Any], name: str, cell: str) -> None:
        groups = out.setdefault(
            _key(row["subset"], row["dimension"]),
            {
                "safety": Counter(),
                "chosen_severity": Counter(),
                "rejected_severity": Counter(),
                "harm": Counter(),
            },
        )
        groups[name][cell] += row["count_all"]

    where = ["subset", "dimension"]
    for batch in _batches(pairs, columns):
        pku = batch.filter(pc.is_in(batch.column("dataset"), _LABELLED))
        if pku.num_rows == 0:
            continue
        labelled = pku.filter(
            pc.and_(pc.is_valid(pku["chosen_is_safe"]), pc.is_valid(pku["rejected_is_safe"]))
        )
        for row in _grouped(labelled, [*where, "chosen_is_safe", "rejected_is_safe"]):
            chosen = "safe" if row["chosen_is_safe"] else "unsafe"
            add(row, "safety", f"{chosen}/{'safe' if row['rejected_is_safe'] else 'unsafe'}")
        for side in ("chosen", "rejected"):
            levels = pku.filter(pc.is_valid(pku[f"{side}_severity"]))
            for row in _grouped(levels, [*where, f"{side}_severity"]):
                add(row, f"{side}_severity", str(row[f"{side}_severity"]))
            lists = pku[f"{side}_harm_categories"]
            parents = pc.list_parent_indices(lists)
            harm = pa.table(
                {
                    "subset": pc.take(pku["subset"], parents),
                    "dimension": pc.take(pku["dimension"], parents),
                    "category": pc.list_flatten(lists),
                }
            )
            for row in _grouped(harm, [*where, "category"]):
                add(row, "harm", str(row["category"]))
    return {
        key: {name: dict(sorted(counts.items())) for name, counts in groups.items()}
        for key, groups in sorted(out.items())
    }


def _length_bins(lengths: np.ndarray) -> np.ndarray:
    """Counts per power-of-two length bin (see :data:`LENGTH_BINS`)."""
    bins = np.zeros(LENGTH_BINS, dtype=np.int64)
    index = np.minimum(np.ceil(np.log2(lengths + 1)).astype(np.int64), LENGTH_BINS - 1)
    np.add.at(bins, index, 1)
    return bins


def length_summary(pairs: ProfileTable) -> dict[str, dict[str, dict[str, Any]]]:
    """Per dataset, ``prompt`` and ``response`` (chosen and rejected) lengths in characters:
    ``quantiles`` (p5, p50, p95) and ``bins`` (:func:`_length_bins`)."""
    parts: dict[tuple[str, str], list[np.ndarray]] = {}
    for batch in _batches(pairs, ["dataset", "prompt", "chosen", "rejected"]):
        codes = pc.dictionary_encode(batch["dataset"]).combine_chunks()
        index = codes.indices.to_numpy(zero_copy_only=False)
        lengths = {
            column: pc.fill_null(pc.utf8_length(batch[column]), 0).to_numpy().astype(np.int64)
            for column in ("prompt", "chosen", "rejected")
        }
        for code, dataset in enumerate(codes.dictionary.to_pylist()):
            rows = index == code
            parts.setdefault((dataset, "prompt"), []).append(lengths["prompt"][rows])
            parts.setdefault((dataset, "response"), []).extend(
                [lengths["chosen"][rows], lengths["rejected"][rows]]
            )
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (dataset, kind), arrays in sorted(parts.items()):
        values = np.concatenate(arrays)
        if values.size == 0:
            continue
        quantiles = np.quantile(values, QUANTILES, method="inverted_cdf")
        out.setdefault(dataset, {})[kind] = {
            "quantiles": [int(q) for q in quantiles],
            "bins": _length_bins(values).tolist(),
        }
    return out


#: The columns of ``_profile/pair_keys.parquet``.
PAIR_KEYS = pa.schema(
    [
        pa.field("group", pa.dictionary(pa.int32(), pa.string())),  # dataset/subset/split/dim
        pa.field("prompt_key", pa.uint64()),
        pa.field("low_key", pa.uint64()),  # the smaller of the two responses' keys
        pa.field("high_key", pa.uint64()),
        pa.field("chosen_key", pa.uint64()),
    ]
)


def pair_keys(pairs: ProfileTable) -> pa.Table:
    """Per pair: its group, the xxh3 keys of its prompt and of its two responses in sorted order
    (the same whichever response is chosen) and the key of its chosen response."""
    parts = []
    columns = ["dataset", "subset", "split", "dimension", "prompt", "chosen", "rejected"]
    for batch in _batches(pairs, columns):
        if batch.num_rows == 0:
            continue
        group = pc.binary_join_element_wise(
            batch["dataset"], batch["subset"], batch["split"], batch["dimension"], "/"
        )
        prompt = text_hash128(batch["prompt"].combine_chunks())[1]
        chosen = text_hash128(batch["chosen"].combine_chunks())[1]
        rejected = text_hash128(batch["rejected"].combine_chunks())[1]
        parts.append(
            pa.table(
                {
                    "group": pc.dictionary_encode(group),
                    "prompt_key": prompt,
                    "low_key": np.minimum(chosen, rejected),
                    "high_key": np.maximum(chosen, rejected),
                    "chosen_key": chosen,
                },
                schema=PAIR_KEYS,
            )
        )
    if not parts:
        return PAIR_KEYS.empty_table()
    return pa.concat_tables(parts).unify_dictionaries().combine_chunks()


def file_counts(sources: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per source file (``dataset/path``): present, rows read, rows quarantined and flagged by
    reason."""
    out = {}
    for source in sources:
        for entry in source.get("files") or []:
            out[_key(source.get("name") or source.get("dataset"), entry["path"])] = {
                "present": bool(entry.get("present", True)),
                "rows": int(entry.get("rows") or 0),
                "quarantined": dict(sorted((entry.get("quarantine_by_reason") or {}).items())),
                "flagged": dict(sorted((entry.get("warnings_by_reason") or {}).items())),
            }
    return dict(sorted(out.items()))


def reason_counts(removed: ProfileTable) -> dict[str, int]:
    """Removed pairs per reason."""
    total: Counter[str] = Counter()
    for batch in _batches(removed, ["reason"]):
        total.update(batch.column("reason").to_pylist())
    return dict(sorted(total.items()))


def profile_release(
    tables: Mapping[str, ProfileTable], sources: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The profile of a release of ``tables`` (``pairs``, ``removed``, ...) read from ``sources``
    (the manifest's, whose files carry ``quarantine_by_reason``)."""
    pairs = tables["pairs"]
    return {
        "version": PROFILE_VERSION,
        "rows": row_counts(pairs),
        "files": file_counts(sources),
        "kept": pairs.num_rows,
        "removed": reason_counts(tables["removed"]) if "removed" in tables else {},
        "labels": label_counts(pairs),
        "lengths": length_summary(pairs),
    }
