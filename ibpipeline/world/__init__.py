"""The seedable simulated world both simulators serve (see docs/architecture.md).

``World(seed, n_accounts, inception)`` generates the market and every account day by day from
``inception`` (lazily, cached, thread-safe), so any request window agrees with any other and two
worlds with the same arguments agree exactly. Business days are Monday-Friday.
"""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta
from decimal import Decimal

from ibpipeline.world.accounts import (
    CASH_TXN_TIME,
    NEW_YORK,
    SESSION_CLOSE,
    AccountSim,
    apply_fill,
    daily_return,
    intraday_price,
    make_accounts,
    make_position,
    nav_components,
    session_fraction,
    trade_cash,
)
from ibpipeline.world.market import CURRENCIES, FX_PLACES, Market, MarketDay
from ibpipeline.world.model import (
    ZERO,
    Account,
    AccountDay,
    CashTransaction,
    DividendAccrual,
    Instrument,
    Lot,
    NavComponents,
    Position,
    PositionEvent,
    Trade,
)

__all__ = [
    "CURRENCIES",
    "Account",
    "AccountDay",
    "CashTransaction",
    "DividendAccrual",
    "Instrument",
    "Lot",
    "NavComponents",
    "Position",
    "PositionEvent",
    "Trade",
    "World",
    "is_business_day",
    "trade_cash",
]


def is_business_day(d: date) -> bool:
    """Monday-Friday (the world has no holidays)."""
    return d.weekday() < 5


def _next_business_day(d: date) -> date:
    d += timedelta(days=1)
    while not is_business_day(d):
        d += timedelta(days=1)
    return d


