"""IB Gateway simulator: a read-only TWS API socket server backed by the simulated world.

Speaks the TWS API socket protocol (reference: shared/reference/tws-socket-protocol.md) well
enough for unmodified ``ib_async`` and IB's ``ibapi`` clients to connect and read managed accounts,
account values and summary, portfolio, positions, PnL, executions. It never trades: ``placeOrder`` is
answered with error 321 (Read-Only API).

Wire facts honoured here:

- Framing: ``uint32be`` length + NUL-terminated UTF-8 fields; split and coalesced frames are fine.
- Handshake: ``API\\0`` + framed ``v<min>..<max>[ options]``; the reply is one frame of exactly two
  fields, the announced version ``min(client max, configured)`` (157..178) and the connection time;
  the socket closes when that is below the client's minimum.
- Exact field counts: position 16, positionMulti 18, updatePortfolio 20, commissionReport 8; error
  messages carry the trailing ``advancedOrderRejectJson`` from server version 166; execDetails carries
  ``pendingPriceRevision`` from 178.

All figures come from ``world.state_at(account_id, clock())``: ``NetLiquidation`` is
``nav.total_base`` so a snapshot at a day's close equals that day's Flex NAV. Money is sent with two
decimals, prices/quantities/FX rates exactly. Simplified risk model (documented, not IBKR's):
``MaintMarginReq = 25% x GrossPositionValue + 5% x |futures notional|``, ``InitMarginReq = 30% / 6%``,
``AvailableFunds = NLV - InitMarginReq``, ``ExcessLiquidity = NLV - MaintMarginReq``,
``BuyingPower = 4 x AvailableFunds`` (never below 0). Daily PnL is
``nav_d - nav_{d-1} - external_flow_d`` in base; unrealized is ``sum(position_value - cost_basis)``,
realized is the day's realized trade PnL, both converted to base.

Faults (``GatewayFaults``, settable per simulator at construction or at run time) model refused
connections, client id in use (326 then close), dropped sockets, stalls, connectivity messages
1100/1101/1102/2103/2105/2110, farm messages 2104/2106/2158 and unset PnL values.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self
from zoneinfo import ZoneInfo

from ibpipeline.world.model import Account, Instrument, Trade

if TYPE_CHECKING:
    from ibpipeline.world import World

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 157
MAX_SERVER_VERSION = 178
DEFAULT_SERVER_VERSION = 176
VERSION_ERROR_ADVANCED_REJECT = 166  # errors carry a trailing advancedOrderRejectJson from here
VERSION_EXEC_PENDING_REVISION = 178  # execDetails carries pendingPriceRevision from here
UNSET_DOUBLE = "1.7976931348623157E308"
MAX_FRAME_BYTES = 16 * 1024 * 1024
NO_REQ_ID = -1
EASTERN = ZoneInfo("America/New_York")

INFO_MESSAGES: dict[int, str] = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2158: "Sec-def data farm connection is OK:secdefnj",
    2110: "Connectivity between Trader Workstation and server is broken. It will be restored "
    "automatically.",
}
CONNECTIVITY_CODES = frozenset({1100, 1101, 1102, 2103, 2105, 2110})
FARM_CODES = (2104, 2106, 2158)
MSG_CLIENT_ID_IN_USE = (
    "Unable to connect as the client id is already in use. Retry with a unique client id."
)
MSG_READ_ONLY = (
    "Error validating request.-'bB' : cause - The API interface is currently in Read-Only mode."
    " This IB Gateway simulator is read-only and never executes orders."
)
MSG_TOO_MANY_SUMMARIES = (
    "Error processing request.-'bd' : cause - Maximum number of account summary requests exceeded."
)
MSG_INVALID_ACCOUNT = "Error validating request.-'bM' : cause - Invalid account code"
MAX_SUMMARY_REQ_IDS = 2


# --------------------------------------------------------------------------------------------------
# Wire codec


class HandshakeError(ValueError):
    """The client's hello is not a valid TWS API ``API\\0`` + ``v<min>..<max>`` greeting."""


def encode_frame(*fields: object) -> bytes:
    """One length-prefixed message: every field as text, each terminated by NUL."""
    payload = "".join(f"{field}\0" for field in fields).encode()
    return struct.pack(">I", len(payload)) + payload


