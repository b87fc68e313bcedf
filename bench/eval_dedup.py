"""Precision and recall of dedup and decontamination on a synthetic corpus with planted ground truth.

``python -m bench.eval_dedup --corpus DIR [--out results.json] [--prompt-dedup]`` runs the
library stages directly (no Dagster) on a mirror written by :mod:`bench.synth`:
``ingest_file`` on every upstream file, ``split_verdicts`` + ``pairs_from`` + ``with_pair_ids``,
:func:`curation.match.dedup.deduplicate` on all pairs, then :func:`curation.match.decontam.decontaminate` on
the dedup survivors (the pipeline's order), and scores the ``removed`` tables against
``DIR/ground_truth.jsonl``.

Scoring (the unit is a *pair*: dataset, source_file, source_line, dimension):

* **dedup kinds** — each ground-truth record links a planted pair P and its original O (same
  dimension). The survivor rule keeps the lowest ``pair_id``, so either copy may be removed (and
  for a swapped duplicate both are). A dedup removal (``exact_duplicate``,
  ``conflicting_duplicate``, ``near_duplicate``) is a *true positive* when the removed pair and
  its ``matched_*`` pair are P and O of the same record; any other dedup removal is a false
  positive. A planted record is *found* when P or O is removed as a true positive.
* **contamination kinds** — P is a train pair, O a test row. A decontamination removal
  (``contaminated_*``) is a true positive when the removed pair is a planted P and its
  ``matched_*`` row is that record's O; anything else is a false positive. A record is found
  when P is removed as a true positive.

Recall is reported per planted kind (with the reasons the found pairs were removed with, and the
share removed with the kind's ``expected_reason``), precision per removal reason. A kind is
*targeted* unless the configuration cannot find it by design: ``near_duplicate_new_responses``
(a near-duplicate prompt with different responses) is only a duplicate for
``DedupConfig(prompt_dedup=True)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import os
import platform
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa

from bench.synth import CONTAM_KINDS, DEDUP_KINDS, EXPECTED_REASON, HARD_NEGATIVE_KINDS
from curation.core.schema import PAIRS
from curation.ingest.ingest import ingest_file
from curation.ingest.sources import all_files
from curation.match.decontam import DecontamConfig, decontaminate
from curation.match.dedup import DedupConfig, deduplicate
from curation.normalize.normalize import pairs_from, split_verdicts, with_pair_ids

__all__ = ["TARGETS", "check_targets", "evaluate", "format_report", "load_pairs", "score"]

DEDUP_REASONS = ("exact_duplicate", "conflicting_duplicate", "near_duplicate")
CONTAM_REASONS = (
    "contaminated_exact",
    "contaminated_turn",
    "contaminated_ngram",
    "contaminated_near",
)

#: Minimum recall per kind (when targeted) and minimum precision per removal reason.
TARGETS = {
    "recall": {
        "exact_duplicate": 1.0,
        "cosmetic_duplicate": 1.0,
        "swapped_duplicate": 1.0,
        "near_duplicate_same_responses": 0.95,
        "near_duplicate_new_responses": 0.95,
        **{kind: 0.99 for kind in CONTAM_KINDS},
    },
    "precision": 0.99,
}

ROOTS = {"hh-rlhf": "hh-rlhf", "pku-saferlhf": "PKU-SafeRLHF"}


def _now() -> float:
    return time.perf_counter()


# --------------------------------------------------------------------------------------------
# Running the stages
# --------------------------------------------------------------------------------------------


def load_pairs(corpus: str | Path) -> tuple[pa.Table, dict[str, float], dict[str, int]]:
    """Ingest every upstream file of ``corpus`` and normalize: ``(pairs, seconds, counts)``."""
    corpus = Path(corpus)
    seconds = {"ingest": 0.0, "normalize": 0.0}
    counts = Counter()
    parts = []
    for source in all_files():
        start = _now()
        result = ingest_file(source, str(corpus / ROOTS[source.dataset]))
        seconds["ingest"] += _now() - start
        counts["rows_read"] += result.report.rows_read
        counts["rows_quarantined"] += result.report.rows_quarantined
        start = _now()
        good, _bad = split_verdicts(result.table)
        if source.kind != "hh_red_team":
            parts.append(pairs_from(good))
        seconds["normalize"] += _now() - start
        del result, good, _bad
    start = _now()
    pairs = with_pair_ids(pa.concat_tables([PAIRS.empty_table(), *parts]))
    seconds["normalize"] += _now() - start
    counts["pairs"] = pairs.num_rows
    return pairs, seconds, dict(counts)


def load_truth(corpus: str | Path) -> list[dict]:
    with open(Path(corpus) / "ground_truth.jsonl", "rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _pair_key(r: dict, prefix: str = "", dimension: str | None = None) -> tuple:
    return (
        r[f"{prefix}dataset"],
        r[f"{prefix}source_file"],
        r[f"{prefix}source_line"],
        dimension if dimension is not None else r["dimension"],
    )


def _row_key(r: dict, prefix: str = "") -> tuple:
    return (r[f"{prefix}dataset"], r[f"{prefix}source_file"], r[f"{prefix}source_line"])


def score(
    truth: list[dict],
    dedup_removed: pa.Table,
    decontam_removed: pa.Table,
    *,
    prompt_dedup: bool = False,
) -> dict:
    """Recall per planted kind and precision per removal reason (see the module docstring)."""
    record_of: dict[tuple, int] = {}  # dedup pair key (P or O) -> record index
    contam_of: dict[tuple, int] = {}  # contamination P pair key -> record index
    for i, t in enumerate(truth):
        if t["kind"] in DEDUP_KINDS:
            record_of[_pair_key(t)] = i
            record_of[_pair_key(t, "original_", t["dimension"])] = i
        else:
            contam_of[_pair_key(t)] = i

    found: dict[int, str] = {}  # record -> reason of the true-positive removal
    removed = Counter()
    true_pos = Counter()
    wrong_by_kind = Counter()
    false_pos: list[dict] = []
    for r in dedup_removed.to_pylist():
        removed[r["reason"]] += 1
        own = record_of.get(_pair_key(r))
        other = record_of.get(_pair_key(r, "matched_", r["dimension"]))
        if own is not None and own == other:
            true_pos[r["reason"]] += 1
            found.setdefault(own, r["reason"])
        else:
            false_pos.append(r)
            if own is not None:
                wrong_by_kind[truth[own]["kind"]] += 1
    for r in decontam_removed.to_pylist():
        removed[r["reason"]] += 1
        own = contam_of.get(_pair_key(r))
        if own is not None and _row_key(r, "matched_") == _row_key(truth[own], "original_"):
            true_pos[r["reason"]] += 1
            found.setdefault(own, r["reason"])
        else:
            false_pos.append(r)
            hit = own if own is not None else record_of.get(_pair_key(r))
            if hit is not None:
                wrong_by_kind[truth[hit]["kind"]] += 1

    kinds: dict[str, dict] = {}
    for kind in (*DEDUP_KINDS, *CONTAM_KINDS):
        records = [i for i, t in enumerate(truth) if t["kind"] == kind]
        reasons = Counter(found[i] for i in records if i in found)
        n_found = sum(reasons.values())
        targeted = kind != "near_duplicate_new_responses" or prompt_dedup
        kinds[kind] = {
            "stage": "dedup" if kind in DEDUP_KINDS else "decontam",
            "planted": len(records),
            "found": n_found,
            "recall": n_found / len(records) if records else None,
            "expected_reason": EXPECTED_REASON[kind],
            "as_expected": reasons.get(EXPECTED_REASON[kind], 0) / n_found if n_found else None,
            "reasons": dict(sorted(reasons.items())),
            "wrong_removals": wrong_by_kind.get(kind, 0),
            "targeted": targeted,
            "missed_records": [i for i in records if i not in found],
        }
    removed_keys = {
        _pair_key(r) for table in (dedup_removed, decontam_removed) for r in table.to_pylist()
    }
    for kind in HARD_NEGATIVE_KINDS:
        records = [t for t in truth if t["kind"] == kind]
        wrong = sum(_pair_key(t) in removed_keys for t in records)
        kinds[kind] = {
            "stage": "hard negative",
            "planted": len(records),
            "found": 0,
            "recall": None,
            "expected_reason": None,
            "as_expected": None,
            "reasons": {},
            "wrong_removals": wrong,
            "kept_rate": 1 - wrong / len(records) if records else None,
            "targeted": False,
            "missed_records": [],
        }
    reasons_out = {}
    for reason in (*DEDUP_REASONS, *CONTAM_REASONS):
        n = removed.get(reason, 0)
        reasons_out[reason] = {
            "removed": n,
            "true_positive": true_pos.get(reason, 0),
            "false_positive": n - true_pos.get(reason, 0),
            "precision": true_pos.get(reason, 0) / n if n else None,
        }
    return {"kinds": kinds, "reasons": reasons_out, "false_positives": false_pos}


def check_targets(result: dict) -> list[str]:
    """Human-readable target misses of a scored run (empty when every target is met)."""
    misses = []
    for kind, k in result["kinds"].items():
        goal = TARGETS["recall"].get(kind)
        if goal is None or not k["targeted"] or not k["planted"]:
            continue
        if k["recall"] < goal:
            misses.append(f"recall {kind} = {k['recall']:.4f} < {goal}")
    for kind, k in result["kinds"].items():
        if k.get("kept_rate") is not None and k["kept_rate"] < TARGETS["precision"]:
            misses.append(f"hard negatives {kind} kept = {k['kept_rate']:.4f}")
    for reason, r in result["reasons"].items():
        if r["removed"] and r["precision"] < TARGETS["precision"]:
            misses.append(f"precision {reason} = {r['precision']:.4f} < {TARGETS['precision']}")
    return misses


def _texts(pairs: pa.Table, keys: list[tuple]) -> dict[tuple, dict]:
    """prompt/chosen/rejected of the pairs with ``keys`` (dataset, source_file, line, dim)."""
    if not keys:
        return {}
    want = pl.DataFrame(
        {
            "dataset": [k[0] for k in keys],
            "source_file": [k[1] for k in keys],
            "source_line": [k[2] for k in keys],
            "dimension": [k[3] for k in keys],
        },
        schema={
            "dataset": pl.String,
            "source_file": pl.String,
            "source_line": pl.Int64,
            "dimension": pl.String,
        },
    )
    on = ["dataset", "source_file", "source_line", "dimension"]
    frame = pl.from_arrow(pairs.select(on))
    assert isinstance(frame, pl.DataFrame)
    index = frame.with_row_index("i").join(want.unique(), on=on)["i"].to_numpy()
    rows = pairs.take(pa.array(index, pa.int64())).select([*on, "prompt", "chosen", "rejected"])
    return {
        (r["dataset"], r["source_file"], r["source_line"], r["dimension"]): r
        for r in rows.to_pylist()
    }


def _short(text: str | None, limit: int = 240) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 3] + "..."


def examples(pairs: pa.Table, truth: list[dict], result: dict, per_kind: int = 3) -> dict:
    """Planted vs original texts of up to ``per_kind`` missed records per kind, and the first
    false positives with their matched texts."""
    wanted: list[tuple[str, dict]] = []
    for kind, k in result["kinds"].items():
        for i in k["missed_records"][:per_kind]:
            wanted.append((kind, truth[i]))
    keys = []
    for _, t in wanted:
        keys.append(_pair_key(t))
        dims = [t["dimension"]] if t["original_dimension"] else ["helpful", "harmless"]
        keys.extend(_pair_key(t, "original_", d) for d in dims)
    fps = result["false_positives"][:10]
    for r in fps:
        keys.append(_pair_key(r))
        keys.extend(_pair_key(r, "matched_", d) for d in ("helpful", "harmless"))
    texts = _texts(pairs, keys)

    def text_of(key_a: tuple, key_b: tuple | None = None) -> dict | None:
        row = texts.get(key_a) or (texts.get(key_b) if key_b else None)
        if row is None:
            return None
        return {f: _short(row[f]) for f in ("prompt", "chosen", "rejected")}

    misses: dict[str, list] = defaultdict(list)
    for kind, t in wanted:
        orig = _pair_key(t, "original_", t["dimension"])
        alt = _pair_key(t, "original_", "harmless" if t["dimension"] == "helpful" else "helpful")
        misses[kind].append(
            {
                "planted": f"{t['dataset']}/{t['source_file']}:{t['source_line']} {t['dimension']}",
                "original": f"{t['original_dataset']}/{t['original_source_file']}:"
                f"{t['original_source_line']}",
                "detail": t["detail"],
                "planted_text": text_of(_pair_key(t)),
                "original_text": text_of(orig, alt),
            }
        )
    false_pos = []
    for r in fps:
        matched = _pair_key(r, "matched_", r["dimension"])
        alt = _pair_key(r, "matched_", "harmless" if r["dimension"] == "helpful" else "helpful")
        false_pos.append(
            {
                "removed": f"{r['dataset']}/{r['source_file']}:{r['source_line']} {r['dimension']}",
                "reason": r["reason"],
                "method": r["method"],
                "score": r["score"],
                "matched": f"{r['matched_dataset']}/{r['matched_source_file']}:"
                f"{r['matched_source_line']}",
                "removed_text": text_of(_pair_key(r)),
                "matched_text": text_of(matched, alt),
            }
        )
    return {"missed": dict(misses), "false_positives": false_pos}


# --------------------------------------------------------------------------------------------
# The whole evaluation
# --------------------------------------------------------------------------------------------


def evaluate(
    corpus: str | Path,
    dedup_configs: dict[str, DedupConfig] | None = None,
    decontam_config: DecontamConfig | None = None,
) -> dict:
    """Run ingest → normalize → dedup → decontam on ``corpus`` and score each dedup config.

    ``dedup_configs`` maps a run name to a :class:`DedupConfig` (default: ``{"default":
    DedupConfig()}``); ingest and normalization run once. Returns ``{"corpus", "counts",
    "seconds", "runs": {name: {"config", "seconds", "kinds", "reasons", "targets_missed",
    "examples"}}}``.
    """
    dedup_configs = dedup_configs or {"default": DedupConfig()}
    decontam_config = decontam_config or DecontamConfig()
    total = _now()
    pairs, seconds, counts = load_pairs(corpus)
    truth = load_truth(corpus)
    counts["planted_pairs"] = len(truth)
    runs = {}
    for name, config in dedup_configs.items():
        gc.collect()
        run_seconds = {}
        start = _now()
        kept, dedup_removed = deduplicate(pairs, config)
        run_seconds["dedup"] = _now() - start
        start = _now()
        _, decontam_removed = decontaminate(kept, decontam_config)
        run_seconds["decontam"] = _now() - start
        del kept
        start = _now()
        result = score(truth, dedup_removed, decontam_removed, prompt_dedup=config.prompt_dedup)
        result["examples"] = examples(pairs, truth, result)
        run_seconds["score"] = _now() - start
        result["targets_missed"] = check_targets(result)
        result["seconds"] = {k: round(v, 2) for k, v in run_seconds.items()}
        result["config"] = {
            "dedup": dataclasses.asdict(config),
            "decontam": dataclasses.asdict(decontam_config),
        }
        result["removed_total"] = {
            "dedup": dedup_removed.num_rows,
            "decontam": decontam_removed.num_rows,
        }
        result["false_positive_count"] = len(result.pop("false_positives"))
        for k in result["kinds"].values():
            k["missed"] = len(k.pop("missed_records"))
        runs[name] = result
    seconds = {k: round(v, 2) for k, v in seconds.items()}
    seconds["total"] = round(_now() - total, 2)
    return {
        "corpus": str(corpus),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "counts": counts,
        "seconds": seconds,
        "runs": runs,
    }


def _machine() -> dict:
    mem_gb = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "mem_total_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_report(results: dict) -> str:
    """The printed tables: recall per kind, precision per reason, timings, target misses."""
    lines = []
    c, s = results["counts"], results["seconds"]
    lines.append(
        f"corpus {results['corpus']}: {c['rows_read']:,} rows read, "
        f"{c['rows_quarantined']:,} quarantined, {c['pairs']:,} pairs, "
        f"{c['planted_pairs']:,} planted pairs"
    )
    lines.append(f"ingest {s['ingest']:.1f} s, normalize {s['normalize']:.1f} s")
    for name, run in results["runs"].items():
        cfg = run["config"]["dedup"]
        lines.append("")
        lines.append(f"== run {name!r} (prompt_dedup={cfg['prompt_dedup']}) ==")
        header = (
            f"{'kind':32s} {'planted':>7s} {'found':>6s} {'recall':>7s} {'target':>6s} "
            f"{'wrong':>5s}  reasons of found pairs"
        )
        lines.append(header)
        lines.append("-" * len(header))
        for kind, k in run["kinds"].items():
            goal = TARGETS["recall"].get(kind)
            target = f">={goal:g}" if goal is not None and k["targeted"] else "n/a"
            reasons = ", ".join(f"{r} {n}" for r, n in k["reasons"].items()) or "-"
            lines.append(
                f"{kind:32s} {k['planted']:7d} {k['found']:6d} {_fmt(k['recall']):>7s} "
                f"{target:>6s} {k['wrong_removals']:5d}  {reasons}"
            )
        lines.append("")
        header = f"{'reason':24s} {'removed':>8s} {'TP':>8s} {'FP':>6s} {'precision':>9s}"
        lines.append(header)
        lines.append("-" * len(header))
        for reason, r in run["reasons"].items():
            lines.append(
                f"{reason:24s} {r['removed']:8d} {r['true_positive']:8d} "
                f"{r['false_positive']:6d} {_fmt(r['precision']):>9s}"
            )
        rs = run["seconds"]
        lines.append("")
        lines.append(
            f"dedup {rs['dedup']:.1f} s, decontam {rs['decontam']:.1f} s, score {rs['score']:.1f} s"
        )
        if run["targets_missed"]:
            lines.append("TARGETS MISSED: " + "; ".join(run["targets_missed"]))
        else:
            lines.append("all targets met")
    lines.append(f"total {s['total']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="a directory written by bench.synth")
    parser.add_argument("--out", help="write the full results (with miss examples) as JSON")
    parser.add_argument(
        "--prompt-dedup",
        choices=("off", "on", "both"),
        default="off",
        help="DedupConfig.prompt_dedup of the run(s); 'both' runs dedup+decontam twice",
    )
    args = parser.parse_args(argv)
    configs = {}
    if args.prompt_dedup in ("off", "both"):
        configs["default"] = DedupConfig()
    if args.prompt_dedup in ("on", "both"):
        configs["prompt_dedup"] = DedupConfig(prompt_dedup=True)
    results = evaluate(args.corpus, configs)
    print(format_report(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
