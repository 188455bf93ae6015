"""Asset checks on the marts in ``<data_dir>/ibpipeline.duckdb``.

The three checks of ``daily_nav`` run as one step (``daily_nav_checks``, a multi-asset check: one
process and one connection instead of three, each ~3-5 s of step overhead in a launched run):

- ``nav_reconciles``: on every account day, positions' base values + cash + accruals = NAV. Account
  days without position evidence (securities in NAV but no position rows: the statement has no
  OpenPositions for that day, e.g. IBKR's opening NAV row of the day before ``fromDate``) cannot be
  reconciled: they are skipped and counted (``positions_evidence`` lists them as a WARN).
- ``no_business_day_gaps``: every account has NAV on every business day (Mon-Fri) between its
  first and last NAV day.
- ``latest_day_is_fresh``: the newest NAV day is no older than the previous business day.
- ``positions_evidence`` (on ``positions_daily``, reads the normalized Parquet): WARN listing the
  account days with securities in NAV but no position rows (statements without OpenPositions).
- ``positions_match_ibkr`` (on ``positions_daily``, reads the normalized Parquet): WARN listing
  every (account, day, conid) where IBKR's OpenPositions quantity differs from the quantity
  rebuilt from the neighbouring stored day and the position changes in between.

Uniqueness of each mart's key is checked by the dbt ``unique_combination`` tests, which
dagster-dbt turns into asset checks of the marts. The checks here open the database read-only,
which fails while a writer holds the file, so they run in the ``duckdb_writer`` pool too. On the
DuckLake they read a snapshot while runs write, in no pool.
Household rows (``account_id = 'ALL'``) are derived, so only real accounts are checked.
"""

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ibpipeline.assets.marts import WRITER_POOL
from ibpipeline.flex.position_changes import COLUMNS as CHANGE_COLUMNS
from ibpipeline.flex.position_changes import position_changes
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import parquet, warehouse

HALF_CENT = Decimal("0.005")
MAX_LISTED = 10
MARKET_TZ = ZoneInfo("America/New_York")
DAILY_NAV = dg.AssetKey("daily_nav")

_RECONCILE_SQL = """
with positions as (
  select account_id, date, sum(value) as positions_base, count(*) as n_positions
  from positions_history
  where account_id <> 'ALL'
  group by account_id, date
)
select n.account_id, n.date, n.nav, n.cash,
       coalesce(n.dividend_accruals, 0) + coalesce(n.interest_accruals, 0) as accruals,
       coalesce(p.positions_base, 0) as positions_base, coalesce(p.n_positions, 0) as n_positions,
       -- as positions_evidence: position rows, or no securities in NAV (nothing to hold)
       p.n_positions is not null
         or (coalesce(n.stock, 0) = 0 and coalesce(n.options, 0) = 0 and coalesce(n.bonds, 0) = 0)
         as positions_evidence
from daily_nav as n
left join positions as p using (account_id, date)
where n.account_id <> 'ALL'
order by n.account_id, n.date
"""


class MartsNotBuiltError(FileNotFoundError):
    """The DuckDB file of the marts does not exist yet."""


