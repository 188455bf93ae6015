"""Normalized Flex tables: one ``@multi_asset`` over account x date, parsing each statement once.

For the run's selected (account, date) keys the asset reads the per-date manifests, groups the
dates by the statement that covers them, parses each statement once, reconstructs daily positions,
and replaces every selected partition's Parquet file (an empty file when the partition has no rows).
"""

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ibpipeline.assets.raw import raw_flex_statement
from ibpipeline.flex.parse import ParsedFlex, parse_statement
from ibpipeline.flex.positions import reconstruct_daily_positions
from ibpipeline.partitions import account_daily, split_account_date_key
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import parquet, rawstore

PARSED_TABLES: tuple[str, ...] = (
    "account_info",
    "nav_daily",
    "change_in_nav",
    "cash_balances",
    "trades",
    "cash_transactions",
    "fx_rates",
)
NORMALIZED_TABLES: tuple[str, ...] = (*PARSED_TABLES[:4], "positions_daily", *PARSED_TABLES[4:])
PREVIEW_ROWS = 5

PartitionId = tuple[str, date]


class MissingRawStatementError(Exception):
    """A selected report date has no raw statement manifest (fetch it first)."""


def selected_partitions(keys: Iterable[str]) -> list[PartitionId]:
    """``(account_id, date)`` of ``account_daily`` key strings, sorted and de-duplicated."""
    out = set()
    for key in keys:
        account_id, day = split_account_date_key(key)
        out.add((account_id, date.fromisoformat(day)))
    return sorted(out)


def manifests_for(data_dir: Path, days: Iterable[date]) -> dict[date, rawstore.Manifest]:
    """The manifest of every day; raises MissingRawStatementError naming all days without one."""
    found, missing = {}, []
    for day in sorted(set(days)):
        manifest = rawstore.read_manifest(data_dir, day)
        if manifest is None:
            missing.append(day)
        else:
            found[day] = manifest
    if missing:
        listed = ", ".join(d.isoformat() for d in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise MissingRawStatementError(
            f"no raw Flex statement for report date(s) {listed}{more}: materialize "
            f"raw_flex_statement for {missing[0]}..{missing[-1]} first"
        )
    return found


def split_by_partition(table: pa.Table, wanted: set[PartitionId]) -> dict[PartitionId, pa.Table]:
    """Rows of ``table`` grouped by ``(account_id, date)``, keeping only the ``wanted`` groups.

    Row order inside a group is preserved. ``table`` must have ``account_id`` and ``date`` columns.
    """
    if table.num_rows == 0 or not wanted:
        return {}
    order = pc.sort_indices(
        pa.table(
            {"a": table["account_id"], "d": table["date"], "i": pa.array(range(table.num_rows))}
        ),
        sort_keys=[("a", "ascending"), ("d", "ascending"), ("i", "ascending")],
    )
    ordered = table.take(order)
    accounts = ordered["account_id"].to_pylist()
    days = ordered["date"].to_pylist()
    out: dict[PartitionId, pa.Table] = {}
    start = 0
    for i in range(1, len(accounts) + 1):
        if i == len(accounts) or (accounts[i], days[i]) != (accounts[start], days[start]):
            key = (accounts[start], days[start])
            if key in wanted:
                out[key] = ordered.slice(start, i - start)
            start = i
    return out


def parsed_tables(parsed: ParsedFlex) -> dict[str, pa.Table]:
    """Every normalized table of a parsed statement (positions reconstructed per day)."""
    tables = {name: parsed.tables[name] for name in PARSED_TABLES}
    tables["positions_daily"] = reconstruct_daily_positions(parsed)
    return tables


def statement_tables(content: bytes, sha256: str) -> dict[str, pa.Table]:
    """Every normalized table of one stored statement (parsed once)."""
    return parsed_tables(parse_statement(content, source_sha256=sha256))


def preview_markdown(table: pa.Table, rows: int = PREVIEW_ROWS) -> str:
    """A Markdown table of the first ``rows`` rows (values via ``str``)."""
    head = table.slice(0, rows).to_pylist()
    names = table.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(str(r[n]) for n in names) + " |" for r in head]
    return "\n".join(lines)


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """Dagster column schema of an Arrow schema."""
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


@dataclass
class TableStats:
    """What one run wrote for one table: rows, partition files, schema, first non-empty part."""

    rows: int = 0
    partitions: int = 0
    schema: pa.Schema | None = None
    preview: pa.Table | None = None

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        self.partitions += 1
        self.schema = self.schema or table.schema
        if self.preview is None and table.num_rows:
            self.preview = table


def normalize_partitions(
    data_dir: Path, partitions: list[PartitionId], tables: Iterable[str]
) -> dict[str, TableStats]:
    """Write every selected (table, account, date) partition from the stored statements.

    Each statement is read and parsed once; a date's rows come only from the statement its
    manifest points at. Raises MissingRawStatementError before writing anything when a date has
    no manifest.
    """
    tables = tuple(tables)
    manifests = manifests_for(data_dir, (d for _, d in partitions))
    by_sha: dict[str, list[PartitionId]] = defaultdict(list)
    for account_id, day in partitions:
        by_sha[manifests[day].sha256].append((account_id, day))
    stats = {name: TableStats() for name in tables}
    for sha256, wanted in sorted(by_sha.items()):
        parsed = statement_tables(rawstore.read_statement(data_dir, sha256), sha256)
        for name in tables:
            groups = split_by_partition(parsed[name], set(wanted))
            empty = parsed[name].schema.empty_table()
            for account_id, day in wanted:
                part = groups.get((account_id, day), empty)
                parquet.write_partition(name, account_id, day, part, data_dir=data_dir)
                stats[name].add(part)
    return stats


def _metadata(stats: TableStats, partitions: list[PartitionId]) -> Mapping[str, object]:
    days = [d for _, d in partitions]
    # The same metadata lands on every partition of the run, so the standard row count is only
    # set when the run wrote exactly one partition.
    metadata: dict[str, object] = {
        "rows_in_run": stats.rows,
        "partitions_in_run": stats.partitions,
        "date_range": f"{min(days)}..{max(days)}",
        "accounts": sorted({a for a, _ in partitions}),
    }
    if stats.partitions == 1:
        metadata["dagster/row_count"] = stats.rows
    if stats.schema is not None:
        metadata["dagster/column_schema"] = column_schema(stats.schema)
    if stats.preview is not None:
        metadata["preview"] = dg.MetadataValue.md(preview_markdown(stats.preview))
    return metadata


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            name,
            deps=[raw_flex_statement],
            group_name="normalized",
            kinds={"parquet"},
            description=f"Flex {name}: data/normalized/{name}/account_id=<id>/date=<day>/",
        )
        for name in NORMALIZED_TABLES
    ],
    partitions_def=account_daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def normalized_flex(
    context: dg.AssetExecutionContext, data_dir: DataDirResource
) -> Iterator[dg.MaterializeResult]:
    """Parse the run's statements once and write each selected table's partitions."""
    # partition_keys is the cross product of the dimension ranges in a range run and the one key
    # otherwise; never branch on has_partition_key (False in range runs).
    partitions = selected_partitions(context.partition_keys)
    selected = [k.path[-1] for k in context.selected_asset_keys]
    tables = [name for name in NORMALIZED_TABLES if name in selected]
    stats = normalize_partitions(data_dir.root(), partitions, tables)
    for name in tables:
        context.log.info(f"{name}: {stats[name].rows} rows in {stats[name].partitions} partitions")
        yield dg.MaterializeResult(asset_key=name, metadata=_metadata(stats[name], partitions))
