"""Writers of the DuckLake at once (``IBPIPELINE_WAREHOUSE=ducklake``, catalog on the local
PostgreSQL, fixtures in ``conftest.py``): two processes writing the lake at once (landing loads, dbt
builds of different windows) both land, conflicting commits are retried, and only commit conflicts
are. Split from ``test_ducklake.py`` so that ``--dist loadfile`` runs the two files on two workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from ibpipeline.assets.marts import landing_tables, stream_retrying_conflicts
from ibpipeline.storage import warehouse
from ibpipeline.storage.parquet import table_glob
from tests.marts.normalized import DBT, PROJECT, dbt_build
from tests.storage.test_ducklake import mart_frame, write_normalized

psycopg2 = pytest.importorskip("psycopg2")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DAILY_SELECT = (
    "path:models/staging path:models/intermediate config.materialized:incremental "
    "daily_returns drawdowns"
)
"""The models a date window changes (views, intermediate tables, incremental marts, and the
path-dependent marts, whole tables on the lake): what two runs of disjoint windows race on here
(``dbt_marts`` builds the summary tables too)."""


def run_window(data_dir: Path, start: date, end: date) -> int:
    """Load ``start <= date < end`` into landing and build those days' marts, as one
    ``dbt_marts`` step does, again while dbt fails only on commit conflicts; return how many
    times it ran again."""
    warehouse.load_landing(data_dir, landing_tables(), (start, end))
    dbt_vars = json.dumps({"min_date": start.isoformat(), "max_date": end.isoformat()})
    target = data_dir / f"dbt_target_{start:%m%d}"
    command = [
        str(DBT),
        "build",
        "--select",
        DAILY_SELECT,
        "--vars",
        dbt_vars,
        "--project-dir",
        str(PROJECT),
        "--profiles-dir",
        str(PROJECT),
        "--target-path",
        str(target),
        "--log-path",
        str(target),
    ]
    env = {**os.environ, **warehouse.dbt_env(data_dir)}
    for attempt in range(warehouse.DBT_CONFLICT_RETRIES + 1):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode == 0:
            return attempt
        results = json.loads((target / "run_results.json").read_text())
        if not warehouse.dbt_conflicts(results):
            raise AssertionError(f"dbt build failed:\n{done.stdout[-6000:]}")
        time.sleep(warehouse.conflict_wait_s(attempt + 1))
    raise AssertionError(f"still conflicting after {attempt} retries")


def start_window(data_dir: Path, start: date, end: date) -> subprocess.Popen:
    """``run_window`` in a process of its own (prints the retry count)."""
    code = (
        "import sys, datetime as d; from tests.storage.test_ducklake_writers import run_window; "
        "print('retries', run_window(__import__('pathlib').Path(sys.argv[1]), "
        "d.date.fromisoformat(sys.argv[2]), d.date.fromisoformat(sys.argv[3])))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(data_dir), start.isoformat(), end.isoformat()],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_processes_write_the_lake_at_once_and_both_land(
    tmp_path: Path, statement: dict[str, pa.Table], lake_env: str
) -> None:
    write_normalized(tmp_path, statement)
    # the daily marts over the full history (what the windows re-build; the summary marts and
    # their tests are no part of it), then two runs re-build disjoint windows at once
    dbt_build(tmp_path, "--select", DAILY_SELECT)
    before = mart_frame(tmp_path, "daily_nav")
    path_dependent = {name: mart_frame(tmp_path, name) for name in ("daily_returns", "drawdowns")}
    assert len(path_dependent["daily_returns"]) == len(before)
    with warehouse.connect(tmp_path) as con:
        con.execute("DELETE FROM daily_nav")
        con.execute("DELETE FROM landing.nav_daily")
    runs = [start_window(tmp_path, date(1900, 1, 1), date(2024, 1, 10))]
    runs.append(start_window(tmp_path, date(2024, 1, 10), date(9999, 12, 31)))
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-6000:]
        print(output.splitlines()[-1])  # "retries N": how often it met the other run's commits
    pd.testing.assert_frame_equal(mart_frame(tmp_path, "daily_nav"), before)
    # every day once, as the full build had them: the later window's commit did not add days
    # beside the earlier window's rebuild of the same days
    for name, frame in path_dependent.items():
        pd.testing.assert_frame_equal(mart_frame(tmp_path, name), frame)
    with warehouse.connect(tmp_path, read_only=True) as con:
        landed = con.execute("SELECT count(*) FROM landing.nav_daily").fetchone()[0]
    assert landed == statement["nav_daily"].num_rows


def test_landing_loads_of_two_processes_retry_conflicts_and_both_land(
    tmp_path: Path, statement: dict[str, pa.Table], lake_env: str
) -> None:
    write_normalized(tmp_path, statement)
    warehouse.load_landing(tmp_path, ["nav_daily", "trades"])
    code = (
        "import sys, datetime as d; from ibpipeline.storage import warehouse\n"
        "w = (d.date.fromisoformat(sys.argv[2]), d.date.fromisoformat(sys.argv[3]))\n"
        "for _ in range(5): warehouse.load_landing(sys.argv[1], ['nav_daily', 'trades'], w)\n"
    )
    windows = [("2023-01-01", "2024-01-10"), ("2024-01-10", "2025-01-01")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), *w],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for w in windows
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with warehouse.connect(tmp_path, read_only=True) as con:
        counts = con.execute(
            "SELECT (SELECT count(*) FROM landing.nav_daily), (SELECT count(*) FROM landing.trades)"
        ).fetchone()
    assert counts == (statement["nav_daily"].num_rows, statement["trades"].num_rows)


def conflict_results(*messages: str) -> dict:
    return {
        "results": [
            {"unique_id": f"model.ibpipeline.m{i}", "status": "error", "message": m}
            for i, m in enumerate(messages)
        ]
        + [{"unique_id": "model.ibpipeline.ok", "status": "success", "message": "OK"}]
    }


CONFLICT = "Failed to commit DuckLake transaction.\nTransaction conflict - attempting to drop view"


def test_only_builds_failing_on_commit_conflicts_are_run_again() -> None:
    assert warehouse.dbt_conflicts(conflict_results(CONFLICT)) == ["model.ibpipeline.m0"]
    assert warehouse.dbt_conflicts(conflict_results(CONFLICT, "Binder Error: no column x")) == []
    assert warehouse.dbt_conflicts(conflict_results()) == []
    swapped = (  # seen when two builds replaced the same staging view at once
        'Catalog Error: Could not rename view "stg_transfers" to "stg_transfers__dbt_backup": '
        "another entry with this name already exists!"
    )
    assert warehouse.dbt_conflicts(conflict_results(swapped, CONFLICT)) == [
        "model.ibpipeline.m0",
        "model.ibpipeline.m1",
    ]
    swapped_table = (  # two builds replacing the same intermediate table at once
        "Binder Error: Cannot rename table int_fx_rows to int_fx_rows__dbt_backup, since "
        "int_fx_rows__dbt_backup already exists."
    )
    assert warehouse.dbt_conflicts(conflict_results(swapped_table)) == ["model.ibpipeline.m0"]
    other = 'Catalog Error: Table "x" already exists!'
    assert warehouse.dbt_conflicts(conflict_results(other)) == []
    assert 5 <= warehouse.conflict_wait_s(1) <= 7.5 and 10 <= warehouse.conflict_wait_s(2) <= 15


class FailedInvocation:
    def __init__(self, results: dict) -> None:
        self.results = results

    def stream(self):
        yield from ()
        raise DagsterDbtCliRuntimeError("dbt build failed")

    def get_artifact(self, name: str) -> dict:
        return self.results


def test_a_conflicted_dbt_step_asks_dagster_to_run_it_again() -> None:
    context = SimpleNamespace(retry_number=0, log=SimpleNamespace(warning=lambda _: None))
    with pytest.raises(dg.RetryRequested) as retry:
        list(stream_retrying_conflicts(context, FailedInvocation(conflict_results(CONFLICT))))
    assert retry.value.max_retries == warehouse.DBT_CONFLICT_RETRIES
    other = FailedInvocation(conflict_results("Binder Error: no column x"))
    with pytest.raises(DagsterDbtCliRuntimeError):
        list(stream_retrying_conflicts(context, other))
    context.retry_number = warehouse.DBT_CONFLICT_RETRIES
    with pytest.raises(DagsterDbtCliRuntimeError):
        list(stream_retrying_conflicts(context, FailedInvocation(conflict_results(CONFLICT))))


def test_a_commit_conflicting_with_another_writer_is_run_again(
    tmp_path: Path, statement: dict[str, pa.Table], lake_env: str
) -> None:
    write_normalized(tmp_path, statement)
    warehouse.load_landing(tmp_path, ["nav_daily"])
    split, files = date(2024, 1, 10), table_glob(tmp_path, "nav_daily")
    attempts: list[int] = []

    def load_first_window(con: duckdb.DuckDBPyConnection) -> None:
        attempts.append(1)
        with warehouse.transaction(con):
            con.execute("DELETE FROM landing.nav_daily WHERE date < ?", [split])
            if len(attempts) == 1:  # another run commits the other window meanwhile
                warehouse.load_landing(tmp_path, ["nav_daily"], (split, date(2025, 1, 1)))
            con.execute(
                "INSERT INTO landing.nav_daily BY NAME SELECT * FROM read_parquet(?) WHERE date < ?",
                [files, split],
            )

    with warehouse.connect(tmp_path) as con:
        warehouse.retry_conflicts(lambda: load_first_window(con), delays_s=(0.1,))
        rows = con.execute("SELECT count(*) FROM landing.nav_daily").fetchone()[0]
    assert len(attempts) == 2, "the first commit conflicted and was run again"
    assert rows == statement["nav_daily"].num_rows
