"""The single DuckDB writer: views over the normalized Parquet in ``<data_dir>/ibpipeline.duckdb``.

Only code running in the ``duckdb_writer`` pool may call ``refresh_views`` (DuckDB allows one
writing process per file). Views live in schema ``normalized`` and read the Parquet files by
absolute path, so every process that opens the database sees the same data, and a partition
written after the view was defined shows up at once. Every table, the Flex ones and the gateway
ones, also gets an alias view of the same name in the default schema ``main`` (where the dbt marts
are), so ``select * from gateway_positions`` works as ``select * from normalized.gateway_positions``
does; an alias never replaces an object of that name it did not create (e.g. a dbt model).

DuckDB refuses a writer while another process has the file open, even read-only (an analyst's
notebook): ``connect_for_write`` retries such lock errors with exponential back-off before giving
up with the holder named in DuckDB's message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from pathlib import Path

import duckdb

from ibpipeline.storage.parquet import has_files, list_partitions, table_glob, table_names

WAREHOUSE_FILE = "ibpipeline.duckdb"
VIEW_SCHEMA = "normalized"
ALIAS_SCHEMA = "main"
ALIAS_COMMENT = "ibpipeline: alias of normalized.{table}"
"""Comment of each alias view in ``main``: how ``refresh_views`` recognizes the ones it owns."""
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


def alias_sql(table_name: str) -> str:
    """``CREATE OR REPLACE VIEW main.<table>`` over ``normalized.<table>``."""
    return (
        f'CREATE OR REPLACE VIEW {ALIAS_SCHEMA}."{table_name}" AS '
        f'SELECT * FROM {VIEW_SCHEMA}."{table_name}"'
    )


def _views(con: duckdb.DuckDBPyConnection, schema: str) -> dict[str, str | None]:
    """``{view name: comment}`` of the views of ``schema``."""
    rows = con.execute(
        "SELECT view_name, comment FROM duckdb_views() "
        "WHERE database_name = current_database() AND schema_name = ? AND NOT internal",
        [schema],
    ).fetchall()
    return {name: comment for name, comment in rows}


def _other_objects(con: duckdb.DuckDBPyConnection, schema: str) -> set[str]:
    """Names of the tables of ``schema`` (dbt marts): never replaced by an alias."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = ?",
        [schema],
    ).fetchall()
    return {row[0] for row in rows}


def refresh_views(
    data_dir: Path,
    lock_delays_s: tuple[float, ...] = LOCK_RETRY_DELAYS_S,
    tables: Iterable[str] | None = None,
) -> dict[str, int]:
    """Create or replace one view per normalized table (``normalized.<table>`` and its alias
    ``main.<table>``); drop the views of tables with no files.

    ``tables`` limits the refresh to those tables (e.g. the gateway ones after a snapshot); by
    default every table with a folder under ``<data_dir>/normalized``. Returns ``{table: row
    count}`` of the views now defined among them. The account and date columns come from the
    files themselves (``hive_partitioning = false``), so they keep their Parquet types. A lock
    held by another process is waited for (``connect_for_write``).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    scope = set(table_names(data_dir) if tables is None else tables)
    present = sorted(t for t in scope if has_files(data_dir, t))
    counts: dict[str, int] = {}
    with connect_for_write(warehouse_path(data_dir), lock_delays_s) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {VIEW_SCHEMA}")
        views = _views(con, VIEW_SCHEMA)
        aliases = {
            name
            for name, comment in _views(con, ALIAS_SCHEMA).items()
            if comment == ALIAS_COMMENT.format(table=name)
        }
        stale = {t for t in views if tables is None or t in scope} - set(present)
        for table in sorted(stale & aliases):
            con.execute(f'DROP VIEW {ALIAS_SCHEMA}."{table}"')
        for table in sorted(stale):
            con.execute(f'DROP VIEW {VIEW_SCHEMA}."{table}"')
        taken = _other_objects(con, ALIAS_SCHEMA) | (set(_views(con, ALIAS_SCHEMA)) - aliases)
        for table in present:
            con.execute(view_sql(data_dir, table))
            counts[table] = con.execute(f'SELECT count(*) FROM {VIEW_SCHEMA}."{table}"').fetchone()[
                0
            ]
            if table in taken:
                _log.warning(
                    "%s.%s exists and is not an ibpipeline alias: query %s.%s",
                    ALIAS_SCHEMA,
                    table,
                    VIEW_SCHEMA,
                    table,
                )
                continue
            con.execute(alias_sql(table))
            comment = ALIAS_COMMENT.format(table=table).replace("'", "''")
            con.execute(f"COMMENT ON VIEW {ALIAS_SCHEMA}.\"{table}\" IS '{comment}'")
    return counts


LANDING_SCHEMA = "landing"
"""Schema of the DuckDB copies of the normalized Flex tables that the dbt staging models read."""


def _table_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> set[str] | None:
    """Column names of ``schema.table`` (None when there is no such table)."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = ? AND table_name = ?",
        [schema, table],
    ).fetchall()
    return {row[0] for row in rows} or None


