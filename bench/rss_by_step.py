"""Where a run's memory is, step by step: anonymous and file-backed RSS at start, peak and end.

    python -m bench.rss_by_step CORPUS WORKDIR

Runs the ``full_refresh`` job once in this process (``bench.run_pipeline.run_in_process``; WORKDIR
is emptied first) while a thread samples ``RssAnon`` and ``RssFile`` from ``/proc/self/status``
every 50 ms, then prints one line per step. File-backed pages are memory-mapped stage tables
still referenced; anonymous pages are everything else (Python objects, Arrow buffers, imports).
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

from bench.run_pipeline import run_in_process


def _rss() -> tuple[float, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon", "RssFile")):
            key, value = line.split(":")
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("RssAnon", 0.0), fields.get("RssFile", 0.0)


def sample_forever(samples: list[tuple[float, float, float]], every: float = 0.05) -> None:
    """Append ``(time, anonymous MiB, file-backed MiB)`` to ``samples`` every ``every`` s."""
    while True:
        samples.append((time.time(), *_rss()))
        time.sleep(every)


def main(corpus: Path, workdir: Path) -> None:
    samples: list[tuple[float, float, float]] = []
    threading.Thread(target=sample_forever, args=(samples,), daemon=True).start()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    steps = run_in_process(corpus, workdir)["runs"]["full_refresh"]["steps"]
    for name, step in sorted(steps.items(), key=lambda kv: kv[1]["start"]):
        window = [s for s in samples if step["start"] <= s[0] <= step["end"]]
        if not window:
            continue
        peak = max(window, key=lambda s: s[1] + s[2])
        print(
            f"{name[:40]:40s} wall {step['wall_s']:5.1f} s | anon/file MiB: "
            f"start {window[0][1]:6.0f}/{window[0][2]:5.0f}  peak {peak[1]:6.0f}/{peak[2]:5.0f}  "
            f"end {window[-1][1]:6.0f}/{window[-1][2]:5.0f}"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
