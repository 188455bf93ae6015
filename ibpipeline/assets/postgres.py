"""``postgres_marts``: copy the dbt marts from DuckDB into a Postgres schema (optional).

Registered only when ``$IBPIPELINE_POSTGRES_DSN`` is set; the DSN (it may carry a password) reaches
the resource only as ``dg.EnvVar`` and is never logged. The asset runs in pool ``duckdb_writer``:
it opens the DuckDB file read-only, which fails while dbt (the writer) holds it. On the DuckLake it
takes no pool and copies one snapshot of every mart.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from ibpipeline.resources import DataDirResource
from ibpipeline.storage import postgres, warehouse

DBT_MARTS_DIR = Path(__file__).resolve().parents[2] / "dbt_project" / "models" / "marts"


def mart_names(folder: Path = DBT_MARTS_DIR) -> list[str]:
    """Names of the dbt mart models (``models/marts/*.sql``), sorted."""
    return sorted(p.stem for p in folder.glob("*.sql"))


class PostgresWarehouseResource(dg.ConfigurableResource):
    """Target Postgres database of the marts."""

    dsn: str = Field(description="libpq DSN; always pass dg.EnvVar('IBPIPELINE_POSTGRES_DSN').")
    schema_name: str = Field(default="marts", description="Schema the marts are copied into.")


MART_NAMES = mart_names()


@dg.asset(
    deps=[dg.AssetKey(name) for name in MART_NAMES],
    pool=warehouse.writer_pool(),
    group_name="warehouse",
    kinds={"postgres"},
    description="The dbt marts copied from DuckDB into Postgres (one transaction, COPY).",
)
def postgres_marts(
    context: dg.AssetExecutionContext,
    data_dir: DataDirResource,
    postgres_warehouse: PostgresWarehouseResource,
) -> dg.MaterializeResult:
    """Replace every mart table present in DuckDB; raise when none is present."""
    root = data_dir.root()
    if not warehouse.warehouse_exists(root):
        raise postgres.PostgresLoadError(
            f"no DuckDB warehouse at {warehouse.warehouse_path(root)}: build the marts first"
        )
    with warehouse.connect(root, read_only=True) as con:
        con.execute("BEGIN TRANSACTION")  # one snapshot of every mart
        present = set(postgres.duckdb_tables(con, "main"))
        tables = [name for name in MART_NAMES if name in present]
        missing = [name for name in MART_NAMES if name not in present]
        if not tables:
            raise postgres.PostgresLoadError(
                f"none of the marts {MART_NAMES} exists in {warehouse.describe(root)}"
            )
        if missing:
            context.log.warning(f"marts not built yet, not copied: {missing}")
        counts = postgres.copy_connection_to_postgres(
            con, postgres_warehouse.dsn, tables, postgres_warehouse.schema_name
        )
    for name, rows in counts.items():
        context.log.info(f"{postgres_warehouse.schema_name}.{name}: {rows} rows")
    return dg.MaterializeResult(
        metadata={
            "schema": postgres_warehouse.schema_name,
            "tables": sorted(counts),
            "missing": missing,
            "dagster/row_count": sum(counts.values()),
            **{f"rows_{name}": rows for name, rows in counts.items()},
        }
    )
