"""Small jobs on the celery executor (the workers import them as ``tests.distributed.celery_jobs``).

``pool_job``: two ``duckdb_writer`` steps and two steps without a pool, ~2 s each, independent.
``slow_job``: a 10 s step, then a short one (a worker is killed during the first).
"""

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


@dg.op(out=dg.Out(dg.Nothing))
def slow_step() -> None:
    time.sleep(10.0)


@dg.op(ins={"start": dg.In(dg.Nothing)})
def after_slow() -> None:
    pass


@dg.job(executor_def=celery_run_executor())
def slow_job() -> None:
    after_slow(slow_step())
