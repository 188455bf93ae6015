"""Jobs the schedules and sensors launch.

The raw asset (daily) and the normalized assets (account x daily) have different partitions
definitions, so they live in two jobs: ``flex_raw_job`` fetches statements for a date range (one
Flex request per <= 365 days); ``flex_normalize_job`` rebuilds the normalized partitions of an
account x date range (each statement parsed once per run) and refreshes the DuckDB views.
``inbox_import_job`` ingests one hand-downloaded file from the inbox folder.
"""

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg

from ibpipeline import inbox
from ibpipeline.assets import (
    NORMALIZED_TABLES,
    normalized_flex,
    raw_flex_statement,
    warehouse_views,
)
from ibpipeline.partitions import account_daily, account_date_key, daily, register_accounts
from ibpipeline.resources import DataDirResource

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


class InboxFileConfig(dg.Config):
    """Which inbox file to ingest (absolute path inside the inbox folder)."""

    path: str


def _in_daily_range(day: date) -> bool:
    """Whether ``day`` is a key of the shared daily partitions (not before its start date)."""
    return day >= daily.start.date()


def inbox_events(result: inbox.ImportResult) -> Iterator[dg.AssetMaterialization]:
    """Materializations of the raw days and normalized partitions an ingested file replaced."""
    for day in result.days_claimed:
        if _in_daily_range(day):
            yield dg.AssetMaterialization(
                asset_key=raw_flex_statement.key,
                partition=day.isoformat(),
                metadata={"source": "inbox", "sha256": result.sha256, "file": result.name},
            )
    for name in NORMALIZED_TABLES:
        for account_id, day in result.partitions:
            if _in_daily_range(day):
                yield dg.AssetMaterialization(
                    asset_key=name,
                    partition=str(account_date_key(account_id, day.isoformat())),
                    metadata={"source": "inbox", "statement_sha256": result.sha256},
                )


@dg.op(
    description="Ingest one inbox file: raw copy + manifests + normalized partitions; then move "
    "it to processed/ (or rejected/ with a reason).",
)
def import_inbox_file(
    context: dg.OpExecutionContext, config: InboxFileConfig, data_dir: DataDirResource
) -> Iterator[dg.AssetMaterialization | dg.Output]:
    """Raise ``dg.Failure`` when the file was rejected (after moving it to rejected/)."""
    path = Path(config.path)
    result = inbox.process_inbox_file(data_dir.root(), path.parent, path)
    context.log.info(result.summary())
    if result.status == "rejected":
        raise dg.Failure(
            description=f"{result.name} rejected: {result.reason}",
            metadata={"moved_to": str(result.moved_to)},
        )
    if result.status == "ingested":
        new = register_accounts(context.instance, result.accounts)
        if new:
            context.log.info(f"registered new accounts {new}")
        yield from inbox_events(result)
    yield dg.Output(
        None,
        metadata={
            "status": result.status,
            "sha256": result.sha256,
            "accounts": list(result.accounts),
            "days_claimed": len(result.days_claimed),
            "days_kept": len(result.days_kept),
            "moved_to": str(result.moved_to),
        },
    )


@dg.job(description="Ingest one hand-downloaded Flex file from the inbox (see inbox_sensor).")
def inbox_import_job() -> None:
    import_inbox_file()
