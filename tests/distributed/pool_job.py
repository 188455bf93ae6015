"""A job for the Celery pool test: two ``duckdb_writer`` steps and two steps without a pool, each
~2 s long, all independent (imported by the workers as ``tests.distributed.pool_job``)."""

import time

import dagster as dg

from ibpipeline.distributed import celery_run_executor

STEP_SECONDS = 2.0


def _step(name: str, pool: str | None) -> dg.OpDefinition:
    @dg.op(name=name, pool=pool, out=dg.Out(dg.Nothing))
    def _op() -> None:
        time.sleep(STEP_SECONDS)

    return _op


WRITERS = [_step("writer_a", "duckdb_writer"), _step("writer_b", "duckdb_writer")]
FREE = [_step("free_a", None), _step("free_b", None)]


@dg.job(executor_def=celery_run_executor())
def pool_job() -> None:
    for op in WRITERS + FREE:
        op()
