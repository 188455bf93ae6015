"""The Flex statement renderer: IBKR's shape and the world's numbers, for any window and format."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from lxml import etree

from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.world import World
from tests.fixture_files import PUBLIC_FLEX_DIR

PUBLIC = PUBLIC_FLEX_DIR
GENERATED = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
FROM, TO = date(2024, 3, 4), date(2024, 6, 28)
SECTIONS = [
    "AccountInformation", "EquitySummaryInBase", "ChangeInNAV", "CashReport", "OpenPositions",
    "FxPositions", "Trades", "TransactionTaxes", "OptionEAE", "PendingExcercises",
    "PriorPeriodPositions", "CorporateActions", "CashTransactions", "InterestAccruals",
    "Transfers", "ConversionRates",
]  # fmt: skip
D = Decimal


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=5, n_accounts=3, inception=date(2024, 1, 2))


@pytest.fixture(scope="module")
def xml(world: World) -> bytes:
    ids = [a.account_id for a in world.accounts]
    return render_statement(world, ids, FROM, TO, when_generated=GENERATED)


@pytest.fixture(scope="module")
def statements(xml: bytes) -> list[etree._Element]:
    return etree.fromstring(xml).findall("FlexStatements/FlexStatement")


def ymd(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()


def rows(statement: etree._Element, section: str, level: str | None = None) -> list:
    found = statement.find(section)
    assert found is not None, section
    return [r for r in found if level is None or r.get("levelOfDetail") == level]


def test_envelope_sections_and_counts(world: World, xml: bytes, statements) -> None:
    root = etree.fromstring(xml)
    assert root.tag == "FlexQueryResponse" and root.get("type") == "AF"
    assert root.get("queryName") == "ibpipeline"
    assert root.find("FlexStatements").get("count") == "3" == str(len(statements))
    days = world.business_days(FROM, TO)
    for st, account in zip(statements, world.accounts, strict=True):
        assert st.get("accountId") == account.account_id
        assert (st.get("fromDate"), st.get("toDate"), st.get("period")) == (
            "20240304",
            "20240628",
            "",
        )
        assert st.get("whenGenerated") == "20240701;080000"  # New York time
        assert [c.tag for c in st] == SECTIONS
        assert st.find("AccountInformation").get("currency") == account.base_currency
        assert len(rows(st, "EquitySummaryInBase")) == len(days) + 1
        assert len(rows(st, "ConversionRates")) == 4 * len(days)
    for empty in ("CorporateActions", "Transfers", "FxPositions"):
        assert xml.count(f"<{empty}>\n</{empty}>\n".encode()) == 3


@pytest.mark.parametrize(
    ("fixture", "tag", "level"),
    [
        ("opensteuerauszug_full_year_2025.xml", "AccountInformation", None),
        ("opensteuerauszug_full_year_2025.xml", "CashReportCurrency", "BaseCurrency"),
        ("opensteuerauszug_full_year_2025.xml", "CashReportCurrency", "Currency"),
        ("opensteuerauszug_full_year_2025.xml", "OpenPosition", "SUMMARY"),
        ("opensteuerauszug_full_year_2025.xml", "OpenPosition", "LOT"),
        ("opensteuerauszug_full_year_2025.xml", "Trade", "EXECUTION"),
        ("opensteuerauszug_full_year_2025.xml", "CashTransaction", "DETAIL"),
        ("opensteuerauszug_full_year_2025.xml", "CashTransaction", "SUMMARY"),
        ("pp_file17_one_day_many_sections.xml", "EquitySummaryByReportDateInBase", None),
        ("pp_file17_one_day_many_sections.xml", "ChangeInNAV", None),
        ("pp_file17_one_day_many_sections.xml", "PriorPeriodPosition", None),
    ],
)
def test_rows_carry_every_attribute_of_real_statements(xml: bytes, fixture, tag, level) -> None:
    real = etree.parse(str(PUBLIC / fixture)).getroot()
    ours = etree.fromstring(xml)
    path = f".//{tag}" + (f"[@levelOfDetail='{level}']" if level else "")
    expected = set(real.find(path).attrib)
    mine = ours.findall(path)
    assert mine, path
    for row in mine:
        assert expected <= set(row.attrib), expected - set(row.attrib)


def test_equity_summary_is_the_world_nav(world: World, statements) -> None:
    for st, account in zip(statements, world.accounts, strict=True):
        for row in rows(st, "EquitySummaryInBase"):
            day = world.day(account.account_id, ymd(row.get("reportDate")))
            parts = ("cash", "stock", "options", "bonds", "commodities")
            assert D(row.get("total")) == day.nav.total_base == sum(D(row.get(p)) for p in parts)
            assert D(row.get("totalLong")) + D(row.get("totalShort")) == day.nav.total_base
            assert D(row.get("stock")) == day.nav.stock_base
            assert row.get("currency") == account.base_currency


def test_change_in_nav_adds_up_and_twr_chains_the_world_returns(world: World, statements) -> None:
    for st, account in zip(statements, world.accounts, strict=True):
        c = st.find("ChangeInNAV").attrib
        days = world.days(account.account_id, FROM, TO)
        start = world.day(account.account_id, date(2024, 3, 1)).nav.total_base
        assert D(c["startingValue"]) == start and D(c["endingValue"]) == days[-1].nav.total_base
        growth = Decimal(1)
        for day in days:
            growth *= 1 + day.nav.total_base / (day.prev_nav_base + day.external_flow_base) - 1
        assert abs(D(c["twr"]) - (growth - 1) * 100) < D("1E-9")
        flows = sum(D(v) for k, v in c.items() if k not in {
            "accountId", "acctAlias", "model", "currency", "fromDate", "toDate", "startingValue",
            "endingValue", "twr"})  # fmt: skip
        assert D(c["startingValue"]) + flows == D(c["endingValue"])
        deposits = sum(d.external_flow_base for d in days)
        assert D(c["depositsWithdrawals"]) == deposits


def test_cash_report_reconciles_per_currency(world: World, statements) -> None:
    flow_fields = (
        "deposits", "withdrawals", "dividends", "brokerInterest", "bondInterest",
        "withholdingTax", "commissions", "otherFees", "advisorFees", "netTradesSales",
        "netTradesPurchases", "cashSettlingMtm", "fxTranslationGainLoss",
    )  # fmt: skip
    for st, account in zip(statements, world.accounts, strict=True):
        end = world.day(account.account_id, TO)
        start = world.day(account.account_id, date(2024, 3, 1))
        report = rows(st, "CashReport")
        assert report[0].get("currency") == "BASE_SUMMARY"
        assert report[0].get("levelOfDetail") == "BaseCurrency"
        assert D(report[0].get("endingCash")) == end.nav.cash_base
        for row in report:
            total = D(row.get("startingCash")) + sum(D(row.get(f)) for f in flow_fields)
            assert total == D(row.get("endingCash")) == D(row.get("endingSettledCash"))
        for row in report[1:]:
            ccy = row.get("currency")
            assert row.get("levelOfDetail") == "Currency"
            assert D(row.get("endingCash")) == end.cash.get(ccy, 0)
            assert D(row.get("startingCash")) == start.cash.get(ccy, 0)
            assert D(row.get("fxTranslationGainLoss")) == 0


def test_open_positions_match_the_nav_columns(world: World, statements) -> None:
    column = {"STK": "stock", "OPT": "options", "BOND": "bonds"}
    for st, account in zip(statements, world.accounts, strict=True):
        nav_row = rows(st, "EquitySummaryInBase")[-1]
        by_cat: dict[str, Decimal] = defaultdict(Decimal)
        lots: dict[str, Decimal] = defaultdict(Decimal)
        summary = rows(st, "OpenPositions", "SUMMARY")
        assert len(summary) == len(world.day(account.account_id, TO).positions)
        for row in summary:
            value = D(row.get("positionValue"))
            assert value == D(row.get("position")) * D(row.get("markPrice")) * D(
                row.get("multiplier")
            ) / (100 if row.get("assetCategory") == "BOND" else 1)
            assert D(row.get("fifoPnlUnrealized")) == value - D(row.get("costBasisMoney"))
            by_cat[row.get("assetCategory")] += value * D(row.get("fxRateToBase"))
        for row in rows(st, "OpenPositions", "LOT"):
            assert re.fullmatch(r"\d{8};\d{6}", row.get("openDateTime"))
            lots[row.get("conid")] += D(row.get("position"))
        assert lots == {r.get("conid"): D(r.get("position")) for r in summary}
        for cat, name in column.items():
            assert abs(by_cat[cat] - D(nav_row.get(name))) <= D("0.005")


def test_trades_executions_orders_and_closed_lots(world: World, statements) -> None:
    for st, account in zip(statements, world.accounts, strict=True):
        world_trades = [t for d in world.days(account.account_id, FROM, TO) for t in d.trades]
        executions = rows(st, "Trades", "EXECUTION")
        assert [r.get("transactionID") for r in executions] == [
            t.transaction_id for t in world_trades
        ]
        assert all(r.tag == "Trade" for r in executions)
        orders = rows(st, "Trades", "ORDER")
        assert {r.get("ibOrderID") for r in orders} == {t.ib_order_id for t in world_trades}
        assert len(orders) == len({t.ib_order_id for t in world_trades})
        assert all(r.tag == "Order" and r.get("tradeID") == r.get("transactionID") == ""
                   for r in orders)  # fmt: skip
        for order in orders:
            fills = [r for r in executions if r.get("ibOrderID") == order.get("ibOrderID")]
            assert D(order.get("quantity")) == sum(D(r.get("quantity")) for r in fills)
            assert D(order.get("netCash")) == sum(D(r.get("netCash")) for r in fills)
        closed = rows(st, "Trades", "CLOSED_LOT")
        assert closed and all(r.tag == "Lot" for r in closed)
        by_exec: dict[str, Decimal] = defaultdict(Decimal)
        current = None
        for row in st.find("Trades"):
            if row.get("levelOfDetail") == "EXECUTION":
                current = row
            elif row.get("levelOfDetail") == "CLOSED_LOT":
                assert current.get("openCloseIndicator") == "C"
                by_exec[current.get("transactionID")] += D(row.get("fifoPnlRealized"))
        for row in executions:
            if row.get("openCloseIndicator") == "C":
                assert by_exec[row.get("transactionID")] == D(row.get("fifoPnlRealized"))
            assert re.fullmatch(r"2024\d{4};\d{6}", row.get("dateTime"))


def test_cash_transaction_summaries_aggregate_details(world: World, statements) -> None:
    for st, account in zip(statements, world.accounts, strict=True):
        details = rows(st, "CashTransactions", "DETAIL")
        summaries = rows(st, "CashTransactions", "SUMMARY")
        world_txns = [
            t for d in world.days(account.account_id, FROM, TO) for t in d.cash_transactions
        ]
        assert sorted(r.get("transactionID") for r in details) == sorted(
            t.transaction_id for t in world_txns
        )
        totals: dict[tuple, Decimal] = defaultdict(Decimal)
        for r in details:
            assert r.get("accountId") == account.account_id
            totals[r.get("currency"), r.get("type")] += D(r.get("amount"))
        for r in summaries:
            assert (r.get("accountId"), r.get("acctAlias"), r.get("transactionID")) == (
                "-",
                "-",
                "",
            )
            assert re.fullmatch(r"\d{8}", r.get("dateTime"))
            totals[r.get("currency"), r.get("type")] -= D(r.get("amount"))
        assert summaries and all(v == 0 for v in totals.values())


def test_prior_period_positions_and_conversion_rates(world: World, statements) -> None:
    st, account = statements[0], world.accounts[0]
    days = world.business_days(FROM, TO)
    prior = rows(st, "PriorPeriodPositions")
    expected = sum(len(world.day(account.account_id, world.previous_business_day(d)).positions)
                   for d in days)  # fmt: skip
    assert len(prior) == expected
    for row in prior[:50]:
        d = ymd(row.get("date"))
        assert D(row.get("price")) == world.price(int(row.get("conid")), d)
    for row in rows(st, "ConversionRates")[:12]:
        d = ymd(row.get("reportDate"))
        assert row.get("toCurrency") == account.base_currency
        assert D(row.get("rate")) == world.fx_rate(
            row.get("fromCurrency"), account.base_currency, d
        )


def test_overlapping_windows_agree_on_shared_days(world: World) -> None:
    acct = [world.accounts[1].account_id]
    first = render_statement(
        world, acct, date(2024, 3, 1), date(2024, 4, 30), when_generated=GENERATED
    )
    second = render_statement(
        world, acct, date(2024, 4, 1), date(2024, 5, 31), when_generated=GENERATED
    )

    def by_day(xml: bytes, section: str, key: str) -> dict[str, list[bytes]]:
        out = defaultdict(list)
        for row in etree.fromstring(xml).find(f".//{section}"):
            out[row.get(key)].append(etree.tostring(row))
        return out

    for section, key in (("EquitySummaryInBase", "reportDate"), ("Trades", "tradeDate"),
                         ("PriorPeriodPositions", "date"), ("ConversionRates", "reportDate")):  # fmt: skip
        a, b = by_day(first, section, key), by_day(second, section, key)
        shared = {d for d in set(a) & set(b) if "20240401" <= d <= "20240430"}
        assert len(shared) >= 15 or section == "Trades"
        for d in shared:
            assert a[d] == b[d], (section, d)


@pytest.mark.parametrize(
    ("date_format", "date_re", "datetime_re"),
    [
        ("yyyyMMdd", r"\d{8}", r"\d{8};\d{6}"),
        ("yyyy-MM-dd", r"\d{4}-\d{2}-\d{2}", r"\d{4}-\d{2}-\d{2};\d{2}:\d{2}:\d{2}"),
        ("MM/dd/yyyy", r"\d{2}/\d{2}/\d{4}", r"\d{2}/\d{2}/\d{4};\d{2}:\d{2}:\d{2}"),
        ("MM/dd/yy", r"\d{2}/\d{2}/\d{2}", r"\d{2}/\d{2}/\d{2};\d{2}:\d{2}:\d{2}"),
        ("dd/MM/yyyy", r"\d{2}/\d{2}/\d{4}", r"\d{2}/\d{2}/\d{4};\d{2}:\d{2}:\d{2}"),
        ("dd/MM/yy", r"\d{2}/\d{2}/\d{2}", r"\d{2}/\d{2}/\d{2};\d{2}:\d{2}:\d{2}"),
        ("dd-MMM-yy", r"\d{2}-[A-Z][a-z]{2}-\d{2}", r"\d{2}-[A-Z][a-z]{2}-\d{2};\d{2}:\d{2}:\d{2}"),
    ],
)
def test_date_formats(world: World, date_format, date_re, datetime_re) -> None:
    acct = [world.accounts[0].account_id]
    xml = render_statement(world, acct, date(2024, 5, 1), date(2024, 5, 31),
                           date_format=date_format, when_generated=GENERATED)  # fmt: skip
    st = etree.fromstring(xml).find(".//FlexStatement")
    to = {"yyyyMMdd": "20240531", "yyyy-MM-dd": "2024-05-31", "MM/dd/yyyy": "05/31/2024",
          "MM/dd/yy": "05/31/24", "dd/MM/yyyy": "31/05/2024", "dd/MM/yy": "31/05/24",
          "dd-MMM-yy": "31-May-24"}  # fmt: skip
    assert st.get("toDate") == to[date_format]
    assert re.fullmatch(datetime_re, st.get("whenGenerated"))
    for row in st.iter("EquitySummaryByReportDateInBase", "ConversionRate"):
        assert re.fullmatch(date_re, row.get("reportDate"))
    execs = [r for r in st.iter("Trade")]
    assert execs and all(re.fullmatch(datetime_re, r.get("dateTime")) for r in execs)
    lots = [r for r in st.iter("OpenPosition") if r.get("levelOfDetail") == "LOT"]
    assert lots and all(re.fullmatch(datetime_re, r.get("openDateTime")) for r in lots)


def test_window_starting_before_inception(world: World) -> None:
    acct = world.accounts[2].account_id
    xml = render_statement(
        world, [acct], date(2023, 12, 20), date(2024, 1, 12), when_generated=GENERATED
    )
    st = etree.fromstring(xml).find(".//FlexStatement")
    summary = rows(st, "EquitySummaryInBase")
    assert [r.get("reportDate") for r in summary[:2]] == ["20231219", "20231220"]
    assert all(D(r.get("total")) == 0 for r in summary if r.get("reportDate") < "20240102")
    assert D(summary[-1].get("total")) == world.day(acct, date(2024, 1, 12)).nav.total_base
    c = st.find("ChangeInNAV")
    assert D(c.get("startingValue")) == 0
    assert D(c.get("depositsWithdrawals")) > 0


def test_escaping_and_ibflex_reads_it(world: World, xml: bytes) -> None:
    ibflex = pytest.importorskip("ibflex.parser")
    acct = [world.accounts[0].account_id]
    named = render_statement(
        world, acct, FROM, FROM, query_name='P&L <"q">', when_generated=GENERATED
    )
    assert named.startswith(b'<FlexQueryResponse queryName="P&amp;L &lt;&quot;q&quot;&gt;"')
    assert etree.fromstring(named).get("queryName") == 'P&L <"q">'
    response = ibflex.parse(xml)
    assert len(response.FlexStatements) == 3
    first = response.FlexStatements[0]
    ours = etree.fromstring(xml).find(".//ChangeInNAV")
    assert first.ChangeInNAV.twr == D(ours.get("twr"))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"account_ids": []}, ValueError),
        ({"account_ids": ["U0000000"]}, KeyError),
        ({"from_date": date(2024, 5, 2), "to_date": date(2024, 5, 1)}, ValueError),
        ({"date_format": "yyyy.MM.dd"}, ValueError),
    ],
)
def test_bad_arguments(world: World, kwargs, error) -> None:
    args = {"account_ids": [world.accounts[0].account_id], "from_date": date(2024, 5, 1),
            "to_date": date(2024, 5, 3)}  # fmt: skip
    args.update(kwargs)
    ids, start, end = args.pop("account_ids"), args.pop("from_date"), args.pop("to_date")
    with pytest.raises(error):
        render_statement(world, ids, start, end, **args)
