"""Fixtures of the DuckLake tests (``test_ducklake.py``, ``test_ducklake_writers.py``): a fresh
Postgres catalog per test, this process on that lake, and a small simulated statement."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest

from ibpipeline import settings
from ibpipeline.flex.parse import parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.world import World
from tests.postgres_db import PG, fresh_database

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
