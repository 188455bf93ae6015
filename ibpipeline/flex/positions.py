"""Daily positions of a window statement: ``positions_daily`` (see ``docs/architecture.md``).

One-day Flex requests would cost a request per report date, so the end-of-day positions of every
report date are reconstructed from one statement per account, only from evidence the statement
gives: its OpenPositions snapshot and the days walked back (or forward) from it through the
statement's own trades, transfers and corporate actions. A statement without OpenPositions rows
yields no positions at all (never positions invented from trades alone: a buy of 10 does not make
-10 before it); PriorPeriodPositions rows carry no quantity (IBKR's schema has none), so they price
days but cannot stand in for the snapshot. An account whose OpenPositions section is empty (flat)
is told apart from a query without the section only in a multi-account response where another
account has OpenPositions rows (one query, one set of sections); alone, it yields no rows. The
``positions_evidence`` asset check (``ibpipeline.assets.checks``) lists account days with NAV in
securities but no position rows.

- Report dates: the statement's EquitySummary (``nav_daily``) dates in [fromDate, toDate] (the row
  of the day before fromDate is excluded); without EquitySummary, the weekdays of the window that
  occur in any position, trade, transfer, corporate action, cash or rate row; always the
  OpenPositions date (the *anchor*: toDate's report date; toDate when OpenPositions is empty).
- Quantities: the anchor's OpenPositions SUMMARY quantity per conid (the sum of the LOT rows for a
  conid printed only as lots), walked back day by day undoing the position changes dated after each
  report date, and forward from it for report dates after the anchor. The changes and their rules
  per section and action type are in :mod:`ibpipeline.flex.position_changes`: EXECUTION trades of
  a security (``CASH`` FX trades hold no position), corporate actions of every type (splits,
  reverse splits, stock dividends, mergers for cash and/or stock, spin-offs, ISIN/symbol changes:
  IBKR's signed quantity per conid, DETAIL rows, SUMMARY rows only where no DETAIL row exists),
  OptionEAE rows not also booked as a Trade (exercise, assignment, expiry and the stock leg; IBKR
  normally books them as Trades with notes A/Ex/Ep, counted once), transfers (signed by
  ``direction``) and stock grants. Zero quantities are dropped. The ``positions_match_ibkr`` asset
  check compares the stored days with every OpenPositions snapshot.
- Prices of a reconstructed day D: the PriorPeriodPositions price of D (close on D of a position
  held at the previous close), else the ``close_price`` of an execution of the conid on D (opened
  that day), else on the anchor the OpenPositions mark. A statement whose query lacks
  PriorPeriodPositions leaves such days unpriced: the row keeps the quantity, has null
  ``mark_price`` / ``position_value`` / ``value_base`` and ``source = "unpriced"`` (never a
  silent 0); :func:`unpriced_warnings` names each account and its number of unpriced rows (the
  import's warnings and the ``parse_warnings`` check of ``positions_daily`` report them).
- position_value = quantity x price x multiplier (BOND: quantity x price / 100, price in percent of
  face), in the instrument currency (a FUT's notional, as IBKR prints it).
- fx_rate_to_base: ConversionRates ``currency -> base`` of that day, else the source row's
  ``fxRateToBase``, else 1 for the base currency. value_base = position_value x fx_rate_to_base
  (0 for FUT: variation margin settles into cash daily).
- On the anchor the OpenPositions rows are copied as printed (SUMMARY and LOT rows, ``source =
  "OpenPositions"``); reconstructed days have SUMMARY rows only, ``source = "reconstructed"`` and
  null ``cost_basis_money`` / ``unrealized_pnl`` (FIFO lots are not replayed).

Computed decimals are exact; only values with more than 10 decimal places (the storage scale of
``decimal128(38, 10)``) are rounded half-even at the 10th place. When statements of one account
overlap, the statement with the later toDate wins each report date.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal

import pyarrow as pa
import pyarrow.compute as pc

from ibpipeline.flex.errors import FlexError
from ibpipeline.flex.parse import ParsedFlex, StatementInfo
from ibpipeline.flex.position_changes import COLUMNS as CHANGE_COLUMNS
from ibpipeline.flex.position_changes import position_changes
from ibpipeline.flex.schema import INSTRUMENT, POSITIONS_DAILY

ZERO = Decimal(0)
ONE = Decimal(1)
_SCALE = Decimal("1E-10")
_CONTEXT = Context(prec=38, rounding=ROUND_HALF_EVEN)
_INSTRUMENT_FIELDS: tuple[str, ...] = tuple(c.name for c in INSTRUMENT)
_DATE_SOURCES = (
    "open_positions",
    "prior_period_positions",
    "trades",
    "transfers",
    "corporate_actions",
    "option_events",
    "stock_grants",
    "cash_transactions",
    "fx_rates",
)
_INPUT_TABLES = ("nav_daily", *_DATE_SOURCES)
_COLUMNS: dict[str, tuple[str, ...]] = {
    "nav_daily": (),
    "open_positions": POSITIONS_DAILY.names,
    "prior_period_positions": ("conid", "price", "fx_rate_to_base", *_INSTRUMENT_FIELDS),
    **{
        name: (*columns, "close_price", "fx_rate_to_base", *_INSTRUMENT_FIELDS)
        for name, columns in CHANGE_COLUMNS.items()
    },
    "cash_transactions": (),
    "fx_rates": ("from_currency", "to_currency", "rate"),
}
"""Columns read from each input table besides ``account_id`` and ``date`` (the others are never
looked at; converting only these to Python keeps reconstruction time and memory down)."""
SOURCE_OPEN_POSITIONS = "OpenPositions"
SOURCE_RECONSTRUCTED = "reconstructed"
SOURCE_UNPRICED = "unpriced"

Row = dict[str, object]


class PositionReconstructionError(FlexError, ValueError):
    """A statement whose daily positions cannot be reconstructed (e.g. a position without price)."""


def _exact(value: Decimal) -> Decimal:
    """``value`` at the storage scale: unchanged unless it has more than 10 decimal places."""
    if value.as_tuple().exponent >= -10:  # type: ignore[operator]
        return value
    return value.quantize(_SCALE, context=_CONTEXT)


def position_value(quantity: Decimal, price: Decimal, asset_category: str | None,
                   multiplier: Decimal | None) -> Decimal:  # fmt: skip
    """quantity x price x multiplier in the instrument currency; BOND: quantity (face) x price
    (percent of face) / 100. A missing multiplier counts as 1."""
    if asset_category == "BOND":
        return _exact(_CONTEXT.divide(_CONTEXT.multiply(quantity, price), 100))
    return _exact(_CONTEXT.multiply(_CONTEXT.multiply(quantity, price), multiplier or ONE))


def value_in_base(value: Decimal | None, fx_rate: Decimal, asset_category: str | None) -> Decimal:
    """NAV contribution in base: value x fx_rate, 0 for FUT (variation settles into cash)."""
    if asset_category == "FUT" or value is None:
        return ZERO
    return _exact(_CONTEXT.multiply(value, fx_rate))


@dataclass
class _Window:
    """One statement's rows (its account, dates in [from_date, to_date]), indexed for lookups."""

    info: StatementInfo
    nav_dates: set[date] = field(default_factory=set)
    other_dates: set[date] = field(default_factory=set)
    summary: dict[int, Row] = field(default_factory=dict)
    lots: dict[int, list[Row]] = field(default_factory=lambda: defaultdict(list))
    anchor_dates: set[date] = field(default_factory=set)
    deltas: dict[date, dict[int, Decimal]] = field(default_factory=lambda: defaultdict(dict))
    prior: dict[tuple[date, int], Row] = field(default_factory=dict)
    traded: dict[tuple[date, int], Row] = field(default_factory=dict)
    fx: dict[tuple[date, str], Decimal] = field(default_factory=dict)
    instruments: dict[int, Row] = field(default_factory=dict)

    def add_delta(self, day: date, conid: int, quantity: Decimal) -> None:
        changes = self.deltas[day]
        changes[conid] = changes.get(conid, ZERO) + quantity

    def describe(self, conid: int, row: Row) -> None:
        """Remember the instrument columns of the first row seen for ``conid``."""
        self.instruments.setdefault(conid, {k: row.get(k) for k in _INSTRUMENT_FIELDS})


