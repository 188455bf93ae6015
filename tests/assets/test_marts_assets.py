"""The dbt marts, their checks and the tearsheets as Dagster assets.

Fast tests cover the definitions (partitions, pools, lineage, checks) and the pure helpers. The
slow ones run the whole chain through Dagster on a simulated Flex Web Service over loopback:
raw -> normalized -> dbt marts (one range run) -> checks -> tearsheets, then two overlapping runs
that both write the DuckDB file under the ``duckdb_writer`` pool.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from asset_helpers import make_resources
from dagster_dbt import DbtProject

from ibpipeline import settings
from ibpipeline.assets import NORMALIZED_TABLES, flex_assets, warehouse_views
from ibpipeline.assets.checks import (
    NavDay,
    business_day_gaps,
    mart_checks,
    nav_breaks,
    previous_business_day,
    stale_accounts,
)
from ibpipeline.assets.marts import (
    MARTS_GROUP,
    PARTIAL_PARSE_FILE,
    data_dir_env,
    dbt_mart_assets,
    dbt_marts,
    keep_partial_parse,
    partial_parse_cache,
    window_env,
    window_vars,
)
from ibpipeline.assets.tearsheets import tearsheets
from ibpipeline.automation.jobs import flex_daily_job
from ibpipeline.automation.ranges import range_tags
from ibpipeline.dbt import PROJECT_DIR, dbt_resource, ensure_manifest, manifest_is_stale
from ibpipeline.finance.returns import xirr
from ibpipeline.flex.ratelimit import RateLimit
from ibpipeline.partitions import daily
from ibpipeline.reports.tearsheets import (
    AccountSeries,
    render_png,
    tearsheet_path,
    xirr_cashflows,
)
from ibpipeline.resources import DataDirResource, FlexResource
from ibpipeline.sim.flex_server import FlexSimulator, world_statement_source
from ibpipeline.storage import parquet
from ibpipeline.world import World

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUERY_ID = "800969"
TOKEN = "731054826619374025548312"
DAILY_MARTS = {"daily_nav", "daily_returns", "drawdowns", "allocation_daily", "positions_history"}
SUMMARY_MARTS = {
    "performance_summary",
    "drawdown_periods",
    "pnl_by_symbol",
    "trade_stats",
    "income",
    "income_accruals",
    "fees_by_type",
    "realized_pnl",
    "realized_pnl_lots",
    "return_attribution",
    "corporate_actions_log",
    "securities_history",
}
NO_NATURAL_KEY = {"realized_pnl_lots"}  # one row per closed lot: two lots may share every column
MART_NAMES = {p.stem for p in (PROJECT_DIR / "models" / "marts").glob("*.sql")}


def keys_of(assets_def: dg.AssetsDefinition) -> set[str]:
    return {k.to_user_string() for k in assets_def.keys}


# -- definitions ----------------------------------------------------------------------------------


def test_window_vars_are_the_end_exclusive_window() -> None:
    start = daily.time_window_for_partition_key("2024-03-01").start
    end = daily.time_window_for_partition_key("2024-03-31").end
    assert window_vars(start, end) == {"min_date": "2024-03-01", "max_date": "2024-04-01"}
    with pytest.raises(ValueError, match="empty date window"):
        window_vars(end, start)


def test_data_dir_env_is_set_while_starting_dbt_and_restored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(settings.DATA_DIR_ENV, "before")
    with data_dir_env(tmp_path):
        assert os.environ[settings.DATA_DIR_ENV] == str(tmp_path)
    assert os.environ[settings.DATA_DIR_ENV] == "before"
    monkeypatch.delenv(settings.DATA_DIR_ENV)
    with pytest.raises(RuntimeError), data_dir_env(tmp_path):
        raise RuntimeError("dbt failed to start")
    assert settings.DATA_DIR_ENV not in os.environ


def test_the_window_reaches_dbt_as_environment_variables(tmp_path: Path) -> None:
    """Not as --vars: dbt throws its saved parse away whenever the command line's vars change."""
    dbt_vars = {"min_date": "2024-03-01", "max_date": "2024-04-01"}
    env = window_env(dbt_vars)
    assert env == {"IBPIPELINE_DBT_MIN_DATE": "2024-03-01", "IBPIPELINE_DBT_MAX_DATE": "2024-04-01"}
    with data_dir_env(tmp_path, env):
        assert os.environ["IBPIPELINE_DBT_MAX_DATE"] == "2024-04-01"
    assert "IBPIPELINE_DBT_MAX_DATE" not in os.environ


