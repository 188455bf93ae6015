"""Backfills launched the way the UI launches them: ``dagster dev`` (webserver + daemon) on this
project, served by the Flex simulator on loopback, 3 accounts. Two GraphQL
``launchPartitionBackfill`` calls, the exact parameters the UI's partition dialog sends
(``LaunchAssetChoosePartitionsDialog.tsx``):

- "Materialize all" over a range of the daily assets: a pure asset backfill of every asset of
  ``flex_daily_job`` (raw, normalized, views, dbt marts, summary marts, tearsheets; their checks
  ride along);
- a backfill from the job page of ``flex_daily_job`` (partition set ``flex_daily_job_partition_set``).

Each range must be exactly ONE run (one Flex request) that writes every account's rows. An
unpartitioned asset in the selection used to cost extra runs (the backfill daemon never runs it
with its partitioned parents): 3 runs for 5 days.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from ibpipeline import settings
from ibpipeline.storage import parquet

ROOT = Path(__file__).resolve().parents[2]
ASSET_RANGE = (date(2024, 2, 5), date(2024, 2, 9))  # "Materialize all", 5 days
JOB_RANGE = (date(2024, 2, 12), date(2024, 2, 23))  # job page, 12 days
LOCATION, REPOSITORY = "ibpipeline", "__repository__"

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


JOB_ASSETS = """
query($job: PipelineSelector!) { assetNodes(pipeline: $job) { assetKey { path } } }
"""


def locations_loaded(port: int) -> bool:
    try:
        doc = graphql(
            port,
            "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus "
            "locationOrLoadError { __typename } } } } }",
        )
    except OSError:
        return False
    entries = doc["data"]["workspaceOrError"]["locationEntries"]
    return bool(entries) and all(
        e["loadStatus"] == "LOADED"
        and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
        for e in entries
    )


def days(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def ui_tags() -> list[dict[str, str]]:
    return [{"key": "dagster/from_ui", "value": "true"}]


def wait_for_backfill_runs(
    instance: dg.DagsterInstance, backfill_id: str, timeout_s: float
) -> list[dg.DagsterRun]:
    """The backfill's runs once the backfill and all its runs are finished."""
    deadline = time.monotonic() + timeout_s

    def done() -> list[dg.DagsterRun] | None:
        status = instance.get_backfill(backfill_id).status.value
        if status in ("REQUESTED", "CANCELING"):
            return None
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        return runs if runs and all(r.is_finished for r in runs) else None

    return wait_until(done, max(1.0, deadline - time.monotonic()), f"backfill {backfill_id}")


def launch_backfill(port: int, params: dict) -> str:
    """``launchPartitionBackfill`` with ``params``; returns the backfill id."""
    launched = graphql(port, LAUNCH, {"params": params})["data"]["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def assert_one_run(runs: list[dg.DagsterRun], first: date, last: date) -> None:
    assert len(runs) == 1, [(r.run_id, r.tags) for r in runs]
    (run,) = runs
    assert run.is_success, run.status
    assert run.tags["dagster/asset_partition_range_start"] == first.isoformat()
    assert run.tags["dagster/asset_partition_range_end"] == last.isoformat()


@pytest.mark.slow
def test_ui_backfills_of_a_range_are_one_run_each(tmp_path, sim, world, world_accounts, flex_token):
    home, data_dir = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    config = (ROOT / "dagster.yaml").read_text()
    config = config.replace("base_dir: .dagster_storage", f"base_dir: {home / 'storage'}")
    (home / "dagster.yaml").write_text(config)
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        settings.FLEX_TOKEN_ENV: flex_token,
        settings.FLEX_QUERY_ID_ENV: "800969",
        settings.FLEX_BASE_URL_ENV: sim.base_url,
        settings.DATA_DIR_ENV: str(data_dir),
    }
    dagster = Path(sys.executable).with_name("dagster")
    process = subprocess.Popen(
        [str(dagster), "dev", "-w", "workspace.yaml", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: locations_loaded(port), 180, "dagster dev to load the code location")
        job = {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "pipelineName": "flex_daily_job",
        }
        nodes = graphql(port, JOB_ASSETS, {"job": job})["data"]["assetNodes"]
        selection = [{"path": n["assetKey"]["path"]} for n in nodes]
        names = {"/".join(k["path"]) for k in selection}
        assert {"raw_flex_statement", "nav_daily", "warehouse_views", "daily_nav"} <= names
        assert {"performance_summary", "tearsheets"} <= names

        # Both launched at once (as two users would, or one after the other without waiting):
        # the backfill daemon ticks every 30 s, so one backfill after the other waited ~1 min
        # between them; each is still checked to be exactly one run over its own range.
        # "Materialize all" (asset graph / catalog) on a range: a pure asset backfill.
        asset_backfill = launch_backfill(
            port,
            {
                "tags": ui_tags(),
                "assetSelection": selection,
                "partitionNames": days(*ASSET_RANGE),
                "fromFailure": False,
            },
        )
        # The job page of flex_daily_job: a job backfill over its partition set.
        job_backfill = launch_backfill(
            port,
            {
                "tags": ui_tags(),
                "assetSelection": selection,
                "partitionNames": days(*JOB_RANGE),
                "fromFailure": False,
                "selector": {
                    "partitionSetName": "flex_daily_job_partition_set",
                    "repositorySelector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": REPOSITORY,
                    },
                },
            },
        )
        with dg.DagsterInstance.from_config(str(home)) as instance:
            asset_runs = wait_for_backfill_runs(instance, asset_backfill, 420)
            job_runs = wait_for_backfill_runs(instance, job_backfill, 420)
            assert instance.get_backfill(asset_backfill).status.value == "COMPLETED_SUCCESS"
            assert len(instance.get_runs()) == 2
        assert_one_run(asset_runs, *ASSET_RANGE)
        assert_one_run(job_runs, *JOB_RANGE)
        assert job_runs[0].job_name == "flex_daily_job"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert sim.count("SendRequest") == 2  # one Flex request per range
    nav = parquet.read_table("nav_daily", data_dir=data_dir)
    business = world.business_days(ASSET_RANGE[0], ASSET_RANGE[1]) + world.business_days(
        JOB_RANGE[0], JOB_RANGE[1]
    )
    assert {(r["account_id"], r["date"]): r["total_base"] for r in nav.to_pylist()} == {
        (a, d): world.day(a, d).nav.total_base for a in world_accounts for d in business
    }
    for account in [*world_accounts, "ALL"]:
        assert (data_dir / "tearsheets" / f"{account}.png").is_file(), account
