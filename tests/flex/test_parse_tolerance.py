"""Tolerance rules of the Flex parser (docs/tolerance.md, "Parsing rules"): one value never rejects
a statement; it becomes null, keeps its raw text in ``extra`` and is reported."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from ibpipeline.flex import parse
from ibpipeline.flex.parse import FlexParseError, ParseProblem, parse_statement
from tests.fixture_files import corpus_file
from tests.flex.test_parse import flex, statement, trade

NY = ZoneInfo("America/New_York")


def trades_xml(*rows: str, **stmt) -> bytes:
    return flex(statement("<Trades>\n" + "\n".join(rows) + "\n</Trades>", **stmt))


def test_a_non_integer_conid_of_a_real_statement_is_null_with_its_raw_text():
    path = corpus_file("portfolio__testIBFlexStatementFile12.xml")
    root = etree.parse(str(path)).getroot()
    expected = {
        table: [e.get("conid") or None for e in root.iter(tag)]
        for table, tag in (("trades", "Trade"), ("cash_transactions", "CashTransaction"))
    }
    assert expected["trades"][0] == "XXXXXCAD"
    result = parse_statement(path)
    for table, raws in expected.items():
        rows = result[table].to_pylist()
        assert [r["conid"] for r in rows] == [None] * len(raws)
        assert [dict(r["extra"]).get("conid") for r in rows] == raws
    by_table = {p.table: p for p in result.problems}
    assert by_table["trades"] == ParseProblem(
        table="trades",
        column="conid",
        attribute="conid",
        count=len(expected["trades"]),
        samples=("XXXXXCAD", "XXXXXUSD"),
        message="is not an integer",
    )
    assert by_table["cash_transactions"].count == 10 == len(list(filter(None, raws)))
    # 14 values + the AccountInformation element IBKR's export put outside the FlexStatement
    assert result.warning_count == 15
    assert result.warnings[-1] == (
        "element AccountInformation outside FlexStatement not imported: 1 row(s), kept in the "
        "raw file"
    )
    assert result.warnings[0] == (
        "trades.conid: 4 value(s) not converted, kept as null with the raw text in "
        "extra['conid'] (is not an integer; e.g. 'XXXXXCAD', 'XXXXXUSD')"
    )
    # the other columns of the failing block still convert
    assert result["trades"]["quantity"].to_pylist()[0] is not None


def test_only_the_failing_column_loses_values_and_other_tables_are_intact():
    xml = flex(
        statement(
            "<Trades>"
            + trade(conid="265598", tradePrice="1.5")
            + trade(conid="12x", tradePrice="2.25")
            + "</Trades><CashTransactions>"
            '<CashTransaction accountId="U1234567" currency="USD" amount="-1.5" conid="7" '
            'dateTime="20250304;101500" type="Other Fees"/>'
            "</CashTransactions>"
        )
    )
    result = parse_statement(xml)
    assert result["trades"]["conid"].to_pylist() == [265598, None]
    assert result["trades"]["trade_price"].to_pylist() == [Decimal("1.5"), Decimal("2.25")]
    assert [dict(e) for e in result["trades"]["extra"].to_pylist()] == [{}, {"conid": "12x"}]
    (ct,) = result["cash_transactions"].to_pylist()
    assert (ct["conid"], ct["amount"], ct["extra"]) == (7, Decimal("-1.5"), [])
    assert [(p.table, p.column, p.count) for p in result.problems] == [("trades", "conid", 1)]


def test_decimal_forms_that_cast_stay_exact_in_the_tolerant_path():
    rows = parse_statement(
        trades_xml(
            trade(quantity="bad"),
            trade(quantity="1E+3"),
            trade(quantity=".5"),
            trade(quantity="1.500000000000"),
            trade(quantity="1,234.5"),
            trade(quantity="-0.0000000001"),
        )
    )["trades"]["quantity"].to_pylist()
    assert rows == [
        None,
        Decimal(1000),
        Decimal("0.5"),
        Decimal("1.5"),
        Decimal("1234.5"),
        Decimal("-1E-10"),
    ]


def test_problems_add_up_across_flushes_with_three_distinct_samples(monkeypatch):
    monkeypatch.setattr(parse, "FLUSH_ROWS", 3)
    bad = ["a", "b", "a", "c", "d", "e", "e"]
    rows = [trade(conid=v) for v in bad] + [trade(conid="5")] * 4
    result = parse_statement(trades_xml(*rows))
    (problem,) = result.problems
    assert (problem.count, problem.samples) == (7, ("a", "b", "c"))
    assert result["trades"]["conid"].to_pylist() == [None] * 7 + [5] * 4
    assert [dict(e).get("conid") for e in result["trades"]["extra"].to_pylist()] == bad + [None] * 4
    assert result.warning_count == 7 and len(result.warnings) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20250304;093015", datetime(2025, 3, 4, 9, 30, 15, tzinfo=NY)),
        ("20250304, 09:30:15", datetime(2025, 3, 4, 9, 30, 15, tzinfo=NY)),
        ("20250304 093015", datetime(2025, 3, 4, 9, 30, 15, tzinfo=NY)),
        ("20250304T09:30:15", datetime(2025, 3, 4, 9, 30, 15, tzinfo=NY)),
        ("20250304093015", datetime(2025, 3, 4, 9, 30, 15, tzinfo=NY)),
        ("20250304;093015 EST", datetime(2025, 3, 4, 9, 30, 15, tzinfo=NY)),
        ("20250704;093015 EDT", datetime(2025, 7, 4, 9, 30, 15, tzinfo=NY)),
        ("20250704 09:30:15 ET", datetime(2025, 7, 4, 9, 30, 15, tzinfo=NY)),
        ("20250704;093015 UTC", datetime(2025, 7, 4, 9, 30, 15, tzinfo=UTC)),
        ("20250704 09:30:15 GMT", datetime(2025, 7, 4, 9, 30, 15, tzinfo=UTC)),
        ("20250704T093015Z", datetime(2025, 7, 4, 9, 30, 15, tzinfo=UTC)),
        # another format than the statement's (yyyyMMdd) that only one format fits
        ("2013-03-05, 19:45:00", datetime(2013, 3, 5, 19, 45, tzinfo=NY)),
        ("2025-07-04T09:30:15Z", datetime(2025, 7, 4, 9, 30, 15, tzinfo=UTC)),
        ("25/03/2025;101500", datetime(2025, 3, 25, 10, 15, tzinfo=NY)),
        ("04-Jul-25 09:30:15 EDT", datetime(2025, 7, 4, 9, 30, 15, tzinfo=NY)),
        ("03/03/2025", datetime(2025, 3, 3, tzinfo=NY)),  # both orders agree
    ],
)
def test_every_date_time_form_converts(value, expected):
    good = trade(dateTime="20250305;120000")
    rows = parse_statement(trades_xml(good, trade(dateTime=value)))["trades"].to_pylist()
    assert rows[1]["executed_at"] == expected.astimezone(UTC)
    assert rows[0]["executed_at"] == datetime(2025, 3, 5, 17, tzinfo=UTC)
    assert rows[1]["extra"] == []


def test_a_whole_statement_with_zones_converts():
    result = parse_statement(
        trades_xml(
            trade(dateTime="20250304;093015 EST", tradeDate="20250304"),
            trade(dateTime="20250304;143015 UTC", tradeDate="20250304"),
            generated="20250308;101500 EST",
        )
    )
    assert (
        result["trades"]["executed_at"].to_pylist()
        == [datetime(2025, 3, 4, 14, 30, 15, tzinfo=UTC)] * 2
    )
    assert result.statements[0].when_generated_at == datetime(2025, 3, 8, 15, 15, tzinfo=UTC)
    assert result.warnings == ()


def test_the_corporate_action_date_time_in_another_format():
    body = (
        "<CorporateActions>"
        '<CorporateAction accountId="U1234567" reportDate="20130305" conid="1" quantity="5" '
        'dateTime="2013-03-05, 19:45:00" type="FS"/>'
        "</CorporateActions>"
    )
    result = parse_statement(
        flex(statement(body, from_date="20130301", to_date="20130308", generated="20130309;080000"))
    )
    (row,) = result["corporate_actions"].to_pylist()
    assert row["action_at"] == datetime(2013, 3, 6, 0, 45, tzinfo=UTC)  # 19:45 EST
    assert result.problems == () and result.warnings == () and row["extra"] == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("05/03/2025;101500", "is ambiguous (MM/dd/yyyy or dd/MM/yyyy)"),
        ("20250304;253000", "is not a date-time in any Flex format"),
        ("yesterday", "is not a date-time in any Flex format"),
    ],
)
def test_a_date_time_in_no_or_two_formats_is_null_and_reported(value, message):
    result = parse_statement(trades_xml(trade(dateTime="20250305;120000"), trade(dateTime=value)))
    rows = result["trades"].to_pylist()
    assert rows[1]["executed_at"] is None and dict(rows[1]["extra"]) == {"dateTime": value}
    assert result.problems == (
        ParseProblem("trades", "executed_at", "dateTime", 1, (value,), message),
    )


def test_a_report_date_that_does_not_convert_falls_back_and_is_kept():
    result = parse_statement(trades_xml(trade(reportDate="2025-13-01", tradeDate="20250304")))
    (row,) = result["trades"].to_pylist()
    assert row["date"] == date(2025, 3, 4)
    assert dict(row["extra"]) == {"reportDate": "2025-13-01"}
    (problem,) = result.problems
    assert (problem.column, problem.attribute) == ("_report_date", "reportDate")


def test_a_statement_whose_rows_mostly_use_another_format():
    # header fits both orders; one row value fits neither: the format that fits most rows wins
    result = parse_statement(
        trades_xml(
            trade(tradeDate="25/02/2025"),
            trade(tradeDate="26/02/2025"),
            trade(tradeDate="2025.02.27"),
            from_date="01/02/2025",
            to_date="03/02/2025",
            generated="04/02/2025;120000",
        )
    )
    assert result.statements[0].date_format == "dd/MM/yyyy"
    assert result["trades"]["trade_date"].to_pylist() == [
        date(2025, 2, 25),
        date(2025, 2, 26),
        None,
    ]
    assert [p.samples for p in result.problems] == [("2025.02.27",)]


def test_an_unreadable_when_generated_is_a_warning():
    result = parse_statement(trades_xml(trade(), generated="sometime"))
    assert result.statements[0].when_generated_at is None
    assert result.warnings == (
        "statement #1 (account U1234567): whenGenerated 'sometime' is not a date-time in any "
        "Flex format; when_generated_at is null",
    )
    assert result.warning_count == 1


# -- account ids ------------------------------------------------------------------------------


def test_every_account_id_form_is_accepted():
    ids = ["U1234567F", "XXXXXUSD", "U***4321", "TEST_ACC", "DU1234567", "I1234567"]
    result = parse_statement(trades_xml(*(trade(accountId=a) for a in ids), account="UXXXXXXX"))
    assert result["trades"]["account_id"].to_pylist() == ids
    assert result.statements[0].account_id == "UXXXXXXX"


@pytest.mark.parametrize("bad", ["U12/34", "U1..2", "U1'2", "U1 2"])
def test_an_unsafe_header_account_id_refuses_the_statement(bad):
    with pytest.raises(FlexParseError, match=r"FlexStatement #1: unsafe account id") as exc:
        parse_statement(trades_xml(trade(), account=bad))
    assert repr(bad) in str(exc.value)


def test_an_unsafe_row_account_id_refuses_the_statement_naming_the_element():
    with pytest.raises(
        FlexParseError,
        match=r"unsafe account id '\.\./x' in the accountId of a Trade/Order/.* row of <Trades>",
    ):
        parse_statement(trades_xml(trade(), trade(accountId="../x")))


# -- periods ----------------------------------------------------------------------------------


def account_information(account: str = "U1234567") -> str:
    return f'<AccountInformation accountId="{account}" currency="USD" name="T"/>'


def test_a_period_longer_than_a_year_is_clipped_to_the_rows():
    body = (
        account_information()
        + "<Trades>"
        + trade(tradeDate="20250304")
        + trade(reportDate="20250306", tradeDate="20250305")
        + "</Trades>"
    )
    result = parse_statement(
        flex(statement(body, from_date="19000101", to_date="20991231", generated="20250308;101500"))
    )
    (info,) = result.statements
    assert (info.declared_from_date, info.declared_to_date) == (
        date(1900, 1, 1),
        date(2099, 12, 31),
    )
    assert (info.from_date, info.to_date) == (date(2025, 3, 4), date(2025, 3, 6))
    assert result["account_info"]["date"].to_pylist() == [
        date(2025, 3, 4),
        date(2025, 3, 5),
        date(2025, 3, 6),
    ]
    assert result.warnings == (
        "statement #1 (account U1234567): declared period 1900-01-01..2099-12-31 is 73049 days "
        "(IBKR serves at most 365); clipped to the span of its row dates 2025-03-04..2025-03-06",
    )
    assert result.warning_count == 1


def test_a_long_period_without_dated_rows_is_one_day(monkeypatch):
    monkeypatch.setattr(parse, "_today", lambda: date(2025, 5, 1))
    body = account_information() + (
        '<CashReport><CashReportCurrency accountId="U1234567" currency="USD" endingCash="5"/>'
        "</CashReport>"
    )
    result = parse_statement(flex(statement(body, from_date="19000101", to_date="20991231")))
    (info,) = result.statements
    assert (info.from_date, info.to_date) == (date(2025, 5, 1), date(2025, 5, 1))
    assert result["account_info"].num_rows == 1
    (cash,) = result["cash_balances"].to_pylist()
    assert (cash["date"], cash["from_date"], cash["to_date"]) == (date(2025, 5, 1),) * 3
    assert "no dated rows" in result.warnings[0] and "2025-05-01" in result.warnings[0]


def test_a_full_year_period_is_not_clipped():
    body = account_information() + "<Trades>" + trade(tradeDate="20240304") + "</Trades>"
    result = parse_statement(flex(statement(body, from_date="20240101", to_date="20241231")))
    (info,) = result.statements
    assert (info.from_date, info.to_date) == (date(2024, 1, 1), date(2024, 12, 31))
    assert info.declared_to_date == info.to_date
    assert result["account_info"].num_rows == 366
    assert result.warnings == ()


def test_only_the_long_statement_of_several_is_clipped():
    long = statement(
        account_information("U1111111")
        + "<Trades>"
        + trade(accountId="U1111111", tradeDate="20250305")
        + "</Trades>",
        account="U1111111",
        from_date="20000101",
        to_date="20251231",
    )
    short = statement(
        account_information("U2222222")
        + "<Trades>"
        + trade(accountId="U2222222", tradeDate="20250305")
        + "</Trades>",
        account="U2222222",
    )
    result = parse_statement(flex(long, short))
    assert [(s.from_date, s.to_date) for s in result.statements] == [
        (date(2025, 3, 5), date(2025, 3, 5)),
        (date(2025, 3, 3), date(2025, 3, 7)),
    ]
    days = result["account_info"].group_by("account_id").aggregate([("date", "count")])
    assert sorted(zip(*days.to_pydict().values(), strict=True)) == [
        ("U1111111", 1),
        ("U2222222", 5),
    ]


# -- cash balances ----------------------------------------------------------------------------


def test_deposits_and_withdrawals_from_the_net_amount_when_the_split_is_absent():
    rows = "".join(
        f'<CashReportCurrency accountId="U1234567" currency="{c}" {attrs}/>'
        for c, attrs in (
            ("USD", 'depositWithdrawals="1500.25"'),
            ("EUR", 'depositWithdrawals="-200.5"'),
            ("CHF", 'depositWithdrawals="0"'),
            ("GBP", 'depositWithdrawals="100" deposits="300" withdrawals="-200"'),
            ("JPY", 'depositWithdrawals="5" deposits="5"'),
            ("CAD", ""),
        )
    )
    result = parse_statement(flex(statement(f"<CashReport>{rows}</CashReport>")))
    got = [
        (r["currency"], r["deposits"], r["withdrawals"], r["deposits_withdrawals"])
        for r in result["cash_balances"].to_pylist()
    ]
    zero = Decimal(0)
    assert got == [
        ("USD", Decimal("1500.25"), zero, Decimal("1500.25")),
        ("EUR", zero, Decimal("-200.5"), Decimal("-200.5")),
        ("CHF", zero, zero, zero),
        ("GBP", Decimal(300), Decimal(-200), Decimal(100)),
        ("JPY", Decimal(5), None, Decimal(5)),
        ("CAD", None, None, None),
    ]


def test_statement_accounts_lists_row_accounts_and_refuses_unsafe_ones():
    from ibpipeline.assets.raw import statement_accounts
    from ibpipeline.partitions import InvalidAccountIdError

    xml = trades_xml(trade(), trade(accountId="U1234567F"), trade(accountId="-"))
    assert statement_accounts(xml) == ("U1234567", "U1234567F")
    with pytest.raises(InvalidAccountIdError, match=r"'U1/2'"):
        statement_accounts(trades_xml(trade(accountId="U1/2")))


def test_every_skipped_element_kind_with_rows_is_a_statement_warning():
    """Sections, row elements and elements outside a FlexStatement the parser does not model
    are never dropped silently: each kind that holds rows is one statement-level warning with
    its row count (the rows stay in the raw file); empty sections say nothing."""
    body = (
        '<FxPositions>\n<FxPosition accountId="U1234567" fxCurrency="USD" quantity="5" />\n'
        '<FxPosition accountId="U1234567" fxCurrency="EUR" quantity="7" />\n</FxPositions>\n'
        "<ComplexPositions />\n"
        '<NetStockPositionSummary accountId="U1234567" netShares="3" />\n'
        "<Trades>\n" + trade() + '\n<Frobnication accountId="U1234567" />\n</Trades>'
    )
    xml = flex(statement(body), count=1).replace(
        b"<FlexStatements", b'<AccountInformation accountId="X" currency="EUR" />\n<FlexStatements'
    )
    result = parse_statement(xml)
    assert result["trades"].num_rows == 1
    assert dict(result.skipped_rows) == {
        "FxPositions": 2,
        "NetStockPositionSummary": 1,
        "Trades/Frobnication": 1,
        "AccountInformation": 1,
    }
    assert set(result.warnings) == {
        "element AccountInformation outside FlexStatement not imported: 1 row(s), kept in the "
        "raw file",
        "section FxPositions not imported: 2 row(s), kept in the raw file",
        "section NetStockPositionSummary not imported: 1 row(s), kept in the raw file",
        "Frobnication rows of section Trades not imported: 1 row(s), kept in the raw file",
    }
    assert result.warning_count == 4 and result.skipped["ComplexPositions"] == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "opensteuerauszug__vtandchill_2025.xml",
            {"NetStockPositionSummary": 1, "FxPositions": 2},
        ),
        ("pp_file17_one_day_many_sections.xml", {"ChangeInPositionValues": 2}),
    ],
)
def test_real_statements_warn_about_the_sections_they_carry_but_are_not_imported(name, expected):
    result = parse_statement(corpus_file(name))
    assert dict(result.skipped_rows) == expected
    for section, rows in expected.items():
        line = f"section {section} not imported: {rows} row(s), kept in the raw file"
        assert line in result.warnings
