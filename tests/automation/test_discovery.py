import json
import socket
from datetime import UTC, date, datetime

import dagster as dg
import pytest
from conftest import make_defs

from ibpipeline.automation.ranges import RANGE_END_TAG, RANGE_START_TAG
from ibpipeline.automation.sensors import (
    AccountRecord,
    DiscoveryState,
    build_account_discovery_sensor,
    discover,
    new_accounts_tag,
)
from ibpipeline.resources import DataDirResource, GatewayResource
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.sim.gateway_server import GatewaySimulatorThread
from ibpipeline.storage import parquet, rawstore

NEW_ACCOUNTS_TAG = "ibpipeline/new_accounts"

CLOCK = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)  # Wednesday -> report day Tuesday 2024-03-05
HISTORY_START = date(2024, 1, 2)


@pytest.fixture(autouse=True)
def history_env(monkeypatch):
    monkeypatch.setenv("IBPIPELINE_HISTORY_START", HISTORY_START.isoformat())


@pytest.fixture
def sensor():
    return build_account_discovery_sensor(clock=lambda: CLOCK)


def store(data_dir, world, day: date, account_ids, manifest_accounts=None) -> None:
    """Store a real statement of ``account_ids`` for ``day`` with a Flex manifest."""
    content = render_statement(world, account_ids, day, day)
    stored = rawstore.put_statement(data_dir, content)
    rawstore.write_manifest(
        data_dir,
        day,
        rawstore.Manifest(
            sha256=stored.sha256,
            size=stored.size,
            from_date=day,
            to_date=day,
            accounts=tuple(manifest_accounts or sorted(account_ids)),
            fetched_at="2024-03-06T11:00:00+00:00",
            source="flex",
        ),
    )


def gateway_resource(gateways=()) -> GatewayResource:
    return GatewayResource(gateways=list(gateways), timeout_s=2.0)


def discovery_defs(sim, data_dir, sensor, gateways=()) -> dg.Definitions:
    return dg.Definitions.merge(
        make_defs(sim, data_dir, sensors=[sensor]),
        dg.Definitions(resources={"gateway": gateway_resource(gateways)}),
    )


def tick(sensor, instance, data_dir, cursor=None, apply=True, gateways=()):
    defs = discovery_defs(None, data_dir, sensor, gateways)
    with dg.build_sensor_context(
        instance=instance,
        definitions=defs,
        cursor=cursor,
        resources={
            "data_dir": DataDirResource(path=str(data_dir)),
            "gateway": gateway_resource(gateways),
        },
    ) as ctx:
        result = defs.resolve_sensor_def(sensor.name).evaluate_tick(ctx)
    if apply:  # what the daemon does before launching the runs
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    return result


def test_skips_without_any_flex_statement(sensor, instance, data_dir):
    result = tick(sensor, instance, data_dir)
    assert result.run_requests == []
    assert "no stored Flex statement" in result.skip_message


def test_new_accounts_no_change_new_again_and_closed(
    sensor, instance, data_dir, world_accounts, world
):
    first_two = sorted(world_accounts[:2])
    store(data_dir, world, date(2024, 3, 5), first_two)

    result = tick(sensor, instance, data_dir)
    (add,) = result.dynamic_partitions_requests
    assert (add.partitions_def_name, sorted(add.partition_keys)) == ("account", first_two)
    (request,) = result.run_requests
    assert request.job_name in (None, "flex_daily_job")
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (
        "2024-01-02",
        "2024-03-05",
    )
    assert request.tags[NEW_ACCOUNTS_TAG].split() == first_two
    state = DiscoveryState.from_cursor(result.cursor)
    assert {a: r.status for a, r in state.accounts.items()} == dict.fromkeys(first_two, "open")
    assert state.accounts[first_two[0]].history == "2024-01-02..2024-03-05"
    on_disk = json.loads((data_dir / "state" / "accounts.json").read_text())
    assert sorted(on_disk["accounts"]) == first_two
    assert instance.get_dynamic_partitions("account") == first_two

    # no change: nothing requested, cursor stable
    again = tick(sensor, instance, data_dir, cursor=result.cursor)
    assert again.run_requests == [] and not again.dynamic_partitions_requests
    assert again.cursor == result.cursor

    # a third account appears in a newer statement: only it is added and backfilled
    third = world_accounts[2]
    store(data_dir, world, date(2024, 3, 6), world_accounts)
    newer = tick(sensor, instance, data_dir, cursor=again.cursor)
    (add,) = newer.dynamic_partitions_requests
    assert list(add.partition_keys) == [third]
    (request,) = newer.run_requests
    assert request.tags[NEW_ACCOUNTS_TAG] == third
    assert request.run_key != result.run_requests[0].run_key

    # one account disappears from the newest statement: closed, never removed
    gone = first_two[0]
    store(data_dir, world, date(2024, 3, 7), [a for a in world_accounts if a != gone])
    closing = tick(sensor, instance, data_dir, cursor=newer.cursor)
    assert closing.run_requests == [] and not closing.dynamic_partitions_requests
    record = DiscoveryState.from_cursor(closing.cursor).accounts[gone]
    assert (record.status, record.closed_on) == ("closed", "2024-03-07")
    assert "absent from flex" in record.closed_reason
    assert gone in instance.get_dynamic_partitions("account")
    on_disk = json.loads((data_dir / "state" / "accounts.json").read_text())
    assert on_disk["accounts"][gone]["status"] == "closed"

    # it comes back: reopened, no second history backfill
    store(data_dir, world, date(2024, 3, 8), world_accounts)
    back = tick(sensor, instance, data_dir, cursor=closing.cursor)
    assert back.run_requests == []
    assert DiscoveryState.from_cursor(back.cursor).accounts[gone].status == "open"