def decode_fields(payload: bytes) -> list[str]:
    """Split a frame payload into fields (the trailing NUL yields no extra field)."""
    fields = payload.decode(errors="backslashreplace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


def parse_hello(payload: bytes) -> tuple[int, int, str]:
    """Parse ``v<min>..<max>[ options]`` (or ``v<n>``) into (min, max, options)."""
    text = payload.decode(errors="replace")
    versions, _, options = text.partition(" ")
    if not versions.startswith("v"):
        raise HandshakeError(f"bad version range {versions!r}")
    low, sep, high = versions[1:].partition("..")
    try:
        lo = int(low)
        hi = int(high) if sep else lo
    except ValueError as exc:
        raise HandshakeError(f"bad version range {versions!r}") from exc
    if lo > hi:
        raise HandshakeError(f"empty version range {versions!r}")
    return lo, hi, options


def negotiate_version(client_min: int, client_max: int, configured: int) -> int | None:
    """The version to announce, or None when the client cannot speak it (then close)."""
    version = min(client_max, configured)
    return version if version >= client_min else None


def connection_time(at: datetime) -> str:
    """Connection time as real gateways send it: ``yyyymmdd HH:MM:SS <zone>`` in US/Eastern."""
    local = at.astimezone(EASTERN)
    return local.strftime("%Y%m%d %H:%M:%S ") + (local.tzname() or "EST")


# --------------------------------------------------------------------------------------------------
# Faults


@dataclass(frozen=True)
class GatewayFaults:
    """Failure modes of one simulator.

    refuse: not listening; connects get ECONNREFUSED (the port stays reserved).
    client_id_in_use: answer startApi with error 326 and close, whatever the client id.
    drop_after_messages: abort the socket after sending N messages after the handshake
        (0 = right after the handshake reply).
    stall: send the handshake reply, then never answer anything.
    one_shot: the connection faults above (326, drop, stall) hit only the next connection.
    connectivity_codes: 1100/1101/1102/2103/2105/2110 messages sent after the startup messages.
    farm_messages: send the informational 2104/2106/2158 after startup (as real gateways do).
    unset_pnl: PnL values (94, 95) are sent as UNSET_DOUBLE.
    """

    refuse: bool = False
    client_id_in_use: bool = False
    drop_after_messages: int | None = None
    stall: bool = False
    one_shot: bool = False
    connectivity_codes: tuple[int, ...] = ()
    farm_messages: bool = True
    unset_pnl: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.connectivity_codes) - CONNECTIVITY_CODES
        if unknown:
            raise ValueError(
                f"connectivity_codes must be in {sorted(CONNECTIVITY_CODES)}, got {sorted(unknown)}"
            )
        if self.drop_after_messages is not None and self.drop_after_messages < 0:
            raise ValueError("drop_after_messages must be >= 0")

    @property
    def hits_connection(self) -> bool:
        """True when a connection-level fault (326, drop, stall) is armed."""
        return self.client_id_in_use or self.stall or self.drop_after_messages is not None

    def consumed(self) -> GatewayFaults:
        """These faults after one connection used them (one-shot faults disarm)."""
        if not self.one_shot:
            return self
        return dataclasses.replace(
            self, client_id_in_use=False, stall=False, drop_after_messages=None, one_shot=False
        )


# --------------------------------------------------------------------------------------------------
# Account figures derived from the world


@dataclass(frozen=True)
class ContractFields:
    """The 11 contract fields of position/portfolio/execution messages after conId."""

    conid: int
    symbol: str
    sec_type: str
    expiry: str
    strike: str
    right: str
    multiplier: str
    exchange: str
    currency: str
    local_symbol: str
    trading_class: str

    def wire(self) -> tuple[object, ...]:
        """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency,
        localSymbol, tradingClass (the exchange slot is primaryExchange in updatePortfolio)."""
        return (
            self.conid,
            self.symbol,
            self.sec_type,
            self.expiry,
            self.strike,
            self.right,
            self.multiplier,
            self.exchange,
            self.currency,
            self.local_symbol,
            self.trading_class,
        )


@dataclass(frozen=True)
class Holding:
    """One position as the gateway reports it (local currency, prices per unit)."""

    contract: ContractFields
    quantity: Decimal
    market_price: Decimal
    market_value: Decimal
    average_cost: Decimal  # per unit for STK, per contract (multiplier included) for OPT/FUT
    unrealized_pnl: Decimal
    realized_pnl: Decimal


@dataclass(frozen=True)
class Execution:
    """One fill of the day (execDetails + commissionReport)."""

    contract: ContractFields
    exec_id: str
    time: str  # "yyyymmdd HH:MM:SS US/Eastern"
    exchange: str
    side: str  # BOT / SLD
    shares: Decimal
    price: Decimal
    perm_id: int
    commission: Decimal
    commission_currency: str
    realized_pnl: Decimal


@dataclass(frozen=True)
class AccountSnapshot:
    """Everything the gateway says about one account at one instant.

    values: account-level (key, value, currency) rows of reqAccountUpdates / summary.
    ledger: per-currency rows (key, value, currency) incl. currency ``BASE``.
    """

    account_id: str
    values: tuple[tuple[str, str, str], ...]
    ledger: tuple[tuple[str, str, str], ...]
    holdings: tuple[Holding, ...]
    daily_pnl: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    executions: tuple[Execution, ...]


CENT = Decimal("0.01")
ZERO = Decimal(0)


def fmt_money(value: Decimal) -> str:
    """Money with two decimals, never ``-0.00``."""
    q = value.quantize(CENT)
    return f"{q:.2f}" if q else "0.00"


def fmt_num(value: Decimal) -> str:
    """Exact plain decimal without exponent or trailing zeros (``100``, ``150.25``)."""
    return format(value.normalize(), "f") if value else "0"


DERIVATIVES = frozenset({"OPT", "FUT", "FOP"})


def trading_class(instrument: Instrument) -> str:
    """IB's trading class: the underlying for derivatives, ``NMS`` for Nasdaq stocks, else the
    symbol."""
    if instrument.asset_category in DERIVATIVES:
        return instrument.underlying_symbol or instrument.symbol
    if instrument.asset_category == "STK" and instrument.listing_exchange == "NASDAQ":
        return "NMS"
    return instrument.symbol


