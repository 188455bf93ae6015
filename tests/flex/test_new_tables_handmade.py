"""The sections the real corpus lacks (FIFOPerformanceSummaryInBase, MTMPerformanceSummaryInBase,
UnbundledCommissionDetails, CFDCharges, FxTransactions), on hand-made statements whose rows carry
*every* attribute ibflex 1.1 documents for their element, each with its own value. Each row is
parsed by ibflex too, and every column must equal ibflex's value of the attribute it maps (so the
attribute names are ibflex's, not ours), and ``extra`` stays empty (every attribute is known).

Also: the rules the new tables brought (several sections in one table with a per-section column,
per-row-kind attribute names, IBKR's misspellings, date parts of date-times, unknown attributes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import typing
from decimal import Decimal
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from ibflex import Types, parser

from ibpipeline.flex.parse import parse_statement
from ibpipeline.flex.schema import SCHEMAS, TABLES

NY = ZoneInfo("America/New_York")
ACCOUNT = "U1234567"
NEW_TABLES = (
    "option_events",
    "interest_accruals",
    "dividend_accruals",
    "securities",
    "statement_of_funds",
    "fifo_performance",
    "mtm_performance",
    "fees",
    "stock_grants",
    "fx_transactions",
)
# section -> (row element, table)
HANDMADE = {
    "FIFOPerformanceSummaryInBase": ("FIFOPerformanceSummaryUnderlying", "fifo_performance"),
    "MTMPerformanceSummaryInBase": ("MTMPerformanceSummaryUnderlying", "mtm_performance"),
    "UnbundledCommissionDetails": ("UnbundledCommissionDetail", "fees"),
    "CFDCharges": ("CFDCharge", "fees"),
    "FxTransactions": ("FxTransaction", "fx_transactions"),
}
FIXED = {  # attributes whose value must be of a given form
    "accountId": ACCOUNT,
    "currency": "USD",
    "conid": "265598",
    "underlyingConid": "8314",
    "levelOfDetail": "DETAIL",
    "functionalCurrency": "EUR",
    "fxCurrency": "USD",
    "reportDate": "20250314",
    "date": "20250313",
}
ENUM_VALUES = {"AssetClass": "STK", "PutCall": "C", "BuySell": "BUY"}


def _base_type(hint):
    """``X`` of ``X | None``; other hints as they are."""
    if typing.get_origin(hint) is tuple:
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _value(name: str, hint, i: int) -> str | None:
    """A valid, distinct value for attribute ``name`` of type ``hint`` (None: leave it out)."""
    if name in FIXED:
        return FIXED[name]
    kind = _base_type(hint)
    if typing.get_origin(kind) is tuple or kind is bool:
        return None  # code tuples, flags: not compared
    if kind is decimal.Decimal:
        return f"{-1 if i % 2 else 1}{i}.{i:02d}5"
    if kind is dt.date:
        return f"202503{10 + i % 18:02d}"
    if kind is dt.datetime:
        return f"202503{10 + i % 18:02d};{i % 24:02d}1500"
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return ENUM_VALUES[kind.__name__]
    return f"v{i}"


def handmade_row(tag: str) -> dict[str, str]:
    cls = getattr(Types, tag)
    hints = typing.get_type_hints(cls)
    row = {}
    for i, f in enumerate(dataclasses.fields(cls)):
        value = _value(f.name, hints[f.name], i)
        if value is not None:
            row[f.name] = value
    return row


def statement(sections: dict[str, list[tuple[str, dict[str, str]]]]) -> bytes:
    def attrs(d: dict[str, str]) -> str:
        return " ".join(f'{k}="{v}"' for k, v in d.items())

    body = "".join(
        f"<{section}>" + "".join(f"<{tag} {attrs(row)} />" for tag, row in rows) + f"</{section}>"
        for section, rows in sections.items()
    )
    return (
        '<FlexQueryResponse queryName="hand" type="AF"><FlexStatements count="1">'
        f'<FlexStatement accountId="{ACCOUNT}" fromDate="20250301" toDate="20250331" '
        f'period="LastMonth" whenGenerated="20250401;083000">{body}</FlexStatement>'
        "</FlexStatements></FlexQueryResponse>"
    ).encode()


def _expected(kind: str, value):
    """ibflex's value of an attribute as our column holds it."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return value.value
    if kind == "int":
        return int(value)
    if kind == "ts":
        return value.replace(tzinfo=NY).astimezone(dt.UTC)
    if kind == "day":
        return value.date() if isinstance(value, dt.datetime) else value
    return value


