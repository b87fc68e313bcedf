"""End-to-end performance of the pipeline: raw mirror -> published release, through Dagster.

``python -m bench.run_pipeline --corpus DIR [--corpus DIR2] [--compare] [--out results.json]``

For every corpus (a mirror written by :mod:`bench.synth`) it runs, each in a **fresh
subprocess** (so ``ru_maxrss`` is the peak of that run only):

1. ``first``: the ``full_refresh`` job executed in process (``pipelines.local_run``, as
   ``rlhf-curate run`` does) with ``HH_RLHF_URI`` / ``PKU_SAFERLHF_URI`` pointing at the mirror,
   ``CURATED_STORE_URI`` at an empty temporary folder and a temporary ``DAGSTER_HOME``;
2. ``rerun``: the same job again on the same inputs, home and store (a no-change *full*
   refresh: everything is recomputed, the release comes out ``unchanged``);
3. ``incremental``: ``pipelines.automation.refresh`` on the same home (the no-change
   *incremental* refresh: observe the sources, find nothing stale, launch no run);
4. with ``--compare``: :mod:`bench.reference_pipeline` (the hand-written pandas + datasketch
   reference) on the same corpus.

Per run it reports wall time, CPU time (user + system, all threads) and peak RSS, in total and
per stage. Stages come from the Dagster event log: ``STEP_START`` -> ``STEP_SUCCESS`` of every
step key, grouped into ``ingest`` (source observations + one ingest asset per file),
``validate`` (``validate_and_normalize`` + every asset check: GX suites, quarantine rates, row
accounting), ``curate`` (dedup, decontamination) and ``publish`` (``release``). A sampling thread
records ``/proc/self/status`` ``VmRSS`` and the process CPU time every 20 ms, which gives the
CPU time and peak RSS inside each step. ``startup`` is process start -> run start (imports,
definitions, instance), ``dagster`` the part of the run outside steps.

Two more measurements put the pipeline's time in proportion, each in its own subprocess:

5. ``parse_floor`` (per corpus, unless ``--no-floor``): reading, decompressing (ISA-L, as the
   pipeline) and decoding every source file of the corpus with ``pyarrow.json`` (the red-team
   file is one JSON array, which ``pyarrow.json`` cannot read: ``json.loads``), files on one
   thread per CPU. The pipeline's ``first`` wall and CPU are reported as multiples of it (target:
   wall at most 8x).
6. ``fixed_cost`` (once, unless ``--no-fixed-cost``): the ``first`` run on a tiny corpus
   (``bench.synth`` at scale 0.001, ~400 rows), i.e. what a run costs whatever its size:
   interpreter and Dagster start, run creation and event log, GX and the card. With two corpora
   the **linear cost** is ``(t_big - fixed) / (t_small - fixed)`` of the ``first`` runs (target:
   at most the ratio of their scales, 10 for 1.0 over 0.1).

The page cache is warmed (every corpus file read once) before the first measurement, so every
run reads from memory. ``--in-process`` does one measurement in the current process (what the
subprocesses run; also the entry point for profiling, see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import datetime as dt
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

__all__ = [
    "Sampler",
    "Stages",
    "cpu_s",
    "linear_cost",
    "measure_stages",
    "parse_floor",
    "process_start_epoch",
    "rss_mb",
    "run_in_process",
]

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("ingest", "validate", "curate", "publish")
SUBSTAGE_GROUP = {
    "observe": "ingest",
    "ingest": "ingest",
    "normalize": "validate",
    "ingest_checks": "validate",
    "curated_checks": "validate",
    "dedup": "curate",
    "decontam": "curate",
    "publish": "publish",
}
#: Targets of the issue 'Performance at full scale' (scale 1.0), and of its second round.
TARGETS = {
    "speedup_vs_reference": 5.0,
    "peak_rss_mb": 1536.0,  # 1.5 GiB
    "no_change_refresh_s": 5.0,
    "scale_ratio_1_0_over_0_1": 11.0,
    "wall_over_parse_floor": 8.0,
    "linear_cost_over_scale_ratio": 1.0,  # (t1.0 - fixed) / (t0.1 - fixed) <= 10
}
#: Scale of the tiny corpus whose run measures the fixed cost (~400 preference rows).
FIXED_COST_SCALE = 0.001


# --------------------------------------------------------------------------------------------
# Resource sampling (shared with bench.reference_pipeline)
# --------------------------------------------------------------------------------------------


def _vm_rss_kb() -> int:
    with open("/proc/self/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_mb() -> float:
    """Peak RSS of this process so far (``ru_maxrss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Sampler:
    """A daemon thread sampling ``(epoch, process CPU s, VmRSS KiB)`` every ``interval`` s."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        self.samples.append((time.time(), time.process_time(), _vm_rss_kb()))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def window(self, start: float, end: float) -> dict:
        """CPU seconds (interpolated) and peak sampled RSS (MiB) between two epoch times."""
        import numpy as np

        s = np.array(self.samples, dtype=float)
        if len(s) == 0:
            return {"cpu_s": None, "peak_rss_mb": None, "rss_start_mb": None, "rss_end_mb": None}
        cpu = np.interp([start, end], s[:, 0], s[:, 1])
        inside = (s[:, 0] >= start) & (s[:, 0] <= end)
        # the samples just before and after the window bound what RSS was at its edges
        lo = max(int(np.searchsorted(s[:, 0], start)) - 1, 0)
        hi = min(int(np.searchsorted(s[:, 0], end)), len(s) - 1)
        rss = np.concatenate([s[inside, 2], s[[lo, hi], 2]]) if inside.any() else s[[lo, hi], 2]
        return {
            "cpu_s": float(cpu[1] - cpu[0]),
            "peak_rss_mb": float(rss.max()) / 1024,
            "rss_start_mb": float(s[lo, 2]) / 1024,
            "rss_end_mb": float(s[hi, 2]) / 1024,
        }


class Stages:
    """Named stage timers for straight-line code: wall, CPU and sampled peak RSS per stage."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.spans: list[tuple[str, float, float]] = []

    def run(self, name: str, fn, *args, **kwargs):
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.spans.append((name, start, time.time()))

    def report(self) -> dict:
        out = {}
        for name, start, end in self.spans:
            out[name] = {"wall_s": end - start, **self.sampler.window(start, end)}
        return out


# --------------------------------------------------------------------------------------------
# One measurement, in this process
# --------------------------------------------------------------------------------------------


def substage(step_key: str) -> str:
    """The sub-stage of a step key of the ``full_refresh`` job."""
    if step_key == "release":
        return "publish"
    if step_key == "deduplicate_pairs":
        return "dedup"
    if step_key == "decontaminate_pairs":
        return "decontam"
    if step_key == "validate_and_normalize":
        return "normalize"
    if step_key.startswith("upstream_"):
        return "observe"
    if step_key == "ingest_files" or step_key.startswith("raw_"):
        return "ingest"
    if step_key == "ingest_checks":
        return "ingest_checks"
    return "curated_checks"


def measure_stages(instance, run_id: str, sampler: Sampler) -> dict:
    """Per-step and per-stage wall/CPU/peak RSS of one run, from its event log."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.RUN_START,
        dg.DagsterEventType.RUN_SUCCESS,
        dg.DagsterEventType.RUN_FAILURE,
    }
    starts: dict[str, float] = {}
    steps: dict[str, dict] = {}
    run_start = run_end = None
    for entry in instance.all_logs(run_id, of_type=kinds):
        kind = entry.dagster_event_type
        if kind == dg.DagsterEventType.RUN_START:
            run_start = entry.timestamp
        elif kind in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE):
            run_end = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif entry.step_key in starts:
            start = starts[entry.step_key]
            steps[entry.step_key] = {
                "substage": substage(entry.step_key),
                "start": start,
                "end": entry.timestamp,
                "wall_s": entry.timestamp - start,
                "ok": kind == dg.DagsterEventType.STEP_SUCCESS,
                **sampler.window(start, entry.timestamp),
            }
    substages: dict[str, dict] = {}
    for step in steps.values():
        agg = substages.setdefault(
            step["substage"], {"steps": 0, "wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0}
        )
        agg["steps"] += 1
        agg["wall_s"] += step["wall_s"]
        agg["cpu_s"] += step["cpu_s"] or 0.0
        agg["peak_rss_mb"] = max(agg["peak_rss_mb"], step["peak_rss_mb"] or 0.0)
    groups: dict[str, dict] = {}
    for name, agg in substages.items():
        g = groups.setdefault(
            SUBSTAGE_GROUP[name], {"steps": 0, "wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0}
        )
        g["steps"] += agg["steps"]
        g["wall_s"] += agg["wall_s"]
        g["cpu_s"] += agg["cpu_s"]
        g["peak_rss_mb"] = max(g["peak_rss_mb"], agg["peak_rss_mb"])
    run = {"run_id": run_id, "start": run_start, "end": run_end}
    if run_start is not None and run_end is not None:
        run["wall_s"] = run_end - run_start
        run.update({k: v for k, v in sampler.window(run_start, run_end).items()})
        run["outside_steps_s"] = run["wall_s"] - sum(s["wall_s"] for s in steps.values())
    return {"run": run, "groups": groups, "substages": substages, "steps": steps}


def _release_status(result) -> dict:
    for materialization in result.asset_materializations_for_node("release"):
        meta = {k: v.value for k, v in materialization.metadata.items()}
        return {
            "release_id": meta.get("release_id"),
            "status": meta.get("status"),
            "pairs": meta.get("pairs"),
            "removed_pairs": meta.get("removed_pairs"),
            "quarantined_rows": meta.get("quarantined_rows"),
        }
    return {}


def run_in_process(corpus: Path, workdir: Path, mode: str = "full") -> dict:
    """One measured run of the pipeline in this process.

    ``mode``: ``full`` (the ``full_refresh`` job, as ``rlhf-curate run``) or ``incremental``
    (``pipelines.automation.refresh``). ``workdir`` holds ``dagster_home`` and ``store``; reuse it
    for a second run on the same inputs.
    """
    process_start = process_start_epoch()
    sampler = Sampler().start()
    t0, c0 = time.time(), cpu_s()
    home, store = workdir / "dagster_home", workdir / "store"
    home.mkdir(parents=True, exist_ok=True)
    store.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.update(
        {
            "HH_RLHF_URI": str(corpus / "hh-rlhf"),
            "PKU_SAFERLHF_URI": str(corpus / "PKU-SafeRLHF"),
            "CURATED_STORE_URI": str(store),
            "DAGSTER_HOME": str(home),
        }
    )
    for name in ("HH_RLHF_REVISION", "PKU_SAFERLHF_REVISION", "ALERT_WEBHOOK_URL"):
        os.environ.pop(name, None)
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("curation.publish.alerts").setLevel(logging.CRITICAL)  # as rlhf-curate run
    import dagster as dg

    from pipelines.definitions import build_definitions
    from pipelines.settings import Environment

    defs = build_definitions(Environment.from_env())
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    import curation
    from curation.core.version import code_version

    out: dict = {
        "mode": mode,
        "corpus": str(corpus),
        "code_version": code_version(),
        "code_dir": str(Path(curation.__file__).resolve().parents[1]),
    }
    with dg.DagsterInstance.get() as instance:
        started = time.time()
        out["startup_s"] = started - (process_start or t0)
        if mode == "full":
            from pipelines.local_run import run_full_refresh

            with run_full_refresh(instance, run_config) as result:
                out["success"] = result.success
                out["release"] = _release_status(result)
            runs = {"full_refresh": result.run_id}
        else:
            from pipelines.refresh import refresh

            outcome = refresh(defs, instance, run_config, from_environment=True)
            out["success"] = outcome.success
            out["stale"] = outcome.requested
            out["launched_run"] = outcome.run_id is not None
            out["release"] = _release_status(outcome.result) if outcome.result else {}
            runs = {"full_refresh": outcome.run_id} if outcome.run_id else {}
        finished = time.time()
        sampler.stop()
        out["work_s"] = finished - started
        out["runs"] = {name: measure_stages(instance, rid, sampler) for name, rid in runs.items()}
    out["wall_s"] = time.time() - (process_start or t0)
    out["cpu_s"] = cpu_s()  # whole process, including interpreter start and imports
    out["cpu_after_start_s"] = out["cpu_s"] - c0
    out["peak_rss_mb"] = rss_mb()
    out["sampled_peak_rss_mb"] = max(s[2] for s in sampler.samples) / 1024
    return out


def process_start_epoch() -> float | None:
    """When this process was launched, epoch seconds: ``$BENCH_LAUNCH_EPOCH`` (set by the parent
    right before it spawns the measurement), else ``/proc/self/stat`` (1 s resolution)."""
    if os.environ.get("BENCH_LAUNCH_EPOCH"):
        return float(os.environ["BENCH_LAUNCH_EPOCH"])
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 overall: starttime in clock ticks since boot
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return None


# --------------------------------------------------------------------------------------------
# The parse floor, in this process
# --------------------------------------------------------------------------------------------


def _decode_file(path: Path) -> tuple[int, int, int]:
    """Read, decompress and decode one source file; ``(bytes, decompressed bytes, rows)``."""
    import json as stdlib_json

    import pyarrow as pa
    import pyarrow.json as pj
    from isal import igzip

    raw = path.read_bytes()
    data = igzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    if data.lstrip()[:1] == b"[":  # the red-team transcripts: one JSON array
        rows = len(stdlib_json.loads(data))
    else:
        rows = pj.read_json(pa.BufferReader(data)).num_rows
    return len(raw), len(data), rows


def source_paths(corpus: Path) -> list[Path]:
    """The corpus files the pipeline reads (its source list), largest first."""
    from curation.datasets import REGISTRY

    roots = [(corpus / d.sample, d.files()) for d in REGISTRY]
    paths = [root / f.relpath for root, files in roots for f in files]
    return sorted((p for p in paths if p.exists()), key=lambda p: -p.stat().st_size)


def parse_floor(corpus: Path) -> dict:
    """Wall and CPU seconds to read, decompress and decode every source file of ``corpus``
    (``pyarrow.json``; ``json.loads`` for the red-team JSON array), one thread per CPU."""
    from concurrent.futures import ThreadPoolExecutor

    paths = source_paths(corpus)
    import isal.igzip  # noqa: F401  (imports outside the measured time)
    import pyarrow.json  # noqa: F401

    start, cpu0 = time.perf_counter(), cpu_s()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        sizes = list(pool.map(_decode_file, paths))
    wall, cpu = time.perf_counter() - start, cpu_s() - cpu0
    return {
        "files": len(paths),
        "bytes": sum(s[0] for s in sizes),
        "decompressed_bytes": sum(s[1] for s in sizes),
        "rows": sum(s[2] for s in sizes),
        "wall_s": wall,
        "cpu_s": cpu,
        "threads": os.cpu_count(),
    }


# --------------------------------------------------------------------------------------------
# Orchestration: one subprocess per measurement
# --------------------------------------------------------------------------------------------


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _child_module(module: str, args: list[str], result_file: Path, code_dir: Path) -> dict:
    """``python -m module *args --result result_file`` measured in a child process."""
    return _child(["-m", module, *args, "--result", str(result_file)], result_file, code_dir)


def _child(args: list[str], result_file: Path, code_dir: Path = REPO) -> dict:
    """Run ``python args...`` in ``code_dir`` in a fresh process; its JSON result plus outside
    measurements (wall, CPU from ``RUSAGE_CHILDREN``, load average before and after)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = _loadavg()
    env = {**os.environ, "BENCH_LAUNCH_EPOCH": repr(time.time())}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], cwd=code_dir, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(result_file.read_text())
    out["process_wall_s"] = wall
    out["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out["loadavg_before"] = load
    out["loadavg_after"] = _loadavg()
    return out


def warm_cache(corpus: Path) -> float:
    """Read every file of the corpus once (so every measurement reads from the page cache)."""
    start = time.perf_counter()
    for path in sorted(corpus.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(1 << 24):
                    pass
    return time.perf_counter() - start


def synth_info(corpus: Path) -> dict:
    path = corpus / "synth_info.json"
    return json.loads(path.read_text()) if path.exists() else {}


def measure_corpus(
    corpus: Path,
    workroot: Path,
    compare: bool,
    refresh: bool,
    code_dir: Path = REPO,
    floor: bool = True,
) -> dict:
    """All measurements of one corpus (see the module docstring)."""
    info = synth_info(corpus)
    work = Path(tempfile.mkdtemp(prefix="run_pipeline_", dir=workroot))
    out: dict = {
        "corpus": str(corpus),
        "scale": info.get("scale"),
        "preference_rows": sum(info.get("files", {}).values()) or None,
        "red_team_rows": info.get("red_team_rows"),
        "corpus_bytes": sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()),
        "warm_cache_s": warm_cache(corpus),
    }
    runs = [("first", "full")]
    if refresh:
        runs += [("rerun", "full"), ("incremental", "incremental")]
    for name, mode in runs:
        result_file = work / f"{name}.json"
        print(f"[{corpus.name}] pipeline {name} ({mode}) ...", file=sys.stderr, flush=True)
        out[name] = _child(
            [
                "-m",
                "bench.run_pipeline",
                "--in-process",
                "--corpus",
                str(corpus),
                "--workdir",
                str(work / "pipeline"),
                "--mode",
                mode,
                "--result",
                str(result_file),
            ],
            result_file,
            code_dir,
        )
    if refresh and out["rerun"]["code_version"] != out["first"]["code_version"]:
        print(
            f"WARNING: the code version changed between runs ({out['first']['code_version']} -> "
            f"{out['rerun']['code_version']}): the rerun is not a no-change refresh; "
            "use --snapshot HEAD",
            file=sys.stderr,
        )
    if floor:
        result_file = work / "parse_floor.json"
        print(f"[{corpus.name}] parse floor ...", file=sys.stderr, flush=True)
        out["parse_floor"] = _child_module(
            "bench.run_pipeline", ["--parse-floor", "--corpus", str(corpus)], result_file, code_dir
        )
        out["wall_over_parse_floor"] = out["first"]["process_wall_s"] / out["parse_floor"]["wall_s"]
        out["cpu_over_parse_floor"] = out["first"]["process_cpu_s"] / out["parse_floor"]["cpu_s"]
    if compare:
        result_file = work / "reference.json"
        print(f"[{corpus.name}] reference ...", file=sys.stderr, flush=True)
        out["reference"] = _child_module(
            "bench.reference_pipeline",
            ["--corpus", str(corpus), "--out", str(work / "reference_out")],
            result_file,
            code_dir,
        )
        out["speedup_vs_reference"] = (
            out["reference"]["process_wall_s"] / out["first"]["process_wall_s"]
        )
        out["cpu_ratio_vs_reference"] = (
            out["reference"]["process_cpu_s"] / out["first"]["process_cpu_s"]
        )
    shutil.rmtree(work, ignore_errors=True)
    return out


def measure_fixed_cost(workroot: Path, code_dir: Path = REPO) -> dict:
    """The ``first`` run on a tiny corpus (:data:`FIXED_COST_SCALE`): a run's fixed cost."""
    work = Path(tempfile.mkdtemp(prefix="run_pipeline_fixed_", dir=workroot))
    corpus = work / "corpus"
    print(f"fixed cost (corpus at scale {FIXED_COST_SCALE:g}) ...", file=sys.stderr, flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.synth",
            "--out",
            str(corpus),
            "--scale",
            str(FIXED_COST_SCALE),
            "--seed",
            "0",
        ],
        cwd=code_dir,
        check=True,
        capture_output=True,
    )
    try:
        out = measure_corpus(
            corpus, work, compare=False, refresh=False, code_dir=code_dir, floor=False
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def linear_cost(small: dict, big: dict, fixed: dict) -> dict:
    """``(t_big - fixed) / (t_small - fixed)`` of the ``first`` runs' process wall and CPU
    seconds, next to the ratio of the corpora's scales (what a linear cost gives)."""
    fixed_wall = fixed["first"]["process_wall_s"]
    fixed_cpu = fixed["first"]["process_cpu_s"]
    out = {
        "scales": f"{big['scale']:g}/{small['scale']:g}",
        "scale_ratio": big["scale"] / small["scale"],
        "fixed_wall_s": fixed_wall,
        "fixed_cpu_s": fixed_cpu,
    }
    for kind, fixed_s in (("wall", fixed_wall), ("cpu", fixed_cpu)):
        key = f"process_{kind}_s"
        variable_small = small["first"][key] - fixed_s
        variable_big = big["first"][key] - fixed_s
        out[f"{kind}_small_minus_fixed_s"] = variable_small
        out[f"{kind}_big_minus_fixed_s"] = variable_big
        out[kind] = variable_big / variable_small if variable_small > 0 else None
    return out


def snapshot(rev: str, workroot: Path) -> tuple[Path, str]:
    """``git archive rev`` of the repo into a temp folder, with this working tree's ``bench/``
    on top; returns ``(folder, commit)``. Measuring a snapshot keeps concurrent edits of the
    working tree (which change the code version, hence the release id) out of the runs."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix="run_pipeline_code_", dir=workroot))
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    for path in (REPO / "bench").glob("*.py"):
        shutil.copy2(path, folder / "bench" / path.name)
    return folder, commit


def _git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return proc.stdout.strip()


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "free_g": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def targets(results: list[dict], fixed: dict | None = None) -> dict:
    """The issue's targets, evaluated on the largest corpus (the scale ratio and, given the fixed
    cost measurement, the linear cost on the smallest and largest)."""
    if not results:
        return {}
    ordered = sorted(results, key=lambda r: r.get("scale") or 0)
    big = ordered[-1]
    out: dict = {}
    if "speedup_vs_reference" in big:
        v = big["speedup_vs_reference"]
        out["speedup_vs_reference"] = {"value": v, "target": ">= 5", "met": v >= 5.0}
    v = big["first"]["peak_rss_mb"]
    out["peak_rss_mb"] = {"value": v, "target": "<= 1536 (1.5 GiB)", "met": v <= 1536.0}
    for name in ("rerun", "incremental"):
        if name in big:
            v = big[name]["process_wall_s"]
            out[f"no_change_refresh_{name}_s"] = {"value": v, "target": "<= 5", "met": v <= 5.0}
    if "wall_over_parse_floor" in big:
        v = big["wall_over_parse_floor"]
        out["wall_over_parse_floor"] = {"value": v, "target": "<= 8", "met": v <= 8.0}
    if len(ordered) >= 2 and ordered[0].get("scale") and big.get("scale"):
        v = big["first"]["process_wall_s"] / ordered[0]["first"]["process_wall_s"]
        scales = f"{big['scale']:g}/{ordered[0]['scale']:g}"
        out["scale_ratio"] = {"value": v, "scales": scales, "target": "<= 11", "met": v <= 11.0}
        if fixed is not None:
            lin = linear_cost(ordered[0], big, fixed)
            v, limit = lin["wall"], lin["scale_ratio"]
            out["linear_cost"] = {
                "value": v,
                "scales": scales,
                "fixed_s": lin["fixed_wall_s"],
                "target": f"<= {limit:g}",
                "met": v is not None and v <= limit,
            }
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _f(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def format_pipeline(name: str, run: dict) -> list[str]:
    lines = [
        f"  pipeline {name} ({run['mode']}): load {run['loadavg_before']} -> "
        f"{run['loadavg_after']}"
        + (f", release {run['release'].get('status')}" if run.get("release") else "")
        + (
            f", launched run: {run['launched_run']}, stale: {len(run['stale'])}"
            if "launched_run" in run
            else ""
        ),
        f"    {'stage':28s} {'steps':>5s} {'wall s':>8s} {'cpu s':>8s} {'peak RSS MiB':>13s}",
    ]
    for run_name, measured in run["runs"].items():
        if run_name != "full_refresh" and "full_refresh" in run["runs"]:
            continue
        for group in GROUPS:
            g = measured["groups"].get(group)
            if not g:
                continue
            lines.append(
                f"    {group:28s} {g['steps']:5d} {_f(g['wall_s']):>8s} {_f(g['cpu_s']):>8s} "
                f"{_f(g['peak_rss_mb'], 0):>13s}"
            )
            for sub, agg in measured["substages"].items():
                if SUBSTAGE_GROUP[sub] == group:
                    lines.append(
                        f"      {sub:26s} {agg['steps']:5d} {_f(agg['wall_s']):>8s} "
                        f"{_f(agg['cpu_s']):>8s} {_f(agg['peak_rss_mb'], 0):>13s}"
                    )
        r = measured["run"]
        lines.append(
            f"    {'dagster, outside steps':28s} {'':5s} {_f(r.get('outside_steps_s')):>8s}"
        )
    return lines + _process_lines(run, "startup (imports, defs)", "after the run (log, exit)")


def _process_lines(run: dict, startup: str, after: str) -> list[str]:
    """The closing rows of a run's table: startup, time after the work, process total."""
    rest = run["process_wall_s"] - run["startup_s"] - run["work_s"]
    return [
        f"    {startup:28s} {'':5s} {_f(run['startup_s']):>8s}",
        f"    {after:28s} {'':5s} {_f(rest):>8s}",
        f"    {'TOTAL (process)':28s} {'':5s} {_f(run['process_wall_s']):>8s} "
        f"{_f(run['process_cpu_s']):>8s} {_f(run['peak_rss_mb'], 0):>13s}",
    ]


