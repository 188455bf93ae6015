"""Gateway snapshots on a schedule and on demand.

- ``gateway_snapshot_job``: ``gateway_snapshot_raw`` + the three gateway tables + the checks
  ``gateway_vs_flex_nav`` and ``gateway_snapshots_trustworthy``, partitioned by
  ``gateway_account_daily``. Launch it from the UI with the partition range "every account x
  today" (the raw step ignores the partition: it always captures now).
- ``gateway_snapshot_schedule``: every ``$IB_SNAPSHOT_INTERVAL_MINUTES`` (15) minutes within
  ``$IB_SNAPSHOT_HOURS`` (09:30-16:00, both ends included), Monday-Friday, America/New_York;
  STOPPED until switched on. Each tick runs the job over every registered account x the tick's
  New York date; before any account is registered it runs the raw asset only (which registers them).
- ``take_snapshot``: one snapshot from Python (demo, CLI): materialize the raw asset, then the
  tables and the check for every registered account x the snapshot's date ("register, then launch",
  so accounts first seen by this snapshot are included).
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import dagster as dg

from ibpipeline import settings
from ibpipeline.assets.gateway import (
    gateway_account_daily,
    gateway_checks,
    gateway_snapshot_raw,
    gateway_tables,
)
from ibpipeline.assets.warehouse import gateway_warehouse_views
from ibpipeline.automation.ranges import account_range_tags
from ibpipeline.gateway.schema import EASTERN
from ibpipeline.partitions import ACCOUNT_DIMENSION

WEEKDAYS = "1-5"
SNAPSHOT_TAG = "ibpipeline/gateway_snapshot"

gateway_snapshot_job = dg.define_asset_job(
    "gateway_snapshot_job",
    selection=dg.AssetSelection.assets(gateway_snapshot_raw, gateway_tables),
    partitions_def=gateway_account_daily,
    description=(
        "Take one IB Gateway snapshot and rebuild the selected account-days of the gateway "
        "tables from every raw snapshot of those days (choose: every account x today)."
    ),
)


def snapshot_times(first: time, last: time, interval_minutes: int) -> list[time]:
    """Times of day from ``first`` to ``last`` inclusive, every ``interval_minutes``."""
    if interval_minutes < 1:
        raise ValueError(f"interval_minutes must be >= 1, got {interval_minutes}")
    if last < first:
        raise ValueError(f"snapshot window ends ({last}) before it starts ({first})")
    start = datetime.combine(date.min, first)
    end = datetime.combine(date.min, last)
    out = []
    while start <= end:
        out.append(start.time())
        start += timedelta(minutes=interval_minutes)
    return out


def snapshot_crons(first: time, last: time, interval_minutes: int) -> list[str]:
    """Cron strings (Mon-Fri) firing exactly at ``snapshot_times``: hours sharing the same
    minutes are grouped into one string."""
    minutes_by_hour: dict[int, list[int]] = defaultdict(list)
    for t in snapshot_times(first, last, interval_minutes):
        minutes_by_hour[t.hour].append(t.minute)
    hours_by_minutes: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for hour, minutes in sorted(minutes_by_hour.items()):
        hours_by_minutes[tuple(minutes)].append(hour)
    return [
        f"{','.join(map(str, minutes))} {','.join(map(str, hours))} * * {WEEKDAYS}"
        for minutes, hours in sorted(hours_by_minutes.items(), key=lambda kv: kv[1][0])
    ]


def snapshot_run_request(registered: Sequence[str], day: date) -> dg.RunRequest:
    """The run of one tick: every registered account x ``day``; the raw asset only when no
    account is registered yet."""
    tags = {SNAPSHOT_TAG: day.isoformat()}
    if not registered:
        return dg.RunRequest(asset_selection=[gateway_snapshot_raw.key], tags=tags)
    return dg.RunRequest(tags=tags | account_range_tags(registered[0], registered[-1], day, day))


def build_gateway_snapshot_schedule(
    *,
    interval_minutes: int = 15,
    first: time = time(9, 30),
    last: time = time(16, 0),
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> dg.ScheduleDefinition:
    """The snapshot schedule for a trading window (New York time, Monday-Friday)."""

    def evaluate(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        at = context.scheduled_execution_time or datetime.now(EASTERN)
        registered = context.instance.get_dynamic_partitions(ACCOUNT_DIMENSION)
        return snapshot_run_request(registered, at.astimezone(EASTERN).date())

    return dg.ScheduleDefinition(
        name="gateway_snapshot_schedule",
        cron_schedule=snapshot_crons(first, last, interval_minutes),
        execution_timezone=str(EASTERN),
        job=gateway_snapshot_job,
        execution_fn=evaluate,
        default_status=default_status,
        description=(
            f"Gateway snapshot every {interval_minutes} min, {first:%H:%M}-{last:%H:%M} "
            "New York time, Monday-Friday."
        ),
    )


def _schedule_from_settings() -> dg.ScheduleDefinition:
    first, last = settings.gateway_snapshot_hours()
    return build_gateway_snapshot_schedule(
        interval_minutes=settings.gateway_snapshot_interval_minutes(), first=first, last=last
    )


gateway_snapshot_schedule = _schedule_from_settings()


@dataclass(frozen=True)
class SnapshotRuns:
    """What ``take_snapshot`` did: the snapshot and its two in-process runs."""

    snapshot_id: str
    date: date
    accounts: tuple[str, ...]
    raw_run: dg.ExecuteInProcessResult
    tables_run: dg.ExecuteInProcessResult | None
    """None when no account is registered (the gateways manage none)."""


def take_snapshot(
    instance: dg.DagsterInstance,
    resources: Mapping[str, object],
    run_config: Mapping[str, object] | None = None,
) -> SnapshotRuns:
    """Snapshot every gateway now, then rebuild every registered account's gateway tables for the
    snapshot's date and run the gateway checks.

    ``resources`` needs ``gateway`` (GatewayResource) and ``data_dir`` (DataDirResource). Raises
    the step's error when no gateway could be read (nothing is written then). ``run_config``
    (e.g. the console log level) applies to both runs.
    """
    raw_run = dg.materialize(
        [gateway_snapshot_raw], instance=instance, resources=resources, run_config=run_config
    )
    metadata = raw_run.asset_materializations_for_node(gateway_snapshot_raw.op.name)[0].metadata
    day = date.fromisoformat(metadata["date"].value)
    registered = instance.get_dynamic_partitions(ACCOUNT_DIMENSION)
    tables_run = None
    if registered:
        tables_run = dg.materialize(
            [gateway_tables, *gateway_checks],
            instance=instance,
            resources=resources,
            tags=account_range_tags(registered[0], registered[-1], day, day),
            run_config=run_config,
        )
        # the gateway tables' DuckDB views (created once; they read the Parquet folders, so later
        # snapshots show up without a refresh)
        dg.materialize(
            [gateway_warehouse_views], instance=instance, resources=resources, run_config=run_config
        )
    return SnapshotRuns(
        snapshot_id=metadata["snapshot_id"].value,
        date=day,
        accounts=tuple(metadata["accounts"].value),
        raw_run=raw_run,
        tables_run=tables_run,
    )
