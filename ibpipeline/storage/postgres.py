"""Copy DuckDB tables into a Postgres schema with psycopg2 ``COPY`` (DuckDB's postgres extension
is not used: it must be downloaded at run time).

Each table is replaced atomically: its rows are loaded into ``<schema>.<table>__load`` and, in the
same transaction, the old table is dropped and the new one renamed, so Postgres readers see the
old rows or the new rows, never a mix. Values travel as CSV text: decimals keep every digit,
timestamps keep their UTC offset, NULL and the empty string stay distinct.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import duckdb
import psycopg2
import pyarrow.csv as pacsv
from psycopg2 import sql

IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIMPLE_TYPES = {
    "BOOLEAN": "boolean",
    "TINYINT": "smallint",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "HUGEINT": "numeric(38, 0)",
    "UTINYINT": "smallint",
    "USMALLINT": "integer",
    "UINTEGER": "bigint",
    "UBIGINT": "numeric(20, 0)",
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "DATE": "date",
    "TIME": "time",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "VARCHAR": "text",
    "UUID": "uuid",
    "INTERVAL": "interval",
}
_DECIMAL_RE = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


class PostgresLoadError(Exception):
    """A table cannot be copied (unknown table, invalid identifier)."""


def check_identifier(name: str) -> str:
    """Return ``name`` when it is a plain SQL identifier, else raise PostgresLoadError."""
    if not IDENTIFIER_RE.fullmatch(name):
        raise PostgresLoadError(f"not a plain SQL identifier: {name!r}")
    return name


def postgres_type(duckdb_type: str) -> tuple[str, bool]:
    """``(Postgres type, needs cast to VARCHAR)`` for a DuckDB column type.

    Nested and unknown types (LIST, STRUCT, MAP, ...) travel as their DuckDB text form in ``text``.
    """
    upper = duckdb_type.upper()
    if upper in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[upper], False
    match = _DECIMAL_RE.fullmatch(upper)
    if match:
        return f"numeric({match.group(1)}, {match.group(2)})", False
    return "text", True


def duckdb_tables(con: duckdb.DuckDBPyConnection, schema: str) -> list[str]:
    """Base tables (not views) of a DuckDB schema, sorted."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = ? "
        "AND table_type = 'BASE TABLE' ORDER BY table_name",
        [schema],
    ).fetchall()
    return [r[0] for r in rows]


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    if not rows:
        raise PostgresLoadError(f"DuckDB table {schema}.{table} does not exist")
    return rows


def _csv(con: duckdb.DuckDBPyConnection, schema: str, table: str, columns) -> bytes:
    """The table as CSV bytes (header, NULL = unquoted empty, strings quoted)."""
    select = ", ".join(
        f'CAST("{name}" AS VARCHAR) AS "{name}"' if postgres_type(kind)[1] else f'"{name}"'
        for name, kind in columns
    )
    arrow = con.execute(f'SELECT {select} FROM "{schema}"."{table}"').to_arrow_table()
    buffer = io.BytesIO()
    pacsv.write_csv(arrow, buffer)
    return buffer.getvalue()


def copy_table(
    con: duckdb.DuckDBPyConnection, pg, source_schema: str, table: str, target_schema: str
) -> int:
    """Replace ``target_schema.table`` in Postgres with the DuckDB table; return its row count.

    ``pg`` is an open psycopg2 connection; the caller commits.
    """
    columns = _columns(con, source_schema, check_identifier(table))
    staging = f"{table}__load"
    column_sql = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(postgres_type(kind)[0]))
        for name, kind in columns
    )
    target = sql.Identifier(target_schema, table)
    staged = sql.Identifier(target_schema, staging)
    with pg.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staged))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(staged, column_sql))
        cur.copy_expert(
            sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv, HEADER true)")
            .format(staged)
            .as_string(pg),
            io.BytesIO(_csv(con, source_schema, table, columns)),
        )
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(staged, sql.Identifier(table)))
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(target))
        return cur.fetchone()[0]


def copy_duckdb_to_postgres(
    duckdb_path: Path,
    dsn: str,
    tables: Sequence[str],
    target_schema: str,
    source_schema: str = "main",
) -> dict[str, int]:
    """Copy ``tables`` of a DuckDB file (opened read-only) into ``target_schema`` (created if
    missing), all in one Postgres transaction; return rows per table.

    Raises PostgresLoadError for a missing table or bad identifier, ``psycopg2.Error`` for
    Postgres failures (the transaction is rolled back: nothing changes).
    """
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        return copy_connection_to_postgres(con, dsn, tables, target_schema, source_schema)


def copy_connection_to_postgres(
    con: duckdb.DuckDBPyConnection,
    dsn: str,
    tables: Sequence[str],
    target_schema: str,
    source_schema: str = "main",
) -> dict[str, int]:
    """``copy_duckdb_to_postgres`` from an open connection whose default database holds the tables
    (the embedded file or the DuckLake, ``ibpipeline.storage.warehouse.connect``)."""
    check_identifier(target_schema)
    check_identifier(source_schema)
    counts: dict[str, int] = {}
    pg = psycopg2.connect(dsn)
    try:
        with pg:  # commit on success, roll back on error
            with pg.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(target_schema))
                )
            for table in tables:
                counts[table] = copy_table(con, pg, source_schema, table, target_schema)
    finally:
        pg.close()
    return counts
