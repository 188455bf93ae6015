"""Every gateway table is queryable from DuckDB after a gateway snapshot (issue 10, item 12): the
views ``normalized.gateway_*`` and their aliases ``main.gateway_*`` in ``<data>/ibpipeline.duckdb``
count exactly the rows of the Parquet files, against the IB Gateway simulator."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import duckdb
import pytest

from ibpipeline.assets.warehouse import GATEWAY_VIEW_TABLES, gateway_warehouse_views
from ibpipeline.automation.gateway_schedule import take_snapshot
from ibpipeline.resources import DataDirResource, GatewayResource
from ibpipeline.sim.gateway_server import GatewaySimulatorThread
from ibpipeline.storage import parquet, warehouse
from ibpipeline.world import World

CLOSE = datetime(2024, 3, 15, 20, 0, tzinfo=UTC)  # 16:00 New York
NOON = datetime(2024, 3, 15, 16, 0, tzinfo=UTC)  # 12:00 New York
FAST = {"timeout_s": 1.0, "retries": 0, "backoff_s": 0.05, "pnl_timeout_s": 1.0}


def snapshot_with_views(instance: dg.DagsterInstance, world: World, data_dir, at: datetime) -> None:
    """One snapshot (raw run, tables run), then the gateway views unless the tables run of
    ``take_snapshot`` already materialized them (as ``gateway_snapshot_job`` does)."""
    with GatewaySimulatorThread(world, clock=lambda: at) as gateway:
        resources = {
            "gateway": GatewayResource(
                gateways=[f"127.0.0.1:{gateway.port}"], as_of=at.isoformat(), **FAST
            ),
            "data_dir": DataDirResource(path=str(data_dir)),
        }
        runs = take_snapshot(instance, resources)
    done = {e.asset_key for e in runs.tables_run.get_asset_materialization_events()}
    if gateway_warehouse_views.key not in done:
        result = dg.materialize([gateway_warehouse_views], instance=instance, resources=resources)
        assert result.success


def counts(data_dir) -> dict[str, tuple[int, int, int]]:
    """Per gateway table: rows of main.<t>, of normalized.<t>, of its Parquet files."""
    with duckdb.connect(str(warehouse.warehouse_path(data_dir)), read_only=True) as con:
        return {
            t: (
                con.execute(f"select count(*) from {t}").fetchone()[0],
                con.execute(f"select count(*) from normalized.{t}").fetchone()[0],
                parquet.read_table(t, data_dir=data_dir).num_rows,
            )
            for t in GATEWAY_VIEW_TABLES
        }


@pytest.mark.slow
def test_gateway_tables_are_queryable_from_duckdb_after_a_snapshot(instance, data_dir):
    world = World(seed=11, n_accounts=2, inception=date(2024, 1, 2))
    # no Flex run ever happened: the gateway snapshot alone defines the views
    snapshot_with_views(instance, world, data_dir, NOON)
    first = counts(data_dir)
    assert all(main == view == files > 0 for main, view, files in first.values()), first
    with duckdb.connect(str(warehouse.warehouse_path(data_dir)), read_only=True) as con:
        accounts = con.execute("select distinct account_id from gateway_positions").fetchall()
    assert sorted(a for (a,) in accounts) == sorted(a.account_id for a in world.accounts)

    # a later snapshot of the same day: the views read the rewritten files, no duplicates
    snapshot_with_views(instance, world, data_dir, CLOSE)
    second = counts(data_dir)
    assert all(main == view == files for main, view, files in second.values()), second
    assert second["gateway_account_values"][2] == 2 * first["gateway_account_values"][2]
