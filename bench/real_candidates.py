"""Candidate text pairs for the labelled real-data evaluation of the matchers.

``python -m bench.real_candidates --shared ../shared/data --out bench/labels/candidates.jsonl``

The *universe* is every real prompt we have: the 2,312 conversations of HH-RLHF
``harmless-base/test.jsonl.gz`` (the prompt of the ``chosen`` transcript) and the 45 PKU-SafeRLHF
``Alpaca-7B`` rows. A train/test split is a partition of the universe, so the candidates are
generated once over all conversation pairs, with **looser** thresholds than the matchers use, and
labelled once; ``tests/test_matching_real.py`` then evaluates the matchers on several splits.

Units of a conversation: ``whole`` (its normalized prompt: every turn, with the role words) and
``turnK`` (its K-th human turn, normalized). Families, each a superset of what a matcher can
report:

``exact``  equal whole prompts, or equal first human turns.
``turn``   equal human turns other than first-vs-first (any length, any frequency).
``ngram``  whole prompts sharing a word 8-gram (the matcher uses 13), not equal as wholes.
           N-grams found in more than ``NGRAM_DF_CAP`` conversations are left out here: they
           are assistant boilerplate and template prefixes, and a matcher reporting a pair
           that is not a candidate fails the evaluation anyway.
``near``   two different units (whole-whole or turn-turn) with word-unigram Jaccard >= 0.5,
           character 4-gram Jaccard >= 0.5, or the same word count (>= 4) and <= 3 differing
           word positions.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
from collections import defaultdict
from pathlib import Path

import orjson
import pyarrow as pa
from datasketch import MinHash, MinHashLSH

from curation.core.textnorm import normalize_text
from curation.datasets.hh_format import parse_transcripts

NGRAM_N = 8
NGRAM_DF_CAP = 25
NEAR_JACCARD = 0.5
NEAR_SUBSTITUTIONS = 3


def load_universe(shared: Path) -> list[dict]:
    """Every real conversation: ``{conv, dataset, line, prompt, turns}`` (turns = human texts)."""
    out = []
    hh_file = shared / "hh-rlhf/harmless-base/test.jsonl.gz"
    with gzip.open(hh_file) as fh:
        rows = [orjson.loads(line) for line in fh.read().splitlines()]
    parsed = parse_transcripts(pa.array([r["chosen"] for r in rows], pa.large_string()))
    for i, rec in enumerate(parsed.iter_rows(named=True)):
        turns = rec["prompt_turns"] or rec["turns"] or []
        out.append(
            {
                "conv": f"hh:{i}",
                "dataset": "hh-rlhf",
                "line": i,
                "prompt": rec["prompt"] if rec["prompt"] is not None else rows[i]["chosen"],
                "turns": [t["text"] for t in turns if t["role"] == "human"],
            }
        )
    pku_file = shared / "PKU-SafeRLHF/data/Alpaca-7B/test.sample.jsonl"
    for i, line in enumerate(pku_file.read_bytes().splitlines()):
        prompt = orjson.loads(line)["prompt"]
        out.append(
            {
                "conv": f"pku:{i}",
                "dataset": "pku-saferlhf",
                "line": i,
                "prompt": prompt,
                "turns": [prompt],
            }
        )
    return out


def units(universe: list[dict]) -> list[dict]:
    """Every unit (whole prompt, each human turn) with its normalized text."""
    out = []
    for c in universe:
        whole = normalize_text(c["prompt"])
        out.append({"conv": c["conv"], "unit": "whole", "text": c["prompt"], "norm": whole})
        if c["dataset"] == "hh-rlhf":
            for k, t in enumerate(c["turns"]):
                out.append(
                    {"conv": c["conv"], "unit": f"turn{k}", "text": t, "norm": normalize_text(t)}
                )
    return out


def _record(family: str, a: dict, b: dict, **features) -> dict:
    if (a["conv"], a["unit"]) > (b["conv"], b["unit"]):
        a, b = b, a
    key = f"{family}|{a['conv']}|{a['unit']}|{b['conv']}|{b['unit']}"
    return {
        "id": key,
        "family": family,
        "a_conv": a["conv"],
        "a_unit": a["unit"],
        "b_conv": b["conv"],
        "b_unit": b["unit"],
        "a_text": a["text"],
        "b_text": b["text"],
        **features,
    }


def exact_and_turn(us: list[dict]) -> list[dict]:
    by_norm: dict[str, list[dict]] = defaultdict(list)
    for u in us:
        if u["norm"]:
            by_norm[(u["unit"] == "whole", u["norm"])].append(u)
    out = []
    for (is_whole, norm), group in by_norm.items():
        df = len({u["conv"] for u in group})
        for a, b in itertools.combinations(group, 2):
            if a["conv"] == b["conv"]:
                continue
            first = a["unit"] == b["unit"] == "turn0"
            # a PKU whole is also its only turn: first-vs-first for the turn index
            family = "exact" if is_whole or first else "turn"
            out.append(_record(family, a, b, words=len(norm.split()), df=df))
    return out


def ngram(us: list[dict]) -> list[dict]:
    wholes = [u for u in us if u["unit"] == "whole"]
    grams: dict[tuple, set[int]] = defaultdict(set)
    for i, u in enumerate(wholes):
        w = u["norm"].split()
        for j in range(len(w) - NGRAM_N + 1):
            grams[tuple(w[j : j + NGRAM_N])].add(i)
    shared: dict[tuple[int, int], int] = defaultdict(int)
    for owners in grams.values():
        if 1 < len(owners) <= NGRAM_DF_CAP:
            for a, b in itertools.combinations(sorted(owners), 2):
                shared[(a, b)] += 1
    out = []
    for (a, b), count in shared.items():
        ua, ub = wholes[a], wholes[b]
        if ua["conv"] == ub["conv"] or ua["norm"] == ub["norm"]:
            continue
        out.append(_record("ngram", ua, ub, shared_8grams=count))
    return out


def _chars(text: str, k: int = 4) -> set[str]:
    t = f" {text} "
    return {t[i : i + k] for i in range(max(1, len(t) - k + 1))}


def _lsh_pairs(sets: list[set[str]], seed: int) -> set[tuple[int, int]]:
    """Pairs ``(j, i)`` of non-empty sets whose MinHash LSH (J >= 0.4) buckets meet."""
    pairs: set[tuple[int, int]] = set()
    lsh = MinHashLSH(threshold=0.4, num_perm=128)
    for i, s in enumerate(sets):
        if not s:
            continue
        m = MinHash(num_perm=128, seed=seed)
        m.update_batch([x.encode() for x in s])
        pairs.update((j, i) for j in lsh.query(m))
        lsh.insert(i, m)
    return pairs


def near(us: list[dict]) -> list[dict]:
    sets = [_chars(u["norm"]) if u["norm"] else set() for u in us]
    words = [u["norm"].split() for u in us]
    wsets = [set(w) for w in words]
    cand = _lsh_pairs(sets, seed=1) | _lsh_pairs(wsets, seed=2)
    by_len: dict[tuple[bool, int], list[int]] = defaultdict(list)
    for i, w in enumerate(words):
        if len(w) >= 4:
            by_len[(us[i]["unit"] == "whole", len(w))].append(i)
    for ids in by_len.values():
        for a, b in itertools.combinations(ids, 2):
            if sum(x != y for x, y in zip(words[a], words[b], strict=True)) <= NEAR_SUBSTITUTIONS:
                cand.add((a, b))
    out = []
    for a, b in cand:
        ua, ub = us[a], us[b]
        if ua["conv"] == ub["conv"] or ua["norm"] == ub["norm"]:
            continue
        if (ua["unit"] == "whole") != (ub["unit"] == "whole"):
            continue
        cj = len(sets[a] & sets[b]) / len(sets[a] | sets[b])
        wj = len(wsets[a] & wsets[b]) / max(1, len(wsets[a] | wsets[b]))
        subs = (
            sum(x != y for x, y in zip(words[a], words[b], strict=True))
            if len(words[a]) == len(words[b])
            else None
        )
        if (
            cj >= NEAR_JACCARD
            or wj >= NEAR_JACCARD
            or (subs is not None and subs <= NEAR_SUBSTITUTIONS and len(words[a]) >= 4)
        ):
            out.append(
                _record(
                    "near",
                    ua,
                    ub,
                    char4_jaccard=round(cj, 3),
                    word_jaccard=round(wj, 3),
                    substitutions=subs,
                )
            )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("bench/labels/candidates.jsonl"))
    args = ap.parse_args(argv)
    us = units(load_universe(args.shared))
    recs = exact_and_turn(us) + ngram(us) + near(us)
    recs.sort(key=lambda r: r["id"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as fh:
        for r in recs:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = defaultdict(int)
    for r in recs:
        counts[r["family"]] += 1
    print(dict(counts), "units", len(us))


if __name__ == "__main__":
    main()
