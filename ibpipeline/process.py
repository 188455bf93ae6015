"""Child processes that die with the process that started them (Linux ``PR_SET_PDEATHSIG``).

A run worker killed with ``kill -9`` cannot stop its children: the step subprocesses of Dagster's
multiprocess executor keep running, and a ``dbt build`` they started keeps the DuckDB file locked
for the next run. ``children_die_with_this_process()`` makes every ``subprocess.Popen`` started by
the current thread inside the block ask the kernel for ``SIGKILL`` when its parent dies, and, in
a multiprocess step subprocess, binds that step process to its run worker the same way::

    with children_die_with_this_process():
        invocation = dbt.cli(["build"], context=context)   # dagster-dbt starts dbt with Popen

On other systems the block changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

PR_SET_PDEATHSIG = 1
_lock = threading.Lock()
_bound_threads: dict[int, int] = {}  # thread id -> signal for its children
_original_popen = subprocess.Popen


def supported() -> bool:
    """True where ``PR_SET_PDEATHSIG`` exists (Linux)."""
    return sys.platform.startswith("linux")


def _set_pdeathsig(sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def in_dagster_step_subprocess() -> bool:
    """True in a step subprocess of Dagster's multiprocess executor (parent: the run worker).

    Run workers started by a code server are multiprocessing children too; they are not bound,
    since a code server may exit while its runs go on.
    """
    target = getattr(multiprocessing.current_process(), "_target", None)
    return getattr(target, "__name__", "") == "_execute_command_in_child_process"


def bind_this_process_to_parent(sig: int = signal.SIGKILL) -> None:
    """This process gets ``sig`` when its parent dies (now or already)."""
    parent = os.getppid()
    _set_pdeathsig(sig)
    if parent == 1 or os.getppid() != parent:
        os.kill(os.getpid(), sig)


def die_with_parent_preexec(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the calling thread's process dies.

    The parent's pid is taken now, so a parent that dies between fork and ``prctl`` is noticed.
    """
    parent = os.getpid()

    def preexec() -> None:
        _set_pdeathsig(sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


class _BoundPopen(_original_popen):  # type: ignore[misc, valid-type]
    def __init__(self, *args, **kwargs) -> None:
        sig = _bound_threads.get(threading.get_ident())
        if sig is not None and kwargs.get("preexec_fn") is None:
            kwargs["preexec_fn"] = die_with_parent_preexec(sig)
        super().__init__(*args, **kwargs)


@contextlib.contextmanager
def children_die_with_this_process(sig: int = signal.SIGKILL) -> Iterator[None]:
    """Within the block, processes this thread starts with ``subprocess.Popen`` get ``sig`` when
    this process dies (also by ``kill -9``). Other threads are unaffected. In a multiprocess step
    subprocess, this process is also bound to its run worker (``bind_this_process_to_parent``).

    ``PR_SET_PDEATHSIG`` fires when the *thread* that started the child exits, so keep the
    thread alive while the child runs (dagster-dbt streams dbt's output in the same thread).
    """
    if not supported():
        yield
        return
    if in_dagster_step_subprocess():
        bind_this_process_to_parent(sig)
    ident = threading.get_ident()
    with _lock:
        previous = _bound_threads.get(ident)
        _bound_threads[ident] = sig
        subprocess.Popen = _BoundPopen  # type: ignore[misc]
    try:
        yield
    finally:
        with _lock:
            if previous is None:
                del _bound_threads[ident]
            else:
                _bound_threads[ident] = previous
            if not _bound_threads:
                subprocess.Popen = _original_popen  # type: ignore[misc]
