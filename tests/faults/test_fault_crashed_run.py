"""Fault: ``kill -9`` of a run worker mid-step (issue 10, item 1).

``dagster dev`` (webserver + daemon + code server) on a temporary instance configured by the
project's ``dagster.yaml`` (only the monitoring poll and the slot-freeing delay shortened). A run
of an asset in pool ``duckdb_writer`` starts a child process the way dbt is started and hangs
(first run only); its run worker is killed with SIGKILL. Expected: the run is failed, the child dies with it, the pool
slot is freed, and the re-launched run (run_retries) succeeds within a bounded time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.automation.test_ui_backfill import free_port, locations_loaded, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEFS = Path(__file__).with_name("crash_defs.py")
POOL = "duckdb_writer"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[1].startswith("Z"))


def instance_config(home: Path) -> str:
    config = (ROOT / "dagster.yaml").read_text()
    assert "run_monitoring:" in config and "free_slots_after_run_end_seconds" in config
    config = config.replace("base_dir: .dagster_storage", f"base_dir: {home / 'storage'}")
    config = re.sub(r"poll_interval_seconds: \d+", "poll_interval_seconds: 2", config)
    return re.sub(
        r"free_slots_after_run_end_seconds: \d+", "free_slots_after_run_end_seconds: 2", config
    )


def test_deploy_instance_configures_run_monitoring():
    config = (ROOT / "deploy" / "dagster.yaml").read_text()
    for key in ("run_monitoring:", "free_slots_after_run_end_seconds", "max_resume_run_attempts"):
        assert key in config


@pytest.mark.slow
def test_killed_run_worker_frees_its_slot_and_the_next_run_completes(tmp_path):
    home, state = tmp_path / "home", tmp_path / "state"
    home.mkdir()
    state.mkdir()
    (home / "dagster.yaml").write_text(instance_config(home))
    env = {**os.environ, "DAGSTER_HOME": str(home), "IBPIPELINE_CRASH_STATE": str(state)}
    bin_dir = Path(sys.executable).parent
    port = free_port()
    dev = subprocess.Popen(
        [str(bin_dir / "dagster"), "dev", "-f", str(DEFS), "-p", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: locations_loaded(port), 120, "dagster dev to load the code location")
        subprocess.run(
            [str(bin_dir / "dagster"), "job", "launch", "-f", str(DEFS), "-j", "crash_job"],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
        )
        pids_file = wait_until(lambda: next(state.glob("*.pids"), None), 120, "the step to run")
        time.sleep(0.5)
        step_pid, worker_pid, child_pid = map(int, pids_file.read_text().split())
        first_run_id = pids_file.stem
        os.kill(worker_pid, signal.SIGKILL)
        killed_at = time.monotonic()

        def retried_and_succeeded():
            with dg.DagsterInstance.from_config(str(home)) as instance:  # fresh read each poll
                runs = instance.get_runs(dg.RunsFilter(job_name="crash_job"))
            done = [r for r in runs if r.run_id != first_run_id and r.is_success]
            return done[0] if done else None

        retry = wait_until(retried_and_succeeded, 120, "a new run of crash_job to succeed")
        assert time.monotonic() - killed_at < 120
        assert retry.tags.get("dagster/parent_run_id") == first_run_id
        wait_until(lambda: not alive(child_pid), 30, "the killed run's child to die")
        assert not alive(step_pid)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            first = instance.get_run_by_id(first_run_id)
            info = instance.event_log_storage.get_concurrency_info(POOL)
        assert first.status == dg.DagsterRunStatus.FAILURE
        assert first_run_id not in {s.run_id for s in info.claimed_slots}
        assert info.active_slot_count == 0, info
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(10)
