"""Synchronous backfill: ``flex_daily_job`` over a date range as ONE run.

``run_backfill`` is what ``ibpipeline backfill --start --end`` runs, and the same run a UI
backfill of the job (or of raw + normalized assets) over a contiguous range produces: the raw step
sends one Flex request per <= 365-day window whatever the number of accounts, the normalized step
parses each statement once and writes one file per table and day for every account, then the
views, marts and tearsheets are rebuilt once over the range.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from ibpipeline import settings
from ibpipeline.assets.marts import marts_job
from ibpipeline.automation.jobs import FLEX_INGEST_SELECTION, flex_daily_job
from ibpipeline.automation.ranges import last_published_day, range_tags
from ibpipeline.automation.run_owner import execute_here
from ibpipeline.partitions import ACCOUNT_DIMENSION, daily

QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Run config keeping a CLI run's console to warnings and errors (the full log is in the UI).
With the project's definitions (``cli_console_logger``) a failed step or run is not printed
either: ``execute_in_process`` re-raises it and the CLI prints it as one line."""

_FAILURE_EVENTS = frozenset(
    {dg.DagsterEventType.STEP_FAILURE.value, dg.DagsterEventType.RUN_FAILURE.value}
)


class _NoFailureEvents(logging.Filter):
    """Drops Dagster's step/run failure events (message + stack trace of the error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "dagster_event", None)
        return getattr(event, "event_type_value", None) not in _FAILURE_EVENTS


@dg.logger(
    config_schema=dg.colored_console_logger.config_schema,
    description="Dagster's colored console logger; at WARNING or above (the CLI's QUIET_CONSOLE) "
    "it leaves step and run failures to the caller, which re-raises them (the event log keeps "
    "their stack traces).",
)
def cli_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """The default console logger, plus :class:`_NoFailureEvents` when it is quiet."""
    logger = dg.colored_console_logger.logger_fn(init_context)
    if logger.level >= logging.WARNING:
        for handler in logger.handlers:
            handler.addFilter(_NoFailureEvents())
    return logger


@contextlib.contextmanager
def stdout_discarded() -> Iterator[None]:
    """Discard what the run writes to ``sys.stdout``: dagster-dbt echoes every dbt log line there
    (dbt also writes them to its dbt.log, and their results are events in the run's log)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


@dataclass(frozen=True)
class BackfillResult:
    """The run id and the accounts registered after it."""

    run_id: str
    accounts: tuple[str, ...]


PLANNED_SUBSET_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


@contextlib.contextmanager
def one_planned_event_per_asset() -> Iterator[None]:
    """While a range run is created, Dagster records ONE "materialization planned" event per asset
    with the run's partition subset instead of one per (asset, day): 23,361 fewer events for a
    365-day run of flex_daily_job (each a SQLite write of several ms). Dagster's own switch
    (``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``); the cost is that the days of a FAILED
    range run show as missing rather than failed in the UI (the run itself shows as failed). A
    value already set in the environment wins."""
    previous = os.environ.get(PLANNED_SUBSET_ENV)
    if previous is None:
        os.environ[PLANNED_SUBSET_ENV] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PLANNED_SUBSET_ENV, None)


def last_backfill_day(now: datetime | None = None) -> date:
    """The last report day a backfill may fetch at ``now`` (default: the current time): the day
    before today in ``$IBPIPELINE_SCHEDULE_TIMEZONE`` (IBKR publishes a day after its close of
    business; a later ``td`` is answered 1003), and never after the last daily partition key."""
    now = now or datetime.now(UTC)
    with dg.partition_loading_context(effective_dt=now):
        last_key = date.fromisoformat(daily.get_last_partition_key())
    return min(last_published_day(now, settings.schedule_timezone()), last_key)


def check_range(start: date, end: date, last: date | None = None) -> None:
    """Raise ValueError unless ``start <= end`` and both are daily partition keys whose statements
    can be published (``end <= last``, default :func:`last_backfill_day`)."""
    if start > end:
        raise ValueError(f"backfill start {start} is after its end {end}")
    first = daily.start.date()
    if start < first:
        raise ValueError(f"backfill start {start} is before the first partition {first}")
    last = last or last_backfill_day()
    if end > last:
        raise ValueError(
            f"backfill end {end} is after {last}, the last report day IBKR can have published "
            "(a day's statement is ready after its close of business)"
        )


def run_backfill(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    start: date,
    end: date,
    *,
    marts: bool = True,
    tags: Mapping[str, str] | None = None,
) -> BackfillResult:
    """Run ``flex_daily_job`` over ``start..end`` (inclusive) in this process, as one run.

    ``marts=False`` stops after the normalized tables and DuckDB views. A failing step raises
    (``execute_in_process`` re-raises it); data of earlier runs stays intact. The console shows
    only warnings and errors (``QUIET_CONSOLE``; the full log is in the UI), stdout is discarded.
    The run is tagged with this process, and runs of this host whose process was killed are
    failed and their pool slots freed first (``run_owner.execute_here``).
    """
    check_range(start, end)
    job = defs.resolve_job_def(flex_daily_job.name)
    with stdout_discarded(), one_planned_event_per_asset():
        result = execute_here(
            job,
            instance,
            tags={**(tags or {}), **range_tags(start.isoformat(), end.isoformat())},
            asset_selection=None
            if marts
            else list(FLEX_INGEST_SELECTION.resolve(defs.resolve_asset_graph())),
            run_config=QUIET_CONSOLE,
        )
    return BackfillResult(result.run_id, tuple(instance.get_dynamic_partitions(ACCOUNT_DIMENSION)))


def marts_range(start: date, end: date, today: date | None = None) -> tuple[date, date]:
    """``start..end`` clamped to the daily partition keys (first key .. yesterday): days before the
    first key are rebuilt with it, days after the last key with the last (``marts.window_vars``)."""
    first = daily.start.date()
    last = max(first, (today or date.today()) - timedelta(days=1))
    clamp = lambda d: min(max(d, first), last)  # noqa: E731
    return clamp(start), clamp(end)


def run_marts(defs: dg.Definitions, instance: dg.DagsterInstance, start: date, end: date) -> str:
    """Run ``marts_job`` (daily marts over ``start..end``, summary marts, tearsheets, checks) in
    this process as one run (``run_owner.execute_here``); return its run id. Used after
    ``ibpipeline import``."""
    first, last = marts_range(start, end)
    job = defs.resolve_job_def(marts_job.name)
    with stdout_discarded(), one_planned_event_per_asset():
        result = execute_here(
            job,
            instance,
            tags=range_tags(first.isoformat(), last.isoformat()),
            run_config=QUIET_CONSOLE,
        )
    return result.run_id
