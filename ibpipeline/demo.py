"""``ibpipeline demo``: the main job end to end on a simulated Flex Web Service.

The simulated world is the one ``ibpipeline sim flex|gateway --seed 7 --accounts 3`` serves (same
seed, accounts and inception, ``DEMO_INCEPTION``), so the simulators can feed ``dagster dev`` the
same accounts later (the report's last lines print those commands).

Starts the Flex simulator on a free loopback port with a random token (only in this process's
environment, never printed), then runs, in the same Dagster instance ``dagster dev`` uses from
this folder, ``flex_daily_job`` over the dates as ONE range run (one Flex request per 365 days;
normalized Parquet, DuckDB views, dbt marts and their checks, tearsheets), and takes one gateway
snapshot. Re-running replaces the same partitions: same rows, no duplicates.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from ibpipeline import settings
from ibpipeline.assets import NORMALIZED_TABLES, flex_assets
from ibpipeline.assets.checks import mart_checks, open_marts
from ibpipeline.assets.marts import dbt_mart_assets
from ibpipeline.assets.tearsheets import tearsheets
from ibpipeline.automation.jobs import flex_daily_job
from ibpipeline.automation.ranges import range_tags
from ibpipeline.automation.run_owner import execute_here
from ibpipeline.cli import DEFAULT_INCEPTION
from ibpipeline.dbt import dbt_resource
from ibpipeline.reports.tearsheets import tearsheet_path
from ibpipeline.resources import DataDirResource, FlexResource, GatewayResource
from ibpipeline.storage import parquet, warehouse
from ibpipeline.world import World

DEMO_QUERY_ID = "900001"
NEW_YORK = ZoneInfo("America/New_York")
DEMO_INCEPTION = DEFAULT_INCEPTION
"""First day of the demo's world: the default ``--inception`` of ``ibpipeline sim flex|gateway``."""
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced: dates, accounts, rows per table, last NAV per account."""

    start: date
    end: date
    accounts: tuple[str, ...]
    row_counts: dict[str, int]
    last_nav: dict[str, tuple[date, str, object]]
    data_dir: Path
    performance: dict[str, dict[str, object]] = field(default_factory=dict)
    tearsheets: dict[str, Path] = field(default_factory=dict)
    gateway_check: str = ""
    inception: date = DEMO_INCEPTION
    seed: int = 7


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


def demo_world(seed: int, accounts: int, start: date) -> World:
    """The world of ``ibpipeline sim flex|gateway --seed SEED --accounts N`` (inception
    ``DEMO_INCEPTION``), or one starting at ``start`` when the demo reaches further back."""
    return World(seed=seed, n_accounts=accounts, inception=min(DEMO_INCEPTION, start))


def sim_commands(result: DemoResult, project_dir: Path) -> list[str]:
    """The simulator commands that serve the demo's world (same seed, accounts, inception)."""
    world = f"--seed {result.seed} --accounts {len(result.accounts)}"
    if result.inception != DEMO_INCEPTION:
        world += f" --inception {result.inception}"
    return [
        f"{_bin('ibpipeline', project_dir)} sim flex {world} --token demo-token",
        f"{_bin('ibpipeline', project_dir)} sim gateway {world}",
    ]


def _bin(name: str, project_dir: Path) -> str:
    """``.venv/bin/<name>`` when this installation is ``project_dir``'s ``.venv``, else the
    absolute path of ``<name>`` beside this Python: the printed commands work from
    ``project_dir`` without activating the virtual environment."""
    path = Path(os.path.abspath(sys.executable)).parent / name
    if os.path.abspath(project_dir / ".venv" / "bin" / name) == str(path):
        return f".venv/bin/{name}"
    return shlex.quote(str(path))


def demo_dates(days: int, today: date) -> tuple[date, date]:
    """``days`` calendar days ending yesterday (the last published Flex day)."""
    end = today - timedelta(days=1)
    return end - timedelta(days=days - 1), end


def run_daily_job(
    instance: dg.DagsterInstance,
    resources: dict[str, dg.ConfigurableResource],
    start: date,
    end: date,
) -> None:
    """``flex_daily_job`` over ``start..end`` as one run: raw, normalized, views, marts with their
    checks, tearsheets. A failing step raises (``execute_in_process`` re-raises its error)."""
    defs = dg.Definitions(
        assets=[*flex_assets, *dbt_mart_assets, tearsheets],
        asset_checks=mart_checks,
        jobs=[flex_daily_job],
        resources={**resources, "dbt": dbt_resource()},
    )
    execute_here(
        defs.resolve_job_def(flex_daily_job.name),
        instance,
        tags=range_tags(start.isoformat(), end.isoformat()),
        run_config=QUIET,
    )


