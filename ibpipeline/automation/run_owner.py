"""Runs executed inside a CLI process, and what happens when that process is killed.

``ibpipeline backfill``, ``ibpipeline import`` and ``ibpipeline demo`` execute their run in their
own process (``execute_in_process``). No code server or daemon watches such a run: when the process
is killed (``kill -9``, OOM killer, a closed terminal's SIGKILL) the run stays STARTED forever and
keeps the pool slots its steps had claimed, so every later step of pool ``duckdb_writer`` logs
"Step blocked by limit for pool duckdb_writer" indefinitely (with a daemon: until run monitoring's
``max_runtime_seconds``, 6 h).

So each such run is tagged with the process executing it (``owner_tags``: host name, pid, the
process's start time, and the run's own id), and ``fail_runs_of_dead_processes`` marks failed
every unfinished run of this host whose process is gone, freeing its pool slots. The CLI calls it
before a run starts, and every ``CHECK_INTERVAL_S`` while its run goes on (``execute_here``), so a
step waiting for a slot held by a run that dies meanwhile goes ahead too.

A process is gone when ``kill(pid, 0)`` finds none, when it is a zombie, or when the pid now
belongs to a process started at another time (pid reuse; ``/proc/<pid>/stat`` field 22). A re-
execution of such a run (UI, or ``run_retries`` with its parent's tags) carries copies of the tags:
they name another run id, so the new run is never mistaken for the dead one. Runs of other hosts
are left alone (their processes cannot be checked from here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

HOST_TAG = "ibpipeline/host"
PID_TAG = "ibpipeline/pid"
PID_START_TAG = "ibpipeline/pid_start"
"""Start time of the process (clock ticks after boot, ``/proc/<pid>/stat`` field 22; Linux)."""
PID_RUN_TAG = "ibpipeline/pid_run_id"
"""The run the process executes: a copy of the tags on another run (a re-execution) names the
wrong run id and is ignored."""
CHECK_INTERVAL_S = 10.0
"""Seconds between checks for runs of dead processes while a CLI run goes on."""
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

_log = logging.getLogger(__name__)


def host_name() -> str:
    """This machine's name as recorded in ``HOST_TAG``."""
    return socket.gethostname()


def _stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of ``pid`` from ``/proc/<pid>/stat``; None when unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name (field 2) may hold spaces
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # fields 3 and 22


def process_start(pid: int) -> str | None:
    """Start time of ``pid`` (clock ticks after boot) where ``/proc`` has it, else None."""
    stat = _stat(pid)
    return stat[1] if stat else None


def owner_tags(run_id: str) -> dict[str, str]:
    """Tags naming this process as the one executing run ``run_id``."""
    tags = {HOST_TAG: host_name(), PID_TAG: str(os.getpid()), PID_RUN_TAG: run_id}
    start = process_start(os.getpid())
    if start is not None:
        tags[PID_START_TAG] = start
    return tags


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` exists, is not a zombie and (when ``start`` is given and ``/proc``
    can tell) is the process started then, not a later one that reuses its pid."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    stat = _stat(pid)
    if stat is None:
        return True
    state, started = stat
    if state in ("Z", "X"):
        return False
    return start is None or started == start


def dead_owner(run: dg.DagsterRun, host: str) -> int | None:
    """The pid of the dead process that was executing ``run`` on ``host`` (None: not a run of a
    process of ``host``, a copy of another run's tags, or its process is alive)."""
    tags = run.tags
    if tags.get(HOST_TAG) != host or tags.get(PID_RUN_TAG) != run.run_id:
        return None
    try:
        pid = int(tags[PID_TAG])
    except (KeyError, ValueError):
        return None
    return None if process_alive(pid, tags.get(PID_START_TAG)) else pid


def fail_runs_of_dead_processes(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Mark failed every unfinished run executed by a process of this host that is gone, and free
    the pool slots it held (its pending slot claims too); return those runs."""
    host = host_name()
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: host})):
        pid = dead_owner(run, host)
        if pid is None:
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:  # another process was quicker
            continue
        instance.report_run_failed(
            current,
            f"The process executing this run (pid {pid} on {host}) is gone, e.g. killed: run "
            "marked failed and its pool slots freed by "
            f"pid {os.getpid()}.",
        )
        storage = instance.event_log_storage
        if storage.supports_global_concurrency_limits:
            storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(current)
    return failed


def report_failed(runs: list[dg.DagsterRun]) -> None:
    """One warning per run ``fail_runs_of_dead_processes`` failed."""
    for run in runs:
        _log.warning(
            "run %s of %s was left unfinished by pid %s, which is gone: marked failed, its pool "
            "slots freed",
            run.run_id,
            run.job_name,
            run.tags.get(PID_TAG),
        )


def check_now(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """``fail_runs_of_dead_processes`` with a warning per run it failed; a storage error is
    logged, not raised (the check must never fail the caller's run)."""
    try:
        failed = fail_runs_of_dead_processes(instance)
    except Exception:  # noqa: BLE001
        _log.warning("checking for runs of dead processes failed", exc_info=True)
        return []
    report_failed(failed)
    return failed


@contextlib.contextmanager
def checking_for_dead_runs(
    instance: dg.DagsterInstance, interval_s: float = CHECK_INTERVAL_S
) -> Iterator[None]:
    """Within the block, a thread runs ``check_now`` every ``interval_s`` seconds (a step of this
    process may be waiting for a slot of a run whose process dies meanwhile)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            check_now(instance)

    thread = threading.Thread(target=loop, name="ibpipeline-dead-run-check", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


def execute_here(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    *,
    tags: Mapping[str, str] | None = None,
    check_interval_s: float = CHECK_INTERVAL_S,
    **kwargs: Any,
) -> dg.ExecuteInProcessResult:
    """``job.execute_in_process`` on ``instance`` as a run tagged with this process
    (``owner_tags``), after failing the runs of dead processes of this host and while checking for
    them every ``check_interval_s`` seconds."""
    check_now(instance)
    run_id = str(uuid.uuid4())
    with checking_for_dead_runs(instance, check_interval_s):
        return job.execute_in_process(
            instance=instance,
            run_id=run_id,
            tags={**(tags or {}), **owner_tags(run_id)},
            **kwargs,
        )
