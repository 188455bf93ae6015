"""Read-only account snapshots from one or more IB Gateways with unmodified ``ib_async``.

``collect_snapshots`` connects to every gateway concurrently on one event loop
(``IB().connectAsync(..., readonly=True)``) and, for every managed account, reads account values
and portfolio (``reqAccountUpdates``, one account after the other: the client keeps one
subscription), the account summary (one request for all accounts), positions and PnL
(``reqPnL``; waits until every account's first PnL message arrived or ``pnl_timeout``).

Failures: each gateway gets ``retries`` more attempts after the first, sleeping
``backoff * 2**attempt`` seconds in between; every attempt is bounded by ``timeout`` per step.
Some gateways failing gives a partial result (``CollectionResult.gateways`` lists each error);
all failing raises ``GatewayCollectionError`` naming every gateway and its error. Connections are
always closed. Nothing is ever written to a gateway except read requests.

Connectivity: the codes 1100/1101/1102/2103/2105/2110 a gateway sends during the attempt that
succeeded are kept (``GatewayOutcome.connectivity_codes``, in the raw ``gateway`` record); data
read while the gateway had lost its link to IB (1100, 2110) or after it lost data (1101) is not
trustworthy (``GatewayOutcome.trustworthy``, the tables' ``trustworthy`` column).

``list_managed_accounts`` only connects (same read-only handshake) and returns each gateway's
managed account ids, for account discovery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from ib_async import IB, AccountValue, PnL, PortfolioItem, Position
from ib_async.ib import StartupFetchNONE

from ibpipeline.gateway.schema import (
    ACCOUNT_VALUES_SCHEMA,
    PNL_SCHEMA,
    POSITIONS_SCHEMA,
    float_to_decimal,
    report_date,
    text_to_decimal,
)

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = 17
CLIENT_ID_IN_USE = 326
CONNECTIVITY_CODES = frozenset({1100, 1101, 1102, 2103, 2105, 2110})
UNTRUSTWORTHY_CODES = frozenset({1100, 1101, 2110})
"""Connectivity lost (1100 IB-TWS, 2110 TWS-server) or restored with data lost (1101). 1102
(restored, data maintained) and the farm codes 2103/2105 (market data / historical data farms,
which a snapshot does not use) are recorded only."""


def is_trustworthy(codes: Collection[int]) -> bool:
    """False when any connectivity code seen during a snapshot means its data may be stale."""
    return not UNTRUSTWORTHY_CODES.intersection(codes)


class GatewayConfigError(ValueError):
    """An ``IB_GATEWAYS`` value that is not a comma-separated list of ``host:port``."""


@dataclass(frozen=True, order=True)
class GatewayAddress:
    """Where one IB Gateway listens for API clients."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _parse_address(item: str) -> GatewayAddress:
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None
        if not sep or port_text is None:
            raise GatewayConfigError(f"gateway {item!r} must look like [ipv6]:port")
    else:
        host, sep, port_text = item.rpartition(":")
        if not sep or ":" in host:
            raise GatewayConfigError(f"gateway {item!r} must look like host:port")
    if not host:
        raise GatewayConfigError(f"gateway {item!r} has no host")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise GatewayConfigError(f"gateway {item!r} has an invalid port {port_text!r} (1-65535)")
    return GatewayAddress(host, int(port_text))


def parse_gateways(text: str) -> list[GatewayAddress]:
    """Parse ``IB_GATEWAYS`` (``host:port[,host:port...]``; IPv6 as ``[::1]:4002``).

    Raises GatewayConfigError for an empty list, a malformed entry, a bad port or a duplicate.
    """
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise GatewayConfigError("IB_GATEWAYS is empty: expected host:port[,host:port...]")
    if not all(items):
        raise GatewayConfigError(f"IB_GATEWAYS has an empty entry: {text!r}")
    addresses = [_parse_address(item) for item in items]
    seen: set[GatewayAddress] = set()
    for address in addresses:
        if address in seen:
            raise GatewayConfigError(f"gateway {address} is listed twice")
        seen.add(address)
    return addresses


@dataclass(frozen=True)
class GatewayOutcome:
    """How collecting from one gateway went (``error`` is the last attempt's, None when ok).

    ``connectivity_codes``: codes of ``CONNECTIVITY_CODES`` received during the successful attempt,
    in arrival order; ``trustworthy`` is ``is_trustworthy`` of them.
    """

    address: str
    ok: bool
    error: str | None
    accounts: tuple[str, ...]
    attempts: int
    connectivity_codes: tuple[int, ...] = ()
    trustworthy: bool = True


