"""Steps of one run on two real Celery workers (separate processes, distinct node names) with a
Postgres instance: where each step ran, pools across workers, a killed worker."""

from __future__ import annotations

import dagster as dg
import pytest

from tests.distributed.conftest import Workers, run_job

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


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_pools_hold_across_celery_workers(celery_env, workers: Workers, monkeypatch):
    for name in ("worker1", "worker2"):
        workers.start(name, celery_env)
    workers.wait_ready()
    done = run_job(celery_env, ["-m", "tests.distributed.pool_job", "-j", "pool_job"], 120)()
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
    password = celery_env["IBPIPELINE_CELERY_BROKER"].split("@")[0].rsplit(":", 1)[1]
    for name in ("worker1", "worker2"):
        log = workers.log(name).decode(errors="replace")
        assert ":**@127.0.0.1" in log and password not in log  # Celery's banner masks it
    assert password not in done.stdout
