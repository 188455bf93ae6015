"""Investor marts on a real statement (pp_file17, values read with lxml) and on hand-made rows
(withholding matching and reversals, fee types, FIFO vs closed lots, corporate actions)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ibpipeline.flex.schema import SCHEMAS
from ibpipeline.storage.parquet import write_day

from .investor import dec, write_all_parsed, xml_rows
from .normalized import PUBLIC_FLEX, dbt_build, write_rows

pytestmark = pytest.mark.slow

MARTS = (
    "+income +income_accruals +fees_by_type +realized_pnl +realized_pnl_lots +return_attribution "
    "+corporate_actions_log"
)
FILE17 = PUBLIC_FLEX / "pp_file17_one_day_many_sections.xml"
D = Decimal


def rows(data_dir: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(data_dir / "ibpipeline.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def file17(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("file17")
    write_all_parsed(data_dir, FILE17)
    dbt_build(data_dir, "--select", MARTS)
    return data_dir


def test_file17_attribution_matches_change_in_nav(file17: Path) -> None:
    (c,) = xml_rows(FILE17, "ChangeInNAV")
    out = rows(
        file17,
        "select period_type, change_in_nav, market_effect, income, fees_and_commissions,"
        " fx_translation, external_flows, other from return_attribution"
        " where account_id = 'U1111111' order by 1",
    )
    assert [r[0] for r in out] == ["month", "statement"]
    for _, change, market, income, fees, fx, external, other in out:
        assert change == dec(c["endingValue"]) - dec(c["startingValue"])  # 3.89
        assert market + income + fees + fx + external + other == change
        assert market == dec(c["mtm"]) + dec(c["realized"]) + dec(c["changeInUnrealized"])
        assert fees == dec(c["otherFees"]) + dec(c["salesTax"]) + dec(c["commissions"])
        assert other == dec(c["changeInDividendAccruals"]) + dec(c["changeInInterestAccruals"])
        assert income == external == fx == 0
    (ibkr_market,) = rows(
        file17, "select ibkr_market from return_attribution where period_type = 'statement'"
    )[0]
    assert ibkr_market == dec(c["mtm"])


def test_file17_fees_by_type(file17: Path) -> None:
    got = dict(
        rows(file17, "select fee_type, amount from fees_by_type where account_id = 'U1111111'")
    )
    sales_tax = sum(dec(r["salesTax"]) for r in xml_rows(FILE17, "SalesTax"))
    data = sum(dec(r["amount"]) for r in xml_rows(FILE17, "CashTransaction"))
    assert got == {"sales_tax": sales_tax, "market_data": data}  # -0.9, -4.5 (NYSE/NASDAQ L1)
    assert (
        dict(rows(file17, "select fee_type, amount from fees_by_type where account_id = 'ALL'"))
        == got
    )


def test_file17_dividend_accruals_apart(file17: Path) -> None:
    got = {
        r[0]: r[1:]
        for r in rows(
            file17,
            "select symbol, accrued_gross, accrued_tax, accrued, open_balance from income_accruals"
            " where account_id = 'U1111111'",
        )
    }
    opened = {r["symbol"]: dec(r["netAmount"]) for r in xml_rows(FILE17, "OpenDividendAccrual")}
    assert {s: v[3] for s, v in got.items()} == opened
    (change,) = xml_rows(FILE17, "ChangeInDividendAccrual")
    assert got[change["symbol"]][:3] == (
        dec(change["grossAmount"]),
        -dec(change["tax"]),
        dec(change["netAmount"]),
    )
    assert rows(file17, "select count(*) from income")[0][0] == 0  # no cash dividends that day


def test_file17_realized_from_fifo(file17: Path) -> None:
    fifo = {
        int(r["conid"]): dec(r["totalRealizedPnl"])
        for r in xml_rows(FILE17, "FIFOPerformanceSummaryUnderlying")
        if r["conid"]
    }
    got = rows(
        file17,
        "select conid, realized_total, source from realized_pnl where account_id = 'U1111111'",
    )
    assert {int(c): v for c, v, _ in got} == fifo
    assert {s for *_, s in got} == {"FIFOPerformanceSummaryInBase"}


# --- hand-made rows -------------------------------------------------------------------------

A, B = "U1000001", "U2000002"  # USD and EUR base
MAR, APR = date(2024, 3, 15), date(2024, 4, 3)
EUR_PER_USD = D("0.9")


def cash(account, day, tid, type_, amount, conid=None, symbol=None, action=None, ccy="USD",
         rate=None, description=None):  # fmt: skip
    return {
        "account_id": account, "date": day, "level_of_detail": "DETAIL", "transaction_id": tid,
        "type": type_, "currency": ccy, "fx_rate_to_base": rate or D(1), "amount": D(amount),
        "conid": conid, "symbol": symbol, "action_id": action, "description": description,
    }  # fmt: skip


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("investor_handmade")
    days = [date(2024, 3, 14), MAR, date(2024, 4, 2), APR]
    write_rows(d, "account_info", [
        {"account_id": a, "date": x, "base_currency": c} for a, c in ((A, "USD"), (B, "EUR"))
        for x in days
    ])  # fmt: skip
    write_rows(d, "fx_rates", [
        {"account_id": B, "date": x, "from_currency": "USD", "to_currency": "EUR",
         "rate": EUR_PER_USD} for x in days
    ])  # fmt: skip
    write_rows(d, "cash_transactions", [
        # dividend with withholding (action id), withholding reversed and rebooked in April
        cash(A, MAR, "1", "Dividends", "100", 11, "AAA", "A1"),
        cash(A, MAR, "2", "Withholding Tax", "-15", 11, "AAA", "A1"),
        cash(A, APR, "3", "Withholding Tax", "15", 11, "AAA", "A1"),
        cash(A, APR, "4", "Withholding Tax", "-10", 11, "AAA", "A1"),
        # no action ids: matched by conid and day
        cash(A, MAR, "5", "Dividends", "40", 22, "BBB"),
        cash(A, MAR, "6", "Payment In Lieu Of Dividends", "10", 22, "BBB"),
        cash(A, MAR, "7", "Withholding Tax", "-6", 22, "BBB"),
        # interest and the withholding on it (no dividend: unmatched)
        cash(A, MAR, "8", "Broker Interest Received", "5"),
        cash(A, MAR, "9", "Withholding Tax", "-1.5"),
        cash(A, MAR, "10", "Broker Interest Paid", "-3"),
        # fees
        cash(A, MAR, "11", "Advisor Fees", "-10"),
        cash(A, MAR, "12", "Other Fees", "-2", description="AAA BORROW FEE"),
        cash(A, MAR, "13", "Other Fees", "-4.5", description="NYSE LEVEL I FOR MAR 2024"),
        cash(A, MAR, "14", "Other Fees", "-1"),
        # the EUR account: a dividend in USD
        cash(B, MAR, "20", "Dividends", "50", 11, "AAA", "B1", rate=EUR_PER_USD),
    ])  # fmt: skip
    trade = {
        "account_id": A, "date": MAR, "conid": 11, "symbol": "AAA", "asset_category": "STK",
        "currency": "USD", "fx_rate_to_base": D(1), "trade_date": MAR,
        "executed_at": datetime(2024, 3, 15, 15, tzinfo=UTC), "multiplier": D(1),
    }  # fmt: skip
    lots_schema = SCHEMAS["trades"].append(pa.field("lot_open_at", pa.timestamp("us", tz="UTC")))
    trade_rows = [
        {**trade, "level_of_detail": "EXECUTION", "trade_id": "T1", "transaction_id": "X1",
         "quantity": D(-30), "commission": D(-1), "commission_currency": "USD",
         "taxes": D("-0.5"), "realized_pnl": D(30)},
        {**trade, "level_of_detail": "EXECUTION", "trade_id": "T2", "transaction_id": "X2",
         "quantity": D(-5), "commission": D(-2), "commission_currency": "USD"},
        {**trade, "level_of_detail": "CLOSED_LOT", "transaction_id": "L1", "quantity": D(-10),
         "cost_basis": D(1000), "realized_pnl": D(50), "notes": "LT",
         "lot_open_at": datetime(2022, 1, 10, 15, tzinfo=UTC)},
        {**trade, "level_of_detail": "CLOSED_LOT", "transaction_id": "L2", "quantity": D(-20),
         "cost_basis": D(2000), "realized_pnl": D(-20), "notes": "ST",
         "lot_open_at": datetime(2023, 12, 1, 15, tzinfo=UTC)},
        # account B: lots without an open date, IBKR's LT code decides
        {**trade, "account_id": B, "level_of_detail": "CLOSED_LOT", "transaction_id": "L3",
         "quantity": D(-1), "cost_basis": D(10), "realized_pnl": D(4), "notes": "LT",
         "fx_rate_to_base": EUR_PER_USD},
    ]  # fmt: skip
    cols = {f.name: [r.get(f.name) for r in trade_rows] for f in lots_schema}
    write_day("trades", MAR, pa.table(cols, schema=lots_schema), data_dir=d)
    write_rows(d, "fifo_performance", [
        {"account_id": A, "date": MAR, "from_date": date(2024, 3, 1), "to_date": MAR,
         "conid": 11, "symbol": "AAA", "asset_category": "STK",
         "realized_st_profit_base": D(0), "realized_st_loss_base": D(-20),
         "realized_lt_profit_base": D(50), "realized_lt_loss_base": D(0),
         "realized_pnl_base": D(30)},
        {"account_id": A, "date": MAR, "from_date": MAR, "to_date": MAR,  # inside the longer one
         "conid": 11, "symbol": "AAA", "asset_category": "STK", "realized_pnl_base": D(30),
         "statement_sha256": "b"},
        {"account_id": A, "date": MAR, "conid": None, "description": "Total (All Assets)",
         "realized_pnl_base": D(30), "from_date": date(2024, 3, 1), "to_date": MAR},
    ])  # fmt: skip
    fee = {"account_id": A, "date": MAR, "currency": "USD", "fx_rate_to_base": D(1)}
    write_rows(d, "fees", [
        {**fee, "fee_source": "UnbundledCommissionDetails", "trade_id": "T2",
         "transaction_id": "X2", "amount": D(-2), "broker_execution_charge": D("-1.2"),
         "third_party_execution_charge": D("-0.5"), "finra_trading_activity_fee": D("-0.2"),
         "section31_transaction_fee": D("-0.1")},
        {**fee, "fee_source": "TransactionTaxes", "level_of_detail": "SUMMARY",
         "trade_id": "T1", "transaction_id": "TT1", "amount": D("-0.5"), "tax_source": "TRADE"},
        {**fee, "fee_source": "TransactionTaxes", "level_of_detail": "SUMMARY",
         "trade_id": "T9", "transaction_id": "TT2", "amount": D("-0.25"),
         "tax_source": "STANDALONE"},
        {**fee, "fee_source": "SalesTaxes", "transaction_id": "S1", "amount": D("-0.9")},
        {**fee, "fee_source": "CFDCharges", "transaction_id": "C1", "amount": D("-0.33")},
    ])  # fmt: skip
    ca = {"account_id": A, "date": MAR, "action_id": "CA1", "type": "FS", "currency": "USD",
          "fx_rate_to_base": D(1), "conid": 11, "symbol": "AAA", "transaction_id": "CT1",
          "quantity": D(30), "cost_basis": D(0)}  # fmt: skip
    write_rows(d, "corporate_actions", [
        {**ca, "level_of_detail": "DETAIL"},
        {**ca, "level_of_detail": "SUMMARY", "transaction_id": None},
    ])  # fmt: skip
    dbt_build(d, "--select", MARTS)
    return d


def test_withholding_matched_and_reversals_netted(handmade: Path) -> None:
    got = {
        r[0]: r[1:]
        for r in rows(
            handmade,
            "select coalesce(symbol, '-'), month, dividends, payment_in_lieu, withholding_tax,"
            " dividends_net, withholding_unmatched, interest_received, interest_paid,"
            " total_income from income where account_id = 'U1000001'",
        )
    }
    m = date(2024, 3, 1)
    # the April reversal (+15) and rebooking (-10) net into the March dividend: -10
    assert got["AAA"] == (m, D(100), D(0), D(-10), D(90), D(0), D(0), D(0), D(90))
    assert got["BBB"] == (m, D(40), D(10), D(-6), D(44), D(0), D(0), D(0), D(44))
    assert got["-"] == (m, D(0), D(0), D(0), D(0), D("-1.5"), D(5), D(-3), D("0.5"))


def test_income_household_in_usd(handmade: Path) -> None:
    (eur,) = rows(handmade, "select dividends from income where account_id = 'U2000002'")[0]
    assert eur == D(45)  # 50 USD x 0.9
    (usd_per_eur,) = rows(
        handmade,
        "select usd_per_base from int_account_days where account_id = 'U2000002' limit 1",
    )[0]
    (total,) = rows(
        handmade, "select dividends from income where account_id = 'ALL' and symbol = 'AAA'"
    )[0]
    assert total == D(100) + (eur * usd_per_eur).quantize(D("1E-10"))


def test_fees_by_type(handmade: Path) -> None:
    got = dict(
        rows(handmade, "select fee_type, amount from fees_by_type where account_id = 'U1000001'")
    )
    assert got == {
        "commission": D(-1) + D("-1.2"),  # T1, and T2's broker execution part
        "exchange_fees": D("-0.5"),
        "regulatory_fees": D("-0.3"),
        "transaction_tax": D("-0.5") + D("-0.25"),  # trade taxes + the standalone row only
        "sales_tax": D("-0.9"),
        "cfd_charges": D("-0.33"),
        "advisor_fees": D(-10),
        "borrow_fees": D(-2),
        "market_data": D("-4.5"),
        "other_fees": D(-1),
    }


def test_fifo_and_closed_lots_agree(handmade: Path) -> None:
    (row,) = rows(
        handmade,
        "select source, realized_short_term, realized_long_term, realized_total,"
        " fifo_short_term, fifo_long_term, fifo_total, lots_short_term, lots_long_term,"
        " lots_total from realized_pnl where account_id = 'U1000001'",
    )
    assert row[0] == "FIFOPerformanceSummaryInBase"
    assert row[1:4] == (D(-20), D(50), D(30))
    assert row[4:7] == row[7:10]  # IBKR's FIFO figures equal the closed lots' (overlap once)
    lots = rows(
        handmade,
        "select transaction_id, open_date, holding_days, term, term_source, proceeds"
        " from realized_pnl_lots order by 1",
    )
    assert lots == [
        ("L1", date(2022, 1, 10), 795, "long", "holding_period", D(1050)),
        ("L2", date(2023, 12, 1), 105, "short", "holding_period", D(1980)),
        ("L3", None, None, "long", "ibkr_notes", D(14)),
    ]
    (b,) = rows(
        handmade,
        "select source, realized_long_term from realized_pnl where account_id = 'U2000002'",
    )
    assert b == ("closed_lots", D("3.6"))


def test_corporate_actions_log_once_per_leg(handmade: Path) -> None:
    got = rows(
        handmade,
        "select action_id, action_type_description, quantity_change, cost_basis_change,"
        " level_of_detail from corporate_actions_log",
    )
    assert got == [("CA1", "forward split", D(30), D(0), "DETAIL")]
