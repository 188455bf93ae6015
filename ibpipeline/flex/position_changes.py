"""What changes a position, per Flex section: the rules daily positions are rebuilt with.

:func:`position_changes` turns one account's rows of a statement window into signed quantity
changes per (report date, conid). Every rule keeps IBKR's own sign: a row's ``quantity`` is the
change of the position of its ``conid`` (+ more long / less short), so no action type needs its
ratio parsed from the description. Rows that hold no security position (``CASH``, no conid,
quantity 0 or null) change nothing.

- **Trades** (``trades``): EXECUTION rows. This includes IBKR's book trades of an option event:
  the option closed by an exercise, assignment or expiry and the stock leg delivered, written as
  Trades with notes ``Ex``, ``A`` or ``Ep`` (transactionType ``BookTrade``).
- **Corporate actions** (``corporate_actions``), every type alike: forward split (``FS``: usually
  one row adding the new shares to the same conid, or a pair old -n / new +n x ratio), reverse
  split (``RS``: pair removing the old conid and adding the new one), stock dividend / bonus
  (``SD``, ``HI``: one row adding shares), merger for stock and/or cash (``TC``: old conid -n, new
  conid(s) +n x ratio, cash in ``proceeds``), spin-off (``SO``: one row adding the new company),
  ISIN/CUSIP or symbol change (``IC``: old -n, new +n), tender (``TO``), bond maturity and calls
  (``BM``), delisting (``DW``), rights, cancellations (``code`` Ca: the correcting row carries the
  opposite sign). DETAIL rows count; the SUMMARY rows that repeat them (IBKR writes both, the
  SUMMARY rows with ``accountId="-"``) are used only for a (report date, conid) that has no
  DETAIL row, i.e. when the query's level of detail prints summaries only. Dated by reportDate.
- **Option events** (``option_events``, OptionEAE): exercise, assignment, expiration (the option
  row) and the stock leg (``Buy``/``Sell`` row). IBKR also books each of these as a Trade; an
  OptionEAE row is a position change only when the account's Trades of the window hold no
  EXECUTION with its tradeID, nor one of the same conid and quantity on its date (report or trade
  date) with notes ``A``, ``Ex``, ``Ep`` or transactionType ``BookTrade`` (never counted twice).
- **Transfers** (``transfers``): every non-SUMMARY row (``DETAIL``, ``TRANSFER``) of a security,
  ACATS, ATON, FOP and internal alike; ``direction`` IN adds and OUT removes ``|quantity|`` (IBKR
  writes OUT quantities both negative and positive); without a direction the quantity's own sign.
- **Stock grants** (``stock_grants``, StockGrantActivities): the granted quantity is added on the
  row's date (IBKR lists unvested granted shares in OpenPositions, with their vestingDate).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

Row = dict[str, object]

EVENT_NOTES = frozenset({"A", "Ex", "Ep"})
"""Trade notes of IBKR's option-event book trades: assignment, exercise, expiration."""

SOURCES = ("trades", "corporate_actions", "option_events", "transfers", "stock_grants")
_BASE = ("level_of_detail", "conid", "asset_category", "quantity")
COLUMNS: dict[str, tuple[str, ...]] = {
    "trades": (*_BASE, "trade_id", "trade_date", "transaction_type", "notes"),
    "corporate_actions": (*_BASE, "type", "code", "action_id"),
    "option_events": (*_BASE, "trade_id", "transaction_type"),
    "transfers": (*_BASE, "direction", "type"),
    "stock_grants": (*_BASE,),
}
"""Columns each source is read with (besides ``account_id`` and ``date``); a column a table lacks
reads as null."""


@dataclass(frozen=True)
class Change:
    """A signed change of the position of ``conid`` on report date ``date``; ``row`` is the row it
    comes from, ``source`` its table."""

    date: date
    conid: int
    quantity: Decimal
    source: str
    row: Row


