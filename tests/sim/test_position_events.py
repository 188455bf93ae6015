"""Opt-in position events of the world (split, reverse split, ISIN change, option expiry,
assignment and exercise, merger for stock and cash, spin-off, ACATS transfers in and out), written into Flex statements as IBKR writes them: positions
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
    mk.MERGER_DAY,
    mk.SPINOFF_DAY,
    mk.TRANSFER_OUT_DAY,
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
    end = mk.business_day(start, mk.TRANSFER_OUT_DAY + 2)
    account_id = world.accounts[0].account_id
    xml = render_statement(world, [account_id], start, end).decode()
    assert xml.count('type="FS"') == 2  # DETAIL + SUMMARY (accountId="-")
    assert xml.count('type="RS"') == 4 and xml.count('type="IC"') == 4
    assert xml.count('type="TC"') == 4 and xml.count('type="SO"') == 2
    assert 'type="ACATS" direction="IN"' in xml and 'type="ACATS" direction="OUT"' in xml
    for kind in ("Expiration", "Assignment", "Exercise"):
        assert f'transactionType="{kind}"' in xml
    executions = [line for line in xml.splitlines() if line.startswith("<Trade ")]
    assert sum('notes="A"' in line for line in executions) == 2
    assert sum('notes="Ex"' in line for line in executions) == 2
    assert sum('notes="Ep"' in line for line in executions) == 1
    parsed = parse_statement(xml.encode())
    assert parsed["corporate_actions"].num_rows == 16
    assert parsed["transfers"].num_rows == 2


@pytest.mark.parametrize("seed", SEEDS)
def test_merger_spinoff_and_transfer_out_rows_carry_ibkr_figures(seed: int) -> None:
    """The merger's cash is its DETAIL row's proceeds and reaches the account's cash; the two
    legs' values are the positions at the previous close; the spin-off adds the child at 1 for 5;
    the transfer out removes shares at their previous close (negative quantity and amount)."""
    world = _world(seed)
    start = world.inception
    account_id = world.accounts[0].account_id
    end = mk.business_day(start, mk.TRANSFER_OUT_DAY)
    parsed = parse_statement(render_statement(world, [account_id], start, end))
    actions = [
        r for r in parsed["corporate_actions"].to_pylist() if r["level_of_detail"] == "DETAIL"
    ]
    merger = {r["conid"]: r for r in actions if r["type"] == "TC"}
    target, acquirer = merger[mk.MERGER_TARGET], merger[mk.MERGER_ACQUIRER]
    assert target["quantity"] == -200 and acquirer["quantity"] == 200 * mk.MERGER_SHARES
    assert target["proceeds"] == 200 * mk.MERGER_CASH and acquirer["proceeds"] == 0
    merger_day = mk.business_day(start, mk.MERGER_DAY)
    before = world.day(account_id, world.previous_business_day(merger_day))
    after = world.day(account_id, merger_day)
    assert target["value"] == -200 * world.price(mk.MERGER_TARGET, before.date)
    assert acquirer["value"] == 100 * world.price(mk.MERGER_ACQUIRER, before.date)
    assert mk.MERGER_TARGET not in after.positions
    assert after.positions[mk.MERGER_ACQUIRER].quantity == 100
    # cost basis carried to the new shares, less the cash
    cost = before.positions[mk.MERGER_TARGET].cost_basis_money - target["proceeds"]
    assert after.positions[mk.MERGER_ACQUIRER].cost_basis_money == cost
    (spinoff,) = [r for r in actions if r["type"] == "SO"]
    assert spinoff["conid"] == mk.SPINOFF_CHILD and spinoff["quantity"] == 20
    spin_day = world.day(account_id, mk.business_day(start, mk.SPINOFF_DAY))
    spun = world.day(account_id, world.previous_business_day(spin_day.date))
    parent_cost = spun.positions[mk.SPINOFF_PARENT].cost_basis_money
    split_cost = (
        spin_day.positions[mk.SPINOFF_PARENT].cost_basis_money
        + spin_day.positions[mk.SPINOFF_CHILD].cost_basis_money
    )
    assert split_cost == parent_cost  # the basis is split, not created
    (out,) = [r for r in parsed["transfers"].to_pylist() if r["direction"] == "OUT"]
    out_day = world.previous_business_day(mk.business_day(start, mk.TRANSFER_OUT_DAY))
    assert out["conid"] == mk.TRANSFER_OUT_CONID and out["quantity"] == -10
    assert out["position_amount"] == -10 * world.price(mk.TRANSFER_OUT_CONID, out_day)


@pytest.mark.parametrize("seed", SEEDS)
def test_rebuilt_positions_equal_the_world_every_day(seed: int) -> None:
    """One statement per account over the events and after (OpenPositions at its end), and one
    ending on each event day: every report date's rebuilt quantities equal the world's."""
    world = _world(seed)
    start = world.inception
    ends = [mk.business_day(start, i) for i in (*EVENT_DAYS, mk.TRANSFER_OUT_DAY + 3)]
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


def test_cli_simulators_serve_the_life_events(flex_token: str) -> None:
    """`ibpipeline sim flex --life-events` serves statements with the events (over HTTP, read
    by the project's own client); without the flag the same world has none."""
    import re

    from ibpipeline.flex.client import FlexClient
    from tests.sim.background import started_with_sigint_ignored

    start = date(2025, 1, 2)
    end = mk.business_day(start, mk.TRANSFER_OUT_DAY)
    seen = {}
    for flag in ("--life-events", ""):
        code = (
            "import sys\nfrom ibpipeline.cli import main\n"
            f"sys.exit(main(['sim', 'flex', '--port', '0', '--token', {flex_token!r},"
            f" '--accounts', '1', '--inception', '{start}', '--no-rate-limits'"
            f"{', ' + repr(flag) if flag else ''}]))\n"
        )
        with started_with_sigint_ignored(code) as process:
            line = process.stdout.readline()
            url = re.search(r"(http://127\.0\.0\.1:\d+/\S+)", line)
            assert url, line
            client = FlexClient(flex_token, base_url=url[1], limiter=None, first_poll_delay=0.0)
            with client:
                seen[flag] = client.fetch("123456", start, end).content.decode()
    assert seen["--life-events"].count('type="TC"') == 4
    assert 'direction="OUT"' in seen["--life-events"]
    assert "<UnbundledCommissionDetail " in seen["--life-events"]
    assert 'type="TC"' not in seen[""] and "<UnbundledCommissionDetail " not in seen[""]


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_interest_accrues_daily_is_in_nav_and_is_reversed_when_posted(seed: int) -> None:
    """Broker interest accrues every day into NAV (EquitySummary interestAccruals), is posted to
    cash on the month's last business day and reversed there: each InterestAccruals row adds up
    (ending = starting + accrued + reversal + fxTranslation), the reversal is minus the interest
    posted, and the gateway's AccruedCash at the close is the Flex accrual of the day."""
    world = World(seed=seed, n_accounts=2, inception=date(2024, 1, 2), position_events=True)
    start, end = date(2024, 1, 2), date(2024, 2, 9)
    for account in world.accounts:
        days = world.days(account.account_id, start, end)
        assert any(d.nav.interest_accruals_base for d in days)
        for d in days:
            assert d.nav.interest_accruals_base == sum(
                (v * d.fx_to_base[c] for c, v in d.interest_accrued.items()), Decimal(0)
            ).quantize(Decimal("0.01"))
        xml = render_statement(world, [account.account_id], start, end)
        parsed = parse_statement(xml)
        rows = parsed["interest_accruals"].to_pylist()
        assert rows
        for r in rows:
            parts = r["starting_accrual_balance"] + r["interest_accrued"] + r["accrual_reversal"]
            assert parts + r["fx_translation"] == r["ending_accrual_balance"]
            if r["currency"] != "BASE_SUMMARY":
                assert r["fx_translation"] == 0
                posted = sum(
                    (
                        t.amount
                        for d in days
                        for t in d.cash_transactions
                        if t.type.startswith("Broker Interest") and t.currency == r["currency"]
                    ),
                    Decimal(0),
                )
                assert r["accrual_reversal"] == -posted
                assert r["ending_accrual_balance"] == days[-1].interest_accrued.get(
                    r["currency"], 0
                )
        (base,) = [r for r in rows if r["currency"] == "BASE_SUMMARY"]
        nav = {n["date"]: n for n in parsed["nav_daily"].to_pylist()}
        assert base["ending_accrual_balance"] == nav[end]["interest_accruals_base"]
        for d in days[-3:]:
            close = datetime.combine(d.date, time(17, 0), NEW_YORK).astimezone(UTC)
            values = {v[0]: v[1] for v in account_snapshot(world, account, close).values}
            assert Decimal(values["AccruedCash"]) == nav[d.date]["interest_accruals_base"]
            assert Decimal(values["NetLiquidation"]) == nav[d.date]["total_base"]


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_dividends_accrue_on_the_ex_date_and_are_paid_as_accrued(seed: int) -> None:
    """Holders at the ex-date accrue the dividend (ChangeInDividendAccrual code Po, in NAV as
    EquitySummary dividendAccruals), are paid it on the pay date as accrued (Dividends and
    Withholding Tax cash rows) and the accrual is reversed (code Re, amounts negative); a window
    ending between the two dates lists it in OpenDividendAccruals."""
    world = World(seed=seed, n_accounts=3, inception=date(2024, 1, 2), position_events=True)
    start, end = date(2024, 1, 2), date(2024, 6, 28)
    n_paid = 0
    for account in world.accounts:
        days = world.days(account.account_id, start, end)
        posted = {
            acc.action_id: acc for d in days for c, acc in d.dividend_accrual_changes if c == "Po"
        }
        for d in days:
            for code, acc in d.dividend_accrual_changes:
                if code != "Re":
                    continue
                assert d.date == acc.pay_date and posted[acc.action_id] == acc
                paid = [t for t in d.cash_transactions if t.conid == acc.conid]
                assert sum(t.amount for t in paid if t.type == "Dividends") == acc.gross
                assert -sum(t.amount for t in paid if t.type == "Withholding Tax") == acc.tax
                n_paid += 1
        xml = render_statement(world, [account.account_id], start, end)
        rows = parse_statement(xml)["dividend_accruals"].to_pylist()
        changes = [r for r in rows if r["accrual_kind"] == "change"]
        assert len(changes) == sum(len(d.dividend_accrual_changes) for d in days)
        for r in changes:
            assert r["net_amount"] == r["gross_amount"] - r["tax"]
            assert (r["code"] == "Po") == (r["gross_amount"] > 0)
        # a window ending between an ex-date and its pay date
        ex = next(acc for acc in posted.values() if acc.pay_date > acc.ex_date)
        mid = world.day(account.account_id, ex.ex_date)
        parsed = parse_statement(render_statement(world, [account.account_id], start, ex.ex_date))
        opened = [r for r in parsed["dividend_accruals"].to_pylist() if r["accrual_kind"] == "open"]
        assert {(r["conid"], r["net_amount"]) for r in opened} == {
            (a.conid, a.net) for a in mid.dividend_accruals
        }
        nav = {n["date"]: n for n in parsed["nav_daily"].to_pylist()}
        assert nav[ex.ex_date]["dividend_accruals_base"] == mid.nav.dividend_accruals_base > 0
    assert n_paid
