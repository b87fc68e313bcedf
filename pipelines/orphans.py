"""Runs whose process is gone: a CLI run killed with ``kill -9`` (or a crashed machine) never
records its end, stays ``STARTED`` for ever and, while it does, switches off the clean-up of stage
tables (``assets/io.py`` waits for executing runs).

Every run the CLI executes in its own process is tagged with the host and the process (pid and
the process's start time, so a recycled pid is not taken for the run's). The next ``rlhf-curate
run`` or ``refresh`` on the same host marks the runs whose process no longer exists as failed,
with the reason in their event log. Runs of other hosts are left alone: on a multi-machine
deployment Dagster's run monitoring (``deploy/dagster.yaml``) is what fails runs whose worker
died.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

HOST_TAG = "rlhf/host"
PROCESS_TAG = "rlhf/process"
#: States of a run that may still be executing in its process.
_UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat`` field 22);
    None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name, 3 onwards


def process_identity(pid: int | None = None) -> str:
    """``<pid>:<start time>`` of this (or ``pid`` 's) process."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{process_start(pid) or '?'}"


def process_tags() -> dict[str, str]:
    """The tags naming the process that executes a run (put on every run the CLI executes)."""
    return {HOST_TAG: socket.gethostname(), PROCESS_TAG: process_identity()}


def is_alive(identity: str) -> bool:
    """Whether the process ``<pid>:<start time>`` still exists (a recycled pid does not count)."""
    pid_text, _, start = identity.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return True  # not ours to judge
    now = process_start(pid)
    return now is not None and (start in ("", "?") or now == start)


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark as failed the unfinished runs of this host whose process is gone; their ids."""
    host = socket.gethostname()
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: host}))
    failed = []
    for run in runs:
        identity = run.tags.get(PROCESS_TAG, "")
        if not identity or is_alive(identity):
            continue
        pid = identity.partition(":")[0]
        instance.report_run_failed(
            run,
            message=f"the process that executed this run (pid {pid} on {host}) no longer exists "
            "(killed or crashed); marked failed by the next rlhf-curate run or refresh",
        )
        failed.append(run.run_id)
    return failed
