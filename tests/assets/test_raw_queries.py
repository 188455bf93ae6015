"""Several Flex queries (``IBKR_FLEX_QUERIES``): one fetch step per query against the simulator
serving disjoint accounts of one world, compared with a single query over every account."""

from datetime import date

import dagster as dg
import pyarrow as pa
import pytest
from asset_helpers import files_containing, make_query_resources, make_resources

from ibpipeline.assets import normalized_flex
from ibpipeline.assets.normalized import NORMALIZED_TABLES
from ibpipeline.assets.raw import build_raw_flex_statement, raw_flex_statement
from ibpipeline.automation.ranges import range_tags
from ibpipeline.flex.errors import FlexTokenInvalid
from ibpipeline.flex.queries import FlexQuery
from ibpipeline.flex.ratelimit import RateLimit
from ibpipeline.sim.flex_server import FlexSimulator, sim_queries, world_statement_source
from ibpipeline.storage import parquet, rawstore
from ibpipeline.world import World

ALL_QUERY_ID = "900000"
TOKENS = ["111111111111111111111111", "222222222222222222222222", "333333333333333333333333"]
START, END = date(2024, 2, 1), date(2024, 2, 20)
OVERLAP_QUERY_ID = "900009"  # the first account of q2, token of q1
QUERIES = tuple(FlexQuery(f"q{i}", str(900001 + i - 1), f"TEST_FLEX_TOKEN_Q{i}") for i in (1, 2, 3))


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=23, n_accounts=6, inception=date(2024, 1, 2))


@pytest.fixture
def sim(world, flex_token):
    """One simulator: query ALL_QUERY_ID (every account, ``flex_token``) and three queries over
    disjoint accounts (round robin), each with its own token."""
    ids = [a.account_id for a in world.accounts]
    served = sim_queries(ids, QUERIES[0].query_id, TOKENS, count=3)
    by_query = {
        ALL_QUERY_ID: ids,
        **{q.query_id: q.accounts for q in served},
        OVERLAP_QUERY_ID: served[1].accounts[:1],
    }
    simulator = FlexSimulator(
        world_statement_source(world, accounts_by_query=by_query),
        flex_token,
        {ALL_QUERY_ID},
        rate_limits=(RateLimit(1000, 1.0),),
        query_tokens={**{q.query_id: q.token for q in served}, OVERLAP_QUERY_ID: TOKENS[0]},
    )
    with simulator:
        yield simulator


@pytest.fixture
def query_env(monkeypatch, flex_env):
    for query, token in zip(QUERIES, TOKENS, strict=True):
        monkeypatch.setenv(query.token_env, token)


def materialize(assets, instance, resources, **kwargs):
    tags = range_tags(START.isoformat(), END.isoformat())
    return dg.materialize(assets, instance=instance, resources=resources, tags=tags, **kwargs)


def rows(table_name: str, data_dir) -> list[tuple]:
    """Every row of a normalized table (without the statement hash), in a canonical order."""
    table = parquet.read_table(table_name, data_dir=data_dir)
    if table.num_columns == 0:
        return []
    if "statement_sha256" in table.column_names:
        table = table.drop_columns(["statement_sha256"])
    assert isinstance(table, pa.Table)
    return sorted((repr(r) for r in table.to_pylist()), key=str)


def test_three_queries_give_the_single_query_tables_with_one_request_each(
    sim, world, instance, work_dir, query_env
):
    single_dir, split_dir = work_dir / "single", work_dir / "split"
    single = materialize(
        [raw_flex_statement, normalized_flex],
        instance,
        make_resources(sim, ALL_QUERY_ID, single_dir),
    )
    assert single.success
    raw = build_raw_flex_statement(QUERIES)
    split = materialize(
        [raw, normalized_flex], instance, make_query_resources(sim, QUERIES, split_dir)
    )
    assert split.success

    # exactly one SendRequest (and statement) per query for the range
    for query_id in (ALL_QUERY_ID, *(q.query_id for q in QUERIES)):
        assert sim.count("SendRequest", query=query_id) == 1
    assert sim.count(error_code=1018) == 0
    # one step per query, then the recording step
    steps = {
        e.step_key for e in split.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS
    }
    assert {f"raw_flex_statement.fetch_q{i}" for i in (1, 2, 3)} <= steps
    assert "raw_flex_statement.record_statements" in steps

    # same normalized tables, row for row
    compared = 0
    for name in NORMALIZED_TABLES:
        expected = rows(name, single_dir)
        assert rows(name, split_dir) == expected, name
        compared += len(expected)
    assert compared > 500

    # every day's manifest: one supplier per account, each from its own query
    ids = sorted(a.account_id for a in world.accounts)
    manifest = rawstore.read_manifest(split_dir, date(2024, 2, 14))
    assert sorted(m.query for m in manifest.statements) == ["q1", "q2", "q3"]
    supplied = [a for m in manifest.statements for a in m.accounts]
    assert sorted(supplied) == ids
    meta = split.asset_materializations_for_node("raw_flex_statement")[0].metadata
    assert meta["http_requests"].value == 6  # SendRequest + GetStatement per query
    assert meta["overlapping_accounts"].value == []


