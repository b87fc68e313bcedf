"""Rebuild the bundled sample from the real upstream files in ``../shared/data`` (run by hand).

* ``hh-rlhf/harmless-base/{test,train}.jsonl.gz``: all 2,312 real lines of upstream
  ``harmless-base/test.jsonl.gz`` (commit 354e5c3), byte-identical, re-split: lines 0-799 form
  the sample's test file and lines 800-2311 its train file (upstream train is not available
  here). The other HH subsets are deliberately absent, to show how a partial mirror is handled.
* ``hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz``: ONE JSON array, as upstream, of 120
  objects whose ``transcript`` is a real harmless-base chosen transcript and whose score and
  metadata fields are synthetic (deterministic), since the real red-team file is not available.
* ``PKU-SafeRLHF/data/Alpaca-7B/{test,train}.jsonl``: the 45 real upstream lines, byte-identical,
  re-split: lines 0-14 test, 15-44 train.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def write_gz(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as handle:  # mtime 0: reproducible bytes
        handle.write(b"".join(line + b"\n" for line in lines))


def main() -> int:
    hh = gzip.decompress((SHARED / "hh-rlhf/harmless-base/test.jsonl.gz").read_bytes())
    hh_lines = hh.rstrip(b"\n").split(b"\n")
    write_gz(HERE / "hh-rlhf/harmless-base/test.jsonl.gz", hh_lines[:800])
    write_gz(HERE / "hh-rlhf/harmless-base/train.jsonl.gz", hh_lines[800:])
    red_team = []
    for index, line in enumerate(hh_lines[::19][:120]):
        red_team.append(
            {
                "transcript": json.loads(line)["chosen"],
                "min_harmlessness_score_transcript": round(-3.0 + (index % 13) * 0.41, 3),
                "num_params": ["2.7B", "13B", "52B"][index % 3],
                "model_type": ["plain lm", "context distillation", "rlhf"][index % 3],
                "rating": float(index % 5),
                "task_description": f"synthetic task description {index}",
                "task_description_harmlessness_score": round(-1.5 + (index % 7) * 0.3, 3),
                "red_team_member_id": 1000 + index % 17,
                "is_upworker": index % 2 == 0,
                "tags": None if index % 4 else ["synthetic"],
            }
        )
    path = HERE / "hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as handle:
        handle.write(json.dumps(red_team, indent=1).encode())
    pku = (SHARED / "PKU-SafeRLHF/data/Alpaca-7B/test.sample.jsonl").read_bytes()
    pku_lines = pku.rstrip(b"\n").split(b"\n")
    out = HERE / "PKU-SafeRLHF/data/Alpaca-7B"
    out.mkdir(parents=True, exist_ok=True)
    (out / "test.jsonl").write_bytes(b"".join(line + b"\n" for line in pku_lines[:15]))
    (out / "train.jsonl").write_bytes(b"".join(line + b"\n" for line in pku_lines[15:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
