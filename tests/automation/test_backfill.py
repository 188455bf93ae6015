import os
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

import ibpipeline.assets.normalized as normalized
from ibpipeline.automation.backfill import (
    check_range,
    last_backfill_day,
    one_planned_event_per_asset,
    run_backfill,
)
from ibpipeline.automation.jobs import FLEX_INGEST_SELECTION
from ibpipeline.automation.ranges import range_tags
from ibpipeline.storage import parquet, rawstore

START = date(2024, 1, 2)
END = START + timedelta(days=399)  # 400 days -> two <= 365-day windows


@pytest.fixture
def parse_calls(monkeypatch):
    calls = []
    real = normalized.parse_statement
    monkeypatch.setattr(
        normalized, "parse_statement", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    return calls


def assert_normalized(data_dir, world, accounts, first, last):
    nav = parquet.read_table("nav_daily", data_dir=data_dir)
    got = {(r["account_id"], r["date"]): r["total_base"] for r in nav.to_pylist()}
    days = world.business_days(first, last)
    assert got == {(a, d): world.day(a, d).nav.total_base for a in accounts for d in days}
    trade_days = [p.date for p in parquet.list_partitions("trades", data_dir=data_dir)]
    assert trade_days == [first + timedelta(days=i) for i in range((last - first).days + 1)]


@pytest.mark.slow
def test_400_day_backfill_is_one_run_two_requests_each_statement_parsed_once(
    defs, instance, sim, data_dir, world, world_accounts, parse_calls
):
    """What a UI or CLI backfill of flex_daily_job over 400 days runs: one range run (here up to
    the normalized tables, as ``backfill --no-marts``; the marts of a range are tested apart)."""
    with one_planned_event_per_asset():  # as the CLI creates its range run
        result = defs.resolve_job_def("flex_daily_job").execute_in_process(
            instance=instance,
            tags=range_tags(START.isoformat(), END.isoformat()),
            asset_selection=list(FLEX_INGEST_SELECTION.resolve(defs.resolve_asset_graph())),
        )
    assert result.success
    sends = [r for r in sim.requests if r.endpoint == "SendRequest"]
    assert [(r.fd, r.td) for r in sends] == [("20240102", "20241231"), ("20250101", "20250204")]
    assert rawstore.read_manifest(data_dir, END).newest.from_date == date(2025, 1, 1)
    assert sorted(instance.get_dynamic_partitions("account")) == sorted(world_accounts)
    assert len(parse_calls) == 2  # each statement once, for every account
    assert_normalized(data_dir, world, world_accounts, START, END)
    materialized = instance.get_materialized_partitions(dg.AssetKey("nav_daily"))
    assert len(materialized) == 400


@pytest.mark.slow
def test_cli_backfill_fetches_once_and_normalizes_every_account_in_one_run(
    defs, instance, sim, data_dir, world, world_accounts, parse_calls
):
    first, last = date(2024, 3, 4), date(2024, 3, 8)
    result = run_backfill(defs, instance, first, last, marts=False)
    assert sim.count("SendRequest") == 1
    assert len(parse_calls) == 1
    assert sorted(result.accounts) == sorted(world_accounts)
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["dagster/asset_partition_range_start"] == "2024-03-04"
    assert len(instance.get_runs()) == 1
    # one "materialization planned" event per asset carrying the 5 days, not one per (asset, day)
    planned = [
        r.event_log_entry.dagster_event.event_specific_data
        for r in instance.get_records_for_run(result.run_id, limit=100_000).records
        if r.event_log_entry.dagster_event is not None
        and r.event_log_entry.dagster_event.event_type_value == "ASSET_MATERIALIZATION_PLANNED"
    ]
    keys = [p.asset_key for p in planned]
    assert planned and len(keys) == len(set(keys))
    nav = next(p for p in planned if p.asset_key == dg.AssetKey("nav_daily"))
    assert nav.partition is None and len(list(nav.partitions_subset.get_partition_keys())) == 5
    assert "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS" not in os.environ  # restored
    assert_normalized(data_dir, world, world_accounts, first, last)
    before = parquet.read_table("trades", data_dir=data_dir).drop_columns(["statement_sha256"])
    run_backfill(defs, instance, first, last, marts=False)  # re-run: replaced, no duplicates
    after = parquet.read_table("trades", data_dir=data_dir).drop_columns(["statement_sha256"])
    assert before.num_rows > 0 and after.equals(before)


def test_backfill_range_is_checked():
    with pytest.raises(ValueError, match="after its end"):
        check_range(date(2024, 3, 2), date(2024, 3, 1))
    with pytest.raises(ValueError, match="before the first partition"):
        check_range(date(2020, 1, 1), date(2024, 3, 1))
    with pytest.raises(ValueError, match="after 2024-03-04, the last report day IBKR can have"):
        check_range(date(2024, 3, 1), date(2024, 3, 5), last=date(2024, 3, 4))
    check_range(date(2024, 3, 1), date(2024, 3, 4), last=date(2024, 3, 4))


def test_last_backfill_day_is_yesterday_in_the_report_timezone(monkeypatch):
    monkeypatch.delenv("IBPIPELINE_SCHEDULE_TIMEZONE", raising=False)  # US/Eastern
    evening_in_new_york = datetime(2025, 3, 4, 3, 0, tzinfo=UTC)  # Mon 3 March, 22:00 EST
    assert last_backfill_day(evening_in_new_york) == date(2025, 3, 2)
    monkeypatch.setenv("IBPIPELINE_SCHEDULE_TIMEZONE", "Asia/Tokyo")
    morning_in_tokyo = datetime(2025, 3, 4, 20, 0, tzinfo=UTC)  # Wed 5 March, 05:00 JST
    assert last_backfill_day(morning_in_tokyo) == date(2025, 3, 3)  # the last (UTC) partition key


def test_ui_backfill_of_every_daily_asset_over_400_days_is_one_run():
    """What the backfill daemon launches for an asset backfill selecting raw, normalized and the
    daily marts over 400 days (Dagster's own run-request builder, as the daemon calls it)."""
    from dagster._core.definitions.automation_tick_evaluation_context import (
        build_run_requests_with_backfill_policies,
    )
    from dagster._core.definitions.events import AssetKeyPartitionKey

    from ibpipeline.definitions import defs
    from ibpipeline.partitions import daily

    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def == daily]
    names = {k.to_user_string() for k in keys}
    assert {"raw_flex_statement", "nav_daily", "trades", "daily_nav"} <= names
    days = [(START + timedelta(days=i)).isoformat() for i in range(400)]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("account", ["U1111111", "U2222222", "U3333333"])
        requests = build_run_requests_with_backfill_policies(
            [AssetKeyPartitionKey(k, d) for k in keys for d in days], graph, instance
        )
    (request,) = requests
    assert set(request.asset_selection) == set(keys)
    assert request.tags == range_tags(START.isoformat(), END.isoformat())
