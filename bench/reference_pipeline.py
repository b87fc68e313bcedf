"""A hand-written reference curation pipeline: what a competent user writes with pandas + datasketch.

``python -m bench.reference_pipeline --corpus DIR --out OUTDIR [--result result.json]``

The baseline for ``python -m bench.run_pipeline --compare``. It reads the same upstream-layout
mirror (:mod:`bench.synth`, or real mirrors) and writes curated pairs as parquet, in six timed
stages:

``read``
    ``pandas.read_json(lines=True)`` per preference file (gzip from the extension), ``json.load``
    of the gzipped red-team array.
``normalize``
    Pairs: HH prompt = transcript before the last ``"\\n\\nAssistant:"`` (``str.rfind`` per
    row), responses = the text after it minus one leading space; PKU rows give a ``helpful``
    pair (``better_response_id``) and a ``harmless`` pair (``safer_response_id``). Matching
    keys: NFKC + lowercase + whitespace collapsed, per row with ``Series.apply``.
``exact_dedup``
    ``drop_duplicates`` on normalized ``(prompt, chosen, rejected)`` within each
    ``(split, dimension)``.
``near_dedup``
    datasketch ``MinHash`` (128 permutations, ``MinHash.bulk``) of the word 5-gram shingles of
    each distinct normalized prompt (texts under 5 words: the whole text), ``MinHashLSH`` at
    threshold 0.8 per ``(split, dimension)``; a pair whose prompt is a near-duplicate of an
    earlier kept prompt is removed (prompt-level near-dup).
``decontam``
    A Python ``set`` of word 13-gram tuples of every normalized test prompt (both datasets);
    a train pair is removed when its whole normalized prompt has one of them (prompts under 13
    words: when it equals a test prompt).
``write``
    ``DataFrame.to_parquet`` of the kept pairs per split, the removed pairs and the red-team
    rows.

What it does **not** do, and the pipeline does: per-row parse/label rules with quarantine and
reason codes, GX suites, PKU sha256 checks, turn parsing, pair ids, response-aware near-dup,
conflicting (swapped) duplicates, per-turn and near-duplicate decontamination, manifests with
file sha256s, the dataset card, Dagster's event log and stage tables.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import unicodedata
from pathlib import Path

_T0 = time.time()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from datasketch import MinHash, MinHashLSH  # noqa: E402

from bench.run_pipeline import Sampler, Stages, cpu_s, process_start_epoch, rss_mb  # noqa: E402

HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
PKU_CONFIGS = ("Alpaca-7B", "Alpaca2-7B", "Alpaca3-8B")
SPLITS = ("train", "test")
ASSISTANT = "\n\nAssistant:"
NUM_PERM = 128
THRESHOLD = 0.8
SHINGLE = 5
NGRAM = 13


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


def read(corpus: Path) -> tuple[list[pd.DataFrame], list[pd.DataFrame], pd.DataFrame]:
    hh, pku = [], []
    for subset in HH_SUBSETS:
        for split in SPLITS:
            path = corpus / "hh-rlhf" / subset / f"{split}.jsonl.gz"
            if path.exists():
                df = pd.read_json(path, lines=True)
                df["subset"], df["split"] = subset, split
                hh.append(df)
    for config in PKU_CONFIGS:
        for split in SPLITS:
            path = corpus / "PKU-SafeRLHF" / "data" / config / f"{split}.jsonl"
            if path.exists():
                df = pd.read_json(path, lines=True)
                df["subset"], df["split"] = config, split
                pku.append(df)
    red_team_path = corpus / "hh-rlhf" / "red-team-attempts" / "red_team_attempts.jsonl.gz"
    with gzip.open(red_team_path, "rt", encoding="utf-8") as handle:
        red_team = pd.DataFrame(json.load(handle))
    return hh, pku, red_team


def _split_transcript(text: str) -> tuple[str, str]:
    """(prompt, response): before / after the last Assistant marker (one leading space off)."""
    i = text.rfind(ASSISTANT)
    if i < 0:
        return text, ""
    response = text[i + len(ASSISTANT) :]
    return text[:i], response[1:] if response.startswith(" ") else response


def normalize_text(text: str) -> str:
    """NFKC, lowercase, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def normalize(hh: list[pd.DataFrame], pku: list[pd.DataFrame]) -> pd.DataFrame:
    parts = []
    for df in hh:
        chosen = df["chosen"].apply(_split_transcript)
        rejected = df["rejected"].apply(_split_transcript)
        parts.append(
            pd.DataFrame(
                {
                    "dataset": "hh-rlhf",
                    "subset": df["subset"],
                    "split": df["split"],
                    "dimension": "harmless"
                    if df["subset"].iat[0] == "harmless-base"
                    else "helpful",
                    "prompt": chosen.str[0],
                    "chosen": chosen.str[1],
                    "rejected": rejected.str[1],
                }
            )
        )
    for df in pku:
        for dimension, column in (
            ("helpful", "better_response_id"),
            ("harmless", "safer_response_id"),
        ):
            first = df[column].to_numpy() == 0
            parts.append(
                pd.DataFrame(
                    {
                        "dataset": "pku-saferlhf",
                        "subset": df["subset"],
                        "split": df["split"],
                        "dimension": dimension,
                        "prompt": df["prompt"],
                        "chosen": np.where(first, df["response_0"], df["response_1"]),
                        "rejected": np.where(first, df["response_1"], df["response_0"]),
                    }
                )
            )
    pairs = pd.concat(parts, ignore_index=True)
    for column in ("prompt", "chosen", "rejected"):
        pairs[f"{column}_norm"] = pairs[column].apply(normalize_text)
    return pairs


