"""Arrow schemas of the gateway snapshot tables and the value conversions they rely on.

Every row carries ``snapshot_id``, ``captured_at`` (UTC instant the collection started),
``gateway`` (``host:port``), ``account_id``, ``date`` (the account's report date: the
US/Eastern date of ``captured_at``) and ``trustworthy`` (false when the gateway reported lost
connectivity (1100, 2110) or lost data (1101) during the snapshot; snapshots stored before these
codes were recorded count as trustworthy).

- ``gateway_account_values``: one row per account value (``source = "account_update"``, from
  reqAccountUpdates) and per account summary value (``source = "account_summary"``, from
  reqAccountSummary). ``value`` is the string as sent; ``value_decimal`` its exact decimal when
  numeric (null for text such as ``INDIVIDUAL`` or ``true``); ``currency`` is ``""`` for
  non-monetary keys and ``BASE`` for base-currency ledger rows.
- ``gateway_positions``: portfolio items joined with positions on (account, conid). Money is in the
  instrument's ``currency``; ``avg_cost`` is per unit for stocks and per contract (multiplier
  included) for options/futures, as IBKR reports it. Portfolio-only columns are null when the
  gateway sent no portfolio item for the position.
- ``gateway_pnl``: one row per account; base-currency daily/unrealized/realized PnL as decimals
  (ib_async delivers doubles; they are converted exactly via their shortest repr), null when the
  gateway left the value unset (UNSET_DOUBLE) or sent none before the timeout.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import pyarrow as pa

DECIMAL = pa.decimal128(38, 10)
TIMESTAMP_UTC = pa.timestamp("us", tz="UTC")
SCALE = Decimal("1E-10")
MAX_ABS = Decimal("1E28")  # decimal128(38, 10) holds < 10**28
UNSET_DOUBLE = 1.7976931348623157e308
EASTERN = ZoneInfo("America/New_York")


def _money(name: str, unit: str) -> pa.Field:
    return pa.field(name, DECIMAL, metadata={"unit": unit})


_COMMON = [
    pa.field("snapshot_id", pa.string(), nullable=False),
    pa.field("captured_at", TIMESTAMP_UTC, nullable=False),
    pa.field("gateway", pa.string(), nullable=False),
    pa.field("account_id", pa.string(), nullable=False),
    pa.field("date", pa.date32(), nullable=False),
    pa.field(
        "trustworthy",
        pa.bool_(),
        nullable=False,
        metadata={"doc": "false: read while the gateway was disconnected or had lost data"},
    ),
]

ACCOUNT_VALUES_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("source", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        _money("value_decimal", "in `currency` (BASE: the account's base currency)"),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("model_code", pa.string(), nullable=False),
    ]
)

POSITIONS_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("conid", pa.int64(), nullable=False),
        pa.field("symbol", pa.string()),
        pa.field("sec_type", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("exchange", pa.string()),
        _money("position", "shares/contracts/face, signed"),
        _money("avg_cost", "money in currency per share (STK) or per contract (OPT/FUT)"),
        _money("market_price", "price in currency per unit"),
        _money("market_value", "money in currency"),
        _money("unrealized_pnl", "money in currency"),
        _money("realized_pnl", "money in currency"),
    ]
)

PNL_SCHEMA = pa.schema(
    _COMMON
    + [
        _money("daily_pnl", "money in the account's base currency"),
        _money("unrealized_pnl", "money in the account's base currency"),
        _money("realized_pnl", "money in the account's base currency"),
    ]
)

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "gateway_account_values": ACCOUNT_VALUES_SCHEMA,
    "gateway_positions": POSITIONS_SCHEMA,
    "gateway_pnl": PNL_SCHEMA,
}


def _fit(value: Decimal) -> Decimal | None:
    if not value.is_finite() or abs(value) >= MAX_ABS:
        return None
    return value.quantize(SCALE)


def text_to_decimal(text: str) -> Decimal | None:
    """Exact decimal of a numeric account value string, else None (text, empty, out of range)."""
    try:
        return _fit(Decimal(text.strip()))
    except (InvalidOperation, ValueError):
        return None


def float_to_decimal(value: float | None) -> Decimal | None:
    """Decimal of a double from ib_async via its shortest repr (exact for <= 15 significant
    digits); None for None, NaN, infinities and UNSET_DOUBLE."""
    if value is None or not math.isfinite(value) or value == UNSET_DOUBLE:
        return None
    return _fit(Decimal(repr(value)))


def report_date(captured_at: datetime) -> date:
    """The report date of a snapshot: the US/Eastern calendar date of ``captured_at``."""
    if captured_at.tzinfo is None:
        raise ValueError("captured_at must be timezone-aware")
    return captured_at.astimezone(EASTERN).date()