def contract_fields(instrument: Instrument) -> ContractFields:
    """Wire contract of a world instrument, IB style: derivatives carry the underlying as
    ``symbol`` and their own symbol as ``localSymbol``; a bond's ``lastTradeDate`` is its maturity."""
    derivative = instrument.asset_category in DERIVATIVES
    expiry = instrument.maturity if instrument.asset_category == "BOND" else instrument.expiry
    return ContractFields(
        conid=instrument.conid,
        symbol=(instrument.underlying_symbol or instrument.symbol)
        if derivative
        else instrument.symbol,
        sec_type=instrument.asset_category,
        expiry=expiry.strftime("%Y%m%d") if expiry else "",
        strike=fmt_num(instrument.strike) if instrument.strike is not None else "0.0",
        right=instrument.put_call[:1].upper(),
        multiplier=fmt_num(instrument.multiplier) if derivative else "",
        exchange=instrument.listing_exchange,
        currency=instrument.currency,
        local_symbol=instrument.symbol,
        trading_class=trading_class(instrument),
    )


def fx_contract(trade: Trade) -> ContractFields:
    """Contract of an FX conversion (``EUR.USD``: symbol EUR, currency USD, secType CASH)."""
    return ContractFields(
        conid=0,
        symbol=trade.symbol.partition(".")[0],
        sec_type="CASH",
        expiry="",
        strike="0.0",
        right="",
        multiplier="",
        exchange="IDEALPRO",
        currency=trade.currency,
        local_symbol=trade.symbol,
        trading_class=trade.symbol,
    )


def _ib_time(at: datetime) -> str:
    """Execution time as TWS sends it: ``yyyymmdd HH:MM:SS US/Eastern``."""
    return at.astimezone(EASTERN).strftime("%Y%m%d %H:%M:%S") + " US/Eastern"


def execution(world: World, trade: Trade) -> Execution:
    """A world trade as execDetails + commissionReport (commission positive, as TWS reports it)."""
    contract = (
        fx_contract(trade)
        if trade.conid is None
        else contract_fields(world.instruments[trade.conid])
    )
    order_id = trade.ib_order_id
    return Execution(
        contract=contract,
        exec_id=trade.ib_exec_id,
        time=_ib_time(trade.executed_at),
        exchange=trade.exchange or contract.exchange or "SMART",
        side="BOT" if trade.quantity > 0 else "SLD",
        shares=abs(trade.quantity),
        price=trade.trade_price,
        perm_id=int(order_id) if order_id.isdigit() else zlib.crc32(order_id.encode()),
        commission=-trade.commission,
        commission_currency=trade.commission_currency,
        realized_pnl=trade.realized_pnl,
    )


def _add(totals: dict[Any, Decimal], key: object, amount: Decimal) -> None:
    totals[key] = totals.get(key, ZERO) + amount