def test_the_saved_parse_is_kept_per_profile_environment(tmp_path: Path) -> None:
    with data_dir_env(tmp_path / "a"):
        first, again = partial_parse_cache(), partial_parse_cache()
    with data_dir_env(tmp_path / "b"):
        other = partial_parse_cache()
    assert first == again != other
    target, cached = tmp_path / "target", tmp_path / "cache" / "x.msgpack"
    target.mkdir()
    keep_partial_parse(target, cached)  # dbt wrote no parse (it failed early): nothing kept
    assert not cached.exists()
    (target / PARTIAL_PARSE_FILE).write_bytes(b"parse")
    keep_partial_parse(target, cached)
    assert cached.read_bytes() == b"parse"
    assert [p.name for p in cached.parent.iterdir()] == ["x.msgpack"]


def test_the_dbt_resource_starts_dbt_once_per_call() -> None:
    """No ``dbt --version`` process and no in-process adapter: the private dagster-dbt methods the
    project's resource overrides still exist under these names."""
    from importlib.metadata import version

    from dagster_dbt import DbtCliResource

    from ibpipeline.dbt import ProjectDbtCliResource

    for name in ("_cli_version", "_initialize_dbt_core_adapter"):
        assert name in vars(DbtCliResource)
    resource = dbt_resource()
    assert isinstance(resource, ProjectDbtCliResource)
    assert str(resource._cli_version) == version("dbt-core")
    assert resource._initialize_dbt_core_adapter(["build"]) is None


