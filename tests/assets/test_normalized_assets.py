from datetime import date, timedelta

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from asset_helpers import files_containing, make_resources, tree_digest

import ibpipeline.assets.normalized as normalized
from ibpipeline.assets import flex_assets, normalized_flex, raw_flex_statement, warehouse_views
from ibpipeline.automation.jobs import flex_daily_job
from ibpipeline.automation.ranges import range_tags
from ibpipeline.flex import parse
from ibpipeline.flex.ratelimit import RateLimit
from ibpipeline.sim.flex_server import FlexSimulator, world_statement_source
from ibpipeline.storage import parquet, spill
from ibpipeline.world import World

QUERY_ID = "800969"
START, END = date(2024, 2, 1), date(2024, 3, 1)  # 30 days


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=11, n_accounts=3, inception=date(2024, 1, 2))


@pytest.fixture
def world_sim(world, flex_token):
    sim = FlexSimulator(
        world_statement_source(world), flex_token, {QUERY_ID}, rate_limits=(RateLimit(1000, 1.0),)
    )
    with sim:
        yield sim


@pytest.fixture
def defs(world_sim, data_dir, flex_env):
    return dg.Definitions(
        assets=flex_assets,
        jobs=[flex_daily_job],
        resources=make_resources(world_sim, QUERY_ID, data_dir),
    )


def account_ids(world) -> list[str]:
    return sorted(a.account_id for a in world.accounts)


def business_days(start: date, end: date) -> list[date]:
    return [
        start + timedelta(days=i)
        for i in range((end - start).days + 1)
        if (start + timedelta(days=i)).weekday() < 5
    ]


RAW = [raw_flex_statement.key]
NORMALIZE = [*normalized_flex.keys, warehouse_views.key]


def run_job(defs, instance, start: date, end: date, selection=None, **kwargs):
    """``flex_daily_job`` over ``start..end`` as one range run (``selection``: asset keys)."""
    job = defs.resolve_job_def("flex_daily_job")
    return job.execute_in_process(
        instance=instance,
        tags=range_tags(start.isoformat(), end.isoformat()),
        asset_selection=selection,
        **kwargs,
    )


def run_raw(defs, instance, start: date, end: date, **kwargs):
    return run_job(defs, instance, start, end, RAW, **kwargs)


def run_normalize(defs, instance, start: date, end: date, **kwargs):
    return run_job(defs, instance, start, end, NORMALIZE, **kwargs)


