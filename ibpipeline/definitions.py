"""The one ``dg.Definitions`` of ibpipeline (``dagster dev`` loads it through workspace.yaml).

Adding a layer is one line in the matching list below (assets, checks, jobs, schedules, sensors).
The main job is ``flex_daily_job`` (``ibpipeline.automation.jobs``): raw -> normalized -> views
-> marts for one report date or a range, in one run.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from ibpipeline import settings
from ibpipeline.assets import flex_assets
from ibpipeline.assets.checks import mart_checks, positions_checks
from ibpipeline.assets.gateway import gateway_assets, gateway_checks
from ibpipeline.assets.marts import dbt_mart_assets, marts_job
from ibpipeline.assets.normalized import build_normalized_flex, normalized_flex
from ibpipeline.assets.postgres import PostgresWarehouseResource, postgres_marts
from ibpipeline.assets.raw import build_raw_flex_statement, raw_flex_statement
from ibpipeline.assets.tearsheets import tearsheets
from ibpipeline.assets.warehouse import gateway_warehouse_views
from ibpipeline.automation.backfill import cli_console_logger
from ibpipeline.automation.gateway_schedule import gateway_snapshot_job, gateway_snapshot_schedule
from ibpipeline.automation.jobs import flex_daily_job, inbox_import_job
from ibpipeline.automation.schedules import flex_daily_schedule_from_env
from ibpipeline.automation.sensors import (
    account_discovery_sensor,
    inbox_sensor,
    marts_after_inbox,
)
from ibpipeline.dbt import dbt_resource
from ibpipeline.flex.queries import FlexQuery
from ibpipeline.instance_storage import enable_event_batches
from ibpipeline.partitions import daily
from ibpipeline.resources import DataDirResource, FlexResource, GatewayResource


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment; the token stays an ``EnvVar`` resolved at run time."""
    resources: dict[str, dg.ConfigurableResource] = {
        **flex_resources(settings.flex_queries()),
        "data_dir": DataDirResource(path=str(settings.data_dir())),
        "dbt": dbt_resource(),
        "gateway": GatewayResource(
            gateways=settings.gateways(), client_id=settings.gateway_client_id()
        ),
    }
    if settings.postgres_dsn_configured():
        resources["postgres_warehouse"] = PostgresWarehouseResource(
            dsn=settings.postgres_dsn(), schema_name=settings.postgres_schema()
        )
    return resources


def flex_resources(queries: Sequence[FlexQuery]) -> dict[str, FlexResource]:
    """One ``FlexResource`` per Flex query under its resource key, each token an ``EnvVar``."""
    several = len(queries) > 1
    return {
        q.resource_key: FlexResource(
            token=dg.EnvVar(q.token_env),
            query_id=q.query_id,
            query_name=q.name if several else None,
            base_url=settings.flex_base_url(),
        )
        for q in queries
    }


def daily_single_run(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """``assets_def`` partitioned by ``daily`` with a single-run backfill policy (unchanged when
    already partitioned).

    A UI backfill of a range ("Materialize all" or the job page) is one run only when every
    asset of ``flex_daily_job`` shares the ``daily`` definition and the single-run policy: the
    backfill daemon never runs an unpartitioned asset, or one with another policy, in the same run
    as its partitioned parents (``can_run_with_parent``, dagster/_core/execution/asset_backfill.py),
    so an unpartitioned ``warehouse_views`` cost a run of its own. Its body ignores the partitions
    (it refreshes every view), so marking it daily changes no behaviour.
    """
    if assets_def.partitions_def is not None:
        return assets_def
    return assets_def.map_asset_specs(
        lambda spec: spec.replace_attributes(partitions_def=daily)
    ).with_attributes(backfill_policy=dg.BackfillPolicy.single_run())


ASSET_CHECKS: list[dg.AssetChecksDefinition] = [*gateway_checks, *mart_checks, *positions_checks]
JOBS = [flex_daily_job, inbox_import_job, gateway_snapshot_job, marts_job]
SENSORS: list[dg.SensorDefinition] = [account_discovery_sensor, inbox_sensor, marts_after_inbox]


def run_executor() -> dg.ExecutorDefinition:
    """The executor of launched runs (``$IBPIPELINE_EXECUTOR``; ``execute_in_process`` ignores it).

    multiprocess starts steps with ``forkserver``: the server imports the project and resolves its
    repository once (``ibpipeline.forkserver_preload``) and forks each step from it. The default
    ``spawn`` re-imports Dagster, dbt's manifest and the project in every step (several seconds
    each, for steps that are mostly seconds long themselves).

    celery submits each step to the Celery workers of ``$IBPIPELINE_CELERY_BROKER``
    (``ibpipeline.distributed``); it needs a Postgres instance and a data folder every worker mounts.
    """
    kind = settings.executor()
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "celery":
        from ibpipeline.distributed import celery_run_executor

        return celery_run_executor()
    preload = {"preload_modules": ["ibpipeline.forkserver_preload"]}
    return dg.multiprocess_executor.configured({"start_method": {"forkserver": preload}})


def build_defs() -> dg.Definitions:
    """The Definitions for the environment as it is now (data folder, Flex queries, gateways,
    Postgres). ``defs`` below is built once at import; the CLI builds its own after it has set
    ``$IBPIPELINE_DATA_DIR`` from ``--data-dir``, so an earlier import never decides the folder."""
    queries = settings.flex_queries()
    built = {
        id(raw_flex_statement): build_raw_flex_statement(queries),
        id(normalized_flex): build_normalized_flex(queries),
    }
    assets = [
        *(daily_single_run(built.get(id(a), a)) for a in flex_assets),
        *gateway_assets,
        gateway_warehouse_views,
        *dbt_mart_assets,
        tearsheets,
        *([postgres_marts] if settings.postgres_dsn_configured() else []),
    ]
    schedules: list[dg.ScheduleDefinition] = [
        flex_daily_schedule_from_env(),
        gateway_snapshot_schedule,
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=ASSET_CHECKS,
        jobs=JOBS,
        schedules=schedules,
        sensors=SENSORS,
        resources=default_resources(),
        executor=run_executor(),
        # used only when a run configures "console" (the CLI's QUIET_CONSOLE); otherwise Dagster's
        # default console logs as usual
        loggers={"console": cli_console_logger},
    )


# the step processes of every run import this module: their materializations of a range are
# stored as one batch per output (one transaction with the project's SQLite event log)
enable_event_batches()
defs = build_defs()
