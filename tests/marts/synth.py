"""A small synthetic two-account history (USD and CHF base) in the normalized tables' layout.

NAV follows the start-of-day flow convention exactly, SUMMARY/LOT, EXECUTION/ORDER, DETAIL/SUMMARY
and BASE_SUMMARY/per-currency duplicates are written side by side like IBKR does, so the marts'
results can be checked against independently computed truths (``Truth``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from .normalized import write_rows

CENT = Decimal("0.01")
ACCOUNTS = {"U1000001": "USD", "U2000002": "CHF"}


@dataclass
class Truth:
    nav: dict[str, dict[date, Decimal]] = field(default_factory=dict)
    flows: dict[str, dict[date, Decimal]] = field(default_factory=dict)
    usd_per_chf: dict[date, Decimal] = field(default_factory=dict)
    executions: dict[str, list[Decimal]] = field(default_factory=dict)
    commissions: dict[str, Decimal] = field(default_factory=dict)
    stock: dict[str, dict[date, Decimal]] = field(default_factory=dict)


def business_days(start: date, n: int) -> list[date]:
    days, d = [], start
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def build(data_dir: Path, n_days: int = 260, seed: int = 3) -> Truth:
    rng = random.Random(seed)
    days = business_days(date(2024, 1, 2), n_days)
    truth = Truth()
    rows: dict[str, list[dict]] = {
        t: []
        for t in (
            "account_info",
            "nav_daily",
            "cash_transactions",
            "positions_daily",
            "trades",
            "fx_rates",
            "cash_balances",
        )
    }
    usd_chf, chf_per_usd = Decimal("0.88"), {}
    for d in days:
        usd_chf = (usd_chf * Decimal(str(1 + rng.gauss(0, 0.004)))).quantize(Decimal("0.00001"))
        chf_per_usd[d] = usd_chf
        truth.usd_per_chf[d] = 1 / usd_chf
    for acct, base in ACCOUNTS.items():
        nav_prev: Decimal | None = None
        truth.nav[acct], truth.flows[acct], truth.stock[acct] = {}, {}, {}
        truth.executions[acct], truth.commissions[acct] = [], Decimal(0)
        for i, d in enumerate(days):
            flow = Decimal(0)
            if i == 0:
                flow = Decimal("100000.00")
            elif rng.random() < 0.05:
                flow = Decimal(rng.randrange(-5000, 20000)).quantize(CENT)
            r = Decimal(str(rng.gauss(0.0004, 0.011)))
            nav = (((nav_prev or Decimal(0)) + flow) * (1 + r)).quantize(CENT)
            stock = (nav * Decimal("0.7")).quantize(CENT)
            truth.nav[acct][d], truth.stock[acct][d] = nav, stock
            rows["account_info"].append({"account_id": acct, "date": d, "base_currency": base})
            rows["nav_daily"].append(
                {
                    "account_id": acct,
                    "date": d,
                    "base_currency": base,
                    "cash_base": nav - stock,
                    "stock_base": stock,
                    "total_base": nav,
                    "total_long_base": nav,
                }
            )
            if base == "CHF":
                rows["fx_rates"].append(
                    {
                        "account_id": acct,
                        "date": d,
                        "from_currency": "USD",
                        "to_currency": "CHF",
                        "rate": chf_per_usd[d],
                    }
                )
            else:
                rows["fx_rates"].append(
                    {
                        "account_id": acct,
                        "date": d,
                        "from_currency": "CHF",
                        "to_currency": "USD",
                        "rate": None,
                    }
                )  # IBKR's -1
            if flow:
                truth.flows[acct][d] = flow
                for lod in ("DETAIL", "SUMMARY"):
                    rows["cash_transactions"].append(
                        {
                            "account_id": acct,
                            "date": d,
                            "level_of_detail": lod,
                            "transaction_id": f"D{acct}{i}{lod[0]}",
                            "type": "Deposits/Withdrawals",
                            "currency": base,
                            "fx_rate_to_base": Decimal(1),
                            "amount": flow,
                        }
                    )
            if i % 20 == 5:
                for lod in ("DETAIL", "SUMMARY"):
                    rows["cash_transactions"].append(
                        {
                            "account_id": acct,
                            "date": d,
                            "level_of_detail": lod,
                            "transaction_id": f"V{acct}{i}{lod[0]}",
                            "type": "Dividends",
                            "currency": "USD",
                            "fx_rate_to_base": Decimal(1),
                            "amount": Decimal("12.5"),
                            "conid": 1001,
                            "symbol": "AAA",
                        }
                    )
            # SUMMARY + two LOT rows for one stock holding the whole stock value
            for lod, share in (
                ("SUMMARY", Decimal(1)),
                ("LOT", Decimal("0.4")),
                ("LOT", Decimal("0.6")),
            ):
                rows["positions_daily"].append(
                    {
                        "account_id": acct,
                        "date": d,
                        "conid": 1001,
                        "level_of_detail": lod,
                        "symbol": "AAA",
                        "asset_category": "STK",
                        "currency": base,
                        "multiplier": Decimal(1),
                        "quantity": (100 * share).quantize(CENT),
                        "mark_price": (stock / 100).quantize(CENT),
                        "position_value": stock * share,
                        "fx_rate_to_base": Decimal(1),
                        "value_base": stock * share,
                        "cost_basis_money": Decimal(50000) * share,
                        "unrealized_pnl": (stock - 50000) * share,
                        "source": "reconstructed",
                    }
                )
            if i % 7 == 3:
                pnl = Decimal(rng.randrange(-300, 500))
                commission = Decimal("-1.25")
                truth.executions[acct].append(pnl)
                truth.commissions[acct] += commission
                for lod in ("EXECUTION", "ORDER", "CLOSED_LOT"):
                    rows["trades"].append(
                        {
                            "account_id": acct,
                            "date": d,
                            "level_of_detail": lod,
                            "transaction_id": f"T{acct}{i}" if lod == "EXECUTION" else None,
                            "trade_id": f"T{i}",
                            "symbol": "AAA" if i % 2 else "BBB",
                            "conid": 1001 if i % 2 else 1002,
                            "asset_category": "STK",
                            "currency": base,
                            "fx_rate_to_base": Decimal(1),
                            "quantity": Decimal(-10),
                            "commission": commission,
                            "commission_currency": base,
                            "realized_pnl": pnl,
                            "open_close": "C",
                        }
                    )
            nav_prev = nav
        last = days[-1]
        for ccy, lod in (("BASE_SUMMARY", "BaseCurrency"), (base, "Currency")):
            rows["cash_balances"].append(
                {
                    "account_id": acct,
                    "date": last,
                    "currency": ccy,
                    "level_of_detail": lod,
                    "from_date": days[0],
                    "to_date": last,
                    "ending_cash": truth.nav[acct][last] - truth.stock[acct][last],
                }
            )
    for table, table_rows in rows.items():
        write_rows(data_dir, table, table_rows)
    return truth
