"""The dbt marts (``dbt_project/``) as Dagster assets: one ``@dbt_assets``, ``dbt_marts``, one
``dbt build`` per run.

- Partitioned by ``daily`` with single-run backfills. A run over any date range hands dbt
  ``min_date``/``max_date`` = its partition time window (end exclusive) in
  ``$IBPIPELINE_DBT_MIN_DATE``/``$IBPIPELINE_DBT_MAX_DATE`` (not as ``--vars``: dbt re-parses every
  model when its vars change), so the incremental marts (daily_nav, daily_returns, drawdowns,
  allocation_daily, positions_history) delete+insert exactly those days.
- The staging views are re-created by every build: the ``read_normalized`` macro fixes their
  columns when they are built. The intermediate tables are rebuilt over the whole history, once
  per run, for every mart that reads them.
- The summary tables (performance_summary, drawdown_periods, pnl_by_symbol, trade_stats, ...)
  ignore the window and are rebuilt whole by every run. A partition of a summary mart means
  "rebuilt (over all history) by a run covering that day". They carry the ``daily`` partitions
  like everything else in ``flex_daily_job`` so that a UI backfill of a range ("Materialize
  all", or the job page) is ONE run: the backfill daemon never puts an unpartitioned asset in the
  same run as its partitioned parents (``can_run_with_parent`` in dagster's asset_backfill.py).
- One invocation, not one per kind of mart: each dbt process costs ~2 s of imports and the
  reading of its saved parse before its first model (bench/README.md, session 8), and dbt's
  threads then run the summary tables beside the daily marts' tests.

It writes ``<data_dir>/ibpipeline.duckdb`` and runs in pool ``duckdb_writer`` (one writer per
file); on the DuckLake (``IBPIPELINE_WAREHOUSE=ducklake``, dbt target ``ducklake``) it takes no
pool: runs of different day ranges write concurrently, and a build that failed only on commit
conflicts with another run is run again (``RetryRequested``). A step that finds the file locked
by another process (an analyst's read-only connection), in its landing load or in dbt, is run
again after 5, 10, 20, 40, 60 and 60 s (``retry_when_locked``), then fails naming the lock. dbt
sources are the normalized assets (same daily partitions, day D reads day D), so lineage reaches
the raw Flex statements. dbt tests become asset checks. Each dbt invocation starts from the saved
parse of its profile (``partial_parse_cache``), so dbt re-parses only the files that changed.
Each asset's column table in the UI is its model's columns in ``dbt_project/models/*/schema.yml``
(description, unit, type): the default translator puts the manifest's columns into the spec's
``dagster/column_schema``, and the materializations carry no column schema of their own that
would replace it (no ``fetch_column_metadata``).
"""

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg
import duckdb
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource, dbt_assets
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from ibpipeline import settings
from ibpipeline.dbt import dbt_project
from ibpipeline.partitions import daily
from ibpipeline.process import children_die_with_this_process
from ibpipeline.resources import DataDirResource
from ibpipeline.storage import warehouse

MARTS_GROUP = "marts"
DUCKDB_POOL = warehouse.DUCKDB_POOL
WRITER_POOL = warehouse.writer_pool()