def open_marts(data_dir: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the warehouse (``<data_dir>/ibpipeline.duckdb`` or the DuckLake)
    in a transaction, so every query reads one snapshot; raises MartsNotBuiltError when the file
    does not exist."""
    if not warehouse.warehouse_exists(data_dir):
        path = warehouse.warehouse_path(data_dir)
        raise MartsNotBuiltError(f"{path} does not exist: materialize the dbt marts first")
    con = warehouse.connect(data_dir, read_only=True)
    con.execute("BEGIN TRANSACTION")
    return con


@dataclass(frozen=True)
class NavDay:
    """One account day of ``daily_nav`` with the summed base values of its positions."""

    account_id: str
    date: date
    nav: Decimal
    cash: Decimal
    accruals: Decimal
    positions_base: Decimal
    n_positions: int
    positions_evidence: bool = True
    """False when NAV holds securities (stock, options, bonds) but the day has no position rows."""

    @property
    def difference(self) -> Decimal:
        """NAV minus its parts (base currency)."""
        return self.nav - (self.cash + self.accruals + self.positions_base)

    @property
    def tolerance(self) -> Decimal:
        """Half a cent per independently rounded amount: NAV, cash, accruals, each position."""
        return HALF_CENT * (self.n_positions + 3)


def nav_breaks(days: Iterable[NavDay]) -> list[NavDay]:
    """The account days with position evidence whose NAV differs from its parts by more than
    their rounding tolerance (a day without evidence has no positions to add up)."""
    return [d for d in days if d.positions_evidence and abs(d.difference) > d.tolerance]


def business_days(start: date, end: date) -> list[date]:
    """Mon-Fri days from ``start`` to ``end`` inclusive."""
    return [
        start + timedelta(days=i)
        for i in range((end - start).days + 1)
        if (start + timedelta(days=i)).weekday() < 5
    ]


def business_day_gaps(days: Iterable[date]) -> list[date]:
    """Business days between the first and last of ``days`` that are missing from them."""
    present = set(days)
    if not present:
        return []
    return [d for d in business_days(min(present), max(present)) if d not in present]


def previous_business_day(today: date) -> date:
    """The last Mon-Fri day strictly before ``today``."""
    day = today - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def market_today(now: datetime | None = None) -> date:
    """Today's date in New York (IBKR report dates end at the US close)."""
    return (now or datetime.now(MARKET_TZ)).astimezone(MARKET_TZ).date()


def _md_list(items: Sequence[object]) -> str:
    shown = [f"- {item}" for item in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        shown.append(f"- ... and {len(items) - MAX_LISTED} more")
    return "\n".join(shown) or "none"


def read_nav_days(con: duckdb.DuckDBPyConnection) -> list[NavDay]:
    """Every real account day of ``daily_nav`` joined to its positions' total."""
    return [NavDay(*row) for row in con.execute(_RECONCILE_SQL).fetchall()]


def read_nav_dates(con: duckdb.DuckDBPyConnection) -> dict[str, list[date]]:
    """NAV dates of every real account in ``daily_nav``."""
    rows = con.execute(
        "select account_id, list(date order by date) from daily_nav "
        "where account_id <> 'ALL' group by account_id order by account_id"
    ).fetchall()
    return {account_id: list(days) for account_id, days in rows}


def nav_reconciles(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """NAV reconciliation of every account day."""
    days = read_nav_days(con)
    breaks = nav_breaks(days)
    checked = [d for d in days if d.positions_evidence]
    skipped = [d for d in days if not d.positions_evidence]
    worst = max((abs(d.difference) for d in checked), default=Decimal(0))
    return dg.AssetCheckResult(
        check_name="nav_reconciles",
        passed=bool(days) and not breaks,
        metadata={
            "account_days": len(days),
            "account_days_reconciled": len(checked),
            "skipped_without_position_evidence": len(skipped),
            "first_skipped": dg.MetadataValue.md(
                _md_list([f"{d.account_id} {d.date}" for d in skipped])
            ),
            "breaks": len(breaks),
            "max_abs_difference": float(worst),
            "first_breaks": dg.MetadataValue.md(
                _md_list([f"{d.account_id} {d.date}: {d.difference} off" for d in breaks])
            ),
        },
    )


def no_business_day_gaps(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """No missing business days inside an account's active range."""
    dates = read_nav_dates(con)
    gaps = {account_id: business_day_gaps(days) for account_id, days in dates.items()}
    missing = [f"{a} {d}" for a, ds in gaps.items() for d in ds]
    return dg.AssetCheckResult(
        check_name="no_business_day_gaps",
        passed=bool(dates) and not missing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "accounts": len(dates),
            "missing_days": len(missing),
            "first_missing": dg.MetadataValue.md(_md_list(missing)),
        },
    )


def stale_accounts(
    latest: Mapping[str, date], closed_on: Mapping[str, date], expected: date
) -> list[str]:
    """Accounts whose newest NAV day is before ``expected``, except those closed by then
    (``closed_on``: the account's ``dateClosed``). Sorted."""
    return sorted(
        account
        for account, day in latest.items()
        if day < expected and not (account in closed_on and closed_on[account] <= expected)
    )


_LATEST_SQL = """
with latest as (
    select account_id, max(date) as latest from daily_nav where account_id <> 'ALL' group by 1
), closed as (
    select account_id, max(date_closed) as closed_on from stg_account_info group by 1
)
select account_id, latest, closed_on from latest left join closed using (account_id)
"""


def latest_day_is_fresh(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """Freshness of the data per account (not of the materialization)."""
    rows = con.execute(_LATEST_SQL).fetchall()
    latest = {account: day for account, day, _ in rows}
    closed = {account: day for account, _, day in rows if day is not None}
    expected = previous_business_day(market_today())
    stale = stale_accounts(latest, closed, expected)
    return dg.AssetCheckResult(
        check_name="latest_day_is_fresh",
        passed=bool(latest) and not stale,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "expected_at_least": str(expected),
            "accounts": len(latest),
            "stale_accounts": len(stale),
            "stale": dg.MetadataValue.md(_md_list([f"{a}: {latest[a]}" for a in stale])),
            "latest_nav_date": str(max(latest.values())) if latest else "none",
        },
    )


DAILY_NAV_CHECKS = {
    "nav_reconciles": (
        nav_reconciles,
        "positions_history value_base + cash + accruals = daily_nav.nav on every account day "
        "with position evidence, within half a cent per rounded amount; days whose NAV holds "
        "securities but which have no position rows are skipped and counted.",
    ),
    "no_business_day_gaps": (
        no_business_day_gaps,
        "Every account has NAV on each Mon-Fri between its first and last NAV day (WARN: real "
        "exchange holidays may legitimately be missing).",
    ),
    "latest_day_is_fresh": (
        latest_day_is_fresh,
        "Every open account's newest NAV day is on or after the previous business day (New "
        "York); stale accounts are listed (closed accounts are not stale).",
    ),
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=DAILY_NAV, description=description)
        for name, (_, description) in DAILY_NAV_CHECKS.items()
    ],
    pool=WRITER_POOL,
    can_subset=True,
    name="daily_nav_checks",
)
def daily_nav_checks(
    context: dg.AssetCheckExecutionContext, data_dir: DataDirResource
) -> Iterator[dg.AssetCheckResult]:
    """The selected checks of ``daily_nav`` in one step (one process, one read-only connection)."""
    selected = {key.name for key in context.selected_asset_check_keys}
    with open_marts(data_dir.root()) as con:
        for name, (check, _) in DAILY_NAV_CHECKS.items():
            if name in selected:
                yield check(con)


mart_checks = [daily_nav_checks]


# --------------------------------------------------------------------------------------------------
# Positions evidence (normalized Parquet, no DuckDB)

POSITIONS_DAILY = dg.AssetKey("positions_daily")
_SECURITY_COLUMNS = ("stock_base", "options_base", "bonds_base")


CHECK_ACCOUNTS_PER_CHUNK = 10
"""Accounts whose rows the positions checks turn into Python objects at a time: the stored tables
of a range stay Arrow (a year of 1,000 accounts: 2.6 M positions_daily rows, 2.7 GB as dicts)."""


def _read_table(
    table_name: str,
    columns: Sequence[str],
    root: Path,
    *,
    days: set[date] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pa.Table | None:
    """``columns`` (those a file has; missing ones read as null) of a normalized table's day files
    in [start, end] (``days``: only those), in file order (date, account); None when none."""
    parts = [
        part
        for part in parquet.list_partitions(table_name, data_dir=root, start=start, end=end)
        if days is None or part.date in days
    ]
    tables = []
    for part in parts:
        file = pq.ParquetFile(part.path)
        tables.append(file.read([c for c in columns if c in file.schema_arrow.names]))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _account_chunks(
    tables: Mapping[str, pa.Table | None], size: int = CHECK_ACCOUNTS_PER_CHUNK
) -> Iterator[dict[str, list[dict]]]:
    """The rows of ``tables`` as dicts, ``size`` accounts at a time (accounts in sorted order;
    each table's row order kept; a table without rows of the chunk gives an empty list)."""
    present = {name: t for name, t in tables.items() if t is not None and t.num_rows}
    accounts = sorted(
        {a for t in present.values() for a in pc.unique(t["account_id"]).to_pylist() if a}
    )
    for i in range(0, len(accounts), size):
        chunk = pa.array(accounts[i : i + size], pa.string())
        yield {
            name: (
                present[name]
                .filter(pc.is_in(present[name]["account_id"].cast(pa.string()), value_set=chunk))
                .to_pylist()
                if name in present
                else []
            )
            for name in tables
        }


def days_without_positions(
    nav_rows: Iterable[Mapping[str, object]], position_rows: Iterable[Mapping[str, object]]
) -> list[tuple[str, date]]:
    """Sorted (account_id, date) of NAV rows whose stock, options or bonds value (base) is
    non-zero but which have no positions_daily row."""
    held = {(r["account_id"], r["date"]) for r in position_rows}
    out = set()
    for r in nav_rows:
        key = (r["account_id"], r["date"])
        if key not in held and any(r.get(c) for c in _SECURITY_COLUMNS):
            out.add(key)
    return sorted(out)  # type: ignore[arg-type]


@dg.asset_check(
    asset=POSITIONS_DAILY,
    additional_deps=["nav_daily"],
    description="WARN: account days whose nav_daily has a non-zero stock, options or bonds value "
    "(base currency) but no positions_daily row, i.e. days the statements give no position "
    "evidence for (no OpenPositions snapshot). Covers the run's days, or every stored day.",
)
def positions_evidence(
    context: dg.AssetCheckExecutionContext, data_dir: DataDirResource
) -> dg.AssetCheckResult:
    """List the account days with securities in NAV but no positions."""
    root = data_dir.root()
    days = None
    if context.has_partition_key or context.has_partition_key_range:
        days = {date.fromisoformat(key) for key in context.partition_keys}
    nav = _read_table("nav_daily", ("account_id", "date", *_SECURITY_COLUMNS), root, days=days)
    positions = _read_table("positions_daily", ("account_id", "date"), root, days=days)
    if positions is not None:  # one row per held account day
        positions = positions.group_by(["account_id", "date"]).aggregate([])
    missing: list[tuple[str, date]] = []
    for rows in _account_chunks({"nav": nav, "positions": positions}):
        missing.extend(days_without_positions(rows["nav"], rows["positions"]))
    nav_days = 0 if nav is None else nav.group_by(["account_id", "date"]).aggregate([]).num_rows
    by_account: dict[str, int] = {}
    for account_id, _ in missing:
        by_account[account_id] = by_account.get(account_id, 0) + 1
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "nav_account_days": nav_days,
            "days_without_positions": len(missing),
            "by_account": dg.MetadataValue.json(by_account),
            "first_missing": dg.MetadataValue.md(_md_list([f"{a} {d}" for a, d in missing])),
        },
    )