def test_single_day_writes_every_account_in_one_file_per_table(defs, world, instance, data_dir):
    day = date(2024, 2, 5)
    job = defs.resolve_job_def("flex_daily_job")
    result = job.execute_in_process(instance=instance, partition_key=day.isoformat())
    assert result.success
    accounts = account_ids(world)
    nav = parquet.read_table("nav_daily", data_dir=data_dir)
    assert sorted(nav.column("account_id").to_pylist()) == accounts
    assert {r["account_id"]: r["total_base"] for r in nav.to_pylist()} == {
        a: world.day(a, day).nav.total_base for a in accounts
    }
    mats = result.asset_materializations_for_node("normalized_flex")
    assert {m.partition for m in mats} == {day.isoformat()}
    nav_meta = next(m for m in mats if m.asset_key == dg.AssetKey("nav_daily")).metadata
    assert nav_meta["dagster/row_count"].value == 3
    assert nav_meta["rows_by_account"].value == dict.fromkeys(accounts, 1)
    for table in normalized.NORMALIZED_TABLES:
        parts = parquet.list_partitions(table, data_dir=data_dir)
        assert [(p.account_id, p.date) for p in parts] == [(None, day)], table
        assert parts[0].path == data_dir / f"normalized/{table}/date={day}/part-0.parquet"
    positions = parquet.read_table("positions_daily", data_dir=data_dir, account_ids=[accounts[1]])
    summary = positions.filter(pc.equal(positions["level_of_detail"], "SUMMARY"))
    assert sorted(summary.column("conid").to_pylist()) == sorted(
        world.day(accounts[1], day).positions
    )


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (date(2024, 2, 5), date(2024, 2, 11)),
        pytest.param(START, END, marks=pytest.mark.slow, id="3x30"),
    ],
)
def test_range_run_parses_once_and_rerun_is_identical(
    defs, world, instance, data_dir, monkeypatch, start, end
):
    assert run_raw(defs, instance, start, end).success
    accounts = instance.get_dynamic_partitions("account")
    assert accounts == account_ids(world)
    calls = []
    real_parse = normalized.parse_statement
    monkeypatch.setattr(
        normalized, "parse_statement", lambda *a, **k: calls.append(1) or real_parse(*a, **k)
    )

    result = run_normalize(defs, instance, start, end)
    assert result.success
    assert len(calls) == 1  # one statement for the whole range, parsed once
    n_days = (end - start).days + 1
    for table in normalized.NORMALIZED_TABLES:
        assert len(parquet.list_partitions(table, data_dir=data_dir)) == n_days, table
    nav = parquet.read_table("nav_daily", data_dir=data_dir)
    bdays = business_days(start, end)
    assert nav.num_rows == 3 * len(bdays)
    expected = {(a, d): world.day(a, d).nav.total_base for a in accounts for d in bdays}
    got = {(r["account_id"], r["date"]): r["total_base"] for r in nav.to_pylist()}
    assert got == expected
    meta = result.asset_materializations_for_node("normalized_flex")
    nav_meta = next(m for m in meta if m.asset_key == dg.AssetKey("nav_daily")).metadata
    assert nav_meta["rows_in_run"].value == nav.num_rows
    assert nav_meta["days_in_run"].value == n_days
    assert nav_meta["accounts"].value == accounts
    assert nav_meta["date_range"].value == f"{start}..{end}"
    with duckdb.connect(str(data_dir / "ibpipeline.duckdb"), read_only=True) as con:
        assert (
            con.execute("SELECT count(*) FROM normalized.nav_daily").fetchone()[0] == nav.num_rows
        )

    before = tree_digest(data_dir / "normalized")
    assert run_normalize(defs, instance, start, end).success
    assert tree_digest(data_dir / "normalized") == before
    assert parquet.read_table("nav_daily", data_dir=data_dir).num_rows == nav.num_rows


def test_missing_raw_statement_fails_clearly(defs, world, instance, data_dir):
    day = date(2024, 2, 5)
    assert run_raw(defs, instance, day, day).success
    result = run_normalize(defs, instance, day, day + timedelta(days=2), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    assert error.cause.cls_name == "MissingRawStatementError"
    assert "2024-02-06, 2024-02-07" in error.cause.message
    assert not (data_dir / "normalized").exists()


def test_refetch_with_failure_keeps_data_and_hides_token(
    defs, world, world_sim, instance, data_dir, dagster_home, flex_token
):
    assert run_raw(defs, instance, START, START + timedelta(days=4)).success
    assert run_normalize(defs, instance, START, START + timedelta(days=4)).success
    before = tree_digest(data_dir)
    world_sim.faults.fail_code = 1015
    assert not run_raw(
        defs, instance, START, START + timedelta(days=4), raise_on_error=False
    ).success
    assert tree_digest(data_dir) == before
    assert files_containing(dagster_home, flex_token.encode()) == []
    assert files_containing(data_dir, flex_token.encode()) == []


def test_split_by_keeps_order_and_selection():
    table = pa.table(
        {
            "account_id": ["U2222222", "U1111111", "U2222222", "U1111111"],
            "date": pa.array(
                [date(2024, 1, 3), date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)],
                pa.date32(),
            ),
            "n": [1, 2, 3, 4],
        }
    )
    wanted = {(date(2024, 1, 3),), (date(2024, 1, 2),), (date(2024, 1, 9),)}
    groups = normalized.split_by(table, ("date",), wanted)
    assert {k: v.column("n").to_pylist() for k, v in groups.items()} == {
        (date(2024, 1, 3),): [1, 3],
        (date(2024, 1, 2),): [2],
    }
    wanted = {("U2222222", date(2024, 1, 3)), ("U1111111", date(2024, 1, 4))}
    groups = normalized.split_by(table, ("account_id", "date"), wanted)
    assert {k: v.column("n").to_pylist() for k, v in groups.items()} == {
        ("U2222222", date(2024, 1, 3)): [1, 3],
        ("U1111111", date(2024, 1, 4)): [4],
    }