@pytest.fixture(scope="module")
def handmade():
    rows = {section: [(tag, handmade_row(tag))] for section, (tag, _) in HANDMADE.items()}
    data = statement(rows)
    return parse_statement(data), parser.parse(data).FlexStatements[0]


@pytest.mark.parametrize("section", list(HANDMADE))
def test_every_ibflex_attribute_is_read_as_ibflex_reads_it(handmade, section) -> None:
    ours, theirs = handmade
    tag, table = HANDMADE[section]
    source = {"fees": "fee_source"}.get(table)
    rows = [r for r in ours[table].to_pylist() if source is None or r[source] == section]
    assert len(rows) == 1
    row = rows[0]
    assert row["extra"] == []  # every attribute ibflex documents is known
    (element,) = getattr(theirs, section)
    spec = TABLES[table]
    compared = 0
    for column in spec.columns:
        attribute = column.attribute(tag)
        if column.hidden or attribute is None or not hasattr(element, attribute):
            continue
        expected = _expected(column.kind, getattr(element, attribute))
        if column.name == "code":
            continue  # not given
        assert row[column.name] == expected, (column.name, attribute)
        compared += 1
    assert compared >= 10
    assert row["account_id"] == ACCOUNT
    assert ours.problems == ()


def test_handmade_fees_amounts_and_sources(handmade) -> None:
    ours, _ = handmade
    fees = {r["fee_source"]: r for r in ours["fees"].to_pylist()}
    assert set(fees) == {"UnbundledCommissionDetails", "CFDCharges"}
    ucd = handmade_row("UnbundledCommissionDetail")
    cfd = handmade_row("CFDCharge")
    assert fees["UnbundledCommissionDetails"]["amount"] == Decimal(ucd["totalCommission"])
    assert fees["UnbundledCommissionDetails"]["trade_price"] == Decimal(ucd["price"])
    assert fees["UnbundledCommissionDetails"]["other_charge"] == Decimal(ucd["other"])
    assert fees["CFDCharges"]["amount"] == Decimal(cfd["total"])
    assert fees["CFDCharges"]["cfd_amount"] == Decimal(cfd["amount"])
    assert fees["CFDCharges"]["cfd_received"] == Decimal(cfd["received"])
    # UnbundledCommissionDetail has no reportDate/date: date is the date part of dateTime
    assert fees["UnbundledCommissionDetails"]["date"] == dt.date(
        int(ucd["dateTime"][:4]), int(ucd["dateTime"][4:6]), int(ucd["dateTime"][6:8])
    )
    assert fees["CFDCharges"]["date"] == dt.date(2025, 3, 14)  # reportDate
    # breakdown columns of one kind are null on the others
    assert fees["CFDCharges"]["broker_execution_charge"] is None
    assert fees["UnbundledCommissionDetails"]["cfd_paid"] is None


def test_handmade_performance_period_and_base_units(handmade) -> None:
    ours, _ = handmade
    for table in ("fifo_performance", "mtm_performance"):
        (row,) = ours[table].to_pylist()
        assert (row["from_date"], row["to_date"]) == (dt.date(2025, 3, 1), dt.date(2025, 3, 31))
        assert row["date"] == dt.date(2025, 3, 14)
    fields = SCHEMAS["fifo_performance"]
    for name in ("realized_st_profit_base", "realized_lt_loss_base", "unrealized_pnl_base"):
        assert fields.field(name).metadata[b"unit"] == b"money in base currency"
    fx = SCHEMAS["fx_transactions"]
    assert fx.field("realized_pnl").metadata[b"unit"] == b"money in functional_currency"
    assert fx.field("realized_pnl").metadata[b"flex"] == b"realizedPL"


