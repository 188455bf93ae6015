# ruff: noqa: F811  (the fixtures imported from test_raw_queries)
"""Several Flex queries: normalization as one step per query (``normalize_<query>``, only that
query's statements) and one ``write_tables`` step, against the simulator of
``test_raw_queries`` (disjoint accounts per query), compared with one query over every account."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from asset_helpers import make_query_resources, make_resources, tree_digest
from test_raw_queries import (  # noqa: F401  (fixtures)
    ALL_QUERY_ID,
    END,
    QUERIES,
    START,
    materialize,
    query_env,
    rows,
    sim,
    world,
)

from ibpipeline.assets import normalized_flex
from ibpipeline.assets.normalized import (
    NORMALIZED_TABLES,
    STAGING_DIR,
    STAGING_RETENTION,
    build_normalized_flex,
    prune_staging,
    statement_steps,
)
from ibpipeline.assets.raw import build_raw_flex_statement, raw_flex_statement
from ibpipeline.automation.ranges import range_tags
from ibpipeline.storage import parquet, rawstore

NORMALIZE_STEPS = {f"normalized_flex.normalize_q{i}" for i in (1, 2, 3)}
NORMALIZED_KEYS = [dg.AssetKey(name) for name in NORMALIZED_TABLES]


def steps_with(result, event_type: dg.DagsterEventType) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type == event_type}


def day_files(data_dir, table: str) -> list[str]:
    base = parquet.normalized_root(data_dir) / table
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


@pytest.fixture
def runs(sim, instance, work_dir, query_env):
    """The range fetched and normalized with one query over every account (``single``) and with
    the three queries, normalized per query (``split``); returns (single dir, split dir, split
    result, the split assets)."""
    single_dir, split_dir = work_dir / "single", work_dir / "split"
    single = materialize(
        [raw_flex_statement, normalized_flex],
        instance,
        make_resources(sim, ALL_QUERY_ID, single_dir),
    )
    assert single.success
    assets = [build_raw_flex_statement(QUERIES), build_normalized_flex(QUERIES)]
    split = materialize(assets, instance, make_query_resources(sim, QUERIES, split_dir))
    assert split.success
    return single_dir, split_dir, split, assets


def test_single_query_keeps_the_single_step_asset():
    assert build_normalized_flex(QUERIES[:1]) is normalized_flex
    split = build_normalized_flex(QUERIES)
    assert split.keys == normalized_flex.keys
    assert split.check_keys == normalized_flex.check_keys
    assert split.partitions_def == normalized_flex.partitions_def
    assert split.backfill_policy == normalized_flex.backfill_policy
    assert split.dependency_keys == {raw_flex_statement.key}
    assert {n.name for n in split.node_def.nodes} == {
        "normalize_q1",
        "normalize_q2",
        "normalize_q3",
        "write_tables",
    }


def test_one_normalize_step_per_query_gives_the_single_query_tables(runs, world):
    single_dir, split_dir, split, _ = runs
    succeeded = steps_with(split, dg.DagsterEventType.STEP_SUCCESS)
    assert NORMALIZE_STEPS | {"normalized_flex.write_tables"} <= succeeded

    # each step parsed only its own query's statements, and every statement was parsed once
    manifests = {d: rawstore.read_manifest(split_dir, d) for d in (START, date(2024, 2, 14), END)}
    parsed = {}
    for i in (1, 2, 3):
        part = split.output_for_node(f"normalized_flex.normalize_q{i}")
        assert part.query == f"q{i}"
        parsed[f"q{i}"] = set(part.statements)
        for manifest in manifests.values():
            mine = {m.sha256 for m in manifest.statements if m.query == f"q{i}"}
            assert mine <= parsed[f"q{i}"]
    assert sum(len(s) for s in parsed.values()) == len(set().union(*parsed.values()))
    assert set(statement_steps(manifests, ["q1", "q2", "q3"]).values()) == {"q1", "q2", "q3"}

    # same normalized tables, row for row, in the same layout (one file per table and day)
    compared = 0
    for name in NORMALIZED_TABLES:
        expected = rows(name, single_dir)
        assert rows(name, split_dir) == expected, name
        assert day_files(split_dir, name) == day_files(single_dir, name), name
        compared += len(expected)
    assert compared > 500
    assert not any((split_dir / STAGING_DIR).rglob("*.arrow"))  # staged rows removed

    # each partition's own metadata, as the single step gives it
    materialized = split.asset_materializations_for_node("normalized_flex")
    by_day = {
        (m.asset_key.path[-1], m.partition): m.metadata
        for m in materialized
        if m.asset_key.path[-1] == "nav_daily"
    }
    assert len(by_day) == (END - START).days + 1
    meta = by_day[("nav_daily", "2024-02-14")]
    expected = parquet.read_day("nav_daily", date(2024, 2, 14), data_dir=single_dir)
    assert meta["dagster/row_count"].value == expected.num_rows > 0
    assert len(meta["accounts"].value) == 6
    checks = [
        e for e in split.all_events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert len(checks) == len(NORMALIZED_TABLES)


def test_rerunning_the_partitions_replaces_them_without_duplicates(runs, instance, sim):
    single_dir, split_dir, _, assets = runs
    before = tree_digest(parquet.normalized_root(split_dir))
    again = materialize(
        assets,
        instance,
        make_query_resources(sim, QUERIES, split_dir),
        selection=NORMALIZED_KEYS,
    )
    assert again.success
    assert steps_with(again, dg.DagsterEventType.STEP_SUCCESS) >= NORMALIZE_STEPS
    assert tree_digest(parquet.normalized_root(split_dir)) == before
    for name in NORMALIZED_TABLES:
        assert rows(name, split_dir) == rows(name, single_dir), name

    # a subset of the tables: each step stages only those, the others' files stay as they are
    for path in (parquet.normalized_root(split_dir) / "nav_daily").rglob("*.parquet"):
        path.unlink()
    subset = materialize(
        assets,
        instance,
        make_query_resources(sim, QUERIES, split_dir),
        selection=[dg.AssetKey("nav_daily"), dg.AssetKey("trades")],
    )
    assert subset.success
    done = {m.asset_key.path[-1] for m in subset.asset_materializations_for_node("normalized_flex")}
    assert done == {"nav_daily", "trades"}
    assert tree_digest(parquet.normalized_root(split_dir)) == before


def test_a_failing_query_normalize_step_takes_no_rows_away(runs, instance, sim):
    single_dir, split_dir, _, assets = runs
    before = tree_digest(parquet.normalized_root(split_dir))
    manifest = rawstore.read_manifest(split_dir, date(2024, 2, 14))
    (q2,) = [m.sha256 for m in manifest.statements if m.query == "q2"]
    path = rawstore.statement_path(split_dir, q2)
    content = path.read_bytes()
    path.write_bytes(content.replace(b"<FlexStatement ", b"<FlexStatement broken ", 1))

    failed = materialize(
        assets,
        instance,
        make_query_resources(sim, QUERIES, split_dir),
        selection=NORMALIZED_KEYS,
        raise_on_error=False,
    )
    assert not failed.success
    assert steps_with(failed, dg.DagsterEventType.STEP_FAILURE) == {"normalized_flex.normalize_q2"}
    assert steps_with(failed, dg.DagsterEventType.STEP_SUCCESS) == NORMALIZE_STEPS - {
        "normalized_flex.normalize_q2"
    }
    assert "normalized_flex.write_tables" not in steps_with(failed, dg.DagsterEventType.STEP_START)
    # every file as before: q1's and q3's rows (and q2's previous ones) all still there
    assert tree_digest(parquet.normalized_root(split_dir)) == before
    assert not failed.asset_materializations_for_node("normalized_flex")

    path.write_bytes(content)  # repaired: the next run writes every query's rows again
    fixed = materialize(
        assets,
        instance,
        make_query_resources(sim, QUERIES, split_dir),
        selection=NORMALIZED_KEYS,
    )
    assert fixed.success
    for name in NORMALIZED_TABLES:
        assert rows(name, split_dir) == rows(name, single_dir), name

    # the failed run's staged rows (q1, q3) stay for a re-execution from failure, a week
    staged = split_dir / STAGING_DIR
    assert sorted(p.name for p in (staged / failed.run_id).iterdir()) == ["q1", "q3"]
    assert not (staged / fixed.run_id).exists()  # written, then removed
    ended = lambda run_id: instance.get_run_by_id(run_id).is_finished  # noqa: E731
    assert prune_staging(split_dir, ended) == []
    later = datetime.now(UTC) + STAGING_RETENTION + timedelta(minutes=1)
    assert prune_staging(split_dir, ended, now=later) == [failed.run_id]
    assert list(staged.iterdir()) == []


def test_staged_rows_of_a_run_still_going_are_kept(tmp_path):
    for run_id in ("ended", "going"):
        (tmp_path / STAGING_DIR / run_id / "q1" / "trades").mkdir(parents=True)
        (tmp_path / STAGING_DIR / run_id / "q1" / "trades" / "2024-02-14.arrow").write_bytes(b"x")
    later = datetime.now(UTC) + STAGING_RETENTION + timedelta(minutes=1)
    assert prune_staging(tmp_path, lambda run_id: run_id == "ended", now=later) == ["ended"]
    assert [p.name for p in (tmp_path / STAGING_DIR).iterdir()] == ["going"]
    assert prune_staging(tmp_path / "nothing", lambda run_id: True) == []


def test_multiprocess_run_normalizes_queries_in_their_own_processes(
    sim, instance, data_dir, query_env, monkeypatch
):
    """As a launched run of the project's ``flex_daily_job`` (multiprocess executor, one process
    per step, the staged rows' descriptions passed through the IO manager). After one query's
    step failed, "re-execute from failure" normalizes that query only and writes the files from
    the other steps' staged rows of the failed run."""
    from tests.assets.queries_job import flex_daily_job

    monkeypatch.setenv(
        "IBKR_FLEX_QUERIES", ",".join(f"{q.name}={q.query_id}:{q.token_env}" for q in QUERIES)
    )
    monkeypatch.setenv("IBKR_FLEX_BASE_URL", sim.base_url)
    monkeypatch.setenv("IBPIPELINE_DATA_DIR", str(data_dir))
    job = dg.reconstructable(flex_daily_job)
    selection = [dg.AssetKey("raw_flex_statement"), *NORMALIZED_KEYS]
    tags = range_tags(START.isoformat(), END.isoformat())
    with dg.execute_job(job, instance, tags=tags, asset_selection=selection) as result:
        assert result.success
        pids = {
            e.step_key: e.pid
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_START
        }
    assert NORMALIZE_STEPS | {"normalized_flex.write_tables"} <= set(pids)
    assert len({pids[step] for step in NORMALIZE_STEPS}) == 3
    before = tree_digest(parquet.normalized_root(data_dir))

    manifest = rawstore.read_manifest(data_dir, date(2024, 2, 14))
    (q2,) = [m.sha256 for m in manifest.statements if m.query == "q2"]
    path = rawstore.statement_path(data_dir, q2)
    content = path.read_bytes()
    path.write_bytes(content.replace(b"<FlexStatement ", b"<FlexStatement broken ", 1))
    with dg.execute_job(
        job, instance, tags=tags, asset_selection=NORMALIZED_KEYS, raise_on_error=False
    ) as failed:
        assert not failed.success
        assert steps_with(failed, dg.DagsterEventType.STEP_FAILURE) == {
            "normalized_flex.normalize_q2"
        }
    assert tree_digest(parquet.normalized_root(data_dir)) == before
    path.write_bytes(content)
    options = dg.ReexecutionOptions.from_failure(failed.run_id, instance)
    with dg.execute_job(job, instance, tags=tags, reexecution_options=options) as second:
        assert second.success
        steps = steps_with(second, dg.DagsterEventType.STEP_SUCCESS)
        assert {s for s in steps if s.startswith("normalized_flex.")} == {
            "normalized_flex.normalize_q2",
            "normalized_flex.write_tables",
        }
    assert tree_digest(parquet.normalized_root(data_dir)) == before
    assert not any((data_dir / STAGING_DIR).rglob("*.arrow"))

    nav = parquet.read_table("nav_daily", data_dir=data_dir)
    keys = list(zip(nav["account_id"].to_pylist(), nav["date"].to_pylist(), strict=True))
    assert len(set(keys)) == len(keys) > 0
    assert len({account for account, _ in keys}) == 6


def test_writing_refuses_when_staged_rows_are_gone(tmp_path):
    """A retry of ``write_tables`` alone after its staged rows were deleted writes nothing."""
    from ibpipeline.assets.normalized import QueryRows, StagedRowsMissingError, write_query_rows

    day = date(2024, 2, 14)
    part = QueryRows("q1", str(tmp_path / "stage"), ("0" * 64,), {"nav_daily": {day: 3}}, {}, ())
    with pytest.raises(StagedRowsMissingError, match="query q1"):
        write_query_rows(tmp_path, [day], ["nav_daily"], [part])
    assert not parquet.normalized_root(tmp_path).exists()
