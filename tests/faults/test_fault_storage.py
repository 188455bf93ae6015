"""Faults of the file layer (issue 10, item 6): a temp file left by a killed writer, and an
analyst's read-only DuckDB connection open in another process while the warehouse is written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from ibpipeline import storage
from ibpipeline.storage import warehouse


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "day" / "part-0.parquet"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from ibpipeline.storage import atomic_target\n"
        "with atomic_target(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_bytes(b'half')\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(target)], check=False)
    assert done.returncode == -9
    (left,) = target.parent.glob(".*.tmp")
    fresh = target.parent / ".other.parquet.abc.tmp"  # a live writer's file: too young to remove
    fresh.write_bytes(b"")
    old = time.time() - storage.STALE_TMP_SECONDS - 60
    os.utime(left, (old, old))

    storage.atomic_write_bytes(target, b"new")

    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == [fresh.name, target.name]


@pytest.fixture
def reader(tmp_path):
    """Start a process holding a read-only connection on the warehouse until killed."""
    procs = []

    def start(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import duckdb, sys, time\n"
                "con = duckdb.connect(sys.argv[1], read_only=True)\n"
                "print('open', flush=True)\n"
                "time.sleep(600)\n",
                str(path),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "open"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_warehouse_write_waits_for_a_read_only_reader(tmp_path, reader):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = warehouse.warehouse_path(data_dir)
    duckdb.connect(str(path)).close()
    proc = reader(path)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the analyst closes the notebook
            proc.kill()
            proc.wait()

    con = warehouse.connect_for_write(path, delays_s=(0.01, 0.02, 0.04, 0.08), sleep=sleep)
    con.execute("CREATE TABLE t AS SELECT 1 AS x")
    con.close()
    assert waits == [0.01, 0.02]


def test_refresh_views_retries_then_names_the_lock(tmp_path, reader):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = warehouse.warehouse_path(data_dir)
    duckdb.connect(str(path)).close()
    reader(path)
    started = time.monotonic()
    with pytest.raises(duckdb.IOException, match="lock"):
        warehouse.refresh_views(data_dir, lock_delays_s=(0.05, 0.05))
    assert time.monotonic() - started >= 0.1
