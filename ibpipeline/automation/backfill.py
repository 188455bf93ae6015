"""Synchronous backfill: ``flex_daily_job`` over a date range as ONE run.

``run_backfill`` is what ``ibpipeline backfill --start --end`` runs, and the same run a UI
backfill of the job (or of raw + normalized assets) over a contiguous range produces: the raw step
sends one Flex request per <= 365-day window whatever the number of accounts, the normalized step
parses each statement once and writes one file per table and day for every account, then the
views, marts and tearsheets are rebuilt once over the range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg

from ibpipeline.assets.marts import marts_job
from ibpipeline.automation.jobs import FLEX_INGEST_SELECTION, flex_daily_job
from ibpipeline.automation.ranges import range_tags
from ibpipeline.partitions import ACCOUNT_DIMENSION, daily


QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Run config keeping a CLI run's console to warnings and errors (the full log is in the UI)."""


@dataclass(frozen=True)
class BackfillResult:
    """The run id and the accounts registered after it."""

    run_id: str
    accounts: tuple[str, ...]


def check_range(start: date, end: date) -> None:
    """Raise ValueError unless ``start <= end`` and both are daily partition keys."""
    if start > end:
        raise ValueError(f"backfill start {start} is after its end {end}")
    first = daily.start.date()
    if start < first:
        raise ValueError(f"backfill start {start} is before the first partition {first}")


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
    (``execute_in_process`` re-raises it); data of earlier runs stays intact.
    """
    check_range(start, end)
    job = defs.resolve_job_def(flex_daily_job.name)
    result = job.execute_in_process(
        instance=instance,
        tags={**(tags or {}), **range_tags(start.isoformat(), end.isoformat())},
        asset_selection=None
        if marts
        else list(FLEX_INGEST_SELECTION.resolve(defs.resolve_asset_graph())),
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
    this process as one run; return its run id. Used after ``ibpipeline import``."""
    first, last = marts_range(start, end)
    job = defs.resolve_job_def(marts_job.name)
    result = job.execute_in_process(
        instance=instance,
        tags=range_tags(first.isoformat(), last.isoformat()),
        run_config=QUIET_CONSOLE,
    )
    return result.run_id
