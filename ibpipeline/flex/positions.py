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
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from itertools import repeat

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
_CHANGE_READ: dict[str, tuple[str, ...]] = {
    name: (*columns, "close_price", "fx_rate_to_base") for name, columns in CHANGE_COLUMNS.items()
}
"""Columns of the position-change tables converted to Python row by row (their instrument
columns are read only for the first row of each conid)."""
SOURCE_OPEN_POSITIONS = "OpenPositions"
SOURCE_RECONSTRUCTED = "reconstructed"
SOURCE_UNPRICED = "unpriced"

Row = dict[str, object]


class PositionReconstructionError(FlexError, ValueError):
    """A statement whose daily positions cannot be reconstructed (e.g. a position without price)."""


def _exact(value: Decimal) -> Decimal:
    """``value`` at the storage scale: rounded half-even at the 10th decimal place (exact when it
    has at most 10; the Decimal may then gain trailing zeros, the stored decimal128 is the same).
    A value too long for 38 digits at scale 10 and with at most 10 places is returned unchanged
    (the Arrow conversion rejects it, as before)."""
    try:
        return value.quantize(_SCALE, context=_CONTEXT)
    except InvalidOperation:
        if value.as_tuple().exponent >= -10:  # type: ignore[operator]
            return value
        raise


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
    """One statement's rows (its account, dates in [from_date, to_date]), indexed for lookups.

    ``prior``: (date, conid) -> (price, fx_rate_to_base) of the PriorPeriodPositions row.
    ``instruments``: conid -> the :data:`_INSTRUMENT_FIELDS` values of the first row seen for it
    (OpenPositions, then PriorPeriodPositions, then the position changes, in row order)."""

    info: StatementInfo
    nav_dates: set[date] = field(default_factory=set)
    other_dates: set[date] = field(default_factory=set)
    summary: dict[int, Row] = field(default_factory=dict)
    lots: dict[int, list[Row]] = field(default_factory=lambda: defaultdict(list))
    anchor_dates: set[date] = field(default_factory=set)
    deltas: dict[date, dict[int, Decimal]] = field(default_factory=lambda: defaultdict(dict))
    prior: dict[tuple[date, int], tuple[Decimal | None, Decimal | None]] = field(
        default_factory=dict
    )
    traded: dict[tuple[date, int], Row] = field(default_factory=dict)
    fx: dict[tuple[date, str], Decimal] = field(default_factory=dict)
    instruments: dict[int, tuple] = field(default_factory=dict)

    def add_delta(self, day: date, conid: int, quantity: Decimal) -> None:
        changes = self.deltas[day]
        changes[conid] = changes.get(conid, ZERO) + quantity


class _AccountInputs:
    """The input tables of reconstruction grouped by account without copying them: each
    table's ``account_id``, ``date`` and :data:`_COLUMNS` (those it has), with its row numbers in
    account order (row order inside an account preserved), so one account's rows at a time are
    taken (:meth:`tables`) and converted to Python instead of every account's at once."""

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

    def account(self, account_id: str) -> dict[str, pa.Table]:
        """``account_id``'s rows of every input table that has some, in row order: a zero-copy
        slice when they are contiguous (a statement prints each account's rows together), else
        taken."""
        out: dict[str, pa.Table] = {}
        for name in _INPUT_TABLES:
            span = self.spans.get(name, {}).get(account_id)
            if not span:
                continue
            rows = self.order[name].slice(*span)
            first, last = rows[0].as_py(), rows[-1].as_py()
            table = self.tables[name]
            out[name] = (
                table.slice(first, span[1]) if last - first == span[1] - 1 else table.take(rows)
            )
        return out


_EPOCH = date(1970, 1, 1).toordinal()


def _pylist(column: pa.ChunkedArray) -> list:
    """``column`` as a Python list; a date32 column through its day numbers, one ``date`` per
    distinct day (Arrow builds a ``date`` per value, several times slower)."""
    if column.type != pa.date32():
        return column.to_pylist()
    days = column.cast(pa.int32()).to_pylist()
    dates = {n: None if n is None else date.fromordinal(n + _EPOCH) for n in set(days)}
    return list(map(dates.__getitem__, days))