# --------------------------------------------------------------------------------------------------
# Positions against IBKR's snapshots (normalized Parquet)

_POSITION_COLUMNS = ("account_id", "date", "conid", "level_of_detail", "quantity", "source")
_CHECK_WINDOW_DAYS = 10
"""Calendar days read before and after a partitioned run's days (to find each day's neighbour)."""


def _qty(value: Decimal) -> str:
    """A quantity without exponent or trailing zeros (``100``, ``0.5``)."""
    return format(value.normalize(), "f") if value else "0"


@dataclass(frozen=True)
class PositionBreak:
    """A conid whose IBKR quantity on ``date`` differs from the one rebuilt from the neighbouring
    stored day (``from_date``) and the position changes in between."""

    account_id: str
    date: date
    conid: int
    ibkr_quantity: Decimal
    rebuilt_quantity: Decimal
    from_date: date

    def line(self) -> str:
        return (
            f"{self.account_id} {self.date} conid {self.conid}: IBKR {_qty(self.ibkr_quantity)}, "
            f"rebuilt {_qty(self.rebuilt_quantity)} (from {self.from_date})"
        )


def position_breaks(
    position_rows: Iterable[Mapping[str, object]],
    changes: Iterable[tuple[str, date, int, Decimal]],
    covered_days: set[date] | None = None,
) -> list[PositionBreak]:
    """Breaks between consecutive stored position days of each account.

    ``position_rows``: positions_daily SUMMARY rows (``source`` "OpenPositions" marks IBKR's
    snapshot); ``changes``: (account, date, conid, signed quantity) from
    :func:`ibpipeline.flex.position_changes.position_changes`. For consecutive stored days P < D of
    an account, quantities(D) must equal quantities(P) + changes in (P, D]. Where D is IBKR's
    snapshot the rebuilt side is P walked forward; else, where P is, it is D walked back; two
    reconstructed days are not compared. ``covered_days``: the days whose event files are stored;
    a pair with a weekday in (P, D] outside them is skipped (unknown changes)."""
    held: dict[str, dict[date, dict[int, Decimal]]] = defaultdict(lambda: defaultdict(dict))
    snapshot: set[tuple[str, date]] = set()
    for r in position_rows:
        if r.get("level_of_detail") not in (None, "SUMMARY") or r.get("conid") is None:
            continue
        account, day = r["account_id"], r["date"]
        held[account][day][r["conid"]] = r["quantity"]  # type: ignore[index]
        if r.get("source") == "OpenPositions":
            snapshot.add((account, day))  # type: ignore[arg-type]
    moves: dict[str, dict[date, dict[int, Decimal]]] = defaultdict(lambda: defaultdict(dict))
    for account, day, conid, qty in changes:
        day_moves = moves[account][day]
        day_moves[conid] = day_moves.get(conid, Decimal(0)) + qty
    out: list[PositionBreak] = []
    for account in sorted(held):
        days = sorted(held[account])
        for prev, day in zip(days, days[1:], strict=False):
            ibkr_day = (account, day) in snapshot
            if not ibkr_day and (account, prev) not in snapshot:
                continue
            between = business_days(prev + timedelta(days=1), day)
            if covered_days is not None and any(d not in covered_days for d in between):
                continue
            delta: dict[int, Decimal] = defaultdict(Decimal)
            for d, day_moves in moves[account].items():
                if prev < d <= day:
                    for conid, qty in day_moves.items():
                        delta[conid] += qty
            before, after = held[account][prev], held[account][day]
            for conid in sorted(set(before) | set(after) | set(delta)):
                forward = before.get(conid, Decimal(0)) + delta.get(conid, Decimal(0))
                if forward == after.get(conid, Decimal(0)):
                    continue
                if ibkr_day:
                    ibkr, rebuilt, at, source = after.get(conid, Decimal(0)), forward, day, prev
                else:
                    backward = after.get(conid, Decimal(0)) - delta.get(conid, Decimal(0))
                    ibkr, rebuilt, at, source = before.get(conid, Decimal(0)), backward, prev, day
                out.append(PositionBreak(account, at, conid, ibkr, rebuilt, source))
    return out


