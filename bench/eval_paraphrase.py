"""The paraphrase report on the labelled REAL rows: candidates to label, precision and recall.

``python -m bench.eval_paraphrase candidates --out FILE`` lists the candidate text pairs;
``python -m bench.eval_paraphrase [--out results.json]`` scores thresholds against the labels
(also run by ``tests/test_paraphrase.py``).

The universe is the one of :mod:`bench.eval_real` (every real prompt in ``sample_data``: the
2,312 HH-RLHF ``harmless-base`` test conversations and the 45 PKU-SafeRLHF Alpaca-7B rows), with
its three train/test partitions and the sample's own (:data:`SPLITS`). **Candidates**: on each partition, every informative train
opening and its nearest informative test openings by
:func:`curation.match.decontam.paraphrase_matches` at the loose :data:`CANDIDATE_THRESHOLD`; the
union over the partitions, one item per *text pair* (normalized texts; equal texts are the
rules' business and never candidates). The first labelling round also searched later human
turns (items with ``a_unit`` / ``b_unit`` = ``later``): they are kept in the file, as the
evidence for searching openings only (``docs/dedup.md`` §6), and are outside the pool now. ``bench/labels/paraphrase.jsonl`` labels each one by
reading it (``bench/labels/GUIDE.md``) with a ``category``:

* ``paraphrase``: the same request in other words (``label`` true);
* ``sibling``: the same template with another slot ("the 5 bad words" / "all of the bad
  words", "rob a bank" / "rob a store");
* ``more_specific``: one asks more than the other ("poison someone slowly" / "poison someone",
  "sneak into a theater" / "sneak snacks into a theater");
* ``generic``: content-free on one side at least ("not sure how thats racist");
* ``different``: related topic, another request ("do you like abortion" / "should abortion be
  legal").

For a threshold and a partition, a **link** is a distinct text pair the search reports
(``paraphrase_matches`` on every train pair, no rule match skipped); it is right when labelled a
paraphrase. **Recall**: of the labelled paraphrases that are candidates on that partition, the
share the threshold reports. Recall is therefore relative to the candidate pool: a paraphrase
whose embeddings are below :data:`CANDIDATE_THRESHOLD` is not in it (``docs/dedup.md`` §6).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.eval_real import LABELS, FamilyScore, _assign_split, _line, load_universe_pairs
from bench.eval_real import SPLITS as RULE_SPLITS
from curation.match import decontam
from curation.match.decontam import DecontamConfig, collect_units

#: The loosest threshold candidates are generated with.
CANDIDATE_THRESHOLD = 0.8
#: The partitions: those of :mod:`bench.eval_real`, plus the bundled sample's own split (test =
#: HH lines 0-799 and PKU lines 0-14 of the real files), the one the pipeline tests publish.
SPLITS = {
    **RULE_SPLITS,
    "sample": lambda c: _line(c) >= (800 if c.startswith("hh") else 15),
}
#: The thresholds scored.
THRESHOLDS = (0.8, 0.85, 0.875, 0.9, 0.925, 0.95)


def _pair_id(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"paraphrase|{first}|{second}"


def split_links(pairs: pa.Table, split: str, threshold: float) -> dict[str, dict]:
    """Text pairs ``paraphrase_matches`` reports on partition ``split`` at ``threshold``:
    ``id -> {score, a_text, b_text, a_conv, b_conv}`` (a = the train opening)."""
    table = _assign_split(pairs, SPLITS[split])
    config = DecontamConfig(paraphrase_threshold=threshold)
    units = collect_units(table, config)
    assert units is not None
    found = decontam.paraphrase_matches(units, config)
    if found is None:
        return {}
    conv = np.asarray(table["conv"].take(pa.array(units.order, pa.int64())).to_pylist(), object)
    texts = units.words.texts
    probe = texts.take(found["probe_tid"].to_numpy()).to_pylist()
    ref = texts.take(found["ref_tid"].to_numpy()).to_pylist()
    links: dict[str, dict] = {}
    for i, (row, key, score) in enumerate(
        zip(found["row"].to_list(), found["key"].to_list(), found["score"].to_list(), strict=True)
    ):
        item = _pair_id(probe[i], ref[i])
        if item in links and links[item]["score"] >= score:
            continue
        links[item] = {
            "score": round(float(score), 4),
            "a_text": probe[i],
            "b_text": ref[i],
            "a_conv": conv[row],
            "b_conv": conv[key],
        }
    return links


def candidates(pairs: pa.Table | None = None) -> list[dict]:
    """Every candidate text pair of the three partitions (highest score first)."""
    pairs = load_universe_pairs() if pairs is None else pairs
    merged: dict[str, dict] = {}
    for split in SPLITS:
        for item, link in split_links(pairs, split, CANDIDATE_THRESHOLD).items():
            if item not in merged or merged[item]["score"] < link["score"]:
                merged[item] = {"id": item, **link}
    return sorted(merged.values(), key=lambda r: (-r["score"], r["id"]))


def load_labels() -> dict[str, dict]:
    """``bench/labels/paraphrase.jsonl`` by id."""
    with (LABELS / "paraphrase.jsonl").open() as fh:
        return {rec["id"]: rec for rec in map(json.loads, fh)}


@dataclass
class Score(FamilyScore):
    """:class:`bench.eval_real.FamilyScore` (links, right, positives, found; precision and
    recall) with the wrong links counted per label category."""

    wrong: dict[str, int] = field(default_factory=dict)


def evaluate(
    thresholds: tuple[float, ...] = THRESHOLDS, pairs: pa.Table | None = None
) -> dict[str, dict[float, Score]]:
    """``split -> threshold -> Score`` against the labels. An unlabelled link counts as wrong
    (category ``unlabelled``)."""
    pairs = load_universe_pairs() if pairs is None else pairs
    labels = load_labels()
    out: dict[str, dict[float, Score]] = {}
    for split in SPLITS:
        pool = split_links(pairs, split, CANDIDATE_THRESHOLD)
        positives = {i for i in pool if labels.get(i, {}).get("label")}
        out[split] = {}
        for threshold in thresholds:
            links = {i for i, link in pool.items() if link["score"] >= threshold}
            score = Score(links=len(links), positives=len(positives))
            for item in sorted(links):
                category = labels.get(item, {}).get("category", "unlabelled")
                if category == "paraphrase":
                    score.right += 1
                else:
                    score.wrong[category] = score.wrong.get(category, 0) + 1
            score.found = len(positives & links)
            score.missed_examples = sorted(positives - links)[:5]
            out[split][threshold] = score
    return out


def format_report(results: dict[str, dict[float, Score]]) -> str:
    """A markdown table: one row per partition and threshold."""
    lines = [
        "| split | threshold | links | paraphrase | other (by category) | precision | "
        "labelled paraphrases | found | recall |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for split, by_threshold in results.items():
        for threshold, s in by_threshold.items():
            other = ", ".join(f"{k} {v}" for k, v in sorted(s.wrong.items())) or "-"
            lines.append(
                f"| {split} | {threshold:g} | {s.links} | {s.right} | {other} | "
                f"{s.precision:.2f} | {s.positives} | {s.found} | {s.recall:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", nargs="?", default="evaluate", choices=["evaluate", "candidates"]
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "candidates":
        rows = candidates()
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if args.out:
            args.out.write_text(text)
        print(f"{len(rows)} candidates" if args.out else text, end="\n" if args.out else "")
        return
    results = evaluate()
    print(format_report(results))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    split: {
                        str(t): {"precision": s.precision, "recall": s.recall, **s.__dict__}
                        for t, s in by.items()
                    }
                    for split, by in results.items()
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