def test_steps_pools_and_limiters_are_per_query_and_per_token():
    shared = FlexQuery("q4", "900004", "TEST_FLEX_TOKEN_Q3")  # same token as q3
    raw = build_raw_flex_statement((*QUERIES, shared))
    ops = {n.name: n.definition for n in raw.node_def.nodes}
    assert sorted(ops) == ["fetch_q1", "fetch_q2", "fetch_q3", "fetch_q4", "record_statements"]
    assert ops["fetch_q1"].required_resource_keys == {"flex_q1", "data_dir"}
    pools = {name: op.pool for name, op in ops.items() if name.startswith("fetch_")}
    assert pools["fetch_q3"] == pools["fetch_q4"] == "flex_api_test_flex_token_q3"
    assert len({pools["fetch_q1"], pools["fetch_q2"], pools["fetch_q3"]}) == 3
    # the single default query keeps its historical step and pool
    default = {n.name: n.definition for n in raw_flex_statement.node_def.nodes}
    assert default["fetch_default"].pool == "flex_api"

    from ibpipeline.resources import FlexResource

    def limiter(token: str):
        with FlexResource(token=token, query_id="1").client() as client:
            return client.limiter

    assert limiter(TOKENS[0]) is limiter(TOKENS[0])
    assert limiter(TOKENS[0]) is not limiter(TOKENS[1])


def test_a_bad_token_fails_only_its_query_and_never_leaks(
    sim, instance, data_dir, dagster_home, query_env, monkeypatch, capsys, caplog
):
    wrong = "999999999999999999999999"
    monkeypatch.setenv(QUERIES[1].token_env, wrong)
    result = materialize(
        [build_raw_flex_statement(QUERIES)],
        instance,
        make_query_resources(sim, QUERIES, data_dir),
        raise_on_error=False,
    )
    assert not result.success
    failed = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failed] == ["raw_flex_statement.fetch_q2"]
    error = failed[0].step_failure_data.error
    assert error.cause.cls_name == FlexTokenInvalid.__name__
    assert "query q2 (id 900002)" in error.cause.message
    assert sim.count("SendRequest", query="900002", error_code=1015) == 1

    # the other queries' statements and manifests are stored and intact
    for day in (START, date(2024, 2, 10), END):
        manifest = rawstore.read_manifest(data_dir, day)
        assert sorted(m.query for m in manifest.statements) == ["q1", "q3"]
        for m in manifest.statements:
            assert rawstore.read_statement(data_dir, m.sha256)  # verifies the hash
    assert len(list((data_dir / "raw/flex/statements").rglob("*.xml"))) == 2

    captured = capsys.readouterr()
    for token in (*TOKENS, wrong):
        assert files_containing(dagster_home, token.encode()) == []
        assert files_containing(data_dir, token.encode()) == []
        assert token not in captured.out + captured.err
        assert token not in caplog.text
        for record in instance.get_event_records(
            dg.EventRecordsFilter(dg.DagsterEventType.STEP_FAILURE)
        ):
            assert token not in str(record.event_log_entry)
    for run in instance.get_runs():
        assert run.run_config == {}


def test_overlapping_queries_warn_and_the_first_name_supplies(
    sim, world, instance, work_dir, query_env
):
    extra = FlexQuery("q0", OVERLAP_QUERY_ID, QUERIES[0].token_env)  # shares q1's token
    manifests = []
    for order in ((*QUERIES, extra), (extra, *QUERIES)):
        folder = work_dir / order[0].name
        result = materialize(
            [build_raw_flex_statement(order)], instance, make_query_resources(sim, order, folder)
        )
        assert result.success
        logs = instance.all_logs(result.run_id)
        warnings = [r.user_message for r in logs if "several Flex queries" in r.user_message]
        manifest = rawstore.read_manifest(folder, date(2024, 2, 7))
        manifests.append(sorted((m.query, m.accounts) for m in manifest.statements))
        meta = result.asset_materializations_for_node("raw_flex_statement")[0].metadata
        assert len(meta["overlapping_accounts"].value) == 1
        assert len(warnings) == 1 and "q0, q2" in warnings[0]
    assert manifests[0] == manifests[1]
    by_query = dict(manifests[0])
    shared = by_query["q0"]
    assert len(shared) == 1 and shared[0] not in by_query["q2"]
    supplied = [a for _, accounts in manifests[0] for a in accounts]
    assert sorted(supplied) == sorted(a.account_id for a in world.accounts)


def test_discovery_closes_nothing_while_a_query_has_no_statement(monkeypatch):
    from ibpipeline.automation.sensors import missing_flex_queries

    entry = rawstore.Manifest(
        sha256="a" * 64,
        size=1,
        from_date=START,
        to_date=START,
        accounts=("U1",),
        fetched_at="2024-02-02T07:00:00+00:00",
        query="q1",
    )
    day = rawstore.DayManifest((entry,))
    monkeypatch.delenv("IBKR_FLEX_QUERIES", raising=False)
    assert missing_flex_queries(day) == []
    monkeypatch.setenv("IBKR_FLEX_QUERIES", "q1=1:T1,q2=2:T2")
    assert missing_flex_queries(day) == ["flex query q2"]


