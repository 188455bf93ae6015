"""IB Gateway snapshots: raw JSON lines, normalized intraday tables, and a check against Flex NAV.

Assets

- ``gateway_snapshot_raw`` (unpartitioned, pool ``ib_gateway``): one materialization is one
  snapshot of every gateway, kept as captured in
  ``<data_dir>/raw/gateway/date=<YYYY-MM-DD>/<snapshot_id>.jsonl`` (``date`` = US/Eastern date of
  the capture; file written once, atomically, never modified). Some gateways failing is recorded
  in the metadata; all failing fails the step with the collector's error naming every gateway,
  and writes nothing. Account ids found are validated and registered as ``account`` partitions.
- ``gateway_account_values``, ``gateway_positions``, ``gateway_pnl`` (one ``@multi_asset`` over
  ``gateway_account_daily``): partition ``(account, day)`` is rebuilt from *all* raw snapshot files
  of that day (deduplicated on ``snapshot_id``) and replaced atomically in the per-account layout
  ``<data_dir>/normalized/<table>/account_id=<id>/date=<day>/part-0.parquet``. Appending a
  snapshot is therefore exactly idempotent: re-running a partition with the same raw files writes
  the same rows, and every partition is backfillable from raw.
- Check ``gateway_vs_flex_nav``: the last trustworthy snapshot's ``NetLiquidation`` of a day vs
  that day's Flex ``nav_daily.total_base``, per account, in base currency.
- Check ``gateway_snapshots_trustworthy`` (WARN): rows read while a gateway had lost connectivity
  (1100, 2110) or data (1101); they stay in the tables with ``trustworthy = false``.

Partitioning choice (tested with dagster 1.13.27)

- A snapshot captures "now", so the raw asset is not partitioned: it is never backfilled, and the
  UI's Materialize button takes a snapshot without choosing a partition.
- The normalized tables use ``gateway_account_daily`` = the shared dynamic ``account`` dimension x
  ``gateway_daily``, a daily definition in America/New_York with ``end_offset=1``. The shared
  ``daily`` (UTC, ``end_offset=0``) has no partition for *today* until the day is over, so a
  snapshot run could not target today's partition (``partition_key`` of a future day raises
  ``DagsterUnknownPartitionError``, and the launchpad cannot select it). Nothing partitioned is
  upstream of these tables, so no partition mapping to ``daily`` is needed.
- ``gateway_snapshot_job`` (raw + tables + check) runs over a partition range
  ``<first account>|<day> .. <last account>|<day>`` of every registered account (the range of a
  multi-partition is the cross product of the dimension ranges). Accounts first seen by a run's
  raw step are registered then, but a running range cannot grow: their partitions are written by
  the next run, which loses nothing since it rebuilds the whole day from the raw files.
  ``take_snapshot`` in ``ibpipeline.automation.gateway_schedule`` registers first, then launches.
"""

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ibpipeline import settings
from ibpipeline.assets.normalized import column_schema, preview_markdown, split_by
from ibpipeline.gateway.collector import (
    CollectionResult,
    GatewayCollectionError,
    GatewayOutcome,
    to_jsonl,
)
from ibpipeline.gateway.schema import (
    EASTERN,
    TABLE_SCHEMAS,
    float_to_decimal,
    report_date,
    text_to_decimal,
)
from ibpipeline.partitions import ACCOUNT_DIMENSION, DATE_DIMENSION, accounts, register_accounts
from ibpipeline.resources import DataDirResource, GatewayResource
from ibpipeline.storage import atomic_write_bytes, parquet

GATEWAY_TABLES: tuple[str, ...] = tuple(TABLE_SCHEMAS)
SNAPSHOT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAV_KEY = "NetLiquidation"
NAV_TOLERANCE_BASE = Decimal("0.01")
MAX_LISTED_DIFFERENCES = 200

gateway_daily = dg.DailyPartitionsDefinition(
    start_date=settings.start_date(), timezone=str(EASTERN), end_offset=1
)
gateway_account_daily = dg.MultiPartitionsDefinition(
    {ACCOUNT_DIMENSION: accounts, DATE_DIMENSION: gateway_daily}
)


PartitionId = tuple[str, date]
"""One ``gateway_account_daily`` partition: ``(account_id, New York date)``."""


