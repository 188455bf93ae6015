"""A backfill launched the way the UI launches it: ``dagster dev`` (webserver + daemon) on this
project, a GraphQL ``launchPartitionBackfill`` over raw + normalized assets for 3 accounts x 40
days, served by the Flex simulator on loopback. The daemon must make ONE run, which sends ONE
Flex request and writes every account's rows."""

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
from ibpipeline.assets import NORMALIZED_TABLES
from ibpipeline.storage import parquet

ROOT = Path(__file__).resolve().parents[2]
START = date(2024, 2, 1)
DAYS = 40

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


@pytest.mark.slow
def test_ui_backfill_of_raw_and_normalized_is_one_run_and_one_request(
    tmp_path, sim, world, world_accounts, flex_token
):
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
        wait_until(lambda: locations_loaded(port), 120, "dagster dev to load the code location")
        days = [(START + timedelta(days=i)).isoformat() for i in range(DAYS)]
        selection = [{"path": ["raw_flex_statement"]}] + [
            {"path": [name]} for name in NORMALIZED_TABLES
        ]
        launched = graphql(
            port, LAUNCH, {"params": {"assetSelection": selection, "partitionNames": days}}
        )["data"]["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        with dg.DagsterInstance.from_config(str(home)) as instance:
            backfill_id = launched["backfillId"]

            def finished() -> str | None:
                status = instance.get_backfill(backfill_id).status.value
                return status if status not in ("REQUESTED", "CANCELING") else None

            status = wait_until(finished, 300, "the backfill daemon to finish")
            runs = instance.get_runs()
        assert status == "COMPLETED_SUCCESS"
        assert len(runs) == 1 and runs[0].is_success
        assert runs[0].tags["dagster/asset_partition_range_start"] == days[0]
        assert runs[0].tags["dagster/asset_partition_range_end"] == days[-1]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert sim.count("SendRequest") == 1
    nav = parquet.read_table("nav_daily", data_dir=data_dir)
    business = world.business_days(START, START + timedelta(days=DAYS - 1))
    assert {(r["account_id"], r["date"]): r["total_base"] for r in nav.to_pylist()} == {
        (a, d): world.day(a, d).nav.total_base for a in world_accounts for d in business
    }
