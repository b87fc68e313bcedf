"""What ``rlhf-curate run``/``refresh`` print while the run goes: a table with one line per
finished step, a bar on TTYs, and the run's warnings as plain lines.

A background thread follows the run's events in the instance (the run is found by a unique tag
the CLI puts on it). Every ``STEP_SUCCESS`` / ``STEP_FAILURE`` prints the step, its seconds and
what it produced, named (``2,389 pairs, 119 red-team, 14 quarantined``), from its
materializations' metadata; the seconds come before the free-width text so the columns stay
aligned. A warning a step logs (``10 upstream files absent ...``) is printed under the step's
line as ``warning: ...``, without Dagster's log prefix (Dagster's own console log shows only
with ``--verbose``). While a long step runs on a terminal, a tqdm bar counts its materialized
assets (the 15 ingest files).
"""

from __future__ import annotations

import logging
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import dagster as dg
from dagster import DagsterEventType

TOKEN_TAG = "rlhf/cli_token"
#: Steps that materialize many assets get a progress bar (total = their asset count).
BAR_STEPS = {"ingest_files": 15}
_WATCHED = {
    DagsterEventType.STEP_START,
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.ASSET_MATERIALIZATION,
}
STEP_WIDTH = 34
#: What one row of each stage table is, in the step lines (assets not listed: ``rows (name)``;
#: ``None``: not shown).
ROW_NAMES: dict[str, str | None] = {
    "normalized_pairs": "pairs",
    "deduplicated_pairs": "pairs",
    "curated_pairs": "pairs",
    "red_team": "red-team",
    "dedup_removed": "removed",
    "decontam_removed": "removed",
    "quarantine": "quarantined",
    "reference_files": "reference rows",
    "paraphrases": "paraphrase links",
    "source_files": None,  # one report per file; its rows_read is shown instead
}
#: Assets shown even when they have no rows.
ALWAYS_SHOWN = {"dedup_removed", "decontam_removed", "quarantine"}
#: Metadata of a materialization the lines read.
_KEPT_METADATA = ("dagster/row_count", "present", "rows_read", "pairs")


def header() -> str:
    """The table's header line."""
    return f"  {'step':<{STEP_WIDTH}} {'seconds':>8}  output"


def _ingest_text(assets: Mapping[str, Mapping[str, Any]]) -> str:
    """``2,477 rows read from 5 of 15 files`` (the ingest step's raw assets)."""
    read = sum(int(m.get("rows_read") or 0) for m in assets.values())
    present = sum(1 for m in assets.values() if m.get("present") in (True, "True", "true"))
    return f"{read:,} rows read from {present} of {len(assets)} files"


def output_text(assets: Mapping[str, Mapping[str, Any]]) -> str:
    """What a step produced, from its materializations (asset name -> metadata values).

    ``2,477 rows read from 5 of 15 files``; ``2,389 pairs, 119 red-team, 14 quarantined from
    2,477 rows read (a PKU-SafeRLHF row gives one pair per dimension)``; ``2,324 pairs
    published``.
    """
    if not assets:
        return ""
    if all("rows_read" in m and "present" in m for m in assets.values()):
        return _ingest_text(assets)
    if "release" in assets:
        pairs = assets["release"].get("pairs")
        return f"{int(pairs):,} pairs published" if pairs is not None else ""
    parts = []
    for name, meta in assets.items():
        rows = meta.get("dagster/row_count")
        label = ROW_NAMES.get(name, f"rows ({name})")
        if rows is None or label is None or (not int(rows) and name not in ALWAYS_SHOWN):
            continue
        parts.append((int(rows), label))
    order = ["pairs", "red-team", "removed", "quarantined"]
    parts.sort(key=lambda p: order.index(p[1]) if p[1] in order else len(order))
    text = ", ".join(f"{n:,} {label}" for n, label in parts)
    read = (assets.get("source_files") or {}).get("rows_read")
    if read is not None:
        text += f" from {int(read):,} rows read"
        if sum(n for n, _ in parts) != int(read):
            text += " (a PKU-SafeRLHF row gives one pair per dimension)"
    return text


def stage_line(
    step: str, assets: Mapping[str, Mapping[str, Any]], seconds: float, ok: bool = True
) -> str:
    """``  ingest_files                            5.4  2,477 rows read from 5 of 15 files``."""
    name = step if ok else f"FAILED {step}"
    return f"  {name:<{STEP_WIDTH}} {seconds:8.1f}  {output_text(assets)}".rstrip()


def warning_line(message: str, level: int = logging.WARNING) -> str:
    """A step's warning (or error) under its line: ``    warning: 10 upstream files absent ...``."""
    kind = "error" if level >= logging.ERROR else "warning"
    return f"    {kind}: {' '.join(message.split())}"


