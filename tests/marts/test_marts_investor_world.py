"""Investor marts (income, fees, return_attribution, realized_pnl, corporate_actions_log) on
simulated worlds of several seeds, checked against the world's own truth and the statement's
ChangeInNAV read with lxml.

World(position_events=True) -> render_statement -> parse_statement -> reconstruct_daily_positions
-> every normalized table -> one ``dbt build`` of the investor marts.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ibpipeline.flex.parse import parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.sim.flex_statement import _commission_rate, render_statement
from ibpipeline.world import World

from .investor import dec, xml_rows
from .normalized import dbt_build
from .test_marts_world import write_normalized

pytestmark = pytest.mark.slow

SEEDS = ((31, 3), (7, 2), (3, 2))  # (seed, accounts)
START, END = date(2024, 1, 2), date(2024, 3, 28)
CENT = Decimal("0.01")
INCOME_TYPES = {
    "Dividends",
    "Withholding Tax",
    "Broker Interest Received",
    "Broker Interest Paid",
    "Bond Interest Received",
}
FEE_TYPES = {"Other Fees", "Advisor Fees"}
MARTS = (
    "+income +income_accruals +fees_by_type +realized_pnl +realized_pnl_lots +return_attribution "
    "+corporate_actions_log +daily_nav +daily_returns"
)


def month(d: date) -> date:
    return d.replace(day=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("investor_world")
    worlds, xmls = [], []
    tables: dict[str, list[pa.Table]] = defaultdict(list)
    for seed, n in SEEDS:
        world = World(seed=seed, n_accounts=n, inception=START, position_events=True)
        accounts = [a.account_id for a in world.accounts]
        xml = render_statement(world, accounts, START, END)
        parsed = parse_statement(xml)
        for name, table in parsed.tables.items():
            if name not in ("open_positions", "prior_period_positions") and table.num_rows:
                tables[name].append(table)
        tables["positions_daily"].append(reconstruct_daily_positions(parsed))
        worlds.append((world, accounts))
        xmls.append(xml)
    for name, parts in tables.items():
        write_normalized(data_dir, name, pa.concat_tables(parts))
    dbt_build(data_dir, "--select", MARTS)
    return worlds, xmls, data_dir


def rows(data_dir: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(data_dir / "ibpipeline.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()  # DECIMAL -> Decimal, exact


def world_truth(world: World, account_id: str) -> dict[date, dict[str, Decimal]]:
    """Per month: NAV change and the flows of the world, in base currency."""
    out: dict[date, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    prev = Decimal(0)  # the statement's opening NAV row (the day before inception) is all zeros
    for d in world.business_days(START, END):
        state = world.day(account_id, d)
        m = out[month(d)]
        m["change"] += state.nav.total_base - prev
        prev = state.nav.total_base
        for txn in state.cash_transactions:
            amount = txn.amount * txn.fx_rate_to_base
            if txn.type in INCOME_TYPES:
                m["income"] += amount
            elif txn.type in FEE_TYPES:
                m["fees"] += amount
            elif txn.type == "Deposits/Withdrawals":
                m["external"] += amount
        for trade in state.trades:
            m["fees"] += trade.commission * _commission_rate(trade, state)
        for event in state.position_events:
            if event.kind == "Transfer":
                currency = world.instruments[event.conid].currency
                sign = -1 if event.direction == "OUT" else 1
                m["external"] += sign * abs(event.value) * state.fx_to_base[currency]
    return out


def test_attribution_adds_up_to_the_change_in_nav_every_account_and_month(built) -> None:
    worlds, _, data_dir = built
    got = {
        (r[0], r[1]): r[2:]
        for r in rows(
            data_dir,
            "select account_id, period_start, change_in_nav, market_effect, income,"
            " fees_and_commissions, fx_translation, external_flows, other"
            " from return_attribution where period_type = 'month' and account_id <> 'ALL'",
        )
    }
    n_checked = 0
    for world, accounts in worlds:
        for account_id in accounts:
            for m, truth in world_truth(world, account_id).items():
                change, market, income, fees, fx, external, other = got[(account_id, m)]
                assert change == truth["change"], (account_id, m)
                assert market + income + fees + fx + external + other == change
                assert abs(income - truth["income"]) <= CENT, (account_id, m, income)
                assert abs(fees - truth["fees"]) <= CENT, (account_id, m, fees)
                assert abs(external - truth["external"]) <= CENT, (account_id, m, external)
                n_checked += 1
    assert n_checked == 7 * 3
    assert len([k for k in got if k[0] != "ALL"]) == n_checked


def test_household_attribution_adds_up_in_usd(built) -> None:
    _, _, data_dir = built
    out = rows(
        data_dir,
        "select period_start, change_in_nav, market_effect + income + fees_and_commissions"
        " + fx_translation + external_flows + other, days_missing_usd_rate"
        " from return_attribution where account_id = 'ALL' order by 1",
    )
    assert [r[0] for r in out] == [date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)]
    for _, change, parts, missing in out:
        assert missing == 0 and change is not None and parts == change
    # the ALL change equals the accounts' NAV in USD, end minus start, read independently
    (total,) = rows(
        data_dir,
        "select sum(change_in_nav) from return_attribution where account_id = 'ALL'",
    )[0]
    nav = rows(
        data_dir,
        "with d as (select account_id, date, nav * usd_per_base as usd from daily_nav"
        " where account_id <> 'ALL') select sum(usd) filter (where date = (select max(date) from d))"
        " - sum(usd) filter (where date = (select min(date) from d)) from d",
    )[0][0]
    assert abs(total - nav) <= CENT


def test_statement_rows_agree_with_change_in_nav_read_from_the_xml(built) -> None:
    _, xmls, data_dir = built
    got = {
        r[0]: r[1:]
        for r in rows(
            data_dir,
            "select account_id, change_in_nav, market_effect + fx_translation + other, income,"
            " fees_and_commissions, external_flows from return_attribution"
            " where period_type = 'statement'",
        )
    }
    n = 0
    for xml in xmls:
        for c in xml_rows(xml, "ChangeInNAV"):
            change, market, income, fees, external = got[c["accountId"]]
            assert change == dec(c["endingValue"]) - dec(c["startingValue"])
            ibkr_market = (
                sum(
                    dec(c[k])
                    for k in ("mtm", "realized", "changeInUnrealized", "fxTranslation", "other")
                )
                + dec(c["changeInDividendAccruals"])
                + dec(c["changeInInterestAccruals"])
            )
            assert abs(market - ibkr_market) <= CENT, c["accountId"]
            ibkr_income = dec(c["dividends"]) + dec(c["withholdingTax"]) + dec(c["interest"])
            assert abs(income - ibkr_income) <= CENT
            ibkr_fees = sum(
                dec(c[k])
                for k in ("commissions", "otherFees", "advisorFees", "salesTax", "transactionTax")
            )
            assert abs(fees - ibkr_fees) <= CENT
            ibkr_external = (
                dec(c["depositsWithdrawals"])
                + dec(c["internalCashTransfers"])
                + dec(c["assetTransfers"])
            )
            assert abs(external - ibkr_external) <= CENT
            n += 1
    assert n == 7


def test_corporate_actions_log_has_every_action_of_the_xml(built) -> None:
    _, xmls, data_dir = built
    expected = sorted(
        (c["accountId"], c["actionID"], int(c["conid"]), dec(c["quantity"]))
        for xml in xmls
        for c in xml_rows(xml, "CorporateAction")
        if c.get("levelOfDetail", "DETAIL") == "DETAIL"
    )
    assert expected, "the worlds have corporate actions"
    got = sorted(
        (a, act, int(conid), q)
        for a, act, conid, q in rows(
            data_dir,
            "select account_id, action_id, conid, quantity_change from corporate_actions_log",
        )
    )
    assert got == expected


def test_realized_pnl_takes_ibkr_fifo_figures_and_they_equal_the_closed_lots(built) -> None:
    """The statements carry FIFOPerformanceSummaryInBase: realized_pnl takes it, and per
    account, conid and year its figures equal the closed lots' (both read from the XML)."""
    _, xmls, data_dir = built
    out = rows(
        data_dir,
        "select account_id, conid, source, fifo_short_term, fifo_long_term, fifo_total,"
        " lots_short_term, lots_long_term, lots_total, realized_total"
        " from realized_pnl where account_id <> 'ALL'",
    )
    assert out and {r[2] for r in out} == {"FIFOPerformanceSummaryInBase"}
    closed = [r for r in out if r[8] is not None]
    assert closed
    for r in closed:
        assert (r[3], r[4], r[5]) == (r[6], r[7], r[8]), r
        assert r[9] == r[5]
    xml_total = sum(
        dec(u["totalRealizedPnl"])
        for xml in xmls
        for u in xml_rows(xml, "FIFOPerformanceSummaryUnderlying")
    )
    assert sum(r[9] or 0 for r in out) == xml_total