def account_snapshot(world: World, account: Account, at: datetime) -> AccountSnapshot:
    """The gateway's view of ``account`` at UTC instant ``at`` from ``world.state_at``."""
    account_id = account.account_id
    day = world.state_at(account_id, at)
    base = day.base_currency
    fx = day.fx_to_base
    realized_conid: dict[int, Decimal] = {}
    realized_ccy: dict[str, Decimal] = {}
    for trade in day.trades:
        _add(realized_ccy, trade.currency, trade.realized_pnl)
        if trade.conid is not None:
            _add(realized_conid, trade.conid, trade.realized_pnl)

    holdings = []
    unreal_ccy: dict[str, Decimal] = {}
    value_ccy: dict[str, dict[str, Decimal]] = {"STK": {}, "OPT": {}, "BOND": {}}
    gross_base = futures_base = ZERO
    for conid, pos in sorted(day.positions.items()):
        contract = contract_fields(world.instruments[conid])
        holdings.append(
            Holding(
                contract=contract,
                quantity=pos.quantity,
                market_price=pos.mark_price,
                market_value=pos.position_value,
                average_cost=(pos.cost_basis_money / pos.quantity).quantize(Decimal("1E-8")),
                unrealized_pnl=pos.unrealized_pnl,
                realized_pnl=realized_conid.get(conid, ZERO),
            )
        )
        _add(unreal_ccy, contract.currency, pos.unrealized_pnl)
        value_base = abs(pos.position_value * fx[contract.currency])
        if contract.sec_type == "FUT":
            futures_base += value_base
        else:
            gross_base += value_base
            _add(
                value_ccy.get(contract.sec_type, value_ccy["STK"]),
                contract.currency,
                pos.position_value,
            )

    def in_base(per_ccy: dict[str, Decimal]) -> Decimal:
        return sum((v * fx[c] for c, v in per_ccy.items()), ZERO)

    nav = day.nav.total_base
    maint = gross_base * Decimal("0.25") + futures_base * Decimal("0.05")
    init = gross_base * Decimal("0.30") + futures_base * Decimal("0.06")
    available, excess = nav - init, nav - maint
    m = fmt_money
    ratio = (lambda x: fmt_num((x / nav).quantize(Decimal("0.0001")))) if nav else (lambda x: "0")
    values: list[tuple[str, str, str]] = [
        ("AccountCode", account_id, ""),
        ("AccountType", account.customer_type.upper(), ""),
        ("AccountReady", "true", ""),
        ("Currency", base, base),
        ("NetLiquidation", m(nav), base),
        ("TotalCashValue", m(day.nav.cash_base), base),
        ("SettledCash", m(day.nav.cash_base), base),
        ("AccruedCash", m(day.nav.interest_accruals_base), base),
        ("EquityWithLoanValue", m(nav), base),
        ("PreviousDayEquityWithLoanValue", m(day.prev_nav_base), base),
        ("GrossPositionValue", m(gross_base), base),
        ("RegTEquity", m(nav), base),
        ("RegTMargin", m(gross_base / 2), base),
        ("SMA", m(max(nav - gross_base / 2, ZERO)), base),
        ("InitMarginReq", m(init), base),
        ("MaintMarginReq", m(maint), base),
        ("AvailableFunds", m(available), base),
        ("ExcessLiquidity", m(excess), base),
        ("BuyingPower", m(max(available * 4, ZERO)), base),
        ("FullInitMarginReq", m(init), base),
        ("FullMaintMarginReq", m(maint), base),
        ("FullAvailableFunds", m(available), base),
        ("FullExcessLiquidity", m(excess), base),
        ("LookAheadNextChange", "0", ""),
        ("LookAheadInitMarginReq", m(init), base),
        ("LookAheadMaintMarginReq", m(maint), base),
        ("LookAheadAvailableFunds", m(available), base),
        ("LookAheadExcessLiquidity", m(excess), base),
        ("Cushion", ratio(excess), ""),
        ("Leverage", ratio(gross_base), ""),
        ("HighestSeverity", "0", ""),
        ("DayTradesRemaining", "-1", ""),
        ("DayTradesRemainingT+1", "-1", ""),
        ("DayTradesRemainingT+2", "-1", ""),
        ("DayTradesRemainingT+3", "-1", ""),
        ("DayTradesRemainingT+4", "-1", ""),
        ("UnrealizedPnL", m(day.unrealized_pnl_base), base),
        ("RealizedPnL", m(day.realized_pnl_base), base),
    ]

    def ledger_rows(
        ccy: str,
        cash: Decimal,
        stk: Decimal,
        opt: Decimal,
        bond: Decimal,
        rate: str,
        unreal: Decimal,
        real: Decimal,
        accrued: Decimal = ZERO,
    ) -> list[tuple[str, str, str]]:
        return [
            ("Currency", ccy, ccy),
            ("CashBalance", m(cash), ccy),
            ("TotalCashBalance", m(cash), ccy),
            ("ExchangeRate", rate, ccy),
            ("NetLiquidationByCurrency", m(cash + stk + opt + bond + accrued), ccy),
            ("StockMarketValue", m(stk), ccy),
            ("OptionMarketValue", m(opt), ccy),
            ("CorporateBondValue", m(bond), ccy),
            ("UnrealizedPnL", m(unreal), ccy),
            ("RealizedPnL", m(real), ccy),
        ]

    stk, opt, bond = value_ccy["STK"], value_ccy["OPT"], value_ccy["BOND"]
    ledger: list[tuple[str, str, str]] = []
    for ccy in sorted(set(day.cash) | set(unreal_ccy) | set(stk) | set(opt) | set(bond)):
        ledger += ledger_rows(
            ccy,
            day.cash.get(ccy, ZERO),
            stk.get(ccy, ZERO),
            opt.get(ccy, ZERO),
            bond.get(ccy, ZERO),
            fmt_num(fx[ccy]),
            unreal_ccy.get(ccy, ZERO),
            realized_ccy.get(ccy, ZERO),
            day.interest_accrued.get(ccy, ZERO),
        )
    ledger += ledger_rows(
        "BASE",
        day.nav.cash_base,
        in_base(stk),
        in_base(opt),
        in_base(bond),
        "1.00",
        day.unrealized_pnl_base,
        day.realized_pnl_base,
        day.nav.interest_accruals_base,
    )
    return AccountSnapshot(
        account_id=account_id,
        values=tuple(values),
        ledger=tuple(ledger),
        holdings=tuple(holdings),
        daily_pnl=day.daily_pnl_base.quantize(CENT),
        unrealized_pnl=day.unrealized_pnl_base.quantize(CENT),
        realized_pnl=day.realized_pnl_base.quantize(CENT),
        executions=tuple(execution(world, t) for t in day.trades),
    )


def position_message(account_id: str, h: Holding) -> tuple[object, ...]:
    """61 position: exactly 16 fields (exchange slot = exchange)."""
    return (61, 3, account_id, *h.contract.wire(), fmt_num(h.quantity), fmt_num(h.average_cost))


def position_multi_message(
    req_id: str, account_id: str, h: Holding, model_code: str
) -> tuple[object, ...]:
    """71 positionMulti: exactly 18 fields."""
    return (
        71,
        1,
        req_id,
        account_id,
        *h.contract.wire(),
        fmt_num(h.quantity),
        fmt_num(h.average_cost),
        model_code,
    )


def portfolio_message(account_id: str, h: Holding) -> tuple[object, ...]:
    """7 updatePortfolio: exactly 20 fields, numbers never empty (exchange slot =
    primaryExchange)."""
    return (
        7,
        8,
        *h.contract.wire(),
        fmt_num(h.quantity),
        fmt_num(h.market_price),
        fmt_num(h.market_value),
        fmt_num(h.average_cost),
        fmt_num(h.unrealized_pnl),
        fmt_num(h.realized_pnl),
        account_id,
    )


