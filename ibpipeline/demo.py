"""``ibpipeline demo``: the main job end to end on a simulated Flex Web Service.

Starts the Flex simulator on a free loopback port with a random token (only in this process's
environment, never printed), then materializes, in the same Dagster instance ``dagster dev`` uses
from this folder, two range runs: ``flex_raw_job`` over the dates (one Flex request per 365 days)
and ``flex_normalize_job`` over accounts x dates (normalized Parquet + DuckDB views).
Re-running replaces the same partitions: same rows, no duplicates.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from ibpipeline import settings
from ibpipeline.assets import NORMALIZED_TABLES, flex_assets
from ibpipeline.automation.jobs import flex_normalize_job, flex_raw_job
from ibpipeline.partitions import ACCOUNT_DIMENSION, account_date_key
from ibpipeline.resources import DataDirResource, FlexResource
from ibpipeline.storage import parquet, warehouse

DEMO_QUERY_ID = "900001"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced: dates, accounts, rows per table, last NAV per account."""

    start: date
    end: date
    accounts: tuple[str, ...]
    row_counts: dict[str, int]
    last_nav: dict[str, tuple[date, str, object]]
    data_dir: Path


def demo_instance(project_dir: Path) -> dg.DagsterInstance:
    """The instance ``dagster dev`` would use from ``project_dir``.

    ``$DAGSTER_HOME`` when set; else the committed ``dagster.yaml`` of ``project_dir`` (its SQLite
    ``base_dir`` resolves against the working directory, so run from the project folder).
    """
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    if not (project_dir / "dagster.yaml").is_file():
        raise FileNotFoundError(
            f"no dagster.yaml in {project_dir}: run the demo from the ibpipeline project folder "
            "or set DAGSTER_HOME"
        )
    return dg.DagsterInstance.from_config(str(project_dir))


def range_tags(start: str, end: str) -> dict[str, str]:
    """Tags that make one run cover the partition key range ``start..end``."""
    return {RANGE_START_TAG: start, RANGE_END_TAG: end}


def demo_dates(days: int, today: date) -> tuple[date, date]:
    """``days`` calendar days ending yesterday (the last published Flex day)."""
    end = today - timedelta(days=1)
    return end - timedelta(days=days - 1), end


def materialize_range(
    instance: dg.DagsterInstance,
    resources: dict[str, dg.ConfigurableResource],
    start: date,
    end: date,
    account_ids: list[str],
) -> None:
    """Raw over ``start..end`` as one run, then normalized + views over accounts x dates as one run.

    Raises ``dg.DagsterExecutionStepExecutionError`` style failures from the runs unchanged.
    """
    defs = dg.Definitions(
        assets=flex_assets, jobs=[flex_raw_job, flex_normalize_job], resources=resources
    )
    defs.resolve_job_def(flex_raw_job.name).execute_in_process(
        instance=instance, tags=range_tags(start.isoformat(), end.isoformat())
    )
    registered = instance.get_dynamic_partitions(ACCOUNT_DIMENSION)
    ordered = [a for a in registered if a in set(account_ids)]
    first, last = ordered[0], ordered[-1]
    defs.resolve_job_def(flex_normalize_job.name).execute_in_process(
        instance=instance,
        tags=range_tags(
            account_date_key(first, start.isoformat()), account_date_key(last, end.isoformat())
        ),
    )


def summarize(
    data_dir: Path, account_ids: list[str], start: date, end: date
) -> tuple[dict[str, int], dict[str, tuple[date, str, object]]]:
    """Row counts per normalized table and each account's last NAV in ``start..end``."""
    counts = {
        name: parquet.read_table(
            name, data_dir=data_dir, account_ids=account_ids, start=start, end=end
        ).num_rows
        for name in NORMALIZED_TABLES
    }
    nav = parquet.read_table(
        "nav_daily", data_dir=data_dir, account_ids=account_ids, start=start, end=end
    )
    last: dict[str, tuple[date, str, object]] = {}
    for row in nav.select(["account_id", "date", "base_currency", "total_base"]).to_pylist():
        if row["account_id"] not in last or row["date"] > last[row["account_id"]][0]:
            last[row["account_id"]] = (row["date"], row["base_currency"], row["total_base"])
    return counts, last


def run_demo(
    accounts: int = 3,
    days: int = 60,
    data_dir: Path = Path(settings.DEFAULT_DATA_DIR),
    seed: int = 7,
    project_dir: Path | None = None,
    today: date | None = None,
    quiet: bool = False,
) -> DemoResult:
    """Run the demo and print where everything is; returns the summary."""
    from ibpipeline.sim.flex_server import FlexSimulator, world_statement_source
    from ibpipeline.world import World

    today = today or date.today()
    start, end = demo_dates(days, today)
    if start < date.fromisoformat(settings.start_date()):
        raise ValueError(
            f"--days {days} reaches {start}, before {settings.START_DATE_ENV}="
            f"{settings.start_date()}"
        )
    project_dir = (project_dir or Path.cwd()).resolve()
    data_root = Path(data_dir).resolve()
    instance = demo_instance(project_dir)
    world = World(seed=seed, n_accounts=accounts, inception=start)
    account_ids = [a.account_id for a in world.accounts]
    token = "".join(secrets.choice("0123456789") for _ in range(24))
    os.environ[settings.FLEX_TOKEN_ENV] = token
    source = world_statement_source(world, today=lambda: today)
    with FlexSimulator(source, token, [DEMO_QUERY_ID], today=lambda: today) as simulator:
        resources = {
            "flex": FlexResource(
                token=dg.EnvVar(settings.FLEX_TOKEN_ENV),
                query_id=DEMO_QUERY_ID,
                base_url=simulator.base_url,
                first_poll_delay_s=0.0,
                poll_interval_s=0.5,
            ),
            "data_dir": DataDirResource(path=str(data_root)),
        }
        materialize_range(instance, resources, start, end, account_ids)
    counts, last_nav = summarize(data_root, account_ids, start, end)
    result = DemoResult(start, end, tuple(account_ids), counts, last_nav, data_root)
    if not quiet:
        print(report(result, project_dir))
    return result


def report(result: DemoResult, project_dir: Path) -> str:
    """Human-readable summary of a demo run."""
    lines = [
        f"ibpipeline demo: {len(result.accounts)} accounts, {result.start}..{result.end}",
        "",
        "NAV on the last business day:",
    ]
    for account_id in result.accounts:
        day, currency, total = result.last_nav.get(account_id, (None, "", "n/a"))
        lines.append(f"  {account_id}  {day}  {total} {currency}")
    lines += ["", "Rows per normalized table:"]
    lines += [f"  {name:<18} {rows:>8}" for name, rows in result.row_counts.items()]
    lines += [
        "",
        f"Raw statements: {result.data_dir / 'raw' / 'flex'}",
        f"Parquet:        {result.data_dir / 'normalized'}",
        f"DuckDB:         {warehouse.warehouse_path(result.data_dir)} (schema normalized)",
        "",
        f"See the runs and assets: cd {project_dir} && dagster dev  (then http://127.0.0.1:3000)",
    ]
    return "\n".join(lines)
