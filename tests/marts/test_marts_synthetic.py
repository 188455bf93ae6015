"""dbt marts on a synthetic two-account history (USD + CHF base) with IBKR-style duplicate rows."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import quantstats as qs

from ibpipeline.finance import risk
from ibpipeline.finance.returns import daily_twr

from . import synth
from .normalized import dbt_build, query

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.Truth]:
    data_dir = tmp_path_factory.mktemp("data")
    truth = synth.build(data_dir)
    dbt_build(data_dir)
    return data_dir, truth


def _returns(data_dir: Path, account_id: str, since: str = "1900-01-01") -> pd.Series:
    df = query(
        data_dir,
        f"""select date, daily_return from daily_returns
                             where account_id = '{account_id}' and daily_return is not null
                               and date >= '{since}' order by date""",
    )
    return pd.Series(df["daily_return"].to_numpy(), index=pd.to_datetime(df["date"]))


@pytest.mark.parametrize("account_id", list(synth.ACCOUNTS))
def test_daily_returns_equal_python_twr_with_start_of_day_flows(built, account_id: str) -> None:
    data_dir, truth = built
    nav = pd.Series(truth.nav[account_id])
    flows = pd.Series(truth.flows[account_id])
    expected = daily_twr(nav, flows.drop(nav.index[0]))  # day 1: funded from nothing
    got = _returns(data_dir, account_id)
    first_day = float(nav.iloc[0] / flows.iloc[0] - 1)
    assert got.iloc[0] == pytest.approx(first_day, abs=1e-12)
    assert got.iloc[1:].to_numpy() == pytest.approx(expected.to_numpy(), abs=1e-12)
    cum = query(
        data_dir,
        f"select cumulative_twr from daily_returns where account_id = "
        f"'{account_id}' order by date desc limit 1",
    ).iloc[0, 0]
    assert cum == pytest.approx((got + 1).prod() - 1, abs=1e-12)


@pytest.mark.parametrize("account_id", [*synth.ACCOUNTS, "ALL"])
@pytest.mark.parametrize("period", ["ITD", "YTD", "QTD"])
def test_performance_summary_matches_quantstats(built, account_id: str, period: str) -> None:
    data_dir, _ = built
    row = query(
        data_dir,
        f"select * from performance_summary where account_id = '{account_id}' "
        f"and period = '{period}'",
    ).iloc[0]
    r = _returns(data_dir, account_id, since=str(row["start_date"].date()))
    assert row["n_days"] == len(r)
    assert row["twr"] == pytest.approx(qs.stats.comp(r), abs=1e-9)
    assert row["cagr"] == pytest.approx(qs.stats.cagr(r), abs=1e-9)
    assert row["volatility"] == pytest.approx(qs.stats.volatility(r), abs=1e-9)
    assert row["sharpe"] == pytest.approx(qs.stats.sharpe(r), abs=1e-9)
    assert row["sortino"] == pytest.approx(qs.stats.sortino(r), abs=1e-9)
    assert row["max_drawdown"] == pytest.approx(qs.stats.max_drawdown(r), abs=1e-9)
    assert row["best_day_return"] == pytest.approx(qs.stats.best(r), abs=1e-15)
    assert row["worst_day_return"] == pytest.approx(qs.stats.worst(r), abs=1e-15)
    worst = risk.worst_drawdown(r)
    assert worst is not None
    assert row["max_drawdown_start"].date() == worst.start
    assert row["max_drawdown_trough"].date() == worst.trough
    recovery = row["max_drawdown_recovery"]
    assert (None if pd.isna(recovery) else recovery.date()) == worst.recovery


def test_drawdown_marts_match_python(built) -> None:
    data_dir, _ = built
    r = _returns(data_dir, "U1000001")
    dd = query(
        data_dir, "select drawdown from drawdowns where account_id = 'U1000001' order by date"
    )
    assert dd["drawdown"].to_numpy() == pytest.approx(risk.drawdown_series(r).to_numpy(), abs=1e-12)
    periods = query(
        data_dir, "select * from drawdown_periods where account_id = 'U1000001' order by start_date"
    )
    expected = risk.drawdown_periods(r)
    assert len(periods) == len(expected)
    assert [p.date() for p in periods["start_date"]] == [p.start for p in expected]
    assert periods["max_drawdown"].to_numpy() == pytest.approx([p.max_drawdown for p in expected])


def test_no_double_counting_of_duplicate_row_kinds(built) -> None:
    data_dir, truth = built
    for account_id in synth.ACCOUNTS:
        flows = query(
            data_dir,
            f"select sum(external_flow) as ext, sum(commissions) as comm, "
            f"sum(income) as inc from daily_nav where account_id = '{account_id}'",
        )
        assert Decimal(str(flows["ext"][0])) == sum(truth.flows[account_id].values())
        assert Decimal(str(flows["comm"][0])) == truth.commissions[account_id]
        assert flows["inc"][0] == pytest.approx(12.5 * 13)  # one DETAIL dividend every 20 days
        stats = query(
            data_dir,
            f"select executions, wins, losses, realized_pnl from trade_stats "
            f"where account_id = '{account_id}' and symbol = '(all)'",
        ).iloc[0]
        pnl = truth.executions[account_id]
        assert stats["executions"] == len(pnl)
        assert (stats["wins"], stats["losses"]) == (
            sum(p > 0 for p in pnl),
            sum(p < 0 for p in pnl),
        )
        assert Decimal(str(stats["realized_pnl"])) == sum(pnl)
        last = max(truth.stock[account_id])
        alloc = query(
            data_dir,
            f"select dimension, bucket, value from allocation_daily where "
            f"account_id = '{account_id}' and date = '{last}'",
        )
        by = {(d, b): Decimal(str(v)) for d, b, v in alloc.itertuples(index=False)}
        nav, stock = truth.nav[account_id][last], truth.stock[account_id][last]
        assert by[("symbol", "AAA")] == stock  # SUMMARY only, LOT rows not added
        assert by[("asset_class", "stock")] == stock
        assert sum(v for (d, _), v in by.items() if d == "currency") == nav  # BASE_SUMMARY dropped
        positions = query(
            data_dir, f"select count(*) from positions_history where account_id = '{account_id}'"
        ).iloc[0, 0]
        assert positions == len(truth.nav[account_id])


def test_household_is_the_usd_sum_of_accounts(built) -> None:
    data_dir, truth = built
    df = query(data_dir, "select date, nav from daily_nav where account_id = 'ALL' order by date")
    for d, nav in df.itertuples(index=False):
        day = d.date()
        expected = truth.nav["U1000001"][day] + truth.nav["U2000002"][day] * truth.usd_per_chf[day]
        assert float(nav) == pytest.approx(float(expected), abs=0.01)
    assert len(df) == len(truth.nav["U1000001"])


def test_incremental_window_rebuild_replaces_only_its_rows(built) -> None:
    data_dir, _ = built
    before = query(data_dir, "select * from daily_returns order by account_id, date")
    dbt_build(
        data_dir,
        "--select",
        "daily_returns",
        "--vars",
        "{min_date: '2024-06-03', max_date: '2024-06-04'}",
    )
    after = query(data_dir, "select * from daily_returns order by account_id, date")
    pd.testing.assert_frame_equal(before, after)


def test_an_older_window_rebuilds_the_later_days_of_path_dependent_marts(built) -> None:
    """Cumulative TWR and drawdowns of a day depend on every earlier day: a backfill of an older
    range run after later days were built (stale values there, made here by hand) rebuilds its
    days and every later one, so both marts equal the full build again."""
    data_dir, _ = built
    tables = ("daily_returns", "drawdowns")
    before = {t: query(data_dir, f"select * from {t} order by account_id, date") for t in tables}
    with duckdb.connect(str(data_dir / "ibpipeline.duckdb")) as con:
        con.execute(
            "update daily_returns set cumulative_twr = cumulative_twr + 1 where date > '2024-06-03'"
        )
        con.execute("update drawdowns set drawdown = drawdown - 0.5 where date > '2024-06-03'")
    dbt_build(
        data_dir,
        "--select",
        " ".join(tables),
        "--vars",
        "{min_date: '2024-06-03', max_date: '2024-06-04'}",
    )
    for table in tables:
        after = query(data_dir, f"select * from {table} order by account_id, date")
        assert (after["date"] > pd.Timestamp("2024-06-04")).any()
        pd.testing.assert_frame_equal(before[table], after)


def test_sharpe_with_risk_free_rate_var(built) -> None:
    """Runs last: it rebuilds performance_summary with rf = 5 %."""
    data_dir, _ = built
    dbt_build(data_dir, "--select", "performance_summary", "--vars", "{risk_free_rate: 0.05}")
    row = query(
        data_dir,
        "select sharpe, sortino from performance_summary "
        "where account_id = 'U1000001' and period = 'ITD'",
    ).iloc[0]
    r = _returns(data_dir, "U1000001")
    assert row["sharpe"] == pytest.approx(qs.stats.sharpe(r, rf=0.05), abs=1e-9)
    assert row["sortino"] == pytest.approx(qs.stats.sortino(r, rf=0.05), abs=1e-9)
