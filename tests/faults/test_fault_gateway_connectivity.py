"""Fault: a gateway reports lost connectivity or data during a snapshot (issue 10, item 3).

Real gateway simulators on loopback send 1100/1101/1102/2103/2105/2110 after the handshake; the
unmodified ib_async collector reads them.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ibpipeline.assets.gateway import (
    gateway_snapshot_raw,
    gateway_snapshots_trustworthy,
    gateway_tables,
    gateway_vs_flex_nav,
)
from ibpipeline.automation.gateway_schedule import gateway_snapshot_job
from ibpipeline.automation.ranges import account_range_tags
from ibpipeline.gateway import GatewayAddress, collect_snapshots, to_jsonl
from ibpipeline.partitions import ACCOUNT_DIMENSION, register_accounts
from ibpipeline.resources import DataDirResource, GatewayResource
from ibpipeline.sim.gateway_server import GatewayFaults, GatewaySimulatorThread
from ibpipeline.storage import parquet
from ibpipeline.world import World
from tests.assets.test_gateway_assets import write_flex_nav

DAY = date(2024, 3, 15)
NOON = datetime(2024, 3, 15, 16, 0, tzinfo=UTC)  # 12:00 New York: NAV differs from the close
FAST = {"timeout_s": 1.0, "retries": 0, "backoff_s": 0.05, "pnl_timeout_s": 1.0}


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=11, n_accounts=2, inception=date(2024, 1, 2))


@pytest.mark.parametrize(
    ("codes", "trustworthy"),
    [
        ((), True),
        ((1100,), False),
        ((1101,), False),
        ((2110,), False),
        ((1100, 1102), False),
        ((1102,), True),
        ((2103, 2105), True),
    ],
)
def test_connectivity_codes_are_recorded_and_decide_trust(world, codes, trustworthy):
    faults = GatewayFaults(connectivity_codes=codes)
    with GatewaySimulatorThread(world, clock=lambda: NOON, faults=faults) as sim:
        result = collect_snapshots(
            [GatewayAddress("127.0.0.1", sim.port)], timeout=2.0, retries=0, pnl_timeout=1.0
        )
    (outcome,) = result.gateways
    assert outcome.ok
    assert (outcome.connectivity_codes, outcome.trustworthy) == (codes, trustworthy)
    for table in result.tables().values():
        assert table.num_rows and set(table["trustworthy"].to_pylist()) == {trustworthy}
    records = [json.loads(line) for line in to_jsonl(result).splitlines()]
    (status,) = [r for r in records if r["kind"] == "gateway"]
    assert status["connectivity_codes"] == list(codes) and status["trustworthy"] is trustworthy


def test_untrustworthy_snapshot_is_flagged_warned_and_left_out_of_the_nav_check(
    world, instance, data_dir
):
    ids = [a.account_id for a in world.accounts]
    write_flex_nav(world, data_dir, DAY)  # the close; a noon snapshot differs from it
    faults = GatewayFaults(connectivity_codes=(1100,))
    with GatewaySimulatorThread(world, clock=lambda: NOON, faults=faults) as sim:
        register_accounts(instance, ids)
        registered = instance.get_dynamic_partitions(ACCOUNT_DIMENSION)
        defs = dg.Definitions(
            assets=[gateway_snapshot_raw, gateway_tables],
            asset_checks=[gateway_vs_flex_nav, gateway_snapshots_trustworthy],
            jobs=[gateway_snapshot_job],
            resources={
                "gateway": GatewayResource(
                    gateways=[f"127.0.0.1:{sim.port}"], as_of=NOON.isoformat(), **FAST
                ),
                "data_dir": DataDirResource(path=str(data_dir)),
            },
        )
        run = defs.resolve_job_def(gateway_snapshot_job.name).execute_in_process(
            instance=instance, tags=account_range_tags(registered[0], registered[-1], DAY, DAY)
        )
    assert run.success

    (raw,) = run.asset_materializations_for_node(gateway_snapshot_raw.op.name)
    assert raw.metadata["trustworthy"].value is False
    (gateway_meta,) = raw.metadata["gateways"].value.values()
    assert gateway_meta["connectivity_codes"] == [1100]
    for account_id in ids:
        path = parquet.partition_path(data_dir, "gateway_account_values", account_id, DAY)
        assert set(pq.read_table(path)["trustworthy"].to_pylist()) == {False}

    checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
    nav = checks["gateway_vs_flex_nav"]
    assert nav.passed and nav.metadata["compared"].value == 0, nav.description
    assert all("no trustworthy" in s for s in nav.metadata["skipped"].value)
    trust = checks["gateway_snapshots_trustworthy"]
    assert not trust.passed and trust.severity == dg.AssetCheckSeverity.WARN
    assert trust.metadata["untrustworthy_rows"].value > 0