class GatewayCollectionError(RuntimeError):
    """Every gateway failed; ``outcomes`` holds each gateway's error."""

    def __init__(self, outcomes: Sequence[GatewayOutcome]) -> None:
        self.outcomes = tuple(outcomes)
        detail = "; ".join(
            f"{o.address}: {o.error} (after {o.attempts} attempts)" for o in self.outcomes
        )
        super().__init__(f"no IB Gateway could be read: {detail}")


@dataclass(frozen=True)
class CollectionResult:
    """One snapshot across gateways: Arrow tables (schemas in ``gateway.schema``) + raw records."""

    snapshot_id: str
    captured_at: datetime
    gateways: tuple[GatewayOutcome, ...]
    account_values: pa.Table
    positions: pa.Table
    pnl: pa.Table
    records: tuple[dict[str, Any], ...] = field(repr=False)

    @property
    def accounts(self) -> tuple[str, ...]:
        """Every account read, in gateway order."""
        return tuple(a for g in self.gateways if g.ok for a in g.accounts)

    def tables(self) -> dict[str, pa.Table]:
        """The three tables by their normalized names."""
        return {
            "gateway_account_values": self.account_values,
            "gateway_positions": self.positions,
            "gateway_pnl": self.pnl,
        }


@dataclass
class _GatewayData:
    accounts: list[str]
    account_values: list[AccountValue]
    summary: list[AccountValue]
    portfolio: list[PortfolioItem]
    positions: list[Position]
    pnl: dict[str, tuple[float, float, float]]  # account -> (daily, unrealized, realized), base
    connectivity_codes: list[int] = field(default_factory=list)


