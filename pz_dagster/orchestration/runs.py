"""Runs that ``pz-dagster run`` starts in its own process (``execute_in_process``): one batch at
a time per partition across processes, and no run left STARTED by a process that died.

Dagster's daemon monitors the runs it launches; an in-process run has no monitor, so a
``pz-dagster run`` killed with SIGKILL used to leave its run STARTED forever. Each in-process
run is tagged with its process (host, pid and the pid's start time, so a reused pid is not
mistaken for it), and the next ``pz-dagster`` command marks such runs failed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
from filelock import FileLock

from pz_dagster.orchestration.optimization import latest_materialization
from pz_dagster.orchestration.store import RecordStore

PROCESS_TAG = "pz/process"
_LIVE = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED)


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in (...) may hold spaces


def process_tags() -> dict[str, str]:
    """Tags naming this process, for the runs it executes in process."""
    pid = os.getpid()
    return {PROCESS_TAG: f"{socket.gethostname()}:{pid}:{_start_time(pid)}"}


def _alive(tag: str) -> bool | None:
    """Whether the process a tag names still runs; None when it ran on another host."""
    host, _, rest = tag.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process of that pid: compare its start time
    return not started or _start_time(pid) == started


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the in-process runs whose process died; their ids."""
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=list(_LIVE))):
        tag = run.tags.get(PROCESS_TAG)
        if tag is None or _alive(tag) is not False:
            continue  # launched by Dagster (its run monitor's business), or still running
        instance.report_run_failed(
            run, message=f"the process that ran it ({tag}) is gone; marked failed by pz-dagster"
        )
        failed.append(run.run_id)
    return failed


def partition_lock(store: RecordStore, query: str, partition: str) -> FileLock:
    """The lock on one batch of a query, held while a process materializes it, so two
    ``pz-dagster run`` never both pay for one batch."""
    return store.lock(query, f"partition-{partition}")


def materialized_since(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey], partition: str, since: float
) -> str | None:
    """The run that materialized every one of ``keys`` for ``partition`` after ``since`` (a
    Unix time), or None."""
    runs = set()
    for key in keys:
        latest = latest_materialization(instance, key, partition)
        if latest is None or latest[0].timestamp <= since:
            return None
        runs.add(latest[0].run_id)
    return sorted(runs)[-1] if runs else None