def selected_partitions(keys: Iterable[str]) -> list[PartitionId]:
    """``(account_id, date)`` of ``gateway_account_daily`` key strings, sorted and de-duplicated."""
    out = set()
    for key in keys:
        by_dim = gateway_account_daily.get_partition_key_from_str(key).keys_by_dimension
        out.add((by_dim[ACCOUNT_DIMENSION], date.fromisoformat(by_dim[DATE_DIMENSION])))
    return sorted(out)


class RawSnapshotError(ValueError):
    """A stored raw gateway snapshot file is malformed or misplaced."""


# --------------------------------------------------------------------------------------------------
# Raw snapshot files


def gateway_raw_root(data_dir: Path) -> Path:
    """``<data_dir>/raw/gateway``."""
    return Path(data_dir) / "raw" / "gateway"


def snapshot_path(data_dir: Path, day: date, snapshot_id: str) -> Path:
    """``<data_dir>/raw/gateway/date=<day>/<snapshot_id>.jsonl``."""
    if not SNAPSHOT_ID_RE.fullmatch(snapshot_id):
        raise ValueError(f"invalid snapshot id {snapshot_id!r}")
    return gateway_raw_root(data_dir) / f"date={day.isoformat()}" / f"{snapshot_id}.jsonl"


def write_snapshot(data_dir: Path, result: CollectionResult, content: bytes) -> Path:
    """Store one snapshot's JSON lines (``to_jsonl(result)``) once, atomically; return the path.

    Raises FileExistsError when that snapshot id is already stored (raw files are immutable).
    """
    path = snapshot_path(data_dir, report_date(result.captured_at), result.snapshot_id)
    if path.exists():
        raise FileExistsError(f"raw gateway snapshot {path} already exists")
    atomic_write_bytes(path, content)
    return path


def _read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise RawSnapshotError(f"{path}:{number}: not JSON ({exc.msg})") from exc
    ids = {r.get("snapshot_id") for r in records}
    if len(ids) != 1 or not records:
        raise RawSnapshotError(f"{path}: expected the records of one snapshot, got ids {ids}")
    return records


def read_day_snapshots(data_dir: Path, day: date) -> list[list[dict[str, Any]]]:
    """The records of every stored snapshot of ``day``, one list per snapshot id, ordered by
    (capture time, id). A snapshot stored twice (copied file) counts once.

    Raises RawSnapshotError for malformed files and for snapshots captured on another day.
    """
    folder = gateway_raw_root(data_dir) / f"date={day.isoformat()}"
    by_id: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        records = _read_records(path)
        snapshot_id = records[0]["snapshot_id"]
        captured = report_date(datetime.fromisoformat(records[0]["captured_at"]))
        if captured != day:
            raise RawSnapshotError(f"{path}: snapshot {snapshot_id} was captured on {captured}")
        by_id.setdefault(snapshot_id, records)
    return sorted(by_id.values(), key=lambda r: (r[0]["captured_at"], r[0]["snapshot_id"]))


# --------------------------------------------------------------------------------------------------
# Raw records -> normalized rows (the inverse of the collector's records; same rows as its tables)