def _stored_changes(
    root: Path, start: date | None, end: date | None
) -> tuple[dict[str, pa.Table | None], set[date]]:
    """The columns position changes are read from (``CHANGE_COLUMNS``) of every stored event
    table's day files in [start, end], and the days whose trades file is stored."""
    tables = {
        name: _read_table(name, ("account_id", "date", *columns), root, start=start, end=end)
        for name, columns in CHANGE_COLUMNS.items()
    }
    covered = {
        p.date for p in parquet.list_partitions("trades", data_dir=root, start=start, end=end)
    }
    return tables, covered


@dg.asset_check(
    asset=POSITIONS_DAILY,
    additional_deps=["trades"],
    description="WARN: every break between positions_daily and IBKR's OpenPositions snapshots: "
    "for consecutive stored days of an account, one of them IBKR's snapshot, the other day's "
    "quantities walked through the stored trades, corporate actions, option events, transfers and "
    "stock grants in between must equal IBKR's. Lists account, day, conid and both quantities.",
)
def positions_match_ibkr(
    context: dg.AssetCheckExecutionContext, data_dir: DataDirResource
) -> dg.AssetCheckResult:
    """Compare the rebuilt positions with every OpenPositions snapshot stored."""
    root = data_dir.root()
    start = end = None
    run_days: set[date] | None = None
    if context.has_partition_key or context.has_partition_key_range:
        run_days = {date.fromisoformat(key) for key in context.partition_keys}
        start = min(run_days) - timedelta(days=_CHECK_WINDOW_DAYS)
        end = max(run_days) + timedelta(days=_CHECK_WINDOW_DAYS)
    positions = _read_table("positions_daily", _POSITION_COLUMNS, root, start=start, end=end)
    events, covered = _stored_changes(root, start, end)
    breaks: list[PositionBreak] = []
    for rows in _account_chunks({"positions_daily": positions, **events}):
        by_account: dict[str, dict[str, list[dict]]] = defaultdict(dict)
        for name in events:
            for r in rows[name]:
                by_account[r["account_id"]].setdefault(name, []).append(r)
        changes = [
            (account, c.date, c.conid, c.quantity)
            for account, tables in by_account.items()
            for c in position_changes(tables)
        ]
        breaks.extend(position_breaks(rows["positions_daily"], changes, covered))
    if run_days is not None:
        breaks = [b for b in breaks if b.date in run_days]
    snapshots = 0
    if positions is not None:
        snapshot_rows = positions.filter(pc.equal(positions["source"], "OpenPositions"))
        snapshots = snapshot_rows.group_by(["account_id", "date"]).aggregate([]).num_rows
    return dg.AssetCheckResult(
        passed=not breaks,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "snapshot_account_days": snapshots,
            "breaks": len(breaks),
            "accounts_with_breaks": len({b.account_id for b in breaks}),
            "first_breaks": dg.MetadataValue.md(_md_list([b.line() for b in breaks])),
            "all_breaks": dg.MetadataValue.json(
                [
                    {
                        "account_id": b.account_id,
                        "date": b.date.isoformat(),
                        "conid": b.conid,
                        "ibkr_quantity": _qty(b.ibkr_quantity),
                        "rebuilt_quantity": _qty(b.rebuilt_quantity),
                        "rebuilt_from": b.from_date.isoformat(),
                    }
                    for b in breaks
                ]
            ),
        },
    )


positions_checks = [positions_evidence, positions_match_ibkr]