def format_reference(run: dict) -> list[str]:
    lines = [
        f"  reference: load {run['loadavg_before']} -> {run['loadavg_after']}",
        f"    {'stage':28s} {'':5s} {'wall s':>8s} {'cpu s':>8s} {'peak RSS MiB':>13s}",
    ]
    for stage, m in run["stages"].items():
        lines.append(
            f"    {stage:28s} {'':5s} {_f(m['wall_s']):>8s} {_f(m['cpu_s']):>8s} "
            f"{_f(m['peak_rss_mb'], 0):>13s}"
        )
    return lines + _process_lines(run, "startup (imports)", "after the run (exit)")


def format_report(report: dict) -> str:
    lines = [
        f"machine: {report['machine']['nproc']} CPUs, {report['machine']['cpu_model']}; "
        f"{report['date']}; code {report['code']}"
    ]
    for r in report["corpora"]:
        lines.append("")
        lines.append(
            f"corpus {r['corpus']} (scale {r['scale']}, {r['preference_rows']} preference rows "
            f"+ {r['red_team_rows']} red-team, {r['corpus_bytes'] / 1e6:.0f} MB)"
        )
        for name in ("first", "rerun", "incremental"):
            if name in r:
                lines += format_pipeline(name, r[name])
        if "parse_floor" in r:
            f = r["parse_floor"]
            lines.append(
                f"  parse floor: {f['files']} files, {f['decompressed_bytes'] / 1e6:,.0f} MB "
                f"decoded, {f['rows']:,} rows: wall {f['wall_s']:.2f} s, CPU {f['cpu_s']:.2f} s "
                f"({f['threads']} threads); pipeline first run / floor: wall "
                f"{r['wall_over_parse_floor']:.1f}x, CPU {r['cpu_over_parse_floor']:.1f}x"
            )
        if "reference" in r:
            lines += format_reference(r["reference"])
            lines.append(
                f"  reference / pipeline: wall {r['speedup_vs_reference']:.2f}x, "
                f"CPU {r['cpu_ratio_vs_reference']:.2f}x"
            )
    if report.get("fixed_cost"):
        fixed = report["fixed_cost"]["first"]
        lines.append("")
        lines.append(
            f"fixed cost (first run on a scale-{report['fixed_cost']['scale']} corpus, "
            f"{report['fixed_cost']['preference_rows']} preference rows): wall "
            f"{fixed['process_wall_s']:.1f} s, CPU {fixed['process_cpu_s']:.1f} s, peak RSS "
            f"{fixed['peak_rss_mb']:,.0f} MiB"
        )
        lines += format_pipeline("first", fixed)
    if report.get("linear_cost"):
        lin = report["linear_cost"]
        lines.append(
            f"linear cost {lin['scales']}: (t_big - fixed) / (t_small - fixed) = wall "
            f"{_f(lin['wall'], 2)} ({_f(lin['wall_big_minus_fixed_s'])} / "
            f"{_f(lin['wall_small_minus_fixed_s'])} s), CPU {_f(lin['cpu'], 2)} "
            f"({_f(lin['cpu_big_minus_fixed_s'])} / {_f(lin['cpu_small_minus_fixed_s'])} s); "
            f"scale ratio {lin['scale_ratio']:g}"
        )
    if report.get("targets"):
        lines.append("")
        lines.append("targets (largest corpus):")
        for name, t in report["targets"].items():
            lines.append(
                f"  {name:34s} {_f(t['value'], 2):>10s}  target {t['target']:18s} "
                f"{'MET' if t['met'] else 'NOT MET'}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", action="append", required=True, help="bench.synth mirror")
    parser.add_argument("--compare", action="store_true", help="also run bench.reference_pipeline")
    parser.add_argument("--no-refresh", action="store_true", help="skip the two no-change runs")
    parser.add_argument("--no-floor", action="store_true", help="skip the parse floor")
    parser.add_argument(
        "--no-fixed-cost", action="store_true", help="skip the tiny-corpus run (fixed cost)"
    )
    parser.add_argument("--out", help="write the results JSON here")
    parser.add_argument("--workroot", default=tempfile.gettempdir(), help="temp folders go here")
    parser.add_argument(
        "--snapshot",
        metavar="REV",
        help="measure `git archive REV` (plus this bench/) instead of the working tree",
    )
    # one measurement in this process (used by the subprocesses and for profiling)
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["full", "incremental"], default="full")
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--parse-floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.parse_floor:
        started = process_start_epoch()
        out = parse_floor(Path(args.corpus[0]).resolve())
        out["startup_s"] = time.time() - started if started else None
        out["peak_rss_mb"] = rss_mb()
        text = json.dumps(out, indent=1)
        if args.result:
            Path(args.result).write_text(text)
        else:
            print(text)
        return 0
    if args.in_process:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="run_pipeline_"))
        out = run_in_process(Path(args.corpus[0]).resolve(), workdir, args.mode)
        text = json.dumps(out, indent=1, default=str)
        if args.result:
            Path(args.result).write_text(text)
        else:
            print(text)
        return 0 if out["success"] else 1
    workroot = Path(args.workroot)
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python -m bench.run_pipeline", *(argv or sys.argv[1:])]),
        "corpora": [],
    }
    code_dir = REPO
    if args.snapshot:
        code_dir, commit = snapshot(args.snapshot, workroot)
        report["code"] = {"snapshot": args.snapshot, "commit": commit}
    else:
        dirty = _git("status", "--porcelain", "--", "curation", "assets", "pipelines")
        report["code"] = {"worktree": str(REPO), "head": _git("rev-parse", "HEAD")}
        report["code"]["dirty"] = bool(dirty)
    try:
        for corpus in args.corpus:
            report["corpora"].append(
                measure_corpus(
                    Path(corpus).resolve(),
                    workroot,
                    args.compare,
                    not args.no_refresh,
                    code_dir,
                    floor=not args.no_floor,
                )
            )
        if not args.no_fixed_cost:
            report["fixed_cost"] = measure_fixed_cost(workroot, code_dir)
    finally:
        if code_dir != REPO:
            shutil.rmtree(code_dir, ignore_errors=True)
    scaled = sorted((r for r in report["corpora"] if r.get("scale")), key=lambda r: r["scale"])
    if report.get("fixed_cost") and len(scaled) >= 2:
        report["linear_cost"] = linear_cost(scaled[0], scaled[-1], report["fixed_cost"])
    report["targets"] = targets(report["corpora"], report.get("fixed_cost"))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
