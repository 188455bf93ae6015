"""Steps of one run on two real Celery workers (separate processes, distinct node names) with a
Postgres instance: where each step ran, pools across workers, a killed worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ibpipeline import settings
from ibpipeline.automation.ranges import range_tags
from tests.distributed.conftest import Cluster
from tests.postgres_db import PG, fresh_database

QUERY_ID = "800969"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

INSTANCE_ENV = ("DAGSTER_HOME", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST")
INSTANCE_ENV += ("DAGSTER_PG_PORT", "DAGSTER_PG_DB")


def open_instance(env: dict[str, str], monkeypatch) -> dg.DagsterInstance:
    for key in INSTANCE_ENV:
        monkeypatch.setenv(key, env[key])
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, set[str]]:
    """Step key -> node names of the Celery workers that executed it (dagster-celery's
    "Executing steps ... in celery worker" engine event carries ``Celery worker``)."""
    ran: dict[str, set[str]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.event_type_value != "ENGINE_EVENT":
            continue
        meta = event.engine_event_data.metadata or {}
        if "Celery worker" in meta:
            ran.setdefault(event.step_key, set()).add(meta["Celery worker"].value)
    return ran


def step_spans(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """Step key -> (STEP_START, STEP_SUCCESS/FAILURE) timestamps."""
    starts: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            spans[event.step_key] = (starts[event.step_key], entry.timestamp)
    return spans


def wait_for_step(instance: dg.DagsterInstance, step_key: str) -> tuple[str, str]:
    """(run id, worker node name) once the only run's ``step_key`` is executing on a worker."""
    deadline = time.monotonic() + 60
    while not (runs := instance.get_runs()) or step_key not in (
        ran := step_workers(instance, runs[0].run_id)
    ):
        assert time.monotonic() < deadline, f"{step_key} never started"
        time.sleep(0.2)
    (worker,) = ran[step_key]
    return runs[0].run_id, worker


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_pools_hold_across_celery_workers(celery_env, cluster: Cluster, monkeypatch):
    # results through Redis here (task ids are unique, so db 0 can be shared); rpc:// elsewhere
    celery_env = {**celery_env, settings.CELERY_BACKEND_ENV: "redis://127.0.0.1:6379/0"}
    for name in ("worker1", "worker2"):
        cluster.start(name, celery_env)
    cluster.wait_ready()
    done = cluster.run_job(
        celery_env, ["-m", "tests.distributed.celery_jobs", "-a", "pool_job"], 120
    )()
    assert done.returncode == 0, done.stdout[-4000:]
    with open_instance(celery_env, monkeypatch) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        ran = step_workers(instance, run.run_id)
        spans = step_spans(instance, run.run_id)
    hostnames = {w for names in ran.values() for w in names}
    assert {h.split("@")[0] for h in hostnames} == {"worker1", "worker2"}, ran
    assert not overlap(spans["writer_a"], spans["writer_b"]), spans  # duckdb_writer: limit 1
    assert overlap(spans["free_a"], spans["free_b"]), spans  # no pool: both workers at once
    for name in ("worker1", "worker2"):
        log = cluster.log(name).decode(errors="replace")
        assert "results:     redis://127.0.0.1:6379/0" in log, log[:3000]
    assert_password_not_shown(celery_env, cluster, done.stdout)


def assert_password_not_shown(env: dict[str, str], cluster: Cluster, run_output: str) -> None:
    """The broker password is in no worker log and not in the run's output (Celery's banner
    prints ``amqp://user:**@host``)."""
    password = env[settings.CELERY_BROKER_ENV].split("@")[0].rsplit(":", 1)[1]
    for name in cluster.procs:
        log = cluster.log(name).decode(errors="replace")
        assert ":**@127.0.0.1" in log and password not in log
    assert password not in run_output


def test_a_worker_killed_mid_step_hands_the_step_to_the_other(
    celery_env, cluster: Cluster, monkeypatch
):
    for name in ("worker1", "worker2"):
        cluster.start(name, celery_env)
    cluster.wait_ready()
    wait = cluster.run_job(
        celery_env, ["-m", "tests.distributed.celery_jobs", "-a", "slow_job"], 120
    )
    with open_instance(celery_env, monkeypatch) as instance:
        run_id, first = wait_for_step(instance, "slow_step")
        time.sleep(1.0)  # inside the 10 s step
        cluster.kill(first.split("@")[0])
        killed = time.monotonic()
        done = wait()
        took = time.monotonic() - killed
        run = instance.get_run_by_id(run_id)
        ran = step_workers(instance, run_id)
    # late acks: the broker re-delivers the unacknowledged task to the surviving worker
    assert done.returncode == 0, done.stdout[-4000:]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert len(ran["slow_step"]) == 2 and first in ran["slow_step"], ran
    assert ran["after_slow"] == ran["slow_step"] - {first}, ran
    assert took < 60, took