def test_invalid_ids_are_rejected_once(sensor, instance, data_dir, world, world_accounts):
    good = world_accounts[0]
    store(data_dir, world, date(2024, 3, 5), [good], manifest_accounts=[good, "bad|id", "u 123"])
    result = tick(sensor, instance, data_dir)
    (add,) = result.dynamic_partitions_requests
    assert list(add.partition_keys) == [good]
    assert result.run_requests[0].tags[NEW_ACCOUNTS_TAG] == good
    state = DiscoveryState.from_cursor(result.cursor)
    assert set(state.rejected) == {"bad|id", "u 123"}
    assert "invalid account id" in state.rejected["bad|id"]
    assert instance.get_dynamic_partitions("account") == [good]
    again = tick(sensor, instance, data_dir, cursor=result.cursor)
    assert again.run_requests == [] and again.cursor == result.cursor


def test_account_with_normalized_history_is_adopted(
    sensor, instance, data_dir, world, world_accounts
):
    account = world_accounts[0]
    store(data_dir, world, date(2024, 3, 5), [account])
    import pyarrow as pa

    other = "U7654321"
    parquet.write_day(
        "nav_daily",
        HISTORY_START,
        pa.table({"account_id": [other], "date": [HISTORY_START]}),
        data_dir=data_dir,
    )
    not_adopted = tick(sensor, instance, data_dir)  # another account's history is not its own
    assert len(not_adopted.run_requests) == 1
    parquet.write_day(
        "nav_daily",
        HISTORY_START,
        pa.table({"account_id": [other, account], "date": [HISTORY_START] * 2}),
        data_dir=data_dir,
    )
    result = tick(sensor, instance, data_dir)
    assert result.run_requests == []
    assert DiscoveryState.from_cursor(result.cursor).accounts[account].history == "adopted"
    assert instance.get_dynamic_partitions("account") == [account]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_account_only_on_a_gateway_is_registered_and_backfilled(
    sensor, instance, data_dir, world, world_accounts
):
    flex_accounts, only_gateway = sorted(world_accounts[:2]), world_accounts[2]
    store(data_dir, world, date(2024, 3, 5), flex_accounts)
    first = tick(sensor, instance, data_dir)  # no gateway configured: the Flex accounts only
    assert instance.get_dynamic_partitions("account") == flex_accounts

    with GatewaySimulatorThread(world, account_ids=[flex_accounts[0], only_gateway]) as gw:
        address = f"127.0.0.1:{gw.port}"
        found = tick(sensor, instance, data_dir, cursor=first.cursor, gateways=[address])
        again = tick(sensor, instance, data_dir, cursor=found.cursor, gateways=[address])
    (add,) = found.dynamic_partitions_requests
    assert list(add.partition_keys) == [only_gateway]
    (request,) = found.run_requests
    assert request.tags[NEW_ACCOUNTS_TAG] == only_gateway
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (
        "2024-01-02",
        "2024-03-05",
    )
    state = DiscoveryState.from_cursor(found.cursor)
    assert {a: r.status for a, r in state.accounts.items()} == dict.fromkeys(world_accounts, "open")
    assert state.accounts[only_gateway].history == "2024-01-02..2024-03-05"
    assert sorted(instance.get_dynamic_partitions("account")) == sorted(world_accounts)
    # the gateway keeps listing it: nothing new, nothing closed
    assert again.run_requests == [] and again.cursor == found.cursor