def test_summary_rows_dash_account_is_the_statements() -> None:
    row = handmade_row("CFDCharge") | {"accountId": "-", "levelOfDetail": "SUMMARY"}
    fifo = handmade_row("FIFOPerformanceSummaryUnderlying") | {"accountId": "-"}
    parsed = parse_statement(
        statement(
            {
                "CFDCharges": [("CFDCharge", row)],
                "FIFOPerformanceSummaryInBase": [("FIFOPerformanceSummaryUnderlying", fifo)],
            }
        )
    )
    (fee,) = parsed["fees"].to_pylist()
    assert (fee["account_id"], fee["level_of_detail"]) == (ACCOUNT, "SUMMARY")
    assert parsed["fifo_performance"]["account_id"].to_pylist() == [ACCOUNT]


def test_several_sections_one_table_with_the_section_in_a_column() -> None:
    open_row = {"accountId": ACCOUNT, "conid": "8719", "currency": "USD", "exDate": "20250310"}
    open_row |= {"payDate": "20250325", "quantity": "12", "grossRate": "1.13"}
    open_row |= {"grossAmount": "13.56", "tax": "2.03", "fee": "0", "netAmount": "11.53"}
    change = open_row | {"reportDate": "20250311", "date": "20250311", "actionID": "77"}
    parsed = parse_statement(
        statement(
            {
                "ChangeInDividendAccruals": [("ChangeInDividendAccrual", change)],
                "OpenDividendAccruals": [("OpenDividendAccrual", open_row)],
            }
        )
    )
    rows = parsed["dividend_accruals"].to_pylist()
    got = [(r["accrual_kind"], r["date"], r["level_of_detail"], r["net_amount"]) for r in rows]
    assert got == [
        ("change", dt.date(2025, 3, 11), "DETAIL", Decimal("11.53")),
        ("open", dt.date(2025, 3, 31), "DETAIL", Decimal("11.53")),  # open: the toDate
    ]
    assert parsed.skipped == {}


def test_a_row_of_another_kind_inside_a_fee_section_is_still_a_fee() -> None:
    tax = {"accountId": ACCOUNT, "currency": "EUR", "date": "20250305", "salesTax": "-0.42"}
    parsed = parse_statement(statement({"TransactionTaxes": [("SalesTax", tax)]}))
    (row,) = parsed["fees"].to_pylist()
    assert (row["fee_source"], row["amount"]) == ("SalesTaxes", Decimal("-0.42"))


def test_ibkr_misspelling_and_the_correct_spelling_are_both_read() -> None:
    base = {"accountId": ACCOUNT, "conid": "1", "date": "20250317", "transactionType": "Exercise"}
    parsed = parse_statement(
        statement(
            {
                "OptionEAE": [
                    ("OptionEAE", base | {"commisionsAndTax": "-1.25"}),
                    ("OptionEAE", base | {"commissionsAndTax": "-2.5"}),
                ]
            }
        )
    )
    rows = parsed["option_events"].to_pylist()
    assert [r["commissions_and_tax"] for r in rows] == [Decimal("-1.25"), Decimal("-2.5")]
    assert [r["extra"] for r in rows] == [[], []]


def test_transaction_tax_spellings_and_date_time_in_date() -> None:
    tax = {"accountId": ACCOUNT, "currency": "GBP", "date": "20250304;143015"}
    tax |= {"reportDate": "20250304", "taxAmount": "-3.02", "tradeId": "99", "quantity": "-148"}
    tax |= {"taxDescription": "UK Stamp Tax", "levelOfDetail": "SUMMARY"}
    parsed = parse_statement(statement({"TransactionTaxes": [("TransactionTax", tax)]}))
    (row,) = parsed["fees"].to_pylist()
    assert row["trade_id"] == "99"  # tradeId, not tradeID
    assert row["fee_at"] == dt.datetime(2025, 3, 4, 14, 30, 15, tzinfo=NY).astimezone(dt.UTC)
    assert row["fee_description"] == "UK Stamp Tax"
    assert (row["amount"], row["level_of_detail"]) == (Decimal("-3.02"), "SUMMARY")
    assert parsed.problems == ()