class _GatewayError(Exception):
    """One attempt at one gateway failed (message is what the operator needs)."""


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, _GatewayError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g}s waiting for the gateway"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the API port open?)"
    if isinstance(exc, ConnectionError):
        return f"connection lost: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _connect(ib: IB, address: GatewayAddress, client_id: int, timeout: float) -> None:
    """connectAsync, failing fast when the gateway closes the socket before the API is ready."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[str] = loop.create_future()
    codes: list[int] = []

    def on_api_error(msg: str) -> None:
        if not closed.done():
            closed.set_result(msg)

    def on_error(req_id: int, code: int, msg: str, contract: Any) -> None:
        codes.append(code)

    ib.client.apiError += on_api_error
    ib.errorEvent += on_error
    connect = asyncio.ensure_future(
        ib.connectAsync(
            address.host,
            address.port,
            clientId=client_id,
            timeout=timeout,
            readonly=True,
            raiseSyncErrors=True,
            fetchFields=StartupFetchNONE,
        )
    )
    try:
        await asyncio.wait({connect, closed}, return_when=asyncio.FIRST_COMPLETED)
        if not connect.done():
            connect.cancel()
            await asyncio.gather(connect, return_exceptions=True)
        if CLIENT_ID_IN_USE in codes:
            raise _GatewayError(f"client id {client_id} is already in use (error 326)")
        if not connect.done() or connect.cancelled():
            raise _GatewayError(f"connection lost while connecting: {closed.result()}")
        connect.result()
    finally:
        ib.client.apiError -= on_api_error
        ib.errorEvent -= on_error


async def _wait_pnl(ib: IB, pnls: dict[str, PnL], timeout: float) -> None:
    """Wait until every PnL subscription got a message, the socket closes, or ``timeout``."""
    pending = {p.account for p in pnls.values() if math.isnan(p.dailyPnL)}
    done = asyncio.Event()

    def on_pnl(pnl: PnL) -> None:
        pending.discard(pnl.account)
        if not pending:
            done.set()

    ib.pnlEvent += on_pnl
    ib.disconnectedEvent += done.set
    try:
        if pending:
            await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        log.warning("no PnL within %gs for %s", timeout, ", ".join(sorted(pending)))
    finally:
        ib.pnlEvent -= on_pnl
        ib.disconnectedEvent -= done.set


async def _read_gateway(
    address: GatewayAddress,
    client_id: int,
    timeout: float,
    pnl_timeout: float,
    accept: Callable[[str], bool],
) -> _GatewayData:
    """One attempt: connect, read every accepted account, disconnect."""
    ib = IB()
    codes: list[int] = []

    def on_error(req_id: int, code: int, msg: str, contract: Any) -> None:
        if code in CONNECTIVITY_CODES:
            log.warning("gateway %s: connectivity message %d: %s", address, code, msg)
            codes.append(code)

    ib.errorEvent += on_error
    try:
        await _connect(ib, address, client_id, timeout)
        accounts = [a for a in ib.managedAccounts() if accept(a)]
        pnls: dict[str, PnL] = {}
        for account in accounts:  # PnL subscriptions overlap the account downloads
            pnls[account] = ib.reqPnL(account)
            await asyncio.wait_for(ib.reqAccountUpdatesAsync(account), timeout)
        summary = await asyncio.wait_for(ib.accountSummaryAsync(), timeout) if accounts else []
        await _wait_pnl(ib, pnls, pnl_timeout)
        if not ib.isConnected():
            raise _GatewayError("connection lost during the PnL wait")
        wanted = set(accounts)
        return _GatewayData(
            accounts=accounts,
            account_values=[v for v in ib.accountValues() if v.account in wanted],
            summary=[v for v in summary if v.account in wanted],
            portfolio=[p for a in accounts for p in ib.portfolio(a)],
            positions=[p for p in ib.positions() if p.account in wanted],
            pnl={a: (p.dailyPnL, p.unrealizedPnL, p.realizedPnL) for a, p in pnls.items()},
            connectivity_codes=codes,
        )
    finally:
        ib.disconnect()
        ib.errorEvent -= on_error


async def _collect_gateway(
    address: GatewayAddress,
    *,
    client_id: int,
    timeout: float,
    retries: int,
    backoff: float,
    pnl_timeout: float,
    accept: Callable[[str], bool],
) -> tuple[GatewayOutcome, _GatewayData | None]:
    error = ""
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
        try:
            data = await _read_gateway(address, client_id, timeout, pnl_timeout, accept)
        except (OSError, TimeoutError, ConnectionError, _GatewayError) as exc:
            error = _describe(exc, timeout)
            log.warning(
                "gateway %s attempt %d/%d failed: %s", address, attempt + 1, retries + 1, error
            )
            continue
        codes = tuple(data.connectivity_codes)
        outcome = GatewayOutcome(
            str(address),
            True,
            None,
            tuple(data.accounts),
            attempt + 1,
            codes,
            is_trustworthy(codes),
        )
        return outcome, data
    return GatewayOutcome(str(address), False, error, (), retries + 1), None


def _contract_record(contract: Any) -> dict[str, Any]:
    return {
        "conId": contract.conId,
        "symbol": contract.symbol,
        "secType": contract.secType,
        "lastTradeDateOrContractMonth": contract.lastTradeDateOrContractMonth,
        "strike": contract.strike,
        "right": contract.right,
        "multiplier": contract.multiplier,
        "exchange": contract.exchange,
        "primaryExchange": contract.primaryExchange,
        "currency": contract.currency,
        "localSymbol": contract.localSymbol,
        "tradingClass": contract.tradingClass,
    }


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _raw_records(gateway: str, data: _GatewayData) -> list[dict[str, Any]]:
    """Message-level items as JSON-ready dicts (kind + gateway + account + fields)."""
    out: list[dict[str, Any]] = []
    for kind, values in (("account_value", data.account_values), ("account_summary", data.summary)):
        out += [
            {
                "kind": kind,
                "gateway": gateway,
                "account": v.account,
                "key": v.tag,
                "value": v.value,
                "currency": v.currency,
                "model_code": v.modelCode,
            }
            for v in values
        ]
    for p in data.portfolio:
        out.append(
            {
                "kind": "portfolio",
                "gateway": gateway,
                "account": p.account,
                "contract": _contract_record(p.contract),
                "position": _json_float(p.position),
                "market_price": _json_float(p.marketPrice),
                "market_value": _json_float(p.marketValue),
                "average_cost": _json_float(p.averageCost),
                "unrealized_pnl": _json_float(p.unrealizedPNL),
                "realized_pnl": _json_float(p.realizedPNL),
            }
        )
    for p in data.positions:
        out.append(
            {
                "kind": "position",
                "gateway": gateway,
                "account": p.account,
                "contract": _contract_record(p.contract),
                "position": _json_float(p.position),
                "avg_cost": _json_float(p.avgCost),
            }
        )
    for account, (daily, unrealized, realized) in data.pnl.items():
        out.append(
            {
                "kind": "pnl",
                "gateway": gateway,
                "account": account,
                "daily_pnl": _json_float(daily),
                "unrealized_pnl": _json_float(unrealized),
                "realized_pnl": _json_float(realized),
            }
        )
    return out


def _position_rows(data: _GatewayData) -> list[dict[str, Any]]:
    """Portfolio items joined with positions on (account, conid), sorted."""
    portfolio = {(p.account, p.contract.conId): p for p in data.portfolio}
    positions = {(p.account, p.contract.conId): p for p in data.positions}
    rows = []
    for key in sorted(portfolio.keys() | positions.keys()):
        item, pos = portfolio.get(key), positions.get(key)
        contract = (pos or item).contract
        exchange = (pos.contract.exchange if pos else "") or (
            item.contract.primaryExchange if item else ""
        )
        rows.append(
            {
                "account_id": key[0],
                "conid": key[1],
                "symbol": contract.symbol,
                "sec_type": contract.secType,
                "currency": contract.currency,
                "exchange": exchange,
                "position": float_to_decimal(pos.position if pos else item.position),
                "avg_cost": float_to_decimal(pos.avgCost if pos else item.averageCost),
                "market_price": float_to_decimal(item.marketPrice) if item else None,
                "market_value": float_to_decimal(item.marketValue) if item else None,
                "unrealized_pnl": float_to_decimal(item.unrealizedPNL) if item else None,
                "realized_pnl": float_to_decimal(item.realizedPNL) if item else None,
            }
        )
    return rows


def _value_rows(data: _GatewayData) -> list[dict[str, Any]]:
    rows = []
    for source, values in (
        ("account_update", data.account_values),
        ("account_summary", data.summary),
    ):
        for v in sorted(values, key=lambda v: (v.account, v.tag, v.currency, v.modelCode)):
            rows.append(
                {
                    "account_id": v.account,
                    "source": source,
                    "key": v.tag,
                    "value": v.value,
                    "value_decimal": text_to_decimal(v.value),
                    "currency": v.currency,
                    "model_code": v.modelCode,
                }
            )
    return rows


def _pnl_rows(data: _GatewayData) -> list[dict[str, Any]]:
    return [
        {
            "account_id": account,
            "daily_pnl": float_to_decimal(daily),
            "unrealized_pnl": float_to_decimal(unrealized),
            "realized_pnl": float_to_decimal(realized),
        }
        for account, (daily, unrealized, realized) in data.pnl.items()
    ]


def _table(rows: list[dict[str, Any]], schema: pa.Schema, common: dict[str, Any]) -> pa.Table:
    full = [common | row for row in rows]
    return pa.Table.from_pylist(full, schema=schema)


def _new_snapshot_id(captured_at: datetime) -> str:
    return f"{captured_at:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"


async def collect_snapshots_async(
    gateways: Sequence[GatewayAddress],
    *,
    client_id: int = DEFAULT_CLIENT_ID,
    timeout: float = 4.0,
    retries: int = 2,
    backoff: float = 1.0,
    pnl_timeout: float = 2.0,
    account_filter: Collection[str] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> CollectionResult:
    """Snapshot every gateway concurrently on the running loop (see ``collect_snapshots``)."""
    if not gateways:
        raise GatewayConfigError("no gateways to collect from")
    if timeout <= 0 or pnl_timeout <= 0 or retries < 0 or backoff < 0:
        raise ValueError("timeout and pnl_timeout must be > 0, retries and backoff >= 0")
    wanted = None if account_filter is None else frozenset(account_filter)

    def accept(account: str) -> bool:
        return wanted is None or account in wanted

    captured_at = (clock or (lambda: datetime.now(UTC)))().astimezone(UTC)
    results = await asyncio.gather(
        *(
            _collect_gateway(
                address,
                client_id=client_id,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
                pnl_timeout=pnl_timeout,
                accept=accept,
            )
            for address in gateways
        )
    )
    outcomes = tuple(outcome for outcome, _ in results)
    if not any(o.ok for o in outcomes):
        raise GatewayCollectionError(outcomes)
    snapshot_id = _new_snapshot_id(captured_at)
    stamp = {"snapshot_id": snapshot_id, "captured_at": captured_at.isoformat()}
    records: list[dict[str, Any]] = []
    value_rows, position_rows, pnl_rows = [], [], []
    for outcome, data in results:
        records.append(
            stamp
            | {
                "kind": "gateway",
                "gateway": outcome.address,
                "ok": outcome.ok,
                "error": outcome.error,
                "accounts": list(outcome.accounts),
                "attempts": outcome.attempts,
                "connectivity_codes": list(outcome.connectivity_codes),
                "trustworthy": outcome.trustworthy,
            }
        )
        if data is None:
            continue
        records += [stamp | r for r in _raw_records(outcome.address, data)]
        gw = {"gateway": outcome.address, "trustworthy": outcome.trustworthy}
        value_rows += [gw | r for r in _value_rows(data)]
        position_rows += [gw | r for r in _position_rows(data)]
        pnl_rows += [gw | r for r in _pnl_rows(data)]
    common = {
        "snapshot_id": snapshot_id,
        "captured_at": captured_at,
        "date": report_date(captured_at),
    }
    return CollectionResult(
        snapshot_id=snapshot_id,
        captured_at=captured_at,
        gateways=outcomes,
        account_values=_table(value_rows, ACCOUNT_VALUES_SCHEMA, common),
        positions=_table(position_rows, POSITIONS_SCHEMA, common),
        pnl=_table(pnl_rows, PNL_SCHEMA, common),
        records=tuple(records),
    )


def collect_snapshots(
    gateways: Sequence[GatewayAddress],
    *,
    client_id: int = DEFAULT_CLIENT_ID,
    timeout: float = 4.0,
    retries: int = 2,
    backoff: float = 1.0,
    pnl_timeout: float = 2.0,
    account_filter: Collection[str] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> CollectionResult:
    """Snapshot every managed account of every gateway (blocking; runs its own event loop).

    timeout: seconds per step (connect/handshake, each account download, the summary).
    retries: extra attempts per gateway; backoff: seconds before the first retry, doubling.
    pnl_timeout: seconds to wait for the first PnL message of every account (missing -> null).
    account_filter: account ids to keep (None = every managed account).
    clock: returns the capture instant (default now, UTC); sets ``captured_at`` and ``date``.
    Raises GatewayCollectionError when no gateway could be read.
    """
    return asyncio.run(
        collect_snapshots_async(
            gateways,
            client_id=client_id,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            pnl_timeout=pnl_timeout,
            account_filter=account_filter,
            clock=clock,
        )
    )


async def _managed_accounts(address: GatewayAddress, client_id: int, timeout: float) -> list[str]:
    """Connect read-only, return the login's managed account ids, disconnect."""
    ib = IB()
    try:
        await _connect(ib, address, client_id, timeout)
        return ib.managedAccounts()
    finally:
        ib.disconnect()


