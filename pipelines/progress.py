"""What ``rlhf-curate run`` prints while the run goes: one line per finished step, a bar on TTYs.

A background thread follows the run's events in the instance (the run is found by a unique tag
the CLI puts on it): every ``STEP_SUCCESS`` / ``STEP_FAILURE`` prints the step, the rows it
materialized (``dagster/row_count``) and its seconds; while a long step runs on a terminal, a tqdm
bar counts its materialized assets (the 15 ingest files).
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

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


def rows_text(rows: dict[str, int]) -> str:
    """``2,284 rows`` (+ ``105 removed``/``14 quarantined``; ``in 15 assets`` for many)."""
    if not rows:
        return ""
    side = {k: v for k, v in rows.items() if k.endswith("_removed") or k == "quarantine"}
    main = sum(v for k, v in rows.items() if k not in side)
    text = f"{main:,} rows"
    if len(rows) - len(side) > 2:
        text += f" in {len(rows) - len(side)} assets"
    for name, n in sorted(side.items()):
        text += f", {n:,} {'quarantined' if name == 'quarantine' else 'removed'}"
    return text


def stage_line(step: str, rows: dict[str, int], seconds: float, ok: bool = True) -> str:
    """``  ingest_files      2,477 rows in 15 assets     3.4 s``."""
    status = "" if ok else "FAILED "
    return f"  {status}{step:<34} {rows_text(rows):<34} {seconds:6.1f} s"


class StepPrinter:
    """Turns the run's step events into lines (and bars on a TTY)."""

    def __init__(self, out: TextIO, tty: bool):
        self.out, self.tty = out, tty
        self.rows: dict[str, dict[str, int]] = {}
        self.bars: dict[str, object] = {}

    def handle(self, event: dg.DagsterEvent) -> None:
        """Print or update for one event."""
        step = event.step_key
        if step is None:
            return
        kind = event.event_type
        if kind == DagsterEventType.STEP_START and self.tty and step in BAR_STEPS:
            from tqdm import tqdm

            self.bars[step] = tqdm(
                total=BAR_STEPS[step], desc=f"  {step}", unit="file", leave=False, file=self.out
            )
        elif kind == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            count = materialization.metadata.get("dagster/row_count")
            count = count or materialization.metadata.get("pairs")  # the release
            if count is not None:
                self.rows.setdefault(step, {})[materialization.asset_key.to_user_string()] = int(
                    count.value
                )
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
            print(stage_line(step, self.rows.get(step, {}), seconds, ok), file=self.out, flush=True)


def _follow(instance: dg.DagsterInstance, token: str, printer: StepPrinter, done: threading.Event):
    """Poll the events of every run tagged ``token`` until ``done`` is set (then drain once)."""
    cursors: dict[str, str | None] = {}
    while True:
        finished = done.wait(0.5)
        for run in reversed(instance.get_runs(filters=dg.RunsFilter(tags={TOKEN_TAG: token}))):
            cursor = cursors.get(run.run_id)
            while True:
                conn = instance.get_records_for_run(run.run_id, cursor=cursor, of_type=_WATCHED)
                for record in conn.records:
                    if record.event_log_entry.dagster_event is not None:
                        printer.handle(record.event_log_entry.dagster_event)
                cursor = conn.cursor
                if not conn.has_more:
                    break
            cursors[run.run_id] = cursor
        if finished:
            return


@contextmanager
def follow_run(instance: dg.DagsterInstance, out: TextIO | None = None) -> Iterator[dict[str, str]]:
    """Yield tags to put on the run; print its steps as they finish until the block ends."""
    out = out or sys.stdout
    token = uuid.uuid4().hex
    printer = StepPrinter(out, tty=out.isatty())
    done = threading.Event()
    thread = threading.Thread(target=_follow, args=(instance, token, printer, done), daemon=True)
    thread.start()
    try:
        yield {TOKEN_TAG: token}
    finally:
        done.set()
        thread.join(timeout=10)
