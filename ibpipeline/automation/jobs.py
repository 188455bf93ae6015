"""Jobs the schedules and sensors launch.

``flex_daily_job`` is the main job: for a report date or a range of them (one run), it fetches the
Flex statements (one request per <= 365 days, every account of the query), normalizes them (each
statement parsed once, every account), refreshes the DuckDB views and rebuilds the dbt marts and
the tearsheets. Every asset in it is partitioned by ``daily`` or unpartitioned, so a backfill of
any contiguous range is one run. ``inbox_import_job`` ingests one hand-downloaded file.
"""

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg

from ibpipeline import inbox
from ibpipeline.assets import NORMALIZED_TABLES, flex_assets, raw_flex_statement
from ibpipeline.assets.marts import MARTS_GROUP
from ibpipeline.assets.normalized import parse_check_fields, parse_warning_metadata
from ibpipeline.partitions import daily, register_accounts
from ibpipeline.resources import DataDirResource

FLEX_INGEST_SELECTION = dg.AssetSelection.assets(*flex_assets)
"""Raw statements, normalized tables and DuckDB views (the ingestion part of ``flex_daily_job``)."""

flex_daily_job = dg.define_asset_job(
    "flex_daily_job",
    selection=FLEX_INGEST_SELECTION | dg.AssetSelection.groups(MARTS_GROUP),
    partitions_def=daily,
    description=(
        "Fetch the Flex statements of a date range (one request per <= 365 days, all accounts), "
        "normalize them, refresh the DuckDB views, rebuild the marts and tearsheets."
    ),
)


class InboxFileConfig(dg.Config):
    """Which inbox file to ingest (absolute path inside the inbox folder)."""

    path: str


def _in_daily_range(day: date) -> bool:
    """Whether ``day`` is a key of the shared daily partitions (not before its start date)."""
    return day >= daily.start.date()


def inbox_events(
    result: inbox.ImportResult,
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """Materializations of the raw and normalized days an ingested file replaced, then each
    normalized table's ``parse_warnings`` check, as the normalized step reports a fetched
    statement: its materializations carry the table's ``parse_warnings`` (values) and
    ``parse_warning_sample``; the WARN check fails when the file had warnings for the table."""
    for day in result.days_claimed:
        if _in_daily_range(day):
            yield dg.AssetMaterialization(
                asset_key=raw_flex_statement.key,
                partition=day.isoformat(),
                metadata={"source": "inbox", "sha256": result.sha256, "file": result.name},
            )
    for name in NORMALIZED_TABLES:
        warnings = parse_warning_metadata(result.table_problems(name))
        for day in result.days_claimed:
            if _in_daily_range(day):
                yield dg.AssetMaterialization(
                    asset_key=name,
                    partition=day.isoformat(),
                    metadata={"source": "inbox", "statement_sha256": result.sha256, **warnings},
                )
    yield from parse_check_evaluations(result)


def parse_check_evaluations(result: inbox.ImportResult) -> Iterator[dg.AssetCheckEvaluation]:
    """The ``parse_warnings`` check of every normalized table for an ingested file."""
    for name in NORMALIZED_TABLES:
        yield dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(name), **parse_check_fields(result.table_problems(name))
        )


@dg.op(
    description="Ingest one inbox file: raw copy + manifests + normalized partitions; then move "
    "it to processed/ (or rejected/ with a reason).",
)
def import_inbox_file(
    context: dg.OpExecutionContext, config: InboxFileConfig, data_dir: DataDirResource
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output]:
    """Raise ``dg.Failure`` when the file was rejected (after moving it to rejected/)."""
    path = Path(config.path)
    result = inbox.process_inbox_file(data_dir.root(), path.parent, path)
    context.log.info(result.summary())
    for line in result.warnings:
        context.log.warning(line)
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
            "rows": result.rows,
            "parse_warnings": result.warning_values,
            "parse_warning_sample": dg.MetadataValue.md(
                "\n".join(f"- {w}" for w in result.warnings[:5]) or "-"
            ),
            "moved_to": str(result.moved_to),
        },
    )


@dg.job(description="Ingest one hand-downloaded Flex file from the inbox (see inbox_sensor).")
def inbox_import_job() -> None:
    import_inbox_file()
