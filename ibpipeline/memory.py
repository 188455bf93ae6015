"""Handing freed memory back to the operating system after a large step.

A step that parsed a statement of hundreds of MB frees its Arrow buffers and Python objects when
it ends, but the allocators keep the pages for reuse: Arrow's memory pool (mimalloc or jemalloc)
and glibc's malloc (fragmented arenas). In one process (``execute_in_process``, the in-process
executor, a run worker) the next steps then start from that high resident set and add their own.
:func:`release_memory` asks both to return unused pages; it frees nothing still referenced, so
calling it is always safe (it costs a few milliseconds).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

import pyarrow as pa


def _malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)`` (return free heap pages of every arena); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim(0))
    return False


def release_memory() -> None:
    """Return the unused pages of Arrow's default memory pool and of glibc's malloc to the OS."""
    pa.default_memory_pool().release_unused()
    _malloc_trim()
