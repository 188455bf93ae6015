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

**DuckLake** (``IBPIPELINE_WAREHOUSE=ducklake``): the same schemas and tables live in a DuckLake
whose catalog is a Postgres database (``IBPIPELINE_DUCKLAKE_CATALOG``) and whose Parquet data files
are under ``<data_dir>/lake/``. ``connect`` is the one connection factory: it opens the embedded
file, or an in-memory DuckDB with the lake attached as ``lake`` and made the default database, so
callers run the same SQL either way. DuckLake takes many writing processes (optimistic concurrency):
a commit that conflicts with one committed meanwhile (same table or view replaced or deleted from)
raises ``TransactionException``, and ``retry_conflicts`` runs the transaction again. Readers see the
snapshot current when their transaction began, and every snapshot stays queryable (time travel).
"""

from __future__ import annotations

import importlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import TypeVar

import duckdb

from ibpipeline import settings
from ibpipeline.storage.parquet import has_files, list_partitions, table_glob, table_names

WAREHOUSE_FILE = "ibpipeline.duckdb"
DUCKDB_POOL = "duckdb_writer"
"""Dagster pool (limit 1) of every step that opens the embedded file."""
VIEW_SCHEMA = "normalized"
ALIAS_SCHEMA = "main"
ALIAS_COMMENT = "ibpipeline: alias of normalized.{table}"
"""Comment of each alias view in ``main``: how ``refresh_views`` recognizes the ones it owns."""
LOCK_RETRY_DELAYS_S: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 60, 60)
"""Waits between attempts to open the warehouse for writing while another process holds it."""

LAKE_ALIAS = "lake"
"""Name the DuckLake is attached as (the dbt target's database too)."""
LAKE_EXTENSIONS: dict[str, str] = {
    "ducklake": "duckdb_extension_ducklake",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
}
"""DuckDB extension -> the PyPI package that ships its file (no download at run time)."""
CONFLICT_RETRY_DELAYS_S: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16, 30)
"""Waits before running a DuckLake transaction again after a commit conflict."""

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_PASSWORD_RE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)|(://[^:/@\s]*:)[^@\s]*@", re.I)


@dataclass(frozen=True)
class LakeConfig:
    """Where the DuckLake is: its Postgres catalog (libpq conninfo) and its data folder."""

    catalog: str
    data_path: Path

    def __repr__(self) -> str:
        return f"LakeConfig(catalog={redact(self.catalog)!r}, data_path={str(self.data_path)!r})"


def redact(conninfo: str) -> str:
    """``conninfo`` with any password replaced by ``***`` (for messages and logs)."""

    def hide(match: re.Match[str]) -> str:
        return f"{match.group(1)}***" if match.group(1) else f"{match.group(3)}***@"

    return _PASSWORD_RE.sub(hide, conninfo)


def lake_config(data_dir: Path) -> LakeConfig | None:
    """The DuckLake of ``data_dir`` when ``IBPIPELINE_WAREHOUSE=ducklake``, else None."""
    if not settings.ducklake_enabled():
        return None
    return LakeConfig(settings.ducklake_catalog(), settings.ducklake_data_path(data_dir))


def extension_file(name: str, package: str) -> Path:
    """The ``<name>.duckdb_extension`` file that ``package`` ships for this DuckDB version."""
    root = Path(importlib.import_module(package).__file__).parent
    path = root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise FileNotFoundError(
            f"{package} has no {name} extension for DuckDB {duckdb.__version__}"
        )
    return path


@cache
def ensure_lake_extensions() -> None:
    """Install the ducklake and postgres extensions from their packages' files into DuckDB's
    extension directory (once per process), so ``LOAD``/autoload works in every process, dbt's
    included, without a download."""
    with duckdb.connect() as con:
        installed = {
            row[0]
            for row in con.execute(
                "SELECT extension_name FROM duckdb_extensions() WHERE installed"
            ).fetchall()
        }
        for name, package in LAKE_EXTENSIONS.items():
            if name not in installed:
                con.install_extension(str(extension_file(name, package)))


def attach_lake_sql(config: LakeConfig, read_only: bool = False) -> str:
    """``ATTACH 'ducklake:postgres:<catalog>' AS lake (DATA_PATH ..., [READ_ONLY])``."""
    catalog = config.catalog.replace("'", "''")
    data_path = (str(config.data_path.resolve()).rstrip("/") + "/").replace("'", "''")
    options = f"DATA_PATH '{data_path}'" + (", READ_ONLY" if read_only else "")
    return f"ATTACH 'ducklake:postgres:{catalog}' AS {LAKE_ALIAS} ({options})"


def limit_memory(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Cap the DuckDB of ``con`` at ``settings.duckdb_memory_limit()`` (the dbt build's cap too):
    a writer's footprint is bounded whatever the number of accounts and days; larger operators
    spill to the database's temp directory. Returns ``con``; closes it when the setting is
    invalid."""
    try:
        con.execute(f"SET memory_limit = '{settings.duckdb_memory_limit()}'")
    except BaseException:
        con.close()
        raise
    return con


def connect_lake(config: LakeConfig, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached and selected (``USE lake``).

    Errors name the catalog with its password hidden.
    """
    ensure_lake_extensions()
    if not read_only:
        config.data_path.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        if not read_only:
            limit_memory(con)
        con.execute(attach_lake_sql(config, read_only))
        con.execute(f"USE {LAKE_ALIAS}")
    except duckdb.Error as exc:
        con.close()
        message = str(exc).replace(config.catalog, redact(config.catalog))
        raise type(exc)(f"cannot attach DuckLake {redact(config.catalog)}: {message}") from None
    return con


def connect(
    data_dir: Path,
    read_only: bool = False,
    lock_delays_s: tuple[float, ...] = LOCK_RETRY_DELAYS_S,
) -> duckdb.DuckDBPyConnection:
    """The warehouse of ``data_dir`` as the connection's default database: the DuckLake when it is
    configured, else ``<data_dir>/ibpipeline.duckdb`` (writers wait for its lock)."""
    config = lake_config(data_dir)
    if config is not None:
        return connect_lake(config, read_only)
    path = warehouse_path(data_dir)
    try:
        if read_only:
            return duckdb.connect(str(path), read_only=True)
        return connect_for_write(path, lock_delays_s)
    except duckdb.IOException as exc:
        if "newer version" not in str(exc):
            raise
        raise duckdb.IOException(
            f"{path} was written by a newer DuckDB than {duckdb.__version__} (e.g. 2.x before the "
            "pin to 1.5.5 for DuckLake). It only holds data derived from the Parquet files: move it "
            f"away and rebuild the marts over the whole history. {exc}"
        ) from None


def warehouse_exists(data_dir: Path) -> bool:
    """Whether there is a warehouse to read: the DuckLake (assumed), or the DuckDB file."""
    return lake_config(data_dir) is not None or warehouse_path(data_dir).is_file()


def describe(data_dir: Path) -> str:
    """Where the warehouse is, for logs and metadata (no password)."""
    config = lake_config(data_dir)
    if config is None:
        return str(warehouse_path(data_dir))
    return f"ducklake:postgres:{redact(config.catalog)} (data {config.data_path})"


def is_conflict_error(exc: BaseException) -> bool:
    """True for a DuckLake commit that conflicts with a transaction committed meanwhile."""
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


def retry_conflicts(
    action: Callable[[], _T],
    delays_s: tuple[float, ...] = CONFLICT_RETRY_DELAYS_S,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Run ``action`` (one whole transaction), again after each of ``delays_s`` seconds while its
    commit conflicts with another writer's."""
    for attempt, delay in enumerate((*delays_s, None), start=1):
        try:
            return action()
        except duckdb.TransactionException as exc:
            if delay is None or not is_conflict_error(exc):
                raise
            _log.warning("commit conflict (attempt %d): retry in %g s; %s", attempt, delay, exc)
            sleep(delay)
    raise AssertionError("unreachable")


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
            return limit_memory(duckdb.connect(str(path)))
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


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """``BEGIN`` ... ``COMMIT``; roll back when the body raises (a failed commit has ended it)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


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
    with connect(data_dir, lock_delays_s=lock_delays_s) as con:
        return retry_conflicts(
            lambda: _refresh_views(con, data_dir, scope, present, tables is None)
        )


def _refresh_views(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    scope: set[str],
    present: list[str],
    whole: bool,
) -> dict[str, int]:
    """``refresh_views`` in one transaction on ``con``."""
    counts: dict[str, int] = {}
    with transaction(con):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {VIEW_SCHEMA}")
        views = _views(con, VIEW_SCHEMA)
        aliases = {
            name
            for name, comment in _views(con, ALIAS_SCHEMA).items()
            if comment == ALIAS_COMMENT.format(table=name)
        }
        stale = {t for t in views if whole or t in scope} - set(present)
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


LOAD_BATCH_FILES = 500
"""Day files read by one statement of ``load_landing``. DuckDB holds a reader for every file of a
``read_parquet`` list at once: a whole load of the 26-file real corpus (~30,000 day files, decades
of history) ran out of a 768 MB ``memory_limit`` in one statement; in batches its memory is
bounded by 500 files, whatever the length of the history."""


def _file_columns(con: duckdb.DuckDBPyConnection, files: list[Path]) -> dict[str, str]:
    """Column name -> DuckDB type of the union of ``files`` (their footers only), in batches."""
    columns: dict[str, str] = {}
    for i in range(0, len(files), LOAD_BATCH_FILES):
        source = _parquet_list(files[i : i + LOAD_BATCH_FILES])
        for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall():
            columns.setdefault(row[0], row[1])
    return columns


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
    with connect(data_dir, lock_delays_s=lock_delays_s) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {LANDING_SCHEMA}")
        for table in sorted(set(tables)):
            loaded[table] = retry_conflicts(
                lambda table=table: _load_table(con, data_dir, table, window)
            )
    return loaded


def _load_table(
    con: duckdb.DuckDBPyConnection, data_dir: Path, table: str, window: tuple[date, date] | None
) -> int:
    """``load_landing`` of one table in one transaction; return the rows of ``window`` now in it."""
    target = f'{LANDING_SCHEMA}."{table}"'
    with transaction(con):
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
            if set(_file_columns(con, files)) - existing:
                files = [p.path for p in list_partitions(table, data_dir=data_dir)]
                whole = True
        if whole and not files:
            con.execute(f"DROP TABLE IF EXISTS {target}")
            return 0
        if not whole:
            con.execute(f"DELETE FROM {target} WHERE date >= ? AND date < ?", [start, end])
        for i in range(0, len(files), LOAD_BATCH_FILES):
            source = _parquet_list(files[i : i + LOAD_BATCH_FILES])
            if whole and i == 0:
                con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {source}")
                continue
            if whole:  # a later file may have a column the first ones lack
                have = _table_columns(con, LANDING_SCHEMA, table) or set()
                for name, kind in _file_columns(con, files[i : i + LOAD_BATCH_FILES]).items():
                    if name not in have:
                        quoted = name.replace('"', '""')
                        con.execute(f'ALTER TABLE {target} ADD COLUMN "{quoted}" {kind}')
            con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {source}")
        return con.execute(
            f"SELECT count(*) FROM {target} WHERE date >= ? AND date < ?",
            list(window or (date.min, date.max)),
        ).fetchone()[0]


def dbt_env(data_dir: Path) -> dict[str, str]:
    """Environment variables the dbt profile reads for the warehouse of ``data_dir`` (the lake's
    extensions are installed first, so dbt's process loads them without a download)."""
    env = {settings.DATA_DIR_ENV: str(Path(data_dir).resolve())}
    config = lake_config(data_dir)
    if config is not None:
        ensure_lake_extensions()
        config.data_path.mkdir(parents=True, exist_ok=True)
        env[settings.DUCKLAKE_DATA_PATH_ENV] = str(config.data_path.resolve()).rstrip("/") + "/"
    return env


def writer_pool() -> str | None:
    """Dagster pool of the steps that write (or, for the file, read) the warehouse:
    ``duckdb_writer`` for the embedded file (one process at a time), none for the DuckLake, whose
    writers run concurrently and retry conflicting commits."""
    return None if settings.ducklake_enabled() else DUCKDB_POOL


DBT_CONFLICT_RETRIES = 4
"""Times a dbt build on the DuckLake is run again after failing on commit conflicts only."""


def _is_concurrent_ddl(message: str) -> bool:
    """A DuckLake commit conflict, or dbt's swap of a relation (``<name>__dbt_tmp`` /
    ``<name>__dbt_backup``) meeting the same swap by another build at the same moment."""
    text = message.lower()
    return "transaction conflict" in text or (
        # views: 'Could not rename view "x" to "x__dbt_backup": another entry with this name
        # already exists'; tables: 'Cannot rename table x to x__dbt_backup, since
        # x__dbt_backup already exists'
        "already exists" in text and ("__dbt_backup" in text or "__dbt_tmp" in text)
    )


def dbt_conflicts(run_results: dict) -> list[str]:
    """Nodes of a dbt ``run_results.json`` that failed on a DuckLake commit conflict (or on two
    builds swapping the same relation at once); empty when any failure had another cause (a
    re-run would fail again)."""
    failed = [r for r in run_results.get("results", []) if r.get("status") in ("error", "fail")]
    conflicted = [r["unique_id"] for r in failed if _is_concurrent_ddl(str(r.get("message")))]
    return conflicted if len(conflicted) == len(failed) else []


DBT_LOCK_RETRY_DELAYS_S: tuple[float, ...] = (5, 10, 20, 40, 60, 60)
"""Waits before running the dbt step (``dbt_marts``) again after it found the
warehouse file locked by another process (an analyst's read-only connection): about 3 minutes
in all, as ``LOCK_RETRY_DELAYS_S``, then the step fails naming the lock."""
_DBT_LOCK_RE = re.compile(
    r'Could not set lock on file "[^"]*"(?:: Conflicting lock is held in .*? \(PID \d+\))?'
)


class WarehouseLockedError(RuntimeError):
    """The warehouse file stayed locked by another process through every attempt of a step."""


def lock_message(text: str) -> str | None:
    """DuckDB's "Could not set lock on file ..." in ``text`` (with the holder's PID when DuckDB
    names it), or None."""
    match = _DBT_LOCK_RE.search(text)
    return match.group(0) if match else None


def dbt_lock_error(error_messages: Iterable[str], run_results: dict | None) -> str | None:
    """DuckDB's lock message when a dbt invocation failed only because another process holds the
    warehouse file (dbt-duckdb opens it once, before any node runs; dbt then exits with no
    results); None when any error had another cause (a re-run would fail again).

    ``error_messages`` are dbt's error-level log messages, ``run_results`` its
    ``run_results.json`` (None when dbt wrote none).
    """
    messages = [m for m in error_messages if m.strip()]
    failed = [
        str(r.get("message"))
        for r in (run_results or {}).get("results", [])
        if r.get("status") in ("error", "fail")
    ]
    texts = messages + failed
    if not texts or any(lock_message(t) is None for t in texts):
        return None
    return lock_message(texts[0])


def conflict_wait_s(attempt: int) -> float:
    """Seconds before re-running a dbt build after its ``attempt``-th conflict (5, 10, 20, ...
    plus up to 50 % jitter, so two runs do not collide again in step)."""
    return 5 * 2 ** (attempt - 1) * (1 + random.random() / 2)
