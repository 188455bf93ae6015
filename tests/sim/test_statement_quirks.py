"""Property tests: statements with IBKR's real-statement quirks, over many seeds, parse to the
world's truth (not to the parser's own assumptions).

Each seed has its own world (3 accounts, FX commissions charged in base currency as IBKR does)
and its own 10-day window between 2024-01-08 and 2024-04-21. The quirks: sub-account ids on
trade rows, commission currency != trade currency, OpenPositions / PriorPeriodPositions left out,
every date format x date-time separator x time format, zone suffixes, netCash="0" on FX trades,
a wrong FlexStatements count; always present: the day-before NAV row, several statements.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
from lxml import etree

from ibpipeline.flex.parse import ParsedFlex, parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.sim.flex_statement import (
    DATE_FORMATS,
    SUB_ACCOUNT_SUFFIX,
    StatementQuirks,
    parse_quirks,
    render_statement,
)
from ibpipeline.world import Trade, World, trade_cash

SEEDS = range(20)
GENERATED = datetime(2024, 6, 28, 12, 0, tzinfo=UTC)  # 28: no dd/MM vs MM/dd ambiguity
SUB_ACCOUNTS = frozenset({"OPT", "FUT", "CASH"})
SEPARATORS = (";", ", ", " ", "", "T")
TIME_FORMATS = ("HHmmss", "HH:mm:ss")
SECURITIES = ("stock_base", "options_base", "bonds_base")
ZERO = Decimal(0)


@dataclass(frozen=True)
class Case:
    seed: int
    world: World
    ids: tuple[str, ...]
    start: date
    end: date

    @property
    def days(self) -> list[date]:
        return self.world.business_days(self.start, self.end)

    def trades(self, account_id: str) -> list[Trade]:
        return [t for s in self.world.days(account_id, self.start, self.end) for t in s.trades]

    def render(self, quirks: StatementQuirks | None = None, date_format: str = "yyyyMMdd") -> bytes:
        return render_statement(self.world, self.ids, self.start, self.end,
                                date_format=date_format, when_generated=GENERATED,
                                quirks=quirks)  # fmt: skip


@functools.cache
def case(seed: int) -> Case:
    world = World(seed=seed, n_accounts=3, inception=date(2024, 1, 2), fx_commission_in_base=True)
    start = date(2024, 1, 8) + timedelta(days=5 * seed)
    ids = tuple(a.account_id for a in world.accounts)
    return Case(seed, world, ids, start, start + timedelta(days=9))


@functools.cache
def reference(seed: int) -> ParsedFlex:
    """The seed's statement without quirks, yyyyMMdd."""
    return parse_statement(case(seed).render())


def comparable(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in ("statement_sha256",) if c in table.column_names])


def assert_same_tables(parsed: ParsedFlex, ref: ParsedFlex, skip: tuple[str, ...] = ()) -> None:
    assert set(parsed.tables) == set(ref.tables)
    for name in parsed.tables:
        if name not in skip:
            got, want = comparable(parsed[name]), comparable(ref[name])
            assert got.equals(want), (name, got.num_rows, want.num_rows)


def base_rate(parsed: ParsedFlex, account_id: str, day: date, currency: str) -> Decimal:
    """currency -> base on ``day`` from the statement's ConversionRates (1 for the base)."""
    base = {s.account_id: s.base_currency for s in parsed.statements}[account_id]
    if currency == base:
        return Decimal(1)
    rates = parsed["fx_rates"].to_pylist()
    (rate,) = [
        r["rate"]
        for r in rates
        if (r["account_id"], r["date"], r["from_currency"], r["to_currency"])
        == (account_id, day, currency, base)
    ]
    return rate


def statement_account(account_id: str) -> str:
    return account_id.removesuffix(SUB_ACCOUNT_SUFFIX)


# --------------------------------------------------------------------------------------------------


def test_every_quirk_is_exercised_by_the_seeds() -> None:
    """Across the seeds: sub-account rows, FX commissions in base on a foreign-currency trade,
    positions held (so omitted OpenPositions matter), several statements per response."""
    sub, foreign_commission, held = 0, 0, 0
    for seed in SEEDS:
        c = case(seed)
        for a in c.ids:
            trades = c.trades(a)
            sub += sum(t.asset_category in SUB_ACCOUNTS for t in trades)
            foreign_commission += sum(t.commission_currency != t.currency for t in trades)
            held += any(c.world.day(a, d).positions for d in c.days)
    assert sub >= 20 and foreign_commission >= 10 and held >= 20
    statements = etree.fromstring(case(0).render()).findall("FlexStatements/FlexStatement")
    assert len(statements) == 3


