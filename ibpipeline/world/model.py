"""Value types of the simulated world (immutable; money/prices/rates are ``Decimal``).

Sign conventions follow IBKR: quantities are signed (+ long / buy), ``proceeds`` and ``net_cash``
are cash flows of the account (+ received), commissions and fees are negative, a short position
has a negative ``position_value`` and ``cost_basis_money``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

ZERO = Decimal(0)
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Account:
    """One IBKR account. ``account_type`` is IBKR's text (``Individual``/``Advisor Client``);
    ``master_id`` is the advisor master (``F...``) of an advisor client, else ``None``;
    ``opened`` is the account's opening date (before the world's inception)."""

    account_id: str
    alias: str
    name: str
    base_currency: str
    account_type: str
    customer_type: str
    master_id: str | None
    opened: date


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable contract. ``asset_category`` is IBKR's STK/OPT/FUT/BOND.

    Prices are per unit in ``currency``; a BOND's price is percent of face and its quantity is face,
    so value = quantity * price / 100 (exact cents: face is a multiple of 1000); OPT/FUT values use ``multiplier``.
    ``coupon_rate`` (fraction per year) and ``coupon_months`` apply to bonds; ``dividend`` (per share,
    instrument currency), ``dividend_months`` and ``withholding_rate`` to stocks.
    """

    conid: int
    symbol: str
    description: str
    asset_category: str
    currency: str
    listing_exchange: str
    isin: str = ""
    multiplier: Decimal = Decimal(1)
    sub_category: str = ""
    underlying_symbol: str = ""
    underlying_conid: int | None = None
    expiry: date | None = None
    strike: Decimal | None = None
    put_call: str = ""
    maturity: date | None = None
    coupon_rate: Decimal = ZERO
    coupon_months: tuple[int, ...] = ()
    dividend: Decimal = ZERO
    dividend_months: tuple[int, ...] = ()
    withholding_rate: Decimal = ZERO
    tick: Decimal = CENT

    def value(self, quantity: Decimal, price: Decimal) -> Decimal:
        """Position value in the instrument currency: quantity * price * multiplier (/100 bonds)."""
        if self.asset_category == "BOND":
            return (quantity * price / 100).quantize(CENT)
        return quantity * price * self.multiplier


@dataclass(frozen=True, slots=True)
class Lot:
    """An open FIFO lot: opened at UTC ``open_at`` for ``open_price``; ``cost_basis_money`` is the
    local-currency cost incl. commission (negative for a short lot)."""

    conid: int
    quantity: Decimal
    open_at: datetime
    open_price: Decimal
    cost_basis_money: Decimal


@dataclass(frozen=True, slots=True)
class Position:
    """A non-zero position at a mark. ``position_value`` = quantity * mark * multiplier (/100 bonds)
    in the instrument ``currency`` (a FUT's notional, as IBKR prints it); ``lots`` sum to
    ``quantity``."""

    conid: int
    quantity: Decimal
    mark_price: Decimal
    position_value: Decimal
    cost_basis_money: Decimal
    lots: tuple[Lot, ...]
    currency: str = ""
    asset_category: str = ""

    @property
    def unrealized_pnl(self) -> Decimal:
        """position_value - cost_basis_money (local currency)."""
        return self.position_value - self.cost_basis_money


@dataclass(frozen=True, slots=True)
class Trade:
    """One execution. ``conid`` is None for FX conversions (asset_category ``CASH``, symbol like
    ``EUR.USD``: ``quantity`` of EUR bought, priced and settled in ``currency`` = USD).

    ``proceeds`` = -quantity * price * multiplier (/100 bonds). ``net_cash`` is the cash effect in
    ``currency``: proceeds + commission, except FUT where (as IBKR prints it) it is the trade's
    variation to the day's close, quantity * multiplier * (close_price - trade_price), plus commission.
    ``realized_pnl`` is FIFO realized P&L in ``currency`` (0 for opening trades); ``cost_basis`` is
    the lot cost opened (opening) or minus the cost basis closed (closing); ``closed_lots`` are the
    portions of FIFO lots a closing trade consumed (quantity with the lots' sign, their cost basis).
    """

    account_id: str
    trade_id: str
    transaction_id: str
    ib_order_id: str
    ib_exec_id: str
    conid: int | None
    symbol: str
    asset_category: str
    currency: str
    fx_rate_to_base: Decimal
    trade_date: date
    executed_at: datetime
    quantity: Decimal
    trade_price: Decimal
    proceeds: Decimal
    commission: Decimal
    commission_currency: str
    net_cash: Decimal
    close_price: Decimal
    open_close: str
    realized_pnl: Decimal
    buy_sell: str
    exchange: str = ""
    multiplier: Decimal = Decimal(1)
    cost_basis: Decimal = ZERO
    closed_lots: tuple[Lot, ...] = ()
    notes: str = ""
    transaction_type: str = "ExchTrade"


