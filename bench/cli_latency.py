"""How long the everyday ``rlhf-curate`` commands take, as whole processes.

    python -m bench.cli_latency --store /tmp/store [--runs 7] [--json out.json]

``--store`` must hold at least one published release (``rlhf-curate run --store /tmp/store``
makes one). Each command runs once to warm the page cache, then ``--runs`` times; the table gives
the wall time (min, median, max) and the median CPU time (user + system, from
``RUSAGE_CHILDREN``). On a shared machine quote the CPU median: the wall time includes waiting
for a core, the CPU time does not. The load average before and after is printed with the
machine's CPU count. Targets (issue 23): ``--help``, ``--version`` and every ``releases``
command under 1 s on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

CLI = Path(sys.executable).parent / "rlhf-curate"


def commands(store: str, first: str) -> dict[str, list[str]]:
    """The measured commands (name -> argv after ``rlhf-curate``)."""
    s = ["--store", store]
    return {
        "--help": ["--help"],
        "--version": ["--version"],
        "run --help": ["run", "--help"],
        "releases list": ["releases", "list", *s],
        "releases show": ["releases", "show", *s],
        "releases verify": ["releases", "verify", "--no-progress", *s],
        "releases diff": ["releases", "diff", first, "latest", *s],
        "releases prune --dry-run": ["releases", "prune", "--keep", "1000", "--dry-run", *s],
    }


def time_once(argv: list[str]) -> tuple[float, float, int]:
    """``(wall s, cpu s, exit code)`` of one run of ``rlhf-curate argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([str(CLI), *argv], capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def measure(argv: list[str], runs: int) -> dict[str, float | int]:
    """One warm-up, then ``runs`` timed runs: wall min/median/max, CPU median, exit code."""
    time_once(argv)
    results = [time_once(argv) for _ in range(runs)]
    walls = [r[0] for r in results]
    return {
        "wall_min": min(walls),
        "wall_median": statistics.median(walls),
        "wall_max": max(walls),
        "cpu_median": statistics.median(r[1] for r in results),
        "exit": results[-1][2],
    }


def first_release(store: str) -> str:
    """The oldest release of the store (``diff`` compares it with ``latest``)."""
    out = subprocess.run(
        [str(CLI), "releases", "list", "--json", "--store", store],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    releases = json.loads(out)
    if not releases:
        raise SystemExit(f"{store}: no published release; make one with `rlhf-curate run --store`")
    return releases[0]["release_id"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="a store with at least one release")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command (default 7)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = {
        name: measure(cmd, args.runs)
        for name, cmd in commands(args.store, first_release(args.store)).items()
    }
    load_after = os.getloadavg()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"load {load_before[0]:.1f} before / {load_after[0]:.1f} after, {args.runs} runs each"
    )
    print(f"{'command':<26} {'wall min':>9} {'median':>8} {'max':>8} {'cpu median':>11} exit")
    for name, r in rows.items():
        print(
            f"{name:<26} {r['wall_min']:8.2f}s {r['wall_median']:7.2f}s {r['wall_max']:7.2f}s "
            f"{r['cpu_median']:10.2f}s {r['exit']:>4}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"load": [load_before, load_after], "cpus": os.cpu_count(), "commands": rows},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