class _AccountInputs:
    """The input tables of reconstruction grouped by account without copying them: each
    table's ``account_id``, ``date`` and :data:`_COLUMNS` (those it has), with its row numbers in
    account order (row order inside an account preserved), so one account's rows at a time are
    taken and become Python dicts (:meth:`rows`) instead of every account's at once."""

    def __init__(self, parsed: ParsedFlex) -> None:
        self.tables: dict[str, pa.Table] = {}
        self.order: dict[str, pa.Array] = {}
        self.spans: dict[str, dict[str | None, tuple[int, int]]] = {}
        for name in _INPUT_TABLES:
            table = parsed.tables.get(name)
            if table is None or table.num_rows == 0:
                continue
            wanted = dict.fromkeys(("account_id", "date", *_COLUMNS[name]))
            table = table.select([c for c in wanted if c in table.column_names])
            order = pc.sort_indices(
                pa.table({"a": table["account_id"], "i": pa.array(range(table.num_rows))}),
                sort_keys=[("a", "ascending"), ("i", "ascending")],
            )
            spans, offset = {}, 0
            counts = pc.value_counts(table["account_id"].take(order))  # in first-seen order
            for item in counts.to_pylist():
                spans[item["values"]] = (offset, item["counts"])
                offset += item["counts"]
            self.tables[name], self.order[name], self.spans[name] = table, order, spans
        positions = self.tables.get("open_positions")
        self.snapshot = positions is not None and positions["conid"].null_count < len(positions)
        """Whether the statement has any OpenPositions row (of any account)."""

    def rows(self, account_id: str) -> dict[str, list[Row]]:
        """``account_id``'s rows of every input table as dicts (an empty list for none)."""
        out: dict[str, list[Row]] = {}
        for name in _INPUT_TABLES:
            span = self.spans.get(name, {}).get(account_id)
            rows = self.order[name].slice(*span) if span else None
            out[name] = self.tables[name].take(rows).to_pylist() if rows is not None else []
        return out


