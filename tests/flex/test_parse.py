"""The Flex parser on synthetic statements: date formats, null tokens, leniency, errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from ibpipeline.flex.parse import FlexParseError, parse_statement

NY = ZoneInfo("America/New_York")


def statement(
    body: str,
    *,
    account: str = "U1234567",
    from_date: str = "20250303",
    to_date: str = "20250307",
    generated: str = "20250308;101500",
) -> str:
    return (
        f'<FlexStatement accountId="{account}" fromDate="{from_date}" toDate="{to_date}" '
        f'period="" whenGenerated="{generated}">\n{body}\n</FlexStatement>'
    )


def flex(*statements: str, count: int | None = None) -> bytes:
    n = len(statements) if count is None else count
    return (
        '<FlexQueryResponse queryName="t" type="AF">\n'
        f'<FlexStatements count="{n}">\n' + "\n".join(statements) + "\n</FlexStatements>\n"
        "</FlexQueryResponse>\n"
    ).encode()


def trade(**attrs: str) -> str:
    base = {
        "accountId": "U1234567",
        "currency": "USD",
        "assetCategory": "STK",
        "symbol": "AAPL",
        "conid": "265598",
        "quantity": "10",
        "tradePrice": "190.5",
        "levelOfDetail": "EXECUTION",
    }
    base.update(attrs)
    return "<Trade " + " ".join(f'{k}="{v}"' for k, v in base.items()) + " />"


def trades_of(*rows: str, **stmt) -> list[dict]:
    xml = flex(statement("<Trades>\n" + "\n".join(rows) + "\n</Trades>", **stmt))
    return parse_statement(xml)["trades"].to_pylist()


@pytest.mark.parametrize(
    ("name", "from_date", "to_date", "generated", "trade_date", "date_time"),
    [
        ("yyyyMMdd", "20250303", "20250317", "20250318;101500", "20250304", "20250304;093015"),
        (
            "yyyy-MM-dd",
            "2025-03-03",
            "2025-03-17",
            "2025-03-18;10:15:00",
            "2025-03-04",
            "2025-03-04, 09:30:15",
        ),
        (
            "MM/dd/yyyy",
            "03/03/2025",
            "03/17/2025",
            "03/18/2025 101500",
            "03/04/2025",
            "03/04/2025 09:30:15",
        ),
        ("MM/dd/yy", "03/03/25", "03/17/25", "03/18/25;10:15:00", "03/04/25", "03/04/25093015"),
        (
            "dd/MM/yyyy",
            "03/03/2025",
            "17/03/2025",
            "18/03/2025;101500",
            "04/03/2025",
            "04/03/2025;093015",
        ),
        ("dd/MM/yy", "03/03/25", "17/03/25", "18/03/25;101500", "04/03/25", "04/03/25T09:30:15"),
        (
            "dd-MMM-yy",
            "03-Mar-25",
            "17-MAR-25",
            "18-Mar-25;101500",
            "04-mar-25",
            "04-Mar-25;093015",
        ),
    ],
)
def test_each_date_format_and_separator(name, from_date, to_date, generated, trade_date, date_time):
    xml = flex(
        statement(
            "<Trades>\n" + trade(tradeDate=trade_date, dateTime=date_time) + "\n</Trades>",
            from_date=from_date,
            to_date=to_date,
            generated=generated,
        )
    )
    result = parse_statement(xml)
    (stmt,) = result.statements
    assert stmt.date_format == name and result.warnings == ()
    assert (stmt.from_date, stmt.to_date) == (date(2025, 3, 3), date(2025, 3, 17))
    assert stmt.when_generated_at == datetime(2025, 3, 18, 14, 15, tzinfo=UTC)  # 10:15 EDT
    (row,) = result["trades"].to_pylist()
    assert row["trade_date"] == row["date"] == date(2025, 3, 4)
    assert row["executed_at"] == datetime(2025, 3, 4, 14, 30, 15, tzinfo=UTC)  # 09:30:15 EST


def test_ambiguous_header_is_resolved_by_row_dates():
    rows = trades_of(
        trade(tradeDate="25/02/2025", dateTime="25/02/2025;120000"),
        from_date="01/02/2025",
        to_date="03/02/2025",
        generated="04/02/2025;120000",
    )
    assert rows[0]["trade_date"] == date(2025, 2, 25)


def test_fully_ambiguous_dates_assume_month_first_with_a_warning():
    xml = flex(
        statement(
            "<Trades>" + trade(tradeDate="01/02/2025") + "</Trades>",
            from_date="01/02/2025",
            to_date="01/03/2025",
            generated="01/04/2025;120000",
        )
    )
    result = parse_statement(xml)
    assert result.statements[0].date_format == "MM/dd/yyyy"
    assert result["trades"]["trade_date"].to_pylist() == [date(2025, 1, 2)]
    assert len(result.warnings) == 1 and "assumed MM/dd/yyyy" in result.warnings[0]


def test_new_york_daylight_saving_edges_match_zoneinfo():
    rows = trades_of(
        trade(dateTime="20251102;013000"),  # repeated hour: the first (EDT) instant
        trade(dateTime="20250310;093000"),  # first trading day on EDT
        trade(dateTime="20250307;160000"),  # last Friday on EST
    )
    expected = [
        datetime(2025, 11, 2, 1, 30, tzinfo=NY).astimezone(UTC),
        datetime(2025, 3, 10, 9, 30, tzinfo=NY).astimezone(UTC),
        datetime(2025, 3, 7, 16, 0, tzinfo=NY).astimezone(UTC),
    ]
    assert [r["executed_at"] for r in rows] == expected
    assert expected[0] == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)


def test_null_tokens_become_null():
    (row,) = trades_of(
        trade(
            tradeDate="MULTI",
            reportDate="MULTI",
            settleDateTarget="--",
            dateTime="",
            openCloseIndicator="-",
            exchange="N/A",
            strike="",
            notes="P;",
        )
    )
    assert row["trade_date"] is None and row["settle_date"] is None and row["executed_at"] is None
    assert row["open_close"] is None and row["exchange"] is None and row["strike"] is None
    assert row["date"] == date(2025, 3, 7)  # reportDate and tradeDate MULTI -> statement toDate
    assert row["notes"] == "P;"


def test_bom_unknown_section_unknown_row_and_unknown_enum():
    body = (
        '<BrandNewSection>\n<BrandNewRow a="1" />\n</BrandNewSection>\n'
        "<Trades>\n"
        + trade(assetCategory="QUANTUMFUT", buySell="BUY (Ca.)", shinyNewAttr="42")
        + '\n<WashSale accountId="U1234567" />\n'
        + '<Order accountId="U1234567" symbol="AAPL" quantity="10" tradeDate="MULTI" />'
        + "\n</Trades>"
    )
    result = parse_statement(b"\xef\xbb\xbf" + flex(statement(body)))
    assert result.skipped == {"BrandNewSection": 1, "Trades/WashSale": 1}
    execution, order = result["trades"].to_pylist()
    assert execution["asset_category"] == "QUANTUMFUT" and execution["buy_sell"] == "BUY (Ca.)"
    assert dict(execution["extra"]) == {"shinyNewAttr": "42"}
    assert execution["level_of_detail"] == "EXECUTION"
    assert order["level_of_detail"] == "ORDER"  # from the element when the attribute is missing


def test_summary_rows_take_the_statement_account_and_missing_detail_is_detail():
    body = (
        "<CashTransactions>\n"
        '<CashTransaction accountId="-" acctAlias="-" currency="EUR" amount="-5.25" type="Other Fees" '
        'dateTime="20250304" reportDate="20250304" levelOfDetail="SUMMARY" />\n'
        '<CashTransaction accountId="U7654321" currency="EUR" amount="-5.25" type="Other Fees" '
        'dateTime="20250304;120000" reportDate="20250304" transactionID="99" />\n'
        "</CashTransactions>\n"
        "<ConversionRates>\n"
        '<ConversionRate reportDate="20250304" fromCurrency="EUR" toCurrency="USD" rate="1.0512" />\n'
        '<ConversionRate reportDate="20250304" fromCurrency="RUS" toCurrency="USD" rate="-1" />\n'
        "</ConversionRates>"
    )
    result = parse_statement(flex(statement(body, account="U7654321")))
    summary, detail = result["cash_transactions"].to_pylist()
    assert (summary["account_id"], summary["level_of_detail"]) == ("U7654321", "SUMMARY")
    assert (detail["account_id"], detail["level_of_detail"]) == ("U7654321", "DETAIL")
    assert summary["amount"] == detail["amount"] == Decimal("-5.25")
    rates = result["fx_rates"].to_pylist()
    assert [(r["account_id"], r["from_currency"], r["rate"]) for r in rates] == [
        ("U7654321", "EUR", Decimal("1.0512")),
        ("U7654321", "RUS", None),
    ]


def test_many_statements_of_the_same_account_keep_their_own_dates():
    days = [f"202503{d:02d}" for d in (3, 4, 5)]
    xml = flex(
        *(
            statement(
                '<EquitySummaryInBase><EquitySummaryByReportDateInBase accountId="U1234567" '
                f'reportDate="{d}" total="{i}00.5" cash="{i}00.5" /></EquitySummaryInBase>',
                from_date=d,
                to_date=d,
            )
            for i, d in enumerate(days, start=1)
        )
    )
    nav = parse_statement(xml)["nav_daily"].to_pylist()
    assert [(r["date"].day, r["total_base"]) for r in nav] == [
        (3, Decimal("100.5")),
        (4, Decimal("200.5")),
        (5, Decimal("300.5")),
    ]


def test_decimals_are_exact_and_too_many_places_are_null_with_the_raw_text():
    (row,) = trades_of(trade(quantity="0.0000000001", tradePrice="12345678901234567.123456789"))
    assert row["quantity"] == Decimal("1E-10")
    assert row["trade_price"] == Decimal("12345678901234567.123456789")
    result = parse_statement(
        flex(
            statement("<Trades>" + trade(tradePrice="1.12345678901", quantity="ten") + "</Trades>")
        )
    )
    (row,) = result["trades"].to_pylist()
    assert row["trade_price"] is None and row["quantity"] is None
    assert dict(row["extra"]) == {"tradePrice": "1.12345678901", "quantity": "ten"}
    messages = {(p.column, p.message) for p in result.problems}
    assert messages == {
        ("trade_price", "has more than 10 decimal places; decimal128(38, 10) would lose digits"),
        ("quantity", "is not a number"),
    }


def test_impossible_dates_are_null_and_unreadable_headers_raise():
    result = parse_statement(
        flex(
            statement(
                "<Trades>" + trade(tradeDate="20250230", dateTime="20250304;253000") + "</Trades>"
            )
        )
    )
    (row,) = result["trades"].to_pylist()
    assert row["trade_date"] is None and row["executed_at"] is None
    assert row["date"] == date(2025, 3, 7)  # no date of its own: the statement's toDate
    assert dict(row["extra"]) == {"tradeDate": "20250230", "dateTime": "20250304;253000"}
    assert {(p.column, p.samples) for p in result.problems} == {
        ("trade_date", ("20250230",)),
        ("executed_at", ("20250304;253000",)),
    }
    with pytest.raises(FlexParseError, match="fit no Flex date format"):
        parse_statement(flex(statement("", from_date="2025.03.03", to_date="2025.03.07")))


def test_truncated_input_raises_with_position():
    xml = flex(statement("<Trades>\n" + trade() + "\n</Trades>"))
    with pytest.raises(
        FlexParseError, match=r"invalid or truncated Flex XML at line \d+, column \d+"
    ):
        parse_statement(xml[: len(xml) // 2])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty input"),
        (b"not xml at all", "invalid or truncated Flex XML"),
        (b"<html><body>502</body></html>", "root element is <html>, expected <FlexQueryResponse>"),
        (
            b"<FlexStatementResponse><Status>Fail</Status><ErrorCode>1019</ErrorCode>"
            b"</FlexStatementResponse>",
            "status/error envelope",
        ),
    ],
)
def test_not_a_statement_raises(data: bytes, message: str):
    with pytest.raises(FlexParseError, match=message):
        parse_statement(data)


def test_statement_count_mismatch_is_a_warning():
    result = parse_statement(flex(statement("<Trades>" + trade() + "</Trades>"), count=2))
    assert result["trades"].num_rows == 1
    assert result.problems == ()
    assert result.warnings == (
        "FlexStatements count=2 but 1 FlexStatement elements found; all of them were read",
    )
    assert result.warning_count == 1


def test_empty_response_gives_empty_tables():
    result = parse_statement(flex())
    assert result.statements == ()
    assert all(t.num_rows == 0 for t in result.tables.values())
