"""Against the real local PostgreSQL (127.0.0.1:5432, user postgres, trust auth): a fresh database
per test, dropped afterwards. Skipped when no server answers."""

import contextlib
import os
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

psycopg2 = pytest.importorskip("psycopg2")

from ibpipeline import settings  # noqa: E402
from ibpipeline.assets.postgres import PostgresWarehouseResource, postgres_marts  # noqa: E402
from ibpipeline.resources import DataDirResource  # noqa: E402
from ibpipeline.storage.postgres import PostgresLoadError, postgres_type  # noqa: E402
from tests.postgres_db import PG, fresh_database  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pg_db():
    with fresh_database("ibp_test") as name:
        yield name


def query(db: str, sql: str, params=None):
    con = psycopg2.connect(dbname=db, **PG)
    try:
        with con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        con.close()


@contextlib.contextmanager
def world_sim(token: str):
    """A 3-account world served by the real Flex simulator on loopback."""
    from ibpipeline.flex.ratelimit import RateLimit
    from ibpipeline.sim.flex_server import FlexSimulator, world_statement_source
    from ibpipeline.world import World

    world = World(seed=9, n_accounts=3, inception=date(2024, 1, 2))
    sim = FlexSimulator(
        world_statement_source(world), token, {"800969"}, rate_limits=(RateLimit(1000, 1.0),)
    )
    with sim:
        yield sim, world


def flex_defs(sim, data_dir: Path) -> dg.Definitions:
    from ibpipeline.assets import flex_assets
    from ibpipeline.automation.jobs import flex_daily_job
    from ibpipeline.resources import FlexResource

    flex = FlexResource(
        token=dg.EnvVar(settings.FLEX_TOKEN_ENV),
        query_id="800969",
        base_url=sim.base_url,
        first_poll_delay_s=0.0,
        poll_interval_s=0.01,
        client_rate_limit=False,
    )
    return dg.Definitions(
        assets=flex_assets,
        jobs=[flex_daily_job],
        resources={"flex": flex, "data_dir": DataDirResource(path=str(data_dir))},
    )


