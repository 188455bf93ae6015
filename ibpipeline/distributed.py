"""Steps of launched runs as Celery tasks (``$IBPIPELINE_EXECUTOR=celery``, dagster-celery).

The run worker (the orchestrator) claims pool slots in the Dagster instance before it submits a
step, exactly as the multiprocess executor does, so ``flex_api`` and ``duckdb_writer`` hold across
every worker and run as long as all share one persistent (Postgres) instance. The workers
(``ibpipeline.celery_worker``) import ``ibpipeline.definitions`` and open the instance from the
run's instance ref: they need the same ``DAGSTER_HOME`` configuration, the same environment and
the same data folder (a shared mount).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from ibpipeline import settings

CELERY_APP_CONFIG: dict[str, Any] = {
    # Ack a task when its step has ended, not when a worker takes it: a worker that dies mid-step
    # (SIGKILL, lost host) leaves the task on the broker, which hands it to another worker. With
    # Celery's default early ack the task is lost and the run waits for it forever. A step whose
    # process alone dies (the worker survives) fails the run with WorkerLostError.
    "task_acks_late": True,
    # One task at a time per worker process: a long dbt step never holds a second step back.
    "worker_prefetch_multiplier": 1,
    # Each step in a new pool process, forked from the worker (which imported the project:
    # `-I ibpipeline.forkserver_preload`): a step's memory goes back to the OS when it ends, so a
    # worker's footprint is its largest step's, not the heap left fragmented by all steps before.
    "worker_max_tasks_per_child": 1,
    "broker_connection_retry_on_startup": True,
}
"""Celery settings shared by the executor (the submitting side) and the workers."""

WORKER_APP = "ibpipeline.celery_worker"
"""``celery -A`` / ``dagster-celery worker start -A`` target of the workers."""


def celery_run_executor() -> dg.ExecutorDefinition:
    """``dagster_celery.celery_executor`` with broker and backend from the environment (as
    ``{"env": ...}`` config, resolved at run time, so their passwords stay out of snapshots)."""
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {
            "broker": settings.celery_url_config(
                settings.CELERY_BROKER_ENV, settings.DEFAULT_CELERY_BROKER
            ),
            "backend": settings.celery_url_config(
                settings.CELERY_BACKEND_ENV, settings.DEFAULT_CELERY_BACKEND
            ),
            "config_source": dict(CELERY_APP_CONFIG),
        },
        name="celery",
    )
