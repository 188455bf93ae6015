"""Faults of the file layer (issue 10, item 6): a temp file left by a killed writer, and an
analyst's read-only DuckDB connection open in another process while the warehouse is written
(by the project's own connections, and by dbt in the marts steps)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import dagster as dg
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


# -- dbt steps meeting a reader --------------------------------------------------------------------

MARTS_START, MARTS_END = date(2024, 2, 5), date(2024, 2, 9)
LOCK = "Could not set lock on file"


@pytest.fixture
def imported(tmp_path) -> Path:
    """A data folder holding the normalized tables of a 2-account world statement (imported as
    ``ibpipeline import`` does) and an empty warehouse file."""
    from ibpipeline.inbox import import_statement
    from ibpipeline.sim.flex_statement import render_statement
    from ibpipeline.world import World

    world = World(seed=5, n_accounts=2, inception=date(2024, 1, 2))
    accounts = [a.account_id for a in world.accounts]
    statement = tmp_path / "statement.xml"
    statement.write_bytes(render_statement(world, accounts, MARTS_START, MARTS_END))
    data_dir = tmp_path / "data"
    assert import_statement(data_dir, statement).status == "ingested"
    duckdb.connect(str(warehouse.warehouse_path(data_dir))).close()
    return data_dir


def materialize_marts(assets, instance, data_dir: Path) -> dg.ExecuteInProcessResult:
    from ibpipeline.automation.ranges import range_tags
    from ibpipeline.dbt import dbt_resource
    from ibpipeline.resources import DataDirResource

    return dg.materialize(
        assets,
        instance=instance,
        resources={"dbt": dbt_resource(), "data_dir": DataDirResource(path=str(data_dir))},
        tags=range_tags(MARTS_START.isoformat(), MARTS_END.isoformat()),
        raise_on_error=False,
    )


def step_events(instance, run_id: str, event_type: dg.DagsterEventType, step: str) -> list:
    return [e for e in instance.all_logs(run_id, of_type=event_type) if e.step_key == step]


def test_only_dbt_failures_on_the_file_lock_are_lock_errors():
    held = (
        f'Encountered an error:\nIO Error: {LOCK} "/d/ibpipeline.duckdb": Conflicting lock is held '
        "in /usr/bin/python3 (PID 42). However, you would be able to open this database in "
        "read-only mode"
    )
    expected = (
        f'{LOCK} "/d/ibpipeline.duckdb": Conflicting lock is held in /usr/bin/python3 (PID 42)'
    )
    assert warehouse.dbt_lock_error([held, f"Traceback ...\n{held}"], None) == expected
    assert warehouse.dbt_lock_error([held, "Binder Error: column x not found"], None) is None
    failed = {"results": [{"status": "error", "message": "Catalog Error: no table t"}]}
    assert warehouse.dbt_lock_error([held], failed) is None
    assert warehouse.dbt_lock_error([], None) is None


@pytest.mark.slow
def test_dbt_step_retries_while_a_reader_holds_the_warehouse_then_succeeds(
    imported, instance, reader, monkeypatch
):
    """The analyst's read-only connection is open when the run starts and closes once the marts
    step has been put up for retry: the step runs again and the run succeeds."""
    from ibpipeline.assets.marts import dbt_marts

    monkeypatch.setattr(warehouse, "DBT_LOCK_RETRY_DELAYS_S", (2, 2, 2, 2, 2))
    proc = reader(warehouse.warehouse_path(imported))
    results: list[dg.ExecuteInProcessResult] = []
    run = threading.Thread(
        target=lambda: results.append(materialize_marts([dbt_marts], instance, imported)),
        daemon=True,
    )
    run.start()
    deadline = time.monotonic() + 120
    while not instance.get_event_records(
        dg.EventRecordsFilter(dg.DagsterEventType.STEP_UP_FOR_RETRY)
    ):
        assert run.is_alive() and time.monotonic() < deadline, "the step was never retried"
        time.sleep(0.2)
    proc.kill()  # the analyst closes the notebook
    proc.wait()
    run.join(300)
    (result,) = results
    assert result.success
    retried = step_events(
        instance, result.run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY, "dbt_marts"
    )
    assert retried
    warnings = [
        e.message
        for e in instance.all_logs(result.run_id)
        if e.step_key == "dbt_marts" and "is locked by another process" in e.message
    ]
    assert warnings and LOCK in warnings[0] and f"(PID {proc.pid})" in warnings[0]
    with duckdb.connect(str(warehouse.warehouse_path(imported)), read_only=True) as con:
        days = con.execute("select count(distinct date) from daily_nav").fetchone()[0]
    assert days == 5


@pytest.mark.slow
def test_dbt_step_fails_naming_the_lock_when_the_reader_stays(
    imported, instance, reader, monkeypatch
):
    """dbt itself meets the lock: the analyst connects after the step's landing load and before
    dbt starts. The step is retried (its landing load then meets the lock), then fails with the
    file and the holder's PID."""
    from ibpipeline.assets.marts import dbt_marts

    monkeypatch.setattr(warehouse, "DBT_LOCK_RETRY_DELAYS_S", (0.5,))
    path = warehouse.warehouse_path(imported)
    procs: list[subprocess.Popen] = []
    load_landing = warehouse.load_landing

    def load_then_connect(*args, **kwargs):
        loaded = load_landing(*args, **kwargs)  # the real load, then the analyst connects
        if not procs:
            procs.append(reader(path))
        return loaded

    monkeypatch.setattr(warehouse, "load_landing", load_then_connect)
    result = materialize_marts([dbt_marts], instance, imported)
    assert not result.success
    (proc,) = procs
    step = "dbt_marts"
    first_warning = next(
        e.message
        for e in instance.all_logs(result.run_id)
        if e.step_key == step and "is locked by another process" in e.message
    )
    # the reader connected after the first landing load: attempt 1's lock was met by dbt
    assert "attempt 1 of 2" in first_warning and f"(PID {proc.pid})" in first_warning
    assert len(step_events(instance, result.run_id, dg.DagsterEventType.STEP_START, step)) == 1
    assert len(step_events(instance, result.run_id, dg.DagsterEventType.STEP_RESTARTED, step)) == 1
    failure = result.failure_data_for_node(step).error
    while failure.cause is not None and "WarehouseLockedError" not in failure.cls_name:
        failure = failure.cause
    assert failure.cls_name == "WarehouseLockedError"
    assert f"{path} stayed locked by another process through 2 attempts" in failure.message
    assert LOCK in failure.message and f"(PID {proc.pid})" in failure.message
