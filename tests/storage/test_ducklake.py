"""The DuckLake warehouse (``IBPIPELINE_WAREHOUSE=ducklake``) on the real local PostgreSQL (catalog,
a fresh database per test, dropped afterwards) and real Parquet files under ``<data_dir>/lake/``.

- dbt on the ``ducklake`` target builds the same mart rows as on the embedded file;
- two processes writing the lake at once (landing loads, dbt builds of different windows) both
  land: conflicting commits are retried;
- every mart keeps its history: a snapshot query returns the row a re-run has since changed.
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

from ibpipeline import settings
from ibpipeline.assets.checks import nav_breaks, open_marts, read_nav_days
from ibpipeline.assets.marts import DAILY_SELECT, landing_tables, stream_retrying_conflicts
from ibpipeline.assets.postgres import PostgresWarehouseResource, postgres_marts
from ibpipeline.flex.parse import parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.resources import DataDirResource
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.storage import warehouse
from ibpipeline.storage.parquet import table_glob, write_day
from ibpipeline.world import World
from tests.marts.normalized import DBT, PROJECT, dbt_build
from tests.postgres_db import PG, fresh_database

psycopg2 = pytest.importorskip("psycopg2")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
START, END = date(2024, 1, 2), date(2024, 1, 19)
TABLES = ("account_info", "nav_daily", "change_in_nav", "cash_balances", "trades", "fx_rates")


@pytest.fixture
def catalog():
    """libpq conninfo of a fresh Postgres database (the lake's catalog), dropped afterwards."""
    with fresh_database("ibp_lake") as name:
        yield f"dbname={name} host={PG['host']} port={PG['port']} user={PG['user']}"


@pytest.fixture
def lake_env(catalog: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process (and the dbt and helper processes it starts) on the DuckLake of ``catalog``."""
    monkeypatch.setenv(settings.WAREHOUSE_ENV, "ducklake")
    monkeypatch.setenv(settings.DUCKLAKE_CATALOG_ENV, catalog)
    monkeypatch.delenv(settings.DUCKLAKE_DATA_PATH_ENV, raising=False)
    monkeypatch.delenv("DBT_TARGET", raising=False)
    return catalog


@pytest.fixture(scope="module")
def statement() -> dict[str, pa.Table]:
    """Normalized tables of a small simulated world (2 accounts, 3 weeks)."""
    world = World(seed=7, n_accounts=2, inception=START)
    parsed = parse_statement(
        render_statement(world, [a.account_id for a in world.accounts], START, END)
    )
    tables = {name: parsed.tables[name] for name in TABLES}
    tables["positions_daily"] = reconstruct_daily_positions(parsed)
    return tables


def write_normalized(data_dir: Path, tables: dict[str, pa.Table]) -> None:
    """One Parquet file per table and date, as the normalized assets write."""
    for name, table in tables.items():
        days = table["date"].to_pylist()
        for day in sorted(set(days)):
            idx = [i for i, d in enumerate(days) if d == day]
            write_day(name, day, table.take(pa.array(idx)), data_dir=data_dir)


def mart_frame(data_dir: Path, name: str) -> pd.DataFrame:
    """Every row of one mart, sorted on every column (an order-free comparison)."""
    with warehouse.connect(data_dir, read_only=True) as con:
        frame = con.sql(f'SELECT * FROM main."{name}"').df()
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def run_window(data_dir: Path, start: date, end: date) -> int:
    """Load ``start <= date < end`` into landing and build those days' marts, as one
    ``daily_marts`` step does, again while dbt fails only on commit conflicts; return how many
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
        "import sys, datetime as d; from tests.storage.test_ducklake import run_window; "
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


def read_by_views_checks_and_the_postgres_copy(
    data_dir: Path, catalog: str, statement: dict[str, pa.Table]
) -> None:
    """The views, the daily_nav checks and ``postgres_marts`` work on the lake."""
    counts = warehouse.refresh_views(data_dir)
    assert counts["nav_daily"] == statement["nav_daily"].num_rows
    with open_marts(data_dir) as con:
        assert not nav_breaks(read_nav_days(con))
        assert con.execute("SELECT count(*) FROM nav_daily").fetchone()[0] == counts["nav_daily"]
    resources = {
        "data_dir": DataDirResource(path=str(data_dir)),
        "postgres_warehouse": PostgresWarehouseResource(dsn=catalog, schema_name="marts_copy"),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([postgres_marts], instance=instance, resources=resources)
    assert result.success
    copied = result.asset_materializations_for_node("postgres_marts")[0].metadata
    assert copied["rows_daily_nav"].value == mart_frame(data_dir, "daily_nav").shape[0]


def test_definitions_on_the_lake_take_no_writer_pool(lake_env: str) -> None:
    code = (
        "import ibpipeline.definitions as d; g = d.defs.resolve_asset_graph(); "
        "print(sorted({p for k in g.get_all_asset_keys() for p in (g.get(k).pools or ())}))"
    )
    env = {**os.environ, settings.FLEX_TOKEN_ENV: "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pools = done.stdout.splitlines()[-1]
    assert "flex_api" in pools and "duckdb_writer" not in pools, done.stdout


def test_lake_settings_and_the_catalog_password_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.WAREHOUSE_ENV, raising=False)
    assert warehouse.lake_config(tmp_path) is None
    assert warehouse.writer_pool() == "duckdb_writer"
    monkeypatch.setenv(settings.WAREHOUSE_ENV, "ducklake")
    monkeypatch.delenv(settings.DUCKLAKE_CATALOG_ENV, raising=False)
    with pytest.raises(ValueError, match=settings.DUCKLAKE_CATALOG_ENV):
        warehouse.lake_config(tmp_path)
    secret = "dbname=x host=127.0.0.1 port=1 user=u password=s3cr3t connect_timeout=1"
    monkeypatch.setenv(settings.DUCKLAKE_CATALOG_ENV, secret)
    config = warehouse.lake_config(tmp_path)
    assert config.data_path == tmp_path / "lake"
    assert warehouse.writer_pool() is None
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in warehouse.describe(tmp_path)
    assert warehouse.redact("postgresql://u:s3cr3t@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(duckdb.Error) as failed:
        warehouse.connect(tmp_path)
    assert "s3cr3t" not in str(failed.value) and "password=***" in str(failed.value)
    monkeypatch.setenv(settings.WAREHOUSE_ENV, "sqlite")
    with pytest.raises(ValueError, match="duckdb, ducklake"):
        settings.warehouse_kind()


def test_two_processes_write_the_lake_at_once_and_both_land(
    tmp_path: Path, statement: dict[str, pa.Table], lake_env: str
) -> None:
    write_normalized(tmp_path, statement)
    dbt_build(tmp_path)  # the full history, then two runs re-build disjoint windows at once
    before = mart_frame(tmp_path, "daily_nav")
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


def test_time_travel_returns_what_the_report_said_before_a_rerun(
    tmp_path: Path, statement: dict[str, pa.Table], lake_env: str
) -> None:
    write_normalized(tmp_path, statement)
    dbt_build(tmp_path)
    read_by_views_checks_and_the_postgres_copy(tmp_path, lake_env, statement)
    nav = statement["nav_daily"]
    account, day = nav["account_id"][3].as_py(), nav["date"][3].as_py()
    sql = "SELECT nav FROM daily_nav WHERE account_id = ? AND date = ?"
    with warehouse.connect(tmp_path, read_only=True) as con:
        (version, built_at) = con.execute(
            "SELECT max(snapshot_id), max(snapshot_time) FROM ducklake_snapshots('lake')"
        ).fetchone()
        reported = con.execute(sql, [account, day]).fetchone()[0]
    # IBKR restates that day: a re-run over the new file changes the mart row
    day_rows = [r for r in nav.to_pylist() if r["date"] == day]
    for row in day_rows:
        if row["account_id"] == account:
            row["total_base"] += 100  # a cash correction: the components still add up
            row["cash_base"] += 100
    write_day("nav_daily", day, pa.Table.from_pylist(day_rows, nav.schema), data_dir=tmp_path)
    dbt_build(tmp_path)
    with warehouse.connect(tmp_path, read_only=True) as con:
        now = con.execute(sql, [account, day]).fetchone()[0]
        then = con.execute(
            "SELECT nav FROM daily_nav AT (VERSION => ?) WHERE account_id = ? AND date = ?",
            [version, account, day],
        ).fetchone()[0]
        at_time = con.execute(
            "SELECT nav FROM lake.daily_nav AT (TIMESTAMP => ?::TIMESTAMPTZ) "
            "WHERE account_id = ? AND date = ?",
            [built_at, account, day],
        ).fetchone()[0]
        changes = con.execute(
            "SELECT count(*) FROM ducklake_snapshots('lake') WHERE snapshot_id > ?", [version]
        ).fetchone()[0]
    assert now == reported + 100
    assert then == reported and at_time == reported
    assert changes > 0


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


def test_a_file_of_a_newer_duckdb_fails_with_the_way_out(tmp_path: Path) -> None:
    path = warehouse.warehouse_path(tmp_path)
    header = bytes.fromhex(  # the first block of a file written by duckdb 2.0.1 (version 999)
        "b792fa70d54667534455434be7030000000000000000000000000000000000000000000000000000"
        "00000000000000000000000076322e302e3100000000000000000000000000000000000000000000"
        "00000000386437383131346539300000000000000000000000000000000000000000000000000000"
        "00000000c75cd90e04582d4c522df490cd3d08cd"
    )
    path.write_bytes(header.ljust(3 * 4096, b"\0"))
    with pytest.raises(duckdb.IOException, match="rebuild the marts over the whole history"):
        warehouse.connect(tmp_path, read_only=True)
