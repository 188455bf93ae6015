"""Every environment variable ibpipeline reads, in one place.

Plain settings are read when called (so tests and the demo can change them). The Flex token is a
secret: it is only ever handed to Dagster as ``dg.EnvVar(FLEX_TOKEN_ENV)`` and resolved at run time,
never read here, logged, or put into run config.
"""

from __future__ import annotations

import os
import re
from datetime import date, time
from pathlib import Path

import dagster as dg

from ibpipeline.flex.queries import DEFAULT_QUERY_NAME, FlexQuery, parse_flex_queries

DATA_DIR_ENV = "IBPIPELINE_DATA_DIR"
START_DATE_ENV = "IBPIPELINE_START_DATE"
FLEX_TOKEN_ENV = "IBKR_FLEX_TOKEN"
FLEX_QUERY_ID_ENV = "IBKR_FLEX_QUERY_ID"
FLEX_BASE_URL_ENV = "IBKR_FLEX_BASE_URL"
FLEX_QUERIES_ENV = "IBKR_FLEX_QUERIES"
GATEWAYS_ENV = "IB_GATEWAYS"
GATEWAY_CLIENT_ID_ENV = "IB_CLIENT_ID"
GATEWAY_SNAPSHOT_INTERVAL_ENV = "IB_SNAPSHOT_INTERVAL_MINUTES"
GATEWAY_SNAPSHOT_HOURS_ENV = "IB_SNAPSHOT_HOURS"

DEFAULT_DATA_DIR = "data"
DEFAULT_START_DATE = "2024-01-01"
DEFAULT_GATEWAY_CLIENT_ID = 17
DEFAULT_GATEWAY_SNAPSHOT_INTERVAL = 15
DEFAULT_GATEWAY_SNAPSHOT_HOURS = "09:30-16:00"


def data_dir() -> Path:
    """Root folder of raw and normalized data (``$IBPIPELINE_DATA_DIR``, default ``./data``)."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def start_date() -> str:
    """First partition date, ``YYYY-MM-DD`` (``$IBPIPELINE_START_DATE``, default 2024-01-01).

    Raises ValueError naming the variable when the value is not an ISO date.
    """
    raw = os.environ.get(START_DATE_ENV) or DEFAULT_START_DATE
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError as exc:
        raise ValueError(f"{START_DATE_ENV} must be a YYYY-MM-DD date, got {raw!r}") from exc


def flex_token() -> dg.EnvVar:
    """The Flex Web Service token as a Dagster ``EnvVar`` (resolved at run time, never displayed)."""
    return dg.EnvVar(FLEX_TOKEN_ENV)


def flex_query_id() -> str:
    """The Flex query id (``$IBKR_FLEX_QUERY_ID``, not secret); empty when unset."""
    return os.environ.get(FLEX_QUERY_ID_ENV, "")


def flex_queries() -> tuple[FlexQuery, ...]:
    """Every Flex query to fetch, in order.

    ``$IBKR_FLEX_QUERIES`` (``name=query_id:TOKEN_ENV_VAR`` entries separated by commas, see
    ``ibpipeline.flex.queries``) when set; otherwise the single ``default`` query of
    ``$IBKR_FLEX_QUERY_ID`` with the token in ``$IBKR_FLEX_TOKEN``. Raises FlexQueriesConfigError
    (a ValueError) naming the malformed entry. Tokens are not read here.
    """
    raw = os.environ.get(FLEX_QUERIES_ENV, "").strip()
    if raw:
        return parse_flex_queries(raw, FLEX_QUERIES_ENV)
    return (FlexQuery(DEFAULT_QUERY_NAME, flex_query_id(), FLEX_TOKEN_ENV),)


def flex_base_url() -> str | None:
    """Optional base URL override of the Flex Web Service (e.g. the local simulator)."""
    return os.environ.get(FLEX_BASE_URL_ENV) or None


def gateways() -> list[str]:
    """``host:port`` endpoints of IB Gateways from comma-separated ``$IB_GATEWAYS``."""
    raw = os.environ.get(GATEWAYS_ENV, "")
    return [item.strip() for item in raw.split(",") if item.strip()]


def gateway_client_id() -> int:
    """API client id used when connecting to gateways (``$IB_CLIENT_ID``, default 17)."""
    raw = os.environ.get(GATEWAY_CLIENT_ID_ENV) or str(DEFAULT_GATEWAY_CLIENT_ID)
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{GATEWAY_CLIENT_ID_ENV} must be an integer, got {raw!r}") from exc


def gateway_snapshot_interval_minutes() -> int:
    """Minutes between scheduled gateway snapshots (``$IB_SNAPSHOT_INTERVAL_MINUTES``, default 15)."""
    raw = os.environ.get(GATEWAY_SNAPSHOT_INTERVAL_ENV) or str(DEFAULT_GATEWAY_SNAPSHOT_INTERVAL)
    if not raw.isdigit() or not 1 <= int(raw) <= 1440:
        raise ValueError(f"{GATEWAY_SNAPSHOT_INTERVAL_ENV} must be minutes in 1..1440, got {raw!r}")
    return int(raw)


def gateway_snapshot_hours() -> tuple[time, time]:
    """First and last snapshot time of a trading day, New York time (``$IB_SNAPSHOT_HOURS``,
    ``HH:MM-HH:MM``, default 09:30-16:00, both ends included)."""
    raw = os.environ.get(GATEWAY_SNAPSHOT_HOURS_ENV) or DEFAULT_GATEWAY_SNAPSHOT_HOURS
    try:
        first, last = (time.fromisoformat(part.strip()) for part in raw.split("-"))
    except ValueError as exc:
        raise ValueError(f"{GATEWAY_SNAPSHOT_HOURS_ENV} must be HH:MM-HH:MM, got {raw!r}") from exc
    if last < first:
        raise ValueError(f"{GATEWAY_SNAPSHOT_HOURS_ENV} ends before it starts: {raw!r}")
    return first, last


# Orchestration (schedules, sensors, Postgres marts) ----------------------------------------------

HISTORY_START_ENV = "IBPIPELINE_HISTORY_START"
FLEX_SCHEDULE_TIME_ENV = "IBPIPELINE_FLEX_SCHEDULE_TIME"
SCHEDULE_TIMEZONE_ENV = "IBPIPELINE_SCHEDULE_TIMEZONE"
INBOX_DIR_ENV = "IBPIPELINE_INBOX_DIR"
POSTGRES_DSN_ENV = "IBPIPELINE_POSTGRES_DSN"
POSTGRES_SCHEMA_ENV = "IBPIPELINE_POSTGRES_SCHEMA"

DEFAULT_FLEX_SCHEDULE_TIME = "06:00"
DEFAULT_SCHEDULE_TIMEZONE = "US/Eastern"
DEFAULT_POSTGRES_SCHEMA = "marts"


def history_start() -> date:
    """First report date fetched for a newly discovered account (``$IBPIPELINE_HISTORY_START``,
    default the partitions' start date). Raises ValueError naming the variable when malformed."""
    raw = os.environ.get(HISTORY_START_ENV) or start_date()
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"{HISTORY_START_ENV} must be a YYYY-MM-DD date, got {raw!r}") from exc