def test_date_part_of_a_date_time_and_unconvertible_values_per_row_kind() -> None:
    line = {"accountId": ACCOUNT, "currency": "USD", "reportDate": "20250305", "amount": "-1.5"}
    funds = [
        ("StatementOfFundsLine", line | {"date": "20250304;101500"}),
        ("StatementOfFundsLine", line | {"date": "20250304"}),
        ("StatementOfFundsLine", line | {"date": "2025-03-04, 10:15:00"}),
        ("StatementOfFundsLine", line | {"date": "soon"}),
    ]
    sales = {"accountId": ACCOUNT, "currency": "EUR", "date": "20250305", "salesTax": "x1"}
    parsed = parse_statement(statement({"StmtFunds": funds, "SalesTaxes": [("SalesTax", sales)]}))
    sof = parsed["statement_of_funds"].to_pylist()
    assert [r["activity_date"] for r in sof] == [dt.date(2025, 3, 4)] * 3 + [None]
    assert sof[3]["extra"] == [("date", "soon")]
    (fee,) = parsed["fees"].to_pylist()
    assert fee["amount"] is None and fee["extra"] == [("salesTax", "x1")]
    problems = {(p.table, p.column): p for p in parsed.problems}
    assert problems["statement_of_funds", "activity_date"].attribute == "date"
    assert problems["fees", "amount"].attribute == "salesTax"


def test_unknown_attributes_of_new_rows_go_to_extra() -> None:
    info = {"conid": "265598", "symbol": "AAPL", "isin": "US0378331005", "newAttr": "42"}
    parsed = parse_statement(statement({"SecuritiesInfo": [("SecurityInfo", info)]}))
    (row,) = parsed["securities"].to_pylist()
    assert row["extra"] == [("newAttr", "42")]
    assert (row["account_id"], row["date"]) == (ACCOUNT, dt.date(2025, 3, 31))


def test_interest_accruals_levels_and_period() -> None:
    base = {"accountId": ACCOUNT, "fromDate": "20250301", "toDate": "20250331"}
    rows = [
        (
            "InterestAccrualsCurrency",
            base | {"currency": "BASE_SUMMARY", "interestAccrued": "-6.7"},
        ),
        ("InterestAccrualsCurrency", {"accountId": ACCOUNT, "currency": "USD"}),
    ]
    parsed = parse_statement(statement({"InterestAccruals": rows}))
    got = [
        (r["currency"], r["level_of_detail"], r["from_date"], r["date"])
        for r in parsed["interest_accruals"].to_pylist()
    ]
    first, last = dt.date(2025, 3, 1), dt.date(2025, 3, 31)
    assert got == [("BASE_SUMMARY", "BaseCurrency", first, last), ("USD", "Currency", first, last)]


@pytest.mark.parametrize("table", NEW_TABLES)
def test_every_column_is_documented(table) -> None:
    schema = SCHEMAS[table]
    assert schema.metadata[b"doc"]
    assert schema.names[:2] == ["account_id", "date"]
    assert schema.names[-2:] == ["statement_sha256", "extra"]
    for field in schema:
        meta = field.metadata or {}
        if field.type == pa.decimal128(38, 10):
            assert meta.get(b"unit"), (table, field.name)
        if field.name not in ("date", "statement_sha256", "extra"):
            assert meta.get(b"flex") or meta.get(b"doc"), (table, field.name)
    if table == "fees":
        flex = schema.field("amount").metadata[b"flex"].decode()
        for attribute in ("totalCommission", "salesTax", "taxAmount", "total"):
            assert attribute in flex