def test_fast_exit_dbt_keeps_dbts_output_files_and_exit_status(tmp_path: Path) -> None:
    """``ibpipeline-dbt`` (what the resource runs) is dbt leaving by ``os._exit``: same exit status
    (0, a failed parse's, a usage error's 2), same artifacts, no leaked-semaphore warning."""
    import subprocess

    from ibpipeline.dbt import DBT_EXECUTABLE, FAST_EXIT_DBT

    assert dbt_resource().dbt_executable == str(FAST_EXIT_DBT)

    def run(executable: str, *args: str, cwd: Path = PROJECT_DIR) -> tuple[int, str]:
        done = subprocess.run(
            [executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd
        )
        return done.returncode, done.stdout + done.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dbt_project.yml").write_text("name: [unclosed\n")
    outcomes = []
    for executable in (DBT_EXECUTABLE, str(FAST_EXIT_DBT)):
        target = tmp_path / Path(executable).name
        code, output = run(
            executable, "parse", "--project-dir", str(PROJECT_DIR),
            "--profiles-dir", str(PROJECT_DIR), "--target-path", str(target),
            "--log-path", str(target),
        )  # fmt: skip
        assert code == 0, output
        assert "leaked semaphore" not in output
        nodes = json.loads((target / "manifest.json").read_text())["nodes"]
        assert "model.ibpipeline.daily_nav" in nodes
        failed_parse = run(executable, "parse", "--project-dir", str(broken), cwd=broken)[0]
        outcomes.append((len(nodes), failed_parse, run(executable, "no-such-command")[0]))
    (plain, fast) = outcomes
    assert fast == plain and fast[1] != 0 and fast[2] == 2


def test_manifest_is_stale_when_missing_or_older_than_a_model(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "dbt_project.yml").write_text("name: p\nprofile: p\n")
    project = DbtProject(project_dir=tmp_path)
    assert manifest_is_stale(project)
    model = tmp_path / "models" / "m.sql"
    model.write_text("select 1")
    project.manifest_path.parent.mkdir()
    project.manifest_path.write_text("{}")
    compiled = project.manifest_path.parent / "compiled.sql"
    compiled.write_text("select 1")  # dbt's own output never makes the manifest stale
    for source in (model, tmp_path / "dbt_project.yml"):
        os.utime(source, (1_000_000, 1_000_000))
    os.utime(project.manifest_path, (2_000_000, 2_000_000))
    assert not manifest_is_stale(project)
    os.utime(model, (3_000_000, 3_000_000))
    assert manifest_is_stale(project)


def test_one_dbt_asset_holds_every_model_partitioned_pooled_and_single_run() -> None:
    assert dbt_mart_assets == [dbt_marts]
    assert dbt_marts.partitions_def is daily
    assert dbt_marts.backfill_policy == dg.BackfillPolicy.single_run()
    assert dbt_marts.op.pool == "duckdb_writer"
    # like every asset of flex_daily_job, so a UI backfill of a range is one run
    assert tearsheets.partitions_def == dbt_marts.partitions_def
    assert tearsheets.backfill_policy == dg.BackfillPolicy.single_run()
    keys = keys_of(dbt_marts)
    models = {p.stem for p in (PROJECT_DIR / "models").rglob("*.sql")}
    assert keys - {t for t in NORMALIZED_TABLES} == models  # sources are the normalized assets
    assert MART_NAMES == DAILY_MARTS | SUMMARY_MARTS <= keys
    staging = {k for k in keys if k.startswith("stg_")}
    # a staging model reads one normalized table (stg_closed_lots: the CLOSED_LOT rows of trades);
    # tables no mart reads yet (securities, statement_of_funds, ...) have none
    assert staging - {"stg_closed_lots"} <= {f"stg_{t}" for t in NORMALIZED_TABLES}
    core = ("account_info", "nav_daily", "change_in_nav", "cash_balances", "positions_daily")
    assert {f"stg_{t}" for t in (*core, "trades", "cash_transactions", "fx_rates")} <= staging


def test_only_the_incremental_marts_read_the_run_window() -> None:
    """The summary tables are rebuilt whole by every run (a one-day run must not cut them to a
    day); the daily marts delete+insert the window's days."""
    windowed = {
        p.stem
        for p in (PROJECT_DIR / "models").rglob("*.sql")
        if any(m in p.read_text() for m in ("in_date_window", "date_bound", "is_incremental"))
    }
    assert windowed == DAILY_MARTS
    # incremental on the DuckDB file (the manifest's target); on the DuckLake the two
    # path-dependent marts are whole tables (daily_returns.sql)
    nodes = json.loads(ensure_manifest().read_text())["nodes"]
    for name in DAILY_MARTS:
        assert nodes[f"model.ibpipeline.{name}"]["config"]["materialized"] == "incremental", name


def test_sources_are_the_normalized_assets_mapped_day_to_day() -> None:
    for table in NORMALIZED_TABLES:
        spec = dbt_marts.specs_by_key.get(dg.AssetKey(f"stg_{table}"))
        if spec is None:  # no mart reads this table yet
            continue
        (dep,) = [d for d in spec.deps if d.asset_key == dg.AssetKey(table)]
        assert dep.partition_mapping is None  # same daily definition: identity
    resources = {
        "flex": FlexResource(token="unused", query_id=QUERY_ID),
        "data_dir": DataDirResource(path="unused"),
        "dbt": dbt_resource(),
    }
    defs = dg.Definitions(assets=[*flex_assets, dbt_marts], resources=resources)
    graph = defs.resolve_asset_graph()
    upstream = dg.AssetSelection.assets("daily_nav").upstream().resolve(graph)
    assert dg.AssetKey("raw_flex_statement") in upstream
    assert dg.AssetKey("nav_daily") in upstream
    mapping = graph.get_partition_mapping(dg.AssetKey("stg_nav_daily"), dg.AssetKey("nav_daily"))
    assert mapping == dg.TimeWindowPartitionMapping()  # day D reads day D


def test_marts_group_pool_and_uniqueness_checks() -> None:
    assert set(dbt_marts.group_names_by_key.values()) == {MARTS_GROUP}
    assert tearsheets.group_names_by_key[tearsheets.key] == MARTS_GROUP
    assert tearsheets.op.pool == "duckdb_writer"
    assert all(check.op.pool == "duckdb_writer" for check in mart_checks)
    check_names = {key.name for key in dbt_marts.check_keys}
    for mart in MART_NAMES - NO_NATURAL_KEY:
        assert any(n.startswith(f"unique_combination_{mart}_") for n in check_names), mart


# -- pure helpers ---------------------------------------------------------------------------------


def test_business_day_gaps_and_previous_business_day() -> None:
    friday, monday, tuesday = date(2024, 3, 1), date(2024, 3, 4), date(2024, 3, 5)
    assert business_day_gaps([friday, monday, tuesday]) == []
    assert business_day_gaps([friday, tuesday]) == [monday]
    assert business_day_gaps([]) == []
    assert previous_business_day(monday) == friday
    assert previous_business_day(date(2024, 3, 3)) == friday  # Sunday
    assert previous_business_day(tuesday) == monday


def test_stale_accounts_skip_closed_ones() -> None:
    expected = date(2024, 3, 8)
    latest = {"U1": date(2024, 3, 8), "U2": date(2024, 3, 6), "U3": date(2024, 3, 5)}
    assert stale_accounts(latest, {}, expected) == ["U2", "U3"]
    assert stale_accounts(latest, {"U3": date(2024, 3, 5)}, expected) == ["U2"]
    assert stale_accounts(latest, {"U2": date(2024, 3, 11)}, expected) == ["U2", "U3"]


def test_nav_breaks_allow_half_a_cent_per_rounded_amount() -> None:
    def day(nav: str, n_positions: int) -> NavDay:
        return NavDay(
            "U1234567", date(2024, 3, 1), Decimal(nav), Decimal("100.00"), Decimal("1.00"),
            Decimal("899.00"), n_positions,
        )  # fmt: skip

    assert nav_breaks([day("1000.00", 1)]) == []
    assert nav_breaks([day("1000.02", 1)]) == []  # 0.02 <= 0.005 * 4
    broken = day("1000.03", 1)
    assert nav_breaks([broken]) == [broken]
    assert nav_breaks([day("1000.03", 3)]) == []  # 0.03 <= 0.005 * 6
    # securities in NAV but no position rows that day: nothing to add up, not a break
    unproven = dataclasses.replace(day("1899.00", 0), positions_evidence=False)
    assert nav_breaks([unproven]) == [] and nav_breaks([broken, unproven]) == [broken]


def test_xirr_cashflows() -> None:
    d0, d1, d2 = date(2023, 1, 2), date(2023, 6, 1), date(2024, 1, 2)
    funded = xirr_cashflows([d0, d1, d2], [Decimal(100), Decimal(160), Decimal(165)],
                            [Decimal(100), Decimal(50), Decimal(0)])  # fmt: skip
    assert funded == [(d0, Decimal(-100)), (d1, Decimal(-50)), (d2, Decimal(165))]
    existing = xirr_cashflows([d0, d2], [Decimal(200), Decimal(220)], [Decimal(-5), Decimal(0)])
    assert existing == [(d0, Decimal(-200)), (d2, Decimal(220))]
    assert xirr(existing) == pytest.approx(0.10, abs=1e-9)  # 365 days, +10 %
    with pytest.raises(ValueError):
        xirr_cashflows([d0], [Decimal(1), Decimal(2)], [Decimal(0)])


def test_render_png() -> None:
    days = [date(2024, 1, 2) + timedelta(days=i) for i in range(5)]
    series = AccountSeries(
        "U1234567", "USD", days, [Decimal(100 + i) for i in range(5)], [Decimal(0)] * 5,
        [None, 0.01, 0.02, -0.01, 0.0], [None, 0.0, 0.0, -0.03, -0.02],
    )  # fmt: skip
    assert series.twr == 0.0
    assert series.max_drawdown == -0.03
    png = render_png(series, 0.12)
    assert png.startswith(PNG_MAGIC) and len(png) > 5000


def test_a_reused_sheet_draws_the_bytes_of_a_new_figure() -> None:
    """render_png draws every account on one figure per thread: no trace of the previous
    account (axis limits, title, drawdown area, NAV label, date ticks) may remain."""
    from ibpipeline.reports.tearsheets import _Sheet

    def series(account: str, currency: str, n: int, scale: float) -> AccountSeries:
        days = [date(2023, 11, 20) + timedelta(days=i) for i in range(n)]
        twr = [None, *(0.01 * ((i % 7) - 3) * scale for i in range(1, n))]
        drawdown = [None, *(-0.02 * (i % 5) * scale for i in range(1, n))]
        nav = [Decimal(1000 * scale + i) for i in range(n)]
        return AccountSeries(account, currency, days, nav, [Decimal(0)] * n, twr, drawdown)

    accounts = [
        series("U1", "USD", 400, 1.0),
        series("U2", "EUR", 1, 5.0),  # a single day after a long series
        series("U3", "CHF", 30, 250.0),
        series("U4", "USD", 400, 0.5),
    ]
    for account in accounts:  # the thread's sheet, as the pool and the step use it
        assert render_png(account, 0.07) == _Sheet().png(account, 0.07), account.account_id


# -- end to end through Dagster -------------------------------------------------------------------


@dataclass
class Pipeline:
    world: World
    start: date
    end: date
    accounts: list[str]
    data_dir: Path
    instance: dg.DagsterInstance
    resources: dict
    marts_result: dg.ExecuteInJobResult


def window_for(today: date, n_business_days: int) -> tuple[date, date]:
    """The ``n`` business days ending on the last business day before ``today``."""
    end = previous_business_day(today)
    start = end
    for _ in range(n_business_days - 1):
        start = previous_business_day(start)
    return start, end


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("marts_e2e")
    data_dir = root / "data"
    today = date.today()
    start, end = window_for(today, 12)
    world = World(seed=23, n_accounts=3, inception=start)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(settings.FLEX_TOKEN_ENV, TOKEN)
        # dbt must follow the data_dir resource, not a stale environment variable
        mp.setenv(settings.DATA_DIR_ENV, str(root / "elsewhere"))
        overrides = {"concurrency": {"pools": {"default_limit": 1}}}
        (root / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "home"), overrides=overrides) as instance:
            source = world_statement_source(world, today=lambda: today)
            sim = FlexSimulator(
                source, TOKEN, {QUERY_ID}, rate_limits=(RateLimit(1000, 1.0),), today=lambda: today
            )
            with sim:
                resources = {**make_resources(sim, QUERY_ID, data_dir), "dbt": dbt_resource()}
                defs = dg.Definitions(
                    assets=flex_assets, jobs=[flex_daily_job], resources=resources
                )
                ingest = defs.resolve_job_def("flex_daily_job").execute_in_process(
                    instance=instance, tags=range_tags(start.isoformat(), end.isoformat())
                )
                assert ingest.success
            accounts = list(instance.get_dynamic_partitions("account"))
            assert sorted(accounts) == sorted(a.account_id for a in world.accounts)
            marts = dg.materialize(
                [dbt_marts, tearsheets, *mart_checks],
                instance=instance,
                resources=resources,
                tags=range_tags(start.isoformat(), end.isoformat()),
                raise_on_error=False,
            )
            yield Pipeline(world, start, end, accounts, data_dir, instance, resources, marts)


def query(data_dir: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(data_dir / "ibpipeline.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.mark.slow
def test_range_run_builds_marts_and_every_check_passes(pipeline: Pipeline) -> None:
    result = pipeline.marts_result
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    expected = {
        *dbt_marts.check_keys,
        *(key for check in mart_checks for key in check.check_keys),
    }
    assert {e.asset_check_key for e in evaluations} == expected
    failed = [(e.asset_check_key.name, e.metadata) for e in evaluations if not e.passed]
    assert failed == []
    names = {e.asset_check_key.name for e in evaluations}
    assert {"nav_reconciles", "no_business_day_gaps", "latest_day_is_fresh"} <= names
    # one range run materialized every day of the window for the daily marts
    days = {
        m.partition
        for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey("daily_nav")
    }
    n_days = (pipeline.end - pipeline.start).days + 1
    assert days == {(pipeline.start + timedelta(days=i)).isoformat() for i in range(n_days)}
    assert not (pipeline.data_dir.parent / "elsewhere").exists()
    assert os.environ[settings.DATA_DIR_ENV] == str(pipeline.data_dir.parent / "elsewhere")
    rows = query(pipeline.data_dir, "select count(*) from daily_nav where account_id <> 'ALL'")
    business = business_day_gaps([pipeline.start, pipeline.end]) + [pipeline.start, pipeline.end]
    assert rows[0][0] == len(pipeline.accounts) * len(business)


@pytest.mark.slow
def test_cumulative_twr_equals_the_statement_twr(pipeline: Pipeline) -> None:
    change = parquet.read_table("change_in_nav", data_dir=pipeline.data_dir).to_pylist()
    assert sorted(r["account_id"] for r in change) == sorted(pipeline.accounts)
    for row in change:
        assert (row["from_date"], row["to_date"]) == (pipeline.start, pipeline.end)
        ((twr, n),) = query(
            pipeline.data_dir,
            f"select product(1 + daily_return) - 1, count(daily_return) from daily_returns "
            f"where account_id = '{row['account_id']}'",
        )
        assert n == len(business_day_gaps([pipeline.start, pipeline.end])) + 2
        assert twr * 100 == pytest.approx(float(row["twr_pct"]), abs=0.01)  # 1 bp


@pytest.mark.slow
def test_tearsheets_are_pngs_carried_by_the_metadata(pipeline: Pipeline) -> None:
    events = [
        m
        for m in pipeline.marts_result.get_asset_materialization_events()
        if m.asset_key == tearsheets.key
    ]
    assert events  # one per daily partition of the run, every one for the whole history
    carrying = [e for e in events if "tearsheets" in e.materialization.metadata]
    # the images ride on the run's newest day only
    assert [e.materialization.partition for e in carrying] == [pipeline.end.isoformat()]
    metadata = carrying[0].materialization.metadata
    assert all(e.materialization.metadata["drawn"].value >= 0 for e in events)
    n_sheets = len(pipeline.accounts) + 1
    assert all(e.materialization.metadata["account_count"].value == n_sheets for e in events)
    # the other days carry only the counts (a year of 1,000 accounts would repeat 3,000
    # per-account entries on every day otherwise)
    for event in events:
        if event not in carrying:
            assert set(event.materialization.metadata) == {"account_count", "drawn"}
    assert sorted(metadata["accounts"].value) == sorted([*pipeline.accounts, "ALL"])
    markdown = metadata["tearsheets"].value
    for account_id in [*pipeline.accounts, "ALL"]:
        path = tearsheet_path(pipeline.data_dir, account_id)
        png = path.read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert metadata[f"path_{account_id}"].value == str(path)
        assert (
            f"![{account_id}](data:image/png;base64,{base64.b64encode(png).decode()})" in markdown
        )
    for account in pipeline.world.accounts:
        days = pipeline.world.business_days(pipeline.start, pipeline.end)
        states = [pipeline.world.day(account.account_id, d) for d in days]
        first = states[0]
        assert first.external_flow_base > 0  # funded on the window's first day (inception)
        flows = [(days[0], -first.external_flow_base)]
        flows += [
            (d, -s.external_flow_base)
            for d, s in zip(days[1:], states[1:], strict=True)
            if s.external_flow_base
        ]
        flows.append((days[-1], states[-1].nav.total_base))
        got = metadata[f"xirr_{account.account_id}"].value
        assert got == pytest.approx(xirr(flows), rel=1e-6)


@pytest.mark.slow
def test_overlapping_duckdb_writers_are_serialized_by_the_pool(pipeline: Pipeline) -> None:
    """dbt (daily marts, one day) and the views asset both write ibpipeline.duckdb; launched
    together against one instance, the pool runs them one after the other and both succeed."""
    instance, resources = pipeline.instance, pipeline.resources
    before = query(pipeline.data_dir, "select count(*), sum(nav) from daily_nav")
    results: dict[str, dg.ExecuteInJobResult] = {}

    def run(name: str, assets: list, **kwargs) -> None:
        results[name] = dg.materialize(
            assets, instance=instance, resources=resources, raise_on_error=False, **kwargs
        )

    dbt_thread = threading.Thread(
        target=run, args=("dbt", [dbt_marts]), kwargs={"partition_key": pipeline.end.isoformat()}
    )
    dbt_thread.start()
    deadline = time.monotonic() + 120
    while not instance.event_log_storage.get_concurrency_info("duckdb_writer").claimed_slots:
        assert dbt_thread.is_alive() and time.monotonic() < deadline, "dbt never took the slot"
        time.sleep(0.05)
    views_thread = threading.Thread(target=run, args=("views", [warehouse_views]))
    views_thread.start()
    dbt_thread.join(300)
    views_thread.join(300)

    assert results["dbt"].success and results["views"].success

    def step_window(result: dg.ExecuteInJobResult) -> tuple[float, float]:
        records = instance.all_logs(result.run_id)
        starts = [
            r.timestamp
            for r in records
            if r.dagster_event and r.dagster_event.event_type_value == "STEP_START"
        ]
        ends = [
            r.timestamp
            for r in records
            if r.dagster_event and r.dagster_event.event_type_value == "STEP_SUCCESS"
        ]
        return min(starts), max(ends)

    dbt_start, dbt_end = step_window(results["dbt"])
    views_start, _ = step_window(results["views"])
    assert views_start >= dbt_end > dbt_start
    # re-running one day replaced its rows (delete+insert), nothing duplicated
    assert query(pipeline.data_dir, "select count(*), sum(nav) from daily_nav") == before
    views = query(
        pipeline.data_dir,
        "select view_name from duckdb_views() where schema_name = 'normalized' and not internal",
    )
    assert {v for (v,) in views} == set(NORMALIZED_TABLES)


@pytest.mark.slow
def test_checks_fail_on_broken_marts(pipeline: Pipeline, tmp_path: Path) -> None:
    """The custom checks detect a NAV that does not reconcile, a missing business day and an
    account whose newest day is stale."""
    copy = tmp_path / "data"
    copy.mkdir()
    (copy / "ibpipeline.duckdb").write_bytes((pipeline.data_dir / "ibpipeline.duckdb").read_bytes())
    account = pipeline.accounts[0]
    middle = pipeline.world.business_days(pipeline.start, pipeline.end)[3]
    with duckdb.connect(str(copy / "ibpipeline.duckdb")) as con:
        con.execute(
            f"update daily_nav set nav = nav + 1 where account_id = '{account}' and date = '{pipeline.end}'"
        )
        con.execute(f"delete from daily_nav where account_id = '{account}' and date = '{middle}'")
        # its last two business days never arrived: stale whichever of the UTC date (the
        # fixture's "today") and New York's (the check's) is today
        late = pipeline.accounts[1]
        con.execute(
            f"delete from daily_nav where account_id = '{late}' and date in (select date from "
            f"daily_nav where account_id = '{late}' order by date desc limit 2)"
        )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            mart_checks,
            instance=instance,
            resources={"data_dir": DataDirResource(path=str(copy))},
            selection=dg.AssetSelection.checks(*(k for c in mart_checks for k in c.check_keys)),
            raise_on_error=False,
        )
    by_name = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert not by_name["nav_reconciles"].passed
    assert by_name["nav_reconciles"].metadata["breaks"].value == 1
    assert not by_name["no_business_day_gaps"].passed
    assert str(middle) in by_name["no_business_day_gaps"].metadata["first_missing"].value
    fresh = by_name["latest_day_is_fresh"]
    assert not fresh.passed and fresh.severity == dg.AssetCheckSeverity.WARN
    assert fresh.metadata["stale_accounts"].value == 1
    assert late in fresh.metadata["stale"].value and account not in fresh.metadata["stale"].value


def test_window_vars_give_edge_partitions_the_days_outside_the_partitions() -> None:
    first, last = datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)
    inner = window_vars(
        datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC), first, last
    )
    assert inner == {"min_date": "2024-03-01", "max_date": "2024-04-01"}
    assert window_vars(first, datetime(2024, 1, 2, tzinfo=UTC), first, last)["min_date"] == (
        "1900-01-01"
    )
    assert window_vars(datetime(2026, 11, 29, tzinfo=UTC), last, first, last)["max_date"] == (
        "9999-12-31"
    )
