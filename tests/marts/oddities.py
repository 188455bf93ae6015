"""Normalized rows carrying what real IBKR statements carry and the marts must survive.

Three accounts, no ConversionRates at all:

- ``U7000001`` base CHF (nav_daily says so, no AccountInformation): NAV on the day before the
  period (IBKR's opening EquitySummary row) and three in-period days; positions in USD (CFD, with
  fxRateToBase 0.88 every day), CRYPTO, and an IOPT whose value_base IBKR left empty; executions
  with a CHF commission on a USD trade, an unknown asset category and transaction type, and a
  commission in GBP that no row gives a rate for; a cash transaction without transaction_id,
  two sharing one id, one of a type the accepted list does not know; cash report rows in CHF,
  USD and EUR on the last day (EUR without any rate that day).
- ``U7000002`` base EUR, stated nowhere: inferred from its rows' fxRateToBase = 1. Its USD rate
  exists only on D2, derived from the USD account's EUR row (fxRateToBase 1.08).
- ``U7000003`` base USD (AccountInformation).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from .normalized import write_rows

D0, D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 4), date(2024, 3, 5), date(2024, 3, 6)
DAYS = (D0, D1, D2, D3)
CHF_ACCOUNT, EUR_ACCOUNT, USD_ACCOUNT = "U7000001", "U7000002", "U7000003"


def _series(*values: str) -> dict[date, Decimal]:
    return {d: Decimal(v) for d, v in zip(DAYS, values, strict=True)}


NAV = {
    CHF_ACCOUNT: _series("100000", "101000", "100500", "102010.5"),
    EUR_ACCOUNT: _series("50000", "50500", "50000", "49000"),
    USD_ACCOUNT: _series("10000", "10000", "10100", "10100"),
}
CENT = Decimal("0.01")
CHF_PER_USD = Decimal("0.88")
USD_PER_EUR_D2 = Decimal("1.08")
CHF_CASH, CHF_CRYPTO = Decimal("20000"), Decimal("1000")
CASH_REPORT = {"CHF": Decimal("5000"), "USD": Decimal("10000"), "EUR": Decimal("2000")}

# dbt tests expected to WARN on these rows, with their failure counts
EXPECTED_WARNINGS = {
    "not_null_stg_positions_daily_value_base": 1,
    "not_null_stg_cash_transactions_transaction_id": 1,
    "accepted_type_stg_cash_transactions": 1,
    "accepted_asset_category_stg_trades": 1,
    "accepted_transaction_type_stg_trades": 1,
    "not_null_stg_trades_commission_base": 1,
    "unique_combination_stg_cash_transactions": 1,
    "household_usd_rate_missing_daily_nav": 3,
    "household_usd_rate_missing_trade_stats": 2,
    "household_usd_rate_missing_pnl_by_symbol": 1,
    # the investor marts: the account without a USD rate has a commission, a dividend and NAV days
    "household_usd_rate_missing_fees_by_type": 1,
    "household_usd_rate_missing_income_usd": 1,  # not income_accruals (same prefix)
    "household_usd_rate_missing_return_attribution": 1,
}


def build(data_dir: Path) -> None:
    rows: dict[str, list[dict]] = {
        t: []
        for t in (
            "account_info",
            "nav_daily",
            "positions_daily",
            "trades",
            "cash_transactions",
            "cash_balances",
        )
    }
    for d in DAYS:
        nav = NAV[CHF_ACCOUNT][d]
        rows["nav_daily"].append(
            {"account_id": CHF_ACCOUNT, "date": d, "base_currency": "CHF", "cash_base": CHF_CASH,
             "stock_base": nav - CHF_CASH - CHF_CRYPTO, "crypto_base": CHF_CRYPTO,
             "total_base": nav}
        )  # fmt: skip
        position = {"account_id": CHF_ACCOUNT, "date": d, "level_of_detail": "SUMMARY"}
        rows["positions_daily"] += [
            {**position, "conid": 11, "symbol": "IBUS500", "asset_category": "CFD",
             "currency": "USD", "fx_rate_to_base": CHF_PER_USD, "quantity": Decimal(10),
             "position_value": ((nav - CHF_CASH - CHF_CRYPTO) / CHF_PER_USD).quantize(CENT),
             "value_base": nav - CHF_CASH - CHF_CRYPTO},
            {**position, "conid": 12, "symbol": "BTC", "asset_category": "CRYPTO",
             "currency": "CHF", "fx_rate_to_base": Decimal(1), "quantity": Decimal("0.02"),
             "value_base": CHF_CRYPTO},
            {**position, "conid": 13, "symbol": "DE000TURBO", "asset_category": "IOPT",
             "currency": "EUR", "fx_rate_to_base": None, "quantity": Decimal(100),
             "value_base": None} if d == D1 else None,
        ]  # fmt: skip
        nav = NAV[EUR_ACCOUNT][d]
        rows["nav_daily"].append(
            {"account_id": EUR_ACCOUNT, "date": d, "cash_base": nav, "total_base": nav}
        )
        rows["cash_transactions"].append(
            {"account_id": EUR_ACCOUNT, "date": d, "level_of_detail": "DETAIL",
             "transaction_id": f"E{d:%d}", "type": "Broker Interest Received", "currency": "EUR",
             "fx_rate_to_base": Decimal(1), "amount": Decimal(0)}
        )  # fmt: skip
        nav = NAV[USD_ACCOUNT][d]
        rows["account_info"].append({"account_id": USD_ACCOUNT, "date": d, "base_currency": "USD"})
        rows["nav_daily"].append(
            {"account_id": USD_ACCOUNT, "date": d, "base_currency": "USD", "cash_base": nav,
             "total_base": nav}
        )  # fmt: skip
    rows["positions_daily"] = [r for r in rows["positions_daily"] if r]
    rows["positions_daily"].append(
        {"account_id": USD_ACCOUNT, "date": D2, "level_of_detail": "SUMMARY", "conid": 21,
         "symbol": "SAP", "asset_category": "FUND", "currency": "EUR",
         "fx_rate_to_base": USD_PER_EUR_D2, "quantity": Decimal(0), "value_base": Decimal(0)}
    )  # fmt: skip
    trade = {"account_id": CHF_ACCOUNT, "level_of_detail": "EXECUTION", "currency": "USD",
             "fx_rate_to_base": CHF_PER_USD, "quantity": Decimal(1)}  # fmt: skip
    rows["trades"] += [
        # a USD.CHF conversion whose commission IBKR charges in CHF (the base): rate 1
        {**trade, "date": D1, "transaction_id": "T1", "asset_category": "CASH",
         "symbol": "USD.CHF", "transaction_type": "ExchTrade", "commission": Decimal("-2.50"),
         "commission_currency": "CHF", "realized_pnl": Decimal(0)},
        {**trade, "date": D1, "transaction_id": "T2", "conid": 11, "asset_category": "CFD",
         "symbol": "IBUS500", "transaction_type": "ExchTrade", "commission": Decimal("-1.00"),
         "commission_currency": "USD", "realized_pnl": Decimal("100")},
        {**trade, "date": D2, "transaction_id": "T3", "conid": 14, "asset_category": "EFP",
         "symbol": "XEFP", "transaction_type": "WeirdTrade", "commission": Decimal("-3.00"),
         "commission_currency": "GBP", "realized_pnl": Decimal("-50")},
        {"account_id": EUR_ACCOUNT, "date": D1, "level_of_detail": "EXECUTION",
         "transaction_id": "T4", "conid": 31, "asset_category": "WAR", "symbol": "WARRANT",
         "currency": "EUR", "fx_rate_to_base": Decimal(1), "transaction_type": "ExchTrade",
         "quantity": Decimal(-5), "commission": Decimal("-0.5"), "commission_currency": "EUR",
         "realized_pnl": Decimal("20")},
    ]  # fmt: skip
    cash = {"account_id": CHF_ACCOUNT, "level_of_detail": "DETAIL", "currency": "CHF",
            "fx_rate_to_base": Decimal(1)}  # fmt: skip
    rows["cash_transactions"] += [
        {**cash, "date": D1, "transaction_id": None, "type": "Other Fees",
         "amount": Decimal("-10")},
        {**cash, "date": D2, "transaction_id": "C1", "type": "Dividends",
         "amount": Decimal("5"), "conid": 12, "symbol": "BTC"},
        {**cash, "date": D3, "transaction_id": "C1", "type": "Dividends",
         "amount": Decimal("5"), "conid": 12, "symbol": "BTC"},
        {**cash, "date": D3, "transaction_id": "C2",
         "type": "Cash Receipts / Electronic Fund Transfers", "amount": Decimal(0)},
    ]  # fmt: skip
    for currency, lod, ending in (
        ("BASE_SUMMARY", "BaseCurrency", CHF_CASH),
        *((c, "Currency", v) for c, v in CASH_REPORT.items()),
    ):
        rows["cash_balances"].append(
            {"account_id": CHF_ACCOUNT, "date": D3, "currency": currency, "level_of_detail": lod,
             "from_date": D1, "to_date": D3, "ending_cash": ending}
        )  # fmt: skip
    for table, table_rows in rows.items():
        write_rows(data_dir, table, table_rows)