class World:
    """Deterministic simulated IBKR accounts, market prices and FX rates.

    ``inception`` on a weekend moves to the next Monday. Days after ``horizon`` (a month before the
    derivatives' expiry, about six years after inception) are rejected.

    ``fx_commission_in_base`` (off by default): FX conversions pay IBKR's USD 2.00 commission
    in the account's base currency (``commission_currency`` = base, converted at the day's rate,
    5 decimal places), as IBKR does, instead of -2.00 in the pair's second currency; ``net_cash``
    is then the proceeds only and the commission leaves the base cash (``trade_cash``).

    ``position_events`` (off by default): every account also lives through the events that move
    positions without an ordinary trade (``ibpipeline.world.market``: instruments only these
    events trade, bought on the first day): 25 JNJ arrive by ACATS on business day 3 (an external
    flow at the previous close), a 2-for-1 forward split (same conid) on day 5, a 1-for-10 reverse
    split (new conid) on day 7, an ISIN change (new conid) on day 9, and on day 11 an OTM AAPL
    call expires and a short ITM AAPL put is assigned (book trades with notes Ep / A after the
    close). ``AccountDay.position_events`` lists the start-of-day events.
    """

    def __init__(
        self,
        seed: int = 7,
        n_accounts: int = 4,
        inception: date = date(2024, 1, 2),
        *,
        fx_commission_in_base: bool = False,
        position_events: bool = False,
    ) -> None:
        if n_accounts < 1:
            raise ValueError(f"n_accounts must be >= 1, got {n_accounts}")
        while not is_business_day(inception):
            inception += timedelta(days=1)
        self.seed = seed
        self.inception = inception
        self.fx_commission_in_base = fx_commission_in_base
        self.position_events = position_events
        self._lock = threading.RLock()
        self._market = Market(seed, inception, position_events)
        self.instruments: dict[int, Instrument] = self._market.instruments
        self.horizon: date = self._market.horizon
        self.accounts, self.master_account_id = make_accounts(seed, n_accounts, inception)
        self._by_id = {a.account_id: a for a in self.accounts}
        self._sims = {
            a.account_id: AccountSim(
                a, i, seed, self._market, fx_commission_in_base, position_events
            )
            for i, a in enumerate(self.accounts)
        }
        self._dates: list[date] = []
        self._index: dict[date, int] = {}

    # ---------------------------------------------------------------------------------------------
    # calendar

    @staticmethod
    def business_days(start: date, end: date) -> list[date]:
        """Business days from ``start`` to ``end`` inclusive (empty if ``end < start``)."""
        days = []
        d = start
        while d <= end:
            if d.weekday() < 5:
                days.append(d)
            d += timedelta(days=1)
        return days

    @staticmethod
    def previous_business_day(d: date) -> date:
        """The last business day strictly before ``d``."""
        d -= timedelta(days=1)
        while not is_business_day(d):
            d -= timedelta(days=1)
        return d

    def account(self, account_id: str) -> Account:
        """The account with ``account_id`` (KeyError naming it otherwise)."""
        try:
            return self._by_id[account_id]
        except KeyError:
            raise KeyError(f"unknown account {account_id!r}") from None

    # ---------------------------------------------------------------------------------------------
    # generation

    def _day_index(self, d: date) -> int:
        """Index of business day ``d`` (0 = inception), generating the market up to it."""
        if not is_business_day(d):
            raise ValueError(f"{d} is not a business day (Mon-Fri)")
        if d < self.inception:
            raise ValueError(f"{d} is before the world's inception {self.inception}")
        if d > self.horizon:
            raise ValueError(f"{d} is beyond the world's horizon {self.horizon}")
        with self._lock:
            if d not in self._index:
                start = _next_business_day(self._dates[-1]) if self._dates else self.inception
                new = self.business_days(start, d)
                self._market.extend(new)
                for day in new:
                    self._index[day] = len(self._dates)
                    self._dates.append(day)
            return self._index[d]

    def _market_day(self, i: int) -> MarketDay:
        """Market day ``i``; index -1 is the pre-inception opening."""
        return self._market.opening if i < 0 else self._market.days[i]

    def day(self, account_id: str, d: date) -> AccountDay:
        """End-of-day state of ``account_id`` on business day ``d`` (inception <= d <= horizon)."""
        sim = self._sims.get(account_id) or self._sims[self.account(account_id).account_id]
        i = self._day_index(d)
        with self._lock:
            while len(sim.days) <= i:
                j = len(sim.days)
                nxt = _next_business_day(self._dates[j])
                sim.step(self._dates[j], self._market_day(j - 1), self._market_day(j), nxt)
            return sim.days[i]

    def days(self, account_id: str, start: date, end: date) -> list[AccountDay]:
        """``day`` for every business day of [start, end] on or after inception."""
        return [
            self.day(account_id, d) for d in self.business_days(max(start, self.inception), end)
        ]

    def price(self, conid: int, d: date) -> Decimal:
        """Close of instrument ``conid`` on business day ``d`` (instrument currency; BOND: % of face)."""
        if conid not in self.instruments:
            raise KeyError(f"unknown conid {conid}")
        return self._market.days[self._day_index(d)].closes[conid]

    def fx_rate(self, from_ccy: str, to_ccy: str, d: date) -> Decimal:
        """Units of ``to_ccy`` per unit of ``from_ccy`` at the close of business day ``d`` (8 places)."""
        for ccy in (from_ccy, to_ccy):
            if ccy not in CURRENCIES:
                raise KeyError(f"unknown currency {ccy!r}; the world has {', '.join(CURRENCIES)}")
        return self._market.days[self._day_index(d)].fx[(from_ccy, to_ccy)]

    # ---------------------------------------------------------------------------------------------
    # intraday

    def state_at(self, account_id: str, at: datetime) -> AccountDay:
        """The account as seen at UTC instant ``at`` (timezone-aware).

        On a business day (New York date) before 16:00 New York: the previous close plus the cash
        transactions and trades of the day up to ``at``, marked at prices and FX rates interpolated
        between the previous and the day's close by the fraction of the 09:30-16:00 session
        elapsed; futures variation accrues into cash at those marks. At or after the close it is
        ``day(account_id, that day)``; on weekends the last business day's close.
        """
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"state_at needs a timezone-aware datetime, got {at!r}")
        local = at.astimezone(NEW_YORK)
        d = local.date()
        if not is_business_day(d):
            return self.day(account_id, self.previous_business_day(d))
        if local.time() >= SESSION_CLOSE:
            return self.day(account_id, d)
        full = self.day(account_id, d)
        i = self._index[d]
        prev = self.day(account_id, self._dates[i - 1]) if i > 0 else None
        return self._intraday(full, prev, self._market_day(i - 1), self._market_day(i), at)

    def _intraday(
        self,
        full: AccountDay,
        prev: AccountDay | None,
        prev_md: MarketDay,
        md: MarketDay,
        at: datetime,
    ) -> AccountDay:
        frac = session_fraction(at)
        base = full.base_currency
        cash = dict(prev.cash) if prev else {}
        lots = {c: list(p.lots) for c, p in prev.positions.items()} if prev else {}
        marks = {
            c: intraday_price(prev_md.closes[c], md.closes[c], frac, inst.tick)
            for c, inst in self.instruments.items()
        }
        fx_to_base = {
            c: intraday_price(prev_md.fx[(c, base)], md.fx[(c, base)], frac, FX_PLACES)
            for c in CURRENCIES
        }
        events = tuple(e for e in full.position_events if e.at <= at)
        for event in events:  # start-of-day corporate actions and transfers
            if event.lots:
                lots[event.conid] = list(event.lots)
            else:
                lots.pop(event.conid, None)
        txns = tuple(t for t in full.cash_transactions if t.at <= at)
        accrued = dict(prev.interest_accrued) if prev else {}
        for txn in txns:
            cash[txn.currency] = cash.get(txn.currency, ZERO) + txn.amount
            if self.position_events and txn.type.startswith("Broker Interest"):
                accrued[txn.currency] = accrued.get(txn.currency, ZERO) - txn.amount  # posted
        variation: dict[str, Decimal] = {}
        for conid, pos in (prev.positions if prev else {}).items():
            inst = self.instruments[conid]
            if inst.asset_category == "FUT":
                move = pos.quantity * inst.multiplier * (marks[conid] - prev_md.closes[conid])
                variation[inst.currency] = variation.get(inst.currency, ZERO) + move
                cash[inst.currency] = cash.get(inst.currency, ZERO) + move
        trades = tuple(t for t in full.trades if t.executed_at <= at)
        for trade in trades:
            effect = trade_cash(trade)
            if trade.asset_category == "FUT":
                inst = self.instruments[trade.conid]
                effect = {
                    trade.currency: trade.quantity
                    * inst.multiplier
                    * (marks[trade.conid] - trade.trade_price)
                    + trade.commission
                }
            for ccy, amount in effect.items():
                cash[ccy] = cash.get(ccy, ZERO) + amount
            if trade.conid is not None:
                new, _ = apply_fill(
                    lots.get(trade.conid, []),
                    trade.quantity,
                    trade.trade_price,
                    -(trade.proceeds + trade.commission),
                    trade.executed_at,
                    trade.conid,
                )
                lots[trade.conid] = new
        positions = {
            c: make_position(self.instruments[c], tuple(ls), marks[c])
            for c, ls in lots.items()
            if ls
        }
        accrued = {c: v for c, v in accrued.items() if v}
        # dividend accruals are booked with the day's cash transactions (start of the day)
        started = bool(txns) or at >= datetime.combine(full.date, CASH_TXN_TIME, NEW_YORK)
        dividends = full.dividend_accruals if started else (prev.dividend_accruals if prev else ())
        nav = nav_components(cash, positions, fx_to_base, accrued, dividends)
        prev_nav = prev.nav.total_base if prev else ZERO
        flow = sum(
            (t.amount * fx_to_base[t.currency] for t in txns if t.type == "Deposits/Withdrawals"),
            ZERO,
        )
        flow += sum(
            (
                e.value * fx_to_base[self.instruments[e.conid].currency]
                for e in events
                if e.kind == "Transfer"
            ),
            ZERO,
        )
        return AccountDay(
            account_id=full.account_id,
            date=full.date,
            base_currency=base,
            cash=cash,
            positions=positions,
            fx_to_base=fx_to_base,
            nav=nav,
            trades=trades,
            cash_transactions=txns,
            external_flow_base=flow,
            daily_return=daily_return(nav.total_base, prev_nav, flow),
            prev_nav_base=prev_nav,
            variation=variation,
            position_events=events,
            interest_accrued=accrued,
            dividend_accruals=dividends,
            dividend_accrual_changes=full.dividend_accrual_changes if started else (),
        )
