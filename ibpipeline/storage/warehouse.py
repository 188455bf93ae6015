"""The single DuckDB writer: views over the normalized Parquet in ``<data_dir>/ibpipeline.duckdb``.

Only code running in the ``duckdb_writer`` pool may call ``refresh_views`` (DuckDB allows one
writing process per file). Views live in schema ``normalized`` and read the Parquet files by
absolute path, so every process that opens the database sees the same data.

DuckDB refuses a writer while another process has the file open, even read-only (an analyst's
notebook): ``connect_for_write`` retries such lock errors with exponential back-off before giving
up with the holder named in DuckDB's message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from ibpipeline.storage.parquet import has_files, table_glob, table_names

WAREHOUSE_FILE = "ibpipeline.duckdb"
VIEW_SCHEMA = "normalized"
LOCK_RETRY_DELAYS_S: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 60, 60)
"""Waits between attempts to open the warehouse for writing while another process holds it."""

_log = logging.getLogger(__name__)


def is_lock_error(exc: BaseException) -> bool:
    """True for DuckDB's "Could not set lock on file" (another process has the file open)."""
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def connect_for_write(
    path: Path,
    delays_s: tuple[float, ...] = LOCK_RETRY_DELAYS_S,
    sleep: Callable[[float], None] = time.sleep,
) -> duckdb.DuckDBPyConnection:
    """Open ``path`` read-write, retrying lock errors after each of ``delays_s`` seconds."""
    for attempt, delay in enumerate((*delays_s, None), start=1):
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if delay is None or not is_lock_error(exc):
                raise
            _log.warning(
                "warehouse %s is locked by another process (attempt %d): retry in %g s; %s",
                path,
                attempt,
                delay,
                exc,
            )
            sleep(delay)
    raise AssertionError("unreachable")


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


def refresh_views(
    data_dir: Path, lock_delays_s: tuple[float, ...] = LOCK_RETRY_DELAYS_S
) -> dict[str, int]:
    """Create or replace one view per normalized table; drop views of tables with no files.

    Returns ``{table: row count}`` of the views now defined. The account and date columns come
    from the files themselves (``hive_partitioning = false``), so they keep their Parquet types.
    A lock held by another process is waited for (``connect_for_write``).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    present = [t for t in table_names(data_dir) if has_files(data_dir, t)]
    counts: dict[str, int] = {}
    with connect_for_write(warehouse_path(data_dir), lock_delays_s) as con:
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