def flex_schedule_time() -> tuple[int, int]:
    """``(hour, minute)`` of the daily Flex run (``$IBPIPELINE_FLEX_SCHEDULE_TIME``, ``HH:MM``,
    default 06:00). Raises ValueError naming the variable when malformed."""
    raw = os.environ.get(FLEX_SCHEDULE_TIME_ENV) or DEFAULT_FLEX_SCHEDULE_TIME
    hour, _, minute = raw.partition(":")
    if not (hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
        raise ValueError(f"{FLEX_SCHEDULE_TIME_ENV} must be HH:MM (24h), got {raw!r}")
    return int(hour), int(minute)


def schedule_timezone() -> str:
    """IANA timezone of the schedules (``$IBPIPELINE_SCHEDULE_TIMEZONE``, default US/Eastern).
    Raises ValueError naming the variable when the zone is unknown."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    raw = os.environ.get(SCHEDULE_TIMEZONE_ENV) or DEFAULT_SCHEDULE_TIMEZONE
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{SCHEDULE_TIMEZONE_ENV} is not a known timezone: {raw!r}") from exc
    return raw


def inbox_dir() -> Path | None:
    """Folder the inbox sensor watches (``$IBPIPELINE_INBOX_DIR``); None = ``<data dir>/inbox``."""
    raw = os.environ.get(INBOX_DIR_ENV)
    return Path(raw) if raw else None


def postgres_dsn_configured() -> bool:
    """Whether ``$IBPIPELINE_POSTGRES_DSN`` is set (then ``postgres_marts`` is registered)."""
    return bool(os.environ.get(POSTGRES_DSN_ENV))


def postgres_dsn() -> dg.EnvVar:
    """The Postgres DSN of the marts target as an ``EnvVar`` (it may hold a password)."""
    return dg.EnvVar(POSTGRES_DSN_ENV)


def postgres_schema() -> str:
    """Postgres schema the marts are copied into (``$IBPIPELINE_POSTGRES_SCHEMA``, default marts)."""
    return os.environ.get(POSTGRES_SCHEMA_ENV) or DEFAULT_POSTGRES_SCHEMA


# Warehouse (embedded DuckDB file or DuckLake) ------------------------------------------------------

WAREHOUSE_ENV = "IBPIPELINE_WAREHOUSE"
DUCKLAKE_CATALOG_ENV = "IBPIPELINE_DUCKLAKE_CATALOG"
DUCKLAKE_DATA_PATH_ENV = "IBPIPELINE_DUCKLAKE_DATA_PATH"
WAREHOUSES = ("duckdb", "ducklake")
DUCKDB_MEMORY_LIMIT_ENV = "IBPIPELINE_DUCKDB_MEMORY_LIMIT"
DEFAULT_DUCKDB_MEMORY_LIMIT = "768MB"


def duckdb_memory_limit() -> str:
    """DuckDB's ``memory_limit`` for the warehouse writers (landing load, dbt build):
    ``$IBPIPELINE_DUCKDB_MEMORY_LIMIT``, default 768MB (DuckDB's own default is 80 % of RAM).
    Larger operators spill to disk; the dbt profile reads the same variable."""
    value = (os.environ.get(DUCKDB_MEMORY_LIMIT_ENV) or DEFAULT_DUCKDB_MEMORY_LIMIT).strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, re.I):
        raise ValueError(
            f"{DUCKDB_MEMORY_LIMIT_ENV}={value!r}: expected a size such as 1GB or 512MB"
        )
    return value


def warehouse_kind() -> str:
    """``duckdb`` (the embedded file, default) or ``ducklake`` (``$IBPIPELINE_WAREHOUSE``)."""
    value = (os.environ.get(WAREHOUSE_ENV) or WAREHOUSES[0]).strip().lower()
    if value not in WAREHOUSES:
        raise ValueError(f"{WAREHOUSE_ENV}={value!r}: expected one of {', '.join(WAREHOUSES)}")
    return value


def ducklake_enabled() -> bool:
    """Whether the warehouse is the DuckLake (``$IBPIPELINE_WAREHOUSE=ducklake``)."""
    return warehouse_kind() == "ducklake"


def ducklake_catalog() -> str:
    """libpq conninfo (``dbname=... host=...``) or URI of the DuckLake catalog database.

    It may hold a password: read only here, at connect time, and never logged (prefer
    ``PGPASSWORD`` or ``~/.pgpass``, which libpq reads by itself). Raises ValueError when unset.
    """
    raw = (os.environ.get(DUCKLAKE_CATALOG_ENV) or "").strip()
    if not raw:
        raise ValueError(f"{WAREHOUSE_ENV}=ducklake needs {DUCKLAKE_CATALOG_ENV} (libpq conninfo)")
    return raw


def ducklake_data_path(data_root: Path) -> Path:
    """Folder of the DuckLake's Parquet files (``$IBPIPELINE_DUCKLAKE_DATA_PATH``, default
    ``<data_dir>/lake/``)."""
    raw = os.environ.get(DUCKLAKE_DATA_PATH_ENV)
    return Path(raw) if raw else Path(data_root) / "lake"


EXECUTOR_ENV = "IBPIPELINE_EXECUTOR"
EXECUTORS = ("multiprocess", "in_process", "celery")


def executor() -> str:
    """How launched runs execute their steps (``$IBPIPELINE_EXECUTOR``, default multiprocess):
    ``multiprocess`` (each step in its own process, forked from a server that imported the project
    once), ``in_process`` (every step in the run worker) or ``celery`` (each step a task on the
    Celery workers of ``$IBPIPELINE_CELERY_BROKER``). Raises ValueError on another value."""
    value = (os.environ.get(EXECUTOR_ENV) or EXECUTORS[0]).strip()
    if value not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={value!r}: expected one of {', '.join(EXECUTORS)}")
    return value


CELERY_BROKER_ENV = "IBPIPELINE_CELERY_BROKER"
CELERY_BACKEND_ENV = "IBPIPELINE_CELERY_BACKEND"
DEFAULT_CELERY_BROKER = "pyamqp://guest@127.0.0.1:5672//"
DEFAULT_CELERY_BACKEND = "rpc://"


def celery_url_config(env: str, default: str) -> str | dict[str, str]:
    """Executor config for a Celery URL: ``{"env": env}`` when the variable is set (Dagster reads it
    at run time; a password in it never enters the job snapshot or run config), else ``default``."""
    return {"env": env} if os.environ.get(env) else default


def celery_broker_url() -> str:
    """Broker URL for a worker process (``$IBPIPELINE_CELERY_BROKER``, default local RabbitMQ).
    It may hold a password: pass it to Celery only (its banner masks it), never log it."""
    return os.environ.get(CELERY_BROKER_ENV) or DEFAULT_CELERY_BROKER


def celery_backend_url() -> str:
    """Result backend URL for a worker process (``$IBPIPELINE_CELERY_BACKEND``, default
    ``rpc://``, results over the broker). May hold a password, like the broker URL."""
    return os.environ.get(CELERY_BACKEND_ENV) or DEFAULT_CELERY_BACKEND
