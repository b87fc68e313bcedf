"""Precision and recall of the decontamination matchers on the labelled REAL rows.

``python -m bench.eval_real [--out results.json]`` (also run by ``tests/test_matching_real.py``).

The universe is every real prompt the repository ships in ``sample_data`` (all 2,312 HH-RLHF
``harmless-base`` test conversations, re-split there, and the 45 PKU-SafeRLHF Alpaca-7B rows).
``bench/labels/*.jsonl`` holds candidate pairs found with looser criteria than the matchers use
(``bench/real_candidates.py``), each labelled by reading it (``bench/labels/GUIDE.md``).
Conversation ids are ``hh:<line>`` / ``pku:<line>``, the line in the upstream file.

For each split of :data:`SPLITS` (a partition of the universe into train and test) the pairs
table is built with the library (``ingest_file`` → ``pairs_from`` → ``with_pair_ids``), the
splits are reassigned, and every matcher of :mod:`curation.match.decontam` runs. Each reported match
is a (train conversation → test conversation) link:

* **precision** of a family: the share of its links that are right. A link is right when the
  two conversations are a labelled leak (any label of the pair says so: equal informative
  opening, shared informative turn, n-gram containment or near-duplicate); for the ``near``
  family the two matched texts must be a labelled near-duplicate pair. A link the candidates
  do not cover counts as wrong.
* **recall** of a family: the share of train conversations with a labelled positive *of that
  family* against a test conversation that the family links to a right test conversation.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.textnorm import normalize_text
from curation.ingest.ingest import ingest_file
from curation.ingest.sources import all_files
from curation.match import decontam
from curation.match.decontam import DecontamConfig, collect_units
from curation.normalize.normalize import pairs_from, split_verdicts, with_pair_ids

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "bench" / "labels"
SAMPLE = REPO / "sample_data"
FAMILIES = ("exact", "turn", "ngram", "near")
#: HH sample file -> offset of its line 0 in the real harmless-base/test.jsonl.gz
#: (sample_data/build.py: test = real lines 0-799, train = real lines 800-2311).
_HH_OFFSET = {"harmless-base/test.jsonl.gz": 0, "harmless-base/train.jsonl.gz": 800}
#: PKU sample file -> offset in the real Alpaca-7B/test.jsonl (test = 0-14, train = 15-44).
_PKU_OFFSET = {"data/Alpaca-7B/test.jsonl": 0, "data/Alpaca-7B/train.jsonl": 15}


def _line(conv: str) -> int:
    return int(conv.split(":")[1])


#: Partitions of the universe: ``conv id -> is train``.
SPLITS: dict[str, Callable[[str], bool]] = {
    "halves": lambda c: _line(c) < (1156 if c.startswith("hh") else 22),
    "odd_even": lambda c: _line(c) % 2 == 1,
    "thirds": lambda c: _line(c) % 3 != 0,
}


def load_universe_pairs() -> pa.Table:
    """Pairs of every real sample row, with a ``conv`` column (``hh:<line>`` / ``pku:<line>``)."""
    tables = []
    for source in all_files():
        root = SAMPLE / ("hh-rlhf" if source.dataset == "hh-rlhf" else "PKU-SafeRLHF")
        offsets = _HH_OFFSET if source.dataset == "hh-rlhf" else _PKU_OFFSET
        if source.relpath not in offsets:
            continue
        ok, _ = split_verdicts(ingest_file(source, str(root)).table)
        pairs = pairs_from(ok)
        prefix = "hh" if source.dataset == "hh-rlhf" else "pku"
        lines = pc.add(pairs["source_line"].cast(pa.int64()), offsets[source.relpath])
        conv = pc.binary_join_element_wise(prefix, lines.cast(pa.string()), ":")
        tables.append(pairs.append_column("conv", conv))
    return with_pair_ids(pa.concat_tables(tables).combine_chunks())


@dataclass
class Truth:
    """The labels, as conversation-pair and text-pair sets."""

    leak: set[frozenset[str]] = field(default_factory=set)
    near_true: set[frozenset[str]] = field(default_factory=set)
    near_labelled: set[frozenset[str]] = field(default_factory=set)
    positives: dict[str, set[frozenset[str]]] = field(default_factory=lambda: defaultdict(set))


def _read(name: str) -> list[dict]:
    with (LABELS / f"{name}.jsonl").open() as fh:
        return [json.loads(line) for line in fh]


def _turn_index(pairs: pa.Table) -> dict[str, list[tuple[str, bool]]]:
    """normalized human turn -> [(conv, is_opening)]."""
    index: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    seen = set()
    for conv, turns in zip(
        pairs["conv"].to_pylist(), pairs["prompt_turns"].to_pylist(), strict=True
    ):
        if conv in seen:
            continue
        seen.add(conv)
        human = [t["text"] for t in turns if t["role"] == "human"]
        for k, text in enumerate(human):
            index[normalize_text(text)].append((conv, k == 0))
    return index


def load_truth(pairs: pa.Table) -> Truth:
    """Read ``bench/labels`` into a :class:`Truth` over the conversations of ``pairs``."""
    truth = Truth()
    for rec in _read("exact"):
        pair = frozenset((rec["a_conv"], rec["b_conv"]))
        if rec["label"]:
            truth.leak.add(pair)
            truth.positives["exact"].add(pair)
    for rec in _read("ngram"):
        pair = frozenset((rec["a_conv"], rec["b_conv"]))
        if rec["label"]:
            truth.leak.add(pair)
            truth.positives["ngram"].add(pair)
    index = _turn_index(pairs)
    for rec in _read("turn"):
        if not rec["label"]:
            continue
        where = index[normalize_text(rec["turn_text"])]
        for i, (a, a_open) in enumerate(where):
            for b, b_open in where[i + 1 :]:
                if a != b:
                    truth.leak.add(frozenset((a, b)))
                    if not (a_open and b_open):
                        truth.positives["turn"].add(frozenset((a, b)))
    for rec in _read("near"):
        texts = frozenset((normalize_text(rec["a_text"]), normalize_text(rec["b_text"])))
        truth.near_labelled.add(texts)
        if rec["label"]:
            truth.near_true.add(texts)
    return truth


def _share_ngram(pairs: pa.Table, candidates: set[frozenset[str]], n: int) -> set[frozenset[str]]:
    """The conversation pairs of ``candidates`` whose whole prompts share a word ``n``-gram: the
    scope of the n-gram family (pairs that share less are found by the other families)."""
    whole = {}
    for conv, prompt in zip(pairs["conv"].to_pylist(), pairs["prompt"].to_pylist(), strict=True):
        words = normalize_text(prompt).split()
        whole[conv] = {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
    return {
        p
        for p in candidates
        if all(c in whole for c in p) and set.intersection(*(whole[c] for c in p))
    }


def _near_positive_convs(pairs: pa.Table, truth: Truth) -> set[frozenset[str]]:
    """Conversation pairs holding a labelled-true near-duplicate text pair (any units)."""
    units: dict[str, set[str]] = defaultdict(set)
    for conv, prompt, turns in zip(
        pairs["conv"].to_pylist(),
        pairs["prompt"].to_pylist(),
        pairs["prompt_turns"].to_pylist(),
        strict=True,
    ):
        units[normalize_text(prompt)].add(conv)
        for t in turns:
            if t["role"] == "human":
                units[normalize_text(t["text"])].add(conv)
    out = set()
    for texts in truth.near_true:
        a, b = tuple(texts)
        for ca in units.get(a, ()):
            for cb in units.get(b, ()):
                if ca != cb:
                    out.add(frozenset((ca, cb)))
    return out


@dataclass
class FamilyScore:
    links: int = 0
    right: int = 0
    positives: int = 0
    found: int = 0
    wrong_examples: list[str] = field(default_factory=list)
    missed_examples: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.right / self.links if self.links else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.positives if self.positives else 1.0


def _family_matches(units: decontam.Units, config: DecontamConfig) -> dict[str, pl.DataFrame]:
    empty = pl.DataFrame(schema={"row": pl.Int64, "key": pl.Int64})
    ngram = decontam.ngram_matches(units, config)
    near = decontam.near_matches(units, config)
    return {
        "exact": decontam.exact_matches(units),
        "turn": decontam.turn_matches(units, config),
        "ngram": empty if ngram is None else ngram,
        "near": empty if near is None else near,
    }


def evaluate_split(
    pairs: pa.Table, truth: Truth, is_train: Callable[[str], bool], config: DecontamConfig
) -> dict[str, FamilyScore]:
    """Score every matcher family on one train/test partition of ``pairs``."""
    convs = pairs["conv"].to_pylist()
    table = _assign_split(pairs, is_train)
    units = collect_units(table, config)
    assert units is not None
    sorted_conv = np.asarray(
        table["conv"].take(pa.array(units.order, pa.int64())).to_pylist(), object
    )
    texts = units.words.texts
    near_pos = _near_positive_convs(table, truth)
    scope = {
        "exact": truth.positives["exact"],
        "turn": truth.positives["turn"],
        "ngram": _share_ngram(table, truth.positives["ngram"], config.ngram_n),
        "near": near_pos,
        "any": truth.leak | near_pos,
    }
    leak = truth.leak | near_pos
    families = _family_matches(units, config)
    families["any"] = pl.concat([f.select("row", "key") for f in families.values()])
    scores = {}
    for family, found in families.items():
        score = FamilyScore()
        links: dict[str, set[str]] = defaultdict(set)
        right_train: set[str] = set()
        if found.height:
            if family == "near":
                p_text = texts.take(pa.array(found["probe_tid"].to_numpy())).to_pylist()
                r_text = texts.take(pa.array(found["ref_tid"].to_numpy())).to_pylist()
            for i, (row, key) in enumerate(
                zip(found["row"].to_list(), found["key"].to_list(), strict=True)
            ):
                a, b = sorted_conv[row], sorted_conv[key]
                if b in links[a]:
                    continue
                links[a].add(b)
                score.links += 1
                if family == "near":
                    pair_texts = frozenset((p_text[i], r_text[i]))
                    ok = pair_texts in truth.near_true
                    label = (
                        "unlabelled" if pair_texts not in truth.near_labelled else "labelled false"
                    )
                    detail = f"{p_text[i][:80]!r} ~ {r_text[i][:80]!r} ({label})"
                else:
                    ok = frozenset((a, b)) in leak
                    detail = f"{a} -> {b}"
                if ok:
                    score.right += 1
                    right_train.add(a)
                elif len(score.wrong_examples) < 10:
                    score.wrong_examples.append(detail)
        family_pos = scope[family]
        pos_train = set()
        present = set(convs)
        for pair in family_pos:
            a, b = tuple(pair)
            for x, y in ((a, b), (b, a)):
                if is_train(x) and not is_train(y) and x in present and y in present:
                    pos_train.add(x)
        score.positives = len(pos_train)
        score.found = len(pos_train & right_train)
        score.missed_examples = sorted(pos_train - right_train)[:10]
        scores[family] = score
    return scores


def evaluate(
    config: DecontamConfig | None = None, pairs: pa.Table | None = None
) -> dict[str, dict[str, FamilyScore]]:
    """Score every family on every split of :data:`SPLITS` (default: ``DecontamConfig()``;
    ``pairs``: the universe, when the caller has loaded it already)."""
    config = config or DecontamConfig()
    pairs = load_universe_pairs() if pairs is None else pairs
    truth = load_truth(pairs)
    return {name: evaluate_split(pairs, truth, rule, config) for name, rule in SPLITS.items()}


def format_report(results: dict[str, dict[str, FamilyScore]]) -> str:
    """A markdown confusion table: one row per split and family."""
    lines = [
        "| split | family | links | right | wrong | precision | positives | found | missed | recall |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for split, families in results.items():
        for family, s in families.items():
            lines.append(
                f"| {split} | {family} | {s.links} | {s.right} | {s.links - s.right} | "
                f"{s.precision:.3f} | {s.positives} | {s.found} | {s.positives - s.found} | "
                f"{s.recall:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    results = evaluate()
    print(format_report(results))
    for split, families in results.items():
        for family, s in families.items():
            for ex in s.wrong_examples:
                print(f"wrong {split}/{family}: {ex}")
            for ex in s.missed_examples:
                print(f"missed {split}/{family}: {ex}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    split: {f: s.__dict__ for f, s in fams.items()}
                    for split, fams in results.items()
                },
                indent=1,
            )
        )


def score_removals(
    pairs: pa.Table, truth: Truth, removed: pa.Table
) -> dict[str, dict[str, int | float]]:
    """Per removal reason: how many train conversations it removed, how many of them are a
    labelled leak of the matched conversation (the decisions of any version of
    :func:`curation.match.decontam.decontaminate`, e.g. before and after a change)."""
    conv = dict(zip(pairs["pair_id"].to_pylist(), pairs["conv"].to_pylist(), strict=True))
    leak = truth.leak | _near_positive_convs(pairs, truth)
    seen: set[tuple[str, str]] = set()
    out: dict[str, dict[str, int | float]] = {}
    for pid, mid, reason in zip(
        removed["pair_id"].to_pylist(),
        removed["matched_pair_id"].to_pylist(),
        removed["reason"].to_pylist(),
        strict=True,
    ):
        link = (conv[pid], conv.get(mid, "?"))
        if link in seen:
            continue  # the two pairs of a PKU row are one decision
        seen.add(link)
        row = out.setdefault(reason, {"removed": 0, "right": 0})
        row["removed"] += 1
        row["right"] += int(frozenset(link) in leak)
    for row in out.values():
        row["precision"] = row["right"] / row["removed"]
    return out


def _assign_split(pairs: pa.Table, is_train: Callable[[str], bool]) -> pa.Table:
    column = pa.array(["train" if is_train(c) else "test" for c in pairs["conv"].to_pylist()])
    return pairs.set_column(pairs.schema.get_field_index("split"), "split", column)


def with_split(pairs: pa.Table, split: str) -> pa.Table:
    """``pairs`` with the split column of partition ``split`` of :data:`SPLITS`."""
    return _assign_split(pairs, SPLITS[split])


if __name__ == "__main__":
    main()
