"""dbt marts on a simulated world's Flex statement, checked against the world's own truth.

World -> render_statement (Flex XML) -> parse_statement -> reconstruct_daily_positions ->
normalized Parquet partitions -> one ``dbt build``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ibpipeline.assets.checks import business_day_gaps, nav_breaks, read_nav_days
from ibpipeline.flex.parse import parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.storage.parquet import write_day
from ibpipeline.world import World

from .normalized import dbt_build, query

pytestmark = pytest.mark.slow

START, END = date(2024, 1, 2), date(2024, 3, 28)
TABLES = (
    "account_info",
    "nav_daily",
    "change_in_nav",
    "cash_balances",
    "trades",
    "cash_transactions",
    "fx_rates",
)
CENT = Decimal("0.01")


def write_normalized(data_dir: Path, name: str, table: pa.Table) -> None:
    """One Parquet file per date of ``table``, as the normalized assets write."""
    rows = defaultdict(list)
    for i, day in enumerate(table["date"].to_pylist()):
        rows[day].append(i)
    for day, idx in sorted(rows.items()):
        write_day(name, day, table.take(pa.array(idx)), data_dir=data_dir)


def statement_days(world: World) -> list[date]:
    """NAV days of the statement: like IBKR's, it starts on the business day before START."""
    return [world.previous_business_day(START), *world.business_days(START, END)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    world = World(seed=31, n_accounts=3, inception=START)
    accounts = [a.account_id for a in world.accounts]
    parsed = parse_statement(render_statement(world, accounts, START, END))
    data_dir = tmp_path_factory.mktemp("world_marts")
    for name in TABLES:
        write_normalized(data_dir, name, parsed.tables[name])
    write_normalized(data_dir, "positions_daily", reconstruct_daily_positions(parsed))
    dbt_build(data_dir)
    return world, accounts, parsed, data_dir


def test_cumulative_twr_equals_change_in_nav_and_the_world(built) -> None:
    world, accounts, parsed, data_dir = built
    change = {r["account_id"]: r for r in parsed.tables["change_in_nav"].to_pylist()}
    assert sorted(change) == sorted(accounts)
    days = world.business_days(START, END)
    for account_id in accounts:
        twr, n = query(
            data_dir,
            f"select product(1 + daily_return) - 1 as twr, count(daily_return) as n "
            f"from daily_returns where account_id = '{account_id}'",
        ).iloc[0]
        assert n == len(days)
        assert twr * 100 == pytest.approx(float(change[account_id]["twr_pct"]), abs=0.01)  # 1 bp
        truth = math.prod(1 + float(world.day(account_id, d).daily_return) for d in days) - 1
        assert twr == pytest.approx(truth, abs=1e-4)


def test_positions_plus_cash_equal_nav_to_the_cent(built) -> None:
    world, accounts, _, data_dir = built
    sql = """
        with pos as (
          select account_id, date, sum(value) as positions from positions_history
          where account_id <> 'ALL' group by all
        )
        select n.account_id, n.date, n.nav,
               n.cash + coalesce(n.dividend_accruals, 0) + coalesce(n.interest_accruals, 0)
                 + coalesce(p.positions, 0) as parts
        from daily_nav as n left join pos as p using (account_id, date)
        where n.account_id <> 'ALL' order by 1, 2
    """
    with duckdb.connect(str(data_dir / "ibpipeline.duckdb"), read_only=True) as con:
        rows = con.execute(sql).fetchall()  # DECIMAL(38, 10) -> Decimal, exact
    assert len(rows) == len(accounts) * len(statement_days(world))
    for account_id, day, nav, parts in rows:
        truth = world.day(account_id, day).nav.total_base if day >= START else 0
        assert nav == truth
        assert abs(parts - nav) <= CENT, (account_id, day, parts, nav)


def test_reconciliation_and_gap_checks_pass_on_the_world(built) -> None:
    world, accounts, _, data_dir = built
    with duckdb.connect(str(data_dir / "ibpipeline.duckdb"), read_only=True) as con:
        nav_days = read_nav_days(con)
    assert len(nav_days) == len(accounts) * len(statement_days(world))
    assert nav_breaks(nav_days) == []
    by_account = defaultdict(list)
    for day in nav_days:
        by_account[day.account_id].append(day.date)
    assert sorted(by_account) == sorted(accounts)
    assert all(business_day_gaps(days) == [] for days in by_account.values())
    assert sum(d.n_positions for d in nav_days) > 0
