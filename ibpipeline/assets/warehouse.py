"""``warehouse_views``: the DuckDB views over every normalized table (the single writer)."""

import dagster as dg

from ibpipeline.assets.normalized import NORMALIZED_TABLES
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import warehouse


@dg.asset(
    deps=list(NORMALIZED_TABLES),
    pool="duckdb_writer",
    group_name="warehouse",
    kinds={"duckdb"},
    description="Views normalized.<table> in <data_dir>/ibpipeline.duckdb over the Parquet files.",
)
def warehouse_views(
    context: dg.AssetExecutionContext, data_dir: DataDirResource
) -> dg.MaterializeResult:
    """Create or replace the views; report each view's row count."""
    root = data_dir.root()
    counts = warehouse.refresh_views(root)
    context.log.info(f"refreshed {len(counts)} views in {warehouse.warehouse_path(root)}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(warehouse.warehouse_path(root))),
            "views": sorted(counts),
            **{f"rows_{table}": count for table, count in counts.items()},
        }
    )
