"""Accounts of the simulated world and their day-by-day life (flows, income, fees, trades, NAV).

Each account owns a seeded RNG and is simulated strictly in date order, so its history depends
only on (seed, account index, market), never on which days were requested first.

Cash identity per currency, every day (tested):
``cash_d = cash_{d-1} + sum(cash transactions) + sum(trade cash) + variation_d`` where trade cash is
``net_cash`` in the trade currency (plus ``quantity`` of the pair's first currency for ``CASH`` FX
conversions, plus the commission in ``commission_currency`` when that differs from the trade
currency: FX conversions of a world built with ``fx_commission_in_base``) and ``variation_d`` is the futures variation margin on positions held at the previous
close (``qty * multiplier * (close_d - close_{d-1})``).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from ibpipeline.world import market as mk
from ibpipeline.world.market import CURRENCIES, EVENT_CONIDS, Market, MarketDay
from ibpipeline.world.model import (
    CENT,
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

NEW_YORK = ZoneInfo("America/New_York")
ZURICH = ZoneInfo("Europe/Zurich")
SESSION_OPEN = time(9, 30)
SESSION_CLOSE = time(16, 0)
CASH_TXN_TIME = time(2, 30)  # New York local: before any session, i.e. at the start of the day
FX_PRICE_PLACES = Decimal("0.00001")
_US_EXCHANGES = {"NASDAQ", "NYSE", "ARCA", "CBOE", "CME"}
_FX_PAIR_ORDER = ("EUR", "GBP", "USD", "CHF")  # market convention: EUR.USD, GBP.USD, USD.CHF
_INTEREST_RECEIVED = {"USD": "0.0433", "EUR": "0.0300", "CHF": "0.0050", "GBP": "0.0400"}
_INTEREST_PAID = {"USD": "0.0683", "EUR": "0.0550", "CHF": "0.0300", "GBP": "0.0650"}
_ID_STRIDE = 10_000_000
_FIRST = ("Anna", "Ben", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Iris", "Jonas")
_LAST = (
    "Meier",
    "Smith",
    "Rossi",
    "Dubois",
    "Keller",
    "Brown",
    "Weber",
    "Martin",
    "Huber",
    "Costa",
)
_ALIASES = ("Growth", "Income", "Family", "Pension", "Trading", "Reserve", "Kids", "Core")
_BASES = ("USD", "EUR", "CHF")


def make_accounts(seed: int, n_accounts: int, inception: date) -> tuple[tuple[Account, ...], str]:
    """``n_accounts`` accounts (even index Individual, odd index Advisor Client of the master; base
    currencies round-robin USD, EUR, CHF) and the advisor master id, all derived from ``seed``."""
    rng = random.Random(f"accounts:{seed}")
    numbers = rng.sample(range(1_000_000, 10_000_000), n_accounts + 1)
    master_id = f"F{numbers[-1]}"
    accounts = []
    for i in range(n_accounts):
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        advisor = i % 2 == 1
        accounts.append(
            Account(
                account_id=f"U{numbers[i]}",
                alias=f"{_ALIASES[i % len(_ALIASES)]} {i + 1}",
                name=name,
                base_currency=_BASES[i % len(_BASES)],
                account_type="Advisor Client" if advisor else "Individual",
                customer_type="Individual",
                master_id=master_id if advisor else None,
                opened=inception - timedelta(days=rng.randint(20, 400)),
            )
        )
    return tuple(accounts), master_id


def cents(value: Decimal) -> Decimal:
    """Round money to the cent, half-even."""
    return value.quantize(CENT, ROUND_HALF_EVEN)


def fx_pair(a: str, b: str) -> tuple[str, str]:
    """The market-convention pair (first, second) for two currencies."""
    return (a, b) if _FX_PAIR_ORDER.index(a) < _FX_PAIR_ORDER.index(b) else (b, a)


def session_fraction(at: datetime) -> float:
    """Fraction of the New York session (09:30-16:00) elapsed at ``at``, clamped to [0, 1]."""
    local = at.astimezone(NEW_YORK)
    minutes = local.hour * 60 + local.minute + local.second / 60 - (9 * 60 + 30)
    return min(max(minutes / 390.0, 0.0), 1.0)


def intraday_price(prev: Decimal, close: Decimal, frac: float, tick: Decimal) -> Decimal:
    """Linear interpolation between previous and current close, quantized to ``tick``."""
    if frac <= 0:
        return prev
    if frac >= 1:
        return close
    raw = prev + (close - prev) * Decimal(repr(frac))
    return max((raw / tick).quantize(Decimal(1), ROUND_HALF_EVEN) * tick, tick)


def apply_fill(lots: list[Lot], trade_qty: Decimal, price: Decimal, cost: Decimal, at: datetime,
               conid: int) -> tuple[list[Lot], tuple[Lot, ...]]:  # fmt: skip
    """FIFO: open a lot (same sign or flat) or consume lots from the front (never flips).

    ``cost`` is the trade's cost, -(proceeds + commission). Returns the new lot list and the
    consumed portions of lots (quantity and cost basis of the part closed; empty for an opening
    fill); realized P&L = -cost - sum(consumed cost basis).
    """
    if not lots or (lots[0].quantity > 0) == (trade_qty > 0):
        return [*lots, Lot(conid, trade_qty, at, price, cost)], ()
    remaining = -trade_qty  # same sign as the lots
    consumed: list[Lot] = []
    out = list(lots)
    while remaining and out:
        lot = out[0]
        if abs(remaining) >= abs(lot.quantity):
            consumed.append(lot)
            remaining -= lot.quantity
            out.pop(0)
            continue
        part = cents(lot.cost_basis_money * remaining / lot.quantity)
        consumed.append(Lot(conid, remaining, lot.open_at, lot.open_price, part))
        out[0] = Lot(
            conid, lot.quantity - remaining, lot.open_at, lot.open_price,
            lot.cost_basis_money - part,
        )  # fmt: skip
        remaining = ZERO
    if remaining:
        raise ValueError(f"fill of {trade_qty} exceeds the open position of conid {conid}")
    return out, tuple(consumed)


def make_position(inst: Instrument, lots: tuple[Lot, ...], price: Decimal) -> Position:
    """A position from its lots at mark ``price`` (value and cost in the instrument currency)."""
    qty = sum((lot.quantity for lot in lots), ZERO)
    return Position(
        conid=inst.conid,
        quantity=qty,
        mark_price=price,
        position_value=inst.value(qty, price),
        cost_basis_money=sum((lot.cost_basis_money for lot in lots), ZERO),
        lots=lots,
        currency=inst.currency,
        asset_category=inst.asset_category,
    )


_CATEGORY_FIELD = {"STK": "stock", "OPT": "options", "BOND": "bonds"}


def nav_components(
    cash: dict[str, Decimal],
    positions: dict[int, Position],
    fx_to_base: dict[str, Decimal],
    interest_accrued: dict[str, Decimal] | None = None,
    dividend_accruals: tuple[DividendAccrual, ...] = (),
) -> NavComponents:
    """NAV in base: per component, exact sums of local value * rate split into long and short
    parts, each rounded to the cent; component = long + short; total = sum of components, the
    interest accrued and not yet posted (``interest_accrued``, local per currency) included."""
    sums = {k: [ZERO, ZERO] for k in ("cash", "stock", "options", "bonds")}
    for ccy, amount in cash.items():
        sums["cash"][0 if amount >= 0 else 1] += amount * fx_to_base[ccy]
    for pos in positions.values():
        field = _CATEGORY_FIELD.get(pos.asset_category)
        if field is None:  # FUT: variation settled into cash
            continue
        value = pos.position_value * fx_to_base[pos.currency]
        sums[field][0 if value >= 0 else 1] += value
    parts = {k: (cents(v[0]), cents(v[1])) for k, v in sums.items()}
    comp = {k: lo + sh for k, (lo, sh) in parts.items()}
    accruals = cents(sum((v * fx_to_base[c] for c, v in (interest_accrued or {}).items()), ZERO))
    dividends = cents(sum((a.net * fx_to_base[a.currency] for a in dividend_accruals), ZERO))
    return NavComponents(
        cash_base=comp["cash"],
        stock_base=comp["stock"],
        options_base=comp["options"],
        bonds_base=comp["bonds"],
        commodities_base=ZERO,
        total_base=comp["cash"]
        + comp["stock"]
        + comp["options"]
        + comp["bonds"]
        + accruals
        + dividends,
        interest_accruals_base=accruals,
        dividend_accruals_base=dividends,
        cash_long_base=parts["cash"][0],
        cash_short_base=parts["cash"][1],
        stock_long_base=parts["stock"][0],
        stock_short_base=parts["stock"][1],
        options_long_base=parts["options"][0],
        options_short_base=parts["options"][1],
        bonds_long_base=parts["bonds"][0],
        bonds_short_base=parts["bonds"][1],
    )


def daily_return(nav: Decimal, prev_nav: Decimal, flow: Decimal) -> Decimal:
    """nav / (prev_nav + flow) - 1; 0 when the start-of-day capital is 0."""
    capital = prev_nav + flow
    return nav / capital - 1 if capital else ZERO


def trade_cash(trade: Trade) -> dict[str, Decimal]:
    """Cash effect of one trade per currency (see the module docstring)."""
    if trade.asset_category == "CASH":
        first = trade.symbol.split(".")[0]
        out = {first: trade.quantity, trade.currency: trade.net_cash}
    else:
        out = {trade.currency: trade.net_cash}
    if trade.commission_currency != trade.currency:
        ccy = trade.commission_currency
        out[ccy] = out.get(ccy, ZERO) + trade.commission
    return out


def _add(cash: dict[str, Decimal], ccy: str, amount: Decimal) -> None:
    cash[ccy] = cash.get(ccy, ZERO) + amount


def _first_business_day_from(d: date) -> date:
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return d


def _on_or_after_15th(d: date, month: int) -> bool:
    """True on the first business day on or after the 15th of ``month`` (in ``d``'s year)."""
    if d.month != month:
        return False
    target = date(d.year, month, 15)
    while target.weekday() >= 5:
        target += timedelta(days=1)
    return d == target


@dataclass(slots=True)
class _Book:
    """Mutable state of an account between days."""

    cash: dict[str, Decimal]
    lots: dict[int, list[Lot]]
    frozen: dict[int, tuple[Lot, ...]]  # cached tuple(lots) per conid, dropped on change


class AccountSim:
    """One account's generator: ``step`` appends the next business day's ``AccountDay``."""

    def __init__(self, account: Account, index: int, seed: int, market: Market,
                 fx_commission_in_base: bool = False, position_events: bool = False) -> None:  # fmt: skip
        self.account = account
        self.fx_commission_in_base = fx_commission_in_base
        self.position_events = position_events
        self.index = index
        self.market = market
        self.days: list[AccountDay] = []
        self._rng = random.Random(f"account:{seed}:{index}")
        self._book = _Book({}, {}, {})
        self._serial = 0
        self._orders = 0
        self._accrued: dict[str, Decimal] = {}  # broker interest accrued, not yet posted
        self._dividends: dict[int, list[DividendAccrual]] = {}  # past ex-date, not yet paid
        self._dividend_changes: list[tuple[str, DividendAccrual]] = []  # the day's Po/Re
        self._clock: datetime | None = None  # last execution time of the day being simulated
        self._exec_prefix = f"{zlib.crc32(account.account_id.encode()):08x}"

    # ---------------------------------------------------------------------------------------------
    # ids and clocks

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _txn_id(self, serial: int) -> str:
        return str(1_000_000_000 + self.index * _ID_STRIDE + serial)

    def _at(self, d: date, local: time, tz: ZoneInfo) -> datetime:
        return datetime.combine(d, local, tzinfo=tz).astimezone(UTC)

    def _exec_time(self, d: date, inst_exchange: str) -> datetime:
        """A random time in the exchange's session on ``d``, after the day's previous execution
        (so FIFO order is time order; at most a few executions a day stay before 16:00 NY)."""
        rng = self._rng
        if inst_exchange in _US_EXCHANGES or inst_exchange == "":
            start, span, tz = 9 * 3600 + 30 * 60, 390 * 60, NEW_YORK
        elif inst_exchange == "IDEALPRO":
            start, span, tz = 3 * 3600, 13 * 3600, NEW_YORK
        else:
            start, span, tz = 9 * 3600, 510 * 60, ZURICH
        secs = start + rng.randrange(span - 600)
        at = self._at(d, time(secs // 3600, secs // 60 % 60, secs % 60), tz)
        if self._clock is not None and at <= self._clock:
            at = self._clock + timedelta(seconds=rng.randint(1, 60))
        self._clock = at
        return at

    # ---------------------------------------------------------------------------------------------
    # one day

    def step(self, d: date, prev_md: MarketDay, md: MarketDay, next_day: date) -> AccountDay:
        """Simulate business day ``d`` (``next_day`` = the following business day)."""
        base = self.account.base_currency
        fx_to_base = {c: md.fx[(c, base)] for c in CURRENCIES}
        prev = self.days[-1] if self.days else None
        prev_nav = prev.nav.total_base if prev else ZERO
        book = self._book
        held = {c: sum((lot.quantity for lot in lots), ZERO) for c, lots in book.lots.items()}
        txns: list[CashTransaction] = []
        flow = self._flows(d, prev_nav, fx_to_base, txns)
        capital = prev_nav + flow
        self._income(d, held, fx_to_base, prev_nav, next_day, txns)
        for txn in txns:
            _add(book.cash, txn.currency, txn.amount)
        events: list[PositionEvent] = []
        if self.position_events:
            flow += self._corporate_events(d, prev_md, fx_to_base, events)
            capital = prev_nav + flow
        trades = self._trading(d, prev_md, md, fx_to_base, capital)
        if self.position_events and len(self.days) == mk.EXPIRY_DAY:
            self._option_expiry(_Ctx(d, prev_md, md, fx_to_base, capital, trades))
        variation: dict[str, Decimal] = {}
        for conid, qty in held.items():
            inst = self.market.instruments[conid]
            if inst.asset_category == "FUT" and qty:
                move = qty * inst.multiplier * (md.closes[conid] - prev_md.closes[conid])
                _add(variation, inst.currency, move)
                _add(book.cash, inst.currency, move)
        positions: dict[int, Position] = {}
        for conid, lots in book.lots.items():
            frozen = book.frozen.get(conid)
            if frozen is None:
                frozen = book.frozen[conid] = tuple(lots)
            positions[conid] = make_position(
                self.market.instruments[conid], frozen, md.closes[conid]
            )
        if self.position_events:
            self._accrue_interest()
        dividends = tuple(a for accruals in self._dividends.values() for a in accruals)
        nav = nav_components(book.cash, positions, fx_to_base, self._accrued, dividends)
        day = AccountDay(
            account_id=self.account.account_id,
            date=d,
            base_currency=base,
            cash=dict(book.cash),
            positions=positions,
            fx_to_base=fx_to_base,
            nav=nav,
            trades=tuple(trades),
            cash_transactions=tuple(txns),
            external_flow_base=flow,
            daily_return=daily_return(nav.total_base, prev_nav, flow),
            prev_nav_base=prev_nav,
            variation=variation,
            position_events=tuple(events),
            interest_accrued={c: v for c, v in self._accrued.items() if v},
            dividend_accruals=dividends,
            dividend_accrual_changes=tuple(self._dividend_changes),
        )
        self.days.append(day)
        return day

    # ---------------------------------------------------------------------------------------------
    # opt-in position events (World(position_events=True)); see ibpipeline.world.market

    def _event(self, d: date, kind: str, type_: str, conid: int, qty: Decimal, desc: str,
               action_id: str, **kw: object) -> PositionEvent:  # fmt: skip
        lots = tuple(self._book.lots.get(conid, ()))
        self._book.frozen.pop(conid, None)
        return PositionEvent(
            account_id=self.account.account_id, kind=kind, type=type_, conid=conid, quantity=qty,
            report_date=d, at=self._at(d, CASH_TXN_TIME, NEW_YORK), description=desc,
            action_id=action_id, transaction_id=self._txn_id(self._next_serial()), lots=lots,
            **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    def _move_lots(self, old: int, new: int, ratio: Decimal) -> Decimal:
        """Replace ``old``'s lots by ``new``'s: quantity x ratio, open price / ratio, same cost;
        returns the old quantity."""
        lots = self._book.lots.pop(old, [])
        held = sum((lot.quantity for lot in lots), ZERO)
        moved = [
            Lot(
                new, lot.quantity * ratio, lot.open_at, lot.open_price / ratio, lot.cost_basis_money
            )
            for lot in lots
        ]
        if moved:
            self._book.lots[new] = moved
        return held

    def _corporate_events(self, d: date, prev_md: MarketDay, fx_to_base: dict[str, Decimal],
                          out: list[PositionEvent]) -> Decimal:  # fmt: skip
        """Start-of-day events of business day ``len(self.days)``; returns the value moved in
        (+) or out (-) by ACATS, in base currency."""
        index, inst = len(self.days), self.market.instruments
        action = f"9{index:03d}{self.index:04d}"
        if index == mk.TRANSFER_DAY:
            jnj = inst[mk.TRANSFER_CONID]
            qty, price = Decimal(25), prev_md.closes[jnj.conid]
            at = self._at(d, CASH_TXN_TIME, NEW_YORK)
            value = jnj.value(qty, price)
            self._book.lots.setdefault(jnj.conid, []).append(Lot(jnj.conid, qty, at, price, value))
            out.append(self._event(
                d, "Transfer", "ACATS", jnj.conid, qty, jnj.description, action,
                direction="IN", price=price, value=value,
            ))  # fmt: skip
            return value * fx_to_base[jnj.currency]
        held = {c: sum((lot.quantity for lot in ls), ZERO) for c, ls in self._book.lots.items()}
        if index == mk.TRANSFER_OUT_DAY and held.get(mk.TRANSFER_OUT_CONID, ZERO) > 0:
            return self._transfer_out(d, prev_md, fx_to_base, held, action, out)
        if index == mk.MERGER_DAY and held.get(mk.MERGER_TARGET):
            self._merger(d, prev_md, held[mk.MERGER_TARGET], action, out)
        if index == mk.SPINOFF_DAY and held.get(mk.SPINOFF_PARENT):
            self._spinoff(d, prev_md, held[mk.SPINOFF_PARENT], action, out)
        if index == mk.SPLIT_DAY and held.get(mk.SPLIT_CONID):
            old = inst[mk.SPLIT_CONID]
            self._move_lots(old.conid, old.conid, mk.SPLIT_RATIO)
            desc = f"{old.symbol}({old.isin}) SPLIT 2 FOR 1 ({old.symbol}, {old.description}, {old.isin})"
            out.append(
                self._event(d, "CorporateAction", "FS", old.conid, held[old.conid], desc, action)
            )
        pairs = {
            mk.REVERSE_SPLIT_DAY: (mk.REVERSE_OLD, mk.REVERSE_NEW, "RS", 1 / mk.REVERSE_RATIO),
            mk.ISIN_CHANGE_DAY: (mk.ISIN_OLD, mk.ISIN_NEW, "IC", Decimal(1)),
        }
        if index in pairs and held.get(pairs[index][0]):
            old_id, new_id, code, ratio = pairs[index]
            old, new = inst[old_id], inst[new_id]
            qty = self._move_lots(old_id, new_id, ratio)
            what = "SPLIT 1 FOR 10" if code == "RS" else f"CUSIP/ISIN CHANGE TO ({new.isin})"
            head = f"{old.symbol.removesuffix('.OLD')}({old.isin}) {what}"
            out.append(
                self._event(
                    d,
                    "CorporateAction",
                    code,
                    old_id,
                    -qty,
                    f"{head} ({old.symbol}, {old.description}, {old.isin})",
                    action,
                )
            )
            out.append(self._event(d, "CorporateAction", code, new_id, qty * ratio,
                                   f"{head} ({new.symbol}, {new.description}, {new.isin})", action))  # fmt: skip
        return ZERO

    def _transfer_out(self, d: date, prev_md: MarketDay, fx_to_base: dict[str, Decimal],
                      held: dict[int, Decimal], action: str, out: list[PositionEvent]) -> Decimal:  # fmt: skip
        """ACATS out of up to TRANSFER_OUT_QUANTITY shares, oldest lots first (IBKR: quantity and
        positionAmount negative); returns the value moved out (base currency, negative)."""
        item = self.market.instruments[mk.TRANSFER_OUT_CONID]
        qty, price = min(mk.TRANSFER_OUT_QUANTITY, held[item.conid]), prev_md.closes[item.conid]
        lots, left, rest = self._book.lots.pop(item.conid), qty, []
        for lot in lots:
            take = min(left, lot.quantity)
            left -= take
            if take < lot.quantity:
                keep = lot.quantity - take
                cost = lot.cost_basis_money * keep / lot.quantity
                rest.append(Lot(lot.conid, keep, lot.open_at, lot.open_price, cost))
        if rest:
            self._book.lots[item.conid] = rest
        value = -item.value(qty, price)
        out.append(self._event(
            d, "Transfer", "ACATS", item.conid, -qty, item.description, action,
            direction="OUT", price=price, value=value,
        ))  # fmt: skip
        return value * fx_to_base[item.currency]

    def _merger(self, d: date, prev_md: MarketDay, qty: Decimal, action: str,
                out: list[PositionEvent]) -> None:  # fmt: skip
        """TC: every target share becomes MERGER_SHARES acquirer shares plus MERGER_CASH USD.
        The target's cost basis moves to the new shares, less the cash (at least 0)."""
        inst = self.market.instruments
        target, acquirer = inst[mk.MERGER_TARGET], inst[mk.MERGER_ACQUIRER]
        lots = self._book.lots.pop(target.conid)
        cost = sum((lot.cost_basis_money for lot in lots), ZERO)
        cash = cents(qty * mk.MERGER_CASH)
        new_qty = qty * mk.MERGER_SHARES
        new_cost = max(cost - cash, ZERO)
        moved = [
            Lot(acquirer.conid, lot.quantity * mk.MERGER_SHARES, lot.open_at,
                lot.open_price / mk.MERGER_SHARES, new_cost * lot.quantity / qty)
            for lot in lots
        ]  # fmt: skip
        self._book.lots.setdefault(acquirer.conid, []).extend(moved)
        _add(self._book.cash, "USD", cash)
        head = (
            f"{target.symbol}({target.isin}) MERGED(Acquisition) WITH {acquirer.isin} 5 FOR 10"
            f" AND USD {mk.MERGER_CASH}"
        )
        old_value = target.value(qty, prev_md.closes[target.conid])
        new_value = acquirer.value(new_qty, prev_md.closes[acquirer.conid])
        out.append(self._event(
            d, "CorporateAction", "TC", target.conid, -qty,
            f"{head} ({target.symbol}, {target.description}, {target.isin})", action,
            value=-old_value, proceeds=cash,
        ))  # fmt: skip
        out.append(self._event(
            d, "CorporateAction", "TC", acquirer.conid, new_qty,
            f"{head} ({acquirer.symbol}, {acquirer.description}, {acquirer.isin})", action,
            value=new_value,
        ))  # fmt: skip

    def _spinoff(self, d: date, prev_md: MarketDay, qty: Decimal, action: str,
                 out: list[PositionEvent]) -> None:  # fmt: skip
        """SO: SPINOFF_RATIO child shares per parent share; the parent's cost basis is split by
        the two companies' values at the previous close (the parent's lots keep their dates)."""
        inst = self.market.instruments
        parent, child = inst[mk.SPINOFF_PARENT], inst[mk.SPINOFF_CHILD]
        parent_value = parent.value(qty, prev_md.closes[parent.conid])
        child_qty = qty * mk.SPINOFF_RATIO
        child_value = child.value(child_qty, prev_md.closes[child.conid])
        share = child_value / (parent_value + child_value)
        lots = self._book.lots[parent.conid]
        child_lots, parent_lots = [], []
        for lot in lots:
            child_cost = cents(lot.cost_basis_money * share)
            parent_lots.append(Lot(lot.conid, lot.quantity, lot.open_at, lot.open_price,
                                   lot.cost_basis_money - child_cost))  # fmt: skip
            n = lot.quantity * mk.SPINOFF_RATIO
            child_lots.append(Lot(child.conid, n, lot.open_at, child_cost / n, child_cost))
        self._book.lots[parent.conid] = parent_lots
        self._book.frozen.pop(parent.conid, None)
        self._book.lots.setdefault(child.conid, []).extend(child_lots)
        desc = (
            f"{parent.symbol}({parent.isin}) SPINOFF  1 FOR 5"
            f" ({child.symbol}, {child.description}, {child.isin})"
        )
        out.append(self._event(
            d, "CorporateAction", "SO", child.conid, child_qty, desc, action, value=child_value,
        ))  # fmt: skip

    def _accrued_dividends(self, d, held, fx_to_base, txns) -> None:
        """Position events worlds: on a dividend's ex-date (first business day on or after the
        8th of a dividend month) the holders at the start of the day accrue it (Po); on its pay
        date (first business day on or after the 15th) it is paid as accrued, with its
        withholding, and the accrual reversed (Re). A holder who sold after the ex-date is paid."""
        self._dividend_changes = []
        for conid, accruals in sorted(self._dividends.items()):
            inst = self.market.instruments[conid]
            for acc in [a for a in accruals if a.pay_date == d]:
                head = f"{inst.symbol}({inst.isin}) Cash Dividend {inst.currency} {inst.dividend}"
                txns.append(self._cash_txn(
                    d, "Dividends", inst.currency, acc.gross,
                    f"{head} per Share (Ordinary Dividend)", fx_to_base, inst,
                ))  # fmt: skip
                if acc.tax:
                    txns.append(self._cash_txn(
                        d, "Withholding Tax", inst.currency, -acc.tax,
                        f"{head} per Share - {inst.isin[:2]} Tax", fx_to_base, inst,
                    ))  # fmt: skip
                accruals.remove(acc)
                self._dividend_changes.append(("Re", acc))
        self._dividends = {c: a for c, a in self._dividends.items() if a}
        for conid, qty in sorted(held.items()):
            inst = self.market.instruments[conid]
            if qty <= 0 or inst.asset_category != "STK" or d.month not in inst.dividend_months:
                continue
            if d != _first_business_day_from(date(d.year, d.month, 8)):
                continue
            gross = cents(qty * inst.dividend)
            acc = DividendAccrual(
                conid=conid, currency=inst.currency, ex_date=d,
                pay_date=_first_business_day_from(date(d.year, d.month, 15)), quantity=qty,
                gross_rate=inst.dividend, gross=gross, tax=cents(gross * inst.withholding_rate),
                action_id=f"8{d:%y%m}{conid % 100000:05d}",
            )  # fmt: skip
            self._dividends.setdefault(conid, []).append(acc)
            self._dividend_changes.append(("Po", acc))

    def _accrue_interest(self) -> None:
        """A day's broker interest on the end-of-day cash balances (actual/360, to the cent per
        currency): credit interest above 10,000, debit interest on a negative balance."""
        for ccy, bal in sorted(self._book.cash.items()):
            if bal > 10_000:
                day = cents((bal - 10_000) * Decimal(_INTEREST_RECEIVED[ccy]) / 360)
            elif bal < 0:
                day = cents(bal * Decimal(_INTEREST_PAID[ccy]) / 360)
            else:
                continue
            if day:
                self._accrued[ccy] = self._accrued.get(ccy, ZERO) + day

    def _option_expiry(self, ctx: _Ctx) -> None:
        """After the close of the options' expiry: the OTM call expires (Ep), the ITM short put
        is assigned (A: the option closed at 0 and the stock bought at the strike), as IBKR
        books them: trades at price 0 / strike, no commission, transactionType BookTrade."""
        at = self._at(ctx.d, time(16, 20), NEW_YORK)
        for conid, notes in ((mk.CALL_EXPIRING, "Ep"), (mk.PUT_ASSIGNED, "A"),
                             (mk.CALL_EXERCISED, "Ex")):  # fmt: skip
            lots = self._book.lots.get(conid)
            if not lots:
                continue
            inst = self.market.instruments[conid]
            qty = -sum((lot.quantity for lot in lots), ZERO)
            self._fill(ctx, inst, qty, at, self._book_order(), price=ZERO, notes=notes)
            if notes in ("A", "Ex"):
                under = self.market.instruments[inst.underlying_conid]
                shares = qty * inst.multiplier * (1 if inst.put_call == "P" else -1)
                self._fill(
                    ctx, under, shares, at, self._book_order(), price=inst.strike, notes=notes
                )

    def _book_order(self) -> str:
        self._orders += 1
        return str(300_000_000 + self.index * _ID_STRIDE + self._orders)

    def _cash_txn(self, d, type_, ccy, amount, desc, fx_to_base, inst=None) -> CashTransaction:
        return CashTransaction(
            account_id=self.account.account_id,
            transaction_id=self._txn_id(self._next_serial()),
            type=type_,
            currency=ccy,
            amount=amount,
            report_date=d,
            at=self._at(d, CASH_TXN_TIME, NEW_YORK),
            description=desc,
            conid=inst.conid if inst else None,
            symbol=inst.symbol if inst else "",
            fx_rate_to_base=fx_to_base[ccy],
        )

    def _cash_base(self, fx_to_base: dict[str, Decimal]) -> Decimal:
        return sum((v * fx_to_base[c] for c, v in self._book.cash.items()), ZERO)

    def _flows(self, d, prev_nav, fx_to_base, txns) -> Decimal:
        """Deposits/withdrawals in base currency at the start of the day; returns their sum."""
        rng = self._rng
        base = self.account.base_currency
        amount = ZERO
        if not self.days:
            amount = Decimal(rng.randrange(100, 2000) * 1000)
        elif rng.random() < 0.025:
            amount = Decimal(rng.randrange(1, 20) * 1000)
        elif rng.random() < 0.015:
            want = cents(prev_nav * Decimal(rng.uniform(0.01, 0.05)) / 100) * 100
            if self._cash_base(fx_to_base) - want > prev_nav / 10:
                amount = -want
        if not amount:
            return ZERO
        desc = "CASH RECEIPTS / ELECTRONIC FUND TRANSFERS" if amount > 0 else "DISBURSEMENT"
        txns.append(self._cash_txn(d, "Deposits/Withdrawals", base, amount, desc, fx_to_base))
        return amount * fx_to_base[base]

    def _income(self, d, held, fx_to_base, prev_nav, next_day, txns) -> None:
        """Dividends (+ withholding), bond coupons, month-end interest, monthly fees."""
        instruments = self.market.instruments
        for conid, qty in sorted(held.items()):
            inst = instruments[conid]
            if qty <= 0:
                continue
            if self.position_events:
                pass  # dividends accrue on their ex-date and are paid below (_accrued_dividends)
            elif inst.asset_category == "STK" and any(
                _on_or_after_15th(d, m) for m in inst.dividend_months
            ):
                gross = cents(qty * inst.dividend)
                head = f"{inst.symbol}({inst.isin}) Cash Dividend {inst.currency} {inst.dividend}"
                txns.append(self._cash_txn(
                    d, "Dividends", inst.currency, gross,
                    f"{head} per Share (Ordinary Dividend)", fx_to_base, inst,
                ))  # fmt: skip
                tax = cents(gross * inst.withholding_rate)
                if tax:
                    country = inst.isin[:2]
                    txns.append(self._cash_txn(
                        d, "Withholding Tax", inst.currency, -tax,
                        f"{head} per Share - {country} Tax", fx_to_base, inst,
                    ))  # fmt: skip
            if inst.asset_category == "BOND" and any(
                _on_or_after_15th(d, m) for m in inst.coupon_months
            ):
                coupon = cents(qty * inst.coupon_rate / len(inst.coupon_months))
                txns.append(self._cash_txn(
                    d, "Bond Interest Received", inst.currency, coupon,
                    f"{inst.symbol} COUPON PAYMENT", fx_to_base, inst,
                ))  # fmt: skip
        if self.position_events:
            self._accrued_dividends(d, held, fx_to_base, txns)
        if next_day.month != d.month and self.position_events:  # post the month's accruals
            tag = d.strftime("%b-%Y").upper()
            for ccy, amt in sorted(self._accrued.items()):
                if amt:
                    kind = "Broker Interest Received" if amt > 0 else "Broker Interest Paid"
                    desc = f"{ccy} {'CREDIT' if amt > 0 else 'DEBIT'} INT FOR {tag}"
                    txns.append(self._cash_txn(d, kind, ccy, amt, desc, fx_to_base))
            self._accrued.clear()
        elif next_day.month != d.month:  # last business day of the month: broker interest
            tag = d.strftime("%b-%Y").upper()
            for ccy in sorted(self._book.cash):
                bal = self._book.cash[ccy]
                if bal > 10_000:
                    amt = cents((bal - 10_000) * Decimal(_INTEREST_RECEIVED[ccy]) / 12)
                    kind, desc = "Broker Interest Received", f"{ccy} CREDIT INT FOR {tag}"
                elif bal < 0:
                    amt = cents(bal * Decimal(_INTEREST_PAID[ccy]) / 12)
                    kind, desc = "Broker Interest Paid", f"{ccy} DEBIT INT FOR {tag}"
                else:
                    continue
                if amt:
                    txns.append(self._cash_txn(d, kind, ccy, amt, desc, fx_to_base))
        if self.days and self.days[-1].date.month != d.month:  # first business day of a month
            tag = self.days[-1].date.strftime("%b %Y").upper()
            if self._rng.random() < 0.6:
                txns.append(self._cash_txn(
                    d, "Other Fees", "USD", Decimal("-10.00"),
                    f"P*Snapshot NYSE (Network A/CTA) NONPRO FOR {tag}", fx_to_base,
                ))  # fmt: skip
            if self.account.master_id and prev_nav > 0:
                base = self.account.base_currency
                fee = cents(prev_nav * Decimal("0.001") / fx_to_base[base])
                txns.append(self._cash_txn(
                    d, "Advisor Fees", base, -fee,
                    f"CLIENT FEE {self.account.master_id} MANAGEMENT FEE FOR {tag}", fx_to_base,
                ))  # fmt: skip

    # ---------------------------------------------------------------------------------------------
    # trading

    def _trading(self, d, prev_md, md, fx_to_base, capital) -> list[Trade]:
        rng = self._rng
        trades: list[Trade] = []
        if capital <= 0:
            return trades
        events = 0 if rng.random() < 0.55 else (1 if rng.random() < 0.75 else 2)
        if not self.days:
            events = 3  # build an initial portfolio
        ctx = _Ctx(d, prev_md, md, fx_to_base, capital, trades)
        self._clock = None
        for _ in range(events):
            action = rng.choices(
                ("buy_stk", "sell_stk", "opt_open", "opt_close", "fut_open", "fut_close",
                 "bond_buy", "bond_sell", "fx_home"),
                weights=(36, 22, 8, 7, 5, 5, 5, 3, 9),
            )[0]  # fmt: skip
            if not self.days:
                action = "buy_stk"
            getattr(self, "_" + action)(ctx)
        if self.position_events and not self.days:
            inst = self.market.instruments
            for conid, qty in ((mk.SPLIT_CONID, 100), (mk.REVERSE_OLD, 1000), (mk.ISIN_OLD, 50),
                               (mk.CALL_EXPIRING, 2), (mk.PUT_ASSIGNED, -1),
                               (mk.CALL_EXERCISED, 1), (mk.MERGER_TARGET, 200),
                               (mk.SPINOFF_PARENT, 100)):  # fmt: skip
                self._order(ctx, inst[conid], Decimal(qty))
        return trades

    def _held(self, category: str) -> list[int]:
        instruments = self.market.instruments
        return sorted(
            c for c, lots in self._book.lots.items()
            if lots and instruments[c].asset_category == category and c not in EVENT_CONIDS
        )  # fmt: skip

    def _pick(self, category: str) -> Instrument:
        options = [
            i
            for i in self.market.instruments.values()
            if i.asset_category == category and i.conid not in EVENT_CONIDS
        ]
        return self._rng.choice(options)

    def _affordable(self, ctx: _Ctx, cost_base: Decimal) -> bool:
        return self._cash_base(ctx.fx_to_base) - cost_base > ctx.capital * Decimal("0.03")

    def _buy_stk(self, ctx: _Ctx) -> None:
        inst = self._pick("STK")
        budget_base = ctx.capital * Decimal(self._rng.uniform(0.02, 0.08))
        price = ctx.md.closes[inst.conid]
        qty = (budget_base / ctx.fx_to_base[inst.currency] / price).to_integral_value(ROUND_FLOOR)
        if qty >= 1 and self._affordable(ctx, budget_base):
            self._order(ctx, inst, qty, split=self._rng.random() < 0.25)

    def _sell_stk(self, ctx: _Ctx) -> None:
        held = self._held("STK")
        if held:
            conid = self._rng.choice(held)
            qty = sum(lot.quantity for lot in self._book.lots[conid])
            if self._rng.random() < 0.5 and qty >= 2:
                qty = (qty / 2).to_integral_value(ROUND_FLOOR)
            self._order(ctx, self.market.instruments[conid], -qty, split=qty >= 10)

    def _opt_open(self, ctx: _Ctx) -> None:
        inst = self._pick("OPT")
        if inst.conid in self._book.lots:
            return
        qty = Decimal(self._rng.randint(1, 5)) * (1 if self._rng.random() < 0.6 else -1)
        premium = inst.value(abs(qty), ctx.md.closes[inst.conid]) * ctx.fx_to_base[inst.currency]
        if premium < ctx.capital * Decimal("0.05") and self._affordable(ctx, premium):
            self._order(ctx, inst, qty)

    def _close_all(self, ctx: _Ctx, category: str) -> None:
        held = self._held(category)
        if held:
            conid = self._rng.choice(held)
            qty = sum(lot.quantity for lot in self._book.lots[conid])
            self._order(ctx, self.market.instruments[conid], -qty)

    def _opt_close(self, ctx: _Ctx) -> None:
        self._close_all(ctx, "OPT")

    def _fut_open(self, ctx: _Ctx) -> None:
        inst = self._pick("FUT")
        if inst.conid in self._book.lots:
            return
        qty = Decimal(self._rng.randint(1, 3)) * (1 if self._rng.random() < 0.6 else -1)
        notional = inst.value(abs(qty), ctx.md.closes[inst.conid]) * ctx.fx_to_base[inst.currency]
        if notional < ctx.capital * Decimal("0.8") and self._affordable(ctx, ZERO):
            self._order(ctx, inst, qty)

    def _fut_close(self, ctx: _Ctx) -> None:
        self._close_all(ctx, "FUT")

    def _bond_buy(self, ctx: _Ctx) -> None:
        inst = self._pick("BOND")
        face = Decimal(self._rng.randint(1, 10) * 5000)
        cost = inst.value(face, ctx.md.closes[inst.conid]) * ctx.fx_to_base[inst.currency]
        if cost < ctx.capital * Decimal("0.12") and self._affordable(ctx, cost):
            self._order(ctx, inst, face)

    def _bond_sell(self, ctx: _Ctx) -> None:
        self._close_all(ctx, "BOND")

    def _fx_home(self, ctx: _Ctx) -> None:
        """Convert a large foreign balance back to base, or cover a negative one."""
        base = self.account.base_currency
        for ccy in sorted(self._book.cash):
            bal = self._book.cash[ccy]
            if ccy == base:
                continue
            in_base = bal * ctx.fx_to_base[ccy]
            if in_base > ctx.capital * Decimal("0.04"):
                self._convert(ctx, ccy, base, cents(bal * Decimal("0.8")))
                return
            if in_base < -1000:
                self._convert(ctx, base, ccy, -bal)
                return

    def _ensure_cash(self, ctx: _Ctx, ccy: str, need: Decimal) -> None:
        """Convert base cash into ``ccy`` so that its balance covers ``need`` (local)."""
        base = self.account.base_currency
        have = self._book.cash.get(ccy, ZERO)
        if ccy != base and have < need:
            amount = ((need - have) / 1000).to_integral_value(ROUND_CEILING) * 1000 + 1000
            self._convert(ctx, base, ccy, amount)

    def _convert(self, ctx: _Ctx, sell: str, buy: str, amount: Decimal) -> None:
        """Sell currency ``sell`` to receive about ``amount`` of ``buy``."""
        first, second = fx_pair(sell, buy)
        rate = ctx.md.fx[(first, second)].quantize(FX_PRICE_PLACES, ROUND_HALF_EVEN)
        qty = amount if buy == first else -cents(amount / rate)
        if not qty:
            return
        at = self._exec_time(ctx.d, "IDEALPRO")
        proceeds = cents(-qty * rate)
        commission, commission_ccy = Decimal("-2.00"), second
        if self.fx_commission_in_base:  # IBKR: USD 2.00 charged in base currency, 5 places
            commission_ccy = self.account.base_currency
            commission = -(2 * ctx.fx_to_base["USD"]).quantize(FX_PRICE_PLACES, ROUND_HALF_EVEN)
        net_cash = proceeds + commission if commission_ccy == second else proceeds
        self._orders += 1
        serial = self._next_serial()
        trade = Trade(
            account_id=self.account.account_id,
            trade_id=str(500_000_000 + self.index * _ID_STRIDE + serial),
            transaction_id=self._txn_id(serial),
            ib_order_id=str(300_000_000 + self.index * _ID_STRIDE + self._orders),
            ib_exec_id=f"{self._exec_prefix}.{int(at.timestamp()):08x}.{serial % 256:02x}.01",
            conid=None,
            symbol=f"{first}.{second}",
            asset_category="CASH",
            currency=second,
            fx_rate_to_base=ctx.fx_to_base[second],
            trade_date=ctx.d,
            executed_at=at,
            quantity=qty,
            trade_price=rate,
            proceeds=proceeds,
            commission=commission,
            commission_currency=commission_ccy,
            net_cash=net_cash,
            close_price=rate,
            open_close="",
            realized_pnl=ZERO,
            buy_sell="BUY" if qty > 0 else "SELL",
            exchange="IDEALPRO",
        )
        for ccy, amt in trade_cash(trade).items():
            _add(self._book.cash, ccy, amt)
        ctx.trades.append(trade)

    def _order(self, ctx: _Ctx, inst: Instrument, qty: Decimal, split: bool = False) -> None:
        """Execute an order of ``qty`` (signed) as one or two fills."""
        if qty > 0 and inst.asset_category != "FUT":
            est = inst.value(qty, ctx.md.closes[inst.conid]) * Decimal("1.02") + 50
            self._ensure_cash(ctx, inst.currency, est)
        self._orders += 1
        order_id = str(300_000_000 + self.index * _ID_STRIDE + self._orders)
        at = self._exec_time(ctx.d, inst.listing_exchange)
        first = (qty / 2).to_integral_value(ROUND_FLOOR) if split and abs(qty) >= 2 else qty
        self._fill(ctx, inst, first, at, order_id)
        if first != qty:
            later = at + timedelta(seconds=1)
            self._clock = later
            self._fill(ctx, inst, qty - first, later, order_id)

    def _commission(self, inst: Instrument, qty: Decimal, price: Decimal) -> Decimal:
        n = abs(qty)
        notional = abs(inst.value(qty, price))
        if inst.asset_category == "STK":
            if inst.currency == "USD":
                fee = min(max(Decimal("1.00"), n * Decimal("0.005")), notional / 100)
            else:
                fee = max(Decimal("3.00"), notional * Decimal("0.0005"))
        elif inst.asset_category == "OPT":
            fee = max(Decimal("1.00"), n * Decimal("0.65"))
        elif inst.asset_category == "FUT":
            fee = n * (Decimal("0.85") if inst.currency == "USD" else Decimal("2.00"))
        else:
            fee = max(Decimal("5.00"), n * Decimal("0.0005"))
        return -cents(fee)

    def _fill(self, ctx: _Ctx, inst: Instrument, qty: Decimal, at: datetime, order_id: str,
              price: Decimal | None = None, notes: str = "") -> None:  # fmt: skip
        """One execution; with ``price`` a book trade of an option event (``notes`` A/Ep/Ex, no
        commission)."""
        conid = inst.conid
        close = ctx.md.closes[conid]
        if price is None:
            mid = intraday_price(ctx.prev_md.closes[conid], close, session_fraction(at), inst.tick)
            noise = Decimal(repr(self._rng.uniform(-0.002, 0.002)))
            price = max(
                ((mid * (1 + noise)) / inst.tick).quantize(Decimal(1)) * inst.tick, inst.tick
            )
            commission = self._commission(inst, qty, price)
        else:
            commission = ZERO
        proceeds = cents(-inst.value(qty, price))
        cost = -(proceeds + commission)
        book_lots = self._book.lots.get(conid, [])
        closing = bool(book_lots) and (book_lots[0].quantity > 0) != (qty > 0)
        lots, closed = apply_fill(book_lots, qty, price, cost, at, conid)
        consumed = sum((lot.cost_basis_money for lot in closed), ZERO)
        if lots:
            self._book.lots[conid] = lots
        else:
            self._book.lots.pop(conid, None)
        self._book.frozen.pop(conid, None)
        if inst.asset_category == "FUT":
            net_cash = cents(qty * inst.multiplier * (close - price)) + commission
        else:
            net_cash = proceeds + commission
        _add(self._book.cash, inst.currency, net_cash)
        serial = self._next_serial()
        ctx.trades.append(
            Trade(
                account_id=self.account.account_id,
                trade_id=str(500_000_000 + self.index * _ID_STRIDE + serial),
                transaction_id=self._txn_id(serial),
                ib_order_id=order_id,
                ib_exec_id=f"{self._exec_prefix}.{int(at.timestamp()):08x}.{serial % 256:02x}.01",
                conid=conid,
                symbol=inst.symbol,
                asset_category=inst.asset_category,
                currency=inst.currency,
                fx_rate_to_base=ctx.fx_to_base[inst.currency],
                trade_date=ctx.d,
                executed_at=at,
                quantity=qty,
                trade_price=price,
                proceeds=proceeds,
                commission=commission,
                commission_currency=inst.currency,
                net_cash=net_cash,
                close_price=close,
                open_close="C" if closing else "O",
                realized_pnl=-cost - consumed if closing else ZERO,
                buy_sell="BUY" if qty > 0 else "SELL",
                exchange=inst.listing_exchange,
                multiplier=inst.multiplier,
                cost_basis=-consumed if closing else cost,
                closed_lots=closed,
                notes=notes,
                transaction_type="BookTrade" if notes else "ExchTrade",
            )
        )


@dataclass(slots=True)
class _Ctx:
    """Inputs of one day's trading."""

    d: date
    prev_md: MarketDay
    md: MarketDay
    fx_to_base: dict[str, Decimal]
    capital: Decimal
    trades: list[Trade]
