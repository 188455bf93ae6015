"""The daily Flex schedule: the previous business day's statement for every account, after IBKR
publishes it (ticks Tuesday to Saturday, so every Monday-Friday report day is fetched once).

Each tick requests ONE ``flex_daily_job`` run for the previous business day of the tick's local
date: one Flex request covers every account of the query, the normalized tables of that day are
rewritten for every account, then the views, marts and tearsheets are refreshed. Default status:
STOPPED.
"""

from __future__ import annotations

import dagster as dg

from ibpipeline import settings
from ibpipeline.automation.jobs import flex_daily_job
from ibpipeline.automation.ranges import ready_report_day

FLEX_DAILY_SCHEDULE = "flex_daily_schedule"


def after_business_days_cron(hour: int, minute: int) -> str:
    """Cron string of ``hour:minute`` Tuesday to Saturday: once after each business day."""
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ValueError(f"invalid time of day {hour:02d}:{minute:02d}")
    return f"{minute} {hour} * * 2-6"


def build_flex_daily_schedule(
    hour: int, minute: int, timezone: str, name: str = FLEX_DAILY_SCHEDULE
) -> dg.ScheduleDefinition:
    """The daily Flex schedule at ``hour:minute`` in ``timezone`` (default status STOPPED)."""

    @dg.schedule(
        name=name,
        cron_schedule=after_business_days_cron(hour, minute),
        execution_timezone=timezone,
        job=flex_daily_job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Tuesday-Saturday at {hour:02d}:{minute:02d} {timezone}: one flex_daily_job run for "
            "the previous business day (one Flex request for all accounts; normalized tables, "
            "views, marts)."
        ),
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = ready_report_day(context.scheduled_execution_time, timezone)
        return dg.RunRequest(
            run_key=f"flex-daily:{day.isoformat()}",
            partition_key=day.isoformat(),
            tags={"ibpipeline/trigger": name},
        )

    return _schedule


def flex_daily_schedule_from_env() -> dg.ScheduleDefinition:
    """The schedule configured by ``$IBPIPELINE_FLEX_SCHEDULE_TIME`` / ``..._TIMEZONE``."""
    hour, minute = settings.flex_schedule_time()
    return build_flex_daily_schedule(hour, minute, settings.schedule_timezone())
