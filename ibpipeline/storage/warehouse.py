"""The single DuckDB writer: views over the normalized Parquet in ``<data_dir>/ibpipeline.duckdb``.

Only code running in the ``duckdb_writer`` pool may call ``refresh_views`` (DuckDB allows one
writing process per file). Views live in schema ``normalized`` and read the Parquet files by
absolute path, so every process that opens the database sees the same data.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ibpipeline.storage.parquet import has_files, table_glob, table_names

WAREHOUSE_FILE = "ibpipeline.duckdb"
VIEW_SCHEMA = "normalized"


def warehouse_path(data_dir: Path) -> Path:
    """``<data_dir>/ibpipeline.duckdb``."""
    return Path(data_dir) / WAREHOUSE_FILE


def view_sql(data_dir: Path, table_name: str) -> str:
    """``CREATE OR REPLACE VIEW`` statement of one normalized table."""
    glob = table_glob(data_dir, table_name).replace("'", "''")
    return (
        f'CREATE OR REPLACE VIEW {VIEW_SCHEMA}."{table_name}" AS '
        f"SELECT * FROM read_parquet('{glob}', hive_partitioning = false, union_by_name = true)"
    )


def refresh_views(data_dir: Path) -> dict[str, int]:
    """Create or replace one view per normalized table; drop views of tables with no files.

    Returns ``{table: row count}`` of the views now defined. The account and date columns come
    from the files themselves (``hive_partitioning = false``), so they keep their Parquet types.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    present = [t for t in table_names(data_dir) if has_files(data_dir, t)]
    counts: dict[str, int] = {}
    with duckdb.connect(str(warehouse_path(data_dir))) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {VIEW_SCHEMA}")
        existing = {
            row[0]
            for row in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE schema_name = ? AND NOT internal",
                [VIEW_SCHEMA],
            ).fetchall()
        }
        for stale in sorted(existing - set(present)):
            con.execute(f'DROP VIEW {VIEW_SCHEMA}."{stale}"')
        for table in present:
            con.execute(view_sql(data_dir, table))
            counts[table] = con.execute(f'SELECT count(*) FROM {VIEW_SCHEMA}."{table}"').fetchone()[
                0
            ]
    return counts
