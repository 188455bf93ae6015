"""Each partition of a range run carries its own metadata (issue 10): every day's materialization
of a normalized table shows that day's row count, rows by account and preview, and every day's
raw materialization names the statement supplying it; the run's totals ride along."""

from datetime import date, timedelta

import dagster as dg
import pyarrow.compute as pc
import pytest
from asset_helpers import make_resources

from ibpipeline.assets import flex_assets
from ibpipeline.assets.normalized import NORMALIZED_TABLES, preview_markdown
from ibpipeline.automation.jobs import flex_daily_job
from ibpipeline.automation.ranges import range_tags
from ibpipeline.flex.ratelimit import RateLimit
from ibpipeline.sim.flex_server import FlexSimulator, world_statement_source
from ibpipeline.storage import parquet, rawstore
from ibpipeline.world import World

QUERY_ID = "800969"
START, END = date(2024, 2, 1), date(2024, 2, 6)  # Thu..Tue: weekend days have no rows
DAYS = [START + timedelta(days=i) for i in range((END - START).days + 1)]


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=23, n_accounts=3, inception=date(2024, 1, 2))


@pytest.fixture
def defs(world, flex_token, flex_env, data_dir):
    sim = FlexSimulator(
        world_statement_source(world), flex_token, {QUERY_ID}, rate_limits=(RateLimit(1000, 1.0),)
    )
    with sim:
        yield dg.Definitions(
            assets=flex_assets,
            jobs=[flex_daily_job],
            resources=make_resources(sim, QUERY_ID, data_dir),
        )


def latest(instance: dg.DagsterInstance, key: str, day: date) -> dg.AssetMaterialization:
    """The newest materialization of partition ``day`` of asset ``key``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day.isoformat()]),
        limit=1,
    ).records
    assert records, (key, day)
    return records[0].asset_materialization


def by_account(table) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    counts = pc.value_counts(table["account_id"]).to_pylist()
    return dict(sorted((c["values"], c["counts"]) for c in counts))


def test_each_partition_of_a_range_run_has_its_own_metadata(defs, instance, data_dir):
    job = defs.resolve_job_def(flex_daily_job.name)
    result = job.execute_in_process(
        instance=instance, tags=range_tags(START.isoformat(), END.isoformat())
    )
    assert result.success
    previews: dict[str, set[str]] = {}
    for table in NORMALIZED_TABLES:
        run_rows = 0
        for day in DAYS:
            stored = parquet.read_day(table, day, data_dir=data_dir)
            assert stored is not None, (table, day)
            run_rows += stored.num_rows
            meta = latest(instance, table, day).metadata
            assert meta["dagster/row_count"].value == stored.num_rows, (table, day)
            assert meta["rows_by_account"].value == by_account(stored), (table, day)
            assert meta["accounts"].value == sorted(by_account(stored)), (table, day)
            if stored.num_rows:
                expected = preview_markdown(stored.slice(0, 5))
                assert meta["preview"].value == expected, (table, day)
                previews.setdefault(table, set()).add(expected)
            else:
                assert "preview" not in meta, (table, day)
            assert meta["date_range"].value == f"{START}..{END}"
            assert meta["days_in_run"].value == len(DAYS)
        for day in DAYS:  # the run's total rides along on every day
            assert latest(instance, table, day).metadata["rows_in_run"].value == run_rows
    # the business days' previews differ from each other (the bug showed the first day's rows)
    assert len(previews["nav_daily"]) == 4
    assert latest(instance, "nav_daily", date(2024, 2, 3)).metadata["dagster/row_count"].value == 0
    for day in DAYS:
        (entry,) = rawstore.read_manifest(data_dir, day).statements
        meta = latest(instance, "raw_flex_statement", day).metadata
        assert meta["sha256"].value == entry.sha256
        assert meta["window"].value == f"{START}..{END}"
        assert meta["accounts"].value == list(entry.accounts)


def test_a_later_single_day_run_replaces_only_that_days_metadata(defs, instance, data_dir):
    job = defs.resolve_job_def(flex_daily_job.name)
    tags = range_tags(START.isoformat(), END.isoformat())
    assert job.execute_in_process(instance=instance, tags=tags).success
    day = date(2024, 2, 5)
    assert job.execute_in_process(instance=instance, partition_key=day.isoformat()).success
    meta = latest(instance, "trades", day).metadata
    stored = parquet.read_day("trades", day, data_dir=data_dir)
    assert meta["dagster/row_count"].value == stored.num_rows
    assert meta["days_in_run"].value == 1
    assert latest(instance, "trades", date(2024, 2, 6)).metadata["days_in_run"].value == len(DAYS)