def exact_dedup(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    keys = ["split", "dimension", "prompt_norm", "chosen_norm", "rejected_norm"]
    kept = pairs.drop_duplicates(subset=keys)
    removed = pairs.loc[pairs.index.difference(kept.index)].assign(reason="exact_duplicate")
    return kept, removed


def _shingles(text: str) -> list[bytes]:
    words = text.split()
    if len(words) < SHINGLE:
        return [text.encode()]
    return [" ".join(words[i : i + SHINGLE]).encode() for i in range(len(words) - SHINGLE + 1)]


def near_dedup(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    prompts = pairs["prompt_norm"].unique()
    hashes = MinHash.bulk([_shingles(p) for p in prompts], num_perm=NUM_PERM)
    minhash = dict(zip(prompts, hashes, strict=True))
    drop = []
    for _, scope in pairs.groupby(["split", "dimension"], sort=False):
        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
        kept_prompts = set()
        for index, prompt in zip(scope.index, scope["prompt_norm"], strict=True):
            if prompt in kept_prompts:  # same prompt, other responses: not a near-duplicate
                continue
            m = minhash[prompt]
            if lsh.query(m):
                drop.append(index)
            else:
                lsh.insert(prompt, m)
                kept_prompts.add(prompt)
    removed = pairs.loc[drop].assign(reason="near_duplicate")
    return pairs.drop(index=drop), removed


def _ngrams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def decontaminate(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    test_prompts = set(pairs.loc[pairs["split"] == "test", "prompt_norm"])
    grams: set[tuple[str, ...]] = set()
    for prompt in test_prompts:
        grams |= _ngrams(prompt.split())

    def contaminated(prompt: str) -> bool:
        words = prompt.split()
        if len(words) < NGRAM:
            return prompt in test_prompts
        return any(tuple(words[i : i + NGRAM]) in grams for i in range(len(words) - NGRAM + 1))

    train = pairs["split"] == "train"
    hit = pd.Series(False, index=pairs.index)
    hit[train] = pairs.loc[train, "prompt_norm"].apply(contaminated)
    return pairs[~hit], pairs[hit].assign(reason="contaminated")


def write(out: Path, kept: pd.DataFrame, removed: pd.DataFrame, red_team: pd.DataFrame) -> None:
    out.mkdir(parents=True, exist_ok=True)
    columns = ["dataset", "subset", "split", "dimension", "prompt", "chosen", "rejected"]
    for split, part in kept.groupby("split"):
        part[columns].to_parquet(out / f"pairs_{split}.parquet", index=False)
    removed[[*columns, "reason"]].to_parquet(out / "removed.parquet", index=False)
    red_team.to_parquet(out / "red_team.parquet", index=False)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def run(corpus: Path, out: Path) -> dict:
    """Run every stage; counts plus wall/CPU/peak RSS per stage and in total."""
    t0 = process_start_epoch() or _T0
    sampler = Sampler().start()
    start = time.time()
    stages = Stages(sampler)
    hh, pku, red_team = stages.run("read", read, corpus)
    rows_read = sum(len(d) for d in hh) + sum(len(d) for d in pku) + len(red_team)
    pairs = stages.run("normalize", normalize, hh, pku)
    del hh, pku
    n_pairs = len(pairs)
    pairs, removed_exact = stages.run("exact_dedup", exact_dedup, pairs)
    pairs, removed_near = stages.run("near_dedup", near_dedup, pairs)
    pairs, removed_contam = stages.run("decontam", decontaminate, pairs)
    removed = pd.concat([removed_exact, removed_near, removed_contam])
    stages.run("write", write, out, pairs, removed, red_team)
    end = time.time()
    sampler.stop()
    return {
        "corpus": str(corpus),
        "rows_read": rows_read,
        "pairs": n_pairs,
        "kept": len(pairs),
        "removed": removed["reason"].value_counts().to_dict(),
        "red_team_rows": len(red_team),
        "stages": stages.report(),
        "startup_s": start - t0,
        "work_s": end - start,
        "wall_s": time.time() - t0,
        "cpu_s": cpu_s(),
        "peak_rss_mb": rss_mb(),
        "sampled_peak_rss_mb": max(s[2] for s in sampler.samples) / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="mirror root (hh-rlhf/, PKU-SafeRLHF/)")
    parser.add_argument("--out", required=True, help="output folder for the parquet files")
    parser.add_argument("--result", help="write the measurements as JSON here")
    args = parser.parse_args(argv)
    result = run(Path(args.corpus), Path(args.out))
    text = json.dumps(result, indent=1)
    if args.result:
        Path(args.result).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