def _value_rows(items: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    ordered = sorted(items, key=lambda v: (v["account"], v["key"], v["currency"], v["model_code"]))
    return [
        {
            "account_id": v["account"],
            "source": source,
            "key": v["key"],
            "value": v["value"],
            "value_decimal": text_to_decimal(v["value"]),
            "currency": v["currency"],
            "model_code": v["model_code"],
        }
        for v in ordered
    ]


def _position_rows(
    portfolio_items: list[dict[str, Any]], position_items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Portfolio items joined with positions on (account, conid), as the collector does."""
    portfolio = {(p["account"], p["contract"]["conId"]): p for p in portfolio_items}
    positions = {(p["account"], p["contract"]["conId"]): p for p in position_items}
    rows = []
    for key in sorted(portfolio.keys() | positions.keys()):
        item, pos = portfolio.get(key), positions.get(key)
        contract = (pos or item)["contract"]
        exchange = (pos["contract"]["exchange"] if pos else "") or (
            item["contract"]["primaryExchange"] if item else ""
        )
        rows.append(
            {
                "account_id": key[0],
                "conid": key[1],
                "symbol": contract["symbol"],
                "sec_type": contract["secType"],
                "currency": contract["currency"],
                "exchange": exchange,
                "position": float_to_decimal(pos["position"] if pos else item["position"]),
                "avg_cost": float_to_decimal(pos["avg_cost"] if pos else item["average_cost"]),
                "market_price": float_to_decimal(item["market_price"]) if item else None,
                "market_value": float_to_decimal(item["market_value"]) if item else None,
                "unrealized_pnl": float_to_decimal(item["unrealized_pnl"]) if item else None,
                "realized_pnl": float_to_decimal(item["realized_pnl"]) if item else None,
            }
        )
    return rows


def _pnl_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "account_id": p["account"],
            "daily_pnl": float_to_decimal(p["daily_pnl"]),
            "unrealized_pnl": float_to_decimal(p["unrealized_pnl"]),
            "realized_pnl": float_to_decimal(p["realized_pnl"]),
        }
        for p in items
    ]


def snapshot_rows(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows of the three gateway tables for the records of one snapshot.

    Gateways come in the order of their status records; kinds other than the collector's
    (``gateway``, ``account_value``, ``account_summary``, ``portfolio``, ``position``, ``pnl``)
    are kept in raw only.
    """
    captured_at = datetime.fromisoformat(records[0]["captured_at"])
    common = {
        "snapshot_id": records[0]["snapshot_id"],
        "captured_at": captured_at,
        "date": report_date(captured_at),
    }
    by_kind: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_kind[(record["gateway"], record["kind"])].append(record)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in GATEWAY_TABLES}
    for status in (r for r in records if r["kind"] == "gateway"):
        gateway = status["gateway"]
        trust = {"gateway": gateway, "trustworthy": bool(status.get("trustworthy", True))}
        parts = {
            "gateway_account_values": _value_rows(
                by_kind[(gateway, "account_value")], "account_update"
            )
            + _value_rows(by_kind[(gateway, "account_summary")], "account_summary"),
            "gateway_positions": _position_rows(
                by_kind[(gateway, "portfolio")], by_kind[(gateway, "position")]
            ),
            "gateway_pnl": _pnl_rows(by_kind[(gateway, "pnl")]),
        }
        for name, rows in parts.items():
            out[name] += [common | trust | row for row in rows]
    return out


def snapshots_tables(snapshots: Iterable[Sequence[dict[str, Any]]]) -> dict[str, pa.Table]:
    """The three gateway tables (``gateway.schema``) of several snapshots, in the given order."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in GATEWAY_TABLES}
    for records in snapshots:
        for name, part in snapshot_rows(records).items():
            rows[name] += part
    return {
        name: pa.Table.from_pylist(rows[name], schema=TABLE_SCHEMAS[name])
        for name in GATEWAY_TABLES
    }


# --------------------------------------------------------------------------------------------------
# Normalized partitions


@dataclass
class TableWrite:
    """What one run wrote for one table."""

    rows: int = 0
    partitions: int = 0
    untrustworthy_rows: int = 0
    preview: pa.Table | None = None


def normalize_gateway_partitions(
    data_dir: Path, partitions: Sequence[PartitionId], tables: Iterable[str]
) -> tuple[dict[str, TableWrite], set[str]]:
    """Replace every selected (table, account, day) partition from the day's raw snapshots.

    Each day's raw files are read once; partitions without rows get an empty file with the schema.
    Returns per-table write stats and the snapshot ids the written rows came from.
    """
    tables = tuple(tables)
    by_day: dict[date, list[PartitionId]] = defaultdict(list)
    for account_id, day in partitions:
        by_day[day].append((account_id, day))
    stats = {name: TableWrite() for name in tables}
    snapshot_ids: set[str] = set()
    for day, wanted in sorted(by_day.items()):
        built = snapshots_tables(read_day_snapshots(data_dir, day))
        for name in tables:
            groups = split_by(built[name], ("account_id", "date"), set(wanted))
            empty = TABLE_SCHEMAS[name].empty_table()
            for account_id, _ in wanted:
                part = groups.get((account_id, day), empty)
                parquet.write_partition(name, account_id, day, part, data_dir=data_dir)
                snapshot_ids.update(part["snapshot_id"].to_pylist())
                stats[name].rows += part.num_rows
                stats[name].partitions += 1
                trusted = pc.sum(part["trustworthy"], min_count=0).as_py()
                stats[name].untrustworthy_rows += part.num_rows - trusted
                if stats[name].preview is None and part.num_rows:
                    stats[name].preview = part
    return stats, snapshot_ids


# --------------------------------------------------------------------------------------------------
# Gateway NAV vs Flex NAV


@dataclass(frozen=True)
class NavComparison:
    """Last snapshot NetLiquidation of an account-day vs Flex ``total_base`` (both base currency).

    ``difference_base`` = gateway - Flex.
    """

    account_id: str
    date: date
    snapshot_id: str
    captured_at: datetime
    gateway_nlv: Decimal
    gateway_currency: str
    flex_total_base: Decimal
    flex_currency: str

    @property
    def difference_base(self) -> Decimal:
        return self.gateway_nlv - self.flex_total_base

    def within(self, tolerance: Decimal) -> bool:
        """Same currency and ``|difference_base| <= tolerance``."""
        same = self.gateway_currency == self.flex_currency
        return same and abs(self.difference_base) <= tolerance

    def as_json(self) -> dict[str, str]:
        return {
            "account_id": self.account_id,
            "date": self.date.isoformat(),
            "snapshot_id": self.snapshot_id,
            "captured_at": self.captured_at.isoformat(),
            "gateway_nlv": str(self.gateway_nlv),
            "gateway_currency": self.gateway_currency,
            "flex_total_base": str(self.flex_total_base),
            "flex_currency": self.flex_currency,
            "difference_base": str(self.difference_base),
        }


def last_net_liquidation(table: pa.Table) -> dict[str, Any] | None:
    """The ``NetLiquidation`` row of the latest trustworthy snapshot in an account-day's account
    values (account summary preferred over account updates), or None when there is none."""
    rows = [
        r
        for r in table.to_pylist()
        if r["key"] == NAV_KEY and r["value_decimal"] is not None and r.get("trustworthy", True)
    ]
    if not rows:
        return None
    return max(
        rows,
        key=lambda r: (r["captured_at"], r["snapshot_id"], r["source"] == "account_summary"),
    )


def compare_nav(
    data_dir: Path, account_id: str, day: date
) -> tuple[NavComparison | None, str | None]:
    """Compare one account-day; return ``(comparison, None)`` or ``(None, reason it was skipped)``."""
    gw_path = parquet.partition_path(data_dir, "gateway_account_values", account_id, day)
    nlv = last_net_liquidation(pq.read_table(gw_path)) if gw_path.exists() else None
    if nlv is None:
        return None, f"{account_id} {day}: no trustworthy gateway snapshot with {NAV_KEY}"
    flex_day = parquet.read_day("nav_daily", day, data_dir=data_dir, account_id=account_id)
    flex = [] if flex_day is None else flex_day.to_pylist()
    if not flex or flex[0]["total_base"] is None:
        return None, f"{account_id} {day}: no Flex nav_daily (total_base) for that day yet"
    return (
        NavComparison(
            account_id=account_id,
            date=day,
            snapshot_id=nlv["snapshot_id"],
            captured_at=nlv["captured_at"],
            gateway_nlv=nlv["value_decimal"],
            gateway_currency=nlv["currency"],
            flex_total_base=flex[0]["total_base"],
            flex_currency=flex[0]["base_currency"],
        ),
        None,
    )


def nav_check_result(
    comparisons: Sequence[NavComparison], skipped: Sequence[str], tolerance: Decimal
) -> dg.AssetCheckResult:
    """WARN when any compared account-day differs by more than ``tolerance`` (or in currency);
    pass otherwise, including when nothing could be compared (reasons in ``skipped``).

    Metadata ``differences`` lists the comparisons largest ``|difference_base|`` first (at most
    ``MAX_LISTED_DIFFERENCES``), exact decimals as strings.
    """
    off = [c for c in comparisons if not c.within(tolerance)]
    largest_first = sorted(comparisons, key=lambda c: -abs(c.difference_base))
    worst = abs(largest_first[0].difference_base) if comparisons else Decimal(0)
    if not comparisons:
        description = "nothing compared: " + "; ".join(skipped[:5])
    elif off:
        description = f"{len(off)} of {len(comparisons)} account-days differ: " + "; ".join(
            f"{c.account_id} {c.date} {c.difference_base:+} {c.gateway_currency}"
            f"{'' if c.gateway_currency == c.flex_currency else ' vs ' + c.flex_currency}"
            for c in off[:5]
        )
    else:
        description = f"{len(comparisons)} account-days within {tolerance} base currency"
    return dg.AssetCheckResult(
        passed=not off,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "compared": len(comparisons),
            "above_tolerance": len(off),
            "tolerance_base": str(tolerance),
            "max_abs_difference_base": str(worst),
            "differences": dg.MetadataValue.json(
                [c.as_json() for c in largest_first[:MAX_LISTED_DIFFERENCES]]
            ),
            "skipped": dg.MetadataValue.json(list(skipped)),
        },
    )


# --------------------------------------------------------------------------------------------------
# Dagster definitions


def outcomes_metadata(outcomes: Sequence[GatewayOutcome]) -> dict[str, dict[str, Any]]:
    """Per-gateway status for metadata: ok, accounts, attempts, error, connectivity, trust."""
    return {
        o.address: {
            "ok": o.ok,
            "accounts": list(o.accounts),
            "attempts": o.attempts,
            "error": o.error,
            "connectivity_codes": list(o.connectivity_codes),
            "trustworthy": o.trustworthy,
        }
        for o in outcomes
    }


@dg.asset(
    pool="ib_gateway",
    group_name="raw",
    kinds={"json"},
    description=(
        "One snapshot of every IB Gateway (account values and summary, portfolio, positions, "
        "PnL) kept as captured: `raw/gateway/date=<day>/<snapshot_id>.jsonl`."
    ),
)
def gateway_snapshot_raw(
    context: dg.AssetExecutionContext, gateway: GatewayResource, data_dir: DataDirResource
) -> dg.MaterializeResult:
    """Collect, register the accounts found, store the JSON lines; fail when no gateway answers."""
    try:
        result = gateway.collect()
    except GatewayCollectionError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={"gateways": dg.MetadataValue.json(outcomes_metadata(exc.outcomes))},
        ) from exc
    for outcome in result.gateways:
        if not outcome.ok:
            context.log.warning(f"gateway {outcome.address} failed: {outcome.error}")
        elif not outcome.trustworthy:
            context.log.warning(
                f"gateway {outcome.address} reported connectivity codes "
                f"{list(outcome.connectivity_codes)}: its data is stored as not trustworthy"
            )
    new_accounts = register_accounts(context.instance, result.accounts)
    content = to_jsonl(result)
    path = write_snapshot(data_dir.root(), result, content)
    day = report_date(result.captured_at)
    context.log.info(
        f"snapshot {result.snapshot_id} of {day}: accounts {list(result.accounts)} "
        f"(new: {new_accounts}), {len(content)} bytes -> {path}"
    )
    return dg.MaterializeResult(
        metadata={
            "snapshot_id": result.snapshot_id,
            "captured_at": result.captured_at.isoformat(),
            "date": day.isoformat(),
            "accounts": list(result.accounts),
            "new_accounts": new_accounts,
            "partial": not all(o.ok for o in result.gateways),
            "trustworthy": all(o.trustworthy for o in result.gateways if o.ok),
            "gateways": dg.MetadataValue.json(outcomes_metadata(result.gateways)),
            "path": dg.MetadataValue.path(str(path)),
            "size_bytes": len(content),
        }
    )


def _table_metadata(
    name: str, stats: TableWrite, partitions: Sequence[PartitionId], snapshot_ids: set[str]
) -> Mapping[str, object]:
    days = sorted({d for _, d in partitions})
    metadata: dict[str, object] = {
        "dagster/row_count": stats.rows,
        "partitions_written": stats.partitions,
        "date_range": f"{days[0]}..{days[-1]}",
        "accounts": sorted({a for a, _ in partitions}),
        "snapshots": len(snapshot_ids),
        "untrustworthy_rows": stats.untrustworthy_rows,
        "dagster/column_schema": column_schema(TABLE_SCHEMAS[name]),
    }
    if stats.preview is not None:
        metadata["preview"] = dg.MetadataValue.md(preview_markdown(stats.preview))
    return metadata


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            name,
            deps=[gateway_snapshot_raw],
            group_name="normalized",
            kinds={"parquet"},
            description=(
                f"Gateway snapshots {name.removeprefix('gateway_')}, every snapshot of the day: "
                f"`data/normalized/{name}/account_id=<id>/date=<day>/`"
            ),
        )
        for name in GATEWAY_TABLES
    ],
    partitions_def=gateway_account_daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def gateway_tables(
    context: dg.AssetExecutionContext, data_dir: DataDirResource
) -> Iterator[dg.MaterializeResult]:
    """Rebuild the selected (account, day) partitions from all raw snapshots of their days."""
    partitions = selected_partitions(context.partition_keys)
    selected = {k.path[-1] for k in context.selected_asset_keys}
    tables = [name for name in GATEWAY_TABLES if name in selected]
    stats, snapshot_ids = normalize_gateway_partitions(data_dir.root(), partitions, tables)
    for name in tables:
        context.log.info(f"{name}: {stats[name].rows} rows in {stats[name].partitions} partitions")
        yield dg.MaterializeResult(
            asset_key=name, metadata=_table_metadata(name, stats[name], partitions, snapshot_ids)
        )


def _check_scope(context: dg.AssetCheckExecutionContext, root: Path) -> list[PartitionId]:
    """The run's partitions, or every stored gateway account-day when run on its own."""
    if context.has_partition_key or context.has_partition_key_range:
        return selected_partitions(context.partition_keys)
    return [
        (p.account_id, p.date)
        for p in parquet.list_partitions("gateway_account_values", data_dir=root)
    ]


@dg.asset_check(
    asset="gateway_account_values",
    additional_deps=["nav_daily"],
    description=(
        "Last gateway snapshot NetLiquidation of each account-day vs Flex nav_daily.total_base "
        f"(base currency); warns above {NAV_TOLERANCE_BASE}. Covers the run's partitions, or "
        "every stored gateway account-day when run on its own."
    ),
)
def gateway_vs_flex_nav(
    context: dg.AssetCheckExecutionContext, data_dir: DataDirResource
) -> dg.AssetCheckResult:
    """Compare every account-day in scope; skip those without gateway or Flex data."""
    root = data_dir.root()
    comparisons, skipped = [], []
    for account_id, day in _check_scope(context, root):
        comparison, reason = compare_nav(root, account_id, day)
        if comparison is None:
            skipped.append(reason)
        else:
            comparisons.append(comparison)
    return nav_check_result(comparisons, skipped, NAV_TOLERANCE_BASE)


@dg.asset_check(
    asset="gateway_account_values",
    description=(
        "Warns when gateway rows were read while a gateway had lost connectivity (1100, 2110) or "
        "data (1101): trustworthy = false, excluded from gateway_vs_flex_nav."
    ),
)
def gateway_snapshots_trustworthy(
    context: dg.AssetCheckExecutionContext, data_dir: DataDirResource
) -> dg.AssetCheckResult:
    """WARN listing the untrustworthy snapshots of the run's partitions (or of every stored one)."""
    root = data_dir.root()
    untrusted: dict[tuple[str, str, str], int] = defaultdict(int)
    rows = 0
    for account_id, day in _check_scope(context, root):
        path = parquet.partition_path(root, "gateway_account_values", account_id, day)
        if not path.exists():
            continue
        table = pq.read_table(path, columns=["snapshot_id", "gateway", "trustworthy"])
        rows += table.num_rows
        for r in table.filter(pc.invert(table["trustworthy"])).to_pylist():
            untrusted[(account_id, r["snapshot_id"], r["gateway"])] += 1
    listed = [
        {"account_id": a, "snapshot_id": s, "gateway": g, "rows": n}
        for (a, s, g), n in sorted(untrusted.items())
    ]
    snapshots = sorted({s for _, s, _ in untrusted})
    return dg.AssetCheckResult(
        passed=not untrusted,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(snapshots)} snapshot(s) read during lost connectivity or data: "
            + ", ".join(snapshots[:5])
            if untrusted
            else f"all {rows} rows trustworthy"
        ),
        metadata={
            "rows": rows,
            "untrustworthy_rows": sum(untrusted.values()),
            "untrustworthy": dg.MetadataValue.json(listed[:MAX_LISTED_DIFFERENCES]),
        },
    )


gateway_assets = [gateway_snapshot_raw, gateway_tables]
gateway_checks = [gateway_vs_flex_nav, gateway_snapshots_trustworthy]