def test_a_step_process_killed_under_a_live_worker_fails_the_run(
    celery_env, cluster: Cluster, monkeypatch
):
    for name in ("worker1", "worker2"):
        cluster.start(name, celery_env)
    cluster.wait_ready()
    wait = cluster.run_job(
        celery_env, ["-m", "tests.distributed.celery_jobs", "-a", "slow_job"], 120
    )
    with open_instance(celery_env, monkeypatch) as instance:
        run_id, first = wait_for_step(instance, "slow_step")
        time.sleep(1.0)
        main = cluster.procs[first.split("@")[0]]
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(main.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 1, children  # --concurrency 1: one pool process
        os.kill(int(children[0]), signal.SIGKILL)
        killed = time.monotonic()
        done = wait()
        took = time.monotonic() - killed
        run = instance.get_run_by_id(run_id)
        ran = step_workers(instance, run_id)
    assert done.returncode != 0
    assert "WorkerLostError" in done.stdout, done.stdout[-4000:]
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert ran["slow_step"] == {first} and "after_slow" not in ran, ran
    assert main.poll() is None  # the worker itself lives on
    assert took < 60, took


START, END = "2024-02-05", "2024-02-07"
SPLIT_QUERIES = (("q1", "800971", "TEST_FLEX_TOKEN_Q1"), ("q2", "800972", "TEST_FLEX_TOKEN_Q2"))
SPLIT_TOKENS = ("1" * 24, "2" * 24)


@contextlib.contextmanager
def flex_world(token: str) -> Iterator[tuple[object, list[str]]]:
    """The Flex simulator on loopback serving a 4-account world; yields (simulator, accounts).

    Query ``QUERY_ID`` (``token``) has every account; the ``SPLIT_QUERIES`` each have half of
    them (round robin), each with its own token."""
    from ibpipeline.flex.ratelimit import RateLimit
    from ibpipeline.sim.flex_server import FlexSimulator, sim_queries, world_statement_source
    from ibpipeline.world import World

    world = World(seed=9, n_accounts=4, inception=date(2024, 1, 2))
    ids = sorted(a.account_id for a in world.accounts)
    served = sim_queries(ids, SPLIT_QUERIES[0][1], SPLIT_TOKENS, count=len(SPLIT_QUERIES))
    sim = FlexSimulator(
        world_statement_source(
            world, accounts_by_query={QUERY_ID: ids, **{q.query_id: q.accounts for q in served}}
        ),
        token,
        {QUERY_ID},
        rate_limits=(RateLimit(1000, 1.0),),
        query_tokens={q.query_id: q.token for q in served},
    )
    with sim:
        yield sim, ids


def pipeline_env(env: dict[str, str], sim, data_dir: Path) -> dict[str, str]:
    """``env`` pointed at the simulator (the one query of every account) and ``data_dir`` (what
    ``ibpipeline.definitions`` reads)."""
    return {
        **env,
        settings.FLEX_QUERY_ID_ENV: QUERY_ID,
        settings.FLEX_BASE_URL_ENV: sim.base_url,
        settings.DATA_DIR_ENV: str(data_dir),
        settings.START_DATE_ENV: "2024-01-02",
    }


def split_lake_env(env: dict[str, str], catalog: str) -> dict[str, str]:
    """``env`` with the Flex work split over ``SPLIT_QUERIES`` and the warehouse on a DuckLake
    whose catalog is the Postgres database ``catalog``."""
    out = {k: v for k, v in env.items() if k != settings.FLEX_QUERY_ID_ENV}
    out["IBKR_FLEX_QUERIES"] = ",".join(f"{n}={q}:{var}" for n, q, var in SPLIT_QUERIES)
    for (_, _, var), token in zip(SPLIT_QUERIES, SPLIT_TOKENS, strict=True):
        out[var] = token
    out[settings.WAREHOUSE_ENV] = "ducklake"
    out[settings.DUCKLAKE_CATALOG_ENV] = f"dbname={catalog} host={PG['host']} port={PG['port']}"
    out[settings.DUCKLAKE_CATALOG_ENV] += f" user={PG['user']}"
    return out


def main_job_args() -> list[str]:
    tags = json.dumps(range_tags(START, END))
    return ["-m", "ibpipeline.definitions", "-j", "flex_daily_job", "--tags", tags]


LINEAGE = "statement_sha256"
"""Differs between two fetches of the same days (the statement carries its generation time)."""


def table_rows(data_dir: Path, lake_catalog: str | None = None) -> dict[str, list[tuple]]:
    """Every normalized Parquet table and every warehouse table/view (the DuckDB file, or the
    DuckLake of ``lake_catalog``), rows sorted, without ``LINEAGE``."""
    from ibpipeline.assets import NORMALIZED_TABLES
    from ibpipeline.storage import parquet, warehouse

    out = {}
    for name in NORMALIZED_TABLES:
        table = parquet.read_table(name, data_dir=data_dir)
        rows = [tuple(v for k, v in r.items() if k != LINEAGE) for r in table.to_pylist()]
        out[f"parquet.{name}"] = sorted(rows, key=repr)
    if lake_catalog is None:
        con = duckdb.connect(str(data_dir / "ibpipeline.duckdb"), read_only=True)
    else:
        config = warehouse.LakeConfig(lake_catalog, data_dir / "lake")
        con = warehouse.connect_lake(config, read_only=True)
    with con:
        (catalog,) = con.execute("SELECT current_database()").fetchone()
        columns: dict[tuple[str, str], list[str]] = {}
        for schema, table_name, column in con.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_schema NOT IN ('information_schema', 'pg_catalog') "
            "ORDER BY table_schema, table_name, ordinal_position",
            [catalog],
        ).fetchall():
            if column != LINEAGE:
                columns.setdefault((schema, table_name), []).append(f'"{column}"')
        for (schema, table_name), cols in columns.items():
            rows = con.execute(f'SELECT {", ".join(cols)} FROM "{schema}"."{table_name}"')
            out[f"warehouse.{schema}.{table_name}"] = sorted(rows.fetchall(), key=repr)
    return out


