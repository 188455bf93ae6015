"""The DuckLake warehouse (``IBPIPELINE_WAREHOUSE=ducklake``) on the real local PostgreSQL (catalog,
a fresh database per test, dropped afterwards) and real Parquet files under ``<data_dir>/lake/``.

- the definitions, settings and the catalog password on the lake;
- the views, the daily_nav checks and the Postgres copy read the lake;
- every mart keeps its history: a snapshot query returns the row a re-run has since changed.

Writers of the lake at once (conflicting commits retried): ``test_ducklake_writers.py`` (a file of
its own so that ``--dist loadfile`` runs its two-process dbt builds on another worker).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from ibpipeline import settings
from ibpipeline.assets.checks import nav_breaks, open_marts, read_nav_days
from ibpipeline.assets.postgres import PostgresWarehouseResource, postgres_marts
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import warehouse
from ibpipeline.storage.parquet import write_day
from tests.marts.normalized import dbt_build

psycopg2 = pytest.importorskip("psycopg2")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


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
    # the re-run: only the mart asked about and the models under it (the intermediate models
    # are tables, built from the landing rows)
    dbt_build(tmp_path, "--select", "+daily_nav")
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
