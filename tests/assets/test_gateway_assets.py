"""Gateway snapshot assets through Dagster, against real simulators on loopback ports and the real
collector (unmodified ib_async): raw JSON lines, normalized Parquet, the NAV check, the schedule."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ibpipeline.assets.gateway import (
    GATEWAY_TABLES,
    RawSnapshotError,
    gateway_daily,
    gateway_snapshot_raw,
    gateway_tables,
    gateway_vs_flex_nav,
    read_day_snapshots,
    snapshots_tables,
)
from ibpipeline.assets.normalized import split_by
from ibpipeline.automation.gateway_schedule import (
    build_gateway_snapshot_schedule,
    gateway_snapshot_job,
    snapshot_crons,
    take_snapshot,
)
from ibpipeline.automation.ranges import account_range_tags
from ibpipeline.flex.parse import parse_statement
from ibpipeline.gateway import GatewayAddress, GatewayConfigError, collect_snapshots, to_jsonl
from ibpipeline.partitions import ACCOUNT_DIMENSION, daily, register_accounts
from ibpipeline.resources import DataDirResource, GatewayResource
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.sim.gateway_server import GatewayFaults, GatewaySimulatorThread
from ibpipeline.storage import parquet
from ibpipeline.world import World

DAY = date(2024, 3, 15)  # a Friday, New York on EDT (UTC-4)
CLOSE = datetime(2024, 3, 15, 20, 0, tzinfo=UTC)  # 16:00 New York
BEFORE_CLOSE = datetime(2024, 3, 15, 19, 45, tzinfo=UTC)  # 15:45 New York
NOON = datetime(2024, 3, 15, 16, 0, tzinfo=UTC)  # 12:00 New York
CENT = Decimal("0.01")
FAST = {"timeout_s": 1.0, "retries": 0, "backoff_s": 0.05, "pnl_timeout_s": 1.0}


class Clock:
    """A settable clock shared by the simulators and the resource's ``as_of``."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=11, n_accounts=4, inception=date(2024, 1, 2))


@pytest.fixture
def ids(world: World) -> list[str]:
    return [a.account_id for a in world.accounts]


@pytest.fixture
def clock() -> Clock:
    return Clock(CLOSE)


@pytest.fixture
def start_sims(world: World, clock: Clock) -> Iterator[Callable[..., list[GatewaySimulatorThread]]]:
    """Start one simulator per kwargs dict (all on the shared clock); stopped after the test."""
    started: list[GatewaySimulatorThread] = []

    def start(*configs: dict[str, Any]) -> list[GatewaySimulatorThread]:
        for config in configs:
            started.append(GatewaySimulatorThread(world, clock=clock, **config).start())
        return started[-len(configs) :]

    yield start
    for sim in started:
        sim.stop()


def address(sim: GatewaySimulatorThread) -> str:
    return f"127.0.0.1:{sim.port}"


def resources(sims: list[GatewaySimulatorThread], data_dir: Path, at: datetime) -> dict:
    return {
        "gateway": GatewayResource(
            gateways=[address(s) for s in sims], as_of=at.isoformat(), **FAST
        ),
        "data_dir": DataDirResource(path=str(data_dir)),
    }


def partition(data_dir: Path, table: str, account_id: str, day: date = DAY) -> list[dict]:
    return pq.read_table(parquet.partition_path(data_dir, table, account_id, day)).to_pylist()


def raw_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "raw" / "gateway").rglob("*.jsonl"))


