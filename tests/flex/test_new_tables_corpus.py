"""Every real statement that carries CorporateActions, OptionEAE, Transfers, InterestAccruals,
Open/ChangeInDividendAccruals, SecuritiesInfo, StmtFunds, FIFO/MTMPerformanceSummaryInBase,
SalesTaxes, TransactionTaxes, UnbundledCommissionDetails, CFDCharges, StockGrantActivities or
FxTransactions rows: the normalized table has, per account (and per section where one table
reads several), exactly the XML's rows, on the XML's dates, with money sums equal to the XML's
as exact decimals. The XML is read here with lxml, independently of the parser (attribute names
written out below, not taken from the schema). Parametrized over the corpus folders, so a file
added there is tested with no code change."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from ibpipeline.flex.parse import parse_statement
from tests.fixture_files import corpus_files, shared_only_corpus_names

NULLS = ("", "-", "--", "N/A", "MULTI")

# table -> section -> (row element, {column: attribute summed})
CHECKS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "corporate_actions": {
        "CorporateActions": (
            "CorporateAction",
            {
                "quantity": "quantity",
                "amount": "amount",
                "proceeds": "proceeds",
                "value": "value",
                "cost_basis": "costBasis",
                "realized_pnl": "fifoPnlRealized",
            },
        )
    },
    "transfers": {
        "Transfers": (
            "Transfer",
            {
                "quantity": "quantity",
                "position_amount": "positionAmount",
                "position_amount_base": "positionAmountInBase",
                "cash_transfer": "cashTransfer",
                "pnl_amount": "pnlAmount",
            },
        )
    },
    "option_events": {
        "OptionEAE": (
            "OptionEAE",
            {
                "quantity": "quantity",
                "proceeds": "proceeds",
                "commissions_and_tax": "commisionsAndTax",
                "cost_basis": "costBasis",
                "realized_pnl": "realizedPnl",
                "mtm_pnl": "mtmPnl",
            },
        )
    },
    "interest_accruals": {
        "InterestAccruals": (
            "InterestAccrualsCurrency",
            {
                "interest_accrued": "interestAccrued",
                "accrual_reversal": "accrualReversal",
                "fx_translation": "fxTranslation",
                "ending_accrual_balance": "endingAccrualBalance",
            },
        )
    },
    "dividend_accruals": {
        section: (
            tag,
            {
                "quantity": "quantity",
                "gross_amount": "grossAmount",
                "tax": "tax",
                "net_amount": "netAmount",
            },
        )
        for section, tag in (
            ("OpenDividendAccruals", "OpenDividendAccrual"),
            ("ChangeInDividendAccruals", "ChangeInDividendAccrual"),
        )
    },
    "securities": {
        "SecuritiesInfo": ("SecurityInfo", {"multiplier": "multiplier", "strike": "strike"})
    },
    "statement_of_funds": {
        "StmtFunds": (
            "StatementOfFundsLine",
            {
                "debit": "debit",
                "credit": "credit",
                "amount": "amount",
                "balance": "balance",
                "trade_gross": "tradeGross",
                "trade_commission": "tradeCommission",
            },
        )
    },
    "fifo_performance": {
        "FIFOPerformanceSummaryInBase": (
            "FIFOPerformanceSummaryUnderlying",
            {
                "realized_st_profit_base": "realizedSTProfit",
                "realized_st_loss_base": "realizedSTLoss",
                "realized_lt_profit_base": "realizedLTProfit",
                "realized_lt_loss_base": "realizedLTLoss",
                "realized_pnl_base": "totalRealizedPnl",
                "unrealized_pnl_base": "totalUnrealizedPnl",
                "unrealized_lt_loss_base": "unrealizedLTLoss",
                "total_pnl_base": "totalFifoPnl",
            },
        )
    },
    "mtm_performance": {
        "MTMPerformanceSummaryInBase": (
            "MTMPerformanceSummaryUnderlying",
            {
                "transaction_mtm_base": "transactionMtm",
                "prior_open_mtm_base": "priorOpenMtm",
                "commissions_base": "commissions",
                "total_base": "total",
                "total_with_accruals_base": "totalWithAccruals",
            },
        )
    },
    "fees": {
        "SalesTaxes": ("SalesTax", {"amount": "salesTax", "taxable_amount": "taxableAmount"}),
        "TransactionTaxes": ("TransactionTax", {"amount": "taxAmount", "quantity": "quantity"}),
        "UnbundledCommissionDetails": (
            "UnbundledCommissionDetail",
            {"amount": "totalCommission", "broker_execution_charge": "brokerExecutionCharge"},
        ),
        "CFDCharges": ("CFDCharge", {"amount": "total", "cfd_paid": "paid"}),
    },
    "stock_grants": {
        "StockGrantActivities": (
            "StockGrantActivity",
            {"quantity": "quantity", "price": "price", "value": "value"},
        )
    },
    "fx_transactions": {
        "FxTransactions": (
            "FxTransaction",
            {"quantity": "quantity", "proceeds": "proceeds", "realized_pnl": "realizedPL"},
        )
    },
}
# the column telling a table's sections apart, and its value per section
SECTION_COLUMN = {
    "dividend_accruals": (
        "accrual_kind",
        {"OpenDividendAccruals": "open", "ChangeInDividendAccruals": "change"},
    ),
    "fees": ("fee_source", None),  # the section name itself
}
# attributes whose first non-empty value's date part is the row's date (else the toDate)
DATE_ATTRIBUTES = {
    "corporate_actions": ("reportDate",),
    "transfers": ("reportDate", "date"),
    "option_events": ("date",),
    "interest_accruals": ("toDate",),
    "dividend_accruals": ("reportDate", "date"),
    "securities": (),
    "statement_of_funds": ("reportDate", "date"),
    "fifo_performance": ("reportDate",),
    "mtm_performance": ("reportDate",),
    "fees": ("reportDate", "date", "dateTime"),
    "stock_grants": ("reportDate", "awardDate"),
    "fx_transactions": ("reportDate", "dateTime"),
}


def xml_date(text: str) -> date:
    """``yyyyMMdd`` or ``yyyy-MM-dd``, with or without a time after it (the corpus's forms)."""
    m = re.match(r"(\d{4})-?(\d{2})-?(\d{2})", text)
    assert m, text
    return date(int(m[1]), int(m[2]), int(m[3]))


def money(text: str | None) -> Decimal | None:
    return None if text in (None, *NULLS) else Decimal(text.replace(",", ""))


def xml_rows(path: Path, table: str) -> list[tuple[str, str, date, etree._Element]]:
    """(account, section, date, element) of every row of the table's sections in the XML."""
    out = []
    for stmt in etree.parse(str(path)).getroot().iter("FlexStatement"):
        for section, (tag, _) in CHECKS[table].items():
            for container in stmt.findall(section):
                for el in container.findall(tag):
                    account = el.get("accountId")
                    if account in (None, *NULLS):
                        account = stmt.get("accountId")
                    texts = [el.get(a) for a in DATE_ATTRIBUTES[table]]
                    day = next((t for t in texts if t not in (None, *NULLS)), stmt.get("toDate"))
                    out.append((account, section, xml_date(day), el))
    return out


def _cases() -> list[tuple[Path, str]]:
    cases = []
    for path in corpus_files():
        for table in CHECKS:
            if xml_rows(path, table):
                cases.append((path, table))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def parsed_files():
    cache: dict[Path, object] = {}

    def get(path: Path):
        if path not in cache:
            cache[path] = parse_statement(path)
        return cache[path]

    return get


def _section_of(table: str, row: dict) -> str:
    column, values = SECTION_COLUMN.get(table, (None, None))
    if column is None:
        return next(iter(CHECKS[table]))
    if values is None:
        return row[column]
    return {v: k for k, v in values.items()}[row[column]]


def test_the_corpus_exercises_the_new_tables() -> None:
    tables = {table for _, table in CASES}
    # sections with rows in the real corpus (the others: test_new_tables_handmade.py)
    expected = {
        "corporate_actions",
        "transfers",
        "option_events",
        "interest_accruals",
        "dividend_accruals",
        "securities",
        "statement_of_funds",
        "fifo_performance",
        "mtm_performance",
        "fees",
        "stock_grants",
    }
    if not shared_only_corpus_names():  # a clone without ../shared: OptionEAE is only in GPL files
        expected.discard("option_events")
    assert expected <= tables


@pytest.mark.parametrize(("path", "table"), CASES, ids=[f"{p.name}-{t}" for p, t in CASES])
def test_rows_per_account_section_and_date_match_the_xml(parsed_files, path, table) -> None:
    xml = Counter((account, section, day) for account, section, day, _ in xml_rows(path, table))
    rows = parsed_files(path)[table].to_pylist()
    got = Counter((r["account_id"], _section_of(table, r), r["date"]) for r in rows)
    assert got == xml


@pytest.mark.parametrize(("path", "table"), CASES, ids=[f"{p.name}-{t}" for p, t in CASES])
def test_money_sums_per_account_and_section_match_the_xml(parsed_files, path, table) -> None:
    xml: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for account, section, _, el in xml_rows(path, table):
        for column, attribute in CHECKS[table][section][1].items():
            value = money(el.get(attribute))
            if value is not None:
                xml[account, section, column] += value
    got: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for row in parsed_files(path)[table].to_pylist():
        section = _section_of(table, row)
        for column in CHECKS[table][section][1]:
            if row[column] is not None:
                got[row["account_id"], section, column] += row[column]
    assert dict(got) == dict(xml)


@pytest.mark.parametrize(("path", "table"), CASES, ids=[f"{p.name}-{t}" for p, t in CASES])
def test_conids_and_nothing_lost_to_problems(parsed_files, path, table) -> None:
    parsed = parsed_files(path)
    xml = Counter(
        (account, int(el.get("conid")) if el.get("conid") not in (None, *NULLS) else None)
        for account, _, _, el in xml_rows(path, table)
        if table not in ("interest_accruals", "fx_transactions")
    )
    if table not in ("interest_accruals", "fx_transactions"):
        t = parsed[table]
        got = Counter(zip(t["account_id"].to_pylist(), t["conid"].to_pylist(), strict=True))
        assert got == xml
    assert [p for p in parsed.problems if p.table == table] == []


# -- a few files in detail -------------------------------------------------------------------


def _file(name: str) -> Path:
    for path in corpus_files():
        if path.name == name:
            return path
    pytest.skip(f"{name} is not in the corpus here (../shared absent)")


def test_jal_corporate_actions_keep_every_type(parsed_files) -> None:
    path = _file("jal__ibkr.xml")
    types = Counter(el.get("type") for _, _, _, el in xml_rows(path, "corporate_actions"))
    got = Counter(parsed_files(path)["corporate_actions"]["type"].to_pylist())
    assert got == types and len(got) >= 10  # TC, RS, IC, TO, SO, HI, FS, BM, SD, DW


def test_isin_change_summary_rows_take_the_statement_account(parsed_files) -> None:
    path = _file("opensteuerauszug__corporate_action_2025.xml")
    rows = parsed_files(path)["corporate_actions"].to_pylist()
    assert {r["account_id"] for r in rows} == {"U1234567"}
    assert {r["type"] for r in rows} == {"IC"}
    assert {r["level_of_detail"] for r in rows} >= {"SUMMARY"}
    figis = Counter(el.get("figi") or None for _, _, _, el in xml_rows(path, "corporate_actions"))
    assert Counter(r["figi"] for r in rows) == figis and figis["BBG006NLWJB5"] == 2


def test_declarenta_option_lifecycle(parsed_files) -> None:
    path = _file("DeclaRenta__ibkr-options.xml")
    rows = parsed_files(path)["option_events"].to_pylist()
    kinds = Counter(r["transaction_type"] for r in rows)
    xml = Counter(el.get("transactionType") for _, _, _, el in xml_rows(path, "option_events"))
    assert kinds == xml and {"Exercise", "Buy"} <= set(kinds)
    exercise = next(r for r in rows if r["trade_id"] == "TXN-0010")
    assert (exercise["quantity"], exercise["mtm_pnl"]) == (Decimal(-6), Decimal(-4152))
    assert exercise["underlying_conid"] == 669228291 and exercise["expiry"] == date(2025, 1, 17)


def test_securities_identifiers(parsed_files) -> None:
    path = _file("jal__ibkr_bond.xml")
    xml = {
        int(el.get("conid")): (el.get("isin") or None, el.get("maturity") or None)
        for _, _, _, el in xml_rows(path, "securities")
    }
    rows = parsed_files(path)["securities"].to_pylist()
    got = {
        r["conid"]: (r["isin"], r["maturity"].strftime("%Y%m%d") if r["maturity"] else None)
        for r in rows
    }
    assert got == xml
    assert any(m for _, m in got.values())  # a bond's maturity is read as a date


def test_statement_of_funds_balance_runs_in_document_order(parsed_files) -> None:
    path = _file("ib-flex-reader__StatementOfFunds.xml")
    rows = parsed_files(path)["statement_of_funds"].to_pylist()
    xml = [money(el.get("balance")) for _, _, _, el in xml_rows(path, "statement_of_funds")]
    assert [r["balance"] for r in rows] == xml
    assert {r["level_of_detail"] for r in rows} == {"BaseCurrency"}
