"""Build the TRL-format sample (``trl-prefs/``) from the real rows of this sample, and the
example declared dataset (``acme-prefs/``, with the full upstream HH test file as argument:
``python sample_data/build_trl.py ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz``).

Real text in each of TRL's preference forms (https://huggingface.co/docs/trl/dataset_formats),
for the TRL-format reader (``curation/datasets/trl_format.py``) and its tests:

* ``hh_conversational.jsonl``, ``hh_conversational_implicit.jsonl``, ``hh_standard.jsonl.gz``,
  ``hh_standard_implicit.parquet``: the first 20 lines of ``hh-rlhf/harmless-base/test.jsonl.gz``
  (real HH-RLHF ``harmless-base/test.jsonl.gz`` lines 0-19), each in one form. Conversational:
  the turns (``Human`` -> ``user``, ``Assistant`` -> ``assistant``; one space after a marker
  dropped), the final assistant turns as ``chosen``/``rejected``. Standard: ``prompt`` is the
  transcript up to and including the final ``"\\n\\nAssistant:"`` marker and the responses keep
  their leading space (TRL's own HH conversion); implicit: the whole transcripts.
* ``pku_standard.jsonl``: the 15 lines of ``PKU-SafeRLHF/data/Alpaca-7B/test.jsonl`` (real
  PKU-SafeRLHF ``data/Alpaca-7B/test.jsonl`` lines 0-14) in the standard form, ``chosen`` by
  ``better_response_id``.
* ``bad.jsonl``: HH lines 20-29 in the conversational form, 7 of them broken one way each (see
  ``BROKEN``); ``bad_implicit.jsonl``: HH lines 30-33 in the implicit conversational form, line
  1's rejected side opening with line 40's first question (``context_mismatch``).

The HH transcripts are split with a regular expression here, independently of ``curation.hh``.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
OUT = HERE / "trl-prefs"
ROLE = {"Human": "user", "Assistant": "assistant"}


def turns(transcript: str) -> list[dict[str, str]]:
    """An HH transcript as TRL messages."""
    parts = re.split(r"\n\n(Human|Assistant):", transcript)
    assert parts[0] == "", transcript[:40]
    return [
        {"role": ROLE[speaker], "content": text[1:] if text.startswith(" ") else text}
        for speaker, text in zip(parts[1::2], parts[2::2], strict=True)
    ]


def hh_rows(first: int, last: int) -> list[dict]:
    data = gzip.decompress((HERE / "hh-rlhf/harmless-base/test.jsonl.gz").read_bytes())
    return [json.loads(line) for line in data.splitlines()[first:last]]


def conversational(row: dict) -> dict:
    chosen, rejected = turns(row["chosen"]), turns(row["rejected"])
    assert chosen[:-1] == rejected[:-1]
    return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}


def standard(row: dict) -> dict:
    cut = row["chosen"].rindex("\n\nAssistant:") + len("\n\nAssistant:")
    assert row["rejected"][:cut] == row["chosen"][:cut]
    return {
        "prompt": row["chosen"][:cut],
        "chosen": row["chosen"][cut:],
        "rejected": row["rejected"][cut:],
    }


def write_jsonl(name: str, rows: list[dict], folder: Path = OUT) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if name.endswith(".gz"):
        with gzip.GzipFile(folder / name, "wb", mtime=0) as handle:  # mtime 0: reproducible bytes
            handle.write(data)
    else:
        (folder / name).write_bytes(data)


#: Line of ``bad.jsonl`` -> how its real row is broken (the reason code it must get).
BROKEN = {
    1: "missing_role",
    2: "empty_content",
    3: "prompt_not_ending_with_user",
    4: "identical_responses",
    5: "mixed_forms",
    6: "unknown_role",
    7: "response_not_assistant",
}


def broken(line: int, row: dict) -> dict:
    """The conversational form of ``row`` with the fault :data:`BROKEN` names for ``line``."""
    good = conversational(row)
    fault = BROKEN.get(line)
    if fault == "missing_role":
        del good["prompt"][0]["role"]
    elif fault == "empty_content":
        good["chosen"][0]["content"] = "  "
    elif fault == "prompt_not_ending_with_user":
        good["prompt"] = good["prompt"][:-1] or good["chosen"]
    elif fault == "identical_responses":
        good["rejected"] = good["chosen"]
    elif fault == "mixed_forms":
        return standard(row)
    elif fault == "unknown_role":
        good["prompt"][0]["role"] = "human"
    elif fault == "response_not_assistant":
        good["chosen"] = [{**good["chosen"][0], "role": "user"}]
    return good


def implicit(line: int, row: dict) -> dict:
    """The implicit conversational form of ``row``; on line 1 the rejected side's first user
    turn is another real row's (``context_mismatch``)."""
    good = conversational(row)
    rejected_prompt = good["prompt"]
    if line == 1:
        other = conversational(hh_rows(40, 41)[0])["prompt"][0]
        rejected_prompt = [other, *good["prompt"][1:]]
    return {
        "chosen": good["prompt"] + good["chosen"],
        "rejected": rejected_prompt + good["rejected"],
    }


