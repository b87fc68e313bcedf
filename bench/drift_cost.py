"""What comparing a release with the previous one costs (issue 21's budget: at most 5 % of the
run's time and memory on the 250K-pair corpus).

``python -m bench.drift_cost --corpus /tmp/synth10 [--out results.json]``

1. Two real ``rlhf-curate run`` processes on a copy of the corpus, one store and one Dagster home:
   the baseline, then the same corpus with a tenth of the lines of every PKU train file removed
   (so the second release differs and is compared, ``drift_rows`` fires). Each run's wall time,
   CPU time (user + system, from ``getrusage`` of the child) and peak RSS are recorded.
2. In this process, on the second release as published (its ``pairs`` and ``removed`` tables read
   back from the store), the comparison work alone, as ``release`` does it: the profile
   (:func:`curation.publish.profile.profile_release`), the pair keys (:func:`curation.publish.profile.pair_keys`),
   reading the previous release's manifest and pair keys, the swapped-label count and every check
   (:func:`curation.publish.drift.compare_releases`) and the ``changes`` section. Wall and CPU time, and
   the RSS it adds above the loaded tables (sampled every 10 ms).

The shares reported are the comparison's CPU time over the second run's CPU time, and its added
RSS over the second run's peak RSS. CPU time, not wall time, so that the figure holds on a
loaded machine (``uptime`` is recorded with the results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from curation.core.store import Store
from curation.publish.drift import changes_section, compare_releases, swapped_pairs, worst
from curation.publish.profile import pair_keys, profile_release
from curation.publish.release import read_manifest, stored_pair_keys

CUT_SHARE = 0.1


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples this process's RSS every 10 ms while the block runs."""

    def __enter__(self) -> PeakRss:
        self.base = _rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "rlhf-curate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


def run_cli(hh: Path, pku: Path, store: Path, home: Path) -> dict[str, Any]:
    """One ``rlhf-curate run``: wall, CPU and peak RSS of the child, and its release id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CURATED_", "HH_"))}
    env.pop("PKU_SAFERLHF_URI", None)
    env["DAGSTER_HOME"] = str(home)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [*_cli(), "run", "--hh", str(hh), "--pku", str(pku), "--store", str(store)],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"rlhf-curate run failed:\n{done.stderr[-3000:]}")
    release_id = next(
        line.split()[1] for line in done.stdout.splitlines() if line.startswith("release ")
    )
    return {
        "release_id": release_id,
        "wall_s": round(wall, 2),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        # ru_maxrss of children is the largest child so far: the runs only grow, see the docs
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
    }


def cut_pku_train(pku: Path, share: float = CUT_SHARE) -> int:
    """Remove every ``1/share``-th line of each PKU train file; the number of lines removed."""
    step = round(1 / share)
    removed = 0
    for path in pku.rglob("train*.jsonl"):
        lines = path.read_bytes().splitlines(keepends=True)
        kept = [line for i, line in enumerate(lines) if i % step]
        removed += len(lines) - len(kept)
        path.write_bytes(b"".join(kept))
    return removed


def comparison_cost(store_uri: str, release_id: str) -> dict[str, Any]:
    """The comparison work of ``release`` on a published release, timed and its RSS sampled."""
    store = Store.of(store_uri)
    manifest = read_manifest(store, release_id)
    folder = Path(store_uri) / "releases" / release_id
    tables = {
        name: ds.dataset(folder / name, format="parquet").to_table()
        for name in ("pairs", "removed")
    }
    previous = read_manifest(store, manifest["previous_release"])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with PeakRss() as rss:
        profile = profile_release(tables, manifest["sources"])
        keys = pair_keys(tables["pairs"])
        old_keys = stored_pair_keys(store, previous)
        swaps = swapped_pairs(old_keys, keys)
        body = {**manifest, "profile": profile}
        results = compare_releases(previous, body, None, (), swaps)
        changes_section(previous, body, results, held=False)
    return {
        "pairs": tables["pairs"].num_rows,
        "cpu_s": round(time.process_time() - cpu0, 2),
        "wall_s": round(time.perf_counter() - wall0, 2),
        "added_rss_mb": round((rss.peak - rss.base) / 2**20, 1),
        "severity": worst(results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, type=Path, help="a bench.synth mirror")
    parser.add_argument("--out", type=Path, help="write the results JSON here")
    parser.add_argument("--workroot", default=tempfile.gettempdir(), help="temp folders go here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="drift_cost_", dir=args.workroot))
    try:
        hh, pku = work / "hh-rlhf", work / "PKU-SafeRLHF"
        shutil.copytree(args.corpus / "hh-rlhf", hh)
        shutil.copytree(args.corpus / "PKU-SafeRLHF", pku)
        store, home = work / "store", work / "home"
        first = run_cli(hh, pku, store, home)
        cut = cut_pku_train(pku)
        second = run_cli(hh, pku, store, home)
        cost = comparison_cost(str(store), second["release_id"])
        results = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "load_average_at_end": os.getloadavg(),
            "corpus": str(args.corpus),
            "pku_train_lines_removed": cut,
            "first_run": first,
            "second_run": second,
            "comparison": cost,
            "cpu_share": round(cost["cpu_s"] / second["cpu_s"], 4),
            "rss_share": round(cost["added_rss_mb"] / second["peak_rss_mb"], 4),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