class MartsTranslator(DagsterDbtTranslator):
    """dbt sources -> the normalized assets (``AssetKey(table)``); every model in group marts."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey(dbt_resource_props["name"])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return MARTS_GROUP


TRANSLATOR = MartsTranslator()


@cache
def landing_tables() -> tuple[str, ...]:
    """The normalized tables the dbt project reads (its ``normalized`` sources, from the manifest):
    what ``dbt_marts`` loads into ``landing.<table>`` before dbt runs."""
    manifest = json.loads(dbt_project.manifest_path.read_text())
    return tuple(
        sorted(s["name"] for s in manifest["sources"].values() if s["source_name"] == "normalized")
    )


HISTORY_MIN_DATE = "1900-01-01"
HISTORY_MAX_DATE = "9999-12-31"


def window_vars(
    start: datetime, end: datetime, first: datetime | None = None, last: datetime | None = None
) -> dict[str, str]:
    """dbt vars rebuilding ``start <= date < end`` (a partition time window, end exclusive).

    Report days outside the partitions (statements imported from before ``IBPIPELINE_START_DATE``
    or dated after yesterday) belong to the edge partitions: a window starting at the first key
    (``first``) also rebuilds every earlier day, one ending after the last key (``last``, the
    exclusive end of the newest partition) every later day.
    """
    if end <= start:
        raise ValueError(f"empty date window {start:%Y-%m-%d}..{end:%Y-%m-%d}")
    low = HISTORY_MIN_DATE if first is not None and start <= first else start.date().isoformat()
    high = HISTORY_MAX_DATE if last is not None and end >= last else end.date().isoformat()
    return {"min_date": low, "max_date": high}


WINDOW_ENV = {"min_date": "IBPIPELINE_DBT_MIN_DATE", "max_date": "IBPIPELINE_DBT_MAX_DATE"}
"""Environment variables handing dbt the window of ``window_vars`` (``macros/date_window.sql``):
dbt vars on the command line would make dbt re-parse the whole project on every run."""


def window_env(dbt_vars: Mapping[str, str]) -> dict[str, str]:
    """``window_vars`` as the environment variables the dbt macro ``date_bound`` reads."""
    return {WINDOW_ENV[name]: value for name, value in dbt_vars.items()}


@contextmanager
def data_dir_env(data_dir: Path, extra: Mapping[str, str] | None = None) -> Iterator[None]:
    """Set ``$IBPIPELINE_DATA_DIR`` to ``data_dir`` (and the DuckLake's data path when the lake is
    configured), plus ``extra``, while starting dbt, then restore them.

    dbt's profile and sources read these variables, and ``DbtCliResource`` hands the subprocess a
    copy of this process's environment when it starts it (it has no ``env`` parameter).
    """
    values = {**warehouse.dbt_env(data_dir), **(extra or {})}
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


PARTIAL_PARSE_FILE = "partial_parse.msgpack"
PARTIAL_PARSE_CACHE = "partial_parse"
"""Folder of the project's target folder keeping one ``partial_parse.msgpack`` per profile."""
_PROFILE_ENV = (
    "DBT_TARGET",
    "IBPIPELINE_WAREHOUSE",
    settings.DATA_DIR_ENV,
    "IBPIPELINE_DUCKLAKE_CATALOG",
    "IBPIPELINE_DUCKLAKE_DATA_PATH",
    settings.DUCKDB_MEMORY_LIMIT_ENV,
)
"""The environment variables ``profiles.yml`` reads: they decide the profile's connection."""


def partial_parse_cache() -> Path:
    """Where the saved parse of dbt for the current profile environment is kept.

    dbt re-parses all models when the profile's connection differs from the one its
    ``partial_parse.msgpack`` was written with (the DuckDB ``path`` under
    ``$IBPIPELINE_DATA_DIR``): the copy of ``target/partial_parse.msgpack`` that dagster-dbt puts
    in each invocation's folder (written by ``dbt parse`` with another data folder) is thrown
    away. One file per profile environment (a hash of ``_PROFILE_ENV``'s values) lets the next
    run on the same warehouse re-parse only what changed. dbt checks every file against the saved
    parse itself, so a stale or foreign file costs a full parse, never a wrong result.
    """
    key = json.dumps([os.environ.get(name) for name in _PROFILE_ENV])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (
        dbt_project.project_dir
        / dbt_project.target_path
        / PARTIAL_PARSE_CACHE
        / f"{digest}.msgpack"
    )


def invocation_target(context: dg.AssetExecutionContext) -> tuple[Path, Path]:
    """A new target folder for one dbt invocation (as dagster-dbt names them), holding the cached
    parse of this profile when there is one, and that cache's path (``partial_parse_cache``:
    call it while the dbt environment is set)."""
    name = f"{context.op_execution_context.op.name}-{context.run.run_id[:7]}-{uuid.uuid4().hex[:7]}"
    target = dbt_project.project_dir / dbt_project.target_path / name
    target.mkdir(parents=True, exist_ok=True)
    cached = partial_parse_cache()
    with suppress(OSError):  # no cached parse yet: dagster-dbt copies the project's
        shutil.copyfile(cached, target / PARTIAL_PARSE_FILE)
    return target, cached


def keep_partial_parse(target: Path, cached: Path) -> None:
    """Save the parse dbt wrote in ``target`` as ``cached`` (atomically: a concurrent reader sees
    the old or the new file)."""
    written = target / PARTIAL_PARSE_FILE
    with suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{uuid.uuid4().hex[:7]}")
        shutil.copyfile(written, partial)
        os.replace(partial, cached)


