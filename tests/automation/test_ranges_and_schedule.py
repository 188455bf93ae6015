from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest
from conftest import make_defs

from ibpipeline.automation.ranges import account_range_tags, ready_report_day
from ibpipeline.automation.schedules import build_flex_daily_schedule, flex_daily_schedule_from_env
from ibpipeline.storage import parquet


def tick(schedule, moment):
    """Evaluate one tick of ``schedule`` inside Definitions holding the project's Flex assets."""
    defs = make_defs(None, Path("data"), schedules=[schedule])
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=moment,
            repository_def=defs.get_repository_def(),
        ) as ctx,
    ):
        return defs.resolve_schedule_def(schedule.name).evaluate_tick(ctx).run_requests


def test_ready_report_day_uses_local_date_and_skips_weekends():
    # Tuesday 2024-03-05 06:00 New York = 11:00 UTC -> Monday
    assert ready_report_day(datetime(2024, 3, 5, 11, 0, tzinfo=UTC), "US/Eastern") == date(
        2024, 3, 4
    )
    # Monday 01:00 UTC is still Sunday evening in New York -> Friday
    assert ready_report_day(datetime(2024, 3, 4, 1, 0, tzinfo=UTC), "US/Eastern") == date(
        2024, 3, 1
    )
    # Saturday morning -> Friday
    assert ready_report_day(datetime(2024, 3, 9, 12, 0, tzinfo=UTC), "US/Eastern") == date(
        2024, 3, 8
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        ready_report_day(datetime(2024, 3, 5, 11, 0), "US/Eastern")


def test_account_range_tags_span_accounts_and_dates():
    tags = account_range_tags("U2222222", "U1111111", date(2024, 1, 2), date(2024, 2, 1))
    assert tags == {
        "dagster/asset_partition_range_start": "U2222222|2024-01-02",
        "dagster/asset_partition_range_end": "U1111111|2024-02-01",
    }


@pytest.mark.parametrize(
    ("tick_utc", "day"),
    [
        (datetime(2024, 3, 5, 11, 0, tzinfo=UTC), "2024-03-04"),  # Tue 06:00 EST -> Mon
        (datetime(2024, 3, 9, 11, 0, tzinfo=UTC), "2024-03-08"),  # Sat 06:00 EST -> Fri
        (datetime(2024, 7, 2, 10, 0, tzinfo=UTC), "2024-07-01"),  # Tue 06:00 EDT -> Mon
    ],
)
def test_schedule_tick_requests_one_run_for_previous_business_day(tick_utc, day):
    schedule = build_flex_daily_schedule(6, 0, "US/Eastern")
    assert schedule.cron_schedule == "0 6 * * 2-6"
    assert schedule.execution_timezone == "US/Eastern"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    requests = tick(schedule, tick_utc)
    assert len(requests) == 1
    (request,) = requests
    assert request.partition_key == day
    assert schedule.job_name == "flex_daily_job"
    assert request.run_key == f"flex-daily:{day}"


def test_schedule_run_fetches_once_and_writes_every_account_of_the_day(
    defs, instance, sim, data_dir, world, world_accounts
):
    """The run a tick requests, executed: one Flex request, every account's rows of that day."""
    schedule = build_flex_daily_schedule(6, 0, "US/Eastern")
    (request,) = tick(schedule, datetime(2024, 3, 5, 11, tzinfo=UTC))
    result = defs.resolve_job_def(schedule.job_name).execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags
    )
    assert result.success
    assert sim.count("SendRequest") == 1
    nav = parquet.read_table("nav_daily", data_dir=data_dir).to_pylist()
    assert {(r["account_id"], r["date"]): r["total_base"] for r in nav} == {
        (a, date(2024, 3, 4)): world.day(a, date(2024, 3, 4)).nav.total_base for a in world_accounts
    }
    assert [
        p.path.parent.name for p in parquet.list_partitions("nav_daily", data_dir=data_dir)
    ] == ["date=2024-03-04"]


def test_schedule_time_and_timezone_from_env(monkeypatch):
    monkeypatch.setenv("IBPIPELINE_FLEX_SCHEDULE_TIME", "07:45")
    monkeypatch.setenv("IBPIPELINE_SCHEDULE_TIMEZONE", "Europe/Zurich")
    schedule = flex_daily_schedule_from_env()
    assert (schedule.cron_schedule, schedule.execution_timezone) == (
        "45 7 * * 2-6",
        "Europe/Zurich",
    )
    monkeypatch.setenv("IBPIPELINE_FLEX_SCHEDULE_TIME", "25:00")
    with pytest.raises(ValueError, match="IBPIPELINE_FLEX_SCHEDULE_TIME"):
        flex_daily_schedule_from_env()
    monkeypatch.setenv("IBPIPELINE_FLEX_SCHEDULE_TIME", "06:00")
    monkeypatch.setenv("IBPIPELINE_SCHEDULE_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValueError, match="IBPIPELINE_SCHEDULE_TIMEZONE"):
        flex_daily_schedule_from_env()
