"""File storage: content-addressed raw statements, hive-partitioned Parquet, the DuckDB views.

``atomic_write_bytes`` is the one way files are replaced: readers see the old file or the new one,
never a partial write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"
FILE_MODE = 0o644
"""Mode of every file written through ``atomic_target`` (owner writes, everyone reads)."""
STALE_TMP_SECONDS = 15 * 60
"""A temp file of ``atomic_target`` older than this was left by a killed writer."""


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success fsync it and ``os.replace`` it onto ``path``.

    The temp file lives in the same directory (same filesystem, so the rename is atomic) and is
    named ``.<name>.<random>.tmp`` so globs like ``*.parquet`` never match it. On any exception the
    temp file is removed and ``path`` is left as it was. The file's data is flushed before the
    rename, so a crash leaves the old or the new content, never an empty or partial file; the
    temp file a killed writer leaves is removed by the next write into that folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; data files are readable by analysts
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder: Path, older_than_s: float = STALE_TMP_SECONDS) -> int:
    """Delete ``.<name>.<random>.tmp`` files in ``folder`` not modified for ``older_than_s``
    seconds (left by a killed writer; a live writer's file is younger). Returns how many."""
    cutoff = time.time() - older_than_s
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if not (entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX)):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, ``os.replace``)."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Let ``writer(tmp_path)`` produce the file, then replace ``path`` with it atomically."""
    with atomic_target(path) as tmp:
        writer(tmp)


def _fsync(path: Path) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