def _columns(table: pa.Table, names: Iterable[str]) -> list[list]:
    """``table``'s columns ``names`` as Python lists (all None for a column it lacks)."""
    present = set(table.column_names)
    return [_pylist(table[n]) if n in present else [None] * len(table) for n in names]


def _row_dicts(table: pa.Table, names: Iterable[str], lo: date, hi: date) -> list[Row]:
    """``table``'s rows dated in [lo, hi] as dicts of its columns ``names`` (those it has) and
    :data:`_ROW`, the row number in ``table``."""
    names = [n for n in dict.fromkeys(("date", *names)) if n in table.column_names]
    keys = (*names, _ROW)
    values = zip(*_columns(table, names), range(len(table)), strict=True)
    return [row for row in map(dict, map(zip, repeat(keys), values)) if lo <= row["date"] <= hi]


_ROW = "_row"
"""Key of a change row's row number in its account's table (to read its instrument later)."""


def _window(info: StatementInfo, tables: Mapping[str, pa.Table]) -> _Window:
    """Index the rows of ``info``'s account (``tables``: its rows per input table) dated inside
    its window."""
    w = _Window(info)
    lo, hi = info.from_date, info.to_date

    def dates(name: str) -> set[date]:
        table = tables.get(name)
        if table is None:
            return set()
        return {d for d in pc.unique(table["date"]).to_pylist() if lo <= d <= hi}

    w.nav_dates = dates("nav_daily")
    for name in _DATE_SOURCES:
        w.other_dates |= {d for d in dates(name) if d.weekday() < 5}
    pending: dict[int, tuple[str, int]] = {}  # conid -> (table, row) of its first row
    if "open_positions" in tables:
        for r in tables["open_positions"].to_pylist():
            if not lo <= r["date"] <= hi or r["conid"] is None:
                continue
            w.anchor_dates.add(r["date"])
            if r["level_of_detail"] == "LOT":
                w.lots[r["conid"]].append(r)
            else:
                w.summary[r["conid"]] = r
            if r["conid"] not in w.instruments:
                w.instruments[r["conid"]] = tuple(r.get(k) for k in _INSTRUMENT_FIELDS)
    if "prior_period_positions" in tables:
        cols = _columns(
            tables["prior_period_positions"], ("date", "conid", "price", "fx_rate_to_base")
        )
        for i, (day, conid, price, fx) in enumerate(zip(*cols, strict=True)):
            if not lo <= day <= hi or conid is None:
                continue
            w.prior[(day, conid)] = (price, fx)
            if conid not in w.instruments and conid not in pending:
                pending[conid] = ("prior_period_positions", i)
    rows = {
        name: _row_dicts(tables[name], _CHANGE_READ[name], lo, hi) if name in tables else []
        for name in CHANGE_COLUMNS
    }
    for change in position_changes(rows):
        r = change.row
        w.add_delta(change.date, change.conid, change.quantity)
        if change.source == "trades" and r.get("close_price") is not None:
            w.traded.setdefault((change.date, change.conid), r)
        if change.conid not in w.instruments and change.conid not in pending:
            pending[change.conid] = (change.source, r[_ROW])  # type: ignore[assignment]
    by_table: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for conid, (name, i) in pending.items():
        by_table[name].append((conid, i))
    for name, wanted in by_table.items():
        taken = tables[name].take([i for _, i in wanted])
        for (conid, _), values in zip(
            wanted, zip(*_columns(taken, _INSTRUMENT_FIELDS), strict=True), strict=True
        ):
            w.instruments[conid] = values
    if "fx_rates" in tables:
        base = info.base_currency
        cols = _columns(tables["fx_rates"], ("date", "from_currency", "to_currency", "rate"))
        for day, from_ccy, to_ccy, rate in zip(*cols, strict=True):
            if lo <= day <= hi and rate is not None and (base is None or to_ccy == base):
                w.fx[(day, from_ccy)] = rate
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
    w: _Window, day: date, currency: str | None, source_rate: Decimal | None, conid: int
) -> Decimal:
    """The day's ConversionRate ``currency -> base``, else ``source_rate`` (the row's
    fxRateToBase), else 1 for the base currency."""
    rate = w.fx.get((day, currency))  # type: ignore[arg-type]
    if rate is None:
        rate = source_rate
    if rate is None and currency is not None and currency == w.info.base_currency:
        rate = ONE
    if rate is None:
        raise PositionReconstructionError(
            f"account {w.info.account_id}: no {currency}->{w.info.base_currency} rate on {day} "
            f"for conid {conid} (no ConversionRate, no fxRateToBase)"
        )
    return rate