def test_an_unset_token_variable_stops_the_run_before_any_request(
    sim, instance, data_dir, query_env, monkeypatch
):
    monkeypatch.delenv(QUERIES[2].token_env)
    with pytest.raises(dg.DagsterInvalidConfigError) as failed:
        materialize(
            [build_raw_flex_statement(QUERIES)],
            instance,
            make_query_resources(sim, QUERIES, data_dir),
        )
    assert "resources:flex_q3:config:token" in str(failed.value)
    assert f'environment variable "{QUERIES[2].token_env}" which is not set' in str(failed.value)
    assert sim.requests == []
    assert not data_dir.exists()


@pytest.mark.slow
def test_multiprocess_run_fetches_queries_in_their_own_processes_and_reexecutes_one(
    sim, instance, data_dir, dagster_home, query_env, monkeypatch
):
    """As a launched run: the project's definitions from the environment, the multiprocess
    executor (one process per step), the fetch results passed through the IO manager. After one
    query failed, "re-execute from failure" fetches that query only. (The steps are forked from a
    server the first run started, with the environment of then: the fault is fixed on the
    simulator's side, as when the query is created on IBKR's side.)"""
    from tests.assets.queries_job import flex_daily_job

    monkeypatch.setenv(
        "IBKR_FLEX_QUERIES", ",".join(f"{q.name}={q.query_id}:{q.token_env}" for q in QUERIES)
    )
    monkeypatch.setenv("IBKR_FLEX_BASE_URL", sim.base_url)
    monkeypatch.setenv("IBPIPELINE_DATA_DIR", str(data_dir))
    served = sim.query_ids
    sim.query_ids = served - {QUERIES[1].query_id}  # q2 not (yet) a query of its token: 1014
    job = dg.reconstructable(flex_daily_job)
    selection = [dg.AssetKey("raw_flex_statement")]
    tags = range_tags(START.isoformat(), END.isoformat())
    with dg.execute_job(
        job, instance, tags=tags, asset_selection=selection, raise_on_error=False
    ) as first:
        assert not first.success
        pids = {
            e.step_key: e.pid
            for e in first.all_events
            if e.event_type == dg.DagsterEventType.STEP_START
        }
    assert len({pids[f"raw_flex_statement.fetch_q{i}"] for i in (1, 2, 3)}) == 3
    assert sim.count("SendRequest") == 3

    sim.query_ids = served
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    # the UI copies the parent's tags (the partition range) into the re-execution; so does this
    with dg.execute_job(job, instance, tags=tags, reexecution_options=options) as second:
        assert second.success
        steps = {
            e.step_key
            for e in second.all_events
            if e.event_type == dg.DagsterEventType.STEP_SUCCESS
        }
        assert steps == {"raw_flex_statement.fetch_q2", "raw_flex_statement.record_statements"}
        meta = second.asset_materializations_for_node("raw_flex_statement")[0].metadata
    assert [sim.count("SendRequest", query=q.query_id) for q in QUERIES] == [1, 2, 1]
    assert len(meta["accounts"].value) == 6  # q1 and q3 from the first run, q2 now
    assert meta["http_requests"].value == 6
    for token in TOKENS:  # event log, compute logs, IO manager files, raw store
        assert files_containing(dagster_home, token.encode()) == []
        assert files_containing(data_dir, token.encode()) == []
    for run in instance.get_runs():
        assert run.run_config == {}


def test_one_send_request_per_query_per_365_days(
    flex_statement, flex_token, instance, data_dir, query_env
):
    """Every query of the two-account fixture statement (so all accounts overlap): a 400-day
    range is two windows, i.e. two SendRequests per query."""
    with FlexSimulator(
        lambda *_: flex_statement,
        flex_token,
        (),
        rate_limits=(RateLimit(1000, 1.0),),
        query_tokens={q.query_id: t for q, t in zip(QUERIES, TOKENS, strict=True)},
    ) as fixture_sim:
        result = dg.materialize(
            [build_raw_flex_statement(QUERIES)],
            instance=instance,
            resources=make_query_resources(fixture_sim, QUERIES, data_dir),
            tags=range_tags("2024-01-01", "2025-02-03"),
        )
        assert result.success
        for query in QUERIES:
            sends = [
                (r.fd, r.td)
                for r in fixture_sim.requests
                if r.endpoint == "SendRequest" and r.query == query.query_id
            ]
            assert sends == [("20240101", "20241230"), ("20241231", "20250203")]
    manifest = rawstore.read_manifest(data_dir, date(2024, 6, 1))
    assert [(m.query, m.accounts) for m in manifest.statements] == [
        ("q1", ("U1234567", "U1234568"))
    ]
    meta = result.asset_materializations_for_node("raw_flex_statement")[0].metadata
    assert meta["overlapping_accounts"].value == ["U1234567", "U1234568"]