def raw_metadata(run: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = run.asset_materializations_for_node(gateway_snapshot_raw.op.name)
    return {k: v.value for k, v in event.metadata.items()}


def nav_check(run: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e for e in run.get_asset_check_evaluations() if e.check_name == "gateway_vs_flex_nav"
    ]
    return evaluation


def write_flex_nav(world: World, data_dir: Path, day: date) -> None:
    """Flex nav_daily of ``day`` for every account: rendered by the Flex statement simulator
    from the same world, parsed by the real parser, stored by the normalized writer."""
    ids = [a.account_id for a in world.accounts]
    parsed = parse_statement(render_statement(world, ids, day, day))
    for (d,), part in split_by(parsed.tables["nav_daily"], ("date",), {(day,)}).items():
        parquet.write_day("nav_daily", d, part, data_dir=data_dir)


def test_raw_records_rebuild_exactly_the_collectors_tables(world, ids, start_sims):
    sims = start_sims({"account_ids": ids[:2]}, {"account_ids": ids[2:]})
    result = collect_snapshots(
        [GatewayAddress("127.0.0.1", s.port) for s in sims],
        clock=lambda: CLOSE,
        timeout=1.0,
        retries=0,
        pnl_timeout=1.0,
    )
    records = [json.loads(line) for line in to_jsonl(result).splitlines()]
    rebuilt = snapshots_tables([records])
    for name, table in result.tables().items():
        assert table.num_rows > 0
        assert rebuilt[name].equals(table), name


def test_snapshot_of_two_gateways_lands_in_parquet_and_equals_the_world(
    world, ids, start_sims, instance, data_dir
):
    sims = start_sims({"account_ids": ids[:2]}, {"account_ids": ids[2:]})
    runs = take_snapshot(instance, resources(sims, data_dir, CLOSE))

    assert runs.date == DAY and sorted(runs.accounts) == sorted(ids)
    assert sorted(instance.get_dynamic_partitions(ACCOUNT_DIMENSION)) == sorted(ids)
    meta = raw_metadata(runs.raw_run)
    assert meta["partial"] is False
    assert {g: s["accounts"] for g, s in meta["gateways"].items()} == {
        address(sims[0]): ids[:2],
        address(sims[1]): ids[2:],
    }
    (raw,) = raw_files(data_dir)
    assert raw == data_dir / "raw" / "gateway" / "date=2024-03-15" / f"{runs.snapshot_id}.jsonl"
    records = [json.loads(line) for line in raw.read_text().splitlines()]
    assert {(r["snapshot_id"], r["captured_at"]) for r in records} == {
        (runs.snapshot_id, CLOSE.isoformat())
    }
    assert {r["gateway"] for r in records} == {address(s) for s in sims}

    for account in world.accounts:
        acct = account.account_id
        gateway = address(sims[0] if acct in ids[:2] else sims[1])
        state = world.state_at(acct, CLOSE)
        values = partition(data_dir, "gateway_account_values", acct)
        assert {r["snapshot_id"] for r in values} == {runs.snapshot_id}
        assert {r["gateway"] for r in values} == {gateway}
        nlv = [r for r in values if r["key"] == "NetLiquidation"]
        assert [(r["value_decimal"], r["currency"]) for r in nlv] == [
            (state.nav.total_base.quantize(CENT), account.base_currency)
        ] * 2  # account updates and account summary

        positions = {r["conid"]: r for r in partition(data_dir, "gateway_positions", acct)}
        assert set(positions) == set(state.positions)
        for conid, pos in state.positions.items():
            assert positions[conid]["position"] == pos.quantity
            assert positions[conid]["market_value"] == pos.position_value

        (pnl,) = partition(data_dir, "gateway_pnl", acct)
        unrealized = sum(
            (p.position_value - p.cost_basis_money)
            * state.fx_to_base[world.instruments[c].currency]
            for c, p in state.positions.items()
        )
        assert pnl["unrealized_pnl"] == Decimal(unrealized).quantize(CENT)
        assert pnl["captured_at"] == CLOSE and pnl["date"] == DAY


def test_second_snapshot_appends_and_rebuilding_adds_no_duplicates(
    world, ids, start_sims, instance, data_dir, clock
):
    clock.at = BEFORE_CLOSE
    sims = start_sims({})  # one advisor login managing every account
    first = take_snapshot(instance, resources(sims, data_dir, BEFORE_CLOSE))
    counts = {(t, a): len(partition(data_dir, t, a)) for t in GATEWAY_TABLES for a in ids}
    assert all(counts.values())

    clock.at = CLOSE
    second = take_snapshot(instance, resources(sims, data_dir, CLOSE))
    assert second.snapshot_id != first.snapshot_id
    for (table, acct), n in counts.items():
        rows = partition(data_dir, table, acct)
        assert len(rows) == 2 * n, (table, acct)
        assert {r["snapshot_id"] for r in rows} == {first.snapshot_id, second.snapshot_id}
    nlv = [
        r["value_decimal"]
        for r in partition(data_dir, "gateway_account_values", ids[0])
        if r["key"] == "NetLiquidation" and r["source"] == "account_summary"
    ]
    assert nlv == [
        world.state_at(ids[0], at).nav.total_base.quantize(CENT) for at in (BEFORE_CLOSE, CLOSE)
    ]

    # the same raw files again, plus a copy of one under another name: nothing is duplicated
    first_file, _ = raw_files(data_dir)
    shutil.copy(first_file, first_file.with_name("copy-of-first.jsonl"))
    registered = instance.get_dynamic_partitions(ACCOUNT_DIMENSION)
    tags = account_range_tags(registered[0], registered[-1], DAY, DAY)
    rerun = dg.materialize(
        [gateway_tables], instance=instance, resources=resources(sims, data_dir, CLOSE), tags=tags
    )
    assert rerun.success
    for (table, acct), n in counts.items():
        assert len(partition(data_dir, table, acct)) == 2 * n


def test_one_gateway_down_is_recorded_as_partial_success(
    world, ids, start_sims, instance, data_dir
):
    up, down = start_sims(
        {"account_ids": ids[:2]}, {"account_ids": ids[2:], "faults": GatewayFaults(refuse=True)}
    )
    runs = take_snapshot(instance, resources([up, down], data_dir, CLOSE))

    meta = raw_metadata(runs.raw_run)
    assert meta["partial"] is True
    assert meta["accounts"] == ids[:2]
    assert meta["gateways"][address(up)]["ok"] is True
    status = meta["gateways"][address(down)]
    assert status["ok"] is False and "refused" in status["error"]
    (raw,) = raw_files(data_dir)
    kinds = [json.loads(line) for line in raw.read_text().splitlines()]
    assert [r["ok"] for r in kinds if r["kind"] == "gateway"] == [True, False]
    assert {r["gateway"] for r in kinds if r["kind"] != "gateway"} == {address(up)}
    assert partition(data_dir, "gateway_pnl", ids[0]) != []
    assert sorted(instance.get_dynamic_partitions(ACCOUNT_DIMENSION)) == sorted(ids[:2])


def test_all_gateways_down_fails_naming_each_and_writes_nothing(
    ids, start_sims, instance, data_dir
):
    sims = start_sims(
        {"account_ids": ids[:2], "faults": GatewayFaults(refuse=True)},
        {"account_ids": ids[2:], "faults": GatewayFaults(refuse=True)},
    )
    run = dg.materialize(
        [gateway_snapshot_raw],
        instance=instance,
        resources=resources(sims, data_dir, CLOSE),
        raise_on_error=False,
    )
    assert not run.success
    (failure,) = run.get_step_failure_events()
    message = failure.step_failure_data.error.message
    assert "no IB Gateway could be read" in message
    for sim in sims:
        assert f"{address(sim)}: connection refused" in message
    assert not data_dir.exists() or not any(p.is_file() for p in data_dir.rglob("*"))
    assert instance.get_dynamic_partitions(ACCOUNT_DIMENSION) == []


def test_nav_check_passes_at_the_close_against_flex_of_the_same_world(
    world, ids, start_sims, instance, data_dir
):
    write_flex_nav(world, data_dir, DAY)
    sims = start_sims({})
    runs = take_snapshot(instance, resources(sims, data_dir, CLOSE))

    check = nav_check(runs.tables_run)
    assert check.passed, check.description
    assert check.metadata["compared"].value == len(ids)
    differences = check.metadata["differences"].value
    assert sorted(d["account_id"] for d in differences) == sorted(ids)
    assert all(Decimal(d["difference_base"]) == 0 for d in differences)


def test_nav_check_warns_with_the_difference_when_gateway_and_flex_disagree(
    world, ids, start_sims, instance, data_dir, clock
):
    write_flex_nav(world, data_dir, DAY)
    clock.at = NOON  # intraday marks differ from the close Flex reports
    sims = start_sims({})
    register_accounts(instance, ids)
    registered = instance.get_dynamic_partitions(ACCOUNT_DIMENSION)
    defs = dg.Definitions(
        assets=[gateway_snapshot_raw, gateway_tables],
        asset_checks=[gateway_vs_flex_nav],
        jobs=[gateway_snapshot_job],
        resources=resources(sims, data_dir, NOON),
    )
    run = defs.resolve_job_def(gateway_snapshot_job.name).execute_in_process(
        instance=instance, tags=account_range_tags(registered[0], registered[-1], DAY, DAY)
    )

    check = nav_check(run)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    differences = {
        d["account_id"]: Decimal(d["difference_base"]) for d in check.metadata["differences"].value
    }
    expected = {
        a: world.state_at(a, NOON).nav.total_base.quantize(CENT)
        - world.day(a, DAY).nav.total_base.quantize(CENT)
        for a in ids
    }
    assert any(expected.values())
    assert differences == expected
    assert Decimal(check.metadata["max_abs_difference_base"].value) == max(
        abs(v) for v in expected.values()
    )


def test_nav_check_skips_account_days_without_flex_data_until_flex_arrives(
    world, ids, start_sims, instance, data_dir
):
    sims = start_sims({})
    runs = take_snapshot(instance, resources(sims, data_dir, CLOSE))

    check = nav_check(runs.tables_run)
    assert check.passed
    assert check.metadata["compared"].value == 0
    skipped = check.metadata["skipped"].value
    assert skipped == [f"{a} {DAY}: no Flex nav_daily (total_base) for that day yet" for a in ids]

    # Flex arrives the next day: the check run on its own covers every stored gateway account-day
    write_flex_nav(world, data_dir, DAY)
    later = dg.materialize(
        [gateway_tables, gateway_vs_flex_nav],
        instance=instance,
        resources=resources(sims, data_dir, CLOSE),
        selection=dg.AssetSelection.checks(gateway_vs_flex_nav),
    )
    assert later.get_asset_materialization_events() == []
    check = nav_check(later)
    assert check.passed and check.metadata["compared"].value == len(ids)


def test_schedule_fires_in_trading_hours_and_targets_every_account_today(instance, ids):
    assert snapshot_crons(time(9, 30), time(16, 0), 15) == [
        "30,45 9 * * 1-5",
        "0,15,30,45 10,11,12,13,14,15 * * 1-5",
        "0 16 * * 1-5",
    ]
    schedule = build_gateway_snapshot_schedule()
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.execution_timezone == "America/New_York"
    assert schedule.job_name == gateway_snapshot_job.name

    tick = datetime(2024, 3, 15, 23, 45, tzinfo=UTC)  # 19:45 New York, still March 15 there
    (before,) = schedule.evaluate_tick(
        dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
    ).run_requests
    assert before.asset_selection == [gateway_snapshot_raw.key]

    register_accounts(instance, ids)
    first, last = min(ids), max(ids)  # registered in sorted order
    (after,) = schedule.evaluate_tick(
        dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
    ).run_requests
    assert after.asset_selection is None
    assert after.tags["dagster/asset_partition_range_start"] == f"{first}|2024-03-15"
    assert after.tags["dagster/asset_partition_range_end"] == f"{last}|2024-03-15"


def test_todays_new_york_date_is_a_gateway_partition_but_not_yet_a_daily_one():
    ten_am_new_york = datetime(2024, 3, 15, 14, 0, tzinfo=UTC)
    with dg.partition_loading_context(effective_dt=ten_am_new_york):
        assert gateway_daily.get_last_partition_key() == "2024-03-15"
        assert daily.get_last_partition_key() == "2024-03-14"


def test_resource_rejects_bad_configuration():
    with pytest.raises(GatewayConfigError, match="IB_GATEWAYS is empty"):
        GatewayResource(gateways=[]).addresses()
    with pytest.raises(GatewayConfigError, match="invalid port"):
        GatewayResource(gateways=["127.0.0.1:99999"]).addresses()
    with pytest.raises(ValueError, match="must carry a UTC offset"):
        GatewayResource(gateways=["h:1"], as_of="2024-03-15T16:00:00").capture_instant()


def test_malformed_or_misplaced_raw_files_are_named(tmp_path):
    folder = tmp_path / "raw" / "gateway" / "date=2024-03-15"
    folder.mkdir(parents=True)
    stamp = {"snapshot_id": "s1", "captured_at": CLOSE.isoformat(), "gateway": "h:1"}
    (folder / "s1.jsonl").write_text(json.dumps(stamp | {"kind": "gateway"}) + "\n{oops\n")
    with pytest.raises(RawSnapshotError, match=r"s1\.jsonl:2: not JSON"):
        read_day_snapshots(tmp_path, DAY)
    next_day = stamp | {"captured_at": "2024-03-16T14:00:00+00:00", "kind": "gateway"}
    (folder / "s1.jsonl").write_text(json.dumps(next_day) + "\n")
    with pytest.raises(RawSnapshotError, match="captured on 2024-03-16"):
        read_day_snapshots(tmp_path, DAY)
