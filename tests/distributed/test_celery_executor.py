"""``IBPIPELINE_EXECUTOR=celery``: the executor's configuration, without a broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from ibpipeline import settings
from ibpipeline.distributed import CELERY_APP_CONFIG

ROOT = Path(__file__).resolve().parents[2]

SECRET = "pw-9d1f37c2e8"


def test_celery_executor_reads_broker_and_backend_at_run_time(monkeypatch):
    from ibpipeline.definitions import build_defs

    broker = f"pyamqp://ibp:{SECRET}@127.0.0.1:5672/ibp"
    monkeypatch.setenv(settings.EXECUTOR_ENV, "celery")
    monkeypatch.setenv(settings.CELERY_BROKER_ENV, broker)
    monkeypatch.setenv(settings.CELERY_BACKEND_ENV, f"redis://:{SECRET}@127.0.0.1:6379/3")
    defs = build_defs()
    executor = defs.resolve_job_def("flex_daily_job").executor_def
    assert executor.name == "celery"
    config = executor.config_schema.resolve_config({}).value["config"]
    assert config["broker"] == broker
    assert config["backend"].startswith("redis://")
    assert config["config_source"] == CELERY_APP_CONFIG
    # the snapshot the webserver shows never holds the URLs
    assert SECRET not in serialize_value(RepositorySnap.from_def(defs.get_repository_def()))


def test_celery_defaults_without_variables(monkeypatch):
    from ibpipeline.distributed import celery_run_executor

    monkeypatch.delenv(settings.CELERY_BROKER_ENV, raising=False)
    monkeypatch.delenv(settings.CELERY_BACKEND_ENV, raising=False)
    config = celery_run_executor().config_schema.resolve_config({}).value["config"]
    assert config["broker"] == "pyamqp://guest@127.0.0.1:5672//"
    assert config["backend"] == "rpc://"
    assert settings.celery_broker_url() == config["broker"]


def test_worker_app_uses_the_same_settings(monkeypatch):
    code = (
        "import ibpipeline.celery_worker as w; c = w.app.conf; "
        "print(c.broker_url, c.result_backend, c.task_acks_late, c.worker_prefetch_multiplier, "
        "'execute_plan' in w.app.tasks)"
    )
    env = {**os.environ, settings.CELERY_BROKER_ENV: "pyamqp://guest@127.0.0.1:5999//"}
    env.pop(settings.CELERY_BACKEND_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["pyamqp://guest@127.0.0.1:5999//", "rpc://", "True", "1", "True"]


@pytest.mark.parametrize("value", ["multiprocess", "in_process", "celery"])
def test_executor_values(monkeypatch, value):
    monkeypatch.setenv(settings.EXECUTOR_ENV, value)
    assert settings.executor() == value


def _render_nine(_: int) -> int:
    from datetime import date, timedelta
    from decimal import Decimal

    from ibpipeline.reports.tearsheets import AccountSeries, render_many

    jobs = []
    for n in range(9):  # more than POOL_MIN_SHEETS
        series = AccountSeries(f"U{n:07d}", "USD")
        for i in range(5):
            series.dates.append(date(2024, 1, 1) + timedelta(days=i))
            series.nav.append(Decimal(100_000 + i))
            series.flows.append(Decimal(0))
            series.cumulative_twr.append(0.001 * i)
            series.drawdown.append(0.0)
        jobs.append((series, 0.01))
    return len(render_many(jobs))


def test_tearsheets_draw_in_a_celery_prefork_process():
    """A Celery prefork worker runs each task in a daemonic billiard process, which may not start
    the tearsheets' process pool: the sheets are drawn in that process instead."""
    # in a fresh interpreter: forking the test worker itself (threads, open pipes) is unsafe
    code = (
        "import billiard\n"
        "from tests.distributed.test_celery_executor import _render_nine\n"
        "with billiard.Pool(1) as pool:\n"
        "    print(pool.map(_render_nine, [0]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[9]"
