"""Asset checks on the marts in ``<data_dir>/ibpipeline.duckdb``.

- ``nav_reconciles``: on every account day, positions' base values + cash + accruals = NAV.
- ``no_business_day_gaps``: every account has NAV on every business day (Mon-Fri) between its
  first and last NAV day.
- ``latest_day_is_fresh``: the newest NAV day is no older than the previous business day.
- ``positions_evidence`` (on ``positions_daily``, reads the normalized Parquet): WARN listing the
  account days with securities in NAV but no position rows (statements without OpenPositions).

Uniqueness of each mart's key is checked by the dbt ``unique_combination`` tests, which
dagster-dbt turns into asset checks of the marts. The checks here open the database read-only,
which fails while a writer holds the file, so they run in the ``duckdb_writer`` pool too.
Household rows (``account_id = 'ALL'``) are derived, so only real accounts are checked.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pyarrow.parquet as pq

from ibpipeline.assets.marts import DUCKDB_POOL
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import parquet
from ibpipeline.storage.warehouse import warehouse_path

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
       coalesce(p.positions_base, 0) as positions_base, coalesce(p.n_positions, 0) as n_positions
from daily_nav as n
left join positions as p using (account_id, date)
where n.account_id <> 'ALL'
order by n.account_id, n.date
"""


class MartsNotBuiltError(FileNotFoundError):
    """The DuckDB file of the marts does not exist yet."""


def open_marts(data_dir: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to ``<data_dir>/ibpipeline.duckdb`` (raises MartsNotBuiltError)."""
    path = warehouse_path(data_dir)
    if not path.is_file():
        raise MartsNotBuiltError(f"{path} does not exist: materialize the dbt marts first")
    return duckdb.connect(str(path), read_only=True)


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

    @property
    def difference(self) -> Decimal:
        """NAV minus its parts (base currency)."""
        return self.nav - (self.cash + self.accruals + self.positions_base)

    @property
    def tolerance(self) -> Decimal:
        """Half a cent per independently rounded amount: NAV, cash, accruals, each position."""
        return HALF_CENT * (self.n_positions + 3)


def nav_breaks(days: Iterable[NavDay]) -> list[NavDay]:
    """The account days whose NAV differs from its parts by more than their rounding tolerance."""
    return [d for d in days if abs(d.difference) > d.tolerance]


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


@dg.asset_check(
    asset=DAILY_NAV,
    pool=DUCKDB_POOL,
    description="positions_history value_base + cash + accruals = daily_nav.nav on every account "
    "day, within half a cent per rounded amount.",
)
def nav_reconciles(data_dir: DataDirResource) -> dg.AssetCheckResult:
    """NAV reconciliation of every account day."""
    with open_marts(data_dir.root()) as con:
        days = read_nav_days(con)
    breaks = nav_breaks(days)
    worst = max((abs(d.difference) for d in days), default=Decimal(0))
    return dg.AssetCheckResult(
        passed=bool(days) and not breaks,
        metadata={
            "account_days": len(days),
            "breaks": len(breaks),
            "max_abs_difference": float(worst),
            "first_breaks": dg.MetadataValue.md(
                _md_list([f"{d.account_id} {d.date}: {d.difference} off" for d in breaks])
            ),
        },
    )


@dg.asset_check(
    asset=DAILY_NAV,
    pool=DUCKDB_POOL,
    description="Every account has NAV on each Mon-Fri between its first and last NAV day "
    "(WARN: real exchange holidays may legitimately be missing).",
)
def no_business_day_gaps(data_dir: DataDirResource) -> dg.AssetCheckResult:
    """No missing business days inside an account's active range."""
    with open_marts(data_dir.root()) as con:
        dates = read_nav_dates(con)
    gaps = {account_id: business_day_gaps(days) for account_id, days in dates.items()}
    missing = [f"{a} {d}" for a, ds in gaps.items() for d in ds]
    return dg.AssetCheckResult(
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


@dg.asset_check(
    asset=DAILY_NAV,
    pool=DUCKDB_POOL,
    description="Every open account's newest NAV day is on or after the previous business day "
    "(New York); stale accounts are listed (closed accounts are not stale).",
)
def latest_day_is_fresh(data_dir: DataDirResource) -> dg.AssetCheckResult:
    """Freshness of the data per account (not of the materialization)."""
    with open_marts(data_dir.root()) as con:
        rows = con.execute(_LATEST_SQL).fetchall()
    latest = {account: day for account, day, _ in rows}
    closed = {account: day for account, _, day in rows if day is not None}
    expected = previous_business_day(market_today())
    stale = stale_accounts(latest, closed, expected)
    return dg.AssetCheckResult(
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


mart_checks = [nav_reconciles, no_business_day_gaps, latest_day_is_fresh]


# --------------------------------------------------------------------------------------------------
# Positions evidence (normalized Parquet, no DuckDB)

POSITIONS_DAILY = dg.AssetKey("positions_daily")
_SECURITY_COLUMNS = ("stock_base", "options_base", "bonds_base")


def _read_columns(table_name: str, columns: Sequence[str], root: Path, days: set[date] | None):
    """``columns`` of a normalized table's stored day files (``days``: only those; None = all)."""
    rows: list[dict] = []
    for part in parquet.list_partitions(table_name, data_dir=root):
        if days is not None and part.date not in days:
            continue
        table = pq.ParquetFile(part.path).read()
        rows.extend(table.select([c for c in columns if c in table.column_names]).to_pylist())
    return rows


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
    nav = _read_columns("nav_daily", ("account_id", "date", *_SECURITY_COLUMNS), root, days)
    positions = _read_columns("positions_daily", ("account_id", "date"), root, days)
    missing = days_without_positions(nav, positions)
    by_account: dict[str, int] = {}
    for account_id, _ in missing:
        by_account[account_id] = by_account.get(account_id, 0) + 1
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "nav_account_days": len({(r["account_id"], r["date"]) for r in nav}),
            "days_without_positions": len(missing),
            "by_account": dg.MetadataValue.json(by_account),
            "first_missing": dg.MetadataValue.md(_md_list([f"{a} {d}" for a, d in missing])),
        },
    )


positions_checks = [positions_evidence]