@pytest.mark.slow
def test_pipeline_on_postgres_instance_storage(pg_db, tmp_path, monkeypatch, flex_token):
    monkeypatch.setenv("DAGSTER_PG_USERNAME", "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", "5432")
    monkeypatch.setenv("DAGSTER_PG_DB", pg_db)
    monkeypatch.setenv(settings.FLEX_TOKEN_ENV, flex_token)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    data_dir = tmp_path / "data"
    from ibpipeline.automation.backfill import run_backfill

    with (
        world_sim(flex_token) as (sim, world),
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        start, end = date(2024, 2, 5), date(2024, 2, 9)
        result = run_backfill(flex_defs(sim, data_dir), instance, start, end, marts=False)
        accounts = sorted(a.account_id for a in world.accounts)
        assert sorted(result.accounts) == accounts
        assert sim.count("SendRequest") == 1
    runs = query(pg_db, "SELECT status FROM runs ORDER BY create_timestamp")
    assert [r[0] for r in runs] == ["SUCCESS"]
    stored = query(
        pg_db, "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'account'"
    )
    assert sorted(r[0] for r in stored) == accounts
    from ibpipeline.storage import parquet

    nav = parquet.read_table("nav_daily", data_dir=data_dir)
    assert nav.num_rows == len(accounts) * 5
    expected = {
        (a, d): world.day(a, d).nav.total_base
        for a in accounts
        for d in world.business_days(start, end)
    }
    assert {(r["account_id"], r["date"]): r["total_base"] for r in nav.to_pylist()} == expected


def make_marts(path: Path, rows: int) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("DROP TABLE IF EXISTS daily_nav")
        con.execute(
            "CREATE TABLE daily_nav (account_id VARCHAR, date DATE, nav_base DECIMAL(38,10), "
            "ret DOUBLE, note VARCHAR, loaded_at TIMESTAMPTZ, tags VARCHAR[], n BIGINT)"
        )
        data = [
            (
                "U1111111",
                date(2024, 1, 2),
                "12345678901234567890.0123456789",
                0.0125,
                'a,"b"\nc',
                datetime(2024, 1, 2, 21, 0, tzinfo=UTC),
                ["x", "y"],
                7,
            ),
            ("U2222222", date(2024, 1, 3), "-0.0000000001", None, "", None, None, None),
            (
                "U3333333",
                date(2024, 1, 4),
                None,
                -1.5,
                None,
                datetime(2024, 1, 4, tzinfo=UTC),
                [],
                0,
            ),
        ][:rows]
        con.executemany("INSERT INTO daily_nav VALUES (?, ?, ?, ?, ?, ?, ?, ?)", data)
        con.execute("CREATE OR REPLACE VIEW stg_view AS SELECT 1 AS x")


def test_postgres_marts_copies_exact_values_and_replaces(pg_db, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_marts(data_dir / "ibpipeline.duckdb", rows=3)
    monkeypatch.setenv(
        settings.POSTGRES_DSN_ENV, f"host=127.0.0.1 port=5432 user=postgres dbname={pg_db}"
    )
    resources = {
        "data_dir": DataDirResource(path=str(data_dir)),
        "postgres_warehouse": PostgresWarehouseResource(
            dsn=dg.EnvVar(settings.POSTGRES_DSN_ENV), schema_name="marts"
        ),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([postgres_marts], instance=instance, resources=resources)
        assert result.success
        meta = result.asset_materializations_for_node("postgres_marts")[0].metadata
        assert meta["tables"].value == ["daily_nav"]
        assert "performance_summary" in meta["missing"].value
        rows = query(pg_db, "SELECT * FROM marts.daily_nav ORDER BY account_id")
        assert rows[0][:5] == (
            "U1111111",
            date(2024, 1, 2),
            Decimal("12345678901234567890.0123456789"),
            0.0125,
            'a,"b"\nc',
        )
        assert rows[0][5] == datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
        assert rows[0][6] == "[x, y]" and rows[0][7] == 7
        assert rows[1][2:] == (Decimal("-0.0000000001"), None, "", None, None, None)
        assert rows[2][2] is None and rows[2][4] is None
        types = dict(
            query(
                pg_db,
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'marts' AND table_name = 'daily_nav'",
            )
        )
        assert types["nav_base"] == "numeric" and types["loaded_at"] == "timestamp with time zone"
        assert query(
            pg_db, "SELECT count(*) FROM information_schema.tables WHERE table_schema='marts'"
        ) == [(1,)]

        make_marts(data_dir / "ibpipeline.duckdb", rows=1)
        assert dg.materialize([postgres_marts], instance=instance, resources=resources).success
        assert query(pg_db, "SELECT account_id FROM marts.daily_nav") == [("U1111111",)]


def test_postgres_marts_without_marts_fails_clearly(pg_db, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with duckdb.connect(str(data_dir / "ibpipeline.duckdb")) as con:
        con.execute("CREATE TABLE unrelated (x INTEGER)")
    monkeypatch.setenv(settings.POSTGRES_DSN_ENV, f"host=127.0.0.1 user=postgres dbname={pg_db}")
    resources = {
        "data_dir": DataDirResource(path=str(data_dir)),
        "postgres_warehouse": PostgresWarehouseResource(dsn=dg.EnvVar(settings.POSTGRES_DSN_ENV)),
    }
    with (
        dg.instance_for_test() as instance,
        pytest.raises(PostgresLoadError, match="none of the marts"),
    ):
        dg.materialize([postgres_marts], instance=instance, resources=resources)
    assert query(
        pg_db, "SELECT count(*) FROM information_schema.schemata WHERE schema_name='marts'"
    ) == [(0,)]


def test_type_mapping():
    assert postgres_type("DECIMAL(38,10)") == ("numeric(38, 10)", False)
    assert postgres_type("TIMESTAMP WITH TIME ZONE") == ("timestamptz", False)
    assert postgres_type("VARCHAR[]") == ("text", True)


@pytest.mark.slow
def test_postgres_marts_registered_only_with_a_dsn():
    code = "import ibpipeline.definitions as d; print('postgres_marts' in {k.to_user_string() for k in d.defs.resolve_asset_graph().get_all_asset_keys()})"
    env = {k: v for k, v in os.environ.items() if k != settings.POSTGRES_DSN_ENV}
    env[settings.FLEX_TOKEN_ENV] = "1"
    without = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert without.stdout.strip().splitlines()[-1] == "False", without.stderr[-2000:]
    env[settings.POSTGRES_DSN_ENV] = "host=127.0.0.1 user=postgres password=s3cret-dsn"
    with_dsn = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert with_dsn.stdout.strip().splitlines()[-1] == "True", with_dsn.stderr[-2000:]
    assert "s3cret-dsn" not in with_dsn.stdout + with_dsn.stderr
