"""Proof on the simulator: daily positions reconstructed from one ~40-business-day statement equal
what one-day statements print, the world's own positions, and the EquitySummary NAV columns."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from ibpipeline.flex.parse import parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.world import World

FROM, TO = date(2024, 3, 4), date(2024, 4, 26)  # 40 business days
CENT = Decimal("0.01")
NAV_COLUMN = {"STK": "stock_base", "OPT": "options_base", "BOND": "bonds_base"}


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=11, n_accounts=3)


@pytest.fixture(scope="module")
def accounts(world: World) -> list[str]:
    return [a.account_id for a in world.accounts]


@pytest.fixture(scope="module")
def window(world: World, accounts: list[str]):
    return parse_statement(render_statement(world, accounts, FROM, TO))


@pytest.fixture(scope="module")
def rows(window) -> list[dict]:
    return reconstruct_daily_positions(window).to_pylist()


def summary(rows: list[dict]) -> dict[tuple[str, date], dict[int, dict]]:
    out: dict[tuple[str, date], dict[int, dict]] = defaultdict(dict)
    for r in rows:
        if r["level_of_detail"] == "SUMMARY":
            key = (r["account_id"], r["date"])
            assert r["conid"] not in out[key], "one SUMMARY row per conid and day"
            out[key][r["conid"]] = r
    return out


def test_window_exercises_every_path(world: World, accounts: list[str], rows: list[dict]) -> None:
    days = world.business_days(FROM, TO)
    assert len(days) == 40
    assert {r["asset_category"] for r in rows} >= {"STK", "OPT", "FUT", "BOND"}
    assert any(r["quantity"] < 0 for r in rows), "a short position"
    opened = closed = 0
    for account in accounts:
        for prev, day in zip(days, days[1:], strict=False):
            before, after = world.day(account, prev).positions, world.day(account, day).positions
            opened += len(set(after) - set(before))
            closed += len(set(before) - set(after))
    assert opened and closed, "positions opened and fully closed inside the window"
    assert {r["source"] for r in rows if r["date"] < TO} == {"reconstructed"}
    assert {r["source"] for r in rows if r["date"] == TO} == {"OpenPositions"}


def test_equals_one_day_statements(world: World, accounts: list[str], rows: list[dict]) -> None:
    mine = summary(rows)
    for day in world.business_days(FROM, TO):
        one_day = parse_statement(render_statement(world, accounts, day, day))
        printed = one_day.tables["open_positions"].to_pylist()
        for account in accounts:
            expected = {
                r["conid"]: (r["quantity"], r["mark_price"], r["position_value"])
                for r in printed
                if r["account_id"] == account and r["level_of_detail"] == "SUMMARY"
            }
            got = {
                conid: (r["quantity"], r["mark_price"], r["position_value"])
                for conid, r in mine.get((account, day), {}).items()
            }
            assert got == expected, (account, day)
        if day == TO:  # the window's last day carries the printed LOT rows too
            lots = sorted(
                (r["account_id"], r["conid"], r["lot_open_at"], r["quantity"])
                for r in printed
                if r["level_of_detail"] == "LOT"
            )
            assert lots == sorted(
                (r["account_id"], r["conid"], r["lot_open_at"], r["quantity"])
                for r in rows
                if r["level_of_detail"] == "LOT"
            )
    assert all(r["date"] == TO for r in rows if r["level_of_detail"] == "LOT")


def test_equals_world_positions(world: World, accounts: list[str], rows: list[dict]) -> None:
    mine = summary(rows)
    for account in accounts:
        for state in world.days(account, FROM, TO):
            got = mine.get((account, state.date), {})
            assert set(got) == set(state.positions), (account, state.date)
            for conid, pos in state.positions.items():
                r = got[conid]
                assert (r["quantity"], r["mark_price"], r["position_value"]) == (
                    pos.quantity,
                    pos.mark_price,
                    pos.position_value,
                )
                assert r["currency"] == pos.currency
                assert r["asset_category"] == pos.asset_category
                assert r["fx_rate_to_base"] == state.fx_to_base[pos.currency]
                fut = pos.asset_category == "FUT"
                expected_base = 0 if fut else pos.position_value * state.fx_to_base[pos.currency]
                assert r["value_base"] == expected_base


def test_value_base_by_class_equals_equity_summary(window, rows: list[dict]) -> None:
    """The world rounds each NAV component's long and short sums half-even to the cent."""
    parts: dict[tuple, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for r in summary(rows).values():
        for p in r.values():
            assert p["value_base"] is not None
            if p["asset_category"] == "FUT":
                assert p["value_base"] == 0 and p["position_value"] != 0
                continue
            key = (p["account_id"], p["date"], NAV_COLUMN[p["asset_category"]])
            parts[key][0 if p["value_base"] >= 0 else 1] += p["value_base"]
    nav = [n for n in window.tables["nav_daily"].to_pylist() if n["date"] >= FROM]
    assert len(nav) == 3 * 40
    for n in nav:
        for column in NAV_COLUMN.values():
            long, short = parts.get((n["account_id"], n["date"], column), (0, 0))
            cents = Decimal(long).quantize(CENT, ROUND_HALF_EVEN) + Decimal(short).quantize(
                CENT, ROUND_HALF_EVEN
            )
            assert cents == n[column], (n["account_id"], n["date"], column)
