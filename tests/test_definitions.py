import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import yaml

from ibpipeline.assets import NORMALIZED_TABLES
from ibpipeline.definitions import defs

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "402918375561029384756102"


def test_dagster_validates_the_definitions():
    env = {**os.environ, "IBKR_FLEX_TOKEN": TOKEN}
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "definitions",
            "validate",
            "-m",
            "ibpipeline.definitions",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert TOKEN not in done.stdout + done.stderr


def test_assets_groups_pools_and_jobs():
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups["raw_flex_statement"] == "raw"
    assert groups["warehouse_views"] == "warehouse"
    assert all(groups[name] == "normalized" for name in NORMALIZED_TABLES)
    raw = defs.resolve_assets_def("raw_flex_statement")
    ops = {node.name: node.definition for node in raw.node_def.nodes}
    assert sorted(ops) == ["fetch_default", "record_statements"]
    assert ops["fetch_default"].pool == "flex_api"
    assert defs.resolve_assets_def("warehouse_views").op.pool == "duckdb_writer"
    nav = defs.resolve_assets_def("nav_daily")
    assert nav.backfill_policy == dg.BackfillPolicy.single_run()
    assert nav.partitions_def == raw.partitions_def  # the one daily definition: one job, one run
    assert graph.get(dg.AssetKey("nav_daily")).parent_keys == {dg.AssetKey("raw_flex_statement")}
    job = defs.resolve_job_def("flex_daily_job")
    assert job.partitions_def == raw.partitions_def
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert {"raw_flex_statement", "nav_daily", "warehouse_views", "daily_nav"} <= selected
    assert {"performance_summary", "tearsheets"} <= selected


def test_token_is_an_env_var():
    flex = defs.resources["flex"]
    assert isinstance(flex.token, dg.EnvVar)
    assert flex.token.env_var_name == "IBKR_FLEX_TOKEN"


def test_several_flex_queries_are_steps_and_resources_with_env_var_tokens(monkeypatch):
    from ibpipeline.definitions import build_defs

    monkeypatch.setenv("IBKR_FLEX_QUERIES", "east=800969:TOKEN_EAST, west=800970:TOKEN_WEST")
    several = build_defs()
    raw = several.resolve_assets_def("raw_flex_statement")
    assert sorted(n.name for n in raw.node_def.nodes) == [
        "fetch_east",
        "fetch_west",
        "record_statements",
    ]
    assert raw.key == dg.AssetKey("raw_flex_statement")
    assert raw.partitions_def == defs.resolve_assets_def("raw_flex_statement").partitions_def
    assert raw.backfill_policy == dg.BackfillPolicy.single_run()
    for name, query_id in (("east", "800969"), ("west", "800970")):
        flex = several.resources[f"flex_{name}"]
        assert isinstance(flex.token, dg.EnvVar)
        assert flex.token.env_var_name == f"TOKEN_{name.upper()}"
        assert (flex.query_id, flex.query_name) == (query_id, name)
    assert "flex" not in several.resources
    graph = several.resolve_asset_graph()
    assert graph.get(dg.AssetKey("nav_daily")).parent_keys == {dg.AssetKey("raw_flex_statement")}
    several.resolve_job_def("flex_daily_job")  # the job resolves the per-query resources

    monkeypatch.setenv("IBKR_FLEX_QUERIES", "east=800969")
    try:
        build_defs()
    except ValueError as exc:
        assert "IBKR_FLEX_QUERIES entry 1" in str(exc)
    else:
        raise AssertionError("a malformed IBKR_FLEX_QUERIES must fail loading")


STORAGES = ("run_storage", "event_log_storage", "schedule_storage")


def test_instance_config(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_bytes((ROOT / "dagster.yaml").read_bytes())
    monkeypatch.chdir(tmp_path)
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert (tmp_path / ".dagster_storage").is_dir()
    finally:
        instance.dispose()
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert [config[k]["config"]["base_dir"] for k in STORAGES] == [
        ".dagster_storage/history",  # where `storage: sqlite: base_dir: .dagster_storage` keeps them
        ".dagster_storage/history/runs",
        ".dagster_storage/schedules",
    ]
    assert config["event_log_storage"]["class"] == "BatchingSqliteEventLogStorage"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": False,
    }
    assert config["telemetry"] == {"enabled": False}
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == "ibpipeline.definitions"


def test_definitions_load_like_dagster_dev_without_an_activated_venv():
    """``dagster dev`` sets DAGSTER_IS_DEV_CLI and does not put the venv on PATH."""
    env = {**os.environ, "DAGSTER_IS_DEV_CLI": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ibpipeline.definitions import defs; defs.resolve_all_job_defs()",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_launched_runs_fork_steps_from_a_preloaded_server_unless_configured_in_process(
    monkeypatch,
):
    from ibpipeline.definitions import build_defs

    monkeypatch.delenv("IBPIPELINE_EXECUTOR", raising=False)
    job = build_defs().resolve_job_def("flex_daily_job")
    assert job.executor_def.name == "multiprocess"
    resolved = job.executor_def.config_schema.resolve_config({})
    assert resolved.value["config"]["start_method"] == {
        "forkserver": {"preload_modules": ["ibpipeline.forkserver_preload"]}
    }
    monkeypatch.setenv("IBPIPELINE_EXECUTOR", "in_process")
    assert build_defs().resolve_job_def("marts_job").executor_def.name == "in_process"
    monkeypatch.setenv("IBPIPELINE_EXECUTOR", "celery?")
    try:
        build_defs()
    except ValueError as exc:
        assert "IBPIPELINE_EXECUTOR='celery?'" in str(exc)
    else:
        raise AssertionError("an unknown executor must be refused")


CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
ANGLE_TEXT = re.compile(r"<[^<>\s]+>")


def ui_descriptions() -> Iterator[tuple[str, str]]:
    """``(what, description)`` of every asset, table column, check, job, schedule and sensor."""
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        yield f"asset {key.to_user_string()}", node.description or ""
        schema = node.metadata.get("dagster/column_schema")
        for column in schema.columns if schema is not None else ():
            yield f"column {key.to_user_string()}.{column.name}", column.description or ""
    for check in graph.asset_check_keys:
        yield f"check {check.to_user_string()}", graph.get_check_spec(check).description or ""
    for job in defs.resolve_all_job_defs():
        yield f"job {job.name}", job.description or ""
    for schedule in defs.schedules or ():
        yield f"schedule {schedule.name}", schedule.description or ""
    for sensor in defs.sensors or ():
        yield f"sensor {sensor.name}", sensor.description or ""


def test_ui_descriptions_keep_their_angle_bracket_text():
    """The UI renders descriptions as Markdown, where a bare ``<day>`` is an HTML tag and vanishes:
    such text must be in a code span."""
    described = list(ui_descriptions())
    assert len(described) > 50 and any("<day>" in text for _, text in described)
    lost = {
        what: ANGLE_TEXT.findall(CODE_SPAN.sub("", text))
        for what, text in described
        if ANGLE_TEXT.search(CODE_SPAN.sub("", text))
    }
    assert lost == {}