def _holds_security(row: Mapping[str, object]) -> bool:
    return (
        row.get("conid") is not None
        and row.get("asset_category") != "CASH"
        and bool(row.get("quantity"))
    )


def _notes(row: Mapping[str, object]) -> set[str]:
    text = row.get("notes") or ""
    return {n.strip() for n in str(text).replace(",", ";").split(";") if n.strip()}


def trade_changes(trades: Iterable[Row]) -> list[Change]:
    """EXECUTION rows of a security."""
    return [
        Change(r["date"], r["conid"], r["quantity"], "trades", r)  # type: ignore[arg-type]
        for r in trades
        if r.get("level_of_detail") == "EXECUTION" and _holds_security(r)
    ]


def corporate_action_changes(actions: Iterable[Row]) -> list[Change]:
    """DETAIL rows; SUMMARY rows only for a (date, conid) without DETAIL rows."""
    rows = [r for r in actions if _holds_security(r)]
    detailed = {(r["date"], r["conid"]) for r in rows if r.get("level_of_detail") != "SUMMARY"}
    return [
        Change(r["date"], r["conid"], r["quantity"], "corporate_actions", r)  # type: ignore[arg-type]
        for r in rows
        if r.get("level_of_detail") != "SUMMARY" or (r["date"], r["conid"]) not in detailed
    ]


def option_event_changes(events: Iterable[Row], trades: Iterable[Row]) -> list[Change]:
    """OptionEAE rows IBKR did not also book as a Trade of the window (see the module doc)."""
    executions = [r for r in trades if r.get("level_of_detail") == "EXECUTION"]
    trade_ids = {r["trade_id"] for r in executions if r.get("trade_id")}
    booked = set()
    for r in executions:
        if r.get("conid") is None or r.get("quantity") is None:
            continue
        if _notes(r) & EVENT_NOTES or r.get("transaction_type") == "BookTrade":
            for day in {r.get("date"), r.get("trade_date")} - {None}:
                booked.add((day, r["conid"], r["quantity"]))
    out = []
    for r in events:
        if r.get("level_of_detail") == "SUMMARY" or not _holds_security(r):
            continue
        if r.get("trade_id") and r["trade_id"] in trade_ids:
            continue
        if (r["date"], r["conid"], r["quantity"]) in booked:
            continue
        out.append(Change(r["date"], r["conid"], r["quantity"], "option_events", r))  # type: ignore[arg-type]
    return out


def transfer_changes(transfers: Iterable[Row]) -> list[Change]:
    """Non-SUMMARY security transfers, signed by ``direction``."""
    out = []
    for r in transfers:
        if r.get("level_of_detail") == "SUMMARY" or not _holds_security(r):
            continue
        qty: Decimal = r["quantity"]  # type: ignore[assignment]
        sign = {"IN": 1, "OUT": -1}.get(str(r.get("direction") or "").upper())
        out.append(
            Change(r["date"], r["conid"], qty if sign is None else sign * abs(qty), "transfers", r)  # type: ignore[arg-type]
        )
    return out


def stock_grant_changes(grants: Iterable[Row]) -> list[Change]:
    """Granted quantities (non-SUMMARY rows)."""
    return [
        Change(r["date"], r["conid"], r["quantity"], "stock_grants", r)  # type: ignore[arg-type]
        for r in grants
        if r.get("level_of_detail") != "SUMMARY" and _holds_security(r)
    ]


def position_changes(rows: Mapping[str, Iterable[Row]]) -> list[Change]:
    """Every position change of one account's rows (table name -> rows; absent tables are empty),
    in source order: trades, corporate actions, option events, transfers, stock grants."""
    trades = list(rows.get("trades", ()))
    return [
        *trade_changes(trades),
        *corporate_action_changes(rows.get("corporate_actions", ())),
        *option_event_changes(rows.get("option_events", ()), trades),
        *transfer_changes(rows.get("transfers", ())),
        *stock_grant_changes(rows.get("stock_grants", ())),
    ]
