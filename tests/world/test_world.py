"""The simulated world: determinism, accounting identities, FIFO lots and intraday states."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from ibpipeline.world import World, trade_cash

NY = ZoneInfo("America/New_York")
START = date(2024, 1, 2)
END = date(2024, 12, 31)  # 261 business days
CENT = Decimal("0.01")


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=11, n_accounts=4, inception=START)


@pytest.fixture(scope="module")
def histories(world: World) -> dict[str, list]:
    return {a.account_id: world.days(a.account_id, START, END) for a in world.accounts}


def test_accounts_are_a_mix_of_types_and_base_currencies(world: World) -> None:
    ids = [a.account_id for a in world.accounts]
    assert all(re.fullmatch(r"U\d{7}", i) for i in ids) and len(set(ids)) == 4
    assert re.fullmatch(r"F\d{7}", world.master_account_id)
    assert {a.account_type for a in world.accounts} == {"Individual", "Advisor Client"}
    assert {a.base_currency for a in world.accounts} == {"USD", "EUR", "CHF"}
    for a in world.accounts:
        assert (a.master_id == world.master_account_id) == (a.account_type == "Advisor Client")
        assert a.opened < START


def test_instrument_universe(world: World) -> None:
    cats = defaultdict(set)
    for inst in world.instruments.values():
        cats[inst.asset_category].add(inst.currency)
    assert cats["STK"] == {"USD", "EUR", "CHF", "GBP"}
    assert set(cats) == {"STK", "OPT", "FUT", "BOND"}
    for inst in world.instruments.values():
        if inst.asset_category == "OPT":
            assert re.fullmatch(r"[A-Z ]{6}\d{6}[CP]\d{8}", inst.symbol)
            assert inst.multiplier == 100 and inst.expiry > world.horizon
        if inst.asset_category in ("STK", "BOND"):
            assert re.fullmatch(r"[A-Z]{2}[A-Z0-9]{9}\d", inst.isin)


def test_same_arguments_same_world_regardless_of_request_order(world: World) -> None:
    other = World(seed=11, n_accounts=4, inception=START)
    acct = world.accounts[2].account_id
    late, early = date(2024, 6, 28), date(2024, 3, 1)
    assert other.day(acct, late) == world.day(acct, late)  # generated up to June first
    assert other.day(acct, early) == world.day(acct, early)
    assert other.fx_rate("GBP", "CHF", early) == world.fx_rate("GBP", "CHF", early)
    different = World(seed=12, n_accounts=4, inception=START)
    assert different.accounts[0].account_id != world.accounts[0].account_id
    assert different.price(265598, late) != world.price(265598, late)


def test_nav_identity_and_components_from_fx_rates(world: World, histories) -> None:
    for acct, days in histories.items():
        base = world.account(acct).base_currency
        for day in days:
            nav = day.nav
            assert nav.total_base == (
                nav.cash_base + nav.stock_base + nav.options_base + nav.bonds_base
                + nav.commodities_base
            )  # fmt: skip
            assert nav.total_long_base + nav.total_short_base == nav.total_base
            rate = {c: world.fx_rate(c, base, day.date) for c in day.fx_to_base}
            assert rate == day.fx_to_base
            cash = sum(v * rate[c] for c, v in day.cash.items())
            assert abs(nav.cash_base - cash) <= CENT
            by_cat = defaultdict(Decimal)
            for conid, pos in day.positions.items():
                inst = world.instruments[conid]
                assert pos.mark_price == world.price(conid, day.date)
                assert pos.position_value == inst.value(pos.quantity, pos.mark_price)
                by_cat[inst.asset_category] += pos.position_value * rate[inst.currency]
            assert abs(nav.stock_base - by_cat["STK"]) <= CENT
            assert abs(nav.options_base - by_cat["OPT"]) <= CENT
            assert abs(nav.bonds_base - by_cat["BOND"]) <= CENT
            assert nav.total_base > 0


def test_daily_returns_chain_with_start_of_day_flows(histories) -> None:
    for days in histories.values():
        prev_nav = Decimal(0)
        for day in days:
            flows = [t for t in day.cash_transactions if t.type == "Deposits/Withdrawals"]
            flow = sum((t.amount * day.fx_to_base[t.currency] for t in flows), Decimal(0))
            assert day.external_flow_base == flow
            assert day.prev_nav_base == prev_nav
            assert day.daily_return == day.nav.total_base / (prev_nav + flow) - 1
            assert abs(day.daily_return) < Decimal("0.2")
            prev_nav = day.nav.total_base
        assert days[0].external_flow_base > 0  # initial deposit


def test_cash_moves_only_by_transactions_trades_and_futures_variation(world, histories) -> None:
    for days in histories.values():
        prev_cash: dict[str, Decimal] = {}
        prev_pos: dict = {}
        for day in days:
            expected = defaultdict(Decimal, prev_cash)
            for txn in day.cash_transactions:
                expected[txn.currency] += txn.amount
            for trade in day.trades:
                for ccy, amount in trade_cash(trade).items():
                    expected[ccy] += amount
            for conid, pos in prev_pos.items():
                inst = world.instruments[conid]
                if inst.asset_category == "FUT":
                    move = (
                        pos.quantity
                        * inst.multiplier
                        * (world.price(conid, day.date) - pos.mark_price)
                    )
                    expected[inst.currency] += move
            assert {c: v for c, v in expected.items()} == day.cash
            assert sum(day.variation.values(), Decimal(0)) == sum(
                (
                    p.quantity * world.instruments[c].multiplier
                    * (world.price(c, day.date) - p.mark_price)
                    for c, p in prev_pos.items() if world.instruments[c].asset_category == "FUT"
                ),
                Decimal(0),
            )  # fmt: skip
            prev_cash, prev_pos = day.cash, day.positions


def test_activity_covers_every_kind(histories) -> None:
    kinds = set()
    cats = set()
    for days in histories.values():
        for day in days:
            kinds |= {t.type for t in day.cash_transactions}
            cats |= {(t.asset_category, t.open_close) for t in day.trades}
    assert kinds == {
        "Deposits/Withdrawals", "Dividends", "Withholding Tax", "Broker Interest Received",
        "Broker Interest Paid", "Other Fees", "Advisor Fees", "Bond Interest Received",
    }  # fmt: skip
    for cat in ("STK", "OPT", "FUT", "BOND"):
        assert {(cat, "O"), (cat, "C")} <= cats
    assert ("CASH", "") in cats


def test_trade_fields(world: World, histories) -> None:
    ids = set()
    for days in histories.values():
        for day in days:
            for t in day.trades:
                ids.add(t.transaction_id)
                assert t.executed_at.tzinfo is not None and t.executed_at.utcoffset() == timedelta(
                    0
                )
                local = t.executed_at.astimezone(NY)
                assert local.date() == t.trade_date == day.date
                assert time(3) <= local.time() < time(16)
                assert t.commission < 0 and t.commission_currency == t.currency
                assert t.buy_sell == ("BUY" if t.quantity > 0 else "SELL")
                assert t.fx_rate_to_base == world.fx_rate(t.currency, day.base_currency, day.date)
                if t.asset_category == "CASH":
                    assert t.conid is None and t.proceeds == (-t.quantity * t.trade_price).quantize(
                        CENT
                    )
                    continue
                inst = world.instruments[t.conid]
                assert t.proceeds == -inst.value(t.quantity, t.trade_price)
                assert t.close_price == world.price(t.conid, day.date)
                if t.asset_category == "FUT":
                    variation = t.quantity * inst.multiplier * (t.close_price - t.trade_price)
                    assert t.net_cash == variation + t.commission
                else:
                    assert t.net_cash == t.proceeds + t.commission
                if t.open_close == "O":
                    assert t.realized_pnl == 0
    assert len(ids) == sum(len(d.trades) for days in histories.values() for d in days)


def test_fifo_lots_and_realized_pnl(world: World, histories) -> None:
    for days in histories.values():
        realized = defaultdict(Decimal)
        traded = defaultdict(Decimal)  # sum of proceeds + commission per conid
        for day in days:
            for t in day.trades:
                if t.conid is not None:
                    realized[t.conid] += t.realized_pnl
                    traded[t.conid] += t.proceeds + t.commission
            for conid, pos in day.positions.items():
                assert pos.conid == conid and pos.quantity != 0
                assert sum(lot.quantity for lot in pos.lots) == pos.quantity
                assert sum(lot.cost_basis_money for lot in pos.lots) == pos.cost_basis_money
                assert all((lot.quantity > 0) == (pos.quantity > 0) for lot in pos.lots)
                opens = [lot.open_at for lot in pos.lots]
                assert opens == sorted(opens)
        final = days[-1].positions
        for conid in traded:
            remaining = final[conid].cost_basis_money if conid in final else Decimal(0)
            # every cost either closed (realized) or still open: realized = cash in + open cost
            assert realized[conid] == traded[conid] + remaining


def test_state_at_close_weekend_and_before_the_session(world: World) -> None:
    acct = world.accounts[1].account_id
    d = date(2024, 5, 15)  # Wednesday
    close = datetime.combine(d, time(16), tzinfo=NY).astimezone(UTC)
    assert world.state_at(acct, close) == world.day(acct, d)
    assert world.state_at(acct, close + timedelta(hours=5)) == world.day(acct, d)
    saturday = datetime(2024, 5, 18, 15, 0, tzinfo=UTC)
    assert world.state_at(acct, saturday) == world.day(acct, date(2024, 5, 17))
    early = datetime.combine(d, time(1), tzinfo=NY)
    prev = world.day(acct, date(2024, 5, 14))
    state = world.state_at(acct, early)
    assert state.date == d and state.trades == () and state.cash_transactions == ()
    assert state.nav == prev.nav and state.cash == prev.cash


def test_state_at_midday_applies_only_earlier_trades(world: World, histories) -> None:
    acct = world.accounts[0].account_id
    day = next(d for d in histories[acct][1:] if len(d.trades) >= 2)
    cut = day.trades[0].executed_at
    state = world.state_at(acct, cut)
    assert state.trades == tuple(t for t in day.trades if t.executed_at <= cut)
    assert 1 <= len(state.trades) < len(day.trades)
    nav = state.nav
    assert nav.total_base == nav.cash_base + nav.stock_base + nav.options_base + nav.bonds_base
    frac_price_between = [
        (
            world.price(c, world.previous_business_day(day.date)),
            p.mark_price,
            world.price(c, day.date),
        )
        for c, p in state.positions.items()
    ]
    assert all(min(a, c) <= b <= max(a, c) for a, b, c in frac_price_between)
    assert state.daily_pnl_base == nav.total_base - state.prev_nav_base - state.external_flow_base


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda w: w.day(w.accounts[0].account_id, date(2024, 1, 6)), ValueError),
        (lambda w: w.day(w.accounts[0].account_id, date(2023, 12, 29)), ValueError),
        (lambda w: w.day("U0000000", date(2024, 1, 3)), KeyError),
        (lambda w: w.state_at(w.accounts[0].account_id, datetime(2024, 1, 3, 12)), ValueError),
        (lambda w: w.fx_rate("JPY", "USD", date(2024, 1, 3)), KeyError),
        (lambda w: w.price(1, date(2024, 1, 3)), KeyError),
        (lambda w: w.day(w.accounts[0].account_id, w.horizon + timedelta(days=7)), ValueError),
    ],
)
def test_bad_requests_raise_specific_errors(world: World, call, error) -> None:
    with pytest.raises(error):
        call(world)
