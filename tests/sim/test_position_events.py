"""Opt-in position events of the world (split, reverse split, ISIN change, option expiry and
assignment, ACATS transfer in), written into Flex statements as IBKR writes them: positions
rebuilt from the statements equal the world's every day, and the gateway simulator's positions
equal the Flex positions after each event."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest

from ibpipeline.flex.parse import parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.sim.gateway_server import account_snapshot
from ibpipeline.world import World
from ibpipeline.world import market as mk
from ibpipeline.world.accounts import NEW_YORK

SEEDS = (3, 11, 29)
EVENT_DAYS = (
    mk.TRANSFER_DAY,
    mk.SPLIT_DAY,
    mk.REVERSE_SPLIT_DAY,
    mk.ISIN_CHANGE_DAY,
    mk.EXPIRY_DAY,
)


def _world(seed: int) -> World:
    return World(seed=seed, n_accounts=2, position_events=True)


def _quantities(positions: list[dict]) -> dict[date, dict[int, Decimal]]:
    out: dict[date, dict[int, Decimal]] = {}
    for r in positions:
        if r["level_of_detail"] == "SUMMARY":
            out.setdefault(r["date"], {})[r["conid"]] = r["quantity"]
    return out


def test_default_world_has_no_position_events() -> None:
    """Off by default: no event instruments, no events, statements as before."""
    world = World(seed=3, n_accounts=1)
    assert not set(world.instruments) & mk.EVENT_CONIDS
    end = mk.business_day(world.inception, mk.EXPIRY_DAY)
    days = world.days(world.accounts[0].account_id, world.inception, end)
    assert all(not d.position_events and not any(t.notes for t in d.trades) for d in days)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_event_happens_and_is_written_as_ibkr_does(seed: int) -> None:
    world = _world(seed)
    start = world.inception
    end = mk.business_day(start, mk.EXPIRY_DAY + 2)
    account_id = world.accounts[0].account_id
    xml = render_statement(world, [account_id], start, end).decode()
    assert xml.count('type="FS"') == 2  # DETAIL + SUMMARY (accountId="-")
    assert xml.count('type="RS"') == 4 and xml.count('type="IC"') == 4
    assert 'type="ACATS" direction="IN"' in xml
    assert 'transactionType="Expiration"' in xml and 'transactionType="Assignment"' in xml
    executions = [line for line in xml.splitlines() if line.startswith("<Trade ")]
    assert sum('notes="A"' in line for line in executions) == 2
    assert sum('notes="Ep"' in line for line in executions) == 1
    parsed = parse_statement(xml.encode())
    assert parsed["corporate_actions"].num_rows == 10
    assert parsed["transfers"].num_rows == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_rebuilt_positions_equal_the_world_every_day(seed: int) -> None:
    """One statement per account over the events and after (OpenPositions at its end), and one
    ending on each event day: every report date's rebuilt quantities equal the world's."""
    world = _world(seed)
    start = world.inception
    ends = [mk.business_day(start, i) for i in (*EVENT_DAYS, mk.EXPIRY_DAY + 5)]
    for account in world.accounts:
        for end in ends:
            xml = render_statement(world, [account.account_id], start, end)
            rebuilt = _quantities(reconstruct_daily_positions(parse_statement(xml)).to_pylist())
            for state in world.days(account.account_id, start, end):
                expected = {c: p.quantity for c, p in state.positions.items()}
                assert rebuilt.get(state.date, {}) == expected, (account.account_id, state.date)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_gateway_positions_equal_flex_positions_after_each_event(seed: int) -> None:
    """After the close of each event day the gateway simulator's holdings are the Flex
    OpenPositions of a statement ending that day; during the session of a start-of-day action the
    gateway already holds the new conid."""
    world = _world(seed)
    start = world.inception
    for account in world.accounts:
        for index in EVENT_DAYS:
            day = mk.business_day(start, index)
            xml = render_statement(world, [account.account_id], start, day)
            flex = _quantities(reconstruct_daily_positions(parse_statement(xml)).to_pylist())
            after_close = datetime.combine(day, time(17, 0), NEW_YORK).astimezone(UTC)
            snapshot = account_snapshot(world, account, after_close)
            gateway = {h.contract.conid: h.quantity for h in snapshot.holdings}
            assert gateway == flex[day], (account.account_id, day)
        morning = datetime.combine(
            mk.business_day(start, mk.REVERSE_SPLIT_DAY), time(10, 0), NEW_YORK
        ).astimezone(UTC)
        holdings = {h.contract.conid for h in account_snapshot(world, account, morning).holdings}
        assert mk.REVERSE_NEW in holdings and mk.REVERSE_OLD not in holdings