_CATEGORY_AT, _CURRENCY_AT, _MULTIPLIER_AT = (
    _INSTRUMENT_FIELDS.index(n) for n in ("asset_category", "currency", "multiplier")
)
_OUT_FIELDS: tuple[str, ...] = tuple(n for n in POSITIONS_DAILY.names
                                     if n not in ("account_id", "statement_sha256"))  # fmt: skip
"""The columns of an output row tuple (:data:`POSITIONS_DAILY` but the per-account constants)."""
OutRow = tuple
"""One output row: the values of :data:`_OUT_FIELDS` in that order."""


def _reconstructed_row(w: _Window, anchor: date, day: date, conid: int, qty: Decimal) -> OutRow:
    """A SUMMARY row priced at the close of ``day`` (see the module doc for the price order)."""
    prior, traded = w.prior.get((day, conid)), w.traded.get((day, conid))
    source_rate: Decimal | None = None
    price = None
    if prior is not None and prior[0] is not None:
        price, source_rate = prior
    elif traded is not None:
        price, source_rate = traded["close_price"], traded.get("fx_rate_to_base")
    elif day == anchor and conid in w.lots:  # printed as LOT rows only
        source = w.lots[conid][0]
        price, source_rate = source["mark_price"], source.get("fx_rate_to_base")
    inst = w.instruments[conid]
    currency = inst[_CURRENCY_AT]
    cost = pnl = None
    if day == anchor and conid in w.lots:
        lots = w.lots[conid]
        cost, pnl = _lot_sum(lots, "cost_basis_money"), _lot_sum(lots, "unrealized_pnl")
    if price is None:
        fx = w.fx.get((day, currency))  # type: ignore[arg-type]
        return (day, conid, "SUMMARY", None, *inst, qty, None, None, fx, None, cost, pnl,
                SOURCE_UNPRICED)  # fmt: skip
    category = inst[_CATEGORY_AT]
    value = position_value(qty, price, category, inst[_MULTIPLIER_AT])
    fx = _fx_rate(w, day, currency, source_rate, conid)
    source = SOURCE_OPEN_POSITIONS if day == anchor else SOURCE_RECONSTRUCTED
    return (day, conid, "SUMMARY", None, *inst, qty, price, value, fx,
            value_in_base(value, fx, category), cost, pnl, source)  # fmt: skip


def _lot_sum(lots: Iterable[Row], name: str) -> Decimal | None:
    """Sum of the LOT rows' ``name`` (None without lots or when a lot has none)."""
    values = [r[name] for r in lots]
    if not values or any(v is None for v in values):
        return None
    return sum(values, ZERO)


def _printed_row(w: _Window, row: Row) -> OutRow:
    """An OpenPositions row as printed, with value_base and the day's ConversionRate."""
    fx = _fx_rate(w, row["date"], row["currency"], row.get("fx_rate_to_base"), row["conid"])
    out = {name: row.get(name) for name in _OUT_FIELDS}
    out["fx_rate_to_base"] = fx
    out["value_base"] = value_in_base(row["position_value"], fx, row["asset_category"])
    out["source"] = SOURCE_OPEN_POSITIONS
    return tuple(out.values())


_CONID, _LEVEL, _LOT_AT = (
    _OUT_FIELDS.index(n) for n in ("conid", "level_of_detail", "lot_open_at")
)


def _day_sort_key(row: OutRow) -> tuple:
    """Order of one day's rows: conid, SUMMARY before LOT rows, lots by open time."""
    lot_at = row[_LOT_AT]
    return (row[_CONID], row[_LEVEL] != "SUMMARY", lot_at is not None, lot_at or datetime.min)


