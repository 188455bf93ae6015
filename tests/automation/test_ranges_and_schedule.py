from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest
from conftest import make_defs

from ibpipeline.automation.ranges import (
    NORMALIZE_ACCOUNTS_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    account_blocks,
    normalize_accounts_from_tag,
    normalize_run_requests,
    ready_report_day,
    run_date_range,
)
from ibpipeline.automation.schedules import build_flex_daily_schedule, flex_daily_schedule_from_env
from ibpipeline.automation.sensors import normalize_requests_after


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


def test_account_blocks_follow_registration_order():
    registered = ["U5", "U1", "U9", "U2", "U7"]
    assert account_blocks(registered, registered) == [("U5", "U7")]
    assert account_blocks(registered, ["U1", "U9", "U7"]) == [("U1", "U9"), ("U7", "U7")]
    assert account_blocks(registered, ["U3"]) == []
    assert account_blocks(registered, []) == []


def test_run_date_range_reads_range_or_single_partition():
    assert run_date_range({RANGE_START_TAG: "2024-01-02", RANGE_END_TAG: "2025-02-05"}) == (
        date(2024, 1, 2),
        date(2025, 2, 5),
    )
    assert run_date_range({"dagster/partition": "2024-03-04"}) == (date(2024, 3, 4),) * 2
    assert run_date_range({}) is None
    with pytest.raises(ValueError, match="not daily keys"):
        run_date_range({"dagster/partition": "U1234567|2024-03-04"})


def test_normalize_accounts_tag_values():
    registered = ["U1111111", "U2222222"]
    assert normalize_accounts_from_tag(None, registered) == registered
    assert normalize_accounts_from_tag("all", registered) == registered
    assert normalize_accounts_from_tag("none", registered) == []
    assert normalize_accounts_from_tag("U2222222", registered) == ["U2222222"]


def test_normalize_run_requests_one_per_block():
    registered = ["U1111111", "U2222222", "U3333333"]
    requests = normalize_run_requests(
        registered,
        ["U1111111", "U3333333"],
        date(2024, 1, 2),
        date(2024, 2, 1),
        job_name="flex_normalize_job",
        run_key_prefix="k",
    )
    assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in requests] == [
        ("U1111111|2024-01-02", "U1111111|2024-02-01"),
        ("U3333333|2024-01-02", "U3333333|2024-02-01"),
    ]
    assert len({r.run_key for r in requests}) == 2


@pytest.mark.parametrize(
    ("tick_utc", "day"),
    [
        (datetime(2024, 3, 5, 11, 0, tzinfo=UTC), "2024-03-04"),  # Tue 06:00 EST -> Mon
        (datetime(2024, 3, 9, 11, 0, tzinfo=UTC), "2024-03-08"),  # Sat 06:00 EST -> Fri
        (datetime(2024, 7, 2, 10, 0, tzinfo=UTC), "2024-07-01"),  # Tue 06:00 EDT -> Mon
    ],
)
def test_schedule_tick_requests_one_raw_run_for_previous_business_day(tick_utc, day):
    schedule = build_flex_daily_schedule(6, 0, "US/Eastern")
    assert schedule.cron_schedule == "0 6 * * 2-6"
    assert schedule.execution_timezone == "US/Eastern"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    requests = tick(schedule, tick_utc)
    assert len(requests) == 1
    (request,) = requests
    assert request.partition_key == day
    assert request.tags[NORMALIZE_ACCOUNTS_TAG] == "all"
    assert request.run_key == f"flex-daily:{day}"


def test_schedule_and_chain_cover_all_accounts_for_the_day_in_one_run():
    """The schedule's raw run, once successful, leads to ONE normalized run over every account."""
    schedule = build_flex_daily_schedule(6, 0, "US/Eastern")
    (request,) = tick(schedule, datetime(2024, 3, 5, 11, tzinfo=UTC))
    run = dg.DagsterRun(
        job_name="flex_raw_job",
        run_id="r1",
        tags={**request.tags, "dagster/partition": request.partition_key},
    )
    (follow,) = normalize_requests_after(run, ["U3333333", "U1111111", "U2222222"])
    assert follow.job_name == "flex_normalize_job"
    assert follow.tags[RANGE_START_TAG] == "U3333333|2024-03-04"
    assert follow.tags[RANGE_END_TAG] == "U2222222|2024-03-04"


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
