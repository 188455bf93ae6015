"""The one ``dg.Definitions`` of ibpipeline (``dagster dev`` loads it through workspace.yaml).

Adding a layer is one line in the matching list below (assets, checks, jobs, schedules, sensors).
The main job is ``flex_daily_job`` (``ibpipeline.automation.jobs``): raw -> normalized -> views
-> marts for one report date or a range, in one run.
"""

from __future__ import annotations

import dagster as dg

from ibpipeline import settings
from ibpipeline.assets import flex_assets
from ibpipeline.assets.checks import mart_checks, positions_checks
from ibpipeline.assets.gateway import gateway_assets, gateway_checks
from ibpipeline.assets.marts import dbt_mart_assets, marts_job
from ibpipeline.assets.postgres import PostgresWarehouseResource, postgres_marts
from ibpipeline.assets.tearsheets import tearsheets
from ibpipeline.automation.gateway_schedule import gateway_snapshot_job, gateway_snapshot_schedule
from ibpipeline.automation.jobs import flex_daily_job, inbox_import_job
from ibpipeline.automation.schedules import flex_daily_schedule_from_env
from ibpipeline.automation.sensors import (
    account_discovery_sensor,
    inbox_sensor,
    marts_after_inbox,
)
from ibpipeline.dbt import dbt_resource
from ibpipeline.resources import DataDirResource, FlexResource, GatewayResource


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment; the token stays an ``EnvVar`` resolved at run time."""
    resources: dict[str, dg.ConfigurableResource] = {
        "flex": FlexResource(
            token=settings.flex_token(),
            query_id=settings.flex_query_id(),
            base_url=settings.flex_base_url(),
        ),
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


ASSETS = [
    *flex_assets,
    *gateway_assets,
    *dbt_mart_assets,
    tearsheets,
    *([postgres_marts] if settings.postgres_dsn_configured() else []),
]
ASSET_CHECKS: list[dg.AssetChecksDefinition] = [*gateway_checks, *mart_checks, *positions_checks]
JOBS = [flex_daily_job, inbox_import_job, gateway_snapshot_job, marts_job]
SCHEDULES: list[dg.ScheduleDefinition] = [flex_daily_schedule_from_env(), gateway_snapshot_schedule]
SENSORS: list[dg.SensorDefinition] = [account_discovery_sensor, inbox_sensor, marts_after_inbox]

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=ASSET_CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=default_resources(),
)