def _statement_rows(
    w: _Window, skip: set[date], query_has_open_positions: bool
) -> list[tuple[date, list[OutRow]]]:
    """Rows of one statement per report date (dates in ``skip`` left out), each day's rows in
    output order (:func:`_day_sort_key`); none without an OpenPositions snapshot (see the module
    doc)."""
    if not w.anchor_dates and not query_has_open_positions:
        return []
    anchor = _anchor(w)
    days = [d for d in report_dates(w, anchor) if d not in skip]
    quantities = daily_quantities(_end_quantities(w), anchor, w.deltas, days)
    out: list[tuple[date, list[OutRow]]] = []
    for day in days:
        held = quantities[day]
        if day != anchor:
            out.append(
                (day, [_reconstructed_row(w, anchor, day, c, held[c]) for c in sorted(held)])
            )
            continue
        rows: list[OutRow] = []
        for conid, qty in held.items():
            if conid in w.summary:
                rows.append(_printed_row(w, w.summary[conid]))
            else:
                rows.append(_reconstructed_row(w, anchor, day, conid, qty))
            rows.extend(_printed_row(w, lot) for lot in w.lots.get(conid, ()))
        rows.sort(key=_day_sort_key)
        out.append((day, rows))
    return out


def rebuilt_quantities(
    parsed: ParsedFlex, account_id: str, days: Iterable[date]
) -> dict[date, dict[int, Decimal]]:
    """End-of-day non-zero quantity per conid of ``account_id`` on each of ``days`` (any days
    inside a statement window, not only report dates), from the statement of the account with the
    latest toDate whose window holds the day and which has an OpenPositions snapshot; days no
    such statement covers are left out. Used by the tests and to explain a break."""
    inputs = _AccountInputs(parsed)
    tables = inputs.account(account_id)
    out: dict[date, dict[int, Decimal]] = {}
    wanted = set(days)
    infos = [s for s in parsed.statements if s.account_id == account_id]
    for info in sorted(infos, key=lambda s: (s.to_date, s.from_date), reverse=True):
        w = _window(info, tables)
        if not w.anchor_dates and not inputs.snapshot:
            continue
        inside = {d for d in wanted if info.from_date <= d <= info.to_date and d not in out}
        out.update(daily_quantities(_end_quantities(w), _anchor(w), w.deltas, inside))
    return dict(sorted(out.items()))


def _account_table(account_id: str, rows: list[OutRow], sha256: str) -> pa.Table:
    """``rows`` of one account as a :data:`POSITIONS_DAILY` table (one chunk per column)."""
    columns = list(zip(*rows, strict=True))
    arrays = [pa.array([account_id] * len(rows), POSITIONS_DAILY.field("account_id").type)]
    arrays += [
        pa.array(values, POSITIONS_DAILY.field(name).type)
        for name, values in zip(_OUT_FIELDS, columns, strict=True)
    ]
    arrays.append(pa.array([sha256] * len(rows), POSITIONS_DAILY.field("statement_sha256").type))
    return pa.Table.from_arrays(arrays, schema=POSITIONS_DAILY)


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
    computed); one account's input and output rows are Python objects at a time (only the columns
    needed; output rows are tuples, converted to Arrow column by column before the next account,
    the result is one chunk per account), so the Python-object peak is bounded by the largest
    account, not by the statement.
    """
    inputs = _AccountInputs(parsed)
    statements: dict[str, list[StatementInfo]] = defaultdict(list)
    for info in sorted(parsed.statements, key=lambda s: (s.to_date, s.from_date), reverse=True):
        statements[info.account_id].append(info)
    pieces = []
    for account_id in sorted(statements):  # the rows' first sort key: one account at a time
        tables = inputs.account(account_id)
        done: set[date] = set()
        by_day: list[tuple[date, list[OutRow]]] = []
        for info in statements[account_id]:
            statement_days = _statement_rows(_window(info, tables), done, inputs.snapshot)
            done.update(day for day, _ in statement_days)
            by_day.extend(statement_days)
        by_day.sort(key=lambda item: item[0])  # each day comes from one statement
        out = [row for _, rows in by_day for row in rows]
        if out:
            pieces.append(_account_table(account_id, out, parsed.source_sha256))
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
