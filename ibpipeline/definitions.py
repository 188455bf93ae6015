"""The one ``dg.Definitions`` of ibpipeline (``dagster dev`` loads it through workspace.yaml).

Adding a layer is one line in the matching list below (assets, checks, jobs, schedules, sensors).
The raw asset (daily) and the normalized assets (account x daily) have different partitions
definitions, so Dagster cannot put them in one job: ``flex_raw_job`` fetches statements for a
date range; ``flex_normalize_job`` rebuilds the normalized partitions of an account x date range
and refreshes the DuckDB views.
"""

from __future__ import annotations

import dagster as dg

from ibpipeline import settings
from ibpipeline.assets import flex_assets, normalized_flex, raw_flex_statement, warehouse_views
from ibpipeline.partitions import account_daily, daily
from ibpipeline.resources import DataDirResource, FlexResource


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment; the token stays an ``EnvVar`` resolved at run time."""
    return {
        "flex": FlexResource(
            token=settings.flex_token(),
            query_id=settings.flex_query_id(),
            base_url=settings.flex_base_url(),
        ),
        "data_dir": DataDirResource(path=str(settings.data_dir())),
    }


flex_raw_job = dg.define_asset_job(
    "flex_raw_job",
    selection=dg.AssetSelection.assets(raw_flex_statement),
    partitions_def=daily,
    description="Fetch the Flex statements of a date range (one request per <= 365 days).",
)
flex_normalize_job = dg.define_asset_job(
    "flex_normalize_job",
    selection=dg.AssetSelection.assets(normalized_flex, warehouse_views),
    partitions_def=account_daily,
    description="Parse stored statements into the normalized tables, then refresh DuckDB views.",
)

ASSETS = [*flex_assets]
ASSET_CHECKS: list[dg.AssetChecksDefinition] = []
JOBS = [flex_raw_job, flex_normalize_job]
SCHEDULES: list[dg.ScheduleDefinition] = []
SENSORS: list[dg.SensorDefinition] = []

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=ASSET_CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=default_resources(),
)