def test_tiered_fee_types_add_up_to_each_commission(built) -> None:
    """UnbundledCommissionDetails split each commission: commission + exchange + clearing +
    regulatory fees per account equal the executions' commissions in base, and the exchange fees
    equal the XML's thirdPartyExecutionCharge x fxRateToBase."""
    worlds, xmls, data_dir = built
    got: dict[tuple[str, str], Decimal] = {
        (a, t): v
        for a, t, v in rows(
            data_dir,
            "select account_id, fee_type, sum(amount) from fees_by_type"
            " where account_id <> 'ALL' group by 1, 2",
        )
    }
    exchange: dict[str, Decimal] = defaultdict(Decimal)
    for xml in xmls:
        for u in xml_rows(xml, "UnbundledCommissionDetail"):
            exchange[u["accountId"]] += dec(u["thirdPartyExecutionCharge"]) * dec(u["fxRateToBase"])
    for world, accounts in worlds:
        for account_id in accounts:
            commissions = sum(
                t.commission * _commission_rate(t, state)
                for d in world.business_days(START, END)
                for state in (world.day(account_id, d),)
                for t in state.trades
            )
            parts = [
                got.get((account_id, t), Decimal(0))
                for t in ("commission", "exchange_fees", "clearing_fees", "regulatory_fees")
            ]
            assert abs(sum(parts) - commissions) <= CENT, account_id
            assert parts[1] < 0 and parts[2] < 0 and parts[3] < 0, (account_id, parts)
            assert abs(parts[1] - exchange[account_id]) <= CENT, account_id