def _window(info: StatementInfo, rows: Mapping[str, list[Row]]) -> _Window:
    """Index the rows of ``info``'s account dated inside its window."""
    w = _Window(info)

    def inside(name: str) -> Iterable[Row]:
        return (r for r in rows.get(name, ()) if info.from_date <= r["date"] <= info.to_date)

    w.nav_dates = {r["date"] for r in inside("nav_daily")}
    for name in _DATE_SOURCES:
        w.other_dates |= {r["date"] for r in inside(name) if r["date"].weekday() < 5}
    for r in inside("open_positions"):
        if r["conid"] is None:
            continue
        w.anchor_dates.add(r["date"])
        if r["level_of_detail"] == "LOT":
            w.lots[r["conid"]].append(r)
        else:
            w.summary[r["conid"]] = r
        w.describe(r["conid"], r)
    for r in inside("prior_period_positions"):
        if r["conid"] is not None:
            w.prior[(r["date"], r["conid"])] = r
            w.describe(r["conid"], r)
    for change in position_changes({name: inside(name) for name in CHANGE_COLUMNS}):
        r = change.row
        w.add_delta(change.date, change.conid, change.quantity)
        if change.source == "trades" and r.get("close_price") is not None:
            w.traded.setdefault((change.date, change.conid), r)
        w.describe(change.conid, r)
    for r in inside("fx_rates"):
        to_ccy = r["to_currency"]
        if r["rate"] is not None and (info.base_currency is None or to_ccy == info.base_currency):
            w.fx[(r["date"], r["from_currency"])] = r["rate"]
    return w


def _anchor(w: _Window) -> date:
    """The OpenPositions date (toDate when the statement prints no open position)."""
    if len(w.anchor_dates) > 1:
        days = ", ".join(sorted(d.isoformat() for d in w.anchor_dates))
        raise PositionReconstructionError(
            f"account {w.info.account_id}: OpenPositions of the statement "
            f"{w.info.from_date}..{w.info.to_date} have several report dates ({days})"
        )
    return next(iter(w.anchor_dates), w.info.to_date)


def report_dates(w: _Window, anchor: date) -> list[date]:
    """The window's report dates: EquitySummary dates, else weekdays seen in the rows; + anchor."""
    return sorted((w.nav_dates or w.other_dates) | {anchor})


def _end_quantities(w: _Window) -> dict[int, Decimal]:
    """Anchor quantity per conid: the SUMMARY row, else the sum of the conid's LOT rows."""
    out = {conid: row["quantity"] for conid, row in w.summary.items()}
    for conid, lots in w.lots.items():
        if conid not in out:
            out[conid] = sum((r["quantity"] for r in lots), ZERO)
    return out


def _apply(held: dict[int, Decimal], changes: Mapping[int, Decimal], sign: int) -> None:
    for conid, qty in changes.items():
        held[conid] = held.get(conid, ZERO) + sign * qty