async def _list_managed_accounts_async(
    gateways: Sequence[GatewayAddress], client_id: int, timeout: float
) -> dict[str, list[str] | str]:
    async def one(address: GatewayAddress) -> list[str] | str:
        try:
            return await _managed_accounts(address, client_id, timeout)
        except (OSError, TimeoutError, ConnectionError, _GatewayError) as exc:
            return _describe(exc, timeout)

    answers = await asyncio.gather(*(one(address) for address in gateways))
    return {str(address): answer for address, answer in zip(gateways, answers, strict=True)}


def list_managed_accounts(
    gateways: Sequence[GatewayAddress],
    *,
    client_id: int = DEFAULT_CLIENT_ID,
    timeout: float = 4.0,
) -> dict[str, list[str] | str]:
    """The managed account ids of every gateway, asked concurrently (blocking; own event loop).

    Per gateway ``str(address)`` (``host:port``): its account ids in the gateway's order, or the
    error text (str) when it could not be read. One read-only connection per gateway, no retry,
    only the handshake (no account data requested); ``timeout`` is seconds for the connect.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    return asyncio.run(_list_managed_accounts_async(gateways, client_id, timeout))


def to_jsonl(result: CollectionResult) -> bytes:
    """The raw capture: one JSON object per line per message-level item (account value, summary
    value, portfolio item, position, PnL) and per gateway status, each with ``snapshot_id``,
    ``captured_at`` (ISO, UTC), ``gateway`` and ``kind``; keys sorted, UTF-8."""
    return b"".join(
        json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        for record in result.records
    )
