"""Plain ib_async sessions (default startup, orders, executions) against the simulator."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest
from ib_async import IB, LimitOrder, Stock

from ibpipeline.sim.gateway_server import GatewaySimulator
from ibpipeline.world import World

AS_OF = datetime(2024, 3, 15, 20, 0, tzinfo=UTC)  # Friday close (16:00 EDT)


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=11, n_accounts=4, inception=date(2024, 1, 2))


def busiest(world: World) -> str:
    """The account with the most trades on AS_OF's day."""
    return max(
        world.accounts, key=lambda a: len(world.state_at(a.account_id, AS_OF).trades)
    ).account_id


def run(world: World, body, **sim_kwargs):
    async def scenario():
        async with GatewaySimulator(world, clock=AS_OF, **sim_kwargs) as sim:
            ib = IB()
            try:
                await ib.connectAsync(
                    "127.0.0.1", sim.port, clientId=5, timeout=2, raiseSyncErrors=True
                )
                return await body(ib)
            finally:
                ib.disconnect()

    return asyncio.run(scenario())


def test_default_single_account_startup_syncs_everything(world):
    acct = busiest(world)
    state = world.state_at(acct, AS_OF)
    assert state.trades  # the chosen day has executions to replay

    async def body(ib: IB):
        return ib.portfolio(), ib.accountValues(), ib.fills(), await ib.reqCurrentTimeAsync()

    portfolio, values, fills, now = run(world, body, account_ids=[acct])
    assert {p.contract.conId for p in portfolio} == set(state.positions)
    assert all(p.account == acct for p in portfolio)
    nlv = {(v.tag, v.modelCode) for v in values if v.tag == "NetLiquidation"}
    assert nlv == {("NetLiquidation", "")}  # 6 and 73 with modelCode "" share one key
    assert sorted(f.execution.execId for f in fills) == sorted(t.ib_exec_id for t in state.trades)
    by_exec = {t.ib_exec_id: t for t in state.trades}
    for fill in fills:
        trade = by_exec[fill.execution.execId]
        assert fill.execution.shares == float(abs(trade.quantity))
        assert fill.execution.price == float(trade.trade_price)
        assert fill.execution.time == trade.executed_at
        assert fill.commissionReport.commission == pytest.approx(float(-trade.commission))
    assert now == AS_OF


def test_default_multi_account_startup_has_values_but_no_portfolio(world):
    async def body(ib: IB):
        return ib.managedAccounts(), ib.accountValues(), ib.portfolio()

    accounts, values, portfolio = run(world, body)
    assert accounts == [a.account_id for a in world.accounts]
    assert {v.account for v in values if v.tag == "NetLiquidation"} == set(accounts)
    assert portfolio == []  # as with real TWS: no reqAccountUpdates on multi-account logins


def test_orders_are_refused_read_only(world):
    async def body(ib: IB):
        errors = []
        ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code, msg))
        trade = ib.placeOrder(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 1, 1.0))
        await asyncio.sleep(0.2)
        return trade, errors

    trade, errors = run(world, body)
    assert [(r, c) for r, c, _ in errors] == [(trade.order.orderId, 321)]
    assert "Read-Only" in errors[0][2]
    assert trade.fills == []
