"""The DuckDB views (the single writer of the file, pool ``duckdb_writer``; no pool on the DuckLake).

- ``warehouse_views`` (in ``flex_daily_job``): ``normalized.<table>`` and its alias ``main.<table>``
  over every normalized table with files, the gateway ones included.
- ``gateway_warehouse_views`` (after a gateway snapshot): the same for the gateway tables only, so
  ``gateway_account_values``, ``gateway_positions`` and ``gateway_pnl`` are queryable from DuckDB
  as soon as the first snapshot is stored, whether or not a Flex run ever happened. The views read
  the Parquet files by glob, so later snapshots show up without redefining them.
"""

from collections.abc import Iterable

import dagster as dg

from ibpipeline.assets.normalized import NORMALIZED_TABLES
from ibpipeline.gateway.schema import TABLE_SCHEMAS as GATEWAY_SCHEMAS
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import warehouse

GATEWAY_VIEW_TABLES: tuple[str, ...] = tuple(GATEWAY_SCHEMAS)


def _refresh(
    context: dg.AssetExecutionContext, data_dir: DataDirResource, tables: Iterable[str] | None
) -> dg.MaterializeResult:
    root = data_dir.root()
    counts = warehouse.refresh_views(root, tables=tables)
    context.log.info(f"refreshed {len(counts)} views in {warehouse.describe(root)}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(warehouse.describe(root)),
            "views": sorted(counts),
            **{f"rows_{table}": count for table, count in counts.items()},
        }
    )


@dg.asset(
    deps=list(NORMALIZED_TABLES),
    pool=warehouse.writer_pool(),
    group_name="warehouse",
    kinds={"duckdb"},
    description=(
        "Views `normalized.<table>` (and the alias `main.<table>`) in `<data_dir>/ibpipeline.duckdb` "
        "over the Parquet files of every normalized table, the gateway ones included."
    ),
)
def warehouse_views(
    context: dg.AssetExecutionContext, data_dir: DataDirResource
) -> dg.MaterializeResult:
    """Create or replace the views; report each view's row count."""
    return _refresh(context, data_dir, None)


@dg.asset(
    deps=list(GATEWAY_VIEW_TABLES),
    pool=warehouse.writer_pool(),
    group_name="warehouse",
    kinds={"duckdb"},
    description=(
        "Views `normalized.<table>` (and the alias `main.<table>`) in `<data_dir>/ibpipeline.duckdb` "
        "over the gateway tables' Parquet files (gateway_account_values, gateway_positions, "
        "gateway_pnl)."
    ),
)
def gateway_warehouse_views(
    context: dg.AssetExecutionContext, data_dir: DataDirResource
) -> dg.MaterializeResult:
    """Create or replace the gateway tables' views; report each view's row count."""
    return _refresh(context, data_dir, GATEWAY_VIEW_TABLES)