def test_daily_returns_equal_the_world_through_transfers_and_mergers(built) -> None:
    """TWR treats positions transferred in or out as external flows, as IBKR does: every day's
    return equals the world's, the ACATS days included."""
    worlds, _, data_dir = built
    got = {
        (a, d): r
        for a, d, r in rows(data_dir, "select account_id, date, daily_return from daily_returns")
    }
    n = 0
    for world, accounts in worlds:
        for account_id in accounts:
            for d in world.business_days(START, END)[1:]:
                truth = world.day(account_id, d).daily_return
                assert abs(float(got[(account_id, d)]) - float(truth)) < 1e-12, (account_id, d)
                n += 1
    assert n == 7 * (len(world.business_days(START, END)) - 1)


def test_realized_lots_add_up_to_the_executions(built) -> None:
    """Closed lots carry the executions' realized P&L."""
    worlds, _, data_dir = built
    truth: dict[str, Decimal] = defaultdict(Decimal)
    for world, accounts in worlds:
        for account_id in accounts:
            for d in world.business_days(START, END):
                for t in world.day(account_id, d).trades:
                    truth[account_id] += t.realized_pnl * t.fx_rate_to_base
    got = dict(
        rows(
            data_dir,
            "select account_id, sum(lots_total) from realized_pnl"
            " where account_id <> 'ALL' group by 1",
        )
    )
    for account_id, value in truth.items():
        assert abs(got.get(account_id, Decimal(0)) - value) <= CENT, account_id


def test_interest_accrual_balance_is_the_worlds(built) -> None:
    """income_accruals: the open interest accrual at the statement's end equals the world's."""
    worlds, _, data_dir = built
    got = dict(
        rows(
            data_dir,
            "select account_id, sum(open_balance) from income_accruals"
            " where accrual_type = 'interest' and account_id <> 'ALL' group by 1",
        )
    )
    n = 0
    for world, accounts in worlds:
        for account_id in accounts:
            truth = world.day(account_id, END).nav.interest_accruals_base
            assert truth and got[account_id] == truth, account_id
            n += 1
    assert n == 7