def test_a_value_that_does_not_convert_is_a_warn_check_not_a_failed_run(
    world, flex_token, data_dir, flex_env, instance
):
    """One trade's conid replaced by IBKR placeholder text: the run succeeds, the row is stored
    with a null conid and the text in extra, and the parse_warnings check WARNs with its count."""
    source = world_statement_source(world)

    def with_bad_conid(*args):
        content = source(*args)
        start = content.index(b"<Trade ")
        at = content.index(b' conid="', start) + len(b' conid="')
        end = content.index(b'"', at)
        return content[:at] + b"XXXXXCAD" + content[end:]

    sim = FlexSimulator(with_bad_conid, flex_token, {QUERY_ID}, rate_limits=(RateLimit(1000, 1.0),))
    with sim:
        defs = dg.Definitions(
            assets=flex_assets,
            jobs=[flex_daily_job],
            resources=make_resources(sim, QUERY_ID, data_dir),
        )
        result = run_job(defs, instance, START, START + timedelta(days=6), [*RAW, *NORMALIZE])
    assert result.success
    checks = {
        e.asset_check_evaluation_data.asset_key.path[-1]: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == "parse_warnings"
    }
    assert not checks["trades"].passed
    assert checks["trades"].severity == dg.AssetCheckSeverity.WARN
    assert checks["trades"].metadata["parse_warnings"].value == 1
    assert checks["nav_daily"].passed
    trades = parquet.read_table("trades", data_dir=data_dir).to_pylist()
    bad = [r for r in trades if dict(r["extra"] or []).get("conid") == "XXXXXCAD"]
    assert len(bad) == 1 and bad[0]["conid"] is None


def test_column_schema_carries_each_columns_description_and_unit() -> None:
    from ibpipeline.flex.schema import SCHEMAS

    columns = {c.name: c for c in normalized.column_schema(SCHEMAS["trades"]).columns}
    assert "unit: money in commission_currency" in columns["commission"].description
    assert "Flex attribute ibCommission" in columns["commission"].description


def test_a_large_statement_parsed_in_parts_writes_the_same_files(
    flex_token, flex_env, instance, data_dir, monkeypatch
):
    """Above ``SPILL_BYTES`` a statement is parsed in parts of whole accounts and its rows wait on
    disk: the day files are the ones the in-memory path writes, row for row and in the same order
    (the statement lists its accounts unsorted; positions_daily is sorted by account), and the
    spill is gone after."""
    world = World(seed=7, n_accounts=3, inception=date(2024, 1, 2))
    ids = [a.account_id for a in world.accounts]
    assert ids != sorted(ids)
    sim = FlexSimulator(
        world_statement_source(world), flex_token, {QUERY_ID}, rate_limits=(RateLimit(1000, 1.0),)
    )
    start, end = date(2024, 2, 5), date(2024, 2, 18)
    with sim:
        defs = dg.Definitions(
            assets=flex_assets,
            jobs=[flex_daily_job],
            resources=make_resources(sim, QUERY_ID, data_dir),
        )
        assert run_raw(defs, instance, start, end).success
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    tables = normalized.NORMALIZED_TABLES
    in_memory = normalized.normalize_days(data_dir, days, tables)
    expected = {t: parquet.read_table(t, data_dir=data_dir) for t in tables}
    assert expected["trades"].num_rows > 0 and expected["positions_daily"].num_rows > 0

    monkeypatch.setattr(normalized, "SPILL_BYTES", 0)
    monkeypatch.setattr(parse, "PART_ROWS", 1)  # a part per account
    parts_seen = []

    class Counting(parse.StatementParts):
        def __iter__(self):
            for part in super().__iter__():
                parts_seen.append(part)
                yield part

    monkeypatch.setattr(normalized, "StatementParts", Counting)
    parquet_dir = data_dir / "normalized"
    for table in tables:  # nothing left from the first write
        for part in parquet.list_partitions(table, data_dir=data_dir):
            part.path.unlink()
    spilled = normalized.normalize_days(data_dir, days, tables)
    assert len(parts_seen) == 3  # one part per account
    for table in tables:
        assert parquet.read_table(table, data_dir=data_dir).equals(expected[table]), table
        assert spilled[table].rows == in_memory[table].rows
        assert spilled[table].rows_by_account == in_memory[table].rows_by_account
    assert parquet_dir.is_dir()
    assert list((data_dir / spill.SPILL_DIR).iterdir()) == []