def _parquet_list(files: list[Path]) -> str:
    """``read_parquet([...])`` of exactly ``files`` (no glob: nothing outside them is opened)."""
    quoted = ", ".join("'" + str(f.resolve()).replace("'", "''") + "'" for f in files)
    return f"read_parquet([{quoted}], hive_partitioning = false, union_by_name = true)"


def load_landing(
    data_dir: Path,
    tables: Iterable[str],
    window: tuple[date, date] | None = None,
    lock_delays_s: tuple[float, ...] = LOCK_RETRY_DELAYS_S,
) -> dict[str, int]:
    """Copy the normalized Parquet rows of ``window`` (``start <= date < end``; None = all days)
    into ``landing.<table>`` of the warehouse, replacing that window's rows; return ``{table:
    rows loaded}``.

    The dbt models read these tables, not the Parquet files: a view over thousands of day files
    re-opens every file each time a model or test binds it, a table is read once per run. Only the
    window's files are opened. A table is loaded whole instead when it does not exist yet, when
    ``window`` is None, or when the window's files carry a column the table lacks (files written
    by a newer version). Each table is replaced in one transaction: a failure keeps its old rows.
    A window with no file of a table deletes that window's rows (the day's rows are gone).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    loaded: dict[str, int] = {}
    with connect_for_write(warehouse_path(data_dir), lock_delays_s) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {LANDING_SCHEMA}")
        for table in sorted(set(tables)):
            target = f'{LANDING_SCHEMA}."{table}"'
            existing = _table_columns(con, LANDING_SCHEMA, table)
            if window is None or existing is None:
                files = [p.path for p in list_partitions(table, data_dir=data_dir)]
                whole = True
            else:
                start, end = window
                last = end - timedelta(days=1)
                files = [
                    p.path for p in list_partitions(table, data_dir=data_dir, start=start, end=last)
                ]
                whole = False
                if files:
                    described = con.execute(f"DESCRIBE SELECT * FROM {_parquet_list(files)}")
                    if {row[0] for row in described.fetchall()} - existing:
                        files = [p.path for p in list_partitions(table, data_dir=data_dir)]
                        whole = True
            con.execute("BEGIN TRANSACTION")
            try:
                if whole:
                    if not files:
                        con.execute(f"DROP TABLE IF EXISTS {target}")
                        con.execute("COMMIT")
                        loaded[table] = 0
                        continue
                    con.execute(
                        f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {_parquet_list(files)}"
                    )
                else:
                    con.execute(f"DELETE FROM {target} WHERE date >= ? AND date < ?", [start, end])
                    if files:
                        con.execute(
                            f"INSERT INTO {target} BY NAME SELECT * FROM {_parquet_list(files)}"
                        )
                loaded[table] = con.execute(
                    f"SELECT count(*) FROM {target} WHERE date >= ? AND date < ?",
                    list(window or (date.min, date.max)),
                ).fetchone()[0]
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    return loaded
