"""The real collector (unmodified ib_async) against simulated gateways on loopback ports."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from ibpipeline.gateway import (
    CollectionResult,
    GatewayAddress,
    GatewayCollectionError,
    collect_snapshots,
    collect_snapshots_async,
    to_jsonl,
)
from ibpipeline.gateway.schema import TABLE_SCHEMAS
from ibpipeline.sim.gateway_server import GatewayFaults, GatewaySimulator, GatewaySimulatorThread
from ibpipeline.world import World

AS_OF = datetime(2024, 3, 15, 20, 0, tzinfo=UTC)  # Friday 16:00 US/Eastern (EDT): the close
REPORT_DATE = date(2024, 3, 15)
FAST = {"timeout": 1.0, "retries": 1, "backoff": 0.05, "pnl_timeout": 1.0}
CENT = Decimal("0.01")


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=11, n_accounts=4, inception=date(2024, 1, 2))


def run_scenario(
    world: World, gateways: list[dict[str, Any]], **collect: Any
) -> tuple[CollectionResult | GatewayCollectionError, list[GatewaySimulator], float]:
    """Start one simulator per kwargs dict, collect, return (result or error, sims, seconds).

    Also asserts that the collector left no connection open on any simulator.
    """

    async def scenario():
        sims = [GatewaySimulator(world, clock=AS_OF, **kw) for kw in gateways]
        for sim in sims:
            await sim.start()
        try:
            start = time.perf_counter()
            try:
                outcome = await collect_snapshots_async(
                    [GatewayAddress("127.0.0.1", s.port) for s in sims],
                    clock=lambda: AS_OF,
                    **(FAST | collect),
                )
            except GatewayCollectionError as exc:
                outcome = exc
            elapsed = time.perf_counter() - start
            await asyncio.sleep(0.05)
            assert [s.active_clients for s in sims] == [0] * len(sims)
            return outcome, sims, elapsed
        finally:
            for sim in sims:
                await sim.stop()

    return asyncio.run(scenario())


def rows(table, **where) -> list[dict[str, Any]]:
    return [r for r in table.to_pylist() if all(r[k] == v for k, v in where.items())]


def test_snapshot_equals_the_world_on_two_gateways(world):
    ids = [a.account_id for a in world.accounts]
    result, sims, _ = run_scenario(world, [{"account_ids": ids[:2]}, {"account_ids": ids[2:]}])
    assert isinstance(result, CollectionResult)
    assert [g.ok for g in result.gateways] == [True, True]
    assert sorted(result.accounts) == sorted(ids)
    for name, table in result.tables().items():
        assert table.schema == TABLE_SCHEMAS[name]
        assert set(table.column("snapshot_id").to_pylist()) == {result.snapshot_id}
        assert set(table.column("date").to_pylist()) == {REPORT_DATE}
        assert set(table.column("captured_at").to_pylist()) == {AS_OF}

    for account in world.accounts:
        acct = account.account_id
        gateway = f"127.0.0.1:{sims[0 if acct in ids[:2] else 1].port}"
        state = world.state_at(acct, AS_OF)
        nav = state.nav.total_base.quantize(CENT)
        for source in ("account_update", "account_summary"):
            nlv = rows(result.account_values, account_id=acct, source=source, key="NetLiquidation")
            assert [(r["value_decimal"], r["currency"], r["gateway"]) for r in nlv] == [
                (nav, account.base_currency, gateway)
            ]
        assert nav == world.day(acct, REPORT_DATE).nav.total_base.quantize(CENT)
        cash = rows(
            result.account_values, account_id=acct, source="account_update", key="TotalCashValue"
        )
        cash_base = sum(v * state.fx_to_base[c] for c, v in state.cash.items())
        assert cash[0]["value_decimal"] == cash_base.quantize(CENT)
        ledger = {
            r["currency"]: r["value_decimal"]
            for r in rows(
                result.account_values, account_id=acct, source="account_summary", key="CashBalance"
            )
        }
        assert ledger == {c: v.quantize(CENT) for c, v in state.cash.items()} | {
            "BASE": cash_base.quantize(CENT)
        }

        got = {r["conid"]: r for r in rows(result.positions, account_id=acct)}
        assert set(got) == set(state.positions)
        for conid, pos in state.positions.items():
            row = got[conid]
            assert row["position"] == pos.quantity
            assert row["market_price"] == pos.mark_price
            assert row["market_value"] == pos.position_value
            assert row["unrealized_pnl"] == pos.position_value - pos.cost_basis_money
            assert abs(row["avg_cost"] * pos.quantity - pos.cost_basis_money) < CENT
            assert row["currency"] == world.instruments[conid].currency
            assert row["gateway"] == gateway

        (pnl,) = rows(result.pnl, account_id=acct)
        unrealized = sum(
            (p.position_value - p.cost_basis_money)
            * state.fx_to_base[world.instruments[c].currency]
            for c, p in state.positions.items()
        )
        assert pnl["unrealized_pnl"] == Decimal(unrealized).quantize(CENT)
        assert pnl["daily_pnl"] is not None and pnl["realized_pnl"] is not None


def test_advisor_login_gets_the_portfolio_of_every_account(world):
    result, _, _ = run_scenario(world, [{}])  # one login managing every account
    assert isinstance(result, CollectionResult)
    assert result.gateways[0].accounts == tuple(a.account_id for a in world.accounts)
    for account in world.accounts:
        state = world.state_at(account.account_id, AS_OF)
        got = rows(result.positions, account_id=account.account_id)
        assert len(got) == len(state.positions)
        # portfolio items, not only positions
        assert all(r["market_value"] is not None for r in got)
        types = {r["account_id"] for r in rows(result.account_values, key="AccountType")}
        assert account.account_id in types


def test_account_filter_keeps_only_the_named_accounts(world):
    keep = world.accounts[1].account_id
    result, _, _ = run_scenario(world, [{}], account_filter={keep})
    assert isinstance(result, CollectionResult)
    for table in result.tables().values():
        assert set(table.column("account_id").to_pylist()) == {keep}


def test_refused_gateway_is_retried_then_named_in_a_clear_error(world):
    error, sims, elapsed = run_scenario(world, [{"faults": GatewayFaults(refuse=True)}], retries=2)
    assert isinstance(error, GatewayCollectionError)
    (outcome,) = error.outcomes
    assert outcome.attempts == 3 and not outcome.ok
    assert f"127.0.0.1:{sims[0].port}" in str(error) and "refused" in str(error)
    assert elapsed >= 0.05 + 0.1  # backoff 0.05 then 0.1


def test_client_id_in_use_is_reported_as_such(world):
    error, _, elapsed = run_scenario(world, [{"faults": GatewayFaults(client_id_in_use=True)}])
    assert isinstance(error, GatewayCollectionError)
    assert "client id 17 is already in use (error 326)" in str(error)
    assert elapsed < 1.0  # fails fast on the close instead of waiting for the timeout


def test_one_shot_drop_mid_stream_succeeds_on_retry(world):
    faults = GatewayFaults(drop_after_messages=30, one_shot=True)
    result, sims, _ = run_scenario(world, [{"faults": faults}])
    assert isinstance(result, CollectionResult)
    assert result.gateways[0].ok and result.gateways[0].attempts == 2
    assert sims[0].connections == 2
    assert result.positions.num_rows == sum(
        len(world.state_at(a.account_id, AS_OF).positions) for a in world.accounts
    )


@pytest.mark.parametrize("after", [10, 200])  # while connecting / while downloading accounts
def test_persistent_drop_fails_with_the_connection_error(world, after):
    error, sims, _ = run_scenario(world, [{"faults": GatewayFaults(drop_after_messages=after)}])
    assert isinstance(error, GatewayCollectionError)
    assert f"127.0.0.1:{sims[0].port}: connection lost" in str(error)
    assert sims[0].connections == 2


def test_stalled_gateway_times_out(world):
    error, _, elapsed = run_scenario(
        world, [{"faults": GatewayFaults(stall=True)}], timeout=0.5, retries=0
    )
    assert isinstance(error, GatewayCollectionError)
    assert "timed out after 0.5s" in str(error)
    assert 0.5 <= elapsed < 2.0


def test_connectivity_and_farm_messages_do_not_break_the_snapshot(world):
    faults = GatewayFaults(connectivity_codes=(1100, 1101, 1102), farm_messages=True)
    result, _, _ = run_scenario(world, [{"faults": faults}])
    assert isinstance(result, CollectionResult) and result.gateways[0].attempts == 1
    acct = world.accounts[0].account_id
    (nlv,) = rows(
        result.account_values, account_id=acct, source="account_summary", key="NetLiquidation"
    )
    assert nlv["value_decimal"] == world.state_at(acct, AS_OF).nav.total_base.quantize(CENT)


def test_unset_pnl_values_become_null(world):
    result, _, _ = run_scenario(world, [{"faults": GatewayFaults(unset_pnl=True)}])
    assert isinstance(result, CollectionResult)
    assert result.pnl.num_rows == len(world.accounts)
    for row in result.pnl.to_pylist():
        assert (row["daily_pnl"], row["unrealized_pnl"], row["realized_pnl"]) == (None,) * 3


def test_partial_success_with_one_dead_gateway(world):
    ids = [a.account_id for a in world.accounts]
    result, sims, _ = run_scenario(
        world,
        [{"account_ids": ids[:2]}, {"account_ids": ids[2:], "faults": GatewayFaults(refuse=True)}],
    )
    assert isinstance(result, CollectionResult)
    good, dead = result.gateways
    assert good.ok and good.error is None and good.accounts == tuple(ids[:2])
    assert not dead.ok and dead.address == f"127.0.0.1:{sims[1].port}" and "refused" in dead.error
    assert set(result.pnl.column("account_id").to_pylist()) == set(ids[:2])
    statuses = [json.loads(line) for line in to_jsonl(result).splitlines()]
    assert [s["ok"] for s in statuses if s["kind"] == "gateway"] == [True, False]


def test_to_jsonl_has_one_record_per_item(world):
    result, _, _ = run_scenario(world, [{}])
    records = [json.loads(line) for line in to_jsonl(result).decode().splitlines()]
    kinds = Counter(r["kind"] for r in records)
    assert kinds["pnl"] == result.pnl.num_rows
    assert kinds["position"] == result.positions.num_rows
    values = result.account_values.column("source").to_pylist()
    assert kinds["account_value"] == values.count("account_update")
    assert kinds["account_summary"] == values.count("account_summary")
    assert all(r["captured_at"] == AS_OF.isoformat() for r in records)
    assert all(r["snapshot_id"] == result.snapshot_id and r["gateway"] for r in records)


def test_blocking_api_with_threaded_simulator(world):
    with GatewaySimulatorThread(world, clock=AS_OF) as sim:
        result = collect_snapshots([GatewayAddress("127.0.0.1", sim.port)], **FAST)
    assert result.gateways[0].ok
    assert result.captured_at.tzinfo is not None
    assert result.pnl.num_rows == len(world.accounts)