def last_close(end: date) -> datetime:
    """16:00 New York on the last business day on or before ``end`` (a Flex report date)."""
    while end.weekday() >= 5:
        end -= timedelta(days=1)
    return datetime.combine(end, time(16, 0), NEW_YORK)


def take_gateway_snapshot(
    instance: dg.DagsterInstance, world: object, data_root: Path, as_of: datetime
) -> str:
    """One snapshot from an IB Gateway simulator frozen at ``as_of``, normalized, then checked
    against that day's Flex NAV; returns the check's description."""
    from ibpipeline.automation.gateway_schedule import take_snapshot
    from ibpipeline.sim.gateway_server import GatewaySimulatorThread

    with GatewaySimulatorThread(world, clock=as_of) as gateway:
        runs = take_snapshot(
            instance,
            {
                "gateway": GatewayResource(
                    gateways=[f"127.0.0.1:{gateway.port}"], as_of=as_of.isoformat()
                ),
                "data_dir": DataDirResource(path=str(data_root)),
            },
            run_config=QUIET,
        )
    if runs.tables_run is None:
        return "no registered accounts: nothing compared"
    evaluations = sorted(
        runs.tables_run.get_asset_check_evaluations(),
        key=lambda e: e.check_name != "gateway_vs_flex_nav",  # the NAV comparison first
    )
    return "; ".join(f"{'passed' if e.passed else 'FAILED'}: {e.description}" for e in evaluations)


PERFORMANCE_COLUMNS = ("currency", "twr", "cagr", "volatility", "sharpe", "max_drawdown")


def performance(data_dir: Path) -> dict[str, dict[str, object]]:
    """Each account's (and ALL's) since-inception row of ``performance_summary``."""
    with open_marts(data_dir) as con:
        rows = con.execute(
            f"select account_id, {', '.join(PERFORMANCE_COLUMNS)} from performance_summary "
            "where period = 'ITD' order by account_id = 'ALL', account_id"
        ).fetchall()
    return {row[0]: dict(zip(PERFORMANCE_COLUMNS, row[1:], strict=True)) for row in rows}


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

    today = today or date.today()
    start, end = demo_dates(days, today)
    if start < date.fromisoformat(settings.start_date()):
        raise ValueError(
            f"--days {days} reaches {start}, before {settings.START_DATE_ENV}="
            f"{settings.start_date()}"
        )
    project_dir = (project_dir or Path.cwd()).resolve()
    data_root = Path(data_dir).resolve()
    world = demo_world(seed, accounts, start)
    account_ids = [a.account_id for a in world.accounts]
    token = "".join(secrets.choice("0123456789") for _ in range(24))
    os.environ[settings.FLEX_TOKEN_ENV] = token
    source = world_statement_source(world, today=lambda: today)
    with (
        demo_instance(project_dir) as instance,
        FlexSimulator(source, token, [DEMO_QUERY_ID], today=lambda: today) as simulator,
    ):
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
        run_daily_job(instance, resources, start, end)
        gateway_check = take_gateway_snapshot(instance, world, data_root, last_close(end))
    counts, last_nav = summarize(data_root, account_ids, start, end)
    perf = performance(data_root)
    sheets = {a: tearsheet_path(data_root, a) for a in perf}
    result = DemoResult(
        start,
        end,
        tuple(account_ids),
        counts,
        last_nav,
        data_root,
        perf,
        sheets,
        gateway_check,
        world.inception,
        seed,
    )
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
        f"DuckDB:         {warehouse.describe(result.data_dir)} (every table by name, "
        "e.g. daily_nav, nav_daily, gateway_positions)",
        "",
        f"Performance {result.start}..{result.end} (TWR, CAGR, volatility, Sharpe, max drawdown):",
        *(
            f"  {a:<10} {p['currency']}  {_pct(p['twr'])}  {_pct(p['cagr'])}  "
            f"{_pct(p['volatility'])}  {_num(p['sharpe'])}  {_pct(p['max_drawdown'])}"
            for a, p in result.performance.items()
        ),
        "",
        "Tearsheets:",
        *(f"  {a:<10} {path}" for a, path in result.tearsheets.items()),
        "",
        f"Gateway snapshot at the last close vs Flex NAV: {result.gateway_check}",
        f"Gateway tables: {result.data_dir / 'normalized'}/gateway_*",
        "",
        "The simulators of this world, to feed `dagster dev` (README: Quick start):",
        *(f"  {command}" for command in sim_commands(result, project_dir)),
        "",
        "See the runs and assets (then open http://127.0.0.1:3000):",
        f"cd {shlex.quote(str(project_dir))} && {_bin('dagster', project_dir)} dev -w workspace.yaml",
    ]
    return "\n".join(lines)


def _pct(value: object) -> str:
    return "n/a" if value is None else f"{value:>8.2%}"


def _num(value: object) -> str:
    return "n/a" if value is None else f"{value:>6.2f}"