def retry_when_locked(
    context: dg.AssetExecutionContext, lock: str, data_dir: Path | None = None
) -> NoReturn:
    """Ask Dagster to run the step again after the next of ``DBT_LOCK_RETRY_DELAYS_S`` (another
    process, e.g. an analyst's read-only connection, holds the warehouse file); after the last,
    raise ``WarehouseLockedError`` naming the lock."""
    delays = warehouse.DBT_LOCK_RETRY_DELAYS_S
    attempt = context.retry_number
    path = warehouse.warehouse_path(data_dir) if data_dir is not None else "the warehouse"
    if attempt >= len(delays):
        raise warehouse.WarehouseLockedError(
            f"{path} stayed locked by another process through {attempt + 1} attempts over "
            f"{sum(delays[:attempt]):.0f} s: {lock}. Close the other connections to it (e.g. a "
            "notebook's read-only one) or let analysts query a copy, then run again."
        )
    wait = delays[attempt]
    context.log.warning(
        f"{path} is locked by another process (attempt {attempt + 1} of {len(delays) + 1}): "
        f"retry in {wait:g} s; {lock}"
    )
    raise dg.RetryRequested(max_retries=len(delays), seconds_to_wait=wait)


def stream_retrying_conflicts(
    context: dg.AssetExecutionContext, invocation: DbtCliInvocation, data_dir: Path | None = None
) -> Iterator[Any]:
    """The dbt events; when the build failed only because another process holds the warehouse
    file (``warehouse.dbt_lock_error``), or only on DuckLake commit conflicts (another run wrote
    the same view or table meanwhile), ask Dagster to run the step again after a back-off."""
    try:
        yield from invocation.stream()
    except DagsterDbtCliRuntimeError as exc:
        try:
            results = invocation.get_artifact("run_results.json")
        except OSError:
            results = None
        # dagster-dbt keeps dbt's error-level log messages here (also in the error's text)
        messages = getattr(invocation, "_error_messages", None) or [str(exc)]
        lock = warehouse.dbt_lock_error(messages, results)
        if lock is not None:
            retry_when_locked(context, lock, data_dir)
        conflicts = warehouse.dbt_conflicts(results) if results else []
        if not conflicts or context.retry_number >= warehouse.DBT_CONFLICT_RETRIES:
            raise
        wait = warehouse.conflict_wait_s(context.retry_number + 1)
        context.log.warning(
            f"commit conflicts with another run in {conflicts}: retry in {wait:.0f} s"
        )
        raise dg.RetryRequested(
            max_retries=warehouse.DBT_CONFLICT_RETRIES, seconds_to_wait=wait
        ) from None


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select="fqn:*",
    name="dbt_marts",
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WRITER_POOL,
    dagster_dbt_translator=TRANSLATOR,
)
def dbt_marts(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, data_dir: DataDirResource
) -> Iterator[Any]:
    """One ``dbt build`` of every model and test: the incremental marts over the run's partition
    window (one day or a range), the staging views, intermediate and summary tables whole."""
    # partition_time_window spans a single key and a range alike; has_partition_key is False in
    # range runs, so it must not decide whether to filter.
    window = context.partition_time_window
    first, last = daily.get_first_partition_window(), daily.get_last_partition_window()
    dbt_vars = window_vars(
        window.start, window.end, first.start if first else None, last.end if last else None
    )
    context.log.info(f"dbt build of {dbt_vars['min_date']} <= date < {dbt_vars['max_date']}")
    root = data_dir.root()
    span = (date.fromisoformat(dbt_vars["min_date"]), date.fromisoformat(dbt_vars["max_date"]))
    try:  # a locked file: the step is run again (retry_when_locked), not waited for here
        loaded = warehouse.load_landing(root, landing_tables(), span, lock_delays_s=())
    except duckdb.IOException as exc:
        lock = warehouse.lock_message(str(exc)) if warehouse.is_lock_error(exc) else None
        if lock is None:
            raise
        retry_when_locked(context, lock, root)
    context.log.info(f"loaded {sum(loaded.values())} rows of {len(loaded)} tables into landing")
    with data_dir_env(root, window_env(dbt_vars)), children_die_with_this_process():
        target, cache = invocation_target(context)
        invocation = dbt.cli(["build"], context=context, target_path=target)
    yield from stream_retrying_conflicts(context, invocation, root)
    keep_partial_parse(target, cache)


dbt_mart_assets = [dbt_marts]

marts_job = dg.define_asset_job(
    "marts_job",
    selection=dg.AssetSelection.groups(MARTS_GROUP),
    partitions_def=daily,
    description="dbt build of the daily marts over a date range (one run), the summary marts and "
    "the tearsheets, with their checks.",
)