@pytest.mark.parametrize("seed", SEEDS)
def test_executions_kept_under_the_account_id_written(seed: int) -> None:
    """Every world execution is in ``trades`` once, under ``<account>F`` when it was written in
    the sub-account, else under its account."""
    c = case(seed)
    quirks = StatementQuirks(sub_account_categories=SUB_ACCOUNTS)
    parsed = parse_statement(c.render(quirks))
    rows = [r for r in parsed["trades"].to_pylist() if r["level_of_detail"] == "EXECUTION"]
    got = sorted((r["transaction_id"], r["account_id"], r["quantity"]) for r in rows)
    want = sorted(
        (t.transaction_id, quirks.account_id(a, t.asset_category), t.quantity)
        for a in c.ids
        for t in c.trades(a)
    )
    assert got == want


@pytest.mark.parametrize("seed", SEEDS)
def test_day_before_nav_row_is_the_worlds_opening_nav(seed: int) -> None:
    c = case(seed)
    prev = c.world.previous_business_day(c.start)
    nav = {(r["account_id"], r["date"]): r for r in reference(seed)["nav_daily"].to_pylist()}
    for a in c.ids:
        row = nav.get((a, prev))
        assert row is not None, (a, prev)
        assert row["total_base"] == c.world.day(a, prev).nav.total_base
        for d in c.days:
            assert nav[(a, d)]["total_base"] == c.world.day(a, d).nav.total_base


@pytest.mark.parametrize("seed", SEEDS)
def test_commissions_in_base_equal_the_worlds(seed: int) -> None:
    """Each execution's commission, converted with the rate of its own currency (ConversionRates;
    1 for the base), sums per account to the world's; ChangeInNAV and the BASE_SUMMARY cash row
    say the same."""
    c = case(seed)
    parsed = parse_statement(c.render(StatementQuirks(sub_account_categories=SUB_ACCOUNTS)))
    got: dict[str, Decimal] = defaultdict(Decimal)
    for r in parsed["trades"].to_pylist():
        if r["level_of_detail"] == "EXECUTION":
            account = statement_account(r["account_id"])
            rate = base_rate(parsed, account, r["date"], r["commission_currency"])
            got[account] += r["commission"] * rate
    want: dict[str, Decimal] = defaultdict(Decimal)
    for a in c.ids:
        for s in c.world.days(a, c.start, c.end):
            for t in s.trades:
                want[a] += t.commission * s.fx_to_base[t.commission_currency]
                if t.asset_category == "CASH":  # IBKR: FX commissions are paid in base
                    assert t.commission_currency == s.base_currency
    assert got == want
    cnav = {r["account_id"]: r["commissions_base"] for r in parsed["change_in_nav"].to_pylist()}
    cash = {
        r["account_id"]: r["commissions"]
        for r in parsed["cash_balances"].to_pylist()
        if r["currency"] == "BASE_SUMMARY"
    }
    assert cnav == cash == {a: want[a] for a in c.ids}


@pytest.mark.parametrize("seed", SEEDS)
def test_cash_report_reconciles_to_the_worlds_cash(seed: int) -> None:
    """With commissions in another currency than the trade, each currency's CashReport row still
    adds up and ends at the world's cash; the world's cash identity holds through ``trade_cash``."""
    c = case(seed)
    root = etree.fromstring(c.render())
    fields = ("deposits", "withdrawals", "dividends", "brokerInterest", "bondInterest",
              "withholdingTax", "commissions", "otherFees", "advisorFees", "netTradesSales",
              "netTradesPurchases", "cashSettlingMtm")  # fmt: skip
    for st in root.iter("FlexStatement"):
        a = st.get("accountId")
        end = c.world.day(a, c.days[-1]).cash
        for row in st.iter("CashReportCurrency"):
            if row.get("levelOfDetail") != "Currency":
                continue
            flows = sum((Decimal(row.get(f)) for f in fields), ZERO)
            assert Decimal(row.get("endingCash")) - Decimal(row.get("startingCash")) == flows
            assert Decimal(row.get("endingCash")) == end.get(row.get("currency"), ZERO)
        prev = c.world.day(a, c.world.previous_business_day(c.start))
        for s in c.world.days(a, c.start, c.end):
            expected = defaultdict(Decimal, prev.cash)
            for txn in s.cash_transactions:
                expected[txn.currency] += txn.amount
            for t in s.trades:
                for ccy, amount in trade_cash(t).items():
                    expected[ccy] += amount
            for ccy, amount in s.variation.items():
                expected[ccy] += amount
            assert {k: v for k, v in expected.items() if v or k in s.cash} == s.cash
            prev = s


@pytest.mark.parametrize("seed", SEEDS)
def test_every_date_format_parses_to_the_same_tables(seed: int) -> None:
    """Each of the 7 date formats, with the seed's separator and time format, parses to exactly
    the tables of the yyyyMMdd statement."""
    c = case(seed)
    quirks = StatementQuirks(
        datetime_separator=SEPARATORS[seed % len(SEPARATORS)],
        time_format=TIME_FORMATS[seed % 2],
    )
    for date_format in DATE_FORMATS:
        parsed = parse_statement(c.render(quirks, date_format))
        assert_same_tables(parsed, reference(seed))