@dataclass(frozen=True, slots=True)
class PositionEvent:
    """A position change that is not a trade, booked at ``at`` (start of the day, before any
    trade): a corporate action (``kind`` ``CorporateAction``, ``type`` IBKR's code: FS forward
    split, RS reverse split, IC ISIN change, TC merger, SO spin-off) or a position transfer
    (``kind`` ``Transfer``, ``type`` ACATS, ``direction`` IN/OUT). ``quantity`` is the signed
    change of ``conid``'s position, as IBKR writes it; a reverse split, ISIN change or merger is
    two events sharing ``action_id`` (old conid removed, new conid added). ``lots`` are the
    conid's lots right after the event; ``value`` the signed position value moved at the previous
    close (Transfer: at ``price``; instrument currency); ``proceeds`` the cash a merger pays
    (instrument currency, added to the account's cash)."""

    account_id: str
    kind: str
    type: str
    conid: int
    quantity: Decimal
    report_date: date
    at: datetime
    description: str
    action_id: str
    transaction_id: str
    lots: tuple[Lot, ...]
    direction: str = ""
    price: Decimal = ZERO
    value: Decimal = ZERO
    proceeds: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class DividendAccrual:
    """A dividend the account is entitled to from ``ex_date`` (holders at its start) until it is
    paid on ``pay_date``: ``gross`` = quantity x gross_rate and ``tax`` (withholding, >= 0) in
    ``currency``, to the cent; the net (gross - tax) counts in NAV meanwhile."""

    conid: int
    currency: str
    ex_date: date
    pay_date: date
    quantity: Decimal
    gross_rate: Decimal
    gross: Decimal
    tax: Decimal
    action_id: str

    @property
    def net(self) -> Decimal:
        return self.gross - self.tax


@dataclass(frozen=True, slots=True)
class CashTransaction:
    """A cash movement that is not a trade; ``type`` is IBKR's text (``Dividends``...)."""

    account_id: str
    transaction_id: str
    type: str
    currency: str
    amount: Decimal
    report_date: date
    at: datetime
    description: str
    conid: int | None
    symbol: str
    fx_rate_to_base: Decimal


@dataclass(frozen=True, slots=True)
class NavComponents:
    """NAV in base currency, each component rounded to the cent (ROUND_HALF_EVEN) from the exact
    sum of local value * ``fx_rate(ccy, base, d)``; ``total_base`` is the sum of the rounded
    components, so the identity holds exactly. FUT contribute 0 (variation settles into cash)."""

    cash_base: Decimal
    stock_base: Decimal
    options_base: Decimal
    bonds_base: Decimal
    commodities_base: Decimal
    total_base: Decimal
    cash_long_base: Decimal = ZERO
    cash_short_base: Decimal = ZERO
    stock_long_base: Decimal = ZERO
    stock_short_base: Decimal = ZERO
    options_long_base: Decimal = ZERO
    options_short_base: Decimal = ZERO
    bonds_long_base: Decimal = ZERO
    bonds_short_base: Decimal = ZERO
    interest_accruals_base: Decimal = ZERO
    """Broker interest accrued and not yet posted (> 0 receivable, < 0 owed); in ``total_base``."""
    dividend_accruals_base: Decimal = ZERO
    """Net dividends past their ex-date and not yet paid (>= 0); in ``total_base``."""

    @property
    def total_long_base(self) -> Decimal:
        """Sum of the long parts (a receivable interest accrual is long)."""
        return (
            self.cash_long_base
            + self.stock_long_base
            + self.options_long_base
            + self.bonds_long_base
            + max(self.interest_accruals_base, ZERO)
            + max(self.dividend_accruals_base, ZERO)
        )

    @property
    def total_short_base(self) -> Decimal:
        """Sum of the short parts (<= 0; an owed interest accrual is short)."""
        return (
            self.cash_short_base
            + self.stock_short_base
            + self.options_short_base
            + self.bonds_short_base
            + min(self.interest_accruals_base, ZERO)
            + min(self.dividend_accruals_base, ZERO)
        )


@dataclass(frozen=True, slots=True)
class AccountDay:
    """An account's state on business day ``date`` (end of day, or intraday from ``state_at``).

    ``cash`` is per currency in local money; ``positions`` are non-zero only, keyed by conid;
    ``fx_to_base[ccy]`` = ``fx_rate(ccy, base, date)``; ``external_flow_base`` is the day's
    Deposits/Withdrawals converted to base; ``daily_return = nav / (prev_nav + flow) - 1`` (0 when the
    start-of-day capital is 0); ``variation`` is the futures variation margin settled into cash per
    currency for positions held at the previous close (trades' own variation is in their net_cash).
    """

    account_id: str
    date: date
    base_currency: str
    cash: dict[str, Decimal]
    positions: dict[int, Position]
    fx_to_base: dict[str, Decimal]
    nav: NavComponents
    trades: tuple[Trade, ...]
    cash_transactions: tuple[CashTransaction, ...]
    external_flow_base: Decimal
    daily_return: Decimal
    prev_nav_base: Decimal
    variation: dict[str, Decimal]
    position_events: tuple[PositionEvent, ...] = ()
    interest_accrued: dict[str, Decimal] = field(default_factory=dict)
    """Broker interest accrued and not yet posted per currency, local money, end of day (a
    world with position events accrues daily and posts on the month's last business day)."""
    dividend_accruals: tuple[DividendAccrual, ...] = ()
    """Dividends past their ex-date and not yet paid, end of day (a world with position events)."""
    dividend_accrual_changes: tuple[tuple[str, DividendAccrual], ...] = ()
    """The day's accrual bookings: ("Po", accrual) on the ex-date, ("Re", accrual) when paid."""

    @property
    def realized_pnl_base(self) -> Decimal:
        """Realized P&L of the day's trades converted to base (unrounded)."""
        return sum((t.realized_pnl * self.fx_to_base[t.currency] for t in self.trades), ZERO)

    @property
    def unrealized_pnl_base(self) -> Decimal:
        """Sum of (position_value - cost_basis_money) converted to base (unrounded)."""
        return sum(
            (p.unrealized_pnl * self.fx_to_base[p.currency] for p in self.positions.values()),
            ZERO,
        )

    @property
    def daily_pnl_base(self) -> Decimal:
        """NAV change since the previous close excluding the day's external flows."""
        return self.nav.total_base - self.prev_nav_base - self.external_flow_base
