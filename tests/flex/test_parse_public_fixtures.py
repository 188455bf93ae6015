"""The parser on the four real public Flex statements: numbers picked from the XML by hand, plus
cross-checks against an independent ElementTree reading of the same files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import ibpipeline.flex.parse as parse_module
from ibpipeline.flex.parse import ParsedFlex, parse_statement, parse_to_parquet
from ibpipeline.flex.schema import SCHEMAS
from tests.fixture_files import PUBLIC_FLEX_DIR

PUBLIC = PUBLIC_FLEX_DIR
FILE17 = PUBLIC / "pp_file17_one_day_many_sections.xml"
FILE26 = PUBLIC / "pp_file26_two_accounts.xml"
FULL_YEAR = PUBLIC / "opensteuerauszug_full_year_2025.xml"
READER = PUBLIC / "ibflexreader_cash_report_trades.xml"
ALL_FILES = (FILE17, FILE26, FULL_YEAR, READER)


@pytest.fixture(scope="module")
def parsed() -> dict[str, ParsedFlex]:
    return {p.name: parse_statement(p) for p in ALL_FILES}


def rows(table: pa.Table, **where) -> list[dict]:
    return [r for r in table.to_pylist() if all(r[k] == v for k, v in where.items())]


def one(table: pa.Table, **where) -> dict:
    found = rows(table, **where)
    assert len(found) == 1, (where, len(found))
    return found[0]


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_every_table_has_its_schema_and_the_file_sha(path: Path, parsed) -> None:
    import hashlib

    result = parsed[path.name]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.source_sha256 == sha
    assert set(result.tables) == set(SCHEMAS)
    for name, table in result.tables.items():
        assert table.schema.equals(SCHEMAS[name]), name
        if table.num_rows:
            assert pc.all(pc.equal(table["statement_sha256"], sha)).as_py()
            assert table["account_id"].null_count == 0
            assert table["date"].null_count == 0


def test_file17_nav_change_in_nav_and_positions(parsed) -> None:
    r = parsed[FILE17.name]
    (stmt,) = r.statements
    assert (stmt.account_id, stmt.from_date, stmt.to_date, stmt.period) == (
        "U1111111",
        date(2023, 3, 2),
        date(2023, 3, 2),
        "",
    )
    assert stmt.base_currency == "USD" and stmt.date_format == "yyyyMMdd"
    assert stmt.when_generated_at == datetime(2023, 4, 16, 7, 4, 20, tzinfo=UTC)  # 03:04:20 EDT

    nav = r["nav_daily"]
    assert nav.num_rows == 2
    day1 = one(nav, date=date(2023, 3, 1))
    day2 = one(nav, date=date(2023, 3, 2))
    assert day1["total_base"] == Decimal("7674.265297533")
    assert day2["total_base"] == Decimal("7678.155297533")
    assert (day2["cash_base"], day2["stock_base"], day2["options_base"]) == (
        Decimal("57.505297533"),
        Decimal("7612.42"),
        Decimal("-9.48"),
    )
    assert day2["base_currency"] == "USD"  # no currency attribute: taken from AccountInformation
    assert day2["crypto_base"] is None  # attribute absent in 2023 data: null, not 0

    cin = one(r["change_in_nav"])
    assert cin["twr_pct"] == Decimal("0.050688891")
    assert cin["starting_value_base"] == day1["total_base"]
    assert cin["ending_value_base"] == day2["total_base"]
    assert (cin["mtm_base"], cin["other_fees_base"]) == (Decimal("8.31"), Decimal("-4.5"))
    assert cin["date"] == cin["to_date"] == date(2023, 3, 2)

    pos = r["open_positions"]
    assert pos.num_rows == 13
    assert set(pos["level_of_detail"].to_pylist()) == {"SUMMARY"}
    jnj = one(pos, symbol="JNJ")
    assert (jnj["conid"], jnj["quantity"], jnj["mark_price"], jnj["position_value"]) == (
        8719,
        Decimal("12"),
        Decimal("152.45"),
        Decimal("1829.4"),
    )
    call = one(pos, symbol="CLNE  230915C00010000")
    assert call["quantity"] == Decimal("-1") and call["put_call"] == "C"
    assert call["expiry"] == date(2023, 9, 15) and call["multiplier"] == Decimal("100")
    assert call["position_value"] == Decimal("-3.68")
    # stock + options values add up to the NAV columns of the day
    stk = sum(p["position_value"] for p in rows(pos, asset_category="STK"))
    opt = sum(p["position_value"] for p in rows(pos, asset_category="OPT"))
    assert (stk, opt) == (day2["stock_base"], day2["options_base"])

    prior = r["prior_period_positions"]
    assert prior.num_rows == 13
    amc = one(prior, symbol="AMC")
    assert (amc["date"], amc["price"], amc["prior_mtm_pnl"]) == (
        date(2023, 3, 2),
        Decimal("6.1"),
        Decimal("-14.57"),
    )


def test_file17_cash_without_level_of_detail_is_detail(parsed) -> None:
    r = parsed[FILE17.name]
    cash = one(r["cash_balances"])
    assert (cash["currency"], cash["level_of_detail"]) == ("BASE_SUMMARY", "BaseCurrency")
    assert cash["starting_cash"] == Decimal("62.905297533")
    assert cash["ending_cash"] == Decimal("57.505297533")
    tx = r["cash_transactions"]
    assert tx.num_rows == 3
    assert set(tx["level_of_detail"].to_pylist()) == {"DETAIL"}
    fee = one(tx, transaction_id="457125101")
    assert (fee["type"], fee["amount"]) == ("Other Fees", Decimal("-1.5"))
    assert fee["transaction_at"] == datetime(2023, 3, 2, 22, 3, 43, tzinfo=UTC)  # 17:03:43 EST
    assert fee["conid"] is None and fee["symbol"] is None  # empty strings are null
    assert r.skipped["PendingExcercises"] == 1 and "StmtFunds" not in r.skipped
    assert r["statement_of_funds"].num_rows == 6


def test_file26_two_statements_with_their_base_currencies(parsed) -> None:
    r = parsed[FILE26.name]
    assert [(s.account_id, s.base_currency, s.period) for s in r.statements] == [
        ("U1234567", "USD", "LastQuarter"),
        ("U1234568", "EUR", "LastQuarter"),
    ]
    info = r["account_info"]
    # one row per account per calendar day of the window 2025-07-01..2025-09-30 (92 days)
    assert info.num_rows == 2 * 92
    assert one(info, account_id="U1234568", date=date(2025, 8, 15))["base_currency"] == "EUR"
    assert one(info, account_id="U1234567", date=date(2025, 9, 30))["base_currency"] == "USD"
    (trade,) = r["trades"].to_pylist()
    assert trade["account_id"] == "U1234567" and trade["symbol"] == "NET"
    assert (trade["quantity"], trade["trade_price"], trade["net_cash"]) == (
        Decimal("-1"),
        Decimal("224.8"),
        Decimal("223.799812"),
    )
    assert trade["executed_at"] == datetime(2025, 9, 12, 13, 44, 50, tzinfo=UTC)  # 09:44:50 EDT
    assert trade["settle_date"] == date(2025, 9, 15)
    assert (
        trade["extra"] == []
    )  # every attribute is documented (figi, orderTime, ...): none unknown
    tx = r["cash_transactions"]
    assert [(t["account_id"], t["amount"]) for t in tx.to_pylist()] == [
        ("U1234567", Decimal("13.90")),
        ("U1234568", Decimal("1.39")),
        ("U1234568", Decimal("62.05")),
    ]


def test_full_year_positions_summary_and_lots(parsed) -> None:
    r = parsed[FULL_YEAR.name]
    (stmt,) = r.statements
    assert stmt.date_format == "yyyy-MM-dd" and stmt.base_currency == "CHF"
    pos = r["open_positions"]
    lods = pos["level_of_detail"].to_pylist()
    assert (lods.count("LOT"), lods.count("SUMMARY")) == (72, 2)
    mstr = one(pos, symbol="MSTR", level_of_detail="SUMMARY")
    assert (mstr["quantity"], mstr["mark_price"], mstr["position_value"]) == (
        Decimal("5257"),
        Decimal("151.95"),
        Decimal("798801.15"),
    )
    assert mstr["fx_rate_to_base"] == Decimal("0.79268") and mstr["currency"] == "USD"
    assert mstr["cost_basis_money"] == Decimal("866240.94") and mstr["lot_open_at"] is None
    short_call = one(pos, conid=841737224, level_of_detail="SUMMARY")
    assert short_call["quantity"] == Decimal("-52") and short_call["position_value"] == Decimal(
        "-5320.12"
    )
    # the LOT rows of a conid add up to its SUMMARY row
    for summary in rows(pos, level_of_detail="SUMMARY"):
        lots = rows(pos, level_of_detail="LOT", conid=summary["conid"])
        assert lots and sum(lot["quantity"] for lot in lots) == summary["quantity"]
        assert all(lot["lot_open_at"] is not None for lot in lots)
    first_lot = rows(pos, level_of_detail="LOT")[0]
    assert (first_lot["conid"], first_lot["quantity"]) == (272110, Decimal("26"))
    assert first_lot["lot_open_at"] == datetime(2025, 12, 2, 15, 58, 2, tzinfo=UTC)  # 10:58:02 EST


def test_full_year_cash_balances_by_currency(parsed) -> None:
    cash = parsed[FULL_YEAR.name]["cash_balances"]
    assert cash.num_rows == 4
    base = one(cash, currency="BASE_SUMMARY")
    assert base["level_of_detail"] == "BaseCurrency"
    assert (base["starting_cash"], base["dividends"], base["ending_cash"]) == (
        Decimal("138.964828276"),
        Decimal("908.4755814"),
        Decimal("13537.966677472"),
    )
    assert base["net_trades_purchases"] == Decimal("-6164871.972300198")
    usd = one(cash, currency="USD", level_of_detail="Currency")
    assert (usd["starting_cash"], usd["dividends"], usd["ending_cash"]) == (
        Decimal("153.121"),
        Decimal("1133.15"),
        Decimal("-0.47148"),
    )
    assert one(cash, currency="CHF")["ending_cash"] == Decimal("13538.340410238")
    assert {r["date"] for r in cash.to_pylist()} == {date(2025, 12, 31)}


def test_full_year_trades(parsed) -> None:
    trades = parsed[FULL_YEAR.name]["trades"]
    assert trades.num_rows == 671
    assert set(trades["level_of_detail"].to_pylist()) == {"EXECUTION"}
    first = trades.slice(0, 1).to_pylist()[0]
    assert (first["symbol"], first["trade_id"], first["transaction_id"]) == (
        "DN3",
        "8395096602",
        "35681151366",
    )
    assert first["executed_at"] == datetime(2025, 10, 17, 18, 23, 46, tzinfo=UTC)  # 14:23:46 EDT
    assert (first["trade_date"], first["settle_date"], first["date"]) == (
        date(2025, 10, 17),
        date(2025, 10, 21),
        date(2025, 10, 17),
    )
    assert (first["quantity"], first["commission"], first["net_cash"]) == (
        Decimal("100"),
        Decimal("-3"),
        Decimal("-244"),
    )
    # independent reading: per-currency sums of quantity and netCash match exactly
    expected: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for el in ET.parse(FULL_YEAR).iter("Trade"):
        expected[el.get("currency")][0] += Decimal(el.get("quantity"))
        expected[el.get("currency")][1] += Decimal(el.get("netCash"))
    got: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for t in trades.to_pylist():
        got[t["currency"]][0] += t["quantity"]
        got[t["currency"]][1] += t["net_cash"]
    assert got == expected and len(got) >= 2


def test_full_year_cash_transactions_detail_equals_summary(parsed) -> None:
    tx = parsed[FULL_YEAR.name]["cash_transactions"]
    lods = tx["level_of_detail"].to_pylist()
    assert (lods.count("DETAIL"), lods.count("SUMMARY")) == (60, 59)
    assert set(tx["account_id"].to_pylist()) == {"U9999999"}  # SUMMARY rows' "-" replaced
    sums: dict[str, dict] = {"DETAIL": defaultdict(Decimal), "SUMMARY": defaultdict(Decimal)}
    for t in tx.to_pylist():
        sums[t["level_of_detail"]][(t["currency"], t["type"])] += t["amount"]
    assert sums["DETAIL"] == sums["SUMMARY"]
    assert sums["DETAIL"][("USD", "Withholding Tax")] < 0
    summary = one(tx, level_of_detail="SUMMARY", action_id="153145440", type="Withholding Tax")
    assert summary["transaction_id"] is None and summary["amount"] == Decimal("-245.53")
    # a bare date in dateTime is midnight New York time
    assert summary["transaction_at"] == datetime(2025, 6, 6, 4, 0, tzinfo=UTC)
    assert summary["date"] == date(2025, 6, 9)
    deposits = rows(tx, level_of_detail="DETAIL", type="Deposits/Withdrawals")
    assert len(deposits) > 0  # IBKR's own spelling kept (ibflex rewrites it)


def test_reader_cash_report_exact_decimals_and_unknown_attributes(parsed) -> None:
    r = parsed[READER.name]
    cash = r["cash_balances"]
    assert sorted(cash["currency"].to_pylist()) == ["BASE_SUMMARY", "CHF", "EUR", "GBP", "USD"]
    base = one(cash, currency="BASE_SUMMARY")
    assert base["starting_cash"] == Decimal("79362.354191008")
    assert str(base["starting_cash"].normalize()) == "79362.354191008"
    assert base["ending_cash"] == Decimal("93035.705712123")
    assert one(cash, currency="GBP")["starting_cash"] == Decimal("-803.50877")
    extra = dict(base["extra"])
    assert extra["startingCashIBUKL"] == "42646.6075613"  # attributes older parsers reject
    assert extra["clientFeesIBUKL"] == "0"
    # only the unknown attributes: documented ones without a column (startingCashSec) are not kept
    assert len(extra) == 35 and all(k.endswith("IBUKL") for k in extra)
    assert r.statements[0].base_currency is None  # no AccountInformation in this query


def test_reader_trades(parsed) -> None:
    trades = parsed[READER.name]["trades"]
    assert trades.num_rows == 15
    esv = one(trades, symbol="ESV")
    assert (esv["quantity"], esv["trade_price"], esv["net_cash"], esv["buy_sell"]) == (
        Decimal("-2000"),
        Decimal("6.6415"),
        Decimal("13272.589321"),
        "SELL",
    )
    assert esv["executed_at"] == datetime(2018, 11, 9, 14, 31, tzinfo=UTC)  # 09:31 EST
    assert esv["trade_date"] is None and esv["date"] == date(2018, 11, 9)  # no tradeDate here
    assert esv["open_close"] is None and esv["fx_rate_to_base"] == Decimal("0.88221")
    fdax = rows(trades, symbol="FDAX DEC 18")
    assert sum(t["quantity"] for t in fdax) == 0 and len(fdax) == 4


def test_path_and_bytes_and_small_flushes_give_the_same_tables(monkeypatch) -> None:
    from_path = parse_statement(FULL_YEAR)
    monkeypatch.setattr(parse_module, "FLUSH_ROWS", 7)
    monkeypatch.setattr(parse_module, "CHUNK_BYTES", 4096)
    chunked = parse_statement(FULL_YEAR.read_bytes())
    for name, table in from_path.tables.items():
        assert chunked[name].equals(table), name


def test_parse_to_parquet_writes_one_file_per_table_and_input(tmp_path: Path) -> None:
    counts = parse_to_parquet([FILE17, FILE26], tmp_path)
    assert counts["nav_daily"] == 2 and counts["cash_transactions"] == 3 + 3
    assert counts["trades"] == 1 and counts["fx_rates"] == 0
    nav = pq.read_table(tmp_path / "nav_daily" / f"{FILE17.stem}.parquet")
    assert nav.schema.equals(SCHEMAS["nav_daily"], check_metadata=False)
    assert sorted(nav["total_base"].to_pylist()) == [
        Decimal("7674.265297533"),
        Decimal("7678.155297533"),
    ]
    tx_files = sorted(p.name for p in (tmp_path / "cash_transactions").iterdir())
    assert tx_files == [f"{FILE17.stem}.parquet", f"{FILE26.stem}.parquet"]
    assert not (tmp_path / "fx_rates").exists()
    assert not list(tmp_path.rglob("*.tmp"))