@pytest.mark.parametrize("separator", SEPARATORS)
@pytest.mark.parametrize("time_format", TIME_FORMATS)
@pytest.mark.parametrize("zone", [False, True])
def test_every_date_time_form_on_one_seed(separator: str, time_format: str, zone: bool) -> None:
    """The full grid of date-time forms x formats on seed 1 (incl. ``2024-03-05, 19:45:00`` and
    ``20240628;080000 EDT``)."""
    quirks = StatementQuirks(datetime_separator=separator, time_format=time_format, time_zone=zone)
    for date_format in DATE_FORMATS:
        parsed = parse_statement(case(1).render(quirks, date_format))
        assert_same_tables(parsed, reference(1))


@pytest.mark.parametrize("seed", SEEDS)
def test_statements_without_position_sections(seed: int) -> None:
    """Without OpenPositions and PriorPeriodPositions: every other table as before, no position
    rows at all, and the world's days holding securities are exactly the days to warn about."""
    from ibpipeline.assets.checks import days_without_positions

    c = case(seed)
    omitted = ("open_positions", "prior_period_positions")
    for omit in ({"OpenPositions"}, {"OpenPositions", "PriorPeriodPositions"}):
        parsed = parse_statement(c.render(StatementQuirks(omit_sections=frozenset(omit))))
        assert_same_tables(parsed, reference(seed), skip=omitted)
        assert parsed["open_positions"].num_rows == 0
        positions = reconstruct_daily_positions(parsed)
        assert positions.num_rows == 0
    missing = set(days_without_positions(parsed["nav_daily"].to_pylist(), []))
    for a in c.ids:
        for d in c.days:
            nav = c.world.day(a, d).nav
            holds = any((nav.stock_base, nav.options_base, nav.bonds_base))
            assert ((a, d) in missing) == holds, (a, d)


@pytest.mark.parametrize("seed", SEEDS[:5])
def test_position_sections_present_give_the_worlds_positions(seed: int) -> None:
    """Control for the test above: with the sections, every window day holding securities has
    the world's positions."""
    c = case(seed)
    positions = reconstruct_daily_positions(reference(seed)).to_pylist()
    got = defaultdict(dict)
    for r in positions:
        if r["level_of_detail"] == "SUMMARY":
            got[(r["account_id"], r["date"])][r["conid"]] = r["quantity"]
    for a in c.ids:
        for d in c.days:
            want = {k: p.quantity for k, p in c.world.day(a, d).positions.items()}
            assert got.get((a, d), {}) == want, (a, d)


@pytest.mark.parametrize("seed", SEEDS[:5])
def test_wrong_statements_count(seed: int) -> None:
    """``count="1"`` on a response of 3 statements (as a real file has): every statement read."""
    c = case(seed)
    xml = c.render(parse_quirks("count=1"))
    assert b'<FlexStatements count="1">' in xml
    parsed = parse_statement(xml)
    assert [s.account_id for s in parsed.statements] == list(c.ids)
    assert_same_tables(parsed, reference(seed))


@pytest.mark.parametrize("seed", SEEDS[:5])
def test_fx_net_cash_zero(seed: int) -> None:
    """FX conversions printed with netCash="0" (as IBKR does): the rows are read as written, the
    other tables unchanged."""
    c = case(seed)
    parsed = parse_statement(c.render(parse_quirks("fx_net_cash_zero")))
    assert_same_tables(parsed, reference(seed), skip=("trades",))
    got = {
        r["transaction_id"]: r["net_cash"]
        for r in parsed["trades"].to_pylist()
        if r["level_of_detail"] == "EXECUTION"
    }
    want = {
        t.transaction_id: ZERO if t.asset_category == "CASH" else t.net_cash
        for a in c.ids
        for t in c.trades(a)
    }
    assert got == want


def test_parse_quirks_spec() -> None:
    q = parse_quirks(
        "sub_accounts=OPT+FUT, omit=OpenPositions+PriorPeriodPositions, separator=comma,"
        " time=HHmmss, zone, fx_net_cash_zero, count=1"
    )
    assert q == StatementQuirks(
        sub_account_categories=frozenset({"OPT", "FUT"}),
        omit_sections=frozenset({"OpenPositions", "PriorPeriodPositions"}),
        datetime_separator=", ",
        time_format="HHmmss",
        time_zone=True,
        fx_net_cash_zero=True,
        statements_count=1,
    )
    assert parse_quirks("") == StatementQuirks()
    for bad in ("omit=Trades", "separator=pipe", "time=hh", "bogus"):
        with pytest.raises(ValueError):
            parse_quirks(bad)