def test_unreachable_gateway_closes_nothing(sensor, instance, data_dir, world, world_accounts):
    flex_accounts, only_gateway = sorted(world_accounts[:2]), world_accounts[2]
    store(data_dir, world, date(2024, 3, 5), flex_accounts)
    known = {a: AccountRecord("2024-03-01", history="adopted") for a in world_accounts}
    instance.add_dynamic_partitions("account", list(world_accounts))
    cursor = DiscoveryState(known).to_cursor()

    dead = tick(sensor, instance, data_dir, cursor=cursor, gateways=[f"127.0.0.1:{closed_port()}"])
    assert dead.run_requests == [] and not dead.dynamic_partitions_requests
    assert dead.cursor == cursor  # the account seen only on the gateway stays open

    # without the gateway configured, its absence from Flex closes it
    flex_only = tick(sensor, instance, data_dir, cursor=cursor)
    record = DiscoveryState.from_cursor(flex_only.cursor).accounts[only_gateway]
    assert record.status == "closed" and "absent from flex" in record.closed_reason


def test_invalid_gateway_ids_are_rejected_like_flex_ones():
    found = discover(
        DiscoveryState(),
        {"flex": ["U1234567"], "gateway:127.0.0.1:4002": ["U1234567", "bad|id"]},
        {},
        date(2024, 3, 5),
        lambda _: False,
        "2024-01-02..2024-03-05",
    )
    assert found.new == ("U1234567",)
    assert set(found.rejected) == {"bad|id"}
    assert found.rejected["bad|id"].startswith("from gateway:127.0.0.1:4002: invalid account id")


def test_unreadable_cursor_fails_clearly():
    with pytest.raises(ValueError, match="unreadable account_discovery_sensor cursor"):
        DiscoveryState.from_cursor("{not json")


def test_new_accounts_tag_lists_at_most_twenty():
    ids = [f"U{1000000 + i}" for i in range(23)]
    assert new_accounts_tag(ids[:2]) == "U1000000 U1000001"
    assert new_accounts_tag(ids).endswith("U1000019 (+3 more)")


@pytest.mark.slow
def test_discovered_account_gets_its_history_in_one_run(
    sensor, instance, data_dir, world, world_accounts, source, sim, flex_env
):
    """End to end through Dagster: the daily job for two accounts, a third joins the query (with
    dateClosed on another), discovery requests ONE flex_daily_job range run over the history,
    which re-fetches it in one request and fills the third account's history."""
    defs = discovery_defs(sim, data_dir, sensor)
    day = date(2024, 3, 5)
    job = defs.resolve_job_def("flex_daily_job")
    source.account_ids = sorted(world_accounts[:2])
    job.execute_in_process(instance=instance, partition_key=day.isoformat())
    first = tick(sensor, instance, data_dir)
    assert len(first.run_requests) == 1  # history of the first two accounts

    source.account_ids = list(world_accounts)
    closed = sorted(world_accounts[:2])[1]
    source.date_closed[closed] = "20240305"
    assert job.execute_in_process(instance=instance, partition_key=day.isoformat()).success
    assert parquet.read_table("account_info", data_dir=data_dir, start=day, end=day).num_rows == 3

    found = tick(sensor, instance, data_dir, cursor=first.cursor)
    third = world_accounts[2]
    (request,) = found.run_requests
    assert request.tags[NEW_ACCOUNTS_TAG] == third
    state = DiscoveryState.from_cursor(found.cursor)
    assert state.accounts[closed].status == "closed"
    assert state.accounts[closed].closed_on == "2024-03-05"
    assert "dateClosed" in state.accounts[closed].closed_reason

    sends_before = sim.count("SendRequest")
    history = job.execute_in_process(instance=instance, tags=request.tags)
    assert history.success
    assert sim.count("SendRequest") - sends_before == 1  # 64 days: one window
    nav = parquet.read_table("nav_daily", data_dir=data_dir, account_ids=[third])
    days = world.business_days(HISTORY_START, day)
    got = {r["date"]: r["total_base"] for r in nav.to_pylist()}
    assert got == {d: world.day(third, d).nav.total_base for d in days}