def execution_messages(
    req_id: str, account_id: str, e: Execution, version: int
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """11 execDetails (no version field; 31 fields, 32 from server version 178: orderId 0 as for
    manual orders) and 59 commissionReport (exactly 8 fields)."""
    shares, price = fmt_num(e.shares), fmt_num(e.price)
    details: tuple[object, ...] = (
        11,
        req_id,
        0,
        *e.contract.wire(),
        e.exec_id,
        e.time,
        account_id,
        e.exchange,
        e.side,
        shares,
        price,
        e.perm_id,
        0,
        0,
        shares,
        price,
        "",
        "",
        "",
        "",
        0,
    )
    if version >= VERSION_EXEC_PENDING_REVISION:
        details += (0,)
    report = (
        59,
        1,
        e.exec_id,
        fmt_num(e.commission),
        e.commission_currency,
        fmt_num(e.realized_pnl),
        "",
        "",
    )
    return details, report


def summary_rows(snapshot: AccountSnapshot, tags: Sequence[str]) -> list[tuple[str, str, str]]:
    """(tag, value, currency) rows answering reqAccountSummary's tag list for one account.

    ``$LEDGER`` adds the BASE ledger rows, ``$LEDGER:ALL`` every currency and BASE,
    ``$LEDGER:<CCY>`` that currency's rows. Unknown tags are ignored (as TWS does).
    """
    wanted = [t.strip() for t in tags if t.strip()]
    rows = [row for row in snapshot.values if row[0] in wanted and row[0] != "Currency"]
    for tag in wanted:
        if not tag.startswith("$LEDGER"):
            continue
        _, _, which = tag.partition(":")
        which = which.upper() or "BASE"
        rows += [r for r in snapshot.ledger if which == "ALL" or r[2] == which]
    return rows


# --------------------------------------------------------------------------------------------------
# Server


class _Closed(Exception):
    """The session ended (EOF, fault or protocol violation)."""


Clock = Callable[[], datetime]


def _make_clock(clock: Clock | datetime | None) -> Clock:
    if clock is None:
        return lambda: datetime.now(UTC)
    if isinstance(clock, datetime):
        if clock.tzinfo is None:
            raise ValueError("the simulator clock must be timezone-aware (UTC)")
        fixed = clock.astimezone(UTC)
        return lambda: fixed
    return clock


class GatewaySimulator:
    """An asyncio TCP server speaking the TWS API for a set of world accounts (one login).

    ``account_ids`` default to every world account (an advisor login); a subset models one gateway.
    ``clock`` is a fixed aware datetime or a callable returning one (default: now, UTC).
    ``pnl_interval`` is the period in seconds of the PnL (94/95) stream after the first message.
    """

    def __init__(
        self,
        world: World,
        *,
        account_ids: Sequence[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        server_version: int = DEFAULT_SERVER_VERSION,
        clock: Clock | datetime | None = None,
        faults: GatewayFaults | None = None,
        pnl_interval: float = 1.0,
    ) -> None:
        if not MIN_SERVER_VERSION <= server_version <= MAX_SERVER_VERSION:
            raise ValueError(
                f"server_version must be in {MIN_SERVER_VERSION}..{MAX_SERVER_VERSION},"
                f" got {server_version}"
            )
        by_id = {a.account_id: a for a in world.accounts}
        ids = list(account_ids) if account_ids is not None else list(by_id)
        unknown = [a for a in ids if a not in by_id]
        if unknown:
            raise ValueError(f"accounts not in the world: {', '.join(unknown)}")
        if not ids:
            raise ValueError("a gateway login needs at least one account")
        self.world = world
        self.accounts = tuple(by_id[a] for a in ids)
        self.account_ids = tuple(ids)
        self.host = host
        self.server_version = server_version
        self.clock = _make_clock(clock)
        self.pnl_interval = pnl_interval
        self._requested_port = port
        self._faults = faults or GatewayFaults()
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._client_ids: set[int] = set()
        self._snapshots: dict[tuple[str, datetime], AccountSnapshot] = {}
        self.port = 0
        self.connections = 0

    # lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Compute every account's snapshot once (warms the world), bind the port and, unless
        refusing, start listening."""
        for account_id in self.account_ids:
            self.snapshot(account_id)
        self._sock = self._bind(self._requested_port)
        self.port = self._sock.getsockname()[1]
        if not self._faults.refuse:
            await self._listen()
        return self

    async def stop(self) -> None:
        """Stop listening, close every client connection and release the port."""
        if self._server is not None:
            self._server.close()
            self._server = None
        elif self._sock is not None:
            self._sock.close()
        self._sock = None
        for session in list(self._sessions):
            session.abort()
        tasks = [s.task for s in self._sessions if s.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        sock.setblocking(False)
        return sock

    async def _listen(self) -> None:
        if self._sock is None:
            self._sock = self._bind(self.port)
        self._server = await asyncio.start_server(self._on_connect, sock=self._sock)

    @property
    def active_clients(self) -> int:
        """Client connections currently open."""
        return len(self._sessions)

    # faults ---------------------------------------------------------------------------------------

    @property
    def faults(self) -> GatewayFaults:
        """The faults in force."""
        return self._faults

    async def set_faults(self, faults: GatewayFaults) -> None:
        """Change faults at run time; toggling ``refuse`` stops or resumes listening (same port)."""
        self._faults = faults
        if faults.refuse and self._server is not None:
            self._server.close()
            self._server = None
            self._sock = self._bind(self.port)
        elif not faults.refuse and self._server is None and self.port:
            await self._listen()

    async def notify(self, code: int, message: str | None = None) -> None:
        """Send informational error ``code`` (e.g. 1100/1101/1102/2104) to every ready client."""
        text = message or INFO_MESSAGES.get(code, f"Simulated message {code}")
        for session in list(self._sessions):
            if session.ready:
                with contextlib.suppress(_Closed, ConnectionError):
                    session.error(NO_REQ_ID, code, text)
                    await session.flush()

    # data -----------------------------------------------------------------------------------------

    def snapshot(self, account_id: str) -> AccountSnapshot:
        """The account as seen now by the simulator's clock (cached per instant)."""
        at = self.clock()
        key = (account_id, at)
        cached = self._snapshots.get(key)
        if cached is None:
            if len(self._snapshots) > 4 * len(self.accounts):
                self._snapshots.clear()
            account = next(a for a in self.accounts if a.account_id == account_id)
            cached = self._snapshots[key] = account_snapshot(self.world, account, at)
        return cached

    # connections ----------------------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        faults = self._faults
        if faults.hits_connection:
            self._faults = faults.consumed()
        session = _Session(self, reader, writer, faults)
        session.task = asyncio.current_task()
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            session.release()

    def claim_client_id(self, client_id: int) -> bool:
        """Reserve ``client_id`` for a session; False when a live session holds it."""
        if client_id in self._client_ids:
            return False
        self._client_ids.add(client_id)
        return True

    def release_client_id(self, client_id: int) -> None:
        """Free ``client_id`` when its session ends."""
        self._client_ids.discard(client_id)


class _Session:
    """One client connection: handshake, startApi, request dispatch, PnL stream."""

    def __init__(
        self,
        sim: GatewaySimulator,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        faults: GatewayFaults,
    ) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.faults = faults
        self.version = 0
        self.client_id: int | None = None
        self.ready = False
        self.sent = 0
        self.task: asyncio.Task[Any] | None = None
        self.summary_req_ids: set[int] = set()
        self.pnl_subs: dict[int, str] = {}
        self.pnl_single_subs: dict[int, tuple[str, int]] = {}
        self._pusher: asyncio.Task[None] | None = None
        self.handlers: dict[int, Callable[[list[str]], None]] = {
            3: self._place_order,
            5: self._open_orders,
            6: self._account_updates,
            7: self._executions,
            8: self._req_ids,
            15: self._ignore,  # reqAutoOpenOrders
            16: self._open_orders,
            17: self._managed_accounts,
            49: self._current_time,
            61: self._positions,
            62: self._account_summary,
            63: self._ignore,  # cancelAccountSummary (frees no reqId slot)
            64: self._ignore,  # cancelPositions
            74: self._positions_multi,
            75: self._ignore,  # cancelPositionsMulti
            76: self._account_updates_multi,
            77: self._ignore,  # cancelAccountUpdatesMulti
            92: self._pnl,
            93: self._cancel_pnl,
            94: self._pnl_single,
            95: self._cancel_pnl_single,
            99: self._completed_orders,
        }

    # plumbing -------------------------------------------------------------------------------------

    def abort(self) -> None:
        """Drop the socket at once (no FIN handshake)."""
        self.writer.transport.abort()

    def release(self) -> None:
        """Free the client id and stop streams (on EOF, error or server stop)."""
        if self._pusher is not None:
            self._pusher.cancel()
        if self.client_id is not None:
            self.sim.release_client_id(self.client_id)
        if not self.writer.is_closing():
            self.writer.close()

    async def read_payload(self) -> bytes:
        try:
            header = await self.reader.readexactly(4)
            (size,) = struct.unpack(">I", header)
            if size > MAX_FRAME_BYTES:
                raise _Closed(f"frame of {size} bytes")
            return await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise _Closed("peer closed") from exc

    def send(self, *fields: object) -> None:
        """Queue one message; applies the drop-after-N fault."""
        limit = self.faults.drop_after_messages
        if limit is not None and self.sent >= limit:
            self.abort()
            raise _Closed(f"fault: dropped after {limit} messages")
        if self.writer.is_closing():
            raise _Closed("socket closed")
        self.writer.write(encode_frame(*fields))
        self.sent += 1

    async def flush(self) -> None:
        try:
            await self.writer.drain()
        except ConnectionError as exc:
            raise _Closed("peer reset") from exc

    def error(self, req_id: int, code: int, message: str) -> None:
        """Queue an error/info message in the layout of the negotiated version."""
        if self.version >= VERSION_ERROR_ADVANCED_REJECT:
            self.send(4, 2, req_id, code, message, "")
        else:
            self.send(4, 2, req_id, code, message)

    # lifecycle ------------------------------------------------------------------------------------

    async def run(self) -> None:
        peer = self.writer.get_extra_info("peername")
        try:
            if not await self._handshake():
                return
            if self.faults.drop_after_messages == 0:
                await self.flush()
                self.abort()
                return
            while True:
                fields = decode_fields(await self.read_payload())
                if not fields:
                    continue
                if self.faults.stall:
                    continue
                self._dispatch(fields)
                await self.flush()
        except _Closed as exc:
            log.debug("gateway sim %s: session %s ended: %s", self.sim.port, peer, exc)
        except asyncio.CancelledError:
            pass

    async def _handshake(self) -> bool:
        try:
            magic = await self.reader.readexactly(4)
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        if magic != b"API\0":
            log.warning("gateway sim: not a TWS API client (%r); closing", magic)
            return False
        try:
            lo, hi, options = parse_hello(await self.read_payload())
        except HandshakeError as exc:
            log.warning("gateway sim: %s; closing", exc)
            return False
        version = negotiate_version(lo, hi, self.sim.server_version)
        if version is None:
            log.info(
                "gateway sim: client needs v%d..%d, we speak <= %d; closing",
                lo,
                hi,
                self.sim.server_version,
            )
            return False
        self.version = version
        self.writer.write(encode_frame(version, connection_time(self.sim.clock())))
        await self.flush()
        return True

    def _dispatch(self, fields: list[str]) -> None:
        try:
            msg_id = int(fields[0])
        except ValueError:
            log.warning("gateway sim: bad message id %r; ignored", fields[0])
            return
        if not self.ready:
            if msg_id == 71:
                self._start_api(fields)
            else:
                log.info("gateway sim: message %d before startApi; ignored", msg_id)
            return
        handler = self.handlers.get(msg_id)
        if handler is None:
            log.info("gateway sim: unsupported message %s; ignored", ",".join(fields))
            return
        try:
            handler(fields)
        except (IndexError, ValueError) as exc:
            log.warning("gateway sim: malformed message %s (%s); ignored", ",".join(fields), exc)

    def _start_api(self, fields: list[str]) -> None:
        client_id = int(fields[2])
        if self.faults.client_id_in_use or not self.sim.claim_client_id(client_id):
            self.error(NO_REQ_ID, 326, MSG_CLIENT_ID_IN_USE)
            self.writer.close()
            raise _Closed(f"client id {client_id} in use")
        self.client_id = client_id
        self.ready = True
        self.send(15, 1, ",".join(self.sim.account_ids))
        self.send(9, 1, 1)
        if self.faults.farm_messages:
            for code in FARM_CODES:
                self.error(NO_REQ_ID, code, INFO_MESSAGES[code])
        for code in self.faults.connectivity_codes:
            self.error(NO_REQ_ID, code, INFO_MESSAGES[code])

    # helpers --------------------------------------------------------------------------------------

    def _accounts_for(self, account: str, req_id: int) -> list[str] | None:
        """Accounts selected by an account field ("" or "All" = every managed account)."""
        if account in ("", "All") and (account == "All" or len(self.sim.account_ids) == 1):
            return list(self.sim.account_ids)
        if account in self.sim.account_ids:
            return [account]
        self.error(req_id, 321, f"{MSG_INVALID_ACCOUNT} '{account}'")
        return None

    # handlers -------------------------------------------------------------------------------------

    def _ignore(self, fields: list[str]) -> None:
        pass

    def _place_order(self, fields: list[str]) -> None:
        self.error(int(fields[1] or NO_REQ_ID), 321, MSG_READ_ONLY)

    def _open_orders(self, fields: list[str]) -> None:
        self.send(53, 1)

    def _completed_orders(self, fields: list[str]) -> None:
        self.send(102)

    def _req_ids(self, fields: list[str]) -> None:
        self.send(9, 1, 1)

    def _managed_accounts(self, fields: list[str]) -> None:
        self.send(15, 1, ",".join(self.sim.account_ids))

    def _current_time(self, fields: list[str]) -> None:
        self.send(49, 1, int(self.sim.clock().timestamp()))

    def _positions(self, fields: list[str]) -> None:
        for account_id in self.sim.account_ids:
            for h in self.sim.snapshot(account_id).holdings:
                self.send(*position_message(account_id, h))
        self.send(62, 1)

    def _positions_multi(self, fields: list[str]) -> None:
        _, _, req_id, account, model_code = fields[:5]
        for account_id in self._accounts_for(account, int(req_id)) or ():
            for h in self.sim.snapshot(account_id).holdings:
                self.send(*position_multi_message(req_id, account_id, h, model_code))
        self.send(72, 1, req_id)

    def _account_updates(self, fields: list[str]) -> None:
        """Subscribe: the account's values, portfolio, time and end (a client has one account
        subscription; a new one replaces it). Unsubscribing needs no answer."""
        _, _, subscribe, account = fields[:4]
        if subscribe != "1":
            return
        accounts = self._accounts_for(account, NO_REQ_ID)
        if not accounts or len(accounts) != 1:
            return
        account_id = accounts[0]
        snap = self.sim.snapshot(account_id)
        for key, value, currency in snap.values + snap.ledger:
            self.send(6, 2, key, value, currency, account_id)
        for h in snap.holdings:
            self.send(*portfolio_message(account_id, h))
        self.send(8, 1, self.sim.clock().astimezone(EASTERN).strftime("%H:%M"))
        self.send(54, 1, account_id)

    def _account_updates_multi(self, fields: list[str]) -> None:
        _, _, req_id, account, model_code, ledger_and_nlv = fields[:6]
        accounts = self._accounts_for(account, int(req_id))
        for account_id in accounts or ():
            snap = self.sim.snapshot(account_id)
            rows = snap.values + snap.ledger
            if ledger_and_nlv == "1":
                rows = tuple(r for r in snap.values if r[0] == "NetLiquidation") + snap.ledger
            for key, value, currency in rows:
                self.send(73, 1, req_id, account_id, model_code, key, value, currency)
        self.send(74, 1, req_id)

    def _account_summary(self, fields: list[str]) -> None:
        _, _, req_id_text, _group, tags = fields[:5]
        req_id = int(req_id_text)
        if req_id not in self.summary_req_ids:
            if len(self.summary_req_ids) >= MAX_SUMMARY_REQ_IDS:
                self.error(req_id, 322, MSG_TOO_MANY_SUMMARIES)
                return
            self.summary_req_ids.add(req_id)
        tag_list = tags.split(",")
        for account_id in self.sim.account_ids:
            for tag, value, currency in summary_rows(self.sim.snapshot(account_id), tag_list):
                self.send(63, 1, req_id, account_id, tag, value, currency)
        self.send(64, 1, req_id)

    def _executions(self, fields: list[str]) -> None:
        _, _, req_id, _client, account, _time, symbol, sec_type, _exchange, side = (
            fields + [""] * 10
        )[:10]
        accounts = (
            list(self.sim.account_ids) if not account else self._accounts_for(account, int(req_id))
        )
        for account_id in accounts or ():
            for e in self.sim.snapshot(account_id).executions:
                c = e.contract
                if (symbol and symbol != c.symbol) or (sec_type and sec_type != c.sec_type):
                    continue
                if side and side.upper() not in (e.side, {"BOT": "BUY", "SLD": "SELL"}[e.side]):
                    continue
                for message in execution_messages(req_id, account_id, e, self.version):
                    self.send(*message)
        self.send(55, 1, req_id)

    def _one_account(self, account: str, req_id: int) -> bool:
        """True when ``account`` is managed; otherwise queue error 321 (invalid account)."""
        if account in self.sim.account_ids:
            return True
        self.error(req_id, 321, f"{MSG_INVALID_ACCOUNT} '{account}'")
        return False

    def _pnl(self, fields: list[str]) -> None:
        _, req_id, account = fields[:3]
        if not self._one_account(account, int(req_id)):
            return
        self.pnl_subs[int(req_id)] = account
        self._send_pnl(int(req_id), account)
        self._ensure_pusher()

    def _cancel_pnl(self, fields: list[str]) -> None:
        self.pnl_subs.pop(int(fields[1]), None)

    def _pnl_single(self, fields: list[str]) -> None:
        _, req_id, account, _model, conid = fields[:5]
        if not self._one_account(account, int(req_id)):
            return
        self.pnl_single_subs[int(req_id)] = (account, int(conid))
        self._send_pnl_single(int(req_id), account, int(conid))
        self._ensure_pusher()

    def _cancel_pnl_single(self, fields: list[str]) -> None:
        self.pnl_single_subs.pop(int(fields[1]), None)

    # PnL stream -----------------------------------------------------------------------------------

    def _send_pnl(self, req_id: int, account_id: str) -> None:
        if self.faults.unset_pnl:
            self.send(94, req_id, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE)
            return
        snap = self.sim.snapshot(account_id)
        self.send(
            94,
            req_id,
            fmt_num(snap.daily_pnl),
            fmt_num(snap.unrealized_pnl),
            fmt_num(snap.realized_pnl),
        )

    def _send_pnl_single(self, req_id: int, account_id: str, conid: int) -> None:
        snap = self.sim.snapshot(account_id)
        holding = next((h for h in snap.holdings if h.contract.conid == conid), None)
        if holding is None or self.faults.unset_pnl:
            qty = fmt_num(holding.quantity) if holding else "0"
            self.send(95, req_id, qty, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE)
            return
        self.send(
            95,
            req_id,
            fmt_num(holding.quantity),
            UNSET_DOUBLE,
            fmt_num(holding.unrealized_pnl),
            fmt_num(holding.realized_pnl),
            fmt_num(holding.market_value),
        )

    def _ensure_pusher(self) -> None:
        if self._pusher is None:
            self._pusher = asyncio.create_task(self._push_pnl())

    async def _push_pnl(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.sim.pnl_interval)
                for req_id, account_id in list(self.pnl_subs.items()):
                    self._send_pnl(req_id, account_id)
                for req_id, (account_id, conid) in list(self.pnl_single_subs.items()):
                    self._send_pnl_single(req_id, account_id, conid)
                await self.flush()
        except _Closed:
            self.abort()


# --------------------------------------------------------------------------------------------------
# Running from sync code and from the CLI


class GatewaySimulatorThread:
    """Runs a GatewaySimulator on its own event loop in a daemon thread (for blocking clients).

    Same keyword arguments as GatewaySimulator. Use as a context manager or call start()/stop().
    """

    def __init__(self, world: World, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="gateway-sim"
        )
        self.simulator = GatewaySimulator(world, **kwargs)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self.simulator.port

    @property
    def host(self) -> str:
        return self.simulator.host

    def _call(self, coro: Any, timeout: float | None = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> Self:
        """Start the loop thread and the simulator (no timeout: warming a big world takes time)."""
        self._thread.start()
        self._call(self.simulator.start(), timeout=None)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self.simulator.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def set_faults(self, faults: GatewayFaults) -> None:
        """Thread-safe GatewaySimulator.set_faults."""
        self._call(self.simulator.set_faults(faults))

    def notify(self, code: int, message: str | None = None) -> None:
        """Thread-safe GatewaySimulator.notify."""
        self._call(self.simulator.notify(code, message))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_gateway_simulator(
    host: str = "127.0.0.1",
    port: int = 4002,
    seed: int = 7,
    accounts: int = 4,
    inception: date = date(2024, 1, 2),
    as_of: datetime | None = None,
    server_version: int = DEFAULT_SERVER_VERSION,
    life_events: bool = False,
) -> None:
    """Serve a fresh World(seed, accounts, inception) until interrupted (``ibpipeline sim gateway``).

    ``as_of`` freezes the clock (aware datetime); None follows the wall clock; ``life_events``
    is the World's ``position_events``.
    """
    from ibpipeline.world import World

    world = World(seed=seed, n_accounts=accounts, inception=inception, position_events=life_events)

    async def serve() -> None:
        async with GatewaySimulator(
            world, host=host, port=port, server_version=server_version, clock=as_of
        ) as sim:
            stop = asyncio.Event()
            # SIGINT and SIGTERM stop it, also when started with SIGINT ignored (background job);
            # installed before the "listening" line, which tells callers it is ready
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            print(
                f"IB Gateway simulator listening on {host}:{sim.port}"
                f" ({len(sim.account_ids)} accounts)",
                flush=True,
            )
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