#: The example dataset declared in ``acme-prefs.yaml`` (a team's own data, no code).
ACME = HERE / "acme-prefs"
#: Real HH-RLHF ``harmless-base/test.jsonl.gz`` lines outside this sample (it has lines 0-799):
#: the team's own train rows and its test rows.
ACME_TRAIN_LINES, ACME_TEST_LINES = (2000, 2030), (2100, 2112)


def build_acme(full_hh_test: Path) -> None:
    """``acme-prefs/``: ``train-hh-test.jsonl`` and ``train-pku-test.jsonl`` are the HH and PKU
    test rows above (``hh_conversational.jsonl``, ``pku_standard.jsonl``: contamination to be
    removed); ``train-team.jsonl.gz`` holds real HH test lines 2000-2029 and ``test.jsonl`` lines
    2100-2111 (standard form), both outside this sample, read from the full upstream file."""
    ACME.mkdir(exist_ok=True)
    lines = gzip.decompress(full_hh_test.read_bytes()).splitlines()
    team = [json.loads(x) for x in lines[slice(*ACME_TRAIN_LINES)]]
    test = [json.loads(x) for x in lines[slice(*ACME_TEST_LINES)]]
    for name in ("hh_conversational.jsonl", "pku_standard.jsonl"):
        target = "train-hh-test.jsonl" if name.startswith("hh") else "train-pku-test.jsonl"
        (ACME / target).write_bytes((OUT / name).read_bytes())
    write_jsonl("train-team.jsonl.gz", [conversational(r) for r in team], ACME)
    write_jsonl("test.jsonl", [standard(r) for r in test], ACME)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    hh = hh_rows(0, 20)
    write_jsonl("hh_conversational.jsonl", [conversational(r) for r in hh])
    write_jsonl(
        "hh_conversational_implicit.jsonl",
        [
            {"chosen": c["prompt"] + c["chosen"], "rejected": c["prompt"] + c["rejected"]}
            for c in map(conversational, hh)
        ],
    )
    write_jsonl("hh_standard.jsonl.gz", [standard(r) for r in hh])
    whole = pa.table({"chosen": [r["chosen"] for r in hh], "rejected": [r["rejected"] for r in hh]})
    pq.write_table(whole, OUT / "hh_standard_implicit.parquet", compression="zstd")
    pku = [
        json.loads(x)
        for x in (HERE / "PKU-SafeRLHF/data/Alpaca-7B/test.jsonl").read_text().splitlines()
    ]
    write_jsonl(
        "pku_standard.jsonl",
        [
            {
                "prompt": r["prompt"],
                "chosen": r[f"response_{r['better_response_id']}"],
                "rejected": r[f"response_{1 - r['better_response_id']}"],
            }
            for r in pku
        ],
    )
    write_jsonl("bad.jsonl", [broken(i, r) for i, r in enumerate(hh_rows(20, 30))])
    write_jsonl("bad_implicit.jsonl", [implicit(i, r) for i, r in enumerate(hh_rows(30, 34))])
    if len(sys.argv) > 1:  # the full upstream harmless-base/test.jsonl.gz (e.g. ../shared/data)
        build_acme(Path(sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