class StepPrinter:
    """Turns the run's step events into lines (and bars on a TTY).

    ``warnings``: print the warnings steps log (off with ``--verbose``, where Dagster's own
    console log shows them)."""

    def __init__(self, out: TextIO, tty: bool, warnings: bool = True):
        self.out, self.tty, self.warnings = out, tty, warnings
        self.assets: dict[str, dict[str, dict[str, Any]]] = {}
        self.pending: dict[str | None, list[tuple[int, str]]] = {}
        self.running: set[str] = set()
        self.bars: dict[str, Any] = {}
        self.started = False

    def _print(self, line: str) -> None:
        if not self.started:
            self.started = True
            print(header(), file=self.out)
        print(line, file=self.out, flush=True)

    def handle(self, event: dg.DagsterEvent) -> None:
        """Print or update for one event."""
        step = event.step_key
        if step is None:
            return
        kind = event.event_type
        if kind == DagsterEventType.STEP_START:
            self.running.add(step)
        if kind == DagsterEventType.STEP_START and self.tty and step in BAR_STEPS:
            from tqdm import tqdm

            self.bars[step] = tqdm(
                total=BAR_STEPS[step], desc=f"  {step}", unit="file", leave=False, file=self.out
            )
        elif kind == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            values = {
                key: materialization.metadata[key].value
                for key in _KEPT_METADATA
                if key in materialization.metadata
            }
            self.assets.setdefault(step, {})[materialization.asset_key.to_user_string()] = values
            if step in self.bars:
                self.bars[step].update(1)
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            bar = self.bars.pop(step, None)
            if bar is not None:
                bar.close()
            seconds = (
                event.event_specific_data.duration_ms / 1000
                if kind == DagsterEventType.STEP_SUCCESS and event.event_specific_data
                else 0.0
            )
            ok = kind == DagsterEventType.STEP_SUCCESS
            self._print(stage_line(step, self.assets.get(step, {}), seconds, ok))
            self.running.discard(step)
            for level, message in self.pending.pop(step, []):
                self._print(warning_line(message, level))

    def handle_log(self, step: str | None, level: int, message: str) -> None:
        """A message logged while a step ran: a warning or worse is printed under the step's line
        (at once when it belongs to no step). What Dagster logs about steps that never started
        (``Dependencies for step ... failed``) is left out: the failed step is reported."""
        if not self.warnings or level < logging.WARNING:
            return
        if step is None:
            self._print(warning_line(message, level))
        elif step in self.running:
            self.pending.setdefault(step, []).append((level, message))

    def handle_entry(self, entry: dg.EventLogEntry) -> None:
        """One event log entry: a watched Dagster event, or a message a step logged."""
        if entry.dagster_event is not None:
            if entry.dagster_event.event_type in _WATCHED:
                self.handle(entry.dagster_event)
        else:
            self.handle_log(entry.step_key, entry.level, entry.user_message)

    def finish(self) -> None:
        """Print what is still pending (warnings of steps that never finished)."""
        for messages in self.pending.values():
            for level, message in messages:
                self._print(warning_line(message, level))
        self.pending.clear()


def _follow(instance: dg.DagsterInstance, token: str, printer: StepPrinter, done: threading.Event):
    """Poll the event log of every run tagged ``token`` until ``done`` is set (then drain once)."""
    cursors: dict[str, str | None] = {}
    while True:
        finished = done.wait(0.5)
        for run in reversed(instance.get_runs(filters=dg.RunsFilter(tags={TOKEN_TAG: token}))):
            cursor = cursors.get(run.run_id)
            while True:
                conn = instance.get_records_for_run(run.run_id, cursor=cursor)
                for record in conn.records:
                    printer.handle_entry(record.event_log_entry)
                cursor = conn.cursor
                if not conn.has_more:
                    break
            cursors[run.run_id] = cursor
        if finished:
            printer.finish()
            return


@contextmanager
def follow_run(
    instance: dg.DagsterInstance, out: TextIO | None = None, warnings: bool = True
) -> Iterator[dict[str, str]]:
    """Yield tags to put on the run; print its steps as they finish until the block ends."""
    out = out or sys.stdout
    token = uuid.uuid4().hex
    printer = StepPrinter(out, tty=out.isatty(), warnings=warnings)
    done = threading.Event()
    thread = threading.Thread(target=_follow, args=(instance, token, printer, done), daemon=True)
    thread.start()
    try:
        yield {TOKEN_TAG: token}
    finally:
        done.set()
        # the last drain reads the run's final events; on a loaded machine that takes seconds,
        # and a daemon thread cut short would leave the table without its last steps
        thread.join(timeout=120)