def daily_quantities(
    end: Mapping[int, Decimal],
    anchor: date,
    deltas: Mapping[date, Mapping[int, Decimal]],
    days: Iterable[date],
) -> dict[date, dict[int, Decimal]]:
    """End-of-day non-zero quantity per conid on each of ``days``, from the ``end`` quantities on
    ``anchor`` and the position changes per date (undone backwards, applied forwards)."""
    days = sorted(set(days))
    changes = sorted(deltas)
    out: dict[date, dict[int, Decimal]] = {}
    held = dict(end)
    before = [d for d in changes if d <= anchor]
    for day in reversed([d for d in days if d <= anchor]):
        while before and before[-1] > day:
            _apply(held, deltas[before.pop()], -1)
        out[day] = {c: q for c, q in held.items() if q}
    held = dict(end)
    after = [d for d in changes if d > anchor]
    for day in [d for d in days if d > anchor]:
        while after and after[0] <= day:
            _apply(held, deltas[after.pop(0)], 1)
        out[day] = {c: q for c, q in held.items() if q}
    return out


def _fx_rate(
    w: _Window, day: date, currency: str | None, source: Row | None, conid: int
) -> Decimal:
    rate = w.fx.get((day, currency))
    if rate is None and source is not None:
        rate = source.get("fx_rate_to_base")
    if rate is None and currency is not None and currency == w.info.base_currency:
        rate = ONE
    if rate is None:
        raise PositionReconstructionError(
            f"account {w.info.account_id}: no {currency}->{w.info.base_currency} rate on {day} "
            f"for conid {conid} (no ConversionRate, no fxRateToBase)"
        )
    return rate


def _reconstructed_row(w: _Window, anchor: date, day: date, conid: int, qty: Decimal) -> Row:
    """A SUMMARY row priced at the close of ``day`` (see the module doc for the price order)."""
    prior, traded = w.prior.get((day, conid)), w.traded.get((day, conid))
    source: Row | None = None
    price = None
    if prior is not None and prior["price"] is not None:
        source, price = prior, prior["price"]
    elif traded is not None:
        source, price = traded, traded["close_price"]
    elif day == anchor and conid in w.lots:  # printed as LOT rows only
        source = w.lots[conid][0]
        price = source["mark_price"]
    inst = w.instruments[conid]
    category = inst["asset_category"]
    lots = w.lots.get(conid, ()) if day == anchor else ()
    if price is None:
        return {
            **inst,
            "date": day,
            "conid": conid,
            "level_of_detail": "SUMMARY",
            "lot_open_at": None,
            "quantity": qty,
            "mark_price": None,
            "position_value": None,
            "fx_rate_to_base": w.fx.get((day, inst["currency"])),
            "value_base": None,
            "cost_basis_money": _lot_sum(lots, "cost_basis_money"),
            "unrealized_pnl": _lot_sum(lots, "unrealized_pnl"),
            "source": SOURCE_UNPRICED,
        }
    value = position_value(qty, price, category, inst["multiplier"])
    fx = _fx_rate(w, day, inst["currency"], source, conid)
    return {
        **inst,
        "date": day,
        "conid": conid,
        "level_of_detail": "SUMMARY",
        "lot_open_at": None,
        "quantity": qty,
        "mark_price": price,
        "position_value": value,
        "fx_rate_to_base": fx,
        "value_base": value_in_base(value, fx, category),
        "cost_basis_money": _lot_sum(lots, "cost_basis_money"),
        "unrealized_pnl": _lot_sum(lots, "unrealized_pnl"),
        "source": SOURCE_OPEN_POSITIONS if day == anchor else SOURCE_RECONSTRUCTED,
    }


def _lot_sum(lots: Iterable[Row], name: str) -> Decimal | None:
    """Sum of the LOT rows' ``name`` (None without lots or when a lot has none)."""
    values = [r[name] for r in lots]
    if not values or any(v is None for v in values):
        return None
    return sum(values, ZERO)


def _printed_row(w: _Window, row: Row) -> Row:
    """An OpenPositions row as printed, with value_base and the day's ConversionRate."""
    fx = _fx_rate(w, row["date"], row["currency"], row, row["conid"])
    out = {name: row.get(name) for name in POSITIONS_DAILY.names}
    out["fx_rate_to_base"] = fx
    out["value_base"] = value_in_base(row["position_value"], fx, row["asset_category"])
    out["source"] = SOURCE_OPEN_POSITIONS
    return out