def test_split_queries_on_two_workers_and_a_ducklake_equal_one_process(
    celery_env, cluster: Cluster, tmp_path, flex_token, monkeypatch
):
    """Two Celery workers run a range with the Flex work split over two queries (two tokens, two
    pools) and the marts on a DuckLake; a single-process run with one query and the embedded
    DuckDB file gives the same tables row for row."""
    with fresh_database("ibp_celery_lake") as catalog, flex_world(flex_token) as (sim, accounts):
        env = split_lake_env(pipeline_env(celery_env, sim, tmp_path / "data_celery"), catalog)
        for name in ("worker1", "worker2"):
            cluster.start(name, env, "--include", "ibpipeline.forkserver_preload")
        reference_env = pipeline_env(celery_env, sim, tmp_path / "data_in_process")
        reference_env[settings.EXECUTOR_ENV] = "in_process"
        reference_env["DAGSTER_HOME"] = str(tmp_path / "home_in_process")  # SQLite
        (tmp_path / "home_in_process").mkdir()
        # the reference run goes on meanwhile (own instance, own data folder)
        wait_reference = cluster.run_job(reference_env, main_job_args(), 300)
        cluster.wait_ready()
        started = time.monotonic()
        done = cluster.run_job(env, main_job_args(), 300)()
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stdout[-4000:]
        reference = wait_reference()
        assert reference.returncode == 0, reference.stdout[-4000:]
        # one SendRequest per query for the whole range
        assert [sim.count("SendRequest", query=q) for _, q, _ in SPLIT_QUERIES] == [1, 1]
        got = table_rows(tmp_path / "data_celery", env[settings.DUCKLAKE_CATALOG_ENV])
    with open_instance(celery_env, monkeypatch) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        ran = step_workers(instance, run.run_id)
        spans = step_spans(instance, run.run_id)
        assert sorted(instance.get_dynamic_partitions("account")) == accounts
    durations = {key: round(end - start, 1) for key, (start, end) in spans.items()}
    print(f"celery run: {elapsed:.1f} s, steps: {durations}, by worker: {ran}")  # noqa: T201
    assert_password_not_shown(celery_env, cluster, done.stdout)
    assert {w.split("@")[0] for names in ran.values() for w in names} == {"worker1", "worker2"}
    assert all(len(names) == 1 for names in ran.values()), ran  # no step ran twice
    # one fetch and one normalize step per query, each in its own pool
    for name, _, _ in SPLIT_QUERIES:
        assert f"raw_flex_statement.fetch_{name}" in ran, sorted(ran)
    assert sum(key.startswith("normalized_flex.normalize_") for key in ran) == 2, sorted(ran)
    expected = table_rows(tmp_path / "data_in_process")
    assert got.keys() == expected.keys()
    for name in ("parquet.nav_daily", "parquet.trades", "warehouse.main.daily_nav"):
        assert expected[name], name
    for name in expected:
        assert got[name] == expected[name], name