def _statement_rows(
    w: _Window, skip: set[date], query_has_open_positions: bool
) -> tuple[list[Row], list[date]]:
    """Rows of one statement (report dates in ``skip`` left out) and its report dates; none
    without an OpenPositions snapshot (see the module doc)."""
    if not w.anchor_dates and not query_has_open_positions:
        return [], []
    anchor = _anchor(w)
    days = [d for d in report_dates(w, anchor) if d not in skip]
    quantities = daily_quantities(_end_quantities(w), anchor, w.deltas, days)
    out: list[Row] = []
    for day in days:
        for conid, qty in quantities[day].items():
            if day == anchor and conid in w.summary:
                out.append(_printed_row(w, w.summary[conid]))
            else:
                out.append(_reconstructed_row(w, anchor, day, conid, qty))
            if day == anchor:
                out.extend(_printed_row(w, lot) for lot in w.lots.get(conid, ()))
    for row in out:
        row["account_id"] = w.info.account_id
    return out, days


def _sort_key(row: Row) -> tuple:
    lot_at = row["lot_open_at"]
    return (
        row["account_id"],
        row["date"],
        row["conid"],
        row["level_of_detail"] != "SUMMARY",
        lot_at is not None,
        lot_at or datetime.min,
    )


def rebuilt_quantities(
    parsed: ParsedFlex, account_id: str, days: Iterable[date]
) -> dict[date, dict[int, Decimal]]:
    """End-of-day non-zero quantity per conid of ``account_id`` on each of ``days`` (any days
    inside a statement window, not only report dates), from the statement of the account with the
    latest toDate whose window holds the day and which has an OpenPositions snapshot; days no
    such statement covers are left out. Used by the tests and to explain a break."""
    inputs = _AccountInputs(parsed)
    by_table = inputs.rows(account_id)
    out: dict[date, dict[int, Decimal]] = {}
    wanted = set(days)
    infos = [s for s in parsed.statements if s.account_id == account_id]
    for info in sorted(infos, key=lambda s: (s.to_date, s.from_date), reverse=True):
        w = _window(info, by_table)
        if not w.anchor_dates and not inputs.snapshot:
            continue
        inside = {d for d in wanted if info.from_date <= d <= info.to_date and d not in out}
        out.update(daily_quantities(_end_quantities(w), _anchor(w), w.deltas, inside))
    return dict(sorted(out.items()))


def reconstruct_daily_positions(parsed: ParsedFlex) -> pa.Table:
    """``positions_daily`` of a parsed statement: every report date's end-of-day positions per
    account (schema :data:`ibpipeline.flex.schema.POSITIONS_DAILY`), sorted by account_id, date,
    conid (SUMMARY before LOT rows). Statements without an OpenPositions snapshot contribute no
    rows (see the module doc).

    Rows of days without a price get ``source = "unpriced"`` (see the module doc; reported by
    :func:`unpriced_warnings`, not logged). Raises PositionReconstructionError when a priced
    position has no FX rate on a report date, or a statement's OpenPositions span several report
    dates.

    Memory: the input tables stay Arrow (not copied: only their row order per account is
    computed); one account's input and output rows are Python objects at a time (converted to
    Arrow before the next account, the result is one chunk per account), so the Python-object
    peak is bounded by the largest account, not by the statement.
    """
    inputs = _AccountInputs(parsed)
    statements: dict[str, list[StatementInfo]] = defaultdict(list)
    for info in sorted(parsed.statements, key=lambda s: (s.to_date, s.from_date), reverse=True):
        statements[info.account_id].append(info)
    pieces = []
    for account_id in sorted(statements):  # the rows' first sort key: one account at a time
        by_table = inputs.rows(account_id)
        done: set[date] = set()
        out: list[Row] = []
        for info in statements[account_id]:
            statement_rows, days = _statement_rows(_window(info, by_table), done, inputs.snapshot)
            done.update(days)
            out.extend(statement_rows)
        if not out:
            continue
        for row in out:
            row["statement_sha256"] = parsed.source_sha256
        out.sort(key=_sort_key)
        pieces.append(pa.Table.from_pylist(out, schema=POSITIONS_DAILY))
    if not pieces:
        return POSITIONS_DAILY.empty_table()
    return pa.concat_tables(pieces)


def unpriced_warnings(positions: pa.Table) -> list[tuple[str, int]]:
    """``(warning line, rows)`` per account of ``positions`` (``positions_daily`` rows) with rows
    of ``source = "unpriced"``, sorted by account."""
    if positions.num_rows == 0:
        return []
    unpriced = Counter(
        account
        for account, source in zip(
            positions["account_id"].to_pylist(), positions["source"].to_pylist(), strict=True
        )
        if source == SOURCE_UNPRICED
    )
    return [
        (
            f"account {account}: {count} daily position rows have no price (the Flex query lacks "
            "PriorPeriodPositions); their values are null",
            count,
        )
        for account, count in sorted(unpriced.items())
    ]
